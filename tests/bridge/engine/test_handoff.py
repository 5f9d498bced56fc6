"""Hand-offs without polling (PostgreSQL): an event stored by one replica for a conversation
another holds wakes the holder at once through LISTEN/NOTIFY, sent by the very statement that
stores the event (bridge/store/statements.py, work_notice). The holder here scans the
database only once an hour: only the notice can wake it. And announced channel state puts
wake every replica's watchers of the entry (ChannelState.watch)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.devtools.simulator import RunningSimulator
from bridge.store import Store
from bridge.vocabulary import Claim, NewEvent
from tests.support.database import skip_unless_replicas_can_share, store_for
from tests.support.engine import CHANNEL, Harness, harness, stored_event


def event(conversation: str, text: str) -> NewEvent:
    return stored_event(conversation, text, event_id=f"{conversation}/{text}")


@contextlib.asynccontextmanager
async def holder_and_other(
    database_url: str, store: Store, sim: RunningSimulator
) -> AsyncIterator[tuple[Harness, Store]]:
    """A replica holding conversations, which never polls (only a notice can wake it), and
    another replica's store to write events through, as its intake would."""
    skip_unless_replicas_can_share(database_url)
    async with (
        harness(store, sim, poll_interval=3600) as holder,
        store_for(database_url) as other,
    ):
        yield holder, other


async def test_an_event_stored_elsewhere_wakes_the_replica_holding_its_conversation(
    database_url: str, engine: AsyncEngine, store: Store, sim: RunningSimulator
) -> None:
    async with holder_and_other(database_url, store, sim) as (holder, other):
        owner = holder.engine.instance_id
        # The holder's intake leased the conversation for a worker that never started.
        await other.accept_claiming(CHANNEL, [event("c1", "m0")], None, Claim(owner, 600, 5))
        # One event, one statement: its notice wakes the holder.
        await other.accept_claiming(CHANNEL, [event("c1", "m1")], None, None)
        await holder.adapter.wait_for(lambda: len(holder.adapter.texts("c1")) >= 2, within=5)


async def test_a_batch_stored_elsewhere_wakes_the_replica_holding_its_conversations(
    database_url: str, engine: AsyncEngine, store: Store, sim: RunningSimulator
) -> None:
    async with holder_and_other(database_url, store, sim) as (holder, other):
        owner = holder.engine.instance_id
        first = [event("c1", "m0"), event("c2", "m0")]
        await other.accept_claiming(CHANNEL, first, None, Claim(owner, 600, 5))
        # A batch (a poll's updates): one transaction, its notices sent at its commit.
        batch = [event("c1", "m1"), event("c2", "m1")]
        await other.accept_claiming(CHANNEL, batch, None, None)
        for c in ("c1", "c2"):
            await holder.adapter.wait_for(lambda c=c: len(holder.adapter.texts(c)) >= 2, within=5)


async def test_an_announced_put_wakes_the_watchers_of_every_replica(
    database_url: str, store: Store, sim: RunningSimulator
) -> None:
    """ChannelState.put(announce=True) wakes the watchers of the entry: this process's at
    once (SQLite: one process, in memory), and on PostgreSQL another replica's through the
    put's own notice."""
    replicas = [store]
    async with store_for(database_url) as second:
        if database_url.startswith("postgresql"):
            replicas.append(second)
        async with contextlib.AsyncExitStack() as stack:
            engines = [await stack.enter_async_context(harness(s, sim)) for s in replicas]
            states = [h.engine.intake(CHANNEL).state for h in engines]
            woken = [asyncio.Event() for _ in states]
            other_key = asyncio.Event()
            for state, event_ in zip(states, woken, strict=True):
                state.watch("tmp:mailbox:u1", event_.set)
            states[0].watch("tmp:mailbox:u2", other_key.set)
            unsubscribed = asyncio.Event()
            states[-1].watch("tmp:mailbox:u1", unsubscribed.set)()

            await states[0].put("tmp:mailbox:u1", "v0")  # not announced: nobody woken
            await states[0].put("tmp:mailbox:u1", "v1", announce=True)
            for event_ in woken:
                await asyncio.wait_for(event_.wait(), 5)
            assert await states[-1].get("tmp:mailbox:u1") == "v1"
            assert not other_key.is_set()
            assert not unsubscribed.is_set()
