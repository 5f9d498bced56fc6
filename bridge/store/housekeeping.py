"""Housekeeping: conversations gone quiet and the events the bridge raises for them itself
(the idle timeout), retention (old message content and temporary channel state purged),
the queues' figures for metrics, and a ping for readiness."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import column, delete, exists, func, or_, select, update
from sqlalchemy import table as table_clause
from sqlalchemy.engine import Connection

from bridge.store import media as media_files
from bridge.store.columns import conversation_record
from bridge.store.core import StorePart
from bridge.store.schema import channel_state, conversations, handovers, inbox, outbox
from bridge.store.statements import PENDING
from bridge.vocabulary import Conversation, HandoverState, InboundKind, InboxStats, InboxStatus

log = logging.getLogger("bridge.store")

# slack-sdk's OAuth state table (created by migration 0002): only what the purge reads.
_slack_oauth_states = table_clause("slack_oauth_states", column("id"), column("expire_at"))

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

    async def purge(
        self, older_than_seconds: float, *, conversations_idle_seconds: float = 0.0
    ) -> tuple[int, int]:
        """Delete finished inbox and outbox rows (message content) and media files older than
        the age given (and media files a crash left incomplete, and ended handovers),
        adapters' temporary state
        (keys starting ``tmp:``, e.g. keyboards sent by earlier versions) and expired Slack
        OAuth states. Dead letters stay until an operator retries
        or discards them. With ``conversations_idle_seconds`` (0: keep them), conversation
        mappings idle that long with nothing left in their queues go too. Rows go
        PURGE_BATCH per transaction. Returns the inbox and outbox rows deleted."""
        now = self._core.clock()
        cutoff = now - older_than_seconds

        def batch(table: Any) -> Callable[[Connection], int]:
            def unit(conn: Connection) -> int:
                # finished_at is indexed; pending rows have none, so they are never picked.
                where = [table.c.finished_at < cutoff, table.c.status != PENDING]
                if table is inbox:
                    where.append(table.c.status != InboxStatus.DEAD)
                old = select(table.c.id).where(*where).limit(PURGE_BATCH)
                return int(conn.execute(delete(table).where(table.c.id.in_(old))).rowcount)

            return unit

        deleted = []
        for table in (inbox, outbox):
            deleted.append(await self._batched(batch(table)))

        def ended_handovers(conn: Connection) -> int:
            # Their reason and summary may quote the user: they go with the messages.
            old = (
                select(handovers.c.id)
                .where(handovers.c.ended_at < cutoff, handovers.c.state == HandoverState.ENDED)
                .limit(PURGE_BATCH)
            )
            return int(conn.execute(delete(handovers).where(handovers.c.id.in_(old))).rowcount)

        await self._batched(ended_handovers)
        # Media files go with the message content they came with.
        files = 0
        while count := await self._core.tx.write(media_files.purge_batch(cutoff, now)):
            files += count
        if files:
            log.info("purged %d media files older than the retention period", files)

        def temporary_state(conn: Connection) -> None:
            conn.execute(
                delete(channel_state).where(
                    channel_state.c.key.like("tmp:%"), channel_state.c.updated_at < cutoff
                )
            )
            # slack-sdk's state store keeps naive UTC times and deletes only states consumed.
            expired = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
            conn.execute(
                delete(_slack_oauth_states).where(_slack_oauth_states.c.expire_at < expired)
            )

        await self._core.tx.write(temporary_state)
        if conversations_idle_seconds > 0:
            idle = now - conversations_idle_seconds

            def mappings(conn: Connection) -> int:
                # Nothing queued (no dead letter either: a cascade would take it silently),
                # no lease held: the next message of the user starts a new conversation.
                quiet = (
                    select(conversations.c.id)
                    .where(
                        conversations.c.last_activity_at < idle,
                        or_(
                            conversations.c.lease_until.is_(None), conversations.c.lease_until < now
                        ),
                        ~exists().where(inbox.c.conversation_id == conversations.c.id),
                        ~exists().where(outbox.c.conversation_id == conversations.c.id),
                    )
                    .limit(PURGE_BATCH)
                )
                ids = [row[0] for row in conn.execute(quiet)]
                if not ids:
                    return 0
                return int(
                    conn.execute(delete(conversations).where(conversations.c.id.in_(ids))).rowcount
                )

            gone = await self._batched(mappings)
            if gone:
                log.info("purged %d conversation mappings idle since the retention period", gone)
        return deleted[0], deleted[1]

    async def _batched(self, unit: Callable[[Connection], int]) -> int:
        """Run ``unit`` (deleting at most PURGE_BATCH rows) until it deletes fewer."""
        total = 0
        while True:
            count = await self._core.tx.write(unit)
            total += count
            if count < PURGE_BATCH:
                return total

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
