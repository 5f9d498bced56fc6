"""Slack events, button presses and slash commands to the core's :class:`Inbound`, as pure
functions: no I/O, no clock.

Every function answers and never raises; odd payloads are :class:`Ignored` ("malformed ...").

- :func:`event_to_inbound` (Events API ``event``): an :class:`~bridge.channel.Inbound`, a
  :class:`ThreadReply` (a plain reply in a channel thread: ours only when that thread is one of
  our conversations, which the adapter checks) or :class:`Ignored`;
- :func:`action_to_inbound` (``block_actions``): a pressed chip, or :class:`Ignored`;
- :func:`command_to_inbound` (slash commands).

Files in a message (``file_share``, or ``files`` on any message) become the event's
attachments (:mod:`adapters.slack.files`); the text is then the message text, or "".

Conversations: a DM is one conversation (answered in the DM, not threaded); a mention in a
channel opens one per thread (answered in the thread); a slash command outside DMs opens one per
user in that channel (answered in the channel, not threaded).

Deduplication keys (``event_id``): ``{team}:{channel}:{ts}`` for messages, the same for the
``app_mention`` and the ``message`` event Slack sends for one post and for every retry;
``act:{team}:{channel}:{message_ts}`` for a press (one press per message carrying chips);
``cmd:{team}:{trigger_id}`` for a slash command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.slack.files import files_to_attachments
from bridge.channel import ContextScalar, Inbound, InboundKind, Recipient
from bridge.media.attachments import Attachment

PLATFORM = "slack"

CHIP_ACTION_PREFIX = "chip_"
"""The ``action_id`` prefix of the buttons ``render`` makes for chips."""

_CHANNEL_TYPES = frozenset({"channel", "group", "mpim"})
# Message subtypes a user's turn can have; every other one (edits, deletions, joins, topic
# changes, thread broadcasts, ...) is ignored.
_USER_SUBTYPES = frozenset({None, "file_share"})
_COMMANDS = {
    "": InboundKind.START,
    "start": InboundKind.START,
    "stop": InboundKind.STOP,
    "quit": InboundKind.STOP,
    "restart": InboundKind.RESTART,
}
# After a removed mention, no space before these ("hi <@BOT>, there" → "hi, there").
_CLOSING = ",.;:!?)…"
_TOKEN = re.compile(r"<([^<>\n]*)>")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is in one workspace (from ``auth.test``)."""

    user_id: str
    bot_id: str | None
    team_id: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Not an event for the bot; ``reason`` is for the debug log."""

    reason: str


@dataclass(frozen=True, slots=True)
class ThreadReply:
    """A plain message in a channel thread, not mentioning the bot: ours only if the bot holds
    a conversation in that thread (``thread_key``); then the adapter passes on ``inbound``."""

    thread_key: str
    inbound: Inbound


def thread_key(team_id: str, channel: str, thread_ts: str) -> str:
    """The conversation key of a channel thread."""
    return f"{team_id}:{channel}:{thread_ts}"


def dm_key(team_id: str, channel: str) -> str:
    """The conversation key of a direct message channel."""
    return f"{team_id}:{channel}"


def dm_recipient(team_id: str, channel: str, user: str) -> Recipient:
    """A conversation the bot starts in its DM ``channel`` with ``user``: the key, address and
    context a message in that DM gets from :func:`event_to_inbound` (before the profile), so
    that the user's reply continues the conversation."""
    return Recipient(
        conversation_key=dm_key(team_id, channel),
        user_id=user,
        address=_address(team_id, channel, None),
        context=_context(team_id, "im", user),
    )


def command_key(team_id: str, channel: str, user: str) -> str:
    """The conversation key of one user's slash-command conversation in a (non-DM) channel."""
    return f"{team_id}:{channel}:cmd:{user}"


# --- events ---------------------------------------------------------------------------------


def event_to_inbound(
    event: Mapping[str, Any], team_id: str, bot: BotIdentity
) -> Inbound | ThreadReply | Ignored:
    """Normalise one Events API event (the ``event`` of an ``event_callback``); ``team_id`` is
    the envelope's. Never raises."""
    try:
        if not isinstance(event, Mapping):
            return Ignored("malformed event: not an object")
        kind = event.get("type")
        if kind == "app_mention":
            return _from_mention(event, team_id, bot)
        if kind == "message":
            return _from_message(event, team_id, bot)
        return Ignored(f"event type {kind!r} is not handled")
    except Exception as exc:  # a malformed event must not stop intake
        return Ignored(f"malformed event ({type(exc).__name__})")


def _skip(event: Mapping[str, Any], bot: BotIdentity) -> Ignored | None:
    """Why a message-like event is no user's turn, if it is not."""
    if event.get("hidden"):
        return Ignored("hidden message")
    subtype = event.get("subtype")
    if event.get("bot_id") or subtype == "bot_message":
        return Ignored("message from a bot")
    if subtype not in _USER_SUBTYPES:
        return Ignored(f"message subtype {subtype!r}")
    user = event.get("user")
    if user == bot.user_id:
        return Ignored("the bot's own message")
    if not _is_id(user):
        return Ignored("malformed message: no user")
    if not _is_id(event.get("channel")):
        return Ignored("malformed message: no channel")
    if not _is_id(event.get("ts")):
        return Ignored("malformed message: no ts")
    text = event.get("text")
    if text is not None and not isinstance(text, str):
        return Ignored("malformed message: text is not a string")
    thread_ts = event.get("thread_ts")
    if thread_ts is not None and not isinstance(thread_ts, str):
        return Ignored("malformed message: thread_ts is not a string")
    return None


def _from_mention(event: Mapping[str, Any], team_id: str, bot: BotIdentity) -> Inbound | Ignored:
    skipped = _skip(event, bot)
    if skipped is not None:
        return skipped
    channel: str = event["channel"]
    if channel.startswith("D"):
        return Ignored("app_mention in a DM: handled as message")
    ts: str = event["ts"]
    in_thread = _in_thread(event)
    thread = event.get("thread_ts") or ts
    kind, text, attachments = _content(event, team_id, bot)
    if kind is None:
        if in_thread:
            # A bare mention inside a thread: a START would restart a running conversation.
            return Ignored("empty mention in a thread")
        kind, text = InboundKind.START, ""  # a bare mention opens a new thread conversation
    return Inbound(
        event_id=f"{team_id}:{channel}:{ts}",
        conversation_key=thread_key(team_id, channel, thread),
        user_id=event["user"],
        kind=kind,
        text=text,
        address=_address(team_id, channel, thread),
        context=_context(team_id, _channel_type(event.get("channel_type"), channel), event["user"]),
        attachments=attachments,
    )


def _from_message(
    event: Mapping[str, Any], team_id: str, bot: BotIdentity
) -> Inbound | ThreadReply | Ignored:
    skipped = _skip(event, bot)
    if skipped is not None:
        return skipped
    channel: str = event["channel"]
    ts: str = event["ts"]
    user: str = event["user"]
    channel_type = _channel_type(event.get("channel_type"), channel)
    event_id = f"{team_id}:{channel}:{ts}"
    context = _context(team_id, channel_type, user)
    if channel_type == "im":
        kind, text, attachments = _content(event, team_id, bot)
        if kind is None:
            return Ignored("empty message")
        return Inbound(
            event_id=event_id,
            conversation_key=dm_key(team_id, channel),
            user_id=user,
            kind=kind,
            text=text,
            address=_address(team_id, channel, None),
            context=context,
            attachments=attachments,
        )
    if channel_type not in _CHANNEL_TYPES:
        return Ignored(f"message in a {channel_type!r} channel")
    if _mentions(event.get("text") or "", bot):
        return Ignored("handled as app_mention")
    if not _in_thread(event):
        return Ignored("channel message not addressed to the bot")
    thread: str = event["thread_ts"]
    kind, text, attachments = _content(event, team_id, bot)
    if kind is None:
        return Ignored("empty message")
    key = thread_key(team_id, channel, thread)
    inbound = Inbound(
        event_id=event_id,
        conversation_key=key,
        user_id=user,
        kind=kind,
        text=text,
        address=_address(team_id, channel, thread),
        context=context,
        attachments=attachments,
    )
    return ThreadReply(thread_key=key, inbound=inbound)


def _in_thread(event: Mapping[str, Any]) -> bool:
    """A reply in a thread (a thread's parent carries ``thread_ts == ts`` once it has
    replies: it is not a reply)."""
    thread_ts = event.get("thread_ts")
    return isinstance(thread_ts, str) and bool(thread_ts) and thread_ts != event.get("ts")


def _content(
    event: Mapping[str, Any], team_id: str, bot: BotIdentity
) -> tuple[InboundKind | None, str, tuple[Attachment, ...]]:
    """The user's text (bot mentions removed, Slack markup made plain) and files: TEXT when
    there is either; UNSUPPORTED ``"file"`` for files none of which can be fetched (deleted,
    hosted elsewhere) without text; ``(None, "", ())`` when there is nothing."""
    text = to_plain(strip_mentions(event.get("text") or "", bot.user_id))
    attachments = files_to_attachments(event.get("files"), team_id)
    if text or attachments:
        return InboundKind.TEXT, text, attachments
    if event.get("subtype") == "file_share" or event.get("files"):
        return InboundKind.UNSUPPORTED, "file", ()
    return None, "", ()


def _address(team_id: str, channel: str, thread_ts: str | None) -> dict[str, Any]:
    return {"team_id": team_id, "channel": channel, "thread_ts": thread_ts}


def _context(team_id: str, channel_type: str, user: str) -> dict[str, ContextScalar]:
    return {"platform": PLATFORM, "teamId": team_id, "channelType": channel_type, "userId": user}


def _channel_type(given: object, channel: str, name: object = None) -> str:
    """``channel_type`` as given, else guessed from the channel id (``D``: im, ``G``: group
    or, named ``mpdm-...``, mpim; otherwise channel)."""
    if isinstance(given, str) and given:
        return given
    if channel.startswith("D"):
        return "im"
    if isinstance(name, str) and name.startswith("mpdm-"):
        return "mpim"
    if channel.startswith("G"):
        return "group"
    return "channel"


def _is_id(value: object) -> bool:
    return isinstance(value, str) and bool(value)


# --- text -----------------------------------------------------------------------------------


def _mention_pattern(bot_user_id: str) -> str:
    return rf"<@{re.escape(bot_user_id)}(?:\|[^<>]*)?>"


def _mentions(text: str, bot: BotIdentity) -> bool:
    return bool(bot.user_id) and re.search(_mention_pattern(bot.user_id), text) is not None


def strip_mentions(text: str, bot_user_id: str) -> str:
    """``text`` without ``<@BOT>`` / ``<@BOT|name>``; whitespace around a removed mention is
    collapsed ("hi <@BOT> there" → "hi there", "<@BOT>: hi" → "hi"), the ends stripped."""
    if not bot_user_id:
        return text.strip()
    mention = _mention_pattern(bot_user_id)
    text = re.sub(rf"^\s*(?:{mention}[\s,:;]*)+", "", text)
    text = re.sub(rf"[ \t]*{mention}(?=[{re.escape(_CLOSING)}]|\s*$)", "", text)
    return re.sub(rf"[ \t]*{mention}[ \t]*", _join_around, text).strip()


def _join_around(match: re.Match[str]) -> str:
    """A space where a removed mention stood between words; nothing at a line's end."""
    text, start, end = match.string, match.start(), match.end()
    at_edge = start == 0 or end == len(text) or text[start - 1] == "\n" or text[end] == "\n"
    return "" if at_edge else " "


def to_plain(text: str) -> str:
    """Slack's message markup as the plain text the user typed: ``<@U1|ada>`` → ``@ada``,
    ``<#C1|general>`` → ``#general``, ``<!here>`` → ``@here``, ``<https://x.org|x.org>`` →
    ``x.org``, ``<https://x.org|docs>`` → ``docs (https://x.org)``; ``&amp;``, ``&lt;`` and
    ``&gt;`` unescaped. Ends stripped."""
    return _unescape(_TOKEN.sub(_plain_token, text)).strip()


def _plain_token(match: re.Match[str]) -> str:
    inner = match[1]
    target, _, label = inner.partition("|")
    if target.startswith(("@", "#")):
        return target[0] + (label.lstrip(target[0]) if label else target[1:])
    if target.startswith("!"):
        if label:
            return label
        special = target[1:].split("^", 1)[0]
        return f"@{special}" if special else inner
    if not label:
        return target
    if _unescape(label) in _unescape(target):  # "x.org" for http://x.org, an address for mailto:
        return label
    return f"{label} ({target})"


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- block actions --------------------------------------------------------------------------


def _press(body: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    """The (channel, message_ts, thread_ts) of the message whose button was pressed."""
    container = body.get("container")
    container = container if isinstance(container, Mapping) else {}
    message = body.get("message")
    message = message if isinstance(message, Mapping) else {}
    channel_obj = body.get("channel")
    channel_obj = channel_obj if isinstance(channel_obj, Mapping) else {}
    channel = container.get("channel_id") or channel_obj.get("id")
    message_ts = container.get("message_ts") or message.get("ts")
    thread_ts = container.get("thread_ts") or message.get("thread_ts")
    if not isinstance(channel, str) or not channel:
        return None
    if not isinstance(message_ts, str) or not message_ts:
        return None
    if not (thread_ts is None or isinstance(thread_ts, str)):
        return None
    return channel, message_ts, (thread_ts or None)


def pressed_message(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(channel, message_ts)`` of the message carrying the pressed button (the adapter
    updates it so that it cannot be pressed twice), or None."""
    try:
        if not isinstance(body, Mapping):
            return None
        press = _press(body)
        return None if press is None else (press[0], press[1])
    except Exception:
        return None


def pressed_title(body: Mapping[str, Any]) -> str | None:
    """The shown title of the pressed chip (for :func:`~adapters.slack.render.pressed_blocks`),
    or None."""
    try:
        action = _chip_action(body)
        if action is None:
            return None
        text = action.get("text")
        title = text.get("text") if isinstance(text, Mapping) else None
        return title if isinstance(title, str) else None
    except Exception:
        return None


def _chip_action(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    actions = body.get("actions") if isinstance(body, Mapping) else None
    if not isinstance(actions, list):
        return None
    for action in actions:
        if not isinstance(action, Mapping):
            continue
        action_id = action.get("action_id")
        if isinstance(action_id, str) and action_id.startswith(CHIP_ACTION_PREFIX):
            return action
    return None


def action_to_inbound(body: Mapping[str, Any], bot: BotIdentity) -> Inbound | Ignored:
    """A ``block_actions`` interaction: the first chip button pressed → BUTTON with the chip's
    value; the conversation is the one the message belongs to (the DM; the thread; outside a
    thread in a channel, the presser's slash-command conversation). Never raises."""
    try:
        if not isinstance(body, Mapping):
            return Ignored("malformed interaction: not an object")
        if body.get("type") != "block_actions":
            return Ignored(f"interaction type {body.get('type')!r} is not handled")
        action = _chip_action(body)
        if action is None:
            return Ignored("no chip pressed")
        value = action.get("value")
        if not isinstance(value, str) or not value:
            return Ignored("malformed interaction: chip without a value")
        user_obj = body.get("user")
        user = user_obj.get("id") if isinstance(user_obj, Mapping) else None
        if not _is_id(user):
            return Ignored("malformed interaction: no user")
        assert isinstance(user, str)
        if user == bot.user_id:
            return Ignored("the bot's own press")
        press = _press(body)
        if press is None:
            return Ignored("malformed interaction: no message")
        channel, message_ts, thread_ts = press
        team = _team(body, bot)
        if team is None:
            return Ignored("malformed interaction: no team")
        channel_obj = body.get("channel")
        name = channel_obj.get("name") if isinstance(channel_obj, Mapping) else None
        channel_type = _channel_type(None, channel, name)
        if channel_type == "im":
            key, address = dm_key(team, channel), _address(team, channel, None)
        elif thread_ts is not None:
            key, address = thread_key(team, channel, thread_ts), _address(team, channel, thread_ts)
        else:
            # Our top-level messages in channels answer slash commands: the presser's own.
            key, address = command_key(team, channel, user), _address(team, channel, None)
        return Inbound(
            event_id=f"act:{team}:{channel}:{message_ts}",
            conversation_key=key,
            user_id=user,
            kind=InboundKind.BUTTON,
            text=value,
            address=address,
            context=_context(team, channel_type, user),
        )
    except Exception as exc:
        return Ignored(f"malformed interaction ({type(exc).__name__})")


def _team(body: Mapping[str, Any], bot: BotIdentity) -> str | None:
    """The workspace the bot serves (``bot.team_id``; in shared channels the payload's team
    may be the user's), else the payload's."""
    if bot.team_id:
        return bot.team_id
    team = body.get("team")
    found = team.get("id") if isinstance(team, Mapping) else body.get("team_id")
    return found if _is_id(found) else None


# --- slash commands -------------------------------------------------------------------------


def command_to_inbound(body: Mapping[str, Any], bot: BotIdentity) -> Inbound | Ignored:
    """A slash command (any of the app's commands): ``stop``/``quit`` → STOP, ``restart`` →
    RESTART, ``start`` or nothing → START, anything else → TEXT. In a DM the DM's
    conversation, elsewhere the user's own conversation in that channel (not threaded).
    Never raises."""
    try:
        if not isinstance(body, Mapping):
            return Ignored("malformed command: not an object")
        user = body.get("user_id")
        channel = body.get("channel_id")
        trigger = body.get("trigger_id")
        raw = body.get("text")
        if not _is_id(user) or not _is_id(channel):
            return Ignored("malformed command: no user or channel")
        if not _is_id(trigger):
            return Ignored("malformed command: no trigger_id")
        if raw is not None and not isinstance(raw, str):
            return Ignored("malformed command: text is not a string")
        assert isinstance(user, str) and isinstance(channel, str)
        team = _team(body, bot)
        if team is None:
            return Ignored("malformed command: no team")
        text = to_plain(raw or "")
        kind = _COMMANDS.get(text.lower(), InboundKind.TEXT)
        channel_type = _channel_type(None, channel, body.get("channel_name"))
        im = channel_type == "im"
        key = dm_key(team, channel) if im else command_key(team, channel, user)
        return Inbound(
            event_id=f"cmd:{team}:{trigger}",
            conversation_key=key,
            user_id=user,
            kind=kind,
            text=text if kind == InboundKind.TEXT else "",
            address=_address(team, channel, None),
            context=_context(team, channel_type, user),
        )
    except Exception as exc:
        return Ignored(f"malformed command ({type(exc).__name__})")
