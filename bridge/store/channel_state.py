"""Channel state and named leases: small key-value entries an adapter keeps per channel (a
poller's offset, a keyboard's values; ``tmp:`` keys age out with housekeeping's purge), and
leases by name (one Telegram poller among the replicas)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.engine import Connection

from bridge.store.core import StorePart
from bridge.store.runners import Program, Query
from bridge.store.schema import channel_state, leases


class ChannelStates(StorePart):
    """Channel state entries and named leases."""

    async def state_get(self, channel: str, key: str) -> str | None:
        def unit(conn: Connection) -> str | None:
            value = conn.execute(
                select(channel_state.c.value).where(
                    channel_state.c.channel == channel, channel_state.c.key == key
                )
            ).scalar()
            return str(value) if value is not None else None

        return await self._core.tx.read(unit)

    async def state_put(self, channel: str, key: str, value: str) -> None:
        now = self._core.clock()
        put = self._core.q.put_state

        def program() -> Program[None]:
            # An upsert: one statement, which may run again (a suggestion keyboard's
            # values are put with every reply that shows one).
            yield Query("rowcount", put, state_row(channel, key, value, now))

        await self._path.run(program)

    async def state_delete(self, channel: str, key: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(
                delete(channel_state).where(
                    channel_state.c.channel == channel, channel_state.c.key == key
                )
            )

        await self._core.tx.write(unit)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the named lease for ``ttl`` seconds; False while another holds it."""
        now = self._core.clock()
        insert = self._core.q.insert

        def unit(conn: Connection) -> bool:
            stmt = insert(leases).values(name=name, owner=owner, expires_at=now + ttl)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"owner": owner, "expires_at": now + ttl},
                    where=or_(leases.c.owner == owner, leases.c.expires_at < now),
                )
            )
            holder = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar()
            return bool(holder == owner)

        return await self._core.tx.write(unit)

    async def release_lease(self, name: str, owner: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))

        await self._core.tx.write(unit)


def state_row(channel: str, key: str, value: str, now: float) -> dict[str, Any]:
    """A channel state entry as a put writes it (statements.STATE_COLUMNS)."""
    return {"channel": channel, "key": key, "value": value, "updated_at": now}
