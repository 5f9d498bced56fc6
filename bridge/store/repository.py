"""Every query the bridge makes. Transactions are short and never span a network call.

Concurrency: a conversation is processed only by the holder of its lease
(``conversations.lease_owner``/``lease_until``); every write a worker makes is guarded by that
lease, so a process that lost its lease (it stalled past ``lease_until`` and another took
over) cannot commit. ``conversations.due_at`` says when a conversation next has work.

Each method's database work is a synchronous function over a Connection, run whole by
``Transactions`` (one thread hop per call on SQLite; see bridge/store/transactions.py). The
hot calls whose statements are each a transaction of their own (claim, commit, finish, one
event's intake, state_put) are programs instead (runners.Program): on PostgreSQL they run on
asyncpg itself (bridge/store/native.py), elsewhere inside a unit like the rest."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.columns import (
    conversation_columns,
    conversation_record,
    inbox_columns,
    inbox_record,
    outbox_columns,
    outbox_record,
)
from bridge.store.native import NativeStatements
from bridge.store.runners import (
    Compiled,
    CoreRunner,
    DirectRunner,
    Program,
    Query,
    Row,
    StatementRunner,
    run_program,
)
from bridge.store.schema import channel_state, conversations, inbox, leases, outbox
from bridge.store.statements import (
    PENDING,
    CommitShape,
    Guard,
    HotStatements,
    params,
)
from bridge.store.transactions import Transactions, transactions_for
from bridge.vocabulary import (
    Accepted,
    Claim,
    Conversation,
    DeliveryOutcome,
    InboundKind,
    InboxItem,
    InboxStats,
    InboxStatus,
    NewEvent,
    NewReply,
    OutboxAck,
    OutboxItem,
    OutboxStatus,
    Step,
    Work,
)

Clock = Callable[[], float]
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database could not be reached or refused the operation."""


class LeaseLost(Exception):
    """This process no longer holds the conversation's lease; its work must not be committed."""


def _insert(conn: Connection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _least(conn: Connection, column: Any, value: float) -> Any:
    # SQLite's two-argument MIN returns NULL if either is NULL (PostgreSQL's LEAST ignores
    # NULLs); every use wraps it in COALESCE, so both give the same answer.
    return (func.least if conn.dialect.name == "postgresql" else func.min)(column, value)


def _new_reply(conversation_id: int, new: NewReply, channel: str, now: float) -> dict[str, Any]:
    """A new outbox row's columns (statements.REPLY_COLUMNS and its conversation's id)."""
    return {
        "conversation_id": conversation_id,
        "inbox_id": new.inbox_id,
        "channel": channel,
        "address": dict(new.address) if new.address else None,
        "elements": new.elements,
        "parts_done": 0,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _created(outbox_id: int, row: Mapping[str, Any]) -> OutboxItem:
    return OutboxItem(
        outbox_id,
        row["conversation_id"],
        row["inbox_id"],
        row["channel"],
        row["address"],
        row["elements"],
        0,
        OutboxStatus.PENDING,
        0,
        row["next_attempt_at"],
        None,
    )


AckColumns = tuple[int, dict[str, Any]]  # an outbox id and the columns its ack writes


def _ack_shape(acks: Sequence[AckColumns]) -> tuple[frozenset[str], ...]:
    """The columns each ack writes: which one-statement write to build."""
    return tuple(frozenset(values) for _id, values in acks)


def _ack_params(acks: Sequence[AckColumns]) -> dict[str, Any]:
    """Parameters for the acks of a one-statement write (statements._ack_writes)."""
    params: dict[str, Any] = {}
    for n, (outbox_id, values) in enumerate(acks):
        params[f"p_a{n}_id"] = outbox_id
        params.update({f"p_a{n}_{name}": value for name, value in values.items()})
    return params


def _one_ack_per_reply(acks: Sequence[OutboxAck]) -> list[AckColumns]:
    """``acks`` as columns for a one-statement write, which may not change a row twice: a
    reply acked more than once gets all their values, the later ones winning (as when they
    are written one after the other)."""
    merged: dict[int, dict[str, Any]] = {}
    for ack in acks:
        merged.setdefault(ack.outbox_id, {}).update(outbox_columns(ack.outcome))
    return list(merged.items())


PURGE_BATCH = 1000


def _new_conversation(
    channel: str, key: str, requester_id: str, now: float, lease: tuple[str, float] | None
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


def _claimed(row: Row, lease: tuple[str, float] | None) -> bool:
    """Whether intake took this conversation's lease: the row holds exactly the lease it
    offered. A lease its owner held before ends at another time (Store._expiry)."""
    return lease is not None and (row["lease_owner"], row["lease_until"]) == lease


def _accepted_item(row: Mapping[str, Any], inbox_id: int) -> InboxItem:
    """An event just accepted as the inbox holds it (``row``: what the intake inserted)."""
    return inbox_record({**row, "id": inbox_id, "last_error": None, "finished_at": None})


def _state_row(channel: str, key: str, value: str, now: float) -> dict[str, Any]:
    """A channel state entry as put_state writes it."""
    return {"channel": channel, "key": key, "value": value, "updated_at": now}


def _new_event(channel: str, event: NewEvent, now: float) -> dict[str, Any]:
    """An inbox row as intake writes it, but for its conversation's id
    (statements.EVENT_COLUMNS)."""
    return {
        "channel": channel,
        "event_id": event.event_id,
        "kind": event.kind,
        "text": event.text,
        "address": dict(event.address) if event.address else None,
        "context": dict(event.context) if event.context else None,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


class _AlreadyQueued(Exception):
    """Raised inside a unit to undo it: units never end their transaction themselves (on
    SQLite several share one, see transactions.py)."""


class Store:
    def __init__(self, engine: AsyncEngine, clock: Clock = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._q = HotStatements(engine.dialect.name)
        self._tx: Transactions = transactions_for(engine)
        self._runner: Callable[[Connection], StatementRunner] = CoreRunner
        compiled: dict[Any, Compiled] = {}
        if not engine.echo:
            # With database.echo the statements go through SQLAlchemy, which logs them.
            self._runner = lambda conn: DirectRunner(conn, compiled)
        self._native = NativeStatements.for_engine(engine, compiled)
        self._lease_reading = 0.0

    def _expiry(self, now: float, ttl: float) -> float:
        """When a lease taken or renewed at ``now`` for ``ttl`` ends. The clock reading is
        made strictly later than this store's previous one, so that two leases it writes for
        the same length never share an expiry: intake recognises a lease it took by its
        expiry (_claimed), and one the same owner held before cannot look the same. Called
        on the event loop only (a read-modify-write)."""
        self._lease_reading = max(now, self._lease_reading + 1e-6)
        return self._lease_reading + ttl

    async def close(self) -> None:
        """Release the store's own connections (SQLite's; on PostgreSQL those it keeps for
        the hot statements, which later calls would take anew); the engine is the
        caller's."""
        if self._native is not None:
            await self._native.close()
        await self._tx.close()

    async def _hot(self, make: Callable[[], Program[T]]) -> T:
        """A program of hot statements (runners.Program), each its own transaction
        (Transactions.each_statement); on PostgreSQL on asyncpg itself (native.py)."""

        def unit(conn: Connection) -> T:
            return run_program(make(), self._runner(conn))

        def fallback() -> Awaitable[T]:
            return self._tx.each_statement(unit)

        if self._native is None:
            return await fallback()
        return await self._native.run(make, fallback)

    # --- intake ---------------------------------------------------------------------------

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
        without a claim of its own, one transaction fewer per message."""
        if not events and not state:
            return Accepted([], {})
        now = self.clock()
        lease = None
        if claim is not None and claim.limit > 0:
            lease = (claim.owner, self._expiry(now, claim.ttl))
        limit = claim.limit if claim is not None else 0

        def unit(conn: Connection) -> Accepted:
            accepted = Accepted([], {})
            if events:
                accepted = self._accept_batch(conn, channel, events, now, lease, limit)
            for key, value in (state or {}).items():
                self._runner(conn).rowcount(
                    self._q.put_state,
                    _state_row(channel, key, value, now),
                )
            return accepted

        try:
            if self._q.dialect == "postgresql" and len(events) == 1 and len(state or {}) <= 1:
                return await self._hot(
                    self._accept_in_one(channel, events[0], state or {}, now, lease)
                )
            return await self._tx.write(unit)
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"cannot store the events: {type(exc).__name__}") from exc

    def _accept_in_one(
        self,
        channel: str,
        event: NewEvent,
        state: Mapping[str, str],
        now: float,
        lease: tuple[str, float] | None,
    ) -> Callable[[], Program[Accepted]]:
        """PostgreSQL: one event (a webhook, a Slack event, a quiet poll with its offset) as
        one statement, its own transaction (HotStatements.accept_in_one)."""
        conversation = _new_conversation(
            channel, event.conversation_key, event.requester_id, now, lease
        )
        values = {f"p_c_{name}": value for name, value in conversation.items()}
        row = _new_event(channel, event, now)
        values.update({f"p_i_{name}": value for name, value in row.items()})
        for key, value in state.items():
            entry = _state_row(channel, key, value, now)
            values.update({f"p_s_{name}": value for name, value in entry.items()})
        stmt = self._q.accept_in_one(bool(state))

        def program() -> Program[Accepted]:
            got = yield Query("first", stmt, values)
            assert got is not None  # the upsert returns its row whatever happens
            cid = int(got["id"])
            accepted = got["inbox_id"] is not None
            claimed: dict[int, Work] = {}
            if _claimed(got, lease):
                inserted = {**row, "conversation_id": cid}
                head = _accepted_item(inserted, int(got["inbox_id"])) if accepted else None
                claimed[cid] = Work(conversation_record(got), head, [])
            return Accepted([(accepted, cid)], claimed)

        return program

    def _accept_batch(
        self,
        conn: Connection,
        channel: str,
        events: Sequence[NewEvent],
        now: float,
        lease: tuple[str, float] | None,
        limit: int,
    ) -> Accepted:
        keys = sorted({e.conversation_key for e in events})
        requester = {e.conversation_key: e.requester_id for e in events}
        q = self._q
        # In key order: two batches lock the rows they share in the same order, so they
        # never wait on each other in a cycle.
        created = [
            _new_conversation(channel, key, requester[key], now, lease if n < limit else None)
            for n, key in enumerate(keys)
        ]
        returned = self._insert_rows(conn, q.upsert_conversation, created)
        ids = {row["conversation_key"]: int(row["id"]) for row in returned}
        leased = {int(row["id"]): row for row in returned if _claimed(row, lease)}
        first: dict[str, int] = {}  # event id → index of its first occurrence in the batch
        for index, event in enumerate(events):
            first.setdefault(event.event_id, index)
        rows = [
            {**_new_event(channel, e, now), "conversation_id": ids[e.conversation_key]}
            for index, e in enumerate(events)
            if first[e.event_id] == index
        ]
        new_rows = self._insert_rows(conn, q.new_inbox_events, rows)
        inserted = {row["event_id"]: int(row["id"]) for row in new_rows}
        # An idle conversation's queue held nothing before: its head is its new event with
        # the lowest id (none if all were duplicates: the worker just releases it).
        heads: dict[int, InboxItem] = {}
        for row in rows:
            cid, inbox_id = row["conversation_id"], inserted.get(row["event_id"])
            known = heads.get(cid)
            if cid in leased and inbox_id is not None and (known is None or inbox_id < known.id):
                heads[cid] = _accepted_item(row, inbox_id)
        claimed = {
            cid: Work(conversation_record(conv), heads.get(cid), []) for cid, conv in leased.items()
        }
        results = [
            (first[e.event_id] == index and e.event_id in inserted, ids[e.conversation_key])
            for index, e in enumerate(events)
        ]
        return Accepted(results, claimed)

    def _insert_rows(
        self, conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]
    ) -> list[Row]:
        """An INSERT ... RETURNING of ``rows``: one row (an event on its own: a webhook, a
        Slack event, a poll at a quiet time) by the statement runner, several in SQLAlchemy's
        batched VALUES."""
        if len(rows) == 1:
            return self._runner(conn).all(stmt, rows[0])
        return list(conn.execute(stmt, rows).mappings())

    # --- leases on conversations -------------------------------------------------------------

    async def due_conversations(self, limit: int, owner: str | None = None) -> list[int]:
        """Conversations with work due and no live lease, oldest work first; with ``owner``,
        also those whose lease ``owner`` holds (the caller skips those it is working on:
        a lease intake took for a worker that never started is not left to expire)."""
        now = self.clock()
        c = conversations.c
        free = or_(c.lease_owner.is_(None), c.lease_until < now)
        if owner is not None:
            free = or_(free, c.lease_owner == owner)

        def unit(conn: Connection) -> list[int]:
            rows = conn.execute(
                select(c.id).where(c.due_at <= now, free).order_by(c.due_at).limit(limit)
            )
            return [r[0] for r in rows]

        return await self._tx.read(unit)

    async def next_due_at(self) -> float | None:
        def unit(conn: Connection) -> float | None:
            value = conn.execute(select(func.min(conversations.c.due_at))).scalar()
            return float(value) if value is not None else None

        return await self._tx.read(unit)

    async def claim(self, conversation_id: int, owner: str, ttl: float) -> Work | None:
        """Take the conversation's lease and read its work in one transaction; None when
        another process holds it."""
        now = self.clock()
        until = self._expiry(now, ttl)
        values = {"p_cid": conversation_id, "p_owner": owner, "p_now": now, "p_until": until}

        if self._q.claim_with_inbox_head is not None:
            return await self._hot(self._claim_in_one(values))

        def unit(conn: Connection) -> Work | None:
            sql = self._runner(conn)
            row = sql.first(self._q.claim, values)
            if row is None:
                return None
            return self._work(sql, conversation_record(row), bool(row["has_outbox"]))

        return await self._tx.write(unit)

    def _claim_in_one(self, values: Mapping[str, Any]) -> Callable[[], Program[Work | None]]:
        """PostgreSQL: the claim is one statement and its own transaction. Its inbox head is
        read with the statement's snapshot: an event accepted while the claim waited for the
        row's lock can be missing from it, and finish() then finds it (it locks the row
        before reading the heads). Pending replies, rare, are read in a second statement,
        under the lease just taken."""

        def program() -> Program[Work | None]:
            row = yield Query("first", self._q.claim_with_inbox_head, values)
            if row is None:
                return None
            conv = conversation_record(row)
            head = None
            if row["inbox_id"] is not None:
                head = inbox_record({name: row[f"inbox_{name}"] for name in InboxItem.__slots__})
            replies = (yield from self._replies(conv.id)) if row["has_outbox"] else []
            return Work(conv, head, replies)

        return program

    def _work(self, sql: StatementRunner, conv: Conversation, has_outbox: bool) -> Work:
        return run_program(self._work_program(conv, has_outbox), sql)

    def _work_program(self, conv: Conversation, has_outbox: bool) -> Program[Work]:
        in_row = yield Query("first", self._q.inbox_head, {"p_cid": conv.id})
        replies = (yield from self._replies(conv.id)) if has_outbox else []
        return Work(conv, inbox_record(in_row) if in_row else None, replies)

    def _replies(self, conversation_id: int) -> Program[list[OutboxItem]]:
        """The oldest pending replies of a conversation (up to OUTBOX_BATCH)."""
        rows = yield Query("all", self._q.outbox_heads, {"p_cid": conversation_id})
        return [outbox_record(r) for r in rows]

    async def renew(self, conversation_id: int, owner: str, ttl: float) -> bool:
        until = self._expiry(self.clock(), ttl)

        def unit(conn: Connection) -> bool:
            result = conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.lease_owner == owner)
                .values(lease_until=until)
            )
            return bool(result.rowcount)

        return await self._tx.write(unit)

    async def finish(
        self, conversation_id: int, owner: str, ttl: float, acks: Sequence[OutboxAck] = ()
    ) -> Work | None:
        """Record ``acks``; then, if the conversation has work due now, keep the lease and
        return it; otherwise release the lease and record when work is next due. None also
        when not held (and then the acks are not recorded)."""
        now = self.clock()
        acks = list(acks)  # the caller clears its list while this may still run
        q = self._q
        key = {"p_cid": conversation_id, "p_owner": owner}

        if q.dialect == "postgresql":
            return await self._hot(self._finish_in_one(key, acks, now, ttl))
        until = self._expiry(now, ttl)  # here, not on the store's thread: it keeps state

        def unit(conn: Connection) -> Work | None:
            sql = self._runner(conn)
            # SQLite, one writer at a time: the lease check and the queue heads in one read,
            # after the acks (recorded only if the lease is still held).
            self._record_acks(sql, acks, conversation_id, owner)
            row = sql.first(q.held_with_heads, {**key, "p_now": now})
            if row is None:
                return None
            heads = [float(row[k]) for k in ("inbox_next", "outbox_next") if row[k] is not None]
            due = min(heads) if heads else None
            if due is not None and due <= now:
                sql.rowcount(q.extend_lease, {"p_cid": conversation_id, "p_until": until})
                return self._work(sql, conversation_record(row), row["outbox_next"] is not None)
            sql.rowcount(q.release, {"p_cid": conversation_id, "p_due": due})
            return None

        return await self._tx.write(unit)

    def _finish_in_one(
        self, key: dict[str, Any], acks: Sequence[OutboxAck], now: float, ttl: float
    ) -> Callable[[], Program[Work | None]]:
        """PostgreSQL: finish as one statement, its own transaction (HotStatements.
        finish_in_one: how an event accepted meanwhile is not lost). The work of a lease
        kept is read in a second statement, under that lease."""
        ack_columns = _one_ack_per_reply(acks)
        values = {
            **key,
            **_ack_params(ack_columns),
            "p_now": now,
            "p_until": self._expiry(now, ttl),
        }
        stmt = self._q.finish_in_one(_ack_shape(ack_columns))

        def program() -> Program[Work | None]:
            row = yield Query("first", stmt, values)
            if row is None or not row["kept"]:
                return None
            conv = conversation_record(row)
            return (yield from self._work_program(conv, row["outbox_next"] is not None))

        return program

    async def release_all(self, owner: str) -> int:
        """Give up every lease this process holds (shutdown): others may take over at once."""

        def unit(conn: Connection) -> int:
            result = conn.execute(
                update(conversations)
                .where(conversations.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            return int(result.rowcount)

        return await self._tx.write(unit)

    def _record_acks(
        self,
        sql: StatementRunner,
        acks: Sequence[OutboxAck],
        conversation_id: int | None = None,
        owner: str | None = None,
    ) -> None:
        """Record delivery outcomes; with ``owner``, only while that owner holds the
        conversation (otherwise the caller checked that in this transaction already)."""
        guard: Guard = "none" if owner is None else "owner"
        for ack in acks:
            values = outbox_columns(ack.outcome)
            sql.rowcount(
                self._q.update_outbox(values, guard=guard),
                params(values, id=ack.outbox_id, cid=conversation_id, owner=owner),
            )

    # --- reading work -----------------------------------------------------------------------

    async def conversation(self, conversation_id: int) -> Conversation:
        def unit(conn: Connection) -> Conversation:
            row = conn.execute(
                select(conversations).where(conversations.c.id == conversation_id)
            ).one()
            return conversation_record(row)

        return await self._tx.read(unit)

    async def find_conversation(self, channel: str, key: str) -> Conversation | None:
        def unit(conn: Connection) -> Conversation | None:
            row = conn.execute(
                select(conversations).where(
                    conversations.c.channel == channel,
                    conversations.c.conversation_key == key,
                )
            ).first()
            return conversation_record(row) if row else None

        return await self._tx.read(unit)

    async def head_inbox(self, conversation_id: int) -> InboxItem | None:
        def unit(conn: Connection) -> InboxItem | None:
            row = conn.execute(self._q.inbox_head, {"p_cid": conversation_id}).first()
            return inbox_record(row) if row else None

        return await self._tx.read(unit)

    async def outbox_item(self, outbox_id: int) -> OutboxItem | None:
        def unit(conn: Connection) -> OutboxItem | None:
            row = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).first()
            return outbox_record(row) if row else None

        return await self._tx.read(unit)

    async def head_outbox(self, conversation_id: int) -> OutboxItem | None:
        def unit(conn: Connection) -> OutboxItem | None:
            row = conn.execute(self._q.outbox_heads, {"p_cid": conversation_id}).first()
            return outbox_record(row) if row else None

        return await self._tx.read(unit)

    # --- writing results (lease-guarded) ----------------------------------------------------

    async def commit(
        self,
        conversation_id: int,
        owner: str,
        step: Step,
        channel: str,
        acks: Sequence[OutboxAck] = (),
    ) -> list[OutboxItem]:
        """Apply a step and ``acks`` atomically; returns the new outbox rows. Raises
        LeaseLost."""
        now = self.clock()
        acks = list(acks)  # the caller clears its list while this may still run
        q = self._q

        # Several new replies keep the transaction: their ids are handed out in order.
        if q.dialect == "postgresql" and len(step.replies) <= 1:
            return await self._hot(
                self._commit_in_one(conversation_id, owner, step, channel, acks, now)
            )

        def unit(conn: Connection) -> list[OutboxItem]:
            sql = self._runner(conn)
            # The lease check is part of the update, so it costs no extra round trip.
            values = {"updated_at": now, **conversation_columns(step.conversation)}
            updated = sql.rowcount(
                q.update_held_conversation(values),
                params(values, cid=conversation_id, owner=owner, now=now),
            )
            if not updated:
                raise LeaseLost(f"conversation {conversation_id}: lease lost")
            self._record_acks(sql, acks)
            inbox_values = inbox_columns(step.outcome)
            if step.inbox_id is not None and inbox_values:
                sql.rowcount(q.update_inbox(inbox_values), params(inbox_values, id=step.inbox_id))
            created: list[OutboxItem] = []
            for new in step.replies:
                row = _new_reply(conversation_id, new, channel, now)
                inserted = sql.first(q.new_outbox, row)
                assert inserted is not None  # INSERT ... RETURNING id
                created.append(_created(int(inserted["id"]), row))
            return created

        return await self._tx.write(unit)

    def _commit_in_one(
        self,
        conversation_id: int,
        owner: str,
        step: Step,
        channel: str,
        acks: Sequence[OutboxAck],
        now: float,
    ) -> Callable[[], Program[list[OutboxItem]]]:
        """PostgreSQL: the commit as one statement (HotStatements.commit_in_one)."""
        ack_columns = _one_ack_per_reply(acks)
        conversation = {"updated_at": now, **conversation_columns(step.conversation)}
        inbox_values = inbox_columns(step.outcome)
        changes_inbox = step.inbox_id is not None and bool(inbox_values)
        shape = CommitShape(
            frozenset(conversation),
            frozenset(inbox_values) if changes_inbox else None,
            bool(step.replies),
            _ack_shape(ack_columns),
        )
        values: dict[str, Any] = {"p_cid": conversation_id, "p_owner": owner, "p_now": now}
        values.update({f"p_c_{name}": value for name, value in conversation.items()})
        if changes_inbox:
            values["p_i_id"] = step.inbox_id
            values.update({f"p_i_{name}": value for name, value in inbox_values.items()})
        values.update(_ack_params(ack_columns))
        reply = _new_reply(conversation_id, step.replies[0], channel, now) if step.replies else None
        if reply is not None:
            values.update({f"p_o_{name}": value for name, value in reply.items()})
        stmt = self._q.commit_in_one(shape)

        def program() -> Program[list[OutboxItem]]:
            row = yield Query("first", stmt, values)
            if row is None or not row["held"]:
                raise LeaseLost(f"conversation {conversation_id}: lease lost")
            return [] if reply is None else [_created(int(row["outbox_id"]), reply)]

        return program

    async def update_outbox(
        self, conversation_id: int, owner: str, outbox_id: int, outcome: DeliveryOutcome
    ) -> None:
        """Record one delivery's outcome at once, under the lease. Raises LeaseLost."""
        now = self.clock()
        values = outbox_columns(outcome)

        def unit(conn: Connection) -> None:
            result = conn.execute(
                self._q.update_outbox(values, guard="lease"),
                params(values, id=outbox_id, cid=conversation_id, owner=owner, now=now),
            )
            if not result.rowcount:
                raise LeaseLost(f"conversation {conversation_id}: lease lost")

        await self._tx.write(unit)

    async def fail_pending_outbox(self, conversation_id: int, owner: str, reason: str) -> int:
        """Give up every pending delivery of a conversation (the recipient is gone)."""
        now = self.clock()

        def unit(conn: Connection) -> int:
            held = (
                select(conversations.c.id)
                .where(
                    conversations.c.id == conversation_id,
                    conversations.c.lease_owner == owner,
                    conversations.c.lease_until >= now,
                )
                .exists()
            )
            result = conn.execute(
                update(outbox)
                .where(
                    outbox.c.conversation_id == conversation_id, outbox.c.status == PENDING, held
                )
                .values(status=OutboxStatus.FAILED, last_error=reason, finished_at=now)
            )
            return int(result.rowcount)

        return await self._tx.write(unit)

    # --- housekeeping ------------------------------------------------------------------------

    async def idle_conversations(self, idle_seconds: float, limit: int = 500) -> list[Conversation]:
        cutoff = self.clock() - idle_seconds

        def unit(conn: Connection) -> list[Conversation]:
            rows = conn.execute(
                select(conversations)
                .where(
                    conversations.c.state == "active",
                    conversations.c.last_activity_at < cutoff,
                )
                .limit(limit)
            )
            return [conversation_record(r) for r in rows]

        return await self._tx.read(unit)

    async def enqueue_internal(self, conv: Conversation, kind: InboundKind, event_id: str) -> bool:
        """An event the bridge itself raises (idle timeout) into a conversation's queue."""
        now = self.clock()

        def unit(conn: Connection) -> bool:
            # Row lock first, as in accept(), so a concurrent finish() cannot lose the wake-up.
            conn.execute(
                update(conversations)
                .where(conversations.c.id == conv.id)
                .values(due_at=func.coalesce(_least(conn, conversations.c.due_at, now), now))
            )
            inserted = conn.execute(
                _insert(conn, inbox)
                .values(
                    channel=conv.channel,
                    event_id=event_id,
                    conversation_id=conv.id,
                    kind=kind,
                    text=None,
                    address=dict(conv.address) if conv.address else None,
                    context=None,
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["channel", "event_id"])
                .returning(inbox.c.id)
            )
            if inserted.first() is None:
                raise _AlreadyQueued  # and the due_at update above is undone with the unit
            return True

        try:
            return await self._tx.write(unit)
        except _AlreadyQueued:
            return False

    async def purge(self, older_than_seconds: float) -> tuple[int, int]:
        """Delete finished inbox and outbox rows (message content) older than the age given,
        and adapters' temporary state (keys starting ``tmp:``, e.g. keyboards sent by earlier
        versions). Conversation mappings stay. Rows go PURGE_BATCH per transaction: on SQLite every
        message waits behind a store call, so none may take long."""
        cutoff = self.clock() - older_than_seconds

        def batch(table: Any) -> Callable[[Connection], int]:
            def unit(conn: Connection) -> int:
                # finished_at is indexed; pending rows have none, so they are never picked.
                old = (
                    select(table.c.id)
                    .where(table.c.finished_at < cutoff, table.c.status != PENDING)
                    .limit(PURGE_BATCH)
                )
                return int(conn.execute(delete(table).where(table.c.id.in_(old))).rowcount)

            return unit

        deleted = []
        for table in (inbox, outbox):
            total = 0
            while True:
                count = await self._tx.write(batch(table))
                total += count
                if count < PURGE_BATCH:
                    break
            deleted.append(total)

        def temporary_state(conn: Connection) -> None:
            conn.execute(
                delete(channel_state).where(
                    channel_state.c.key.like("tmp:%"), channel_state.c.updated_at < cutoff
                )
            )

        await self._tx.write(temporary_state)
        return deleted[0], deleted[1]

    async def stats(self) -> InboxStats:
        now = self.clock()

        def unit(conn: Connection) -> InboxStats:
            pending, oldest = conn.execute(
                select(func.count(), func.min(inbox.c.created_at)).where(inbox.c.status == PENDING)
            ).one()
            dead = conn.execute(
                select(func.count()).where(inbox.c.status == InboxStatus.DEAD)
            ).scalar_one()
            out_pending = conn.execute(
                select(func.count()).where(outbox.c.status == PENDING)
            ).scalar_one()
            return InboxStats(
                int(pending),
                max(0.0, now - oldest) if oldest else 0.0,
                int(dead),
                int(out_pending),
            )

        return await self._tx.read(unit)

    async def ping(self) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(select(1))

        await self._tx.read(unit)

    # --- dead letters (operator) ------------------------------------------------------------

    async def dead_letters(self, channel: str | None = None, limit: int = 100) -> list[InboxItem]:
        query = (
            select(inbox)
            .where(inbox.c.status == InboxStatus.DEAD)
            .order_by(inbox.c.id)
            .limit(limit)
        )
        if channel:
            query = query.where(inbox.c.channel == channel)

        def unit(conn: Connection) -> list[InboxItem]:
            return [inbox_record(r) for r in conn.execute(query)]

        return await self._tx.read(unit)

    async def inbox_item(self, inbox_id: int) -> InboxItem | None:
        def unit(conn: Connection) -> InboxItem | None:
            row = conn.execute(select(inbox).where(inbox.c.id == inbox_id)).first()
            return inbox_record(row) if row else None

        return await self._tx.read(unit)

    async def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Put dead letters back into their queues (all of them when ids is None)."""
        now = self.clock()
        cond = inbox.c.status == InboxStatus.DEAD
        if ids is not None:
            cond = and_(cond, inbox.c.id.in_(list(ids)))

        def unit(conn: Connection) -> int:
            rows = conn.execute(select(inbox.c.id, inbox.c.conversation_id).where(cond)).all()
            if not rows:
                return 0
            conn.execute(
                update(inbox)
                .where(inbox.c.id.in_([r[0] for r in rows]))
                .values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    finished_at=None,
                )
            )
            conn.execute(
                update(conversations)
                .where(conversations.c.id.in_({r[1] for r in rows}))
                .values(due_at=now)
            )
            return len(rows)

        return await self._tx.write(unit)

    # --- channel state and named leases -----------------------------------------------------

    async def state_get(self, channel: str, key: str) -> str | None:
        def unit(conn: Connection) -> str | None:
            value = conn.execute(
                select(channel_state.c.value).where(
                    channel_state.c.channel == channel, channel_state.c.key == key
                )
            ).scalar()
            return str(value) if value is not None else None

        return await self._tx.read(unit)

    async def state_put(self, channel: str, key: str, value: str) -> None:
        now = self.clock()

        def program() -> Program[None]:
            # An upsert: one statement, which may run again (a suggestion keyboard's
            # values are put with every reply that shows one).
            yield Query(
                "rowcount",
                self._q.put_state,
                _state_row(channel, key, value, now),
            )

        await self._hot(program)

    async def state_delete(self, channel: str, key: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(
                delete(channel_state).where(
                    channel_state.c.channel == channel, channel_state.c.key == key
                )
            )

        await self._tx.write(unit)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        now = self.clock()

        def unit(conn: Connection) -> bool:
            stmt = _insert(conn, leases).values(name=name, owner=owner, expires_at=now + ttl)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"owner": owner, "expires_at": now + ttl},
                    where=or_(leases.c.owner == owner, leases.c.expires_at < now),
                )
            )
            holder = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar()
            return bool(holder == owner)

        return await self._tx.write(unit)

    async def release_lease(self, name: str, owner: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))

        await self._tx.write(unit)
