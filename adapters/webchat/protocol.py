"""Pure conversions of the web chat: client frames to :class:`Inbound` events, response elements
to server frames, the per-user mailbox, and the ``Origin`` check. No network, no clock, no state.

Errors, one tree::

    FrameError            a client frame cannot be used: answer an ``error`` frame with ``reason``
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from yarl import URL

from bridge.channel import ContextScalar, Inbound, InboundKind, StoredUpload
from bridge.channelkit import is_storable_text
from bridge.media.attachments import STORED_PREFIX, Attachment, AttachmentType
from bridge.media.outbound import read_attachments
from bridge.textchat.models import PayloadElement, ResponseElement, element_to_wire

PLATFORM = "webchat"
MAILBOX_KEY = "tmp:mailbox:"  # + user id; "tmp:" rows are purged after the retention period
#: At most this many uploads in one message.
MAX_ATTACHMENTS = 10
#: A media id as the store issues it, loosely: what the page got back from an upload.
MEDIA_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_FILE_NAME = 255

#: A user id: what the page generates (32 hex digits), or any id of this shape.
USER_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: A client message id (a random hex string or a UUID).
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: An identity token: base64url of an HMAC-SHA256, unpadded.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: A BCP 47 language tag, loosely (``de``, ``en-GB``, ``zh-Hant-TW``).
LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,4}$")
MAX_USER_AGENT = 500

# Reasons of ``error`` frames; the page explains them to the user.
INVALID_FRAME = "invalid_frame"  # not JSON, an unknown type, a missing or malformed field
HELLO_REQUIRED = "hello_required"  # the first frame must be a hello
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
UNAVAILABLE = "unavailable"  # nothing was stored; send the same frame again later
IDENTITY_REFUSED = "identity_refused"  # the hello's user and token were not issued here
RATE_LIMITED = "rate_limited"  # too many frames too fast: nothing was stored
SLOW_DOWN = "slow_down"  # too many events wait for the bot: nothing was stored
INVALID_ATTACHMENT = "invalid_attachment"  # not an upload of this user (or it expired)
TOO_MANY_CONNECTIONS = "too_many_connections"  # a socket cap: the connection is closed

#: The fixed client id of the greeting: every ``start`` of a user is one event.
START_ID = "start"

_EVENT_KINDS = {
    "message": InboundKind.TEXT,
    "button": InboundKind.BUTTON,
    "restart": InboundKind.RESTART,
    "start": InboundKind.START,
}


class FrameError(ValueError):
    """A client frame that cannot be used. ``reason`` is one of the error codes above;
    ``id`` the frame's id when it had a usable one."""

    def __init__(self, reason: str, detail: str, id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.id = id


@dataclass(frozen=True, slots=True)
class Hello:
    """``user`` and ``token`` are None for a page that has no identity yet."""

    user: str | None
    token: str | None
    since: int
    language: str | None


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A message, a chip press or a restart. ``text`` is the message or the chip's value;
    ``attachments`` the media ids of the user's uploads a message carries."""

    id: str
    kind: InboundKind
    text: str
    attachments: tuple[str, ...] = ()


def upload_attachment(upload: StoredUpload) -> Attachment:
    """A stored upload as the attachment of the message that names it."""
    return Attachment(
        type=attachment_type(upload.content_type),
        locator=STORED_PREFIX + upload.media_id,
        name=upload.name,
        mime_type=upload.content_type,
        size=upload.size,
    )


def attachment_type(content_type: str) -> AttachmentType:
    """image/* a photo, audio/* audio, video/* video, anything else a document."""
    major = content_type.split("/", 1)[0].strip().lower()
    return {
        "image": AttachmentType.PHOTO,
        "audio": AttachmentType.AUDIO,
        "video": AttachmentType.VIDEO,
    }.get(major, AttachmentType.DOCUMENT)


def file_name(value: str | None) -> str | None:
    """An uploaded file's name as it is kept: its last path part, storable, cut to length."""
    if not value:
        return None
    name = value.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(c for c in name if c >= " " and c != "\x7f")
    if not name or not is_storable_text(name):
        return None
    return name[:MAX_FILE_NAME]


# --- client frames --------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise FrameError(INVALID_FRAME, f"{name} is not JSON")


def parse_frame(raw: str) -> dict[str, Any]:
    """The JSON object of a text frame with a string ``type``. Raises FrameError."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except FrameError:
        raise
    except (ValueError, RecursionError):
        raise FrameError(INVALID_FRAME, "frame is not JSON") from None
    if not isinstance(value, dict):
        raise FrameError(INVALID_FRAME, "frame must be a JSON object")
    if not isinstance(value.get("type"), str):
        raise FrameError(INVALID_FRAME, "frame has no type")
    return value


def language_tag(value: object) -> str | None:
    """``value`` when it is a plausible language tag, else None."""
    if isinstance(value, str) and len(value) <= 35 and LANGUAGE.match(value):
        return value
    return None


def accept_language(header: str | None) -> str | None:
    """The first language of an ``Accept-Language`` header (``de-DE,de;q=0.9`` → ``de-DE``)."""
    if not header:
        return None
    first = header.split(",", 1)[0].split(";", 1)[0].strip()
    return language_tag(first)


def parse_hello(frame: Mapping[str, Any]) -> Hello:
    """The ``hello`` a connection starts with. Raises FrameError."""
    if frame.get("type") != "hello":
        raw_id = frame.get("id")
        frame_id = raw_id if isinstance(raw_id, str) and CLIENT_ID.match(raw_id) else None
        raise FrameError(HELLO_REQUIRED, "the first frame must be a hello", frame_id)
    user = frame.get("user")
    token = frame.get("token")
    if user is None:
        token = None  # a new page: the server issues an identity
    elif not isinstance(user, str) or not USER_ID.match(user):
        raise FrameError(INVALID_FRAME, "user must be 8 to 64 letters, digits, '-' or '_'")
    elif not isinstance(token, str) or not TOKEN.match(token):
        raise FrameError(IDENTITY_REFUSED, "user has no valid token")
    since = frame.get("since", 0)
    if since is None:
        since = 0
    if not isinstance(since, int) or isinstance(since, bool) or since < 0:
        raise FrameError(INVALID_FRAME, "since must be an integer >= 0")
    return Hello(user=user, token=token, since=since, language=language_tag(frame.get("language")))


def parse_event(frame: Mapping[str, Any], max_text_length: int) -> ClientEvent:
    """A ``message``, ``button`` or ``restart`` frame. Raises FrameError."""
    raw_id = frame.get("id")
    frame_id = raw_id if isinstance(raw_id, str) and CLIENT_ID.match(raw_id) else None
    kind = _EVENT_KINDS.get(str(frame.get("type")))
    if kind is None:
        raise FrameError(INVALID_FRAME, "unknown frame type", frame_id)
    if frame_id is None:
        raise FrameError(INVALID_FRAME, "id must be 1 to 64 letters, digits, '-' or '_'")
    if kind is InboundKind.START:
        return ClientEvent(START_ID, kind, "")  # one greeting per user, whatever the id
    if kind is InboundKind.RESTART:
        return ClientEvent(frame_id, kind, "")
    field = "text" if kind is InboundKind.TEXT else "value"
    attachments = _attachment_ids(frame, frame_id) if kind is InboundKind.TEXT else ()
    text = frame.get(field, "" if attachments else None)
    if not isinstance(text, str):
        raise FrameError(INVALID_FRAME, f"{field} must be a string", frame_id)
    if not text.strip() and not attachments:
        raise FrameError(EMPTY_TEXT, f"{field} must not be empty", frame_id)
    if len(text) > max_text_length:
        raise FrameError(
            TEXT_TOO_LONG, f"{field} is longer than {max_text_length} characters", frame_id
        )
    # PostgreSQL refuses NUL in text columns: refused here, not retried there.
    if not is_storable_text(text) or "\x00" in text:
        raise FrameError(INVALID_FRAME, f"{field} is not valid Unicode text", frame_id)
    return ClientEvent(frame_id, kind, text, attachments)


def _attachment_ids(frame: Mapping[str, Any], frame_id: str) -> tuple[str, ...]:
    raw = frame.get("attachments")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_ATTACHMENTS:
        raise FrameError(
            INVALID_FRAME, f"attachments must be a list of at most {MAX_ATTACHMENTS}", frame_id
        )
    if not all(isinstance(i, str) and MEDIA_ID.match(i) for i in raw):
        raise FrameError(INVALID_ATTACHMENT, "attachments must be upload ids", frame_id)
    return tuple(dict.fromkeys(raw))  # the same file twice is one attachment


def event_id(user: str, client_id: str) -> str:
    """The deduplication key: a frame sent again (after a reconnect) has the same id."""
    return f"wc:{user}:{client_id}"


def to_inbound(
    user: str,
    event: ClientEvent,
    context: Mapping[str, ContextScalar],
    attachments: Sequence[Attachment] = (),
) -> Inbound:
    """The event of a frame; ``attachments``: its uploads (:func:`upload_attachment`)."""
    return Inbound(
        event_id=event_id(user, event.id),
        conversation_key=user,
        user_id=user,
        kind=event.kind,
        text=event.text,
        address={"user": user},
        context=dict(context),
        attachments=tuple(attachments),
    )


def connection_context(user_agent: str | None, language: str | None) -> dict[str, ContextScalar]:
    """The context every event of one connection carries."""
    context: dict[str, ContextScalar] = {"platform": PLATFORM}
    if user_agent and is_storable_text(user_agent):
        context["userAgent"] = user_agent[:MAX_USER_AGENT]
    if language:
        context["language"] = language
    return context


def address_user(address: Mapping[str, Any]) -> str | None:
    """The user of a delivery address this channel wrote, else None."""
    user = address.get("user")
    return user if isinstance(user, str) and USER_ID.match(user) else None


# --- identity -------------------------------------------------------------------------------


def identity_token(key: bytes, channel: str, user: str) -> str:
    """The token that proves ``user`` was issued by a bridge holding ``key`` for ``channel``."""
    message = f"webchat-identity\x00{channel}\x00{user}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def identity_valid(key: bytes, channel: str, user: str, token: str) -> bool:
    return hmac.compare_digest(identity_token(key, channel, user), token)


def identity_frame(user: str, token: str) -> dict[str, Any]:
    return {"type": "identity", "user": user, "token": token}


# --- limits ---------------------------------------------------------------------------------


class TokenBucket:
    """``burst`` frames at once, then ``rate`` a second. The caller passes the clock."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def ready(self, now: float) -> bool:
        """Whether a token is there to :meth:`spend`."""
        self.refill(now)
        return self.tokens >= 1.0

    def spend(self) -> None:
        self.tokens -= 1.0

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.burst


# --- server frames --------------------------------------------------------------------------


def render_elements(elements: Sequence[ResponseElement]) -> list[Any]:
    """The wire form of response elements for the page. A payload's suggestion chips are
    added, already normalised, as ``chips: [{"title", "value"}]``, and its attachments
    (bridge/media/outbound.py) as ``files: [{"kind", "url", "label", "caption"?}]``, so the
    page need not know the shapes bots use for them."""
    rendered: list[Any] = []
    for element in elements:
        wire = element_to_wire(element)
        if isinstance(element, PayloadElement) and isinstance(wire, dict):
            chips = element.chips()
            if chips:
                wire = {**wire, "chips": [{"title": c.title, "value": c.value} for c in chips]}
            files = read_attachments(element.content)
            if files:
                wire = {
                    **wire,
                    "files": [
                        {"kind": f.kind.value, "url": f.url, "label": f.label}
                        | ({"caption": f.caption} if f.caption else {})
                        for f in files
                    ],
                }
        rendered.append(wire)
    return rendered


def encode(frame: Mapping[str, Any]) -> str:
    """Compact JSON, ASCII-escaped: even broken text from Parloa (lone surrogates) encodes."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=True)


def message_frame(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "message", "seq": entry["seq"], "elements": entry["elements"]}


def error_frame(reason: str, id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "reason": reason}
    if id is not None:
        frame["id"] = id
    return frame


# --- the mailbox ----------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What was delivered to one user, newest last: ``{"seq", "outbox", "elements"}`` entries
    with increasing sequence numbers. Stored as one JSON value; only the newest entries are
    kept, but ``last_seq`` never goes back (a page's ``since`` stays meaningful)."""

    last_seq: int
    entries: list[dict[str, Any]]

    def expire(self, now: float, max_age_seconds: float) -> bool:
        """Drop entries older than ``max_age_seconds``; entries written before entries had
        their own time are given ``now``. Whether anything changed."""
        changed = False
        for entry in self.entries:
            if not isinstance(entry.get("at"), int | float) or isinstance(entry.get("at"), bool):
                entry["at"] = int(now)
                changed = True
        kept = [e for e in self.entries if now - e["at"] <= max_age_seconds]
        changed = changed or len(kept) != len(self.entries)
        self.entries = kept
        return changed

    @classmethod
    def load(cls, raw: str | None) -> Mailbox:
        """The mailbox stored as ``raw``; an empty one for None or a value it cannot read."""
        if raw is None:
            return cls(0, [])
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return cls(0, [])
        if not isinstance(data, dict):
            return cls(0, [])
        entries = [
            e
            for e in data.get("entries", [])
            if isinstance(e, dict)
            and isinstance(e.get("seq"), int)
            and isinstance(e.get("elements"), list)
        ]
        last = data.get("last")
        last_seq = last if isinstance(last, int) and not isinstance(last, bool) else 0
        last_seq = max([last_seq, *(e["seq"] for e in entries)])
        return cls(last_seq, entries)

    def dump(self) -> str:
        return encode({"last": self.last_seq, "entries": self.entries})

    def find(self, outbox_id: int) -> dict[str, Any] | None:
        """The entry of an outbox item already delivered (a retry after a crash)."""
        return next((e for e in self.entries if e.get("outbox") == outbox_id), None)

    def append(
        self, outbox_id: int, elements: list[Any], keep: int, now: float = 0.0
    ) -> dict[str, Any]:
        """Add an entry with the next sequence number, written at ``now`` (Unix seconds),
        keeping the newest ``keep``."""
        self.last_seq += 1
        entry = {"seq": self.last_seq, "outbox": outbox_id, "at": int(now), "elements": elements}
        self.entries.append(entry)
        del self.entries[: max(0, len(self.entries) - keep)]
        return entry

    def after(self, since: int) -> list[dict[str, Any]]:
        """The entries newer than ``since``; all of them when ``since`` is beyond the last
        sequence number (the mailbox expired and started again)."""
        if since > self.last_seq:
            since = 0
        return [e for e in self.entries if e["seq"] > since]


def mailbox_key(user: str) -> str:
    return MAILBOX_KEY + user


# --- origins --------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None when ``value``
    is not an http(s) origin (a path, query or fragment is not part of an origin)."""
    try:
        url = URL(value.strip())
    except (ValueError, TypeError):
        return None
    scheme = (url.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or not url.host or url.user or url.password:
        return None
    if url.path not in ("", "/") or url.query_string or url.fragment:
        return None
    host = url.host.lower()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = url.explicit_port
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether ``origin`` (normalised) names the host the request was sent to. Only host and
    port are compared: behind a TLS-terminating proxy the request arrives as plain http."""
    if not host_header:
        return False
    try:
        requested = URL(f"http://{host_header.strip()}")
        given = URL(origin)
    except (ValueError, TypeError):
        return False
    if not requested.host or not given.host or requested.host.lower() != given.host.lower():
        return False
    port = requested.explicit_port
    if port is None:
        return given.explicit_port is None  # both on the scheme's default port
    return port == given.port


def origin_allowed(
    origin: str, host_header: str | None, allowed: Iterable[str], own: Iterable[str] = ()
) -> bool:
    """Whether a browser page of ``origin`` may use this chat: its own origin (the request's
    host, or ``own``, e.g. the configured public URL), a listed origin, or anything with
    ``*``. ``allowed`` and ``own`` hold normalised origins."""
    allowed = set(allowed)
    if "*" in allowed:
        return True
    normalized = normalize_origin(origin)
    if normalized is None:  # "null" (a sandboxed frame, a file://) or garbage
        return False
    return normalized in allowed or normalized in set(own) or same_origin(normalized, host_header)
