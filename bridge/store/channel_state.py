"""Channel state and named leases: small key-value entries an adapter keeps per channel (a
poller's offset, a keyboard's values; ``tmp:`` keys age out with housekeeping's purge), and
leases by name (one Telegram poller among the replicas)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection

from bridge.store.core import StorePart
from bridge.store.errors import DataRefused
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

    async def state_put(
        self, channel: str, key: str, value: str, *, announce: bool = False
    ) -> None:
        """Put the entry; with ``announce``, on PostgreSQL the same statement notifies every
        replica listening (statements.STATE_CHANNEL) once it commits."""
        now = self._core.clock()
        q = self._core.q
        row = state_row(channel, key, value, now)
        announced = q.put_state_announced if announce else None  # None: not on SQLite
        query = Query("first", announced, row) if announced is not None else None

        def program() -> Program[None]:
            # An upsert: one statement, which may run again (a suggestion keyboard's
            # values are put with every reply that shows one).
            yield query or Query("rowcount", q.put_state, row)

        await self._path.run(program)

    async def state_put_if_absent(self, channel: str, key: str, value: str) -> str:
        """Put the entry unless one is there; returns the value stored either way (another
        replica's, when it was first)."""
        row = state_row(channel, key, value, self._core.clock())

        def unit(conn: Connection) -> str:
            found = conn.execute(
                select(channel_state.c.value).where(
                    channel_state.c.channel == channel, channel_state.c.key == key
                )
            ).scalar()
            if found is not None:
                return str(found)
            conn.execute(insert(channel_state).values(row))
            return value

        try:
            return await self._core.tx.write(unit)
        except DataRefused:
            # Another replica inserted it between this one's read and write.
            stored = await self.state_get(channel, key)
            if stored is None:
                raise
            return stored

    async def state_delete(self, channel: str, key: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(
                delete(channel_state).where(
                    channel_state.c.channel == channel, channel_state.c.key == key
                )
            )

        await self._core.tx.write(unit)

    async def acquire_lease(
        self, name: str, owner: str, ttl: float, *, holder_gone: bool = False
    ) -> bool:
        """Take or renew the named lease for ``ttl`` seconds; False while another holds it.
        ``holder_gone``: the caller knows the previous holder is dead or gave the lease up
        (bridge/store/liveness.py: it took the lease's lock), so the lease is taken at once,
        without waiting for it to expire."""
        now = self._core.clock()
        insert = self._core.q.insert
        takeable = None if holder_gone else or_(leases.c.owner == owner, leases.c.expires_at < now)

        def unit(conn: Connection) -> bool:
            stmt = insert(leases).values(name=name, owner=owner, expires_at=now + ttl)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"owner": owner, "expires_at": now + ttl},
                    where=takeable,
                )
            )
            holder = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar()
            return bool(holder == owner)

        return await self._core.tx.write(unit)

    async def release_lease(self, name: str, owner: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))

        await self._core.tx.write(unit)

    # The replicas, each recorded while it runs, so that another can tell a dead one's
    # conversation leases (its lock free: bridge/store/liveness.py) from a live one's. Kept
    # as named leases that never expire: a record stays until its replica stops or another
    # finds it dead.

    async def register_replica(self, owner: str) -> None:
        """Record ``owner`` as a running replica."""
        now = self._core.clock()
        insert = self._core.q.insert
        row = {"name": replica_lease(owner), "owner": owner, "expires_at": now + REPLICA_RECORD}

        def unit(conn: Connection) -> None:
            conn.execute(
                insert(leases)
                .values(**row)
                .on_conflict_do_update(index_elements=["name"], set_=row)
            )

        await self._core.tx.write(unit)

    async def replicas(self) -> list[str]:
        """The replicas recorded as running (some may have died since)."""

        def unit(conn: Connection) -> list[str]:
            rows = conn.execute(
                select(leases.c.owner).where(leases.c.name.startswith(REPLICA_PREFIX))
            )
            return [str(r[0]) for r in rows]

        return await self._core.tx.read(unit)

    async def forget_replica(self, owner: str) -> None:
        await self.release_lease(replica_lease(owner), owner)


# A replica's record in the leases table, and how long it lasts: until removed, in practice.
REPLICA_PREFIX = "@replica:"
REPLICA_RECORD = 10 * 365 * 86400.0


def replica_lease(owner: str) -> str:
    """The name of replica ``owner``'s record (and of its lock: bridge/store/liveness.py)."""
    return f"{REPLICA_PREFIX}{owner}"


def state_row(channel: str, key: str, value: str, now: float) -> dict[str, Any]:
    """A channel state entry as a put writes it (statements.STATE_COLUMNS)."""
    return {"channel": channel, "key": key, "value": value, "updated_at": now}
