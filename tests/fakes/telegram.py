"""A fake Telegram Bot API for tests, served by aiohttp on 127.0.0.1, speaking the real protocol.

Usage::

    async with FakeTelegram(tokens=["123456:ABC-test-token"]) as tg:
        bot = telegram.Bot("123456:ABC-test-token", base_url=tg.base_url)  # PTB, or plain HTTP:
        ...  # f"{tg.api_root}/bot<token>/<method>"
        tg.push_update(tg.private_text(42, "hello"))
        await tg.wait_for(lambda: tg.sent_messages(chat_id=42))

What it serves (``GET|POST /bot<token>/<method>``, method names case-insensitive like Telegram's):

* Parameters from the query string, ``application/x-www-form-urlencoded``, ``multipart/form-data``
  (files kept as bytes, see :class:`UploadedFile`) or a JSON body. On the form/query wire every
  value is text; the fake decodes the fields Telegram reads as JSON (``reply_markup``, ``entities``,
  ``allowed_updates``, ``reply_parameters``, ...), integers (``chat_id`` when numeric,
  ``message_id``, ``offset``, ...) and booleans (``true``/``false``/``1``/``0``).
* Replies exactly shaped like Telegram's: ``{"ok": true, "result": ..., "description"?: ...}`` or
  ``{"ok": false, "error_code": N, "description": "...", "parameters"?: {...}}`` with HTTP status N.
  Unknown token: 401 ``Unauthorized`` (404 ``Not Found`` when it is not even shaped like a token);
  unknown method: 404 ``Not Found``.
* Methods: getMe, getUpdates, setWebhook, deleteWebhook, getWebhookInfo, sendMessage, sendPhoto,
  sendDocument, sendAudio, sendVideo, sendMediaGroup, getFile, sendChatAction,
  answerCallbackQuery, editMessageText, editMessageReplyMarkup, deleteMessage, setMyCommands,
  getMyCommands, deleteMyCommands, getChat. Error texts are the Bot API server's
  (tdlib/telegram-bot-api ``Client.cpp`` and tdlib's ``MessageEntity.cpp``).
* Files users send (the builders ``photo``, ``document``, ``voice``, ``audio``, ``video``,
  ``video_note``, ``animation``, ``sticker``; ``data=`` gives their bytes): getFile answers
  ``file_id``, ``file_unique_id``, ``file_size`` and a ``file_path`` ("Bad Request: file is too
  big" above 20 MB, "invalid file_id" for ids it never made), and ``GET /file/bot<token>/<path>``
  serves the bytes in chunks to the bot that asked (404 for anything else). Faults on downloads:
  ``fail_next("downloadFile", ...)``; they are recorded as calls of that name.
* Files sent by URL (sendPhoto, sendDocument, sendAudio, sendVideo, sendMediaGroup) are recorded
  (:attr:`SentMessage.media_type`, :attr:`SentMessage.media`, ``media_group_id``);
  :meth:`FakeTelegram.refuse_url` makes a URL answer "Bad Request: failed to get HTTP URL
  content", as when Telegram cannot fetch it.

Formatted text (``parse_mode``) is parsed by re-implementations of tdlib's parsers, with tdlib's
error messages and UTF-8 byte offsets (``Bad Request: can't parse entities: ...``):

* ``MarkdownV2`` (:func:`parse_markdown_v2`): every one of ``_*[]()~`>#+-=|{}.!`` outside an
  entity must be escaped with ``\\`` ("Character 'X' is reserved ..."); inside ``code``/``pre`` only
  ``\\`` and the backtick are special; unclosed entities ("Can't find end of Bold entity at byte
  offset N"), unterminated link URLs, ``>`` block quotes (only at a line start; ``||`` at the end
  makes them expandable), ``![..](tg://emoji?id=N)`` custom emoji, ``[..](url)`` links (an invalid
  URL drops the entity, ``tg://user?id=N`` makes a text_mention).
* ``HTML`` (:func:`parse_html`): only Telegram's tags (b strong i em u ins s strike del span
  tg-spoiler a code pre blockquote tg-emoji); unknown tags, unclosed/unmatched/unexpected end
  tags, bad attributes, ``<span>`` without ``class="tg-spoiler"``; ``&lt; &gt; &amp; &quot;`` and
  numeric references are decoded (others stay literal, like tdlib).
* legacy ``Markdown`` (:func:`parse_markdown`): bold, italic, code, pre and ``[text](url)``.

After parsing, text is trimmed, must be non-empty and at most 4096 (captions: 1024) UTF-16 code
units. Telegram's automatic entities (mentions, bot commands, hashtags, URLs) are detected with
simple regular expressions, in sent messages and in the builders' updates.

Tests control it with :meth:`FakeTelegram.fail_next`, :meth:`~FakeTelegram.enforce_rate_limits`,
:meth:`~FakeTelegram.set_latency`, :meth:`~FakeTelegram.hold`, :meth:`~FakeTelegram.block`,
:meth:`~FakeTelegram.delete_chat`; inspect :attr:`~FakeTelegram.calls`,
:meth:`~FakeTelegram.sent_messages`, :meth:`~FakeTelegram.chat_actions`,
:attr:`~FakeTelegram.answered_callbacks`, :attr:`~FakeTelegram.webhook_deliveries`; and wait with
:meth:`~FakeTelegram.wait_for` (woken on every change, never a fixed sleep).

Limitations (deliberate): no other send* methods, inline mode, payments; URLs sent are never
fetched (every URL works unless refused); file paths never expire; no automatic webhook delivery
or retry (tests call :meth:`deliver_webhook` / :meth:`deliver_pending`); the webhook
answer-as-method feature is ignored; Telegram's 3-second delay of repeated 409 Conflicts and its
per-chat concurrent-send cap are not modelled; message ids are per chat and shared between the
fake's bots; the auto-detected entities are approximations (no e-mails, phone numbers, cashtags;
scheme-less URLs only for common TLDs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import re
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from tests.support.net import LocalServer

JSON = dict[str, Any]
T = TypeVar("T")

DEFAULT_TOKEN = "123456:ABC-test-token"
DEFAULT_BOT_USERNAME = "parloa_test_bot"
MAX_MESSAGE_LENGTH = 4096  # UTF-16 code units after entity parsing
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
LONG_POLL_MAX_TIMEOUT = 50
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile refuses larger files ("file is too big")
DOWNLOAD_CHUNK_BYTES = 64 * 1024
URL_CONTENT_FAILED = "failed to get HTTP URL content"
# file_id prefix (as Telegram's for the kind) and getFile directory of what users send
_USER_FILE_KINDS = {
    "sticker": ("CAACAgIAAxkBAAI", "stickers"),
    "voice": ("AwACAgIAAxkBAAI", "voice"),
    "document": ("BQACAgIAAxkBAAI", "documents"),
    "audio": ("CQACAgIAAxkBAAI", "music"),
    "video": ("BAACAgIAAxkBAAI", "videos"),
    "video_note": ("DQACAgIAAxkBAAI", "video_notes"),
    "animation": ("CgACAgIAAxkBAAI", "animations"),
}

SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]+")
COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")

CONFLICT_OTHER_POLL = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
CONFLICT_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)
CONFLICT_SET_WEBHOOK = "Conflict: terminated by setWebhook request"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_BLOCKED = {
    "private": "Forbidden: bot was blocked by the user",
    "group": "Forbidden: bot was kicked from the group chat",
    "supergroup": "Forbidden: bot was kicked from the supergroup chat",
    "channel": "Forbidden: bot is not a member of the channel chat",
}
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
ALL_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
# What Telegram sends when allowed_updates was never set (or set to []).
DEFAULT_UPDATE_TYPES = frozenset(ALL_UPDATE_TYPES) - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
# Methods counted by enforce_rate_limits (sending or changing a message in a chat).
RATE_LIMITED_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendAudio",
        "sendVideo",
        "sendMediaGroup",
        "editMessageText",
        "editMessageReplyMarkup",
    }
)

_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "allowed_updates",
        "reply_parameters",
        "link_preview_options",
        "commands",
        "scope",
        "media",
        "results",
        "permissions",
        "reaction",
        "suggested_post_parameters",
    }
)
_INT_FIELDS = frozenset(
    {
        "message_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "cache_time",
        "max_connections",
        "reply_to_message_id",
        "user_id",
        "from_chat_id",
        "direct_messages_topic_id",
        "duration",
        "width",
        "height",
    }
)
_BOOL_FIELDS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "show_alert",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "has_spoiler",
        "show_caption_above_media",
        "allow_paid_broadcast",
    }
)
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a ``multipart/form-data`` request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class StoredFile:
    """A file users sent (made by the update builders): what getFile tells about it and, when
    the test gave them, the bytes served at its ``file_path``."""

    file_id: str
    file_unique_id: str
    file_size: int | None
    directory: str  # Telegram's folder for the kind: photos, documents, voice, ...
    extension: str
    data: bytes | None = None
    content_type: str | None = None
    file_path: str | None = None  # set by the first getFile


@dataclass
class Call:
    """One HTTP request to the Bot API, recorded when it arrives (``status``/``response`` are
    filled in when it is answered; a long poll stays ``None`` until then)."""

    method: str
    params: JSON
    files: dict[str, UploadedFile]
    at: float
    token: str = ""
    http_method: str = "POST"
    content_type: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # values as they came on the wire
    status: int | None = None
    response: JSON | None = None
    # The client had gone (a killed process's long poll) when the answer was ready: nobody
    # read it.
    abandoned: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def description(self) -> str | None:
        return None if self.response is None else self.response.get("description")


@dataclass
class SentMessage:
    """A message the bot sent (sendMessage / sendPhoto), kept up to date by edits and deletes."""

    method: str
    token: str
    chat_id: int
    message_id: int
    text: str | None  # message text as users see it (after parse_mode), None for photos
    caption: str | None  # photo caption as users see it
    raw_text: str | None  # the ``text`` / ``caption`` parameter as sent
    parse_mode: str | None
    entities: list[JSON]
    reply_markup: JSON | None
    message_thread_id: int | None
    reply_to_message_id: int | None
    photo: str | UploadedFile | None  # URL / file_id, or the uploaded file
    message: JSON  # the current Telegram Message object
    at: float
    edits: list[JSON] = field(default_factory=list)  # earlier versions of ``message``
    deleted: bool = False
    media_type: str | None = None  # photo, document, audio or video
    media: str | UploadedFile | None = None  # what was sent as it: URL, file_id or upload
    media_group_id: str | None = None  # sendMediaGroup: shared by the album's messages

    @property
    def content(self) -> str | None:
        return self.text if self.text is not None else self.caption

    @property
    def buttons(self) -> list[JSON]:
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]


@dataclass(frozen=True)
class ChatAction:
    token: str
    chat_id: int
    action: str
    message_thread_id: int | None
    at: float


@dataclass(frozen=True)
class AnsweredCallback:
    token: str
    callback_query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int | None
    at: float


@dataclass(frozen=True)
class WebhookDelivery:
    url: str
    update: JSON
    status: int  # 0 when the connection failed
    secret_token: str | None  # the X-Telegram-Bot-Api-Secret-Token header sent
    at: float
    error: str | None = None
    body: bytes = b""


@dataclass
class Webhook:
    url: str
    secret_token: str
    max_connections: int
    ip_address: str
    set_at: float


@dataclass
class Fault:
    """An injected failure (see :meth:`FakeTelegram.fail_next`)."""

    method: str  # "*" for any
    status: int
    description: str
    parameters: JSON | None
    remaining: int | None  # None: until cleared
    chat_id: str | None
    body: bytes | None
    disconnect: bool

    def matches(self, method: str, params: Mapping[str, Any]) -> bool:
        if self.method not in ("*", method):
            return False
        return self.chat_id is None or str(params.get("chat_id")) == self.chat_id


class Hold:
    """Requests to ``method`` wait here until :meth:`release` (see :meth:`FakeTelegram.hold`)."""

    def __init__(self, method: str, on_change: Callable[[], None] = lambda: None) -> None:
        self.method = method
        self.waiting = 0
        self.passed = 0
        self._event = asyncio.Event()
        self._on_change = on_change

    @property
    def released(self) -> bool:
        return self._event.is_set()

    def release(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        self.waiting += 1
        self._on_change()
        try:
            await self._event.wait()
        finally:
            self.waiting -= 1
            self.passed += 1
            self._on_change()


@dataclass
class RateLimits:
    """Telegram's documented budgets. Token buckets: a chat may burst ``chat_burst`` messages and
    then gets ``per_chat_per_second``; a group (negative chat id) at most ``group_per_minute`` in
    any 60 s window; the bot ``global_burst`` then ``global_per_second``."""

    per_chat_per_second: float = 1.0
    group_per_minute: int = 20
    global_per_second: float = 30.0
    chat_burst: int = 3
    global_burst: int = 30
    retry_after: int | None = None  # fixed retry_after; None: computed from the budget


@dataclass
class _Bucket:
    tokens: float
    updated: float

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.updated) * rate)
        self.updated = now

    def wait_needed(self, rate: float) -> float:
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / rate


@dataclass
class _Poll:
    terminated: str | None = None  # the 409 description once another request took over


@dataclass
class _Bot:
    token: str
    user: JSON
    next_update_id: int
    updates: list[JSON] = field(default_factory=list)
    allowed_updates: frozenset[str] = DEFAULT_UPDATE_TYPES
    allowed_updates_set: bool = False
    webhook: Webhook | None = None
    poll: _Poll | None = None
    commands: dict[tuple[str, str], list[JSON]] = field(default_factory=dict)
    last_webhook_error: tuple[int, str] | None = None
    chat_buckets: dict[int, _Bucket] = field(default_factory=dict)
    group_windows: dict[int, deque[float]] = field(default_factory=dict)
    global_bucket: _Bucket | None = None


@dataclass
class _Ok:
    result: Any
    description: str | None = None


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, f"Bad Request: {message}")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


# --- formatted text -------------------------------------------------------------------------------


class EntityParseError(ValueError):
    """tdlib's parse error; Telegram answers ``Bad Request: can't parse entities: <message>``."""


_SPACES = " \t\r\n\v\0"
_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!\n")
# MarkdownV2 entities opened by two characters: the first, alone, is reserved.
_MDV2_TWO_CHAR_OPENERS = {"|": ("|", "Spoiler"), "!": ("[", "CustomEmoji")}
_TYPE_PRIORITY = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 10,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "mention": 50,
    "hashtag": 50,
    "bot_command": 50,
    "url": 50,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}
# tdlib's names (used in its error messages) -> Bot API entity types
_TD_TYPES = {
    "Bold": "bold",
    "Italic": "italic",
    "Underline": "underline",
    "Strikethrough": "strikethrough",
    "Spoiler": "spoiler",
    "Code": "code",
    "Pre": "pre",
    "PreCode": "pre",
    "TextUrl": "text_link",
    "MentionName": "text_mention",
    "CustomEmoji": "custom_emoji",
    "BlockQuote": "blockquote",
    "ExpandableBlockQuote": "expandable_blockquote",
}
_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_HTML_ENTITY_TYPES = {
    "b": "Bold",
    "strong": "Bold",
    "i": "Italic",
    "em": "Italic",
    "u": "Underline",
    "ins": "Underline",
    "s": "Strikethrough",
    "strike": "Strikethrough",
    "del": "Strikethrough",
    "tg-spoiler": "Spoiler",
    "span": "Spoiler",
    "pre": "Pre",
    "code": "Code",
}


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's limits and entity offsets."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _u16(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _byte_offsets(text: str) -> list[int]:
    offsets = [0]
    total = 0
    for ch in text:
        total += len(ch.encode("utf-8", "surrogatepass"))
        offsets.append(total)
    return offsets


def _is_escapable(ch: str) -> bool:
    return ch != "" and 0 < ord(ch) <= 126


def _entity(kind: str, offset: int, length: int, arg: Any = None) -> JSON:
    entity: JSON = {"type": _TD_TYPES[kind], "offset": offset, "length": length}
    if kind == "TextUrl":
        entity["url"] = arg
    elif kind == "MentionName":
        entity["user"] = {"id": arg, "is_bot": False, "first_name": "User"}
    elif kind == "PreCode":
        entity["language"] = arg
    elif kind == "CustomEmoji":
        entity["custom_emoji_id"] = str(arg)
    return entity


def sort_entities(entities: Iterable[JSON]) -> list[JSON]:
    return sorted(
        entities, key=lambda e: (e["offset"], -e["length"], _TYPE_PRIORITY.get(e["type"], 50))
    )


_HOST_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}")
_IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_USER_LINK_RE = re.compile(r"tg:(?://)?user\?id=(\d+)", re.IGNORECASE)


def check_link(url: str) -> str | None:
    """Roughly tdlib's ``LinkManager::get_checked_link``: an http(s) URL with a dotted host (a
    missing scheme means http://, the path gets a leading ``/``), or a tg:/ton: link; else None."""
    if not url or any(ch.isspace() for ch in url):
        return None
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?", url)
    if match and not re.match(r"[^:/?#]+:\d", url):
        scheme = match.group(1).lower()
        if scheme in ("tg", "ton"):
            return scheme + url[len(scheme) :]
        if scheme not in ("http", "https") or not match.group(2):
            return None
        rest = url[match.end() :]
    else:
        scheme, rest = "http", url
    end = len(rest)
    for sep in "/?#":
        index = rest.find(sep)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    userinfo, _, host_port = authority.rpartition("@")
    host, _, port = host_port.partition(":")
    host = host.lower()
    if port and not port.isdigit():
        return None
    if not (_HOST_RE.fullmatch(host) or _IPV4_RE.fullmatch(host)):
        return None
    if not tail.startswith("/"):
        tail = "/" + tail
    userinfo = f"{userinfo}@" if userinfo else ""
    port = f":{port}" if port else ""
    return f"{scheme}://{userinfo}{host}{port}{tail}"


def _char_at(text: str, k: int) -> str:
    """The character at ``k``, or "" outside the text (a parser's look-ahead)."""
    return text[k] if 0 <= k < len(text) else ""


def _link_user_id(url: str) -> int | None:
    match = _USER_LINK_RE.fullmatch(url.strip())
    return int(match.group(1)) if match else None


def _link_entity(url: str, offset: int, length: int) -> JSON | None:
    """A link's entity: a mention of the user a ``tg://user?id=N`` link names, else a text link
    to the checked URL; None when Telegram would not take the URL (the text stays plain)."""
    user_id = _link_user_id(url)
    if user_id is not None:
        return _entity("MentionName", offset, length, user_id)
    checked = check_link(url)
    return None if checked is None else _entity("TextUrl", offset, length, checked)


def _pre_header(text: str, i: int) -> tuple[str, int]:
    """After an opening triple backtick at ``i``: the language named right after it (up to a
    space or a backtick, if any) and where the code starts (one line break is skipped)."""
    n = len(text)
    language = ""
    end = i
    while end < n and text[end] not in _SPACES and text[end] != "`":
        end += 1
    if end != i and end < n and text[end] != "`":
        language = text[i:end]
        i = end
    if i < n and text[i] in "\n\r":
        following = text[i + 1] if i + 1 < n else ""
        i += 2 if following in ("\n", "\r") and following != text[i] else 1
    return language, i


def _custom_emoji_id(url: str) -> int:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "tg":
        raise EntityParseError("Custom emoji URL must have scheme tg")
    host = (parts.netloc or parts.path.split("/")[0]).lower()
    if host != "emoji":
        raise EntityParseError('Custom emoji URL must have host "emoji"')
    ids = parse_qs(parts.query).get("id")
    if not ids:
        raise EntityParseError("Custom emoji URL must have an emoji identifier")
    value = ids[0]
    if not value.isdigit() or value.startswith("0"):
        raise EntityParseError("Invalid custom emoji identifier specified")
    return int(value)


@dataclass
class _Open:
    kind: str
    arg: str
    u16: int  # UTF-16 offset in the output where the entity starts
    byte: int  # UTF-8 byte offset in the input (for error messages)
    index: int  # character index in the input
    out_pos: int  # character index in the output


def parse_markdown_v2(text: str) -> tuple[str, list[JSON]]:
    """Parse MarkdownV2 as Telegram does; returns (plain text, entities) or raises
    :class:`EntityParseError` with tdlib's message."""
    n = len(text)
    boff = _byte_offsets(text)
    out: list[str] = []
    u16 = 0
    found: list[JSON] = []
    stack: list[_Open] = []
    have_quote = False
    can_quote = True

    at = functools.partial(_char_at, text)

    def reserved(ch: str) -> EntityParseError:
        return EntityParseError(
            f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
        )

    def unclosed(entity: _Open) -> EntityParseError:
        return EntityParseError(
            f"Can't find end of {entity.kind} entity at byte offset {entity.byte}"
        )

    def read_url(i: int) -> tuple[str, int]:
        chars: list[str] = []
        while i < n and text[i] != ")":
            if text[i] == "\\" and _is_escapable(at(i + 1)):
                chars.append(text[i + 1])
                i += 2
                continue
            chars.append(text[i])
            i += 1
        return "".join(chars), i

    def url_after(k: int, what: str) -> tuple[str, int]:
        """The URL that starts at ``k`` (after its ``(``) and the index of its ``)``."""
        url, end = read_url(k)
        if at(end) != ")":
            raise EntityParseError(f"Can't find end of {what} at byte offset {boff[k]}")
        return url, end

    i = -1
    while (i := i + 1) < n:  # tdlib's for loop: the body may move i on, too
        c = text[i]
        if c == "\\" and _is_escapable(at(i + 1)):
            i += 1
            out.append(text[i])
            u16 += 1
            if text[i] != "\r":
                can_quote = text[i] == "\n"
            continue
        in_code = bool(stack) and stack[-1].kind in ("Code", "Pre", "PreCode")
        if (c != "`") if in_code else (c not in _MDV2_RESERVED):
            out.append(c)
            u16 += _u16(c)
            if c != "\r":
                can_quote = False
            continue

        closing = False
        if stack:
            top_kind = stack[-1].kind
            if have_quote and c == "\n" and at(i + 1) != ">":
                closing = True
            elif top_kind == "Bold":
                closing = c == "*"
            elif top_kind == "Italic":
                closing = c == "_" and at(i + 1) != "_"
            elif top_kind == "Code":
                closing = c == "`"
            elif top_kind in ("Pre", "PreCode"):
                closing = c == "`" and at(i + 1) == "`" and at(i + 2) == "`"
            elif top_kind in ("TextUrl", "CustomEmoji"):
                closing = c == "]"
            elif top_kind == "Underline":
                closing = c == "_" and at(i + 1) == "_"
            elif top_kind == "Strikethrough":
                closing = c == "~"
            elif top_kind == "Spoiler":
                closing = c == "|" and at(i + 1) == "|"

        if not closing:
            start = i
            arg = ""
            if c == "_":
                kind = "Italic"
                if at(i + 1) == "_":
                    kind = "Underline"
                    i += 1
            elif c == "*":
                kind = "Bold"
            elif c == "~":
                kind = "Strikethrough"
            elif c in _MDV2_TWO_CHAR_OPENERS:
                second, kind = _MDV2_TWO_CHAR_OPENERS[c]
                if at(i + 1) != second:
                    raise reserved(c)
                i += 1
            elif c == "[":
                kind = "TextUrl"
            elif c == "`":
                kind = "Code"
                if at(i + 1) == "`" and at(i + 2) == "`":
                    arg, i = _pre_header(text, i + 3)
                    kind = "PreCode" if arg else "Pre"
                    i -= 1
            elif c == "\n":
                out.append("\n")
                u16 += 1
                can_quote = True
                continue
            elif c == ">":
                if not can_quote:
                    raise reserved(c)
                if have_quote:
                    continue
                kind = "BlockQuote"
                have_quote = True
            else:
                raise reserved(c)
            stack.append(_Open(kind, arg, u16, boff[start], start, len(out)))
            continue

        top = stack[-1]
        kind = top.kind
        if c == "\n" and kind != "BlockQuote":
            # only "||" right before the line end (an expandable quote's marker) may end here
            if kind != "Spoiler" or not (
                top.index == i - 2 or (top.index == i - 3 and out and out[-1] == "\r")
            ):
                raise unclosed(top)
            stack.pop()
            top = stack[-1]
            if top.kind != "BlockQuote":
                raise unclosed(top)
            kind = "ExpandableBlockQuote"
        arg_value: Any = top.arg
        link: JSON | None = None  # a TextUrl's entity (a text link or a user mention)
        skip = u16 == top.u16
        if kind in ("Underline", "Spoiler"):
            i += 1
        elif kind in ("Pre", "PreCode"):
            i += 2
        elif kind == "TextUrl":
            if at(i + 1) != "(":
                url = "".join(out[top.out_pos :])
            else:
                url, i = url_after(i + 2, "a URL")
            link = _link_entity(url, top.u16, u16 - top.u16)
            skip = skip or link is None
        elif kind == "CustomEmoji":
            if at(i + 1) != "(":
                raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
            url, i = url_after(i + 2, "a custom emoji URL")
            arg_value = _custom_emoji_id(url)
        elif kind in ("BlockQuote", "ExpandableBlockQuote"):
            have_quote = False
            out.append(c)
            can_quote = True
            u16 += 1
            skip = False
        if not skip:
            found.append(link or _entity(kind, top.u16, u16 - top.u16, arg_value))
        stack.pop()

    if have_quote:
        kind = "BlockQuote"
        if stack[-1].kind == "Spoiler" and stack[-1].index == n - 2:
            stack.pop()
            kind = "ExpandableBlockQuote"
        if stack[-1].kind == "BlockQuote":
            top = stack.pop()
            if u16 != top.u16:
                found.append(_entity(kind, top.u16, u16 - top.u16))
    if stack:
        raise unclosed(stack[-1])
    return "".join(out), sort_entities(found)


def parse_markdown(text: str) -> tuple[str, list[JSON]]:
    """Parse legacy ``Markdown`` (``*bold*``, ``_italic_``, ``[text](url)``, code, pre)."""
    n = len(text)
    boff = _byte_offsets(text)
    out: list[str] = []
    u16 = 0
    found: list[JSON] = []

    at = functools.partial(_char_at, text)

    i = -1
    while (i := i + 1) < n:  # tdlib's for loop: the body may move i on, too
        c = text[i]
        if c == "\\" and at(i + 1) in ("_", "*", "`", "[") and at(i + 1):
            i += 1
            out.append(text[i])
            u16 += 1
            continue
        if c not in "_*`[":
            out.append(c)
            u16 += _u16(c)
            continue
        begin = i
        end_char = "]" if c == "[" else c
        is_pre = False
        language = ""
        i += 1
        if c == "`" and at(i) == "`" and at(i + 1) == "`":
            is_pre = True
            language, i = _pre_header(text, i + 2)
        start_u16 = u16
        start_out = len(out)
        while i < n and (
            text[i] != end_char or (is_pre and not (at(i + 1) == "`" and at(i + 2) == "`"))
        ):
            out.append(text[i])
            u16 += _u16(text[i])
            i += 1
        if i == n:
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {boff[begin]}"
            )
        if start_u16 != u16:
            length = u16 - start_u16
            if c == "_":
                found.append(_entity("Italic", start_u16, length))
            elif c == "*":
                found.append(_entity("Bold", start_u16, length))
            elif c == "[":
                if at(i + 1) != "(":
                    url = "".join(out[start_out:])
                else:
                    i += 2
                    chars: list[str] = []
                    while i < n and text[i] != ")":
                        chars.append(text[i])
                        i += 1
                    url = "".join(chars)
                link = _link_entity(url, start_u16, length)
                if link is not None:
                    found.append(link)
            elif is_pre:
                found.append(
                    _entity("PreCode", start_u16, length, language)
                    if language
                    else _entity("Pre", start_u16, length)
                )
            else:
                found.append(_entity("Code", start_u16, length))
        if is_pre:
            i += 2
    return "".join(out), sort_entities(found)


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """``&lt;`` ``&gt;`` ``&amp;`` ``&quot;`` (``;`` optional) and ``&#N;`` / ``&#xH;``."""
    n = len(text)
    end = pos + 1
    if end < n and text[end] == "#":
        end += 1
        value = 0
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in string.hexdigits:
                value = value * 16 + int(text[end], 16)
                end += 1
        else:
            while end < n and text[end] in string.digits:
                value = value * 10 + int(text[end])
                end += 1
        if value == 0 or value >= 0x10FFFF or end - pos >= 10:
            return None
        if 0xD800 <= value <= 0xDFFF:
            raise EntityParseError(
                "Text contains invalid Unicode characters after decoding HTML entities, check for "
                "unmatched surrogate code units"
            )
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = {"lt": 0x3C, "gt": 0x3E, "amp": 0x26, "quot": 0x22}.get(text[pos + 1 : end])
        if named is None:
            return None
        value = named
    if end < n and text[end] == ";":
        end += 1
    return chr(value), end


@dataclass
class _HtmlOpen:
    tag: str
    arg: str
    u16: int
    out_pos: int


def parse_html(text: str) -> tuple[str, list[JSON]]:
    """Parse Telegram's HTML subset; returns (plain text, entities) or raises
    :class:`EntityParseError` with tdlib's message."""
    n = len(text)
    boff = _byte_offsets(text)
    out: list[str] = []
    u16 = 0
    found: list[JSON] = []
    stack: list[_HtmlOpen] = []

    at = functools.partial(_char_at, text)

    def skip_spaces(k: int) -> int:
        while k < n and text[k] in _SPACES:
            k += 1
        return k

    i = -1
    while (i := i + 1) < n:  # tdlib's for loop: the body may move i on, too
        c = text[i]
        if c == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is not None:
                out.append(decoded[0])
                u16 += _u16(decoded[0])
                i = decoded[1] - 1
                continue
        if c != "<":
            out.append(c)
            u16 += _u16(c)
            continue

        begin = i
        i += 1
        if at(i) != "/":
            while i < n and text[i] not in _SPACES and text[i] != ">":
                i += 1
            if i >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {boff[begin]}")
            tag = text[begin + 1 : i].lower()
            if tag not in _HTML_TAGS:
                raise EntityParseError(
                    f'Unsupported start tag "{tag}" at byte offset {boff[begin]}'
                )
            arg = ""
            while at(i) != ">":
                i = skip_spaces(i)
                if at(i) == ">":
                    break
                name_begin = i
                while i < n and text[i] not in _SPACES and text[i] not in "=>/\"'":
                    i += 1
                name = text[name_begin:i]
                if not name:
                    raise EntityParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {boff[begin]}'
                    )
                i = skip_spaces(i)
                if at(i) != "=":
                    if i >= n:
                        raise EntityParseError(
                            f'Unclosed start tag "{tag}" at byte offset {boff[begin]}'
                        )
                    if tag == "blockquote" and name == "expandable":
                        arg = "1"
                    continue
                i = skip_spaces(i + 1)
                if i >= n:
                    raise EntityParseError(
                        f'Unclosed start tag "{tag}" at byte offset {boff[begin]}'
                    )
                if text[i] not in "'\"":
                    token_begin = i
                    while i < n and ((text[i].isascii() and text[i].isalnum()) or text[i] in ".-"):
                        i += 1
                    value = text[token_begin:i].lower()
                    if i < n and text[i] not in _SPACES and text[i] != ">":
                        raise EntityParseError(
                            f"Unexpected end of name token at byte offset {boff[token_begin]}"
                        )
                else:
                    quote = text[i]
                    i += 1
                    chars: list[str] = []
                    while i < n and text[i] != quote:
                        if text[i] == "&":
                            decoded = _decode_html_entity(text, i)
                            if decoded is not None:
                                chars.append(decoded[0])
                                i = decoded[1]
                                continue
                        chars.append(text[i])
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = "".join(chars)
                if i >= n:
                    raise EntityParseError(f"Unclosed start tag at byte offset {boff[begin]}")
                if tag == "a" and name == "href":
                    arg = value
                elif tag == "code" and name == "class" and value.startswith("language-"):
                    arg = value[len("language-") :]
                elif tag == "span" and name == "class" and value.startswith("tg-"):
                    arg = value[len("tg-") :]
                elif tag == "tg-emoji" and name == "emoji-id":
                    arg = value
                elif tag == "blockquote" and name == "expandable":
                    arg = "1"
            if tag == "span" and arg != "spoiler":
                raise EntityParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {boff[begin]}'
                )
            stack.append(_HtmlOpen(tag, arg, u16, len(out)))
            continue

        if not stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {boff[begin]}")
        while i < n and text[i] not in _SPACES and text[i] != ">":
            i += 1
        end_tag = text[begin + 2 : i].lower()
        i = skip_spaces(i)
        if at(i) != ">":
            raise EntityParseError(f"Unclosed end tag at byte offset {boff[begin]}")
        top = stack[-1]
        if end_tag and end_tag != top.tag:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {boff[begin]}, expected "</{top.tag}>", '
                f'found "</{end_tag}>"'
            )
        if u16 > top.u16:
            offset, length = top.u16, u16 - top.u16
            if top.tag in _HTML_ENTITY_TYPES:
                entity = _entity(_HTML_ENTITY_TYPES[top.tag], offset, length)
                if top.tag == "code" and top.arg:
                    entity["language"] = top.arg  # merged into an enclosing <pre> below
                found.append(entity)
            elif top.tag == "tg-emoji":
                if not top.arg.isdigit() or int(top.arg) == 0:
                    raise EntityParseError("Invalid custom emoji identifier specified")
                found.append(_entity("CustomEmoji", offset, length, int(top.arg)))
            elif top.tag == "a":
                url = top.arg or "".join(out[top.out_pos :])
                link = _link_entity(url, offset, length)
                if link is not None:
                    found.append(link)
            elif top.tag == "blockquote":
                found.append(
                    _entity("ExpandableBlockQuote" if top.arg else "BlockQuote", offset, length)
                )
        stack.pop()
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')

    # <pre><code class="language-x">...</code></pre> (either nesting) is one pre with a language
    result: list[JSON] = []
    for entity in found:
        language = entity.pop("language", None) if entity["type"] == "code" else None
        if language:
            twin = next(
                (
                    e
                    for e in found
                    if e["type"] == "pre"
                    and (e["offset"], e["length"]) == (entity["offset"], entity["length"])
                ),
                None,
            )
            if twin is not None:
                twin["language"] = language
                continue
        result.append(entity)
    return "".join(out), sort_entities(result)


_COMMON_TLDS = "com|org|net|io|me|dev|app|ai|co|de|uk|fr|info|ru|edu|gov|eu|us|ch|at"
_AUTO_ENTITY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "url",
        re.compile(
            r"(?<![\w@/.])(?:https?://[^\s<>\"]+|(?:[A-Za-z0-9-]+\.)+(?:"
            + _COMMON_TLDS
            + r")(?::\d+)?(?:/[^\s<>\"]*)?)(?![\w@])"
        ),
    ),
    ("mention", re.compile(r"(?<![\w@])@[A-Za-z0-9_]{3,32}(?![\w@])")),
    ("bot_command", re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/@])")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d_]\w*")),
)
_NO_AUTO_INSIDE = frozenset({"code", "pre", "text_link", "text_mention", "custom_emoji"})


def detect_entities(text: str, entities: Sequence[JSON] = ()) -> list[JSON]:
    """Add the entities Telegram finds by itself (approximation: URLs, @mentions, /commands,
    #hashtags) outside code/pre/links; returns all entities, sorted."""
    u16_at = [0]
    for ch in text:
        u16_at.append(u16_at[-1] + _u16(ch))
    auto_types = {kind for kind, _ in _AUTO_ENTITY_PATTERNS}
    taken = [
        (e["offset"], e["offset"] + e["length"])
        for e in entities
        if e["type"] in _NO_AUTO_INSIDE or e["type"] in auto_types
    ]
    result = list(entities)
    for kind, pattern in _AUTO_ENTITY_PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if kind == "url":
                while end > start and text[end - 1] in ".,;:!?)'":
                    end -= 1
            a, b = u16_at[start], u16_at[end]
            if b <= a or any(a < t_end and t_start < b for t_start, t_end in taken):
                continue
            taken.append((a, b))
            result.append({"type": kind, "offset": a, "length": b - a})
    return sort_entities(result)


def trim_text(text: str, entities: Sequence[JSON]) -> tuple[str, list[JSON]]:
    """Strip leading/trailing whitespace like Telegram, moving and clipping the entities."""
    stripped = text.strip()
    if stripped == text:
        return text, list(entities)
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    total = utf16_len(stripped)
    result: list[JSON] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            result.append({**entity, "offset": start, "length": end - start})
    return stripped, result


def _message_text(params: Mapping[str, Any]) -> tuple[str, str, list[JSON]]:
    """The ``text`` of sendMessage and editMessageText: as sent, and parsed (plain text and
    entities); a text that is missing or empty is refused before anything else is looked at."""
    text = _str_param(params, "text")
    if not text:
        raise bad_request("message text is empty")
    plain, entities = format_text(text, _str_param(params, "parse_mode"), params.get("entities"))
    return text, plain, entities


def _check_message_length(plain: str) -> None:
    """A message's text after parsing must be non-empty and at most 4096 UTF-16 units."""
    if not plain:
        raise bad_request("message must be non-empty")
    if utf16_len(plain) > MAX_MESSAGE_LENGTH:
        raise bad_request("message is too long")


def format_text(
    text: str, parse_mode: str | None, entities: Any = None, *, detect: bool = True
) -> tuple[str, list[JSON]]:
    """Telegram's text pipeline: parse_mode (or explicit entities), trim, auto entities.
    Raises :class:`ApiError` like the Bot API."""
    mode = (parse_mode or "").lower()
    try:
        if mode in ("", "none"):
            plain, found = text, _explicit_entities(entities)
        elif mode == "markdownv2":
            plain, found = parse_markdown_v2(text)
        elif mode == "markdown":
            plain, found = parse_markdown(text)
        elif mode == "html":
            plain, found = parse_html(text)
        else:
            raise bad_request("unsupported parse_mode")
    except EntityParseError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    plain, found = trim_text(plain, found)
    return plain, detect_entities(plain, found) if detect else sort_entities(found)


def _explicit_entities(entities: Any) -> list[JSON]:
    if entities is None or entities == "":
        return []
    if isinstance(entities, str):
        raise bad_request("can't parse entities JSON object")
    if not isinstance(entities, list):
        raise bad_request("can't parse entities: expected an Array")
    result: list[JSON] = []
    for entity in entities:
        if not isinstance(entity, dict) or not isinstance(entity.get("type"), str):
            raise bad_request("can't parse MessageEntity: expected an Object")
        for key in ("offset", "length"):
            if not isinstance(entity.get(key), int) or isinstance(entity.get(key), bool):
                raise bad_request(f'can\'t parse MessageEntity: Field "{key}" must be a Number')
        result.append(dict(entity))
    return result


# --- parameter decoding ---------------------------------------------------------------------------


def _decode_params(raw: Mapping[str, Any]) -> JSON:
    """Typed view of the request parameters (JSON bodies arrive typed already)."""
    params: JSON = {}
    for key, value in raw.items():
        if isinstance(value, str):
            if key in _JSON_FIELDS:
                # undecodable stays text; the method reports Telegram's "can't parse ..." error
                with contextlib.suppress(ValueError):
                    value = json.loads(value) if value else value
            elif key in _INT_FIELDS or key == "chat_id":
                if re.fullmatch(r"-?\d+", value.strip()):
                    value = int(value)
            elif key in _BOOL_FIELDS:
                lowered = value.strip().lower()
                if lowered in ("true", "1"):
                    value = True
                elif lowered in ("false", "0", ""):
                    value = False
        params[key] = value
    return params


def _int_param(params: Mapping[str, Any], key: str, default: int) -> int:
    value = params.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(float(str(value)))
    except ValueError:
        return 0  # tdlib's to_integer gives 0 for garbage


def _str_param(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _update_type(update: Mapping[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "")


def _strip_reply(message: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in message.items() if k != "reply_to_message"}


# --- the server -----------------------------------------------------------------------------------


class FakeTelegram:
    """The fake Bot API server. See the module docstring."""

    def __init__(
        self,
        tokens: Sequence[str] = (DEFAULT_TOKEN,),
        *,
        bot_username: str = DEFAULT_BOT_USERNAME,
        usernames: Mapping[str, str] | None = None,
        bot_first_name: str = "Parloa Test Bot",
        strict_chats: bool = False,
        require_https_webhook: bool = False,
        first_update_id: int = 100_000_001,
        clock: Callable[[], float] = time.monotonic,
        webhook_timeout: float = 10.0,
    ) -> None:
        """``strict_chats``: only chats the fake has seen (builders, :meth:`add_chat`) exist, any
        other ``chat_id`` is "chat not found"; by default numeric ids are auto-created (positive:
        a private chat, ``-100...``: a supergroup, other negatives: a group). ``clock`` times
        :attr:`Call.at` and the rate limits (pass a fake clock for deterministic budget tests)."""
        if not tokens:
            raise ValueError("at least one bot token is needed")
        self._clock = clock
        self.strict_chats = strict_chats
        self.require_https_webhook = require_https_webhook
        self.webhook_timeout = webhook_timeout
        self._bots: dict[str, _Bot] = {}
        for index, token in enumerate(tokens):
            if not TOKEN_RE.fullmatch(token):
                raise ValueError(f"not a bot token: {token!r}")
            username = (usernames or {}).get(token) or (
                bot_username
                if index == 0
                else f"{bot_username.removesuffix('_bot')}{index + 1}_bot"
            )
            user = {
                "id": int(token.split(":", 1)[0]),
                "is_bot": True,
                "first_name": bot_first_name,
                "username": username,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
            self._bots[token] = _Bot(token=token, user=user, next_update_id=first_update_id)
        self.default_token = tokens[0]

        self.calls: list[Call] = []
        self.messages: list[SentMessage] = []  # everything the bots sent, in order
        self.webhook_deliveries: list[WebhookDelivery] = []
        self._chat_actions: list[ChatAction] = []
        self._answered: list[AnsweredCallback] = []
        self._faults: list[Fault] = []
        self._latency: dict[str, float] = {}
        self._holds: dict[str, Hold] = {}
        self._rate_limits: RateLimits | None = None

        self._chats: dict[int, JSON] = {}
        self._users: dict[int, JSON] = {}
        self._deleted_chats: set[int] = set()
        self._blocked: set[int] = set()
        self._messages: dict[tuple[int, int], JSON] = {}  # (chat_id, message_id) -> Message
        self._sent_index: dict[tuple[int, int], SentMessage] = {}
        self._next_message_id: dict[int, int] = {}
        self._callback_queries: dict[str, bool] = {}  # id -> answered
        self._files: dict[str, str | UploadedFile] = {}
        self._stored: dict[str, StoredFile] = {}  # file_id -> a file users sent
        self._paths: dict[tuple[str, str], str] = {}  # (token, file_path) -> file_id
        self._path_counter = itertools.count(0)
        self._album_counter = itertools.count(13_000_000_000_000_000)
        self.unreachable_urls: set[str] = set()
        self._file_counter = itertools.count(1)
        self._query_counter = itertools.count(4_611_686_018_427_387_904)

        self._waiters: set[asyncio.Future[None]] = set()
        self._closing = False
        self._server = LocalServer()
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle --

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        await self._server.start(app, access_log=False)

    async def close(self) -> None:
        self._closing = True
        for hold in self._holds.values():
            hold.release()
        self._changed()  # long polls return now
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._server.close()

    @property
    def base_url(self) -> str:
        """What PTB's ``Bot(token, base_url=...)`` expects (it appends ``<token>/<method>``)."""
        return f"{self.api_root}/bot"

    @property
    def base_file_url(self) -> str:
        """What PTB's ``Bot(token, base_file_url=...)`` expects (it appends ``<token>``; files
        are then at ``.../<file_path>``)."""
        return f"{self.api_root}/file/bot"

    @property
    def api_root(self) -> str:
        """``http://127.0.0.1:PORT``; methods live at ``{api_root}/bot<token>/<method>``."""
        return self._server.url

    def method_url(self, method: str, token: str | None = None) -> str:
        return f"{self.api_root}/bot{token or self.default_token}/{method}"

    def bot_user(self, token: str | None = None) -> JSON:
        return dict(self._bot(token).user)

    def bot_username(self, token: str | None = None) -> str:
        return str(self._bot(token).user["username"])

    def _bot(self, token: str | None) -> _Bot:
        return self._bots[token or self.default_token]

    # -- test controls --

    def fail_next(
        self,
        method: str = "*",
        status: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
        count: int | None = 1,
        chat_id: int | str | None = None,
        *,
        migrate_to_chat_id: int | None = None,
        body: bytes | None = None,
        disconnect: bool = False,
    ) -> Fault:
        """The next ``count`` (None: all until :meth:`clear_faults`) matching calls fail.

        ``status`` 429 answers ``Too Many Requests: retry after N`` with
        ``parameters.retry_after`` (``retry_after`` defaults to 5). ``description`` defaults to
        Telegram's phrase for the status. ``migrate_to_chat_id`` adds that parameter (a group
        upgraded to a supergroup). ``body`` replaces the JSON answer with raw bytes (e.g. a proxy's
        HTML error page); ``disconnect`` drops the connection without an answer."""
        parameters: JSON | None = None
        if status == 429:
            retry_after = 5 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        if retry_after is not None:
            parameters = {"retry_after": retry_after}
        if migrate_to_chat_id is not None:
            parameters = {**(parameters or {}), "migrate_to_chat_id": migrate_to_chat_id}
            description = description or "Bad Request: group chat was upgraded to a supergroup chat"
        fault = Fault(
            method=method,
            status=status,
            description=description or _STATUS_TEXT.get(status, f"Error {status}"),
            parameters=parameters,
            remaining=count,
            chat_id=None if chat_id is None else str(chat_id),
            body=body,
            disconnect=disconnect,
        )
        self._faults.append(fault)
        return fault

    def refuse_url(self, url: str) -> None:
        """Sending ``url`` (sendPhoto, sendDocument, ..., in a media group) answers
        ``Bad Request: failed to get HTTP URL content``, as when Telegram cannot fetch it."""
        self.unreachable_urls.add(url)

    def stored_file(self, file_id: str) -> StoredFile:
        return self._stored[file_id]

    def clear_faults(self) -> None:
        self._faults.clear()

    def enforce_rate_limits(
        self,
        per_chat_per_second: float = 1.0,
        group_per_minute: int = 20,
        global_per_second: float = 30.0,
        retry_after: int | None = None,
        *,
        chat_burst: int = 3,
        global_burst: int | None = None,
    ) -> RateLimits:
        """Answer 429 (``retry_after`` fixed, or the seconds until the budget allows the call)
        to sends beyond Telegram's budgets; see :class:`RateLimits`. Counts
        :data:`RATE_LIMITED_METHODS`; a refused call costs nothing."""
        self._rate_limits = RateLimits(
            per_chat_per_second=per_chat_per_second,
            group_per_minute=group_per_minute,
            global_per_second=global_per_second,
            chat_burst=chat_burst,
            global_burst=global_burst if global_burst is not None else math.ceil(global_per_second),
            retry_after=retry_after,
        )
        for bot in self._bots.values():
            bot.chat_buckets.clear()
            bot.group_windows.clear()
            bot.global_bucket = None
        return self._rate_limits

    def disable_rate_limits(self) -> None:
        self._rate_limits = None

    def set_latency(self, seconds: float, method: str = "*") -> None:
        """Delay answers to ``method`` ("*": every method) by ``seconds``."""
        self._latency[method] = seconds

    def hold(self, method: str) -> Hold:
        """Requests to ``method`` wait until ``hold.release()``; ``hold.waiting`` counts them
        (``await tg.wait_for(lambda: hold.waiting)``)."""
        hold = Hold(method, self._changed)
        self._holds[method] = hold
        return hold

    def block(self, chat_id: int) -> None:
        """The user blocked the bot (private chat: 403 "bot was blocked by the user"), or the bot
        was removed from the group (403 "bot was kicked from the group chat")."""
        self._blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        self._blocked.discard(chat_id)

    def delete_chat(self, chat_id: int) -> None:
        """From now on the chat does not exist: 400 "chat not found"."""
        self._deleted_chats.add(chat_id)

    def add_chat(
        self,
        chat_id: int,
        chat_type: str | None = None,
        *,
        title: str | None = None,
        username: str | None = None,
        first_name: str | None = None,
        is_forum: bool = False,
    ) -> JSON:
        """Make a chat known (needed with ``strict_chats``); returns the Chat object."""
        self._deleted_chats.discard(chat_id)
        chat = self._ensure_chat(chat_id, chat_type, title=title)
        if username:
            chat["username"] = username
        if first_name and chat["type"] == "private":
            chat["first_name"] = first_name
        if is_forum:
            chat["is_forum"] = True
        return dict(chat)

    # -- recordings --

    def calls_to(self, method: str, token: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (token is None or c.token == token)]

    def sent_messages(
        self, chat_id: int | None = None, *, token: str | None = None, include_deleted: bool = True
    ) -> list[SentMessage]:
        """sendMessage/sendPhoto results in order (only accepted ones)."""
        return [
            m
            for m in self.messages
            if (chat_id is None or m.chat_id == chat_id)
            and (token is None or m.token == token)
            and (include_deleted or not m.deleted)
        ]

    def last_message(self, chat_id: int | None = None) -> SentMessage:
        messages = self.sent_messages(chat_id)
        if not messages:
            raise AssertionError(f"no message was sent (chat_id={chat_id})")
        return messages[-1]

    def chat_actions(
        self, chat_id: int | None = None, action: str | None = None
    ) -> list[ChatAction]:
        return [
            a
            for a in self._chat_actions
            if (chat_id is None or a.chat_id == chat_id) and (action is None or a.action == action)
        ]

    @property
    def answered_callbacks(self) -> list[AnsweredCallback]:
        return list(self._answered)

    def rate_limited_calls(self) -> list[Call]:
        return [c for c in self.calls if c.status == 429]

    def pending_updates(self, token: str | None = None) -> list[JSON]:
        """Updates not yet confirmed by a getUpdates offset (or delivered by webhook)."""
        return [dict(u) for u in self._bot(token).updates]

    def webhook(self, token: str | None = None) -> Webhook | None:
        return self._bot(token).webhook

    def is_polling(self, token: str | None = None) -> bool:
        """Whether a getUpdates long poll is waiting right now."""
        return self._bot(token).poll is not None

    def commands(
        self,
        scope: Mapping[str, Any] | None = None,
        language_code: str = "",
        token: str | None = None,
    ) -> list[JSON]:
        key = (json.dumps(scope or {"type": "default"}, sort_keys=True), language_code)
        return list(self._bot(token).commands.get(key, []))

    def chat(self, chat_id: int) -> JSON | None:
        return self._chats.get(chat_id)

    def message(self, chat_id: int, message_id: int) -> JSON | None:
        return self._messages.get((chat_id, message_id))

    # -- waiting --

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _next_change(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every change: a call arriving or
        being answered, an update pushed, a webhook delivered) and return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [(c.method, c.status) for c in self.calls[-10:]]
                raise AssertionError(f"condition not met within {within} s; last calls: {recent}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._next_change()

    async def wait_for_call(
        self, method: str, where: Callable[[Call], bool] | None = None, within: float = 5.0
    ) -> Call:
        """The first answered call of ``method`` (matching ``where``)."""

        def find() -> Call | None:
            return next(
                (
                    c
                    for c in self.calls
                    if c.method == method and c.status is not None and (where is None or where(c))
                ),
                None,
            )

        return await self.wait_for(find, within)

    async def wait_for_messages(
        self, count: int = 1, chat_id: int | None = None, within: float = 5.0
    ) -> list[SentMessage]:
        """Wait until at least ``count`` messages were sent (to ``chat_id``); returns them all."""

        def enough() -> list[SentMessage]:
            messages = self.sent_messages(chat_id)
            return messages if len(messages) >= count else []

        return await self.wait_for(enough, within)

    # -- updates --

    def push_update(self, update: Mapping[str, Any], token: str | None = None) -> int:
        """Queue an update for getUpdates / webhook delivery; returns its ``update_id``
        (auto-incremented unless the dict carries one)."""
        bot = self._bot(token)
        stored = dict(update)
        if "update_id" in stored:
            bot.next_update_id = max(bot.next_update_id, int(stored["update_id"]) + 1)
        else:
            stored = {"update_id": bot.next_update_id, **stored}
            bot.next_update_id += 1
        self._learn(stored)
        bot.updates.append(stored)
        bot.updates.sort(key=lambda u: int(u["update_id"]))
        self._changed()
        return int(stored["update_id"])

    def _learn(self, update: Mapping[str, Any]) -> None:
        """Remember chats, users, messages and callback query ids found in an update."""
        for value in update.values():
            if not isinstance(value, dict):
                continue
            query = value if "chat_instance" in value and "id" in value else None
            if query is not None:
                self._callback_queries.setdefault(str(query["id"]), False)
            for obj in (value, value.get("message")):
                if isinstance(obj, dict) and isinstance(obj.get("chat"), dict):
                    chat = obj["chat"]
                    self._chats.setdefault(int(chat["id"]), dict(chat))
                    if "message_id" in obj:
                        self._messages.setdefault((int(chat["id"]), int(obj["message_id"])), obj)
            sender = value.get("from")
            if isinstance(sender, dict) and not sender.get("is_bot"):
                self._users.setdefault(int(sender["id"]), dict(sender))

    # -- update builders --

    def user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
    ) -> JSON:
        """A (remembered) User object."""
        known = self._users.get(user_id, {})
        user: JSON = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name or known.get("first_name") or "Test",
        }
        for key, value in (
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
        ):
            value = value if value is not None else known.get(key)
            if value is not None:
                user[key] = value
        self._users[user_id] = user
        return dict(user)

    def _ensure_chat(
        self, chat_id: int, chat_type: str | None = None, *, title: str | None = None
    ) -> JSON:
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_type is None:
                chat_type = (
                    "private"
                    if chat_id > 0
                    else "supergroup"
                    if str(chat_id).startswith("-100")
                    else "group"
                )
            chat = {"id": chat_id, "type": chat_type}
            if chat_type == "private":
                user = self._users.get(chat_id) or self.user(chat_id)
                chat.update(
                    {k: user[k] for k in ("first_name", "last_name", "username") if k in user}
                )
            else:
                chat["title"] = title or f"Test {chat_type} {abs(chat_id)}"
            self._chats[chat_id] = chat
        else:
            if chat_type is not None and chat["type"] != chat_type:
                chat["type"] = chat_type
            if title:
                chat["title"] = title
        return chat

    def _allocate_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _sender_chat(
        self,
        user: JSON,
        chat_id: int | None,
        chat_type: str | None,
        title: str | None,
        thread_id: int | None,
    ) -> JSON:
        if chat_id is None or chat_id == user["id"]:
            chat = self._ensure_chat(user["id"], "private")
            chat.update({k: user[k] for k in ("first_name", "last_name", "username") if k in user})
        else:
            if thread_id is not None:
                chat_type = "supergroup"
            chat = self._ensure_chat(chat_id, chat_type, title=title)
            if thread_id is not None:
                chat["is_forum"] = True
        return chat

    def _incoming(
        self,
        user: JSON,
        chat: JSON,
        content: JSON,
        *,
        thread_id: int | None = None,
        reply_to: JSON | None = None,
    ) -> JSON:
        message: JSON = {
            "message_id": self._allocate_message_id(chat["id"]),
            "from": user,
            "chat": dict(chat),
            "date": int(time.time()),
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = _strip_reply(reply_to)
        message.update(content)
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    def _text_content(self, text: str, entities: Sequence[JSON] | None) -> JSON:
        found = detect_entities(text, entities or ())
        content: JSON = {"text": text}
        if found:
            content["entities"] = found
        return content

    def _reply_target(self, chat: JSON, reply_to_bot: bool | int, token: str | None) -> JSON:
        if reply_to_bot is True:
            ours = [m for m in self.sent_messages(chat["id"], token=token) if not m.deleted]
            if ours:
                return ours[-1].message
            bot = self._bot(token)
            synthesized: JSON = {
                "message_id": self._allocate_message_id(chat["id"]),
                "from": bot.user,
                "chat": dict(chat),
                "date": int(time.time()),
                "text": "Hello! How can I help?",
            }
            self._messages[(chat["id"], synthesized["message_id"])] = synthesized
            return synthesized
        existing = self._messages.get((chat["id"], int(reply_to_bot)))
        if existing is None:
            raise ValueError(f"no message {reply_to_bot} in chat {chat['id']}")
        return existing

    def private_text(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str = "Test",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        entities: Sequence[JSON] | None = None,
    ) -> JSON:
        """``{"message": ...}``: a user writes to the bot in their private chat."""
        user = self.user(
            user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        chat = self._sender_chat(user, None, None, None, None)
        return {"message": self._incoming(user, chat, self._text_content(text, entities))}

    def group_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "group",
        title: str | None = None,
        entities: Sequence[JSON] | None = None,
        mention: bool = False,
        reply_to_bot: bool | int = False,
        thread_id: int | None = None,
        first_name: str = "Test",
        username: str | None = None,
        language_code: str | None = "en",
        token: str | None = None,
    ) -> JSON:
        """A message in a group/supergroup. ``mention`` prefixes ``@<bot username> ``;
        ``reply_to_bot`` replies to the bot's last message there (or to message id N);
        ``thread_id`` makes the chat a forum supergroup and the message a topic message."""
        user = self.user(
            user_id, first_name=first_name, username=username, language_code=language_code
        )
        chat = self._sender_chat(user, chat_id, chat_type, title, thread_id)
        if mention:
            text = f"@{self.bot_username(token)} {text}"
        reply_to = self._reply_target(chat, reply_to_bot, token) if reply_to_bot else None
        content = self._text_content(text, entities)
        return {
            "message": self._incoming(user, chat, content, thread_id=thread_id, reply_to=reply_to)
        }

    def command(
        self,
        user_id: int,
        command: str,
        args: str = "",
        *,
        chat_id: int | None = None,
        chat_type: str | None = None,
        mention_bot: bool = False,
        thread_id: int | None = None,
        first_name: str = "Test",
        language_code: str | None = "en",
        token: str | None = None,
    ) -> JSON:
        """``/start`` (``command`` with or without the slash) with a bot_command entity; in a
        group (``chat_id``) ``mention_bot`` gives ``/start@<bot username>``."""
        user = self.user(user_id, first_name=first_name, language_code=language_code)
        chat = self._sender_chat(user, chat_id, chat_type, None, thread_id)
        name = "/" + command.lstrip("/")
        if mention_bot:
            name += f"@{self.bot_username(token)}"
        text = f"{name} {args}" if args else name
        entities = [{"type": "bot_command", "offset": 0, "length": utf16_len(name)}]
        return {
            "message": self._incoming(
                user, chat, self._text_content(text, entities), thread_id=thread_id
            )
        }

    def callback_query(
        self,
        user_id: int,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        first_name: str = "Test",
        query_id: str | None = None,
        chat_instance: str | None = None,
        token: str | None = None,
    ) -> JSON:
        """A button press on message ``message_id`` (the bot's stored message when known)."""
        user = self.user(user_id, first_name=first_name)
        chat = self._ensure_chat(chat_id)
        message = self._messages.get((chat_id, message_id))
        if message is None:
            message = {
                "message_id": message_id,
                "from": self._bot(token).user,
                "chat": dict(chat),
                "date": int(time.time()),
                "text": "...",
            }
        query_id = query_id or str(next(self._query_counter))
        self._callback_queries[query_id] = False
        query = {
            "id": query_id,
            "from": user,
            "message": _strip_reply(message),
            "chat_instance": chat_instance or str(abs(hash((chat_id, user_id))) % 10**18),
            "data": data,
        }
        return {"callback_query": query}

    def _file(self, prefix: str, **fields: Any) -> JSON:
        """A file object with new ids (``prefix`` as Telegram's for its kind) and ``fields``."""
        n = next(self._file_counter)
        return {"file_id": f"{prefix}{n:020d}AAQ", "file_unique_id": f"AQAD{n:08d}", **fields}

    def _media(
        self,
        user_id: int,
        chat_id: int | None,
        chat_type: str | None,
        content: JSON,
        first_name: str,
        thread_id: int | None = None,
    ) -> JSON:
        user = self.user(user_id, first_name=first_name)
        chat = self._sender_chat(user, chat_id, chat_type, None, thread_id)
        return {"message": self._incoming(user, chat, content, thread_id=thread_id)}

    def _photo_sizes(self, size_hint: int = 50_000) -> list[JSON]:
        sizes = []
        for width, height, share in (
            (90, 67, 0.02),
            (320, 240, 0.15),
            (800, 600, 0.5),
            (1280, 960, 1.0),
        ):
            size = max(1, int(size_hint * share))
            sizes.append(self._file("AgACAgIAAxkBAAI", width=width, height=height, file_size=size))
        return sizes

    def _user_file(
        self,
        prefix: str,
        directory: str,
        extension: str,
        data: bytes | None,
        content_type: str | None,
        file_size: int | None,
        **fields: Any,
    ) -> JSON:
        """A file object of something a user sends, known to getFile (its bytes served when
        ``data`` is given; its size then ``len(data)``, else ``file_size``)."""
        size = len(data) if data is not None else file_size
        obj = self._file(prefix, **fields, **({"file_size": size} if size is not None else {}))
        self._stored[obj["file_id"]] = StoredFile(
            file_id=obj["file_id"],
            file_unique_id=obj["file_unique_id"],
            file_size=size,
            directory=directory,
            extension=extension,
            data=data,
            content_type=content_type,
        )
        return obj

    def _file_message(
        self,
        kind: str,
        extension: str,
        default_size: int,
        sender: tuple[int, int | None, str | None, str],
        data: bytes | None,
        caption: str | None = None,
        media_group_id: str | None = None,
        **fields: Any,
    ) -> JSON:
        """The update of a user's message with one file of ``kind`` (``sender`` is user id,
        chat id, chat type, first name): what the builders below share."""
        prefix, directory = _USER_FILE_KINDS[kind]
        file = self._user_file(prefix, directory, extension, data, None, default_size, **fields)
        return self._captioned_message(sender, {kind: file}, caption, media_group_id)

    def _captioned_message(
        self,
        sender: tuple[int, int | None, str | None, str],
        content: JSON,
        caption: str | None,
        media_group_id: str | None = None,
    ) -> JSON:
        """The update of a user's message of ``content``, with ``caption`` (and its entities)
        and ``media_group_id`` added when given."""
        if caption is not None:
            content["caption"] = caption
            found = detect_entities(caption)
            if found:
                content["caption_entities"] = found
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        user_id, chat_id, chat_type, first_name = sender
        return self._media(user_id, chat_id, chat_type, content, first_name)

    def sticker(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        emoji: str = "👍",
        is_animated: bool = False,
        is_video: bool = False,
        data: bytes | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        extension = "tgs" if is_animated else "webm" if is_video else "webp"
        return self._file_message(
            "sticker",
            extension,
            23_000,
            (user_id, chat_id, chat_type, first_name),
            data,
            type="regular",
            width=512,
            height=512,
            is_animated=is_animated,
            is_video=is_video,
            emoji=emoji,
            set_name="TestStickers",
        )

    def photo(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        caption: str | None = None,
        data: bytes | None = None,
        file_size: int | None = None,
        media_group_id: str | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        """A photo in Telegram's four sizes; ``data`` (and ``file_size``) belong to the largest.
        Photos sharing ``media_group_id`` are an album (one message each)."""
        sizes = self._photo_sizes(len(data) if data is not None else file_size or 50_000)
        largest = sizes.pop()
        sizes.append(
            self._user_file(
                "AgACAgIAAxkBAAI",
                "photos",
                "jpg",
                data,
                "image/jpeg",
                largest["file_size"],
                width=largest["width"],
                height=largest["height"],
            )
        )
        sender = (user_id, chat_id, chat_type, first_name)
        return self._captioned_message(sender, {"photo": sizes}, caption, media_group_id)

    def voice(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        duration: int = 3,
        data: bytes | None = None,
        caption: str | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        return self._file_message(
            "voice",
            "oga",
            4_000 * duration,
            (user_id, chat_id, chat_type, first_name),
            data,
            caption,
            duration=duration,
            mime_type="audio/ogg",
        )

    def document(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        file_name: str = "report.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
        data: bytes | None = None,
        file_size: int = 12_345,
        media_group_id: str | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        return self._file_message(
            "document",
            file_name.rpartition(".")[2] or "bin",
            file_size,
            (user_id, chat_id, chat_type, first_name),
            data,
            caption,
            media_group_id,
            file_name=file_name,
            mime_type=mime_type,
        )

    def audio(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        file_name: str | None = "song.mp3",
        title: str | None = "A Song",
        performer: str | None = "A Band",
        mime_type: str = "audio/mpeg",
        duration: int = 180,
        caption: str | None = None,
        data: bytes | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        extra = {
            k: v
            for k, v in (("file_name", file_name), ("title", title), ("performer", performer))
            if v is not None
        }
        return self._file_message(
            "audio",
            "mp3",
            duration * 16_000,
            (user_id, chat_id, chat_type, first_name),
            data,
            caption,
            duration=duration,
            mime_type=mime_type,
            **extra,
        )

    def video(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        file_name: str | None = "clip.mp4",
        mime_type: str = "video/mp4",
        duration: int = 10,
        caption: str | None = None,
        data: bytes | None = None,
        media_group_id: str | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        extra = {"file_name": file_name} if file_name is not None else {}
        return self._file_message(
            "video",
            "mp4",
            duration * 100_000,
            (user_id, chat_id, chat_type, first_name),
            data,
            caption,
            media_group_id,
            width=1280,
            height=720,
            duration=duration,
            mime_type=mime_type,
            **extra,
        )

    def video_note(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        duration: int = 5,
        data: bytes | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        """A round video message: no file name, no MIME type (Telegram's are MP4)."""
        return self._file_message(
            "video_note",
            "mp4",
            duration * 50_000,
            (user_id, chat_id, chat_type, first_name),
            data,
            length=240,
            duration=duration,
        )

    def animation(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        file_name: str = "cat.gif.mp4",
        caption: str | None = None,
        data: bytes | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        """A GIF as Telegram sends it: an MP4 in ``animation`` and, the same file, in
        ``document``."""
        animation = self._user_file(
            *_USER_FILE_KINDS["animation"],
            "mp4",
            data,
            None,
            200_000,
            width=320,
            height=240,
            duration=2,
            file_name=file_name,
            mime_type="video/mp4",
        )
        document = {
            k: animation[k]
            for k in ("file_id", "file_unique_id", "file_name", "mime_type", "file_size")
            if k in animation
        }
        content = {"animation": animation, "document": document}
        return self._captioned_message((user_id, chat_id, chat_type, first_name), content, caption)

    def dice(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        emoji: str = "🎲",
        value: int = 4,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        """Content the bridge does not pass on (answered as unsupported)."""
        content = {"dice": {"emoji": emoji, "value": value}}
        return self._media(user_id, chat_id, chat_type, content, first_name)

    def location(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        latitude: float = 52.520008,
        longitude: float = 13.404954,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        content = {"location": {"latitude": latitude, "longitude": longitude}}
        return self._media(user_id, chat_id, chat_type, content, first_name)

    def venue(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        latitude: float = 52.520815,
        longitude: float = 13.409419,
        title: str = "Fernsehturm",
        address: str = "Panoramastraße 1A",
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        """A venue: Telegram sends its location too."""
        location = {"latitude": latitude, "longitude": longitude}
        content = {
            "venue": {"location": location, "title": title, "address": address},
            "location": location,
        }
        return self._media(user_id, chat_id, chat_type, content, first_name)

    def contact(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        phone_number: str = "+49301234567",
        first_name: str = "Eve",
        last_name: str | None = "Example",
        contact_user_id: int | None = None,
        chat_type: str | None = None,
        sender_first_name: str = "Test",
    ) -> JSON:
        contact: JSON = {"phone_number": phone_number, "first_name": first_name}
        if last_name is not None:
            contact["last_name"] = last_name
        if contact_user_id is not None:
            contact["user_id"] = contact_user_id
        return self._media(user_id, chat_id, chat_type, {"contact": contact}, sender_first_name)

    def edited_message(
        self,
        user_id: int,
        text: str,
        *,
        message_id: int | None = None,
        chat_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "Test",
    ) -> JSON:
        """``{"edited_message": ...}`` for the user's message ``message_id`` (default: their
        last message in that chat)."""
        user = self.user(user_id, first_name=first_name)
        chat = self._sender_chat(user, chat_id, chat_type, None, None)
        if message_id is None:
            theirs = [
                mid
                for (cid, mid), m in self._messages.items()
                if cid == chat["id"] and m.get("from", {}).get("id") == user_id
            ]
            message_id = max(theirs) if theirs else self._allocate_message_id(chat["id"])
        original = self._messages.get((chat["id"], message_id), {})
        edited: JSON = {
            "message_id": message_id,
            "from": user,
            "chat": dict(chat),
            "date": original.get("date", int(time.time())),
            "edit_date": int(time.time()),
            **self._text_content(text, None),
        }
        self._messages[(chat["id"], message_id)] = edited
        return {"edited_message": edited}

    # -- webhook side --

    def _webhook_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)
            )
        return self._session

    async def deliver_webhook(
        self,
        update: Mapping[str, Any] | None = None,
        url: str | None = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """POST an update to the webhook like Telegram does (JSON body, header
        ``X-Telegram-Bot-Api-Secret-Token`` with the registered secret) and return the HTTP
        status (0 if the connection failed). Without ``update`` the oldest pending update is
        sent and, on a 2xx, confirmed. ``url`` overrides the registered URL; ``headers`` add or
        override headers (e.g. a wrong secret)."""
        bot = self._bot(token)
        target = url or (bot.webhook.url if bot.webhook else None)
        if not target:
            raise RuntimeError("no webhook is set and no url was given")
        pending = update is None
        if update is None:
            if not bot.updates:
                raise RuntimeError("no pending update to deliver")
            payload = bot.updates[0]
        else:
            payload = dict(update)
            if "update_id" not in payload:
                payload = {"update_id": bot.next_update_id, **payload}
                bot.next_update_id += 1
            self._learn(payload)
        send_headers = {"Content-Type": "application/json"}
        secret = bot.webhook.secret_token if bot.webhook else ""
        if secret:
            send_headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        send_headers.update(headers or {})
        status, error, body = 0, None, b""
        try:
            async with self._webhook_session().post(
                target, data=json.dumps(payload, ensure_ascii=False).encode(), headers=send_headers
            ) as response:
                status = response.status
                body = await response.read()
                if not 200 <= status < 300:
                    error = f"Wrong response from the webhook: {status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
        if error is None:
            if pending and bot.updates and bot.updates[0] is payload:
                bot.updates.pop(0)
        else:
            bot.last_webhook_error = (int(time.time()), error)
        self.webhook_deliveries.append(
            WebhookDelivery(
                url=target,
                update=dict(payload),
                status=status,
                secret_token=send_headers.get("X-Telegram-Bot-Api-Secret-Token"),
                at=self._clock(),
                error=error,
                body=body,
            )
        )
        self._changed()
        return status

    async def deliver_pending(self, token: str | None = None) -> list[int]:
        """Deliver the pending updates in order, stopping at the first failure."""
        statuses: list[int] = []
        bot = self._bot(token)
        while bot.updates:
            status = await self.deliver_webhook(token=token)
            statuses.append(status)
            if not 200 <= status < 300:
                break
        return statuses

    # -- HTTP --

    async def _read_params(
        self, request: web.Request
    ) -> tuple[dict[str, Any], dict[str, UploadedFile], str]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, UploadedFile] = {}
        content_type = request.content_type if request.body_exists else ""
        if request.body_exists:
            if content_type == "application/json":
                body = await request.read()
                if body.strip():
                    data = json.loads(body)
                    if not isinstance(data, dict):
                        raise bad_request("JSON object expected")
                    raw.update(data)
            elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = UploadedFile(
                            field=key,
                            filename=value.filename,
                            content_type=value.content_type,
                            data=value.file.read(),
                        )
                    else:
                        raw[key] = value
            else:
                await request.read()
        return raw, files, content_type

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        requested = request.match_info["method"]
        method = _METHOD_NAMES.get(requested.lower(), requested)
        try:
            raw, files, content_type = await self._read_params(request)
        except (ValueError, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else bad_request("can't parse JSON")
            call = Call(
                method=method,
                params={},
                files={},
                at=self._clock(),
                token=token,
                http_method=request.method,
                content_type=request.content_type,
            )
            self.calls.append(call)
            return self._answer(call, error.status, error.body())
        call = Call(
            method=method,
            params=_decode_params(raw),
            files=files,
            at=self._clock(),
            token=token,
            http_method=request.method,
            content_type=content_type,
            raw=raw,
        )
        self.calls.append(call)
        self._changed()

        bot = self._bots.get(token)
        handler = _HANDLERS.get(method.lower())
        if bot is None:
            if TOKEN_RE.fullmatch(token):
                return self._answer(call, 401, ApiError(401, "Unauthorized").body())
            return self._answer(call, 404, ApiError(404, "Not Found").body())
        if handler is None:
            return self._answer(call, 404, ApiError(404, "Not Found").body())

        delay = self._latency.get(method, self._latency.get("*", 0.0))
        if delay > 0:
            await asyncio.sleep(delay)
        hold = self._holds.get(method)
        if hold is not None and not hold.released:
            await hold.wait()

        fault = self._take_fault(method, call.params)
        if fault is not None:
            if fault.disconnect:
                if request.transport is not None:
                    request.transport.close()
                call.status = 0
                self._changed()
                return web.Response(status=500)
            if fault.body is not None:
                call.status = fault.status
                self._changed()
                return web.Response(status=fault.status, body=fault.body, content_type="text/html")
            error = ApiError(fault.status, fault.description, fault.parameters)
            return self._answer(call, error.status, error.body())

        try:
            outcome = await handler(self, bot, call)
        except ApiError as exc:
            call.abandoned = request.transport is None or request.transport.is_closing()
            return self._answer(call, exc.status, exc.body())
        ok = outcome if isinstance(outcome, _Ok) else _Ok(outcome)
        body: JSON = {"ok": True, "result": ok.result}
        if ok.description:
            body["description"] = ok.description
        return self._answer(call, 200, body)

    def _answer(self, call: Call, status: int, body: JSON) -> web.Response:
        call.status = status
        call.response = body
        self._changed()
        return web.Response(
            status=status,
            content_type="application/json",
            text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        )

    def _take_fault(self, method: str, params: Mapping[str, Any]) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, params):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # -- shared checks --

    def _resolve_chat(self, params: Mapping[str, Any], key: str = "chat_id") -> JSON:
        value = params.get(key)
        if value is None or value == "":
            raise bad_request(f"{key} is empty")
        if isinstance(value, str):
            if value.startswith("@"):
                wanted = value[1:].lower()
                chat = next(
                    (
                        c
                        for c in self._chats.values()
                        if str(c.get("username", "")).lower() == wanted
                    ),
                    None,
                )
                if chat is None or chat["id"] in self._deleted_chats:
                    raise bad_request("chat not found")
                return chat
            raise bad_request("chat not found")
        chat_id = int(value)
        if (
            chat_id == 0
            or chat_id in self._deleted_chats
            or (self.strict_chats and chat_id not in self._chats)
        ):
            raise bad_request("chat not found")
        return self._ensure_chat(chat_id)

    def _check_writable(self, chat: JSON) -> None:
        if chat["id"] in self._blocked:
            raise ApiError(403, _BLOCKED.get(chat["type"], _BLOCKED["private"]))

    def _reply_markup(self, params: Mapping[str, Any]) -> JSON | None:
        if "reply_markup" not in params or params["reply_markup"] in ("", None):
            return None
        markup = params["reply_markup"]
        if isinstance(markup, str):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if not isinstance(markup, dict):
            raise bad_request("object expected as reply markup")
        keyboard = markup.get("keyboard")
        if keyboard is not None and (
            not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard)
        ):
            raise bad_request('field "keyboard" must be an Array of Arrays')
        inline = markup.get("inline_keyboard")
        if inline is not None:
            if not isinstance(inline, list) or not all(isinstance(row, list) for row in inline):
                raise bad_request(
                    'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
                )
            for row in inline:
                for button in row:
                    self._check_inline_button(button)
        return markup

    @staticmethod
    def _check_inline_button(button: Any) -> None:
        prefix = "can't parse inline keyboard button: "
        if not isinstance(button, dict):
            raise bad_request(prefix + "InlineKeyboardButton must be an Object")
        if not isinstance(button.get("text"), str):
            raise bad_request(prefix + 'Field "text" must be of type String')
        url = button.get("url")
        if isinstance(url, str) and url:
            if check_link(url) is None:
                raise bad_request("BUTTON_URL_INVALID")
            return
        data = button.get("callback_data")
        if isinstance(data, str) and data:
            if len(data.encode("utf-8")) > MAX_CALLBACK_DATA_BYTES:
                raise bad_request("BUTTON_DATA_INVALID")
            return
        for key in (
            "callback_game",
            "pay",
            "switch_inline_query",
            "switch_inline_query_chosen_chat",
            "switch_inline_query_current_chat",
            "login_url",
            "web_app",
            "copy_text",
        ):
            if key in button:
                return
        raise bad_request(prefix + "Text buttons are unallowed in the inline keyboard")

    def _reply_to(self, chat: JSON, params: Mapping[str, Any]) -> JSON | None:
        reply = params.get("reply_parameters")
        allow = bool(params.get("allow_sending_without_reply"))
        message_id: Any = params.get("reply_to_message_id")
        target_chat = chat["id"]
        if reply not in (None, ""):
            if not isinstance(reply, dict):
                raise bad_request("can't parse reply parameters JSON object")
            message_id = reply.get("message_id")
            allow = bool(reply.get("allow_sending_without_reply"))
            if reply.get("chat_id") not in (None, ""):
                target_chat = int(reply["chat_id"])
        if message_id in (None, "", 0):
            return None
        message = self._messages.get((target_chat, int(message_id)))
        if message is None:
            if allow:
                return None
            raise bad_request("message to be replied not found")
        return message

    def _rate_check(self, bot: _Bot, method: str, chat: JSON) -> None:
        limits = self._rate_limits
        if limits is None or method not in RATE_LIMITED_METHODS:
            return
        now = self._clock()
        chat_id = int(chat["id"])
        chat_bucket = bot.chat_buckets.setdefault(chat_id, _Bucket(limits.chat_burst, now))
        chat_bucket.refill(now, limits.per_chat_per_second, limits.chat_burst)
        if bot.global_bucket is None:
            bot.global_bucket = _Bucket(limits.global_burst, now)
        bot.global_bucket.refill(now, limits.global_per_second, limits.global_burst)
        waits = [
            chat_bucket.wait_needed(limits.per_chat_per_second),
            bot.global_bucket.wait_needed(limits.global_per_second),
        ]
        window: deque[float] | None = None
        if chat["type"] in ("group", "supergroup"):
            window = bot.group_windows.setdefault(chat_id, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= limits.group_per_minute:
                waits.append(window[0] + 60.0 - now)
        wait = max(waits)
        if wait > 0:
            retry_after = (
                limits.retry_after if limits.retry_after is not None else max(1, math.ceil(wait))
            )
            raise too_many_requests(retry_after)
        chat_bucket.tokens -= 1
        bot.global_bucket.tokens -= 1
        if window is not None:
            window.append(now)

    def _new_bot_message(
        self,
        bot: _Bot,
        chat: JSON,
        content: JSON,
        *,
        thread_id: int | None,
        reply_to: JSON | None,
        markup: JSON | None,
    ) -> JSON:
        message: JSON = {
            "message_id": self._allocate_message_id(chat["id"]),
            "from": bot.user,
            "chat": dict(chat),
            "date": int(time.time()),
        }
        if thread_id:
            message["message_thread_id"] = thread_id
            if chat.get("is_forum"):
                message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = _strip_reply(reply_to)
        message.update(content)
        if markup is not None and markup.get("inline_keyboard"):
            message["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    def _record_sent(
        self,
        bot: _Bot,
        call: Call,
        message: JSON,
        *,
        raw_text: str | None,
        photo: str | UploadedFile | None,
        media_type: str | None = None,
        media: str | UploadedFile | None = None,
    ) -> None:
        params = call.params
        reply = message.get("reply_to_message")
        sent = SentMessage(
            method=call.method,
            token=bot.token,
            chat_id=message["chat"]["id"],
            message_id=message["message_id"],
            text=message.get("text"),
            caption=message.get("caption"),
            raw_text=raw_text,
            parse_mode=_str_param(params, "parse_mode"),
            entities=list(message.get("entities") or message.get("caption_entities") or []),
            reply_markup=message.get("reply_markup"),
            message_thread_id=message.get("message_thread_id"),
            reply_to_message_id=reply["message_id"] if reply else None,
            photo=photo,
            message=message,
            at=call.at,
            media_type=media_type or ("photo" if photo is not None else None),
            media=media if media is not None else photo,
            media_group_id=message.get("media_group_id"),
        )
        self.messages.append(sent)
        self._sent_index[(sent.chat_id, sent.message_id)] = sent

    # -- methods --

    async def _get_me(self, bot: _Bot, call: Call) -> Any:
        return dict(bot.user)

    async def _get_updates(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        if bot.webhook is not None:
            raise ApiError(409, CONFLICT_WEBHOOK_ACTIVE)
        offset = _int_param(params, "offset", 0)
        limit = min(max(_int_param(params, "limit", 100), 1), 100)
        timeout = min(max(_int_param(params, "timeout", 0), 0), LONG_POLL_MAX_TIMEOUT)
        if "allowed_updates" in params:
            self._set_allowed_updates(bot, params["allowed_updates"])
        if offset < 0:
            del bot.updates[: max(0, len(bot.updates) + offset)]
        elif offset > 0:
            bot.updates[:] = [u for u in bot.updates if int(u["update_id"]) >= offset]
        if bot.poll is not None:
            bot.poll.terminated = CONFLICT_OTHER_POLL
        poll = _Poll()
        bot.poll = poll
        self._changed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if poll.terminated:
                    raise ApiError(409, poll.terminated)
                batch = self._take_updates(bot, limit)
                remaining = deadline - loop.time()
                if batch or self._closing or remaining <= 0:
                    return batch
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._next_change()
        finally:
            if bot.poll is poll:
                bot.poll = None
                self._changed()

    def _take_updates(self, bot: _Bot, limit: int) -> list[JSON]:
        kept: list[JSON] = []
        batch: list[JSON] = []
        for update in bot.updates:
            if _update_type(update) not in bot.allowed_updates:
                continue  # not wanted: dropped, as Telegram never sends it
            kept.append(update)
            if len(batch) < limit:
                batch.append(update)
        bot.updates[:] = kept
        return [dict(u) for u in batch]

    @staticmethod
    def _set_allowed_updates(bot: _Bot, value: Any) -> None:
        if isinstance(value, str):
            if not value.strip():
                return
            raise bad_request("can't parse allowed updates JSON object")
        if not isinstance(value, list):
            return
        wanted = frozenset(str(v) for v in value) & frozenset(ALL_UPDATE_TYPES)
        bot.allowed_updates = wanted or DEFAULT_UPDATE_TYPES
        bot.allowed_updates_set = bool(wanted)

    async def _set_webhook(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        url = _str_param(params, "url") or ""
        drop = bool(params.get("drop_pending_updates"))
        if not url:
            return await self._delete_webhook(bot, call)
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad_request("invalid webhook URL specified")
        if self.require_https_webhook and parts.scheme != "https":
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = _str_param(params, "secret_token") or ""
        if len(secret) > 256:
            raise bad_request("secret token is too long")
        if secret and not SECRET_TOKEN_RE.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        max_connections = min(max(_int_param(params, "max_connections", 40), 1), 100)
        ip_address = _str_param(params, "ip_address") or ""
        if "allowed_updates" in params:
            self._set_allowed_updates(bot, params["allowed_updates"])
        current = bot.webhook
        if (
            current is not None
            and not drop
            and current.url == url
            and current.secret_token == secret
            and current.max_connections == max_connections
            and current.ip_address == ip_address
        ):
            return _Ok(True, "Webhook is already set")
        if drop:
            bot.updates.clear()
        if bot.poll is not None:
            bot.poll.terminated = CONFLICT_SET_WEBHOOK
        bot.webhook = Webhook(
            url=url,
            secret_token=secret,
            max_connections=max_connections,
            ip_address=ip_address,
            set_at=self._clock(),
        )
        bot.last_webhook_error = None
        self._changed()
        return _Ok(True, "Webhook was set")

    async def _delete_webhook(self, bot: _Bot, call: Call) -> Any:
        if call.params.get("drop_pending_updates"):
            bot.updates.clear()
        was_set = bot.webhook is not None
        bot.webhook = None
        bot.last_webhook_error = None
        self._changed()
        return _Ok(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, bot: _Bot, call: Call) -> Any:
        info: JSON = {
            "url": bot.webhook.url if bot.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(bot.updates),
        }
        if bot.last_webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = bot.last_webhook_error
        if bot.webhook is not None:
            info["max_connections"] = bot.webhook.max_connections
            info["ip_address"] = bot.webhook.ip_address or "127.0.0.1"
        if bot.allowed_updates_set:
            info["allowed_updates"] = sorted(bot.allowed_updates)
        return info

    async def _send_message(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        text, plain, entities = _message_text(params)
        markup = self._reply_markup(params)
        chat = self._resolve_chat(params)
        self._check_writable(chat)
        _check_message_length(plain)
        reply_to = self._reply_to(chat, params)
        self._rate_check(bot, call.method, chat)
        content: JSON = {"text": plain}
        if entities:
            content["entities"] = entities
        if isinstance(params.get("link_preview_options"), dict):
            content["link_preview_options"] = params["link_preview_options"]
        return self._send_new(bot, call, chat, content, reply_to, markup, text, None)

    def _send_new(
        self,
        bot: _Bot,
        call: Call,
        chat: JSON,
        content: JSON,
        reply_to: JSON | None,
        markup: JSON | None,
        raw_text: str | None,
        photo: str | UploadedFile | None,
    ) -> JSON:
        """A new message of the bot in the chat (in the topic the call names), recorded."""
        thread_id = _int_param(call.params, "message_thread_id", 0) or None
        message = self._new_bot_message(
            bot, chat, content, thread_id=thread_id, reply_to=reply_to, markup=markup
        )
        self._record_sent(bot, call, message, raw_text=raw_text, photo=photo)
        return message

    def _media_input(self, call: Call, key: str, value: Any) -> str | UploadedFile:
        """What a send call names as its ``key`` file: an upload (directly or by
        ``attach://``), a known file_id, or an http(s) URL Telegram can fetch."""
        media: str | UploadedFile | None
        text = value if isinstance(value, str) else None
        if key in call.files and value is None:
            media = call.files[key]
        elif text and text.startswith("attach://"):
            media = call.files.get(text[len("attach://") :])
            if media is None:
                raise bad_request(f"there is no {key} in the request")
        elif text:
            media = text
        else:
            raise bad_request(f"there is no {key} in the request")
        if isinstance(media, UploadedFile) and not media.data:
            raise bad_request("file must be non-empty")
        if isinstance(media, str) and media not in self._files:
            if not re.match(r"https?://", media, re.IGNORECASE) or check_link(media) is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            if media in self.unreachable_urls:
                raise bad_request(URL_CONTENT_FAILED)
        return media

    def _caption(self, params: Mapping[str, Any]) -> tuple[str, str, list[JSON]]:
        """The caption as sent, as users see it, and its entities."""
        caption_raw = _str_param(params, "caption") or ""
        caption, entities = format_text(
            caption_raw, _str_param(params, "parse_mode"), params.get("caption_entities")
        )
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise bad_request("message caption is too long")
        return caption_raw, caption, entities

    def _file_object(self, kind: str, media: str | UploadedFile) -> JSON:
        """The object a sent ``kind`` (document, audio, video) shows in its message, known by
        its file_id afterwards."""
        if isinstance(media, UploadedFile):
            name, size = media.filename or "file", len(media.data)
        else:
            name, size = urlsplit(media).path.rsplit("/", 1)[-1] or "file", 50_000
        fields: JSON = {"file_name": name, "file_size": size}
        if kind == "video":
            fields.update(width=640, height=360, duration=1, mime_type="video/mp4")
        elif kind == "audio":
            fields.update(duration=1, mime_type="audio/mpeg")
        prefix = {"document": "BQAC", "audio": "CQAC", "video": "BAAC"}[kind] + "AgIAAxkBAAI"
        obj = self._file(prefix, **fields)
        self._files[obj["file_id"]] = media
        return obj

    def _media_content(self, kind: str, media: str | UploadedFile, has_spoiler: bool) -> JSON:
        if kind == "photo":
            sizes = self._photo_sizes(
                len(media.data) if isinstance(media, UploadedFile) else 50_000
            )
            for size_obj in sizes:
                self._files[size_obj["file_id"]] = media
            content: JSON = {"photo": sizes}
        else:
            content = {kind: self._file_object(kind, media)}
        if has_spoiler and kind in ("photo", "video"):
            content["has_media_spoiler"] = True
        return content

    async def _send_media(self, bot: _Bot, call: Call, kind: str) -> Any:
        """sendPhoto, sendDocument, sendAudio, sendVideo."""
        params = call.params
        media = self._media_input(call, kind, params.get(kind))
        caption_raw, caption, entities = self._caption(params)
        markup = self._reply_markup(params)
        chat = self._resolve_chat(params)
        self._check_writable(chat)
        reply_to = self._reply_to(chat, params)
        self._rate_check(bot, call.method, chat)
        content = self._media_content(kind, media, bool(params.get("has_spoiler")))
        if caption:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        thread_id = _int_param(params, "message_thread_id", 0) or None
        message = self._new_bot_message(
            bot, chat, content, thread_id=thread_id, reply_to=reply_to, markup=markup
        )
        self._record_sent(
            bot,
            call,
            message,
            raw_text=caption_raw or None,
            photo=media if kind == "photo" else None,
            media_type=kind,
            media=media,
        )
        return message

    async def _send_photo(self, bot: _Bot, call: Call) -> Any:
        return await self._send_media(bot, call, "photo")

    async def _send_document(self, bot: _Bot, call: Call) -> Any:
        return await self._send_media(bot, call, "document")

    async def _send_audio(self, bot: _Bot, call: Call) -> Any:
        return await self._send_media(bot, call, "audio")

    async def _send_video(self, bot: _Bot, call: Call) -> Any:
        return await self._send_media(bot, call, "video")

    async def _send_media_group(self, bot: _Bot, call: Call) -> Any:
        """An album: 2-10 photos and videos, or documents only, or audio only; each item
        its own message sharing a ``media_group_id``. No reply markup (Telegram has none)."""
        params = call.params
        items = params.get("media")
        if isinstance(items, str) or items is None:
            raise bad_request("can't parse media JSON object")
        if not isinstance(items, list) or not 2 <= len(items) <= 10:
            raise bad_request("media must include 2-10 items")
        kinds = []
        for item in items:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in ("photo", "video", "document", "audio"):
                raise bad_request("can't parse InputMedia: media type invalid")
            kinds.append(kind)
        for alone in ("document", "audio"):
            if alone in kinds and set(kinds) != {alone}:
                raise bad_request(f"{alone} can't be mixed with other media types")
        chat = self._resolve_chat(params)
        self._check_writable(chat)
        reply_to = self._reply_to(chat, params)
        prepared = []
        for item, kind in zip(items, kinds, strict=True):
            media = self._media_input(call, kind, item.get("media"))
            prepared.append((kind, media, *self._caption(item), item))
        self._rate_check(bot, call.method, chat)
        group_id = str(next(self._album_counter))
        thread_id = _int_param(params, "message_thread_id", 0) or None
        sent = []
        for kind, media, caption_raw, caption, entities, item in prepared:
            content = self._media_content(kind, media, bool(item.get("has_spoiler")))
            content["media_group_id"] = group_id
            if caption:
                content["caption"] = caption
                if entities:
                    content["caption_entities"] = entities
            message = self._new_bot_message(
                bot, chat, content, thread_id=thread_id, reply_to=reply_to, markup=None
            )
            self._record_sent(
                bot,
                call,
                message,
                raw_text=caption_raw or None,
                photo=media if kind == "photo" else None,
                media_type=kind,
                media=media,
            )
            sent.append(message)
        return sent

    # -- files users sent --

    async def _get_file(self, bot: _Bot, call: Call) -> Any:
        file_id = _str_param(call.params, "file_id") or ""
        stored = self._stored.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.file_size is not None and stored.file_size > MAX_DOWNLOAD_BYTES:
            raise bad_request("file is too big")
        if stored.file_path is None:
            n = next(self._path_counter)
            stored.file_path = f"{stored.directory}/file_{n}.{stored.extension}"
        self._paths[(bot.token, stored.file_path)] = file_id
        result: JSON = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if stored.file_size is not None:
            result["file_size"] = stored.file_size
        result["file_path"] = stored.file_path
        return result

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """``GET /file/bot<token>/<file_path>``: the bytes of a file getFile named for that
        bot, in chunks; anything else is 404. Faults: ``fail_next("downloadFile", ...)``."""
        token = request.match_info["token"]
        path = request.match_info["path"]
        call = Call(
            method="downloadFile",
            params={"file_path": path},
            files={},
            at=self._clock(),
            token=token,
            http_method=request.method,
        )
        self.calls.append(call)
        self._changed()
        hold = self._holds.get(call.method)
        if hold is not None and not hold.released:
            await hold.wait()
        fault = self._take_fault(call.method, call.params)
        if fault is not None:
            error = ApiError(fault.status, fault.description, fault.parameters)
            answer = self._answer(call, error.status, error.body())
            if fault.parameters and "retry_after" in fault.parameters:
                answer.headers["Retry-After"] = str(fault.parameters["retry_after"])
            return answer
        file_id = self._paths.get((token, path)) if token in self._bots else None
        stored = self._stored.get(file_id) if file_id is not None else None
        if stored is None or stored.data is None:
            return self._answer(call, 404, ApiError(404, "Not Found").body())
        response = web.StreamResponse(status=200)
        response.content_type = stored.content_type or "application/octet-stream"
        response.content_length = len(stored.data)
        await response.prepare(request)
        for start in range(0, len(stored.data), DOWNLOAD_CHUNK_BYTES):
            await response.write(stored.data[start : start + DOWNLOAD_CHUNK_BYTES])
        await response.write_eof()
        call.status = 200
        self._changed()
        return response

    async def _send_chat_action(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        chat = self._resolve_chat(params)
        self._check_writable(chat)
        action = _str_param(params, "action") or ""
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._chat_actions.append(
            ChatAction(
                token=bot.token,
                chat_id=chat["id"],
                action=action,
                message_thread_id=_int_param(params, "message_thread_id", 0) or None,
                at=call.at,
            )
        )
        return True

    async def _answer_callback_query(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        query_id = _str_param(params, "callback_query_id") or ""
        if self._callback_queries.get(query_id, True):
            raise bad_request(QUERY_TOO_OLD[len("Bad Request: ") :])
        self._callback_queries[query_id] = True
        self._answered.append(
            AnsweredCallback(
                token=bot.token,
                callback_query_id=query_id,
                text=_str_param(params, "text"),
                show_alert=bool(params.get("show_alert")),
                url=_str_param(params, "url"),
                cache_time=_int_param(params, "cache_time", 0) if "cache_time" in params else None,
                at=call.at,
            )
        )
        return True

    def _own_message(
        self, bot: _Bot, params: Mapping[str, Any], verb: str
    ) -> tuple[JSON, JSON, SentMessage | None]:
        if params.get("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self._resolve_chat(params)
        self._check_writable(chat)
        message_id = _int_param(params, "message_id", 0)
        if not message_id:
            raise bad_request("message identifier is not specified")
        message = self._messages.get((chat["id"], message_id))
        if message is None:
            raise bad_request(f"message to {verb} not found")
        return chat, message, self._sent_index.get((chat["id"], message_id))

    def _apply_edit(
        self,
        call: Call,
        chat: JSON,
        message: JSON,
        sent: SentMessage | None,
        changes: JSON,
        markup: JSON | None,
    ) -> JSON:
        edited = {k: v for k, v in message.items() if k != "reply_markup"}
        edited.update(changes)
        for key in ("entities", "caption_entities"):
            if key in changes and not changes[key]:
                edited.pop(key)
        if markup is not None and markup.get("inline_keyboard"):
            edited["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}
        comparable = ("text", "entities", "caption", "caption_entities", "reply_markup")
        if all(edited.get(k) == message.get(k) for k in comparable):
            raise ApiError(400, NOT_MODIFIED)
        edited["edit_date"] = int(time.time())
        self._messages[(chat["id"], message["message_id"])] = edited
        if sent is not None:
            sent.edits.append(sent.message)
            sent.message = edited
            sent.text = edited.get("text")
            sent.caption = edited.get("caption")
            sent.entities = list(edited.get("entities") or edited.get("caption_entities") or [])
            sent.reply_markup = edited.get("reply_markup")
            if "text" in changes:
                sent.raw_text = _str_param(call.params, "text")
        return edited

    async def _edit_message_text(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        _, plain, entities = _message_text(params)
        markup = self._reply_markup(params)
        chat, message, sent = self._own_message(bot, params, "edit")
        if message.get("from", {}).get("id") != bot.user["id"]:
            raise bad_request("message can't be edited")
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        _check_message_length(plain)
        self._rate_check(bot, call.method, chat)
        return self._apply_edit(
            call, chat, message, sent, {"text": plain, "entities": entities}, markup
        )

    async def _edit_message_reply_markup(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        markup = self._reply_markup(params)
        chat, message, sent = self._own_message(bot, params, "edit")
        if message.get("from", {}).get("id") != bot.user["id"]:
            raise bad_request("message can't be edited")
        self._rate_check(bot, call.method, chat)
        return self._apply_edit(call, chat, message, sent, {}, markup)

    async def _delete_message(self, bot: _Bot, call: Call) -> Any:
        chat, message, sent = self._own_message(bot, call.params, "delete")
        del self._messages[(chat["id"], message["message_id"])]
        if sent is not None:
            sent.deleted = True
        return True

    def _commands_key(self, params: Mapping[str, Any]) -> tuple[str, str]:
        scope = params.get("scope")
        if isinstance(scope, str) and scope:
            raise bad_request("can't parse BotCommandScope JSON object")
        if not isinstance(scope, dict):
            scope = {"type": "default"}
        return json.dumps(scope, sort_keys=True), _str_param(params, "language_code") or ""

    async def _set_my_commands(self, bot: _Bot, call: Call) -> Any:
        params = call.params
        commands = params.get("commands")
        if isinstance(commands, str):
            raise bad_request("can't parse commands JSON object")
        if not isinstance(commands, list):
            raise bad_request("expected an Array of BotCommand")
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand: expected an Object")
            name = command.get("command")
            description = command.get("description")
            if not isinstance(name, str) or not COMMAND_RE.fullmatch(name.lower().lstrip("/")):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(params)
        bot.commands[key] = [
            {"command": c["command"].lower().lstrip("/"), "description": c["description"]}
            for c in commands
        ]
        return True

    async def _get_my_commands(self, bot: _Bot, call: Call) -> Any:
        return list(bot.commands.get(self._commands_key(call.params), []))

    async def _delete_my_commands(self, bot: _Bot, call: Call) -> Any:
        bot.commands.pop(self._commands_key(call.params), None)
        return True

    async def _get_chat(self, bot: _Bot, call: Call) -> Any:
        chat = self._resolve_chat(call.params)
        if chat["type"] != "private":
            self._check_writable(chat)
        info: JSON = dict(chat)
        info.update(
            {
                "accent_color_id": chat["id"] % 7,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": False,
                    "limited_gifts": False,
                    "unique_gifts": False,
                    "premium_subscription": False,
                    "gifts_from_channels": False,
                },
            }
        )
        if chat["type"] == "private":
            user = self._users.get(chat["id"], {})
            info.setdefault("first_name", user.get("first_name", "Test"))
        return info


_Handler = Callable[[FakeTelegram, _Bot, Call], Awaitable[Any]]
_HANDLERS: dict[str, _Handler] = {
    "getme": FakeTelegram._get_me,
    "getupdates": FakeTelegram._get_updates,
    "setwebhook": FakeTelegram._set_webhook,
    "deletewebhook": FakeTelegram._delete_webhook,
    "getwebhookinfo": FakeTelegram._get_webhook_info,
    "sendmessage": FakeTelegram._send_message,
    "sendphoto": FakeTelegram._send_photo,
    "senddocument": FakeTelegram._send_document,
    "sendaudio": FakeTelegram._send_audio,
    "sendvideo": FakeTelegram._send_video,
    "sendmediagroup": FakeTelegram._send_media_group,
    "getfile": FakeTelegram._get_file,
    "sendchataction": FakeTelegram._send_chat_action,
    "answercallbackquery": FakeTelegram._answer_callback_query,
    "editmessagetext": FakeTelegram._edit_message_text,
    "editmessagereplymarkup": FakeTelegram._edit_message_reply_markup,
    "deletemessage": FakeTelegram._delete_message,
    "setmycommands": FakeTelegram._set_my_commands,
    "getmycommands": FakeTelegram._get_my_commands,
    "deletemycommands": FakeTelegram._delete_my_commands,
    "getchat": FakeTelegram._get_chat,
}
_METHOD_NAMES = {
    name.lower(): name
    for name in (
        "getMe",
        "getUpdates",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendAudio",
        "sendVideo",
        "sendMediaGroup",
        "getFile",
        "sendChatAction",
        "answerCallbackQuery",
        "editMessageText",
        "editMessageReplyMarkup",
        "deleteMessage",
        "setMyCommands",
        "getMyCommands",
        "deleteMyCommands",
        "getChat",
    )
}
