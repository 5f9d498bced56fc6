"""A replica's conversations when it dies: another takes them over at its next scan, not when
their leases expire (bridge/engine/dispatch.py, Dispatcher.free_the_dead); a replica alive
keeps them, however long they take."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.devtools.simulator import RunningSimulator
from bridge.store import Store
from bridge.store.channel_state import replica_lease
from bridge.store.liveness import Hold, liveness_for
from bridge.vocabulary import Claim
from tests.support.engine import CHANNEL, harness, stored_event

LONG_LEASE = 600.0  # far longer than any test: a takeover cannot be the lease running out


async def leased_by(store: Store, owner: str, conversation: str) -> None:
    """An event of ``conversation``, stored by replica ``owner``, which leased the
    conversation (for LONG_LEASE) to a worker of its own."""
    event = stored_event(conversation, "hello", event_id=f"ev-{conversation}")
    outcome = await store.accept_claiming(CHANNEL, [event], None, Claim(owner, LONG_LEASE, 5))
    assert outcome.claimed, "the other replica did not lease the conversation"


async def test_the_conversations_of_a_dead_replica_are_taken_over_at_once(
    engine: AsyncEngine, store: Store, sim: RunningSimulator
) -> None:
    other = liveness_for(engine)  # the other replica's locks
    assert await other.hold(replica_lease("other")) is Hold.NEW
    await store.register_replica("other")
    await leased_by(store, "other", "c1")
    async with harness(store, sim) as h:
        # Alive (its lock held): its conversation stays its own.
        assert await h.engine.dispatcher.free_the_dead() == []
        assert h.adapter.texts("c1") == []
        await other.close()  # the other replica dies
        await h.adapter.wait_for(lambda: h.adapter.texts("c1"), within=5)
    assert await store.replicas() == []  # its record went with it


async def test_a_replica_without_a_record_keeps_its_leases_until_they_expire(
    store: Store, sim: RunningSimulator
) -> None:
    """A lease whose owner recorded no lock (an older version, during an upgrade) is left to
    the clock, as before."""
    await leased_by(store, "older", "c2")
    async with harness(store, sim) as h:
        assert await h.engine.dispatcher.free_the_dead() == []
        assert await store.due_conversations(10) == []
