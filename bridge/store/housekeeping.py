"""Housekeeping: conversations gone quiet and the events the bridge raises for them itself
(the idle timeout), retention (old message content and temporary channel state purged),
the queues' figures for metrics, and a ping for readiness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from bridge.store.columns import conversation_record
from bridge.store.core import StorePart
from bridge.store.schema import channel_state, conversations, inbox, outbox
from bridge.store.statements import PENDING
from bridge.vocabulary import Conversation, InboundKind, InboxStats, InboxStatus

# Rows deleted per transaction by purge(): on SQLite every message waits behind a store call,
# so none may take long.
PURGE_BATCH = 1000


class _AlreadyQueued(Exception):
    """Raised inside a unit to undo it: units never end their transaction themselves (on
    SQLite several share one, see transactions.py)."""


class Housekeeping(StorePart):
    """What the engine's housekeeping loop asks of the store."""

    async def idle_conversations(self, idle_seconds: float, limit: int = 500) -> list[Conversation]:
        cutoff = self._core.clock() - idle_seconds

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

        return await self._core.tx.read(unit)

    async def enqueue_internal(self, conv: Conversation, kind: InboundKind, event_id: str) -> bool:
        """An event the bridge itself raises (idle timeout) into a conversation's queue."""
        now = self._core.clock()
        q = self._core.q

        def unit(conn: Connection) -> bool:
            # Row lock first, as in accept(), so a concurrent finish() cannot lose the wake-up.
            conn.execute(
                update(conversations)
                .where(conversations.c.id == conv.id)
                .values(due_at=func.coalesce(q.least(conversations.c.due_at, now), now))
            )
            inserted = conn.execute(
                q.insert(inbox)
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
            return await self._core.tx.write(unit)
        except _AlreadyQueued:
            return False

    async def purge(self, older_than_seconds: float) -> tuple[int, int]:
        """Delete finished inbox and outbox rows (message content) older than the age given,
        and adapters' temporary state (keys starting ``tmp:``, e.g. keyboards sent by earlier
        versions). Conversation mappings stay. Rows go PURGE_BATCH per transaction."""
        cutoff = self._core.clock() - older_than_seconds

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
                count = await self._core.tx.write(batch(table))
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

        await self._core.tx.write(temporary_state)
        return deleted[0], deleted[1]

    async def stats(self) -> InboxStats:
        now = self._core.clock()

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

        return await self._core.tx.read(unit)

    async def ping(self) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(select(1))

        await self._core.tx.read(unit)
