"""What the core and the adapters agree on: inbound and outbound types, the adapter interface,
and the small services the core hands an adapter (intake, persisted state, leases).

An adapter turns platform updates into :class:`Inbound` events and hands them to
``intake.accept``; it acknowledges the platform only after that returns (the event is then
committed). The core calls ``deliver`` with the response elements to render and send.

Delivery errors, one tree::

    DeliveryError                 root
    ├── DeliveryRetryable         network trouble, 5xx, 429: try again (after .retry_after)
    ├── DeliveryRejected          the platform refuses this message for good: skip it
    └── RecipientGone             the user blocked the bot / the chat is gone: end the conversation
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel

from bridge.media.attachments import Attachment, AttachmentUnavailable, Download
from bridge.textchat.models import ResponseElement

# The kinds live with the other states and kinds; adapters take them from here.
from bridge.vocabulary import InboundKind as InboundKind

ContextScalar = str | int | float | bool
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One platform event, normalised.

    ``event_id`` is the deduplication key: stable across every redelivery of the same event
    (Telegram: the update id; Slack: team, channel and ts). ``conversation_key`` names the
    conversation on the platform (a DM, a user within a group, a thread). ``address`` is what
    ``deliver`` needs to answer there (JSON-serialisable). ``attachments``: what the user
    sent besides text (bridge/media/attachments.py); ``text`` is then the caption, if any, and
    the kind TEXT — the core fetches the bytes later, through :meth:`Adapter.open_attachment`."""

    event_id: str
    conversation_key: str
    user_id: str
    kind: InboundKind
    text: str = ""
    address: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, ContextScalar] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()


class AcceptResult(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply the core stored for delivery, read again by its ``Delivery.outbox_id``: an
    adapter resolves a chip pressed on a sent message from the reply itself (render it again,
    deterministically) instead of storing its own copy of the chips."""

    outbox_id: int
    address: Mapping[str, Any]
    elements: Sequence[ResponseElement]


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """A file a user uploaded to the bridge itself (:meth:`Intake.store_attachment`), as the
    store keeps it."""

    media_id: str
    name: str | None
    content_type: str
    size: int


class IntakeUnavailable(Exception):
    """The event could not be committed (the database is unavailable). Do not acknowledge it
    to the platform: let the platform send it again."""


class IntakeRefused(Exception):
    """The event can never be stored (the database refuses its values): answer the platform
    with a 4xx, or skip the update where there is no answer to give. Sending it again would
    fail the same way."""


#: Column limits the store enforces (bridge/store/schema.py; tests/test_intake_fuzz.py checks
#: they agree): longer values are refused at the adapter instead of by the database.
MAX_EVENT_ID_LENGTH = 255
MAX_CONVERSATION_KEY_LENGTH = 255
MAX_REQUESTER_ID_LENGTH = 255
#: attachments one event may carry (Telegram's album limit; more are a malformed event)
MAX_ATTACHMENTS = 10


def _unstorable(value: Any) -> bool:
    """Whether a string the database refuses (a NUL character: PostgreSQL; a lone surrogate,
    which JSON can carry: not UTF-8) hides in ``value`` or its nested keys and values."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not _encodable(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


#: Deepest nesting of lists and objects accepted in a JSON body at intake; platforms' payloads
#: are far shallower, and ``json`` would recurse as deep as a body asks.
MAX_JSON_DEPTH = 64


class UnreadableBody(ValueError):
    """A request body that is not what the route takes (answer 400); the message says why in
    one line."""


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest


def loads_object(body: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object from a request body; raises UnreadableBody for anything else (invalid
    UTF-8, not JSON, not an object, nested deeper than ``max_depth``)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise UnreadableBody("body is not UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnreadableBody("JSON nested too deeply") from None
    except ValueError:
        raise UnreadableBody("body is not JSON") from None
    if not isinstance(value, dict):
        raise UnreadableBody("JSON body is not an object")
    if json_depth(value) > max_depth:
        raise UnreadableBody("JSON nested too deeply")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inbound_problem(channel: str, event: Inbound) -> str | None:
    """Why the store would refuse ``event`` (NUL characters, lone surrogates, ids over the
    column limits), or None. The requester id is ``{channel}:{user_id}``."""
    if len(event.event_id) > MAX_EVENT_ID_LENGTH:
        return f"event id longer than {MAX_EVENT_ID_LENGTH} characters"
    if len(event.conversation_key) > MAX_CONVERSATION_KEY_LENGTH:
        return f"conversation key longer than {MAX_CONVERSATION_KEY_LENGTH} characters"
    if len(channel) + 1 + len(event.user_id) > MAX_REQUESTER_ID_LENGTH:
        return f"user id longer than {MAX_REQUESTER_ID_LENGTH - len(channel) - 1} characters"
    if len(event.attachments) > MAX_ATTACHMENTS:
        return f"more than {MAX_ATTACHMENTS} attachments"
    parts = (event.event_id, event.conversation_key, event.user_id, event.text)
    if _unstorable(parts) or _unstorable(event.address) or _unstorable(event.context):
        return "a NUL character or invalid Unicode in the event"
    if _unstorable([a.to_json() for a in event.attachments]):
        return "a NUL character or invalid Unicode in an attachment"
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Response elements for one conversation, to render and send in order.

    Rendering must be deterministic: the adapter renders ``elements`` into platform messages
    ("parts") and sends ``parts[parts_done:]``, awaiting ``progress(i, message_id)`` after part
    ``i`` (0-based) was accepted by the platform; the core records how far it got with the
    outcome, so a retry after a failure never repeats a sent part."""

    outbox_id: int
    conversation_key: str
    address: Mapping[str, Any]
    elements: Sequence[ResponseElement]
    parts_done: int
    progress: Callable[[int, str | None], Awaitable[None]]
    #: the W3C trace context of the delivery's span, for a channel that passes it on (the
    #: webhook channel's ``traceparent`` header); None when not traced
    traceparent: str | None = None


class DeliveryError(Exception):
    """Root of delivery failures."""


class DeliveryRetryable(DeliveryError):
    def __init__(self, message: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class DeliveryRejected(DeliveryError):
    """The platform refuses this message permanently (e.g. 400)."""


class RecipientGone(DeliveryError):
    """The user blocked the bot, left, or the chat was deleted."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where a conversation the bot starts goes: the conversation key and address the
    adapter's normalisation produces for that user's direct chat, so that the user's reply
    continues the same conversation. ``user_id`` as in Inbound (the requester id is
    ``{channel}:{user_id}``)."""

    conversation_key: str
    user_id: str
    address: Mapping[str, Any] = field(default_factory=dict)
    #: what the platform says about the user, as normalisation puts it into Inbound.context
    #: (platform, chatType, userName, ...); the operator's items are merged over it
    context: Mapping[str, ContextScalar] = field(default_factory=dict)


class RecipientUnknown(Exception):
    """The platform does not know the recipient, or the bot may not write first (a Telegram
    user who never started the bot, a Slack user id that does not exist)."""


class RecipientUnavailable(Exception):
    """The platform could not be asked now (network trouble, 5xx, 429): try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- a desk in a channel (human handover, bridge/handover/) ---------------------------------


class DeskAction(enum.StrEnum):
    """What an agent does in a desk room."""

    MESSAGE = "message"  # a reply for the user (a message in the handover's thread)
    TAKE = "take"  # the Take button
    RESOLVE = "resolve"  # the Resolve button, or "/resolve" in the thread


@dataclass(frozen=True, slots=True)
class DeskPost:
    """A message the core posts in an agents' room about one handover; the adapter renders
    it (``title`` in bold, ``fields`` as label: value lines, ``lines`` as a quoted
    transcript, ``text`` as the body) with a button per ``actions`` entry ("take",
    "resolve") whose value is ``handover``."""

    handover: str
    title: str = ""
    text: str = ""
    fields: Sequence[tuple[str, str]] = ()
    lines: Sequence[str] = ()
    actions: Sequence[DeskAction] = ()


@dataclass(frozen=True, slots=True)
class AgentAct:
    """Something an agent did in a desk room, as the adapter saw it. ``thread``: the
    message id of the handover's root post (the thread it happened in; for a button, the
    message the button is on); ``handover``: the button's value, "" for messages.
    ``event_id`` is stable across the platform's retries (Slack: team, channel, ts)."""

    room: str
    thread: str
    event_id: str
    action: DeskAction
    agent_id: str
    agent_name: str | None = None
    text: str = ""
    handover: str = ""


class DeskRefused(Exception):
    """The act cannot be taken (no such handover, or it has ended): tell the agent ``str()``."""


#: what a desk room's acts are handed to; returns once the act is stored. Raises
#: IntakeUnavailable (not stored: let the platform retry) or DeskRefused.
DeskListener = Callable[[AgentAct], Awaitable[AcceptResult]]


class ChannelState(Protocol):
    """Small persisted key-value state and leases, scoped to one channel. Keys starting
    with ``tmp:`` are deleted after ``engine.retention_days`` without an update."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, *, announce: bool = False) -> None:
        """Store ``value``; with ``announce``, wake every replica's watchers of ``key`` once
        it is stored."""
        ...

    def watch(self, key: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (on the event loop; it must not block) after every announced put of
        ``key``, by any replica; returns the unsubscribe. A wake-up, not a delivery: the
        watcher reads the entry itself, and keeps a slow re-read as the safety net."""
        ...

    async def delete(self, key: str) -> None: ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the named lease for ``ttl`` seconds; False while another owner holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> None: ...


class Intake(Protocol):
    """What an adapter is given on start."""

    @property
    def channel(self) -> str: ...

    @property
    def state(self) -> ChannelState: ...

    @property
    def instance_id(self) -> str:
        """This process's identity, for leases."""
        ...

    async def accept(self, event: Inbound) -> AcceptResult:
        """Deduplicate and commit. Raises IntakeUnavailable when nothing could be stored."""
        ...

    async def accept_many(
        self, events: Sequence[Inbound], state: Mapping[str, str] | None = None
    ) -> list[AcceptResult]:
        """accept() for a batch (one result per event, in order) in one transaction, which
        also writes ``state`` (e.g. a poller's offset). All or nothing: raises
        IntakeUnavailable when it could not be stored."""
        ...

    async def conversation_exists(self, conversation_key: str) -> bool:
        """Whether this channel has had a conversation under that key (e.g. a Slack thread
        the bot was mentioned in). Raises IntakeUnavailable when it cannot tell."""
        ...

    async def store_attachment(
        self, user_id: str, chunks: AsyncIterator[bytes], content_type: str, name: str | None
    ) -> str:
        """Store bytes a user uploaded to the bridge itself (the web chat) before the message
        that carries them: returns the media id, to report as an Attachment whose locator is
        ``bridge.media.attachments.STORED_PREFIX + id`` (only that user's events may). Raises
        AttachmentTooLarge past ``[media] max_bytes`` (nothing kept), IntakeUnavailable when
        the database cannot take it."""
        ...

    async def stored_upload(self, user_id: str, media_id: str) -> StoredUpload | None:
        """The upload ``media_id`` if ``user_id`` of this channel made it (and it is stored
        whole); None otherwise: a message may name only its own user's uploads. Raises
        IntakeUnavailable when it cannot tell."""
        ...

    async def stored_reply(self, outbox_id: int) -> StoredReply | None:
        """The reply this channel stored under ``outbox_id``; None when there is none (never
        this channel's, or purged after ``engine.retention_days``). Raises IntakeUnavailable
        when it cannot tell."""
        ...


class Adapter(abc.ABC):
    """One configured channel. Subclasses own their platform library."""

    def __init__(self, name: str) -> None:
        self.name = name

    def routes(self) -> Sequence[web.RouteDef]:
        """HTTP routes to serve on the bridge's server (webhooks); called before start. They
        are served for the whole life of the process: answer 503 while not started."""
        return ()

    @abc.abstractmethod
    async def start(self, intake: Intake) -> None:
        """Begin intake. Returns once running; raises if the channel cannot start."""

    async def stop_intake(self) -> None:  # noqa: B027 - optional hook
        """Stop taking new events (shutdown begins); ``deliver`` must keep working, because
        the engine drains work in flight after this. Idempotent."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop intake and release everything (after the drain). Idempotent."""

    @abc.abstractmethod
    async def deliver(self, delivery: Delivery) -> None:
        """Render and send; raises a DeliveryError subclass on failure."""

    def open_attachment(self, attachment: Attachment) -> AbstractAsyncContextManager[Download]:
        """The bytes of an attachment this adapter reported, by its ``locator``, fetched from
        the platform with the adapter's own credentials (used as ``async with``; the core
        bounds it with ``[media] download_timeout_seconds`` and stops reading past
        ``[media] max_bytes``). Raises AttachmentRetryable (try again later) or
        AttachmentUnavailable (gone, forbidden, not allowed)."""
        raise AttachmentUnavailable(f"channel {self.name} cannot fetch attachments")

    async def typing(self, address: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Show that the bot is thinking (refreshed by the core while Parloa answers)."""

    async def recipient(self, who: str) -> Recipient:
        """The conversation key and address of ``who``'s direct chat (a platform user or chat
        id), for a conversation the bot starts. Raises RecipientUnknown (never started the
        bot, no such user), RecipientGone (blocked the bot, deactivated) or
        RecipientUnavailable (ask again later)."""
        raise RecipientUnknown(f"channel {self.name} cannot start conversations")

    def host_desk(self, room: str, listener: DeskListener) -> None:
        """Keep the messages and button presses of the room ``room`` (an agents' channel) out
        of intake: hand agents' acts in it to ``listener`` instead, ignoring the bot's own
        posts. Called before start."""
        raise DeliveryRejected(f"channel {self.name} cannot host a handover desk")

    async def post_to_room(self, room: str, post: DeskPost, thread: str | None = None) -> str:
        """Post ``post`` in ``room`` (in ``thread`` when given); returns the platform's
        message id, the thread of a root post. Raises a DeliveryError."""
        raise DeliveryRejected(f"channel {self.name} cannot host a handover desk")

    async def update_in_room(self, room: str, message_id: str, post: DeskPost) -> None:
        """Replace a post made by post_to_room (its buttons, once taken or resolved)."""
        raise DeliveryRejected(f"channel {self.name} cannot host a handover desk")

    def status(self) -> Mapping[str, Any]:
        """Extra state for /readyz."""
        return {}


@dataclass(frozen=True, slots=True)
class AdapterServices:
    """What the core offers every adapter at construction."""

    public_url: str | None
    unsupported_text: str
    #: the bridge's SQLAlchemy AsyncEngine, only for platform libraries that keep tables of
    #: their own in our database (slack-sdk's installation store); created by migrations
    sql_engine: Any = None


class ChannelType(Protocol):
    """The entry of a channel type in the registry."""

    options_model: type[BaseModel]

    def create(self, name: str, options: Any, services: AdapterServices) -> Adapter: ...


class AdapterType(Generic[OptionsT]):
    """A registry entry built from an options model and the adapter's constructor;
    ``create`` accepts validated options or the raw mapping from the configuration."""

    def __init__(
        self,
        options_model: type[OptionsT],
        factory: Callable[[str, OptionsT, AdapterServices], Adapter],
    ) -> None:
        self.options_model: type[BaseModel] = options_model
        self._model = options_model
        self._factory = factory

    def create(self, name: str, options: Any, services: AdapterServices) -> Adapter:
        if not isinstance(options, self._model):
            options = self._model.model_validate(options)
        return self._factory(name, options, services)
