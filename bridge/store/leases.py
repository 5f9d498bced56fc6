"""The conversations' leases and the work they read.

A conversation is processed only by the holder of its lease (``conversations.lease_owner``
and ``lease_until``); ``conversations.due_at`` says when it next has work. A worker claims
the lease with the heads of the conversation's queues (its work), renews it while it works,
and finishes: its acks recorded, the lease kept with the work due now, or released with the
time work is next due. On PostgreSQL the claim and the finish are one statement each
(``claim_in_one``, ``finish_in_one``); on SQLite a unit each: the hot path picks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from bridge.store.columns import conversation_record, inbox_record, outbox_record
from bridge.store.commits import ack_params, ack_shape, one_ack_per_reply, record_acks
from bridge.store.core import ClaimRequest, FinishRequest, StoreCore, StorePart
from bridge.store.runners import Program, Query, StatementRunner, run_program
from bridge.store.schema import conversations
from bridge.vocabulary import Conversation, InboxItem, OutboxAck, OutboxItem, Work


class Leases(StorePart):
    """Which conversations have work, and their leases: claim, renew, finish, release."""

    async def due_conversations(self, limit: int, owner: str | None = None) -> list[int]:
        """Conversations with work due and no live lease, oldest work first; with ``owner``,
        also those whose lease ``owner`` holds (the caller skips those it is working on:
        a lease intake took for a worker that never started is not left to expire)."""
        now = self._core.clock()
        c = conversations.c
        free = or_(c.lease_owner.is_(None), c.lease_until < now)
        if owner is not None:
            free = or_(free, c.lease_owner == owner)

        def unit(conn: Connection) -> list[int]:
            rows = conn.execute(
                select(c.id).where(c.due_at <= now, free).order_by(c.due_at).limit(limit)
            )
            return [r[0] for r in rows]

        return await self._core.tx.read(unit)

    async def claim(self, conversation_id: int, owner: str, ttl: float) -> Work | None:
        """Take the conversation's lease and read its work in one transaction; None when
        another process holds it."""
        now = self._core.clock()
        until = self._core.expiry(now, ttl)
        return await self._path.claim(ClaimRequest(conversation_id, owner, now, until))

    async def renew(self, conversation_id: int, owner: str, ttl: float) -> bool:
        until = self._core.expiry(self._core.clock(), ttl)

        def unit(conn: Connection) -> bool:
            result = conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.lease_owner == owner)
                .values(lease_until=until)
            )
            return bool(result.rowcount)

        return await self._core.tx.write(unit)

    async def finish(
        self, conversation_id: int, owner: str, ttl: float, acks: Sequence[OutboxAck] = ()
    ) -> Work | None:
        """Record ``acks``; then, if the conversation has work due now, keep the lease and
        return it; otherwise release the lease and record when work is next due. None also
        when not held (and then the acks are not recorded)."""
        now = self._core.clock()
        acks = list(acks)  # the caller clears its list while this may still run
        # Here, not on SQLite's store thread: the lease clock keeps state.
        until = self._core.expiry(now, ttl)
        return await self._path.finish(FinishRequest(conversation_id, owner, now, acks, until))

    async def release_all(self, owner: str) -> int:
        """Give up every lease this process holds (shutdown): others may take over at once."""

        def unit(conn: Connection) -> int:
            result = conn.execute(
                update(conversations)
                .where(conversations.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            return int(result.rowcount)

        return await self._core.tx.write(unit)


def claim_values(r: ClaimRequest) -> dict[str, Any]:
    """The claim statements' parameters."""
    return {"p_cid": r.conversation_id, "p_owner": r.owner, "p_now": r.now, "p_until": r.until}


def claim_unit(core: StoreCore, r: ClaimRequest) -> Callable[[Connection], Work | None]:
    """The claim as a unit of work: the lease taken, then the work read under it."""
    values = claim_values(r)

    def unit(conn: Connection) -> Work | None:
        sql = core.runner(conn)
        row = sql.first(core.q.claim, values)
        if row is None:
            return None
        return _work(core, sql, conversation_record(row), bool(row["has_outbox"]))

    return unit


def claim_in_one(core: StoreCore, r: ClaimRequest) -> Callable[[], Program[Work | None]]:
    """PostgreSQL: the claim is one statement and its own transaction. Its inbox head is
    read with the statement's snapshot: an event accepted while the claim waited for the
    row's lock can be missing from it, and finish() then finds it (it locks the row
    before reading the heads). Pending replies, rare, are read in a second statement,
    under the lease just taken."""
    stmt = core.q.claim_with_inbox_head
    values = claim_values(r)

    def program() -> Program[Work | None]:
        row = yield Query("first", stmt, values)
        if row is None:
            return None
        conv = conversation_record(row)
        head = None
        if row["inbox_id"] is not None:
            head = inbox_record({name: row[f"inbox_{name}"] for name in InboxItem.__slots__})
        replies = (yield from _replies(core, conv.id)) if row["has_outbox"] else []
        return Work(conv, head, replies)

    return program


def finish_unit(core: StoreCore, r: FinishRequest) -> Callable[[Connection], Work | None]:
    """SQLite, one writer at a time: the acks (recorded only while the lease is held), then
    the lease check and the queues' heads in one read, then the lease kept or released."""
    q = core.q
    cid, now = r.conversation_id, r.now
    held = {"p_cid": cid, "p_owner": r.owner, "p_now": now}

    def unit(conn: Connection) -> Work | None:
        sql = core.runner(conn)
        record_acks(q, sql, r.acks, cid, r.owner)
        row = sql.first(q.held_with_heads, held)
        if row is None:
            return None
        heads = [float(row[k]) for k in ("inbox_next", "outbox_next") if row[k] is not None]
        due = min(heads) if heads else None
        if due is not None and due <= now:
            sql.rowcount(q.extend_lease, {"p_cid": cid, "p_until": r.until})
            return _work(core, sql, conversation_record(row), row["outbox_next"] is not None)
        sql.rowcount(q.release, {"p_cid": cid, "p_due": due})
        return None

    return unit


def finish_in_one(core: StoreCore, r: FinishRequest) -> Callable[[], Program[Work | None]]:
    """PostgreSQL: finish as one statement, its own transaction (HotStatements.
    finish_in_one: how an event accepted meanwhile is not lost). The work of a lease
    kept is read in a second statement, under that lease."""
    ack_columns = one_ack_per_reply(r.acks)
    values = {
        "p_cid": r.conversation_id,
        "p_owner": r.owner,
        **ack_params(ack_columns),
        "p_now": r.now,
        "p_until": r.until,
    }
    stmt = core.q.finish_in_one(ack_shape(ack_columns))

    def program() -> Program[Work | None]:
        row = yield Query("first", stmt, values)
        if row is None or not row["kept"]:
            return None
        conv = conversation_record(row)
        return (yield from _work_program(core, conv, row["outbox_next"] is not None))

    return program


def _work(core: StoreCore, sql: StatementRunner, conv: Conversation, has_outbox: bool) -> Work:
    return run_program(_work_program(core, conv, has_outbox), sql)


def _work_program(core: StoreCore, conv: Conversation, has_outbox: bool) -> Program[Work]:
    in_row = yield Query("first", core.q.inbox_head, {"p_cid": conv.id})
    replies = (yield from _replies(core, conv.id)) if has_outbox else []
    return Work(conv, inbox_record(in_row) if in_row else None, replies)


def _replies(core: StoreCore, conversation_id: int) -> Program[list[OutboxItem]]:
    """The oldest pending replies of a conversation (up to OUTBOX_BATCH)."""
    rows = yield Query("all", core.q.outbox_heads, {"p_cid": conversation_id})
    return [outbox_record(r) for r in rows]
