"""Dead letters: events kept because they could not be handled, for an operator to list,
read, put back into their queues or discard (``parloa-bridge inbox``). Retention never
removes them: they stay until an operator decides."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, delete, select, update
from sqlalchemy.engine import Connection

from bridge.store.columns import inbox_record
from bridge.store.core import StorePart
from bridge.store.schema import conversations, inbox
from bridge.store.statements import PENDING
from bridge.vocabulary import InboxItem, InboxStatus


class DeadLetters(StorePart):
    """The operator's commands on dead letters."""

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

        return await self._core.tx.read(unit)

    async def inbox_item(self, inbox_id: int) -> InboxItem | None:
        def unit(conn: Connection) -> InboxItem | None:
            row = conn.execute(select(inbox).where(inbox.c.id == inbox_id)).first()
            return inbox_record(row) if row else None

        return await self._core.tx.read(unit)

    async def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Put dead letters back into their queues (all of them when ids is None)."""
        now = self._core.clock()
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

        return await self._core.tx.write(unit)

    async def discard_dead(self, ids: Sequence[int]) -> int:
        """Delete the dead letters named (ids of other inbox rows are left alone)."""
        if not ids:
            return 0
        cond = and_(inbox.c.status == InboxStatus.DEAD, inbox.c.id.in_(list(ids)))

        def unit(conn: Connection) -> int:
            return int(conn.execute(delete(inbox).where(cond)).rowcount)

        return await self._core.tx.write(unit)
