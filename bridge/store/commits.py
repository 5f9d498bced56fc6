"""A worker's writes, each guarded by the conversation's lease: a step (the conversation's
change, its inbox item's outcome, new replies) with the delivery outcomes (acks) gathered
since the last write, a delivery's outcome on its own, and giving up every pending reply.

A lease check is part of each write (an UPDATE's WHERE), so it costs no round trip of its
own; a process that lost its lease (it stalled past ``lease_until`` and another took over)
cannot commit. On PostgreSQL a step with at most one reply is one statement
(``commit_in_one``), otherwise a unit of work (``commit_unit``): the hot path picks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bridge.store.columns import (
    conversation_columns,
    outbox_columns,
    outbox_record,
    step_inbox_columns,
)
from bridge.store.core import CommitRequest, StoreCore, StorePart
from bridge.store.errors import LeaseLost
from bridge.store.handovers import record_handover
from bridge.store.runners import Program, Query, StatementRunner
from bridge.store.schema import conversations, outbox
from bridge.store.statements import PENDING, CommitShape, Guard, HotStatements, params
from bridge.vocabulary import DeliveryOutcome, NewReply, OutboxAck, OutboxItem, OutboxStatus, Step


class Commits(StorePart):
    """The worker's lease-guarded writes, and a stored reply read by its id."""

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
        now = self._core.clock()
        acks = list(acks)  # the caller clears its list while this may still run
        return await self._path.commit(
            CommitRequest(conversation_id, owner, now, step, channel, acks)
        )

    async def update_outbox(
        self, conversation_id: int, owner: str, outbox_id: int, outcome: DeliveryOutcome
    ) -> None:
        """Record one delivery's outcome at once, under the lease. Raises LeaseLost."""
        now = self._core.clock()
        values = outbox_columns(outcome)
        q = self._core.q

        def unit(conn: Connection) -> None:
            result = conn.execute(
                q.update_outbox(values, guard="lease"),
                params(values, id=outbox_id, cid=conversation_id, owner=owner, now=now),
            )
            if not result.rowcount:
                raise LeaseLost(f"conversation {conversation_id}: lease lost")

        await self._core.tx.write(unit)

    async def fail_pending_outbox(self, conversation_id: int, owner: str, reason: str) -> int:
        """Give up every pending delivery of a conversation (the recipient is gone)."""
        now = self._core.clock()

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

        return await self._core.tx.write(unit)

    async def outbox_item(self, outbox_id: int) -> OutboxItem | None:
        """A reply by its id (a chip pressed on it: adapters/telegram/keyboards.py)."""

        def unit(conn: Connection) -> OutboxItem | None:
            row = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).first()
            return outbox_record(row) if row else None

        return await self._core.tx.read(unit)


def commit_unit(core: StoreCore, r: CommitRequest) -> Callable[[Connection], list[OutboxItem]]:
    """A step and its acks as one unit of work: any number of replies, their ids handed out
    in their order."""
    q = core.q
    step, now = r.step, r.now

    def unit(conn: Connection) -> list[OutboxItem]:
        sql = core.runner(conn)
        # The lease check is part of the update, so it costs no extra round trip.
        values = {"updated_at": now, **conversation_columns(step.conversation)}
        updated = sql.rowcount(
            q.update_held_conversation(values),
            params(values, cid=r.conversation_id, owner=r.owner, now=now),
        )
        if not updated:
            raise LeaseLost(f"conversation {r.conversation_id}: lease lost")
        record_acks(q, sql, r.acks)
        inbox_values = step_inbox_columns(step)
        if step.inbox_id is not None and inbox_values:
            sql.rowcount(q.update_inbox(inbox_values), params(inbox_values, id=step.inbox_id))
        if step.handover is not None:
            record_handover(conn, r.conversation_id, step.handover)
        created: list[OutboxItem] = []
        for new in step.replies:
            row = new_reply(r, new)
            inserted = sql.first(q.new_outbox, row)
            assert inserted is not None  # INSERT ... RETURNING id
            created.append(created_reply(int(inserted["id"]), row))
        return created

    return unit


def commit_in_one(core: StoreCore, r: CommitRequest) -> Callable[[], Program[list[OutboxItem]]]:
    """PostgreSQL: a step with at most one reply, and its acks, as one statement
    (HotStatements.commit_in_one)."""
    step, now = r.step, r.now
    ack_columns = one_ack_per_reply(r.acks)
    conversation = {"updated_at": now, **conversation_columns(step.conversation)}
    inbox_values = step_inbox_columns(step)
    changes_inbox = step.inbox_id is not None and bool(inbox_values)
    shape = CommitShape(
        frozenset(conversation),
        frozenset(inbox_values) if changes_inbox else None,
        bool(step.replies),
        ack_shape(ack_columns),
    )
    values: dict[str, Any] = {"p_cid": r.conversation_id, "p_owner": r.owner, "p_now": now}
    values.update({f"p_c_{name}": value for name, value in conversation.items()})
    if changes_inbox:
        values["p_i_id"] = step.inbox_id
        values.update({f"p_i_{name}": value for name, value in inbox_values.items()})
    values.update(ack_params(ack_columns))
    reply = new_reply(r, step.replies[0]) if step.replies else None
    if reply is not None:
        values.update({f"p_o_{name}": value for name, value in reply.items()})
    stmt = core.q.commit_in_one(shape)

    def program() -> Program[list[OutboxItem]]:
        row = yield Query("first", stmt, values)
        if row is None or not row["held"]:
            raise LeaseLost(f"conversation {r.conversation_id}: lease lost")
        return [] if reply is None else [created_reply(int(row["outbox_id"]), reply)]

    return program


def record_acks(
    q: HotStatements,
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
            q.update_outbox(values, guard=guard),
            params(values, id=ack.outbox_id, cid=conversation_id, owner=owner),
        )


AckColumns = tuple[int, dict[str, Any]]  # an outbox id and the columns its ack writes


def one_ack_per_reply(acks: Sequence[OutboxAck]) -> list[AckColumns]:
    """``acks`` as columns for a one-statement write, which may not change a row twice: a
    reply acked more than once gets all their values, the later ones winning (as when they
    are written one after the other)."""
    merged: dict[int, dict[str, Any]] = {}
    for ack in acks:
        merged.setdefault(ack.outbox_id, {}).update(outbox_columns(ack.outcome))
    return list(merged.items())


def ack_shape(acks: Sequence[AckColumns]) -> tuple[frozenset[str], ...]:
    """The columns each ack writes: which one-statement write to build."""
    return tuple(frozenset(values) for _id, values in acks)


def ack_params(acks: Sequence[AckColumns]) -> dict[str, Any]:
    """Parameters for the acks of a one-statement write (statements._ack_writes)."""
    values: dict[str, Any] = {}
    for n, (outbox_id, columns) in enumerate(acks):
        values[f"p_a{n}_id"] = outbox_id
        values.update({f"p_a{n}_{name}": value for name, value in columns.items()})
    return values


def new_reply(r: CommitRequest, new: NewReply) -> dict[str, Any]:
    """A new outbox row's columns (statements.REPLY_COLUMNS and its conversation's id)."""
    return {
        "conversation_id": r.conversation_id,
        "inbox_id": new.inbox_id,
        "channel": new.channel or r.channel,
        "address": dict(new.address) if new.address else None,
        "elements": new.elements,
        "parts_done": 0,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": r.now,
        "created_at": r.now,
    }


def created_reply(outbox_id: int, row: Mapping[str, Any]) -> OutboxItem:
    """A reply just written, as the outbox holds it (``row``: what was inserted)."""
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
