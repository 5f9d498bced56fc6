"""Readers of the store's tables that only tests need (the bridge itself reads its work
through claims): a conversation, the heads of its queues, when work is next due. Each reads
on the store's engine what the store has committed, as the store's own records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table, func, select

from bridge.store import Store
from bridge.store.columns import conversation_record, inbox_record, outbox_record
from bridge.store.schema import conversations, inbox, outbox
from bridge.vocabulary import Conversation, InboxItem, InboxStatus, OutboxItem, OutboxStatus

R = TypeVar("R")


async def conversation(store: Store, conversation_id: int) -> Conversation:
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(select(conversations).where(conversations.c.id == conversation_id))
        ).one()
    return conversation_record(row)


async def head_inbox(store: Store, conversation_id: int) -> InboxItem | None:
    """The conversation's oldest pending event."""
    return await _head(store, inbox, InboxStatus.PENDING, inbox_record, conversation_id)


async def head_outbox(store: Store, conversation_id: int) -> OutboxItem | None:
    """The conversation's oldest pending reply."""
    return await _head(store, outbox, OutboxStatus.PENDING, outbox_record, conversation_id)


async def _head(
    store: Store, queue: Table, pending: str, record: Callable[[Any], R], conversation_id: int
) -> R | None:
    query = (
        select(queue)
        .where(queue.c.conversation_id == conversation_id, queue.c.status == pending)
        .order_by(queue.c.id)
        .limit(1)
    )
    async with store.engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return record(row) if row else None


async def next_due_at(store: Store) -> float | None:
    """When the earliest conversation with work has it due; None when none has any."""
    async with store.engine.connect() as conn:
        value = (await conn.execute(select(func.min(conversations.c.due_at)))).scalar()
    return float(value) if value is not None else None


async def inbox_rows(store: Store) -> list[InboxItem]:
    """Every inbox row, oldest first."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(inbox).order_by(inbox.c.id))).all()
    return [inbox_record(row) for row in rows]
