"""The bridge as a real process: ``python -m bridge run`` with a webhook channel, the simulator
as Parloa and a receiver as the channel's ``deliver_url``, all on 127.0.0.1.

Crashes (SIGKILL at random moments), graceful stops (SIGTERM), lease recovery, two processes
on one PostgreSQL database, the CLI's exit codes and the HTTP surface (/healthz, /readyz,
/metrics). Waiting is on deliveries and simulator state, bounded by deadlines; the only
sleeps are the random kill points and a platform's redelivery interval."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.devtools.simulator import Faults, SimulatorState
from tests.support.database import skip_unless_replicas_can_share
from tests.support.process import (
    API_TOKEN,
    CHANNEL,
    SECRET,
    BridgeProcess,
    Receiver,
    Sender,
    WebhookWorld,
    bridge_command,
    free_port,
    metric_value,
    run_seed,
    webhook_channel,
    webhook_world,
    write_config,
)

REQUIRED_METRICS = (
    "parloa_bridge_inbound_events_total",
    "parloa_bridge_parloa_requests_total",
    "parloa_bridge_parloa_latency_seconds_bucket",
    "parloa_bridge_deliveries_total",
    "parloa_bridge_inbox_pending",
    "parloa_bridge_dead_letters",
)


# --- fixtures -----------------------------------------------------------------------------------


class World(WebhookWorld):
    """The simulator, the receiver (the webhook channel's deliver_url) and every bridge process
    a test started."""

    def parloa_messages(self, requester: str) -> list[str]:
        """The message texts Parloa answered for one requester, in arrival order."""
        return [
            r.text or ""
            for r in self.simulator.state.requests
            if r.requester_id == requester and r.event_type == "message" and r.status == 200
        ]

    def parloa_events(self, requester: str) -> list[tuple[str, int]]:
        return [
            (r.event_type or "?", r.status)
            for r in self.simulator.state.requests
            if r.requester_id == requester
        ]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with webhook_world(tmp_path, World) as w:
        yield w


def requester(conversation: str) -> str:
    return f"{CHANNEL}:{conversation}"


def duplicate_count(receiver: Receiver, conversations: list[str]) -> int:
    return sum(
        count - 1
        for c in conversations
        for count in Counter(receiver.echoes(c)).values()
        if count > 1
    )


async def sim_wait(
    world: World, predicate: Callable[[SimulatorState], bool], within: float, what: str
) -> None:
    try:
        async with asyncio.timeout(within):
            await world.simulator.state.wait_for(predicate)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {within}s waiting for {what}; simulator "
            f"{world.simulator.state.stats()}\n{world.logs()}"
        ) from None


async def receiver_wait(
    world: World, expected: dict[str, list[str]], within: float, what: str = "every answer"
) -> None:
    try:
        await world.receiver.wait_for(lambda r: r.answered(expected), within)
    except TimeoutError:
        missing = {
            c: sorted(set(msgs) - set(world.receiver.echoes(c)))
            for c, msgs in expected.items()
            if set(msgs) - set(world.receiver.echoes(c))
        }
        raise AssertionError(
            f"timed out after {within}s waiting for {what}; unanswered: {missing}\n" + world.logs()
        ) from None


async def metrics_until(
    bridge: BridgeProcess, predicate: Callable[[str], bool], within: float = 5.0
) -> str:
    """``/metrics`` once ``predicate`` holds for it (the bridge updates counters after the
    network call they count, so a test may see the effect before the counter)."""
    deadline = time.monotonic() + within
    while True:
        status, metrics = await bridge.get("/metrics")
        assert status == 200, metrics
        if predicate(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.05)


# --- 1. SIGKILL during a stream -----------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_during_stream_loses_nothing(world: World, database_url: str) -> None:
    seed = run_seed()
    rng = random.Random(seed)
    kills = 3
    conversations = [f"conv-{i}" for i in range(6)]
    messages = [f"m{i}" for i in range(10)]
    expected = {c: list(messages) for c in conversations}
    world.simulator.state.faults = Faults(latency=0.05, latency_max=0.15)
    bridge = world.bridge(database_url)
    await bridge.start_ready()
    deadline = time.monotonic() + 60
    kill_times: list[float] = []

    async def killer() -> None:
        for _ in range(kills):
            # The random kill point is the point of this test.
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await bridge.kill()
            kill_times.append(time.monotonic())
            await bridge.start_ready()

    async with Sender([bridge.events_url], rng=random.Random(seed + 1)) as sender:
        pauses = random.Random(seed + 2)
        senders = [
            asyncio.create_task(
                sender.send_conversation(
                    c, messages, deadline=deadline, pause=lambda: pauses.uniform(0.02, 0.3)
                ),
                name=f"send-{c}",
            )
            for c in conversations
        ]
        killing = asyncio.create_task(killer(), name="killer")
        try:
            await asyncio.gather(*senders, killing)
        finally:
            for task in (*senders, killing):
                task.cancel()
            await asyncio.gather(*senders, killing, return_exceptions=True)
        sent_done = time.monotonic()
    await receiver_wait(world, expected, within=25)
    # Quiesce: a graceful stop finishes whatever is in flight, so every duplicate is counted.
    assert await bridge.terminate(15) == 0, bridge.stderr()

    receiver = world.receiver
    dups = duplicate_count(receiver, conversations)
    same_outbox = sum(
        n - 1 for n in Counter(d.outbox_id for d in receiver.deliveries).values() if n > 1
    )
    welcomes = Counter(d.conversation_id for d in receiver.deliveries if not d.echoes and d.texts)
    parloa_repeats = sum(
        len(world.parloa_messages(requester(c))) - len(set(world.parloa_messages(requester(c))))
        for c in conversations
    )
    report = (
        f"seed={seed} kills={kills} duplicate answers={dups} (re-sent outbox rows: {same_outbox}), "
        f"welcomes per conversation={dict(welcomes)}, messages Parloa saw twice={parloa_repeats}, "
        f"sender attempts={sender.attempts} refused={sender.refused}, "
        f"kills at {[round(t - kill_times[0], 2) for t in kill_times]}s, "
        f"sending ended {sent_done - kill_times[0]:.2f}s after the first kill"
    )
    print(report)
    for c in conversations:
        assert set(receiver.echoes(c)) == set(messages), f"{c}: {receiver.echoes(c)}; {report}"
        assert receiver.first_answers(c) == messages, (
            f"{c}: first answers out of order: {receiver.first_answers(c)}; {report}"
        )
    assert dups <= kills * len(conversations), report
    assert not receiver.bad_signatures


# --- 2. two processes, one PostgreSQL database ---------------------------------------------------


@pytest.mark.slow
async def test_two_processes_share_one_postgres_database(world: World, database_url: str) -> None:
    skip_unless_replicas_can_share(database_url)
    conversations = [f"conv-{i}" for i in range(10)]
    messages = [f"m{i}" for i in range(8)]
    expected = {c: list(messages) for c in conversations}
    world.simulator.state.faults = Faults(latency=0.02, latency_max=0.08)
    a = world.bridge(database_url, name="bridge-a")
    b = world.bridge(database_url, name="bridge-b")
    # Both start at once: their migrations race on the same empty database.
    await asyncio.gather(a.start_ready(), b.start_ready())
    rng = random.Random(20)
    deadline = time.monotonic() + 30
    async with Sender([a.events_url, b.events_url], rng=rng) as sender:
        await asyncio.gather(
            *(
                sender.send_conversation(
                    c, messages, deadline=deadline, pause=lambda: rng.uniform(0, 0.05)
                )
                for c in conversations
            )
        )
    await receiver_wait(world, expected, within=20)
    metrics = {p.name: (await p.get("/metrics"))[1] for p in (a, b)}
    assert await a.terminate(15) == 0, a.stderr()
    assert await b.terminate(15) == 0, b.stderr()

    inbound = {
        name: metric_value(text, "parloa_bridge_inbound_events_total", outcome="accepted")
        for name, text in metrics.items()
    }
    parloa = {
        name: metric_value(text, "parloa_bridge_parloa_requests_total")
        for name, text in metrics.items()
    }
    print(f"accepted per process: {inbound}; Parloa requests per process: {parloa}")
    receiver = world.receiver
    for c in conversations:
        assert receiver.echoes(c) == messages, f"{c}: {receiver.echoes(c)}"
        assert world.parloa_messages(requester(c)) == messages, (
            f"{c}: Parloa saw {world.parloa_messages(requester(c))}"
        )
        launches = [e for e in world.parloa_events(requester(c)) if e[0] == "launch"]
        assert launches == [("launch", 200)], f"{c}: {world.parloa_events(requester(c))}"
    assert sum(inbound.values()) == len(conversations) * len(messages)
    assert all(v > 0 for v in inbound.values()), inbound
    assert sum(parloa.values()) == len(conversations) * (len(messages) + 1)


# --- 3. SIGTERM drains ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_drains_and_exits_zero(world: World, database_url: str) -> None:
    conversations = [f"conv-{i}" for i in range(5)]
    expected = {c: ["m0"] for c in conversations}
    world.simulator.state.faults = Faults(latency=1.0)
    drain = 10
    bridge = world.bridge(database_url, engine={"drain_timeout_seconds": drain})
    await bridge.start_ready()
    async with Sender([bridge.events_url]) as sender:
        for c in conversations:
            await sender.send(c, "m0", deadline=time.monotonic() + 10)
    await sim_wait(world, lambda s: s.stats().in_flight >= len(conversations), 10, "launches")
    started = time.monotonic()
    code = await bridge.terminate(drain + 5)
    took = time.monotonic() - started
    answered_before_exit = sum(bool(world.receiver.echoes(c)) for c in conversations)
    parloa_before_exit = {c: world.parloa_messages(requester(c)) for c in conversations}
    print(
        f"exit {code} {took:.2f}s after SIGTERM; answers delivered before exit: "
        f"{answered_before_exit}/{len(conversations)}"
    )
    assert code == 0, bridge.stderr()
    assert "Traceback" not in bridge.stderr(), bridge.stderr()
    # The drain let every Parloa call in flight finish, and went on to the message.
    assert parloa_before_exit == expected, parloa_before_exit

    world.simulator.state.faults = Faults()
    await bridge.start_ready()
    await receiver_wait(world, expected, within=15)
    assert await bridge.terminate(15) == 0, bridge.stderr()
    for c in conversations:
        assert world.receiver.echoes(c) == ["m0"], f"{c}: {world.receiver.echoes(c)}"
        # Nothing was asked twice: the drained process committed what Parloa answered.
        assert world.parloa_messages(requester(c)) == ["m0"]
        assert [e for e in world.parloa_events(requester(c)) if e[0] == "launch"] == [
            ("launch", 200)
        ]


@pytest.mark.slow
async def test_sigterm_drain_delivers_the_answers_it_waited_for(
    world: World, tmp_path: Path
) -> None:
    """The drain waits for Parloa's answers; the replies it commits should reach the user
    before the process exits, not only after the next start (``run``: "then drains")."""
    conversations = [f"conv-{i}" for i in range(3)]
    world.simulator.state.faults = Faults(latency=0.5)
    bridge = world.bridge(f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}")
    await bridge.start_ready()
    async with Sender([bridge.events_url]) as sender:
        for c in conversations:
            await sender.send(c, "m0", deadline=time.monotonic() + 10)
    await sim_wait(world, lambda s: s.stats().in_flight >= len(conversations), 10, "launches")
    assert await bridge.terminate(15) == 0, bridge.stderr()
    # Parloa answered every message during the drain ...
    assert all(world.parloa_messages(requester(c)) == ["m0"] for c in conversations)
    # ... and those answers were delivered before the exit.
    undelivered = [c for c in conversations if world.receiver.echoes(c) != ["m0"]]
    assert not undelivered, (
        f"answers committed during the drain but not delivered before exit: {undelivered} "
        f"(welcomes delivered: {len(world.receiver.deliveries)})\n{bridge.stderr()}"
    )


# --- 4. the leases of a killed process ---------------------------------------------------------


@pytest.mark.slow
async def test_killed_process_leases_are_recovered(world: World, database_url: str) -> None:
    conversations = [f"conv-{i}" for i in range(4)]
    expected = {c: ["m0", "m1"] for c in conversations}
    lease = 30.0  # far longer than the test waits: the takeover is not the lease running out
    world.simulator.state.faults = Faults(latency=3.0)
    first = world.bridge(database_url, name="first", engine={"lease_seconds": lease})
    await first.start_ready()
    async with Sender([first.events_url]) as sender:
        for c in conversations:
            for m in expected[c]:
                await sender.send(c, m, deadline=time.monotonic() + 10)
    await sim_wait(world, lambda s: s.stats().in_flight >= len(conversations), 10, "launches")
    await first.kill()
    killed_at = time.monotonic()
    before = len(world.simulator.state.requests)
    world.simulator.state.faults = Faults(latency=0.1)

    second = world.bridge(database_url, name="second", engine={"lease_seconds": lease})
    await second.start_ready()
    ready = time.monotonic() - killed_at
    await receiver_wait(world, expected, within=20)
    assert await second.terminate(15) == 0, second.stderr()

    recovered = list(world.simulator.state.requests)[before:]
    first_retry = {
        c: min(r.at for r in recovered if r.requester_id == requester(c)) - killed_at
        for c in conversations
    }
    print(f"first request of the new process after the kill (s): {first_retry}; ready {ready:.2f}s")
    # The dead process's lock ended with it (bridge/store/liveness.py): the new process took
    # its conversations over at its first scan, not when their leases ran out.
    for c, after in first_retry.items():
        assert after <= ready + 3.0 < lease, f"{c}: taken over {after:.2f}s after the kill"
    for c in conversations:
        assert world.receiver.echoes(c) == ["m0", "m1"], f"{c}: {world.receiver.echoes(c)}"


# --- 5. the CLI --------------------------------------------------------------------------------


GOOD_CONFIG = f"""
[database]
url = "sqlite+aiosqlite:///bridge.db"

[http]
host = "127.0.0.1"
port = 18080

[bots.demo]
release_id = "rel-1"
api_token = "{API_TOKEN}"
base_url = "http://127.0.0.1:9"

[[channels]]
name = "web"
type = "webhook"
bot = "demo"
secret = "env:PB_TEST_WEBHOOK_SECRET"
deliver_url = "http://127.0.0.1:9/deliver"
"""

# Each broken config: (the change, a fragment the error line names).
BROKEN: dict[str, tuple[str, str]] = {
    "unknown key": ("[http]\n", "[http]\ncolour = 'red'\n"),
    "missing bot field": ('release_id = "rel-1"\n', ""),
    "bad channel type": ('type = "webhook"', 'type = "carrier-pigeon"'),
    "env var missing": ("env:PB_TEST_WEBHOOK_SECRET", "env:PB_TEST_NOT_SET"),
    "bad port": ("port = 18080", "port = 99999"),
}
BROKEN_NAMES = {
    "unknown key": "http.colour",
    "missing bot field": "bots.demo.release_id",
    "bad channel type": "carrier-pigeon",
    "env var missing": "PB_TEST_NOT_SET",
    "bad port": "http.port",
}
SECRET_ENV = {"PB_TEST_WEBHOOK_SECRET": SECRET}


def broken(*problems: str) -> str:
    config = GOOD_CONFIG
    for problem in problems:
        old, new = BROKEN[problem]
        assert old in config
        config = config.replace(old, new, 1)
    return config


async def check_config(tmp_path: Path, config: str) -> tuple[int, str, str]:
    """``parloa-bridge check-config`` on ``config`` written to a file in ``tmp_path``."""
    path = tmp_path / "bridge.toml"
    path.write_text(config)
    return await bridge_command("check-config", "--config", str(path), env=SECRET_ENV, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("problem", sorted(BROKEN))
async def test_check_config_reports_one_problem(tmp_path: Path, problem: str) -> None:
    code, out, err = await check_config(tmp_path, broken(problem))
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), err
    assert BROKEN_NAMES[problem] in lines[0], err


@pytest.mark.slow
async def test_check_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    code, out, err = await check_config(tmp_path, broken(*BROKEN))
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("config error: ") for line in lines), err
    missing = [p for p, name in BROKEN_NAMES.items() if not any(name in line for line in lines)]
    assert not missing, f"problems not reported: {missing}; stderr:\n{err}"
    assert len(lines) == len(BROKEN), err


@pytest.mark.slow
async def test_check_config_good_summary_hides_secrets(tmp_path: Path) -> None:
    code, out, err = await check_config(tmp_path, GOOD_CONFIG)
    assert code == 0, (out, err)
    assert "valid" in out and '"web"' in out and '"demo"' in out, out
    for secret in (API_TOKEN, SECRET):
        assert secret not in out and secret not in err


@pytest.mark.slow
async def test_migrate_and_schema_checks(tmp_path: Path, database_url: str) -> None:
    def config(auto_migrate: bool) -> Path:
        path = tmp_path / f"bridge-{auto_migrate}.toml"
        write_config(
            path,
            database_url=database_url,
            port=free_port(),
            parloa_url="http://127.0.0.1:9",
            channel=webhook_channel("http://127.0.0.1:9/deliver"),
            database={"auto_migrate": auto_migrate},
        )
        return path

    manual, auto = config(False), config(True)

    def error_lines(err: str) -> list[str]:
        return [line for line in err.splitlines() if line.startswith("parloa-bridge: ")]

    # run on an empty database without auto_migrate: one line naming the command to run
    code, out, err = await bridge_command("run", "--config", str(manual), cwd=tmp_path)
    assert code == 1, (out, err)
    assert "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1 and "parloa-bridge migrate" in lines[0], err

    code, out, err = await bridge_command("migrate", "--config", str(manual), cwd=tmp_path)
    assert code == 0, (out, err)
    assert "Traceback" not in err, err
    code, out, err = await bridge_command("migrate", "--config", str(manual), cwd=tmp_path)
    assert code == 0, (out, err)  # idempotent

    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    finally:
        await engine.dispose()
    for args in (("migrate", "--config", str(manual)), ("run", "--config", str(auto))):
        code, out, err = await bridge_command(*args, cwd=tmp_path)
        assert code == 1, (args, out, err)
        assert "Traceback" not in err, err
        lines = error_lines(err)
        assert len(lines) == 1 and "newer" in lines[0] and "ffff" in lines[0], (args, err)


# --- 6. health, readiness, metrics -------------------------------------------------------------


@pytest.mark.slow
async def test_health_readiness_and_metrics(world: World, tmp_path: Path) -> None:
    bridge = world.bridge(f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}")
    ready = await bridge.start_ready()
    assert ready["database"] == "ok", ready
    assert ready["channels"][CHANNEL]["state"] == "started", ready
    assert ready["bots"]["demo"]["state"] == "ok", ready
    assert await bridge.get("/healthz") == (200, '{"status": "ok"}')

    async with Sender([bridge.events_url]) as sender:
        await sender.send("conv-0", "hello", deadline=time.monotonic() + 10)
    await receiver_wait(world, {"conv-0": ["hello"]}, within=10)
    # The receiver has the answer before the bridge counted it as sent: poll briefly.
    metrics = await metrics_until(
        bridge, lambda m: metric_value(m, "parloa_bridge_deliveries_total", outcome="sent") == 2
    )
    names = {m.group(1) for m in re.finditer(r"^([a-z_]+)(?:\{| )", metrics, re.MULTILINE)}
    missing = [n for n in REQUIRED_METRICS if n not in names]
    assert not missing, f"missing metrics {missing}:\n{metrics}"
    assert metric_value(metrics, "parloa_bridge_inbound_events_total", outcome="accepted") == 1
    assert metric_value(metrics, "parloa_bridge_parloa_requests_total", status="200") == 2
    assert metric_value(metrics, "parloa_bridge_deliveries_total", outcome="sent") == 2
    assert await bridge.terminate(15) == 0, bridge.stderr()


@pytest.mark.slow
async def test_refused_token_shows_on_readyz(world: World, tmp_path: Path) -> None:
    world.simulator.state.token = "the-right-token"
    bridge = world.bridge(f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}", api_token="wrong-one")
    await bridge.start_ready()
    async with Sender([bridge.events_url]) as sender:
        await sender.send("conv-0", "hello", deadline=time.monotonic() + 10)
    # The user is told the assistant is unavailable; the bot is marked refused.
    await world.receiver.wait_for(lambda r: bool(r.deliveries), 10)
    status, body = await bridge.get("/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready["bots"]["demo"]["state"] == "refused", ready
    assert "401" in ready["bots"]["demo"]["reason"], ready
    assert "wrong-one" not in body and "wrong-one" not in bridge.stderr()
    _status, metrics = await bridge.get("/metrics")
    assert metric_value(metrics, "parloa_bridge_bot_refused", bot="demo") == 1
    assert await bridge.terminate(15) == 0, bridge.stderr()
