"""The store's tables read and arranged with plain SQL, beside the store: what is really
stored, not what the store says, and rows set up without going through a worker."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.schema import conversations, inbox


async def rows(engine: AsyncEngine, table: Table, *where: Any) -> list[dict[str, Any]]:
    """Raw rows of a table, oldest first."""
    query = select(table).where(*where)
    if "id" in table.c:
        query = query.order_by(table.c.id)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def conv_row(engine: AsyncEngine, cid: int) -> dict[str, Any]:
    (row,) = await rows(engine, conversations, conversations.c.id == cid)
    return row


async def inbox_ids(engine: AsyncEngine, cid: int) -> list[int]:
    return [r["id"] for r in await rows(engine, inbox, inbox.c.conversation_id == cid)]


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def set_columns(engine: AsyncEngine, table: Table, row_id: int, **values: Any) -> None:
    """Write columns of one row (by its ``id``) directly, as no store call would."""
    async with engine.begin() as conn:
        await conn.execute(update(table).where(table.c.id == row_id).values(**values))
