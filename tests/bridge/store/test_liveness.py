"""Liveness from the database (bridge/store/liveness.py): a process's locks end when it dies
(here: when its liveness is closed, which drops its connection or closes its lock files), and
a named lease whose lock was found free is taken at once, without waiting for it to expire."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import Store
from bridge.store.channel_state import replica_lease
from bridge.store.liveness import Hold, Liveness, liveness_for


@contextlib.asynccontextmanager
async def process(engine: AsyncEngine) -> AsyncIterator[Liveness]:
    """The locks of one process on ``engine``'s database (each a connection, or open files, of
    its own)."""
    liveness = liveness_for(engine)
    try:
        yield liveness
    finally:
        await liveness.close()


async def test_a_lock_is_one_process_s_until_it_dies(engine: AsyncEngine) -> None:
    async with process(engine) as a, process(engine) as b:
        assert await a.hold("tg:poller") is Hold.NEW
        assert await a.hold("tg:poller") is Hold.KEPT
        assert await b.hold("tg:poller") is Hold.TAKEN
        assert await b.held_elsewhere("tg:poller")
        assert not await b.held_elsewhere("other")
        await a.close()  # a dies: its lock ends with it
        assert not await b.held_elsewhere("tg:poller")
        assert await b.hold("tg:poller") is Hold.NEW


async def test_a_lock_let_go_is_free_for_another(engine: AsyncEngine) -> None:
    async with process(engine) as a, process(engine) as b:
        assert await a.hold("x") is Hold.NEW
        await a.let_go("x")
        assert await b.hold("x") is Hold.NEW
        assert await a.hold("x") is Hold.TAKEN


async def test_a_named_lease_of_a_dead_holder_is_taken_at_once(store: Store) -> None:
    assert await store.acquire_lease("tg:poller", "a", ttl=600)
    # Another process alive: the lease's expiry decides.
    assert not await store.acquire_lease("tg:poller", "b", ttl=600)
    # Its holder is gone (its lock was free): taken now, 600 s early.
    assert await store.acquire_lease("tg:poller", "b", ttl=600, holder_gone=True)
    assert not await store.acquire_lease("tg:poller", "a", ttl=600)


async def test_replicas_are_recorded_until_forgotten(store: Store) -> None:
    await store.register_replica("r1")
    await store.register_replica("r2")
    await store.register_replica("r1")  # again (after a lost connection): still one record
    assert sorted(await store.replicas()) == ["r1", "r2"]
    await store.forget_replica("r1")
    assert await store.replicas() == ["r2"]
    # A replica's record is not a channel's lease.
    assert await store.acquire_lease("tg:poller", "r2", ttl=5)
    assert await store.replicas() == ["r2"]
    assert replica_lease("r2") != "tg:poller"


async def test_a_replica_s_lock_is_discarded_at_its_stop_and_when_found_dead(
    engine: AsyncEngine,
) -> None:
    """A replica's lock names one process's life: no file of it is left behind (SQLite)."""
    directory = None
    if engine.dialect.name == "sqlite":
        database = Path(engine.url.database or "")
        directory = database.with_name(database.name + ".leases")
    async with process(engine) as a, process(engine) as b:
        await a.hold("@replica:a")
        await b.hold("@replica:b")
        await b.discard("@replica:a")  # alive: left alone
        assert await b.held_elsewhere("@replica:a")
        await a.close()  # a dies
        await b.discard("@replica:a")
        await b.discard("@replica:b")  # b stops
        assert not await a.held_elsewhere("@replica:b")
        await a.close()
        if directory is not None:
            assert not list(directory.iterdir())
