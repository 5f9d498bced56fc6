"""A Telegram user handed over to agents in Slack, as real processes: ``python -m bridge run``
with a polling Telegram channel (the fake Bot API) and a Slack channel hosting the agents'
room (the fake Slack), the simulator as Parloa. The bridge is SIGKILLed at random moments
of the exchange and restarted; every message of both sides must arrive, in order, and a
repeat only where the documented crash window explains it (a platform call that succeeded
right before the kill, before its commit: the restarted process sends it again).

Waiting is on the fakes' recorded messages and on ``/readyz``, bounded by deadlines; the
only sleeps are the random kill points, the pauses between the people's messages and
Slack's (shortened) redelivery interval."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from adapters.slack.desk import RESOLVE_ACTION, TAKE_ACTION
from bridge.config import MessagesConfig
from bridge.devtools.simulator import Faults, SimulatorState, start_simulator
from tests.fakes.slack import FakeSlack, PostedMessage
from tests.fakes.telegram import FakeTelegram
from tests.handover.process_support import (
    AGENT_NAME,
    AGENTS_ROOM,
    SLACK_CHANNEL,
    TG_TOKEN,
    HandoverWorld,
    SlackAgents,
    agent_copies,
    duplicates,
    first_occurrences,
    relayed_user_text,
    repeated,
    slack_workspace,
    texts,
    thread_posts,
    user_copies,
)
from tests.support.process import run_seed

pytestmark = pytest.mark.slow

CHAT = 7001  # the Telegram user's private chat (and user id)
USER_NAME = "Ada"
MESSAGES = MessagesConfig()
#: a repeat is explained by a kill when its first copy arrived this soon before it (the
#: platform call returned, the commit that records it did not happen)
CRASH_WINDOW = 1.0


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[HandoverWorld]:
    async with (
        await start_simulator(state=SimulatorState(seed=1)) as simulator,
        FakeTelegram(tokens=[TG_TOKEN]) as tg,
        FakeSlack() as slack,
    ):
        slack_workspace(slack)
        w = HandoverWorld(tmp_path, simulator, tg, slack)
        try:
            yield w
        finally:
            await w.cleanup()


def said(world: HandoverWorld) -> list[str]:
    """What the Telegram user got, in order."""
    return [m.text or "" for m in world.tg.sent_messages(CHAT)]


def buttons(message: PostedMessage | None) -> list[str]:
    return [
        element["action_id"]
        for block in (message.blocks if message is not None else None) or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def fields_of(message: PostedMessage | None) -> list[str]:
    """The texts of the message's section fields (the root's Channel, User, Status...)."""
    blocks = (message.blocks if message is not None else None) or []
    return [str(f["text"]) for b in blocks for f in b.get("fields") or []]


async def test_sigkill_during_a_telegram_users_exchange_with_a_slack_agent(
    world: HandoverWorld, database_url: str
) -> None:
    seed = run_seed()
    rng = random.Random(seed)
    pauses = random.Random(seed + 1)
    n = 8
    kills = rng.choice((2, 3))
    tg, slack = world.tg, world.slack
    world.simulator.state.faults = Faults(latency=0.02, latency_max=0.05)
    bridge = world.bridge(database_url)
    origin = time.monotonic()
    agents = SlackAgents(f"{bridge.url}/slack/{SLACK_CHANNEL}/events")

    def user_says(text: str) -> None:
        tg.push_update(tg.private_text(CHAT, text, first_name=USER_NAME))

    await bridge.start_ready()
    first_start = time.monotonic() - origin
    user_says("hello")
    await tg.wait_for(lambda: "You said: hello" in said(world), within=15)
    user_says("I need a human")
    root = await slack.wait_for(lambda: next(iter(slack.posted(channel=AGENTS_ROOM)), None), 15)
    assert root is not None
    await tg.wait_for(lambda: MESSAGES.handover_started in said(world), within=10)
    assert buttons(root) == [TAKE_ACTION, RESOLVE_ACTION]
    handed_over = time.monotonic() - origin

    # The exchange: the user's and the agent's messages interleaved (each side in order),
    # the kills after random steps, while the rest goes on (the user keeps writing; Slack
    # keeps sending the agent's reply until the restarted bridge takes it).
    users = [f"u{k}" for k in range(1, n + 1)]
    replies = [f"a{k}" for k in range(1, n + 1)]
    steps = ["user"] * n + ["agent"] * n
    rng.shuffle(steps)
    kill_after = sorted(rng.sample(range(1, 2 * n - 1), kills))
    reached = [asyncio.Event() for _ in steps]
    deadline = time.monotonic() + 60
    kill_times: list[float] = []
    restarts: list[float] = []
    kill_modes: list[str] = []
    agent_posts = asyncio.Event()  # set when the agent's next event goes out

    async def exchange() -> None:
        said_by = {"user": iter(users), "agent": iter(replies)}
        for i, who in enumerate(steps):
            text = next(said_by[who])
            if who == "user":
                user_says(text)
            else:
                agent_posts.set()
                await agents.reply(slack, root, text, deadline)
            reached[i].set()
            await asyncio.sleep(pauses.uniform(0.05, 0.4))  # typing

    def sends() -> int:
        return len(tg.sent_messages(CHAT)) + len(thread_posts(slack, root))

    async def next_send(within: float) -> str:
        """Until the next message reaches either platform; which one."""
        before = len(tg.sent_messages(CHAT)), len(thread_posts(slack, root))
        await _both(world, lambda: sends() > sum(before), within)
        grew = (len(tg.sent_messages(CHAT)) > before[0], len(thread_posts(slack, root)) > before[1])
        return {(True, False): "telegram", (False, True): "thread"}.get(grew, "both")

    async def kill_point(mode: str) -> str:
        """Wait for the moment ``mode`` names; what it was."""
        if mode == "on a send":
            # Right when the next message reaches a platform: in the crash window (the call
            # succeeded, its commit may not have happened yet).
            try:
                sent = await next_send(within=3)
            except AssertionError:
                return "no send came"
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            return f"on a send to the {sent}"
        if mode == "in a Slack request":
            # While the bridge handles an agent's event: stored or not, Slack sends it
            # again (deduplicated on its event id).
            agent_posts.clear()
            try:
                async with asyncio.timeout(3):
                    await agent_posts.wait()
            except TimeoutError:
                return "no agent wrote"
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            return mode
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # any moment of the deliveries
        return mode

    async def killer() -> None:
        for step in kill_after:
            await reached[step].wait()
            mode = rng.choice(("random", "on a send", "in a Slack request"))
            kill_modes.append(await kill_point(mode))
            await bridge.kill()
            kill_times.append(killed := time.monotonic())
            await bridge.start_ready()
            restarts.append(time.monotonic() - killed)

    exchange_started = time.monotonic()
    talking = asyncio.create_task(exchange(), name="exchange")
    killing = asyncio.create_task(killer(), name="killer")
    try:
        await asyncio.gather(talking, killing)
    finally:
        for task in (talking, killing):
            task.cancel()
        await asyncio.gather(talking, killing, return_exceptions=True)
    exchange_took = time.monotonic() - exchange_started

    def arrived() -> bool:
        return set(texts(user_copies(slack, root, USER_NAME))) >= set(users) and set(
            texts(agent_copies(tg, CHAT, AGENT_NAME))
        ) >= set(replies)

    await _both(
        world,
        arrived,
        within=20,
        failure=lambda: (
            f"not everything arrived: thread {texts(user_copies(slack, root, USER_NAME))}, "
            f"telegram {texts(agent_copies(tg, CHAT, AGENT_NAME))}\n{world.logs()}"
        ),
    )
    all_arrived = time.monotonic() - exchange_started

    # The agent's first reply took the handover: the root says who has it (kept across the
    # kills: the desk's record is in the shared state).
    taken = f"*Status*\nTaken by {AGENT_NAME}"
    await slack.wait_for(lambda: taken in fields_of(slack.message(AGENTS_ROOM, root.ts)), within=10)
    assert buttons(slack.message(AGENTS_ROOM, root.ts)) == [RESOLVE_ACTION]

    # Resolve (the button, or "/resolve" in the thread): the user is told, the root shows
    # the outcome, the bot answers again.
    resolve_by = rng.choice(("button", "/resolve"))
    current = slack.message(AGENTS_ROOM, root.ts)
    assert current is not None
    if resolve_by == "button":
        await agents.press(slack, current, RESOLVE_ACTION, deadline)
    else:
        await agents.reply(slack, root, "/resolve", deadline)
    await tg.wait_for(lambda: MESSAGES.handover_ended in said(world), within=15)
    await slack.wait_for(lambda: buttons(slack.message(AGENTS_ROOM, root.ts)) == [], 15)
    user_says("back to the bot")
    await tg.wait_for(lambda: "You said: back to the bot" in said(world), within=15)
    # Quiesce: a graceful stop finishes what is in flight, so every repeat is counted.
    assert await bridge.terminate(15) == 0, bridge.stderr()
    took = time.monotonic() - origin

    to_agent = user_copies(slack, root, USER_NAME)
    to_user = agent_copies(tg, CHAT, AGENT_NAME)
    repeats = duplicates("user->thread", to_agent, kill_times, CRASH_WINDOW) + duplicates(
        "agent->telegram", to_user, kill_times, CRASH_WINDOW
    )
    report = "\n".join(
        [
            f"seed={seed} backend={database_url.split(':')[0]} resolved by {resolve_by}, "
            f"kills={kills} after steps "
            f"{kill_after} of {''.join(s[0] for s in steps)} (u=user, a=agent)",
            f"kills {kill_modes} at {[round(k - origin, 2) for k in kill_times]}s, ready "
            f"again after {[round(r, 2) for r in restarts]}s; first start {first_start:.2f}s, "
            f"handed over at {handed_over:.2f}s",
            f"exchange sent in {exchange_took:.2f}s, all arrived {all_arrived:.2f}s after its "
            f"start; whole test {took:.2f}s",
            f"Slack event attempts {agents.attempts} for {n + 1} acts; sent again: "
            f"{agents.retried()}",
            f"duplicates={len(repeats)} (thread {repeated(to_agent)}, telegram "
            f"{repeated(to_user)})",
            *(f"  {d.describe(origin)}" for d in repeats),
        ]
    )
    print(report)

    assert first_occurrences(to_agent) == users, f"{texts(to_agent)}\n{report}"
    assert first_occurrences(to_user) == replies, f"{texts(to_user)}\n{report}"
    assert all(d.kill_at is not None for d in repeats), report
    # A conversation's deliveries go one at a time, each recorded with the worker's next
    # write: a kill repeats at most the one visible send in flight (an agent's message is
    # one Telegram send; its desk event posts nothing in the thread).
    assert len(repeats) <= kills, report
    # One thread: the root was posted once; the user's messages went to the agent only.
    assert [m.ts for m in slack.posted(channel=AGENTS_ROOM) if m.thread_ts is None] == [root.ts]
    to_parloa = [t for kind, t in world.simulator.state.events() if kind == "message"]
    assert not set(to_parloa) & set(users), to_parloa
    assert "back to the bot" in to_parloa
    # After Resolve the user's message went to the bot, not into the thread; the root shows
    # the outcome.
    assert "back to the bot" not in texts(to_agent)
    final = slack.message(AGENTS_ROOM, root.ts)
    assert final is not None
    assert f"*Status*\nResolved (taken by {AGENT_NAME})" in fields_of(final), final.blocks
    # The bridge posted nothing else in the thread (the agent's own messages are not
    # echoed there): the user's messages and the closing note.
    notes = [
        m.text or "" for m in thread_posts(slack, root) if relayed_user_text(m, USER_NAME) is None
    ]
    assert notes == ["Resolved. The user is back with the bot."], notes
    for notice in (MESSAGES.handover_started, MESSAGES.handover_ended):
        assert said(world).count(notice) == 1, said(world)
    # Every restart recovered without an error of its own.
    logs = bridge.stderr(tail=10**7)
    assert "Traceback" not in logs and " ERROR " not in logs, logs


async def _both(
    world: HandoverWorld,
    check: Callable[[], bool],
    within: float,
    failure: Callable[[], str] | None = None,
) -> None:
    """Wait until ``check()`` holds; each fake wakes the wait when it records something."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        remaining = end - loop.time()
        if remaining <= 0:
            raise AssertionError(failure() if failure else f"not met within {within}s")
        waits = [
            asyncio.ensure_future(world.tg.wait_for(check, within=remaining)),
            asyncio.ensure_future(world.slack.wait_for(check, within=remaining)),
        ]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
