"""The "slack" desk: a thread per handover in an agents' channel, hosted by one of the
configured Slack channels (``slack_channel``; the adapter keeps that room out of intake).

    handover.started        a root post: who, where, why, the transcript, Take / Resolve;
                            its ts is the handover's thread ("<room>:<ts>")
    handover.user_message   the user's message in the thread
    handover.taken          the root shows who took it (Resolve only) + a note in the thread
    handover.ended          the root shows the outcome (no buttons) + a note in the thread
    handover.agent_message  nothing posted (the agent wrote it in the thread); the first one
                            takes the handover implicitly: the root shows who has it

Agents' acts come back from the adapter as AgentAct: a reply or ``/resolve`` in a thread
(found by the thread), or a button (found by its value, the handover key).

The root post's content is kept in the shared state (``tmp:`` key), so that its updates can
show the same transcript: chat.update replaces the whole message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.channel import (
    AcceptResult,
    Adapter,
    AgentAct,
    DeliveryRejected,
    DeliveryRetryable,
    DeskAction,
    DeskPost,
    IntakeUnavailable,
)
from bridge.config import HandoverConfig
from bridge.handover import events
from bridge.handover.desk import (
    AgentCommand,
    Agents,
    Desk,
    DeskDelivery,
    HandoverEnded,
    HandoverUnknown,
)
from bridge.store import StoreError
from bridge.vocabulary import Handover

log = logging.getLogger("bridge.handover.slack")

_ROLES = {"user": "User", "bot": "Bot", "agent": "Agent"}
_OUTCOMES = {
    "resolved": "Resolved",
    "timeout": "No agent took it in time",
    "user_left": "The user left",
    "idle": "Ended: nobody wrote for too long",
}


def room_of(config: HandoverConfig) -> str:
    """The agents' room as the Slack adapter names it: ``C456``, or ``T123/C456`` with
    ``agents_team_id`` (an OAuth channel's workspace)."""
    channel = config.agents_channel_id or ""
    return f"{config.agents_team_id}/{channel}" if config.agents_team_id else channel


def split_thread(thread: str) -> tuple[str, str]:
    """``"<room>:<ts>"`` as (room, ts)."""
    room, _, ts = thread.rpartition(":")
    return room, ts


# --- what the desk posts: pure functions ----------------------------------------------------


def root_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the root post shows of a ``handover.started`` event (kept for its updates)."""
    user = event.get("user") or {}
    name = str(user.get("name") or user.get("id") or "a user")
    channel = str(event.get("channel") or "")
    fields = [
        ("Channel", channel),
        ("User", name),
        ("Language", str(user.get("language") or "")),
        ("Reason", str(event.get("reason") or "")),
        ("Queue", str(event.get("queue") or "")),
    ]
    lines = [
        f"{name if turn.get('role') == 'user' else _ROLES.get(str(turn.get('role')), 'Bot')}: "
        f"{turn.get('text') or ''}"
        for turn in event.get("transcript") or []
        if isinstance(turn, Mapping)
    ]
    return {
        "title": f"{name} on {channel} asks for a person"
        if channel
        else f"{name} asks for a person",
        "fields": [[k, v] for k, v in fields if v],
        "lines": lines,
        "text": str(event.get("summary") or ""),
        "user": name,
    }


def root_post(
    key: str,
    record: Mapping[str, Any],
    status: str | None,
    actions: Sequence[DeskAction],
) -> DeskPost:
    """The root post from its record, with a status field (taken, ended) and buttons."""
    fields = [(str(k), str(v)) for k, v in record.get("fields") or []]
    if status:
        fields.append(("Status", status))
    return DeskPost(
        handover=key,
        title=str(record.get("title") or "Handover"),
        text=str(record.get("text") or ""),
        fields=tuple(fields),
        lines=tuple(str(line) for line in record.get("lines") or []),
        actions=tuple(actions),
    )


def fallback_record(handover: Handover) -> dict[str, Any]:
    """A root post's record when the kept one is gone (purged): what the handover says."""
    fields = [("Reason", handover.reason or ""), ("Queue", handover.queue or "")]
    return {
        "title": "Handover",
        "fields": [[k, v] for k, v in fields if v],
        "lines": [],
        "text": handover.summary or "",
        "user": "User",
    }


def agent_label(event: Mapping[str, Any]) -> str:
    agent = event.get("agent") or {}
    return str(agent.get("name") or agent.get("id") or "An agent")


def ended_note(outcome: str, after: str) -> str:
    back = "The user is back with the bot." if after == "bot" else "The conversation has ended."
    return f"{_OUTCOMES.get(outcome, outcome.capitalize() or 'Ended')}. {back}"


# --- the desk -------------------------------------------------------------------------------


class SlackDesk(Desk):
    kind = "slack"

    def __init__(self, bot: str, config: HandoverConfig, host: Adapter) -> None:
        super().__init__(bot, config)
        self._host = host
        self._room = room_of(config)
        self._agents: Agents | None = None
        host.host_desk(self._room, self._on_act)

    async def start(self, agents: Agents) -> None:
        self._agents = agents

    async def stop(self) -> None:
        self._agents = None

    def status(self) -> Mapping[str, Any]:
        return {"room": self._room, "channel": self._host.name}

    # --- agents' acts -----------------------------------------------------------------------

    async def _on_act(self, act: AgentAct) -> AcceptResult:
        agents = self._agents
        if agents is None:
            raise IntakeUnavailable("the desk is not running")  # Slack sends it again
        if act.handover:
            handover = await agents.handover(self.bot, act.handover)
        else:
            handover = await agents.by_thread(self.bot, f"{act.room}:{act.thread}")
        if handover is None:
            raise HandoverUnknown("No handover of this bot is kept in this thread.")
        command = AgentCommand(
            handover=handover.key,
            event_id=act.event_id,
            action=act.action,
            text=act.text,
            agent_id=act.agent_id,
            agent_name=act.agent_name,
        )
        try:
            return await agents.act(self.bot, command)
        except HandoverEnded:
            raise HandoverEnded(
                "This handover has ended: nothing written here reaches the user any more."
            ) from None

    # --- desk events ------------------------------------------------------------------------

    async def deliver(self, delivery: DeskDelivery) -> None:
        agents = self._agents
        if agents is None:
            raise DeliveryRetryable("the desk is not running")
        kind = delivery.event.get("type")
        try:
            if kind == events.STARTED:
                await self._started(agents, delivery)
            elif kind == events.USER_MESSAGE:
                await self._user_message(agents, delivery)
            elif kind == events.TAKEN:
                await self._taken(agents, delivery)
            elif kind == events.ENDED:
                await self._ended(agents, delivery)
            elif kind == events.AGENT_MESSAGE:
                await self._agent_message(agents, delivery)
        except (IntakeUnavailable, StoreError) as exc:  # the store, or the shared state's
            raise DeliveryRetryable(f"the store is unavailable: {exc}") from None

    def _state_key(self, key: str) -> str:
        return f"tmp:handover:slack:{self.bot}:{key}"

    async def _record(self, agents: Agents, handover: Handover) -> dict[str, Any]:
        raw = await agents.state.get(self._state_key(handover.key))
        if raw is not None:
            try:
                value = json.loads(raw)
                if isinstance(value, dict):
                    return value
            except ValueError:
                pass
        return fallback_record(handover)

    def _thread(self, handover: Handover) -> tuple[str, str]:
        if handover.thread is None:
            # the root is posted first, in order: it was not yet (or the store lags)
            raise DeliveryRetryable("the handover's thread is not posted yet")
        return split_thread(handover.thread)

    async def _update_root(self, room: str, ts: str, post: DeskPost) -> None:
        """Show a root post's new state; one Slack refuses for good (deleted by someone) is
        skipped: the thread note still tells."""
        try:
            await self._host.update_in_room(room, ts, post)
        except DeliveryRejected as exc:
            log.warning(
                "bot %s: the root of handover %s not updated: %s", self.bot, post.handover, exc
            )

    async def _started(self, agents: Agents, delivery: DeskDelivery) -> None:
        handover = delivery.handover
        if handover.thread is not None:  # posted and recorded before a crash
            await delivery.progress(0, split_thread(handover.thread)[1])
            return
        record = root_record(delivery.event)
        await agents.state.put(self._state_key(handover.key), json.dumps(record))
        post = root_post(handover.key, record, None, (DeskAction.TAKE, DeskAction.RESOLVE))
        ts = await self._host.post_to_room(self._room, post)
        # A crash here, after Slack took the post and before the thread is recorded, posts
        # the root again on the retry: a second thread, the live one (Slack has no
        # idempotency key for chat.postMessage).
        await agents.set_thread(handover.key, f"{self._room}:{ts}")
        await delivery.progress(0, ts)

    async def _user_message(self, agents: Agents, delivery: DeskDelivery) -> None:
        room, ts = self._thread(delivery.handover)
        record = await self._record(agents, delivery.handover)
        post = DeskPost(
            handover=delivery.handover.key,
            title=str(record.get("user") or "User"),
            text=events.with_links(
                str(delivery.event.get("text") or ""), delivery.event.get("attachments") or ()
            ),
        )
        await delivery.progress(0, await self._host.post_to_room(room, post, ts))

    async def _taken(self, agents: Agents, delivery: DeskDelivery) -> None:
        handover = delivery.handover
        room, ts = self._thread(handover)
        agent = agent_label(delivery.event)
        record = await self._record(agents, handover)
        record["taken_by"] = agent
        await agents.state.put(self._state_key(handover.key), json.dumps(record))
        # An ended handover's root keeps its outcome (a late taken event changes nothing).
        if handover.open:
            post = root_post(handover.key, record, f"Taken by {agent}", (DeskAction.RESOLVE,))
            await self._update_root(room, ts, post)
        note = DeskPost(handover=handover.key, text=f"{agent} took this handover.")
        await delivery.progress(0, await self._host.post_to_room(room, note, ts))

    async def _agent_message(self, agents: Agents, delivery: DeskDelivery) -> None:
        """The agent wrote it in the thread: nothing to post. An agent's first message takes
        the handover (no "taken" event then): the root shows who has it."""
        handover = delivery.handover
        record = await self._record(agents, handover)
        if record.get("taken_by") or not handover.open or handover.thread is None:
            return
        agent = agent_label(delivery.event)
        record["taken_by"] = agent
        room, ts = split_thread(handover.thread)
        post = root_post(handover.key, record, f"Taken by {agent}", (DeskAction.RESOLVE,))
        await self._update_root(room, ts, post)
        # Recorded once the root shows it: an update that failed is made again on the retry.
        await agents.state.put(self._state_key(handover.key), json.dumps(record))

    async def _ended(self, agents: Agents, delivery: DeskDelivery) -> None:
        handover = delivery.handover
        room, ts = self._thread(handover)
        outcome = str(delivery.event.get("outcome") or "")
        record = await self._record(agents, handover)
        status = _OUTCOMES.get(outcome, outcome or "Ended")
        if record.get("taken_by") and outcome == "resolved":
            status = f"{status} (taken by {record['taken_by']})"
        await self._update_root(room, ts, root_post(handover.key, record, status, ()))
        note = DeskPost(handover=handover.key, text=ended_note(outcome, self.config.after))
        await delivery.progress(0, await self._host.post_to_room(room, note, ts))
