"""A handover desk in a Slack channel (the agents' room): what agents do there becomes
:class:`~bridge.channel.AgentAct`, and what the core posts there (:class:`DeskPost`) becomes
Block Kit. Pure functions, and :class:`DeskRooms`, the rooms one Slack channel hosts.

- A room is named ``"C456"`` (the workspace of the channel's own bot token) or ``"T123/C456"``
  (a workspace of an OAuth channel). Everything posted in a hosted room stays out of intake.
- A person's reply in a thread → MESSAGE (``"/resolve"`` alone → RESOLVE); messages outside
  threads, bots' messages (ours included), edits, joins, ... are ignored. Files are not
  forwarded (the agent is told, privately, as for any act the desk refuses).
- The buttons (``action_id`` :data:`TAKE_ACTION` / :data:`RESOLVE_ACTION`, ``value`` the
  handover key) → TAKE / RESOLVE, on the thread of the message that carries them.

Event ids (the deduplication key of an act) are stable across Slack's retries:
``slack:{team}:{channel}:{ts}`` for a message (its ``app_mention`` twin shares it),
``slack:{team}:{channel}:{message_ts}:{action}:{user}`` for a press (a double click is one act).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.normalize import BotIdentity, Ignored, strip_mentions, to_plain
from adapters.slack.pacing import Pacing
from adapters.slack.profiles import Profiles
from adapters.slack.render import (
    MAX_BUTTON_VALUE,
    SlackMessage,
    escape_mrkdwn,
    split_text,
    units,
)
from bridge.channel import (
    AgentAct,
    DeliveryRejected,
    DeliveryRetryable,
    DeskAction,
    DeskListener,
    DeskPost,
    DeskRefused,
    IntakeRefused,
    RecipientGone,
)
from bridge.channelkit import TaskSet
from bridge.textsplit import splits_cluster

log = logging.getLogger("adapters.slack")

TAKE_ACTION = "handover_take"
RESOLVE_ACTION = "handover_resolve"
ACTION_PREFIX = "handover_"
RESOLVE_COMMAND = "/resolve"
_ACTIONS = {TAKE_ACTION: DeskAction.TAKE, RESOLVE_ACTION: DeskAction.RESOLVE}
_BUTTONS = {
    DeskAction.TAKE: (TAKE_ACTION, "Take", "primary"),
    DeskAction.RESOLVE: (RESOLVE_ACTION, "Resolve", "danger"),
}
#: a transcript line is cut here: the whole post must stay within Slack's 50 blocks
MAX_LINE = 600
MAX_FIELD = 1900  # a section field takes 2000
MAX_FIELDS = 10  # per section
MAX_DESK_BLOCKS = 48
MAX_FALLBACK = 300
FILES_NOTE = "Files do not reach the user: only the text of your messages does."


@dataclass(frozen=True, slots=True)
class Room:
    """A hosted agents' room: its name as the core gave it, and where it is."""

    name: str
    team: str | None
    channel: str


def parse_room(room: str) -> Room:
    """``"C456"`` or ``"T123/C456"``; raises ValueError for anything else."""
    team, _, channel = room.rpartition("/")
    if not channel or "/" in team or (team == "" and room.startswith("/")):
        raise ValueError(f"not a Slack room: {room!r} (give C456 or T123/C456)")
    return Room(room, team or None, channel)


# --- agents' acts ---------------------------------------------------------------------------


def reply_of(event: Mapping[str, Any], bot: BotIdentity) -> tuple[str, str, str] | Ignored:
    """``(user, ts, thread_ts)`` of a person's reply in a thread, or why it is none."""
    subtype = event.get("subtype")
    # thread_broadcast: a reply also sent to the channel, still a reply
    if event.get("hidden") or subtype not in (None, "file_share", "thread_broadcast"):
        return Ignored(f"message subtype {subtype!r} in the agents' room")
    user = event.get("user")
    if event.get("bot_id") or not isinstance(user, str) or not user or user == bot.user_id:
        return Ignored("a bot's message in the agents' room")
    ts, thread = event.get("ts"), event.get("thread_ts")
    if not isinstance(ts, str) or not ts:
        return Ignored("malformed message: no ts")
    if not isinstance(thread, str) or not thread or thread == ts:
        return Ignored("a message outside a thread in the agents' room")
    return user, ts, thread


def message_act(
    event: Mapping[str, Any], team: str, room: Room, bot: BotIdentity
) -> AgentAct | Ignored:
    """A ``message`` / ``app_mention`` event in ``room``: an agent's reply in a thread (the
    name is added later, from the profile), ``/resolve`` in a thread, or Ignored. Never
    raises."""
    try:
        reply = reply_of(event, bot)
        if isinstance(reply, Ignored):
            return reply
        user, ts, thread = reply
        raw = event.get("text")
        text = to_plain(strip_mentions(raw if isinstance(raw, str) else "", bot.user_id))
        if not text:
            return Ignored("a message without text in the agents' room")
        resolve = text.lower() == RESOLVE_COMMAND
        return AgentAct(
            room=room.name,
            thread=thread,
            event_id=f"slack:{team}:{room.channel}:{ts}",
            action=DeskAction.RESOLVE if resolve else DeskAction.MESSAGE,
            agent_id=user,
            text="" if resolve else text,
        )
    except Exception as exc:  # a malformed event must not stop intake
        return Ignored(f"malformed event ({type(exc).__name__})")


def action_act(
    body: Mapping[str, Any], team: str, room: Room, bot: BotIdentity
) -> AgentAct | Ignored:
    """A ``block_actions`` press of a handover button in ``room``, or Ignored. Never raises."""
    try:
        action = next(
            (
                a
                for a in body.get("actions") or []
                if isinstance(a, Mapping) and a.get("action_id") in _ACTIONS
            ),
            None,
        )
        if action is None:
            return Ignored("no handover button pressed")
        value = action.get("value")
        if not isinstance(value, str) or not value:
            return Ignored("malformed interaction: a button without a value")
        user = (body.get("user") or {}).get("id")
        if not isinstance(user, str) or not user or user == bot.user_id:
            return Ignored("malformed interaction: no user")
        container = body.get("container") or {}
        message = body.get("message") or {}
        message_ts = container.get("message_ts") or message.get("ts")
        if not isinstance(message_ts, str) or not message_ts:
            return Ignored("malformed interaction: no message")
        thread = container.get("thread_ts") or message.get("thread_ts") or message_ts
        kind = _ACTIONS[action["action_id"]]
        return AgentAct(
            room=room.name,
            thread=str(thread),
            event_id=f"slack:{team}:{room.channel}:{message_ts}:{kind.value}:{user}",
            action=kind,
            agent_id=user,
            handover=value,
        )
    except Exception as exc:
        return Ignored(f"malformed interaction ({type(exc).__name__})")


def pressed_channel(body: Mapping[str, Any]) -> str | None:
    """The channel of the message whose button was pressed."""
    container = body.get("container")
    channel = container.get("channel_id") if isinstance(container, Mapping) else None
    if not channel:
        channel_obj = body.get("channel")
        channel = channel_obj.get("id") if isinstance(channel_obj, Mapping) else None
    return channel if isinstance(channel, str) and channel else None


# --- posts ----------------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _clip(text: str, limit: int) -> str:
    """``text`` escaped (mrkdwn) within ``limit`` UTF-16 units; longer, cut (never inside
    an entity or a character cluster) with "…"."""
    escaped = escape_mrkdwn(text.strip())
    if units(escaped) <= limit:
        return escaped
    size = end = 0
    for end, char in enumerate(text):  # noqa: B007 - ``end`` is used after the loop
        size += units(escape_mrkdwn(char))
        if size > limit - 1:
            break
    while end > 0 and splits_cluster(text, end):
        end -= 1
    return escape_mrkdwn(text[:end].rstrip()) + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_post(post: DeskPost) -> SlackMessage:
    """``post`` as one Block Kit message: the title bold, the fields as a section's fields,
    the transcript quoted, the body, a button per action (value: the handover key).
    Deterministic; always within Slack's limits (long transcripts are cut)."""
    blocks: list[dict[str, Any]] = []
    title = _clip(_one_line(post.title), 2900)
    if title:
        blocks.append(_section(f"*{title}*"))
    fields = [(k, v) for k, v in post.fields if v.strip() and _one_line(k)]
    for start in range(0, len(fields), MAX_FIELDS):
        chunk = fields[start : start + MAX_FIELDS]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": f"*{_clip(_one_line(k), 100)}*\n{_clip(v, MAX_FIELD)}",
                    }
                    for k, v in chunk
                ],
            }
        )
    quoted = _quote(post.lines)
    body = [_section(escape_mrkdwn(chunk)) for chunk in split_text(post.text)]
    room = MAX_DESK_BLOCKS - len(blocks) - len(body) - 1
    if len(quoted) > room:  # keep the latest turns
        quoted = [_section("> …"), *quoted[len(quoted) - room + 1 :]] if room > 1 else []
    blocks.extend(quoted)
    blocks.extend(body[: MAX_DESK_BLOCKS - len(blocks) - 1])
    buttons = [_button(action, post.handover) for action in post.actions if action in _BUTTONS]
    if buttons and len(post.handover) <= MAX_BUTTON_VALUE:
        blocks.append({"type": "actions", "block_id": "handover", "elements": buttons})
    fallback = title or _clip(_one_line(post.text), MAX_FALLBACK) or "Handover"
    return SlackMessage(fallback, tuple(blocks))


def _quote(lines: Sequence[str]) -> list[dict[str, Any]]:
    """Transcript lines as quoted sections (each line cut to :data:`MAX_LINE`), as few as
    fit within a section's 3000 characters."""
    sections: list[dict[str, Any]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        text = _clip(_one_line(line), MAX_LINE)
        if not text:
            continue
        quoted = "> " + text  # a raw ">" opens a quote; the text itself is escaped
        if current and size + units(quoted) + 1 > 2900:
            sections.append(_section("\n".join(current)))
            current, size = [], 0
        current.append(quoted)
        size += units(quoted) + 1
    if current:
        sections.append(_section("\n".join(current)))
    return sections


def _button(action: DeskAction, handover: str) -> dict[str, Any]:
    action_id, label, style = _BUTTONS[action]
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": handover,
        "style": style,
    }


# --- the rooms of one channel ---------------------------------------------------------------

#: the adapter's way of making one Web API call in a room (``call(channel, token)``): paced,
#: paused after a 429, Slack's errors as the DeliveryError tree
RoomCall = Callable[[str, Callable[[str, str | None], Awaitable[Any]]], Awaitable[Any]]


class RoomCalls:
    """One Web API call in an agents' room, paced and paused like deliveries; Slack's errors
    as the DeliveryError tree (a room that is gone is a configuration problem, not a user who
    left: DeliveryRejected)."""

    def __init__(
        self,
        channel: str,
        oauth: bool,
        pacing: Pacing,
        token: Callable[[str], Awaitable[str | None]],
        default_team: Callable[[], str],
    ) -> None:
        self._channel = channel
        self._oauth = oauth
        self._pacing = pacing
        self._token = token
        self._default_team = default_team

    async def __call__(self, room: str, call: Callable[[str, str | None], Awaitable[Any]]) -> Any:
        try:
            target = parse_room(room)
        except ValueError as exc:
            raise DeliveryRejected(str(exc)) from None
        team_id = target.team or self._default_team()
        if not team_id and self._oauth:
            raise DeliveryRejected(f"agents' room {room}: name its workspace (agents_team_id)")
        if not team_id:
            raise DeliveryRetryable(f"slack channel {self._channel} is not started")
        key = f"{team_id}:{target.channel}"
        try:
            token = await self._token(team_id)
        except RecipientGone as exc:
            raise DeliveryRejected(str(exc)) from None
        await self._pacing.turn(key, team_id)
        try:
            return await call(target.channel, token)
        except SlackApiError as exc:
            error = self._pacing.error(exc, key, team_id)
            if isinstance(error, RecipientGone):
                log.error("slack channel %s: agents' room %s: %s", self._channel, room, error)
                error = DeliveryRejected(f"agents' room {room}: {error}")
            raise error from None
        except (ClientError, TimeoutError) as exc:
            raise DeliveryRetryable(f"Slack request failed: {exc!r}") from None


class DeskRooms:
    """The agents' rooms one Slack channel hosts (by channel id): their messages and button
    presses go to the desk's listener, never to intake; what the core posts there."""

    def __init__(
        self,
        channel: str,
        client: AsyncWebClient,
        profiles: Profiles,
        background: TaskSet,
        room_call: RoomCall,
    ) -> None:
        self._channel = channel
        self._client = client
        self._profiles = profiles
        self._background = background
        self._room_call = room_call
        self._rooms: dict[str, tuple[Room, DeskListener]] = {}

    def host(self, room: str, listener: DeskListener) -> None:
        """Raises DeliveryRejected for a room name that is not ``C456`` or ``T123/C456``, or a
        room another desk has (its acts could not tell whose they are)."""
        try:
            parsed = parse_room(room)
        except ValueError as exc:
            raise DeliveryRejected(str(exc)) from None
        if parsed.channel in self._rooms:
            raise DeliveryRejected(f"the agents' room {room} is already another desk's")
        self._rooms[parsed.channel] = (parsed, listener)

    def find(self, team: str, channel: object) -> tuple[Room, DeskListener] | None:
        """The room (and its listener) of a channel in ``team``; None when not hosted."""
        if not isinstance(channel, str):
            return None
        found = self._rooms.get(channel)
        if found is None or (found[0].team is not None and team and found[0].team != team):
            return None
        return found

    async def message(
        self, event: Mapping[str, Any], team: str, bot: BotIdentity, token: str | None
    ) -> bool:
        """Whether ``event`` (a message or mention) is in a hosted room; an agent's act in it
        is handed to the desk before this returns."""
        hosted = self.find(team, event.get("channel")) if self._rooms else None
        if hosted is None:
            return False
        act = message_act(event, team, hosted[0], bot)
        if isinstance(act, Ignored):
            log.debug("slack channel %s: desk event ignored: %s", self._channel, act.reason)
        else:
            await self._to_desk(act, hosted, team, token)
        reply = reply_of(event, bot) if event.get("files") else None
        if reply is not None and not isinstance(reply, Ignored):
            note = self._tell_agent(hosted[0], reply[0], reply[2], FILES_NOTE, token)
            self._background.spawn(note, "slack-desk-files")
        return True

    async def action(self, body: Mapping[str, Any], bot: BotIdentity, token: str | None) -> None:
        """A press of a handover button: handed to the desk of its room (others ignored)."""
        team = bot.team_id
        hosted = self.find(team, pressed_channel(body))
        act = action_act(body, team, hosted[0], bot) if hosted is not None else None
        if hosted is not None and isinstance(act, AgentAct):
            await self._to_desk(act, hosted, team, token)

    async def _to_desk(
        self, act: AgentAct, hosted: tuple[Room, DeskListener], team: str, token: str | None
    ) -> None:
        """Hand ``act`` to the desk; returns once it is stored (Slack is answered after
        that). IntakeUnavailable goes up: 503, Slack sends the event again. A refusal
        (ended, unknown, a text the store refuses) is told to the agent, for their eyes
        only."""
        profile = await self._profiles.profile(team, act.agent_id, token)
        act = dataclasses.replace(act, agent_name=profile.get("userName"))
        try:
            await hosted[1](act)
        except (DeskRefused, IntakeRefused) as exc:
            # Answered 200 all the same: Slack sending it again would not change the answer.
            log.info("slack channel %s: agent's %s refused: %s", self._channel, act.action, exc)
            text = str(exc) or "This handover cannot take that."
            if isinstance(exc, IntakeRefused):
                text = f"Not sent to the user: {text}"
            note = self._tell_agent(hosted[0], act.agent_id, act.thread, text, token)
            self._background.spawn(note, "slack-desk-refused")

    async def _tell_agent(
        self, room: Room, user: str, thread: str, text: str, token: str | None
    ) -> None:
        """An ephemeral note in the thread, only ``user`` sees it."""
        try:
            await self._client.chat_postEphemeral(
                token=token, channel=room.channel, user=user, text=text, thread_ts=thread
            )
        except (SlackApiError, ClientError, TimeoutError) as exc:
            log.info("slack channel %s: agent not told: %s", self._channel, exc)

    async def post(self, room: str, post: DeskPost, thread: str | None) -> str:
        """Post ``post`` in ``room`` (in ``thread``); its ts."""
        message = render_post(post)

        def call(channel: str, token: str | None) -> Awaitable[Any]:
            return self._client.chat_postMessage(
                token=token,
                channel=channel,
                text=message.text,
                blocks=list(message.blocks) or None,
                thread_ts=thread,
            )

        response = await self._room_call(room, call)
        return str(response.get("ts"))

    async def update(self, room: str, message_id: str, post: DeskPost) -> None:
        message = render_post(post)

        def call(channel: str, token: str | None) -> Awaitable[Any]:
            return self._client.chat_update(
                token=token,
                channel=channel,
                ts=message_id,
                text=message.text,
                blocks=list(message.blocks),
            )

        await self._room_call(room, call)
