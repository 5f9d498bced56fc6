"""The Parloa side of an event's timeline (inbox.parloa_calls), written with the event's
outcome in the same commit: every call, a failed one too, with its status, latency and ids."""

from __future__ import annotations

import asyncio

from bridge.devtools.faults import Faults
from bridge.devtools.simulator import RunningSimulator
from bridge.store import Store
from bridge.vocabulary import InboxStatus
from tests.support.engine import CHANNEL, harness, inbound
from tests.support.store_readers import inbox_rows


async def test_a_503_retried_then_answered_shows_both_calls(
    store: Store, sim: RunningSimulator
) -> None:
    sim.state.faults = Faults(status=503)
    async with harness(store, sim) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "hello"))
        async with asyncio.timeout(10):
            await sim.state.wait_for(lambda s: s.stats().by_status.get(503, 0) >= 1)
        sim.state.faults = Faults()
        await h.adapter.wait_for(lambda: "You said: hello" in h.adapter.texts("c1"))
    (item,) = [i for i in await inbox_rows(store) if i.kind == "text"]
    assert item.status is InboxStatus.DONE
    calls = item.parloa_calls
    statuses = [(c.event, c.status) for c in calls]
    assert statuses[0] == ("launch", 503)
    assert statuses[-2:] == [("launch", 200), ("message", 200)]
    answered = [r for r in sim.state.requests if r.status == 200]
    assert {c.request_id for c in calls if c.status == 200} == {r.request_id for r in answered}
    assert all(c.latency_ms >= 0 and c.session for c in calls)
    assert calls[-1].elements >= 1 and calls[0].elements == 0
