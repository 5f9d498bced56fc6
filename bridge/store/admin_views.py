"""What the admin API reads (bridge/admin/api.py): conversations a page at a time, one
conversation's timeline (its events with their Parloa calls and deliveries), a transcript in
batches, the conversations of dead letters, and the window of activity the statistics are
drawn from. Every call here only reads.

Every query is bounded and runs the same on SQLite and PostgreSQL:

* the conversation list is ordered by ``updated_at DESC, id DESC`` and continues after a
  keyset (the last row's pair), so a page costs the same however deep it is;
* a timeline holds the conversation's latest :data:`MAX_TIMELINE_EVENTS` events, and the
  queues are read by conversation (their ``(conversation_id, status, id)`` index);
* statistics count in SQL per channel and minute; the Parloa calls (kept as JSON per event)
  are read from at most :data:`MAX_STATS_EVENTS` events, the latest finished in the window
  and those still pending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, cast, exists, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bridge.store.columns import conversation_record, inbox_record
from bridge.store.core import StorePart
from bridge.store.schema import conversations, inbox, outbox
from bridge.vocabulary import (
    Conversation,
    ConversationState,
    InboxItem,
    InboxStatus,
    OutboxStatus,
    ParloaCall,
)

#: events a timeline shows: the conversation's latest
MAX_TIMELINE_EVENTS = 500
#: deliveries a timeline shows (of those events, and notices)
MAX_TIMELINE_DELIVERIES = 2000
#: notices (deliveries of no event) a transcript carries
MAX_TRANSCRIPT_NOTICES = 10_000
#: events whose Parloa calls the statistics read: the latest in the window
MAX_STATS_EVENTS = 10_000

Keyset = tuple[float, int]  # a conversation's (updated_at, id): where a page continues


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """Which conversations a list shows (None: any)."""

    channel: str | None = None
    state: ConversationState | None = None
    #: any of these requester ids (a user across the channels that may hold them)
    requester_ids: tuple[str, ...] | None = None
    #: with dead letters (True), without (False)
    dead: bool | None = None
    #: updated at or after this time
    since: float | None = None


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation as the operator sees it: its record, when it last changed, and the
    work it holds (``pending``: events not yet handled and deliveries not yet made)."""

    conversation: Conversation
    updated_at: float
    pending: int
    dead_letters: int

    @property
    def keyset(self) -> Keyset:
        return (self.updated_at, self.conversation.id)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One outbox row: a reply to ``inbox_id`` (None: a notice of the bridge's own)."""

    id: int
    inbox_id: int | None
    status: OutboxStatus
    attempts: int
    parts_done: int
    platform_message_id: str | None
    last_error: str | None
    created_at: float
    finished_at: float | None
    elements: list[Any]


@dataclass(frozen=True, slots=True)
class StartState:
    """What became of an event so far, for the outcome of a conversation the bot started:
    the event's status, its conversation's end reason, its replies' (status, last error)."""

    status: str
    end_reason: str | None
    replies: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    conversation: ConversationView
    events: list[InboxItem]  # oldest first
    deliveries: list[DeliveryView]  # oldest first: the events' replies and notices


@dataclass(frozen=True, slots=True)
class Activity:
    """The bridge's own tables over a window, for the statistics: counts per channel and
    minute (the minute as epoch seconds, a multiple of 60), and the Parloa calls made in the
    window with their event's channel."""

    inbound: list[tuple[str, int, int]]  # channel, minute, events received
    finished: list[tuple[str, int, InboxStatus, int]]  # channel, minute, done | dead, events
    calls: list[tuple[str, ParloaCall]]  # channel, call


_DELIVERY_COLUMNS = (
    outbox.c.id,
    outbox.c.inbox_id,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.parts_done,
    outbox.c.platform_message_id,
    outbox.c.last_error,
    outbox.c.created_at,
    outbox.c.finished_at,
    outbox.c.elements,
)


def _delivery(row: Any) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        inbox_id=row.inbox_id,
        status=OutboxStatus(row.status),
        attempts=row.attempts or 0,
        parts_done=row.parts_done or 0,
        platform_message_id=row.platform_message_id,
        last_error=row.last_error,
        created_at=row.created_at,
        finished_at=row.finished_at,
        elements=list(row.elements or []),
    )


def _minute(conn: Connection, column: Any) -> ColumnElement[int]:
    """The epoch minute (seconds, a multiple of 60) of a time column: SQLite's cast truncates
    (times are positive), PostgreSQL's rounds, hence floor there."""
    if conn.dialect.name == "postgresql":
        return cast(func.floor(column / 60), BigInteger) * 60
    return cast(column / 60, Integer) * 60


def _work_counts(conn: Connection, ids: Sequence[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Per conversation: its pending events and deliveries, and its dead letters."""
    pending: dict[int, int] = dict.fromkeys(ids, 0)
    dead: dict[int, int] = dict.fromkeys(ids, 0)
    if not ids:
        return pending, dead
    rows = conn.execute(
        select(inbox.c.conversation_id, inbox.c.status, func.count())
        .where(
            inbox.c.conversation_id.in_(ids),
            inbox.c.status.in_([InboxStatus.PENDING, InboxStatus.DEAD]),
        )
        .group_by(inbox.c.conversation_id, inbox.c.status)
    )
    for conversation_id, status, count in rows:
        target = dead if status == InboxStatus.DEAD else pending
        target[conversation_id] += int(count)
    rows = conn.execute(
        select(outbox.c.conversation_id, func.count())
        .where(outbox.c.conversation_id.in_(ids), outbox.c.status == OutboxStatus.PENDING)
        .group_by(outbox.c.conversation_id)
    )
    for conversation_id, count in rows:
        pending[conversation_id] += int(count)
    return pending, dead


def _views(conn: Connection, rows: Sequence[Any]) -> list[ConversationView]:
    pending, dead = _work_counts(conn, [row.id for row in rows])
    return [
        ConversationView(
            conversation=conversation_record(row),
            updated_at=row.updated_at,
            pending=pending[row.id],
            dead_letters=dead[row.id],
        )
        for row in rows
    ]


def _has_dead_letters() -> ColumnElement[bool]:
    return exists().where(
        inbox.c.conversation_id == conversations.c.id, inbox.c.status == InboxStatus.DEAD
    )


class AdminViews(StorePart):
    """The admin API's reads."""

    async def conversation_page(
        self, which: ConversationFilter, limit: int, after: Keyset | None = None
    ) -> list[ConversationView]:
        """Up to ``limit`` conversations, most recently updated first, after ``after``."""
        c = conversations.c
        query = select(conversations).order_by(c.updated_at.desc(), c.id.desc()).limit(limit)
        if which.channel is not None:
            query = query.where(c.channel == which.channel)
        if which.state is not None:
            query = query.where(c.state == which.state)
        if which.requester_ids is not None:
            query = query.where(c.requester_id.in_(which.requester_ids))
        if which.dead is not None:
            query = query.where(_has_dead_letters() if which.dead else ~_has_dead_letters())
        if which.since is not None:
            query = query.where(c.updated_at >= which.since)
        if after is not None:
            updated_at, last_id = after
            query = query.where(
                or_(c.updated_at < updated_at, and_(c.updated_at == updated_at, c.id < last_id))
            )

        def unit(conn: Connection) -> list[ConversationView]:
            return _views(conn, conn.execute(query).all())

        return await self._core.tx.read(unit)

    async def timeline(self, conversation_id: int) -> Timeline | None:
        """The conversation with its latest events and their deliveries; None when unknown."""

        def unit(conn: Connection) -> Timeline | None:
            row = conn.execute(
                select(conversations).where(conversations.c.id == conversation_id)
            ).first()
            if row is None:
                return None
            events = [
                inbox_record(r)
                for r in conn.execute(
                    select(inbox)
                    .where(inbox.c.conversation_id == conversation_id)
                    .order_by(inbox.c.id.desc())
                    .limit(MAX_TIMELINE_EVENTS)
                )
            ]
            events.reverse()
            query = select(*_DELIVERY_COLUMNS).where(outbox.c.conversation_id == conversation_id)
            if events:
                # The replies of older events than those shown stay out, as those events do.
                query = query.where(
                    or_(outbox.c.inbox_id.is_(None), outbox.c.inbox_id >= events[0].id)
                )
            deliveries = [
                _delivery(r)
                for r in conn.execute(
                    query.order_by(outbox.c.id.desc()).limit(MAX_TIMELINE_DELIVERIES)
                )
            ]
            deliveries.reverse()
            (view,) = _views(conn, [row])
            return Timeline(view, events, deliveries)

        return await self._core.tx.read(unit)

    async def transcript_batch(
        self, conversation_id: int, after_event: int, limit: int
    ) -> tuple[list[InboxItem], list[DeliveryView]]:
        """The conversation's next ``limit`` events after event id ``after_event`` (oldest
        first), with their replies (oldest first)."""

        def unit(conn: Connection) -> tuple[list[InboxItem], list[DeliveryView]]:
            events = [
                inbox_record(r)
                for r in conn.execute(
                    select(inbox)
                    .where(inbox.c.conversation_id == conversation_id, inbox.c.id > after_event)
                    .order_by(inbox.c.id)
                    .limit(limit)
                )
            ]
            if not events:
                return [], []
            replies = [
                _delivery(r)
                for r in conn.execute(
                    select(*_DELIVERY_COLUMNS)
                    .where(
                        outbox.c.conversation_id == conversation_id,
                        outbox.c.inbox_id.in_([e.id for e in events]),
                    )
                    .order_by(outbox.c.id)
                )
            ]
            return events, replies

        return await self._core.tx.read(unit)

    async def notices(self, conversation_id: int) -> list[DeliveryView]:
        """The conversation's deliveries of no event (the bridge's own notices), oldest
        first, up to :data:`MAX_TRANSCRIPT_NOTICES`."""
        query = (
            select(*_DELIVERY_COLUMNS)
            .where(outbox.c.conversation_id == conversation_id, outbox.c.inbox_id.is_(None))
            .order_by(outbox.c.id)
            .limit(MAX_TRANSCRIPT_NOTICES)
        )

        def unit(conn: Connection) -> list[DeliveryView]:
            return [_delivery(r) for r in conn.execute(query)]

        return await self._core.tx.read(unit)

    async def conversation_exists(self, conversation_id: int) -> bool:
        query = select(conversations.c.id).where(conversations.c.id == conversation_id)

        def unit(conn: Connection) -> bool:
            return conn.execute(query).first() is not None

        return await self._core.tx.read(unit)

    async def deliveries_of(self, events: Sequence[InboxItem]) -> list[DeliveryView]:
        """The replies of ``events`` (any conversations), oldest first."""
        if not events:
            return []
        query = (
            select(*_DELIVERY_COLUMNS)
            .where(
                outbox.c.conversation_id.in_({e.conversation_id for e in events}),
                outbox.c.inbox_id.in_([e.id for e in events]),
            )
            .order_by(outbox.c.id)
        )

        def unit(conn: Connection) -> list[DeliveryView]:
            return [_delivery(r) for r in conn.execute(query)]

        return await self._core.tx.read(unit)

    async def dead_letter_conversations(self, ids: Sequence[int] | None = None) -> set[int]:
        """The conversations holding the dead letters ``ids`` (all dead letters: None)."""
        query = select(inbox.c.conversation_id).where(inbox.c.status == InboxStatus.DEAD).distinct()
        if ids is not None:
            query = query.where(inbox.c.id.in_(list(ids)))

        def unit(conn: Connection) -> set[int]:
            return {row[0] for row in conn.execute(query)}

        return await self._core.tx.read(unit)

    async def activity(self, since: float) -> Activity:
        """What happened from ``since`` on (see :class:`Activity`)."""

        def unit(conn: Connection) -> Activity:
            received = _minute(conn, inbox.c.created_at)
            inbound = [
                (channel, int(minute), int(count))
                for channel, minute, count in conn.execute(
                    select(inbox.c.channel, received, func.count())
                    .where(inbox.c.created_at >= since)
                    .group_by(inbox.c.channel, received)
                )
            ]
            ended = _minute(conn, inbox.c.finished_at)
            finished = [
                (channel, int(minute), InboxStatus(status), int(count))
                for channel, minute, status, count in conn.execute(
                    select(inbox.c.channel, ended, inbox.c.status, func.count())
                    .where(
                        inbox.c.finished_at >= since,
                        inbox.c.status.in_([InboxStatus.DONE, InboxStatus.DEAD]),
                    )
                    .group_by(inbox.c.channel, ended, inbox.c.status)
                )
            ]
            # The calls of events finished in the window (by the finished_at index), and of
            # those still being retried, whose calls so far are stored with each attempt.
            calls_of = select(inbox.c.channel, inbox.c.parloa_calls)
            finished_calls = calls_of.where(inbox.c.finished_at >= since).order_by(
                inbox.c.finished_at.desc()
            )
            pending_calls = calls_of.where(inbox.c.status == InboxStatus.PENDING).order_by(
                inbox.c.id.desc()
            )
            rows = [
                *conn.execute(finished_calls.limit(MAX_STATS_EVENTS)),
                *conn.execute(pending_calls.limit(MAX_STATS_EVENTS)),
            ]
            calls = [
                (channel, call)
                for channel, stored in rows
                for call in map(ParloaCall.from_json, stored or ())
                if call.at >= since
            ]
            return Activity(inbound, finished, calls)

        return await self._core.tx.read(unit)

    async def event_conversation(self, channel: str, event_id: str) -> int | None:
        """The conversation an inbound event was stored in (None: never, or purged)."""

        def unit(conn: Connection) -> int | None:
            found = conn.execute(
                select(inbox.c.conversation_id).where(
                    inbox.c.channel == channel, inbox.c.event_id == event_id
                )
            ).scalar()
            return None if found is None else int(found)

        return await self._core.tx.read(unit)

    async def start_states(self, channel: str, event_ids: Sequence[str]) -> dict[str, StartState]:
        """Per event id of ``channel`` still stored: its :class:`StartState`."""

        def unit(conn: Connection) -> dict[str, StartState]:
            events = conn.execute(
                select(
                    inbox.c.id,
                    inbox.c.event_id,
                    inbox.c.conversation_id,
                    inbox.c.status,
                    conversations.c.end_reason,
                )
                .join(conversations, conversations.c.id == inbox.c.conversation_id)
                .where(inbox.c.channel == channel, inbox.c.event_id.in_(list(event_ids)))
            ).all()
            replies: dict[int, list[tuple[str, str | None]]] = {}
            if events:
                # By conversation first: the outbox is indexed by it, not by the event.
                rows = conn.execute(
                    select(outbox.c.inbox_id, outbox.c.status, outbox.c.last_error).where(
                        outbox.c.conversation_id.in_({int(e.conversation_id) for e in events}),
                        outbox.c.inbox_id.in_([int(e.id) for e in events]),
                    )
                )
                for reply in rows:
                    replies.setdefault(int(reply.inbox_id), []).append(
                        (reply.status, reply.last_error)
                    )
            return {
                e.event_id: StartState(e.status, e.end_reason, tuple(replies.get(int(e.id), ())))
                for e in events
            }

        return await self._core.tx.read(unit)
