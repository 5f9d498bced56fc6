"""Liveness from the database, as real processes: two replicas on one PostgreSQL database, one
SIGKILLed mid-stream. The survivor finds the dead one's lock free at its next scan and takes
its conversations over at once (bridge/store/liveness.py, bridge/engine/dispatch.py), instead
of waiting for their leases (30 s by default) to run out."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.devtools.simulator import Faults
from tests.support.database import skip_unless_replicas_can_share
from tests.support.process import Sender, WebhookWorld, webhook_world

MAX_WAIT = 5.0  # no conversation waits longer than this for an answer, kill or not


World = WebhookWorld


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with webhook_world(tmp_path, World) as w:
        yield w


@pytest.mark.slow
async def test_a_replica_killed_mid_stream_leaves_no_conversation_waiting(
    world: World, database_url: str
) -> None:
    skip_unless_replicas_can_share(database_url)
    conversations = [f"conv-{i}" for i in range(10)]
    messages = [f"m{i}" for i in range(8)]
    world.simulator.state.faults = Faults(latency=0.05, latency_max=0.2)
    # The default lease (process tests use 2 s): a takeover within MAX_WAIT is not its expiry.
    lease = {"lease_seconds": 30}
    a = world.bridge(database_url, name="bridge-a", engine=lease)
    b = world.bridge(database_url, name="bridge-b", engine=lease)
    await asyncio.gather(a.start_ready(), b.start_ready())
    receiver = world.receiver
    accepted_at: dict[tuple[str, str], float] = {}
    rng = random.Random(23)
    deadline = time.monotonic() + 40

    async def conversation(sender: Sender, c: str) -> None:
        for m in messages:
            await sender.send(c, m, deadline=deadline)
            accepted_at[(c, m)] = time.monotonic()
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # the user's typing pause

    async with Sender([a.events_url, b.events_url], rng=rng) as sender:
        sending = [
            asyncio.create_task(conversation(sender, c), name=f"user-{c}") for c in conversations
        ]
        # Mid-stream: every conversation answered at least twice, and more to come.
        await receiver.wait_for(
            lambda r: all(len(set(r.echoes(c))) >= 2 for c in conversations), within=20
        )
        await a.kill()
        killed_at = time.monotonic()
        await asyncio.gather(*sending)
    await receiver.wait_for(
        lambda r: r.answered({c: messages for c in conversations}), within=MAX_WAIT + 5
    )
    assert await b.terminate(15) == 0, b.stderr()

    answered_at = {}
    for d in receiver.deliveries:
        for m in d.echoes:
            answered_at.setdefault((d.conversation_id, m), d.at)
    waits = {key: answered_at[key] - at for key, at in accepted_at.items()}
    longest = max(waits, key=lambda k: waits[k])
    dups = {
        c: sum(n - 1 for n in Counter(receiver.echoes(c)).values() if n > 1) for c in conversations
    }
    report = (
        f"longest wait {waits[longest]:.2f}s ({longest}, accepted "
        f"{accepted_at[longest] - killed_at:+.2f}s from the kill); waits over 1 s: "
        f"{sorted(round(w, 2) for w in waits.values() if w > 1)}; duplicates {dups}"
    )
    print(report)
    for c in conversations:
        assert receiver.first_answers(c) == messages, f"{c}: {receiver.echoes(c)}; {report}"
        assert dups[c] <= 1, report
    assert waits[longest] <= MAX_WAIT, report
