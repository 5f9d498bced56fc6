"""Intake: inbound events stored once (deduplicated by channel and event id) in their
conversation's queue, the conversation created or made due, and the lease of an idle one
taken on the way (so its worker starts without a claim of its own).

A batch is one unit of work on both databases (``accept_batch``); on PostgreSQL one event is
one statement instead (``accept_in_one``): the dialect's hot path picks (hotpath.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.engine import Connection

from bridge.store.channel_state import state_row
from bridge.store.columns import conversation_record, inbox_record
from bridge.store.core import AcceptRequest, Lease, StoreCore, StorePart
from bridge.store.runners import Program, Query, Row
from bridge.store.schema import conversations, inbox
from bridge.store.statements import PENDING, work_notice
from bridge.vocabulary import (
    Accepted,
    Claim,
    Conversation,
    InboundKind,
    InboxItem,
    NewEvent,
    Work,
)


class Intake(StorePart):
    """Stores inbound events (the engine's intake) and finds conversations by key."""

    async def accept(
        self,
        *,
        channel: str,
        event_id: str,
        conversation_key: str,
        requester_id: str,
        kind: InboundKind,
        text: str | None,
        address: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
    ) -> tuple[bool, int]:
        """Deduplicate and persist one inbound event. Returns (accepted, conversation id)."""
        (result,) = await self.accept_many(
            channel,
            [NewEvent(event_id, conversation_key, requester_id, kind, text, address, context)],
        )
        return result

    async def accept_many(
        self,
        channel: str,
        events: Sequence[NewEvent],
        state: Mapping[str, str] | None = None,
    ) -> list[tuple[bool, int]]:
        """accept() for a batch in one transaction, plus channel state written with it (a
        poller's offset: confirmed only together with what it confirms). Returns
        (accepted, conversation id) per event, in order; a repeated event id is a duplicate."""
        return (await self.accept_claiming(channel, events, state, None)).results

    async def accept_claiming(
        self,
        channel: str,
        events: Sequence[NewEvent],
        state: Mapping[str, str] | None,
        claim: Claim | None,
    ) -> Accepted:
        """accept_many(), and with ``claim`` also take the lease of the idle conversations
        among the events' (no lease held, no work due; at most ``claim.limit`` of them, in
        key order) in the same statements: the worker then starts on the returned work
        without a claim of its own, one transaction fewer per message (docs/benchmarks.md,
        "Lease at intake")."""
        if not events and not state:
            return Accepted([], {})
        now = self._core.clock()
        lease = None
        if claim is not None and claim.limit > 0:
            lease = (claim.owner, self._core.expiry(now, claim.ttl))
        limit = claim.limit if claim is not None else 0
        return await self._path.accept(
            AcceptRequest(channel, events, state or {}, now, lease, limit)
        )

    async def find_conversation(self, channel: str, key: str) -> Conversation | None:
        def unit(conn: Connection) -> Conversation | None:
            row = conn.execute(
                select(conversations).where(
                    conversations.c.channel == channel,
                    conversations.c.conversation_key == key,
                )
            ).first()
            return conversation_record(row) if row else None

        return await self._core.tx.read(unit)

    async def pending_after(
        self, conversation_id: int, after_id: int, limit: int
    ) -> list[InboxItem]:
        """The conversation's pending events queued after ``after_id``, oldest first (the
        rest of a platform's album, merged into its first event)."""

        def unit(conn: Connection) -> list[InboxItem]:
            rows = conn.execute(
                select(inbox)
                .where(
                    inbox.c.conversation_id == conversation_id,
                    inbox.c.status == PENDING,
                    inbox.c.id > after_id,
                )
                .order_by(inbox.c.id)
                .limit(limit)
            )
            return [inbox_record(row) for row in rows]

        return await self._core.tx.read(unit)


def accept_batch(core: StoreCore, r: AcceptRequest) -> Callable[[Connection], Accepted]:
    """A batch of events and channel state as one unit of work (any number of each)."""

    def unit(conn: Connection) -> Accepted:
        accepted = Accepted([], {})
        if r.events:
            accepted = _accept_events(core, conn, r)
        for key, value in r.state.items():
            core.runner(conn).rowcount(core.q.put_state, state_row(r.channel, key, value, r.now))
        return accepted

    return unit


def _accept_events(core: StoreCore, conn: Connection, r: AcceptRequest) -> Accepted:
    channel, events, now, lease = r.channel, r.events, r.now, r.lease
    keys = sorted({e.conversation_key for e in events})
    requester = {e.conversation_key: e.requester_id for e in events}
    q = core.q
    # In key order: two batches lock the rows they share in the same order, so they
    # never wait on each other in a cycle.
    created = [
        new_conversation(channel, key, requester[key], now, lease if n < r.limit else None)
        for n, key in enumerate(keys)
    ]
    returned = _insert_rows(core, conn, q.upsert_conversation, created)
    ids = {row["conversation_key"]: int(row["id"]) for row in returned}
    leased = {int(row["id"]): row for row in returned if claimed(row, lease)}
    first: dict[str, int] = {}  # event id → index of its first occurrence in the batch
    for index, event in enumerate(events):
        first.setdefault(event.event_id, index)
    rows = [
        {**new_event(channel, e, now), "conversation_id": ids[e.conversation_key]}
        for index, e in enumerate(events)
        if first[e.event_id] == index
    ]
    new_rows = _insert_rows(core, conn, q.new_inbox_events, rows)
    inserted = {row["event_id"]: int(row["id"]) for row in new_rows}
    # An idle conversation's queue held nothing before: its head is its new event with
    # the lowest id (none if all were duplicates: the worker just releases it).
    heads: dict[int, InboxItem] = {}
    for row in rows:
        cid, inbox_id = row["conversation_id"], inserted.get(row["event_id"])
        known = heads.get(cid)
        if cid in leased and inbox_id is not None and (known is None or inbox_id < known.id):
            heads[cid] = accepted_item(row, inbox_id)
    claimed_work = {
        cid: Work(conversation_record(conv), heads.get(cid), []) for cid, conv in leased.items()
    }
    results = [
        (first[e.event_id] == index and e.event_id in inserted, ids[e.conversation_key])
        for index, e in enumerate(events)
    ]
    if conn.dialect.name == "postgresql":
        _wake_holders(conn, returned, rows, inserted, lease)
    return Accepted(results, claimed_work)


def _wake_holders(
    conn: Connection,
    conversations_: Sequence[Row],
    rows: Sequence[Mapping[str, Any]],
    inserted: Mapping[str, int],
    lease: Lease | None,
) -> None:
    """PostgreSQL: in the batch's transaction (delivered at its commit), wake the holder of
    each conversation with a new event that this intake did not lease (if free: every
    replica), as accept_in_one's statement does for one event."""
    offered = lease[0] if lease is not None else None
    owners = {int(row["id"]): row["lease_owner"] for row in conversations_}
    fresh = sorted({int(r["conversation_id"]) for r in rows if r["event_id"] in inserted})
    for cid in fresh:
        if owners[cid] != offered:  # as IS DISTINCT FROM: a free one this intake left, too
            conn.execute(select(work_notice(literal(owners[cid]), literal(cid))))


def _insert_rows(
    core: StoreCore, conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]
) -> list[Row]:
    """An INSERT ... RETURNING of ``rows``: one row (an event on its own: a webhook, a
    Slack event, a poll at a quiet time) by the statement runner, several in SQLAlchemy's
    batched VALUES."""
    if len(rows) == 1:
        return core.runner(conn).all(stmt, rows[0])
    return list(conn.execute(stmt, rows).mappings())


def accept_in_one(core: StoreCore, r: AcceptRequest) -> Callable[[], Program[Accepted]]:
    """PostgreSQL: one event (a webhook, a Slack event, a quiet poll with its offset) and at
    most one state entry as one statement, its own transaction (HotStatements.accept_in_one)."""
    channel, event, now, lease = r.channel, r.events[0], r.now, r.lease
    conversation = new_conversation(channel, event.conversation_key, event.requester_id, now, lease)
    values = {f"p_c_{name}": value for name, value in conversation.items()}
    row = new_event(channel, event, now)
    values.update({f"p_i_{name}": value for name, value in row.items()})
    for key, value in r.state.items():
        entry = state_row(channel, key, value, now)
        values.update({f"p_s_{name}": value for name, value in entry.items()})
    stmt = core.q.accept_in_one(bool(r.state))

    def program() -> Program[Accepted]:
        got = yield Query("first", stmt, values)
        assert got is not None  # the upsert returns its row whatever happens
        cid = int(got["id"])
        accepted = got["inbox_id"] is not None
        claimed_work: dict[int, Work] = {}
        if claimed(got, lease):
            inserted = {**row, "conversation_id": cid}
            head = accepted_item(inserted, int(got["inbox_id"])) if accepted else None
            claimed_work[cid] = Work(conversation_record(got), head, [])
        return Accepted([(accepted, cid)], claimed_work)

    return program


def new_conversation(
    channel: str, key: str, requester_id: str, now: float, lease: Lease | None
) -> dict[str, Any]:
    """A conversation as intake creates it: due at once, leased to ``lease`` (owner, until)
    if given (statements.CONVERSATION_COLUMNS)."""
    owner, until = lease or (None, None)
    return {
        "channel": channel,
        "conversation_key": key,
        "requester_id": requester_id,
        "state": "new",
        "created_at": now,
        "updated_at": now,
        "last_activity_at": now,
        "due_at": now,
        "lease_owner": owner,
        "lease_until": until,
    }


def new_event(channel: str, event: NewEvent, now: float) -> dict[str, Any]:
    """An inbox row as intake writes it, but for its conversation's id
    (statements.EVENT_COLUMNS)."""
    return {
        "channel": channel,
        "event_id": event.event_id,
        "kind": event.kind,
        "text": event.text,
        "address": dict(event.address) if event.address else None,
        "context": dict(event.context) if event.context else None,
        "attachments": [a.to_json() for a in event.attachments] if event.attachments else None,
        "traceparent": event.traceparent,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def claimed(row: Row, lease: Lease | None) -> bool:
    """Whether intake took this conversation's lease: the row holds exactly the lease it
    offered. A lease its owner held before ends at another time (StoreCore.expiry)."""
    return lease is not None and (row["lease_owner"], row["lease_until"]) == lease


def accepted_item(row: Mapping[str, Any], inbox_id: int) -> InboxItem:
    """An event just accepted as the inbox holds it (``row``: what the intake inserted)."""
    fresh = {"id": inbox_id, "last_error": None, "finished_at": None, "parloa_calls": None}
    return inbox_record({**row, **fresh})
