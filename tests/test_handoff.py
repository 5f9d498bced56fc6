"""Hand-offs without polling, as real processes on one PostgreSQL database: events of each
conversation sent alternately to two replicas. The replica that stores an event for a
conversation the other holds wakes it in the same statement (LISTEN/NOTIFY), so alternating
costs about what one replica costs, not a scan interval."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.support.database import skip_unless_replicas_can_share
from tests.support.process import BridgeProcess, Sender, WebhookWorld, webhook_world

CONVERSATIONS = 20
MESSAGES = 10


World = WebhookWorld


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with webhook_world(tmp_path, World) as w:
        yield w


async def latencies(world: World, replicas: Sequence[BridgeProcess], tag: str) -> list[float]:
    """Each conversation's messages one after another, message k to replica k mod n; the
    time from sending a message to its answer reaching the platform."""
    receiver = world.receiver
    waits: list[float] = []

    async def conversation(sender: Sender, c: str) -> None:
        for k in range(MESSAGES):
            url = replicas[k % len(replicas)].events_url
            sent = time.monotonic()
            status = await sender.post_once(url, sender.event(c, f"m{k}"))
            assert status == 200, status
            await receiver.wait_for(lambda r, k=k: f"m{k}" in r.echoes(c), within=10)
            waits.append(time.monotonic() - sent)

    async with Sender([r.events_url for r in replicas]) as sender:
        await asyncio.gather(*(conversation(sender, f"{tag}-{i}") for i in range(CONVERSATIONS)))
    return waits


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.slow
async def test_events_alternating_between_two_replicas_cost_about_what_one_replica_costs(
    world: World, database_url: str
) -> None:
    skip_unless_replicas_can_share(database_url)
    a = world.bridge(database_url, name="bridge-a")
    b = world.bridge(database_url, name="bridge-b")
    await asyncio.gather(a.start_ready(), b.start_ready())
    # First connections, first statements prepared, on both.
    await latencies(world, [a, b], "warm")
    one = await latencies(world, [a], "one")
    two = await latencies(world, [a, b], "two")
    assert await a.terminate(15) == 0, a.stderr()
    assert await b.terminate(15) == 0, b.stderr()
    report = (
        f"one replica: p50 {statistics.median(one) * 1000:.1f} ms, p99 {p99(one) * 1000:.1f} ms; "
        f"alternating between two: p50 {statistics.median(two) * 1000:.1f} ms, "
        f"p99 {p99(two) * 1000:.1f} ms ({len(one)} and {len(two)} messages)"
    )
    print(report)
    assert p99(two) <= p99(one) + 0.050, report
