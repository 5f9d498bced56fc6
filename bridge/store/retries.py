"""Waiting events released together: when Parloa answers again (the circuit breaker closes,
bridge/engine/breaker.py), the pending events of a bot's channels whose retry lies in the
future are made due now, with their conversations, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from bridge.store.core import StorePart
from bridge.store.schema import conversations, inbox
from bridge.store.statements import PENDING


class Retries(StorePart):
    """What the breaker asks of the store."""

    async def release_waiting(self, channels: Sequence[str], limit: int | None = None) -> list[int]:
        """Make the waiting events of ``channels`` (pending, next attempt in the future) due
        now, for up to ``limit`` conversations (those waiting longest first; None: all).
        Returns the conversations released, for the caller to wake their workers. Order
        within a conversation is the worker's (oldest event first), so it is unchanged."""
        if not channels:
            return []
        now = self._core.clock()
        q = self._core.q
        i = inbox.c
        waiting = (i.status == PENDING) & i.channel.in_(list(channels)) & (i.next_attempt_at > now)

        def unit(conn: Connection) -> list[int]:
            query = (
                select(i.conversation_id)
                .where(waiting)
                .group_by(i.conversation_id)
                .order_by(func.min(i.id))
            )
            if limit is not None:
                query = query.limit(limit)
            ids = [r[0] for r in conn.execute(query)]
            if not ids:
                return []
            conn.execute(
                update(inbox).where(waiting, i.conversation_id.in_(ids)).values(next_attempt_at=now)
            )
            conn.execute(
                update(conversations)
                .where(conversations.c.id.in_(ids))
                .values(due_at=func.coalesce(q.least(conversations.c.due_at, now), now))
            )
            return ids

        return await self._core.tx.write(unit)
