"""A SQLite database that is up but refuses every write (``PRAGMA query_only``): an outage
the bridge must answer with "try again later" rather than lose or half-store a message."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from bridge.service import Service


async def set_query_only(service: Service, on: bool) -> None:
    """On both connections the bridge has to the file: the async engine's (migrations, the
    Slack installation store) and the store's own. On the driver connections themselves:
    the bridge's BEGIN IMMEDIATE would fail first."""
    pragma = f"PRAGMA query_only = {int(on)}"
    async with service.db.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.execute(pragma)

    def on_store_connection(conn: Connection) -> None:
        driver: Any = conn.connection.driver_connection
        driver.execute(pragma)

    # The store's connection lives on its own thread (bridge/store/transactions.py). A unit
    # that fails makes the store open a fresh one (the housekeeping's may, at any moment):
    # that one must refuse writes too.
    sync = service.store._core.tx._sync  # type: ignore[attr-defined]
    if on and not event.contains(sync, "connect", _refuse_writes):
        event.listen(sync, "connect", _refuse_writes)
    elif not on and event.contains(sync, "connect", _refuse_writes):
        event.remove(sync, "connect", _refuse_writes)
    await service.store._core.tx.read(on_store_connection)


def _refuse_writes(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only = 1")
