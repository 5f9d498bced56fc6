"""The world of the handover process tests: ``python -m bridge run`` with a polling Telegram
channel (the users, against the fake Bot API) and a Slack channel hosting the agents' room
(the "slack" desk, against the fake Slack Web API), the simulator as Parloa.

:class:`SlackAgents` plays Slack delivering what agents do in the room to the bridge's Events
API route: a signed request, sent again (same body, ``X-Slack-Retry-Num``) until the bridge
answers 200, through crashes and restarts. What each side saw is read from the fakes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.devtools.simulator import RunningSimulator
from tests.fakes.slack import FakeSlack, PostedMessage, event_callback, post_event
from tests.fakes.telegram import FakeTelegram
from tests.support.process import World as ProcessWorld

TG_TOKEN = "123456:ABC-test-token-0123456789abcdef"
TG_CHANNEL = "tg"
SLACK_CHANNEL = "sl"
TEAM = "T0AGENTS"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
SLACK_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
AGENTS_ROOM = "C0AGENTS"
AGENT = "U0GRACE"
AGENT_NAME = "Grace"
# A long poll short enough that a restarted poller's first getUpdates comes soon.
POLL_TIMEOUT = 1


def telegram_channel(api_root: str) -> dict[str, Any]:
    return {
        "name": TG_CHANNEL,
        "type": "telegram",
        "token": TG_TOKEN,
        "api_base_url": api_root,
        "poll_timeout_seconds": POLL_TIMEOUT,
        "leader_lease_seconds": 3,
        "request_timeout_seconds": 5,
        "rate_limit_per_second": 1000,
    }


def slack_channel(api_url: str) -> dict[str, Any]:
    return {
        "name": SLACK_CHANNEL,
        "type": "slack",
        "bot_token": SLACK_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_base_url": api_url,
        "channel_messages_per_second": 50,
    }


def handover_settings(**overrides: Any) -> dict[str, Any]:
    """``[bots.demo.handover]``: the Slack desk in the agents' room; nobody times out."""
    return {
        "desk": "slack",
        "slack_channel": SLACK_CHANNEL,
        "agents_channel_id": AGENTS_ROOM,
        "agent_timeout_seconds": 3600,
        **overrides,
    }


def slack_workspace(slack: FakeSlack) -> None:
    """The agents' workspace at the fake: the bot, an agent, the agents' channel."""
    slack.add_workspace(TEAM, bot_token=SLACK_TOKEN, bot_user_id=BOT_USER, bot_id=BOT_ID)
    slack.add_user(TEAM, AGENT, real_name="Grace Hopper", display_name=AGENT_NAME)
    slack.add_channel(TEAM, AGENTS_ROOM, name="agents")


class HandoverWorld(ProcessWorld):
    """Bridge processes configured with the Telegram channel (users) and the Slack channel
    (the agents' desk), both of the bot ``demo``."""

    def __init__(
        self,
        tmp_path: Path,
        simulator: RunningSimulator,
        tg: FakeTelegram,
        slack: FakeSlack,
        handover: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(tmp_path, simulator, telegram_channel(tg.api_root))
        self.tg = tg
        self.slack = slack
        self.handover = dict(handover or handover_settings())
        self.bot_options["handover"] = self.handover
        self.more_channels.append(slack_channel(slack.api_url))


# --- what each side saw -----------------------------------------------------------------------


def thread_posts(slack: FakeSlack, root: PostedMessage) -> list[PostedMessage]:
    """The bridge's posts in the handover's thread (not the root, not people's posts)."""
    return [
        m
        for m in slack.thread(root.channel, root.ts)
        if m.ts != root.ts and m.bot_id and m.thread_ts == root.ts
    ]


def relayed_user_text(message: PostedMessage, user_name: str) -> str | None:
    """A user's message the desk posted in the thread (``*<name>*`` then the text), or None
    for the desk's notes."""
    sections = [b for b in message.blocks or [] if b.get("type") == "section" and "text" in b]
    if len(sections) != 2 or sections[0]["text"]["text"] != f"*{user_name}*":
        return None
    return str(sections[1]["text"]["text"])


@dataclass(frozen=True)
class Copy:
    """One arrival of a message at a platform: its text and when the fake recorded it."""

    text: str
    at: float


def user_copies(slack: FakeSlack, root: PostedMessage, user_name: str) -> list[Copy]:
    """Every user message the desk posted in the thread, in order (duplicates included)."""
    copies = []
    for m in thread_posts(slack, root):
        text = relayed_user_text(m, user_name)
        if text is not None:
            copies.append(Copy(text, m.at))
    return copies


def agent_copies(tg: FakeTelegram, chat_id: int, agent_name: str) -> list[Copy]:
    """Every agent's message the user got ("<name>: text"), in order, without the prefix."""
    prefix = f"{agent_name}: "
    return [
        Copy(m.text[len(prefix) :], m.at)
        for m in tg.sent_messages(chat_id)
        if m.text is not None and m.text.startswith(prefix)
    ]


def texts(copies: Sequence[Copy]) -> list[str]:
    return [c.text for c in copies]


def first_occurrences(copies: Sequence[Copy]) -> list[str]:
    return list(dict.fromkeys(texts(copies)))


@dataclass(frozen=True)
class Duplicate:
    """A message that arrived twice: the first copy, the repeat, and the kill between them
    that explains it (a send whose platform call succeeded right before the kill, before its
    commit: the restarted process sends it again), if any."""

    side: str
    text: str
    first_at: float
    again_at: float
    kill_at: float | None

    def describe(self, origin: float) -> str:
        window = (
            f"sent {self.kill_at - self.first_at:.3f}s before the kill at "
            f"{self.kill_at - origin:.2f}s"
            if self.kill_at is not None
            else "NOT explained by a kill"
        )
        return (
            f"{self.side} {self.text!r}: at {self.first_at - origin:.2f}s and again at "
            f"{self.again_at - origin:.2f}s ({window})"
        )


def duplicates(
    side: str, copies: Sequence[Copy], kills: Sequence[float], window: float
) -> list[Duplicate]:
    """Each extra copy of a text, with the kill that explains it: the first copy arrived
    within ``window`` seconds before that kill, the repeat after it."""
    found = []
    seen: dict[str, Copy] = {}
    for copy in copies:
        first = seen.setdefault(copy.text, copy)
        if first is copy:
            continue
        kill = next((k for k in kills if first.at <= k < copy.at and k - first.at <= window), None)
        found.append(Duplicate(side, copy.text, first.at, copy.at, kill))
    return found


def repeated(copies: Sequence[Copy]) -> int:
    return sum(n - 1 for n in Counter(texts(copies)).values() if n > 1)


# --- Slack delivering agents' acts -------------------------------------------------------------


def _runs(items: Sequence[str]) -> str:
    parts = []
    for item, group in itertools.groupby(items):
        count = len(list(group))
        parts.append(item if count == 1 else f"{item} x{count}")
    return ", ".join(parts)


@dataclass
class SlackAgents:
    """Slack's side of the Events API: each event is POSTed (signed) to the bridge's route and
    sent again until answered 200: no answer (the process is down, starting, or died while
    answering), a 5xx, or no answer within ``ack_within``. Slack waits ~1 min between
    retries; here a short interval keeps the test fast (the retries' headers are Slack's)."""

    url: str
    retry_interval: float = 0.2
    ack_within: float = 3.0
    attempts: int = 0
    #: per act (its label): what each attempt got: "down" (connection refused), "cut" (the
    #: connection broke before an answer: the process died while handling it), "timeout",
    #: or the HTTP status
    history: dict[str, list[str]] = field(default_factory=dict)

    async def deliver(self, label: str, body: Mapping[str, Any], *, deadline: float) -> int:
        """Deliver ``body`` until 200; returns the attempts it took."""
        tries = self.history.setdefault(label, [])
        reason: str | None = None
        while True:
            self.attempts += 1
            try:
                result = await post_event(
                    self.url,
                    body,
                    SIGNING_SECRET,
                    retry_num=len(tries) or None,
                    retry_reason=reason,
                    within=self.ack_within,
                )
                got = "timeout" if result.status == 0 else str(result.status)
            except aiohttp.ClientConnectorError:
                got = "down"
            except (aiohttp.ClientError, OSError):
                got = "cut"
            tries.append(got)
            if got == "200":
                return len(tries)
            if got not in ("down", "cut", "timeout", "500", "502", "503", "504"):
                raise AssertionError(f"the bridge refused the Slack event {label}: HTTP {got}")
            reason = "http_error" if got.isdigit() else "http_timeout"
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Slack event {label} was never accepted: {tries}")
            # Slack's redelivery interval (shortened), not a synchronisation.
            await asyncio.sleep(self.retry_interval)

    def retried(self) -> dict[str, str]:
        """The acts that took more than one attempt: what the attempts got, in short
        (``cut, down x12, 200``)."""
        return {label: _runs(tries) for label, tries in self.history.items() if len(tries) > 1}

    async def reply(self, slack: FakeSlack, root: PostedMessage, text: str, deadline: float) -> int:
        """The agent writes ``text`` in the handover's thread; Slack delivers the event."""
        event = slack.user_posts(TEAM, AGENT, root.channel, text, thread_ts=root.ts)
        body = event_callback(TEAM, event, bot_user_id=BOT_USER)
        return await self.deliver(text, body, deadline=deadline)

    async def press(
        self, slack: FakeSlack, message: PostedMessage, action_id: str, deadline: float
    ) -> int:
        """The agent presses a button of ``message`` as it shows now."""
        body = slack.press(message, AGENT, action_id)
        return await self.deliver(action_id, body, deadline=deadline)


__all__ = [
    "AGENT",
    "AGENTS_ROOM",
    "AGENT_NAME",
    "SLACK_CHANNEL",
    "TEAM",
    "TG_CHANNEL",
    "TG_TOKEN",
    "Copy",
    "Duplicate",
    "HandoverWorld",
    "SlackAgents",
    "agent_copies",
    "duplicates",
    "first_occurrences",
    "handover_settings",
    "relayed_user_text",
    "repeated",
    "slack_workspace",
    "texts",
    "thread_posts",
    "user_copies",
]
