"""An agent's reply crossing replicas: two services on one PostgreSQL database, the user's web
chat open on replica A, the agent answering through replica B (its desk's intake stores the
act there). The reply must reach the user's page on A within 0.25 s of the agent's send, every
time, whichever replica's worker carries it: B's (its intake leased the conversation; its
delivery announces the user's mailbox to A) or A's (woken by B's insert through the database's
notifications). Nothing waits on a fixed sleep."""

from __future__ import annotations

import statistics
import time
from contextlib import AsyncExitStack

import aiohttp
import pytest

from adapters.webchat.channel import SYNC_ACTIVE_SECONDS
from bridge.channel import AcceptResult, DeskAction
from bridge.devtools.simulator import RunningSimulator
from bridge.handover.desk import AgentCommand
from bridge.parts import build_agents
from tests.support.database import skip_unless_replicas_can_share
from tests.support.waiting import poll_until
from tests.test_webchat_replicas import of, page, replica, says, sent

#: the issue's bound for an agent's reply to reach a user connected to another replica
CROSSING_BOUND_SECONDS = 0.25
MESSAGES = 10

pytestmark = pytest.mark.slow


#: the bot hands over to the console's agent inbox
CONSOLE_DESK = {"handover": {"desk": "console"}}


async def test_an_agents_reply_reaches_a_user_on_another_replica_at_once(
    database_url: str, sim: RunningSimulator
) -> None:
    skip_unless_replicas_can_share(database_url)
    assert SYNC_ACTIVE_SECONDS > 10 * CROSSING_BOUND_SECONDS
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(replica(database_url, sim, "replica-a", CONSOLE_DESK))
        b = await stack.enter_async_context(replica(database_url, sim, "replica-b", CONSOLE_DESK))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        user = await stack.enter_async_context(page(session, a))
        await user.say("hello")
        await user.until(says("You said: hello"), within=10)
        await user.say("I need a human")
        await user.until(says(a.config.messages.handover_started), within=10)
        handovers = await a.store.handovers(open_only=True)
        assert len(handovers) == 1
        key = handovers[0].key
        agents = build_agents(b.engine, b.store) if b.engine is not None else None
        assert agents is not None

        # The first reply may find A's worker still on the conversation (it just opened the
        # handover): not measured.
        warm = AgentCommand(key, "warm-up", DeskAction.MESSAGE, "warm up", "a1", "Anna")
        await agents.act("demo", warm)
        await user.until(says("Anna: warm up"), within=10)
        before, before_a = sent(b), sent(a)

        def delivered() -> float:
            return sent(a) - before_a + sent(b) - before

        by_b: list[float] = []  # the replies B's worker delivered (A's page woken by B)
        by_a: list[float] = []  # those A's worker took (woken by B's insert)
        for n in range(MESSAGES):
            text = f"agent reply {n}"
            started = time.perf_counter()
            command = AgentCommand(key, f"reply-{n}", DeskAction.MESSAGE, text, "a1", "Anna")
            assert await agents.act("demo", command) is AcceptResult.ACCEPTED
            frame = await user.until(says(f"Anna: {text}"), within=SYNC_ACTIVE_SECONDS / 2)
            # Whoever delivered counts it right after the send: wait for the count.
            await poll_until(lambda n=n: delivered() >= n + 1, within=5)
            (by_b if sent(b) - before > len(by_b) else by_a).append(frame.at - started)
        assert user.first(of("error")) is None

    every = by_a + by_b
    report = (
        f"agent's send on B -> user's page on A: median {statistics.median(every) * 1000:.1f} ms, "
        f"max {max(every) * 1000:.1f} ms ({len(by_b)} delivered by B's worker, {len(by_a)} by A's)"
    )
    print(report)
    assert max(every) < CROSSING_BOUND_SECONDS, report
