"""The circuit breaker per bot (bridge/engine/breaker.py): its pure state machine, the parked
step (lifecycle.park), the store's release of waiting events (SQLite and PostgreSQL), and the
engine with the simulator: when Parloa recovers, every waiting conversation is answered at
once, in order; /readyz and the metrics show the breaker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import EngineConfig, MessagesConfig
from bridge.devtools.simulator import Faults, RunningSimulator
from bridge.engine import Engine, lifecycle
from bridge.engine.breaker import (
    Breaker,
    BreakerPolicy,
    Breakers,
    BreakerState,
    abandoned,
    admit,
    answered,
    failed,
    is_outage,
)
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.store.schema import conversations, inbox
from bridge.textchat.errors import (
    BadRequest,
    RateLimited,
    ServerError,
    SessionNotFound,
    TextchatTimeout,
    Unauthorized,
)
from bridge.vocabulary import DeadLetter, InboundKind, InboxItem, InboxStatus, RetryLater
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.database import closing, engine_for
from tests.support.engine import FAST, Harness, harness, inbound
from tests.support.rows import rows, set_columns
from tests.support.service import running_service, service_url
from tests.support.waiting import poll_until

POLICY = BreakerPolicy(failures=3, window=10.0, probe_min=1.0, probe_max=5.0)
T0 = 1_000_000.0


def fail_times(b: Breaker, *times: float) -> Breaker:
    for at in times:
        b = failed(b, POLICY, at)
    return b


# --- the state machine ------------------------------------------------------------------------


def test_opens_after_n_transient_failures_in_a_row() -> None:
    b = fail_times(Breaker(), T0, T0 + 1)
    assert (b.state, b.failures) == (BreakerState.CLOSED, 2)
    b = failed(b, POLICY, T0 + 2)
    assert (b.state, b.failures, b.since) == (BreakerState.OPEN, 3, T0 + 2)
    assert b.probe_at == T0 + 3  # the first probe: probe_min later


def test_an_answer_resets_the_count_and_old_failures_leave_the_window() -> None:
    b = answered(fail_times(Breaker(), T0, T0 + 1), T0 + 2)
    assert (b.state, b.failures) == (BreakerState.CLOSED, 0)
    assert fail_times(b, T0 + 3, T0 + 4, T0 + 5).state is BreakerState.OPEN
    # Two failures, then a third after the window: the count starts again.
    b = fail_times(Breaker(), T0, T0 + 1, T0 + 1 + POLICY.window + 1)
    assert (b.state, b.failures) == (BreakerState.CLOSED, 1)


def test_never_opens_with_zero_failures_configured() -> None:
    off = BreakerPolicy(failures=0)
    b = Breaker()
    for k in range(50):
        b = failed(b, off, T0 + k * 0.1)
    assert b.state is BreakerState.CLOSED


def test_open_lets_one_probe_through_at_its_time() -> None:
    b = fail_times(Breaker(), T0, T0, T0)
    assert admit(b, T0 + 0.5) == (b, False)  # before the probe time: the event waits
    probing, allowed = admit(b, T0 + 1)
    assert allowed and probing.state is BreakerState.HALF_OPEN
    assert admit(probing, T0 + 2) == (probing, False)  # one probe at a time
    assert admit(Breaker(), T0) == (Breaker(), True)  # closed: every call goes


def test_a_failed_probe_doubles_the_interval_up_to_the_cap() -> None:
    b = fail_times(Breaker(), T0, T0, T0)
    intervals = []
    now = T0
    for _ in range(5):
        now = b.probe_at
        b, allowed = admit(b, now)
        assert allowed
        b = failed(b, POLICY, now)
        assert b.state is BreakerState.OPEN and b.since == T0
        intervals.append(b.probe_at - now)
    assert intervals == [2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_probe_that_answers_closes_it() -> None:
    b, _ = admit(fail_times(Breaker(), T0, T0, T0), T0 + 1)
    closed = answered(b, T0 + 1.2)
    assert closed == Breaker(BreakerState.CLOSED, since=T0 + 1.2)
    # A call in flight when it opened and answering later closes it too: Parloa answers.
    assert answered(fail_times(Breaker(), T0, T0, T0), T0 + 0.3).state is BreakerState.CLOSED


def test_an_abandoned_probe_lets_the_next_call_probe_at_once() -> None:
    b, _ = admit(fail_times(Breaker(), T0, T0, T0), T0 + 1)
    b = abandoned(b, T0 + 3)
    assert (b.state, b.probe_at) == (BreakerState.OPEN, T0 + 3)
    assert admit(b, T0 + 3)[1]
    assert abandoned(Breaker(), T0) == Breaker()


def test_outages_are_the_retryable_failures_where_parloa_did_not_answer() -> None:
    assert is_outage(ServerError("down", status=503))
    assert is_outage(RateLimited("slow down"))
    assert is_outage(TextchatTimeout("read timeout"))
    assert not is_outage(BadRequest("bad", status=400))
    assert not is_outage(Unauthorized("token", status=401))
    assert not is_outage(SessionNotFound("gone", status=404))
    assert not is_outage(ValueError("a bug"))


async def test_the_shell_probes_while_open_and_releases_everyone_when_it_closes() -> None:
    calls: list[tuple[str, int | None]] = []

    async def release(bot: str, limit: int | None) -> int:
        calls.append((bot, limit))
        return 1

    metrics = Metrics()
    breakers = Breakers(BreakerPolicy(failures=2, probe_min=0.2, probe_max=0.4), metrics, ["bot"])
    breakers.start(release)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"parloa_bridge_{name}", {"bot": "bot"})

    try:
        assert breakers.admits("bot") and sample("breaker_open") == 0
        breakers.failed("bot")
        breakers.failed("bot")
        assert not breakers.admits("bot")  # open: the event is parked
        assert sample("breaker_open") == 1 and sample("breaker_openings_total") == 1
        await poll_until(lambda: calls == [("bot", 1)], within=5)  # one waiting event made due
        assert breakers.admits("bot")  # its call is the probe
        assert not breakers.admits("bot")  # one at a time
        assert breakers.status()["bot"]["state"] == "half-open"
        breakers.answered("bot")
        await poll_until(lambda: calls[-1:] == [("bot", None)], within=5)  # everyone released
        assert breakers.admits("bot") and sample("breaker_open") == 0
        assert breakers.status()["bot"] == {
            "state": "closed",
            "since": breakers.status()["bot"]["since"],
            "failures": 0,
        }
    finally:
        await breakers.stop()


# --- the parked step ----------------------------------------------------------------------------

CONFIG = EngineConfig(retry_budget_seconds=900, retry_max_seconds=60)


def item(attempts: int, created_at: float) -> InboxItem:
    return InboxItem(
        id=7,
        conversation_id=3,
        channel="test",
        event_id="e7",
        kind=InboundKind.TEXT,
        text="hi",
        address={"chat": 1},
        context=None,
        status=InboxStatus.PENDING,
        attempts=attempts,
        next_attempt_at=created_at,
        last_error=None,
        created_at=created_at,
        finished_at=None,
    )


def test_a_parked_event_waits_a_retry_interval_and_counts_as_tried() -> None:
    step = lifecycle.park(item(0, T0), T0 + 5, CONFIG, MessagesConfig(), "breaker open")
    assert step.outcome == RetryLater(1, T0 + 65, "breaker open") and not step.replies
    # Never past the retry budget: the last wait ends where the budget does.
    late = lifecycle.park(item(4, T0), T0 + 880, CONFIG, MessagesConfig(), "breaker open")
    assert late.outcome == RetryLater(4, T0 + 900, "breaker open")


def test_a_parked_event_past_its_budget_is_a_dead_letter_with_a_notice() -> None:
    step = lifecycle.park(item(4, T0), T0 + 900, CONFIG, MessagesConfig(), "breaker open")
    assert isinstance(step.outcome, DeadLetter) and "gave up" in step.outcome.reason
    assert step.replies[0].elements == [lifecycle.text_element(MessagesConfig().unavailable)]


# --- the store: waiting events released (SQLite and PostgreSQL) ---------------------------------


async def waiting_event(store: Store, channel: str, key: str, wait: float) -> int:
    """A pending event of conversation ``key`` whose next attempt is ``wait`` s away."""
    _, cid = await store.accept(
        channel=channel,
        event_id=f"{channel}-{key}-{wait}",
        conversation_key=key,
        requester_id=f"user-{key}",
        kind=InboundKind.TEXT,
        text="hi",
        address={"chat": key},
        context=None,
    )
    (row,) = await rows(store.engine, inbox, inbox.c.event_id == f"{channel}-{key}-{wait}")
    at = time.time() + wait
    await set_columns(store.engine, inbox, row["id"], attempts=1, next_attempt_at=at)
    await set_columns(store.engine, conversations, cid, due_at=at, lease_owner=None)
    return cid


async def test_release_waiting_makes_a_bots_waiting_events_due_now(store: Store) -> None:
    first = await waiting_event(store, "tg", "a", 600)
    second = await waiting_event(store, "slack", "b", 300)
    other_bot = await waiting_event(store, "hook", "c", 600)
    due_already = await waiting_event(store, "tg", "d", -5)
    assert await store.release_waiting(["tg", "slack"], limit=1) == [first]  # oldest first
    assert await store.release_waiting(["tg", "slack"]) == [second]
    assert await store.release_waiting(["tg", "slack"]) == []
    now = time.time()
    due = set(await store.due_conversations(10))
    assert {first, second, due_already} <= due and other_bot not in due
    for row in await rows(store.engine, inbox):
        released = row["channel"] in ("tg", "slack")
        assert (row["next_attempt_at"] <= now) == released, row
    assert await store.release_waiting([]) == []


# --- the engine: recover together --------------------------------------------------------------

#: Backoff long enough that an event waiting out its own timer would miss the bound below.
RECOVERY = FAST.model_copy(
    update={
        "retry_initial_seconds": 20.0,
        "retry_max_seconds": 60.0,
        "breaker_failures": 3,
        "breaker_probe_max_seconds": 0.5,
    }
)


def gauge(h: Harness, name: str) -> float | None:
    return h.engine.metrics.registry.get_sample_value(f"parloa_bridge_{name}", {"bot": "bot"})


async def all_tried(h: Harness) -> bool:
    """Every pending event at the head of its conversation was tried or parked."""
    pending = await rows(h.store.engine, inbox, inbox.c.status == "pending")
    heads: dict[int, int] = {}
    for row in pending:
        heads.setdefault(row["conversation_id"], row["attempts"])
    return len(heads) == 20 and all(attempts > 0 for attempts in heads.values())


async def outage_then_recovery(h: Harness, sim: RunningSimulator, outage: float) -> float:
    """20 conversations with two messages each waiting through an outage of at least
    ``outage`` s; returns the seconds from Parloa's recovery to the last answer."""
    n = 20
    for i in range(n):  # sessions open first: the outage hits messages
        await h.send(f"c{i}", "m0")
    await h.adapter.wait_for(lambda: len(h.adapter.sent) == 3 * n, within=30)
    sim.state.faults = Faults(failure_rate=1.0, failure_status=503)
    started = time.monotonic()
    for k in (1, 2):
        for i in range(n):
            await h.send(f"c{i}", f"m{k}")
    await poll_until(lambda: h.engine.breaker_status()["bot"]["state"] != "closed", within=30)
    await poll_until(lambda: all_tried(h), within=30)
    assert gauge(h, "breaker_open") == 1 and gauge(h, "breaker_openings_total") == 1
    await asyncio.sleep(max(0.0, outage - (time.monotonic() - started)))  # the outage itself
    recovered = time.monotonic()
    sim.state.faults = Faults()
    await h.adapter.wait_for(lambda: len(h.adapter.sent) == 5 * n, within=outage + 60)
    elapsed = time.monotonic() - recovered
    for i in range(n):
        assert h.adapter.texts(f"c{i}")[1:] == [f"You said: m{k}" for k in range(3)]
        assert [t for e, t in h.events(f"c{i}") if e == "message"] == ["m0", "m1", "m2"]
    assert h.engine.breaker_status()["bot"]["state"] == "closed"
    assert gauge(h, "breaker_open") == 0
    return elapsed


async def test_waiting_conversations_are_answered_together_when_parloa_recovers(
    store: Store, sim: RunningSimulator
) -> None:
    async with harness(store, sim, RECOVERY) as h:
        elapsed = await outage_then_recovery(h, sim, outage=0.0)
    # Their own timers (20 s and more) would hold them far longer.
    assert elapsed < 5, f"the last waiting message was answered {elapsed:.1f}s after recovery"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    async with (
        engine_for(sqlite_url(tmp_path), migrated=True) as eng,
        closing(Store(eng)) as st,
    ):
        yield st


@pytest.mark.slow
async def test_a_60s_outage_under_default_settings(
    sqlite_store: Store, sim: RunningSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's figure: Parloa down for 60 s under 20 conversations, the engine's default
    retry and breaker settings; every waiting message answered within 10 s of recovery."""
    defaults = EngineConfig(idle_timeout_seconds=0, retention_days=0)
    async with harness(sqlite_store, sim, defaults) as h:
        elapsed = await outage_then_recovery(h, sim, outage=60.0)
    with capsys.disabled():
        print(f"\n60 s outage, 20 conversations: last answer {elapsed:.2f}s after recovery")
    assert elapsed < 10


# --- /readyz ----------------------------------------------------------------------------------


async def test_readyz_shows_the_breaker_and_stays_ready(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    hook = {
        "name": "hook",
        "type": "webhook",
        "secret": "breaker-secret-0123456789",
        "deliver_url": "http://127.0.0.1:9/deliver",
    }
    data = config_data(sqlite_url(tmp_path), sim.url, hook, engine={"breaker_failures": 2})
    sim.state.faults = Faults(failure_rate=1.0, failure_status=503)
    async with running_service(service_config(data)) as service, aiohttp.ClientSession() as http:
        assert service.engine is not None
        url = f"{service_url(service)}/readyz"

        async def breaker() -> dict[str, Any]:
            async with http.get(url) as resp:
                assert resp.status == 200  # open does not make the bridge unready
                body = json.loads(await resp.text())
                return dict(body["bots"]["demo"]["breaker"])

        assert (await breaker())["state"] == "closed"
        intake = service.engine.intake("hook")
        for k in range(2):
            await intake.accept(inbound(f"u{k}", "hello"))
        await poll_until(lambda: service.engine is not None and opened(service.engine), within=20)
        shown = await breaker()
        assert shown["state"] in ("open", "half-open") and shown["failures"] >= 2
        assert isinstance(shown["since"], float) and abs(shown["since"] - time.time()) < 30
        sim.state.faults = Faults()
        await poll_until(lambda: closed_again(service.engine), within=20)
        assert (await breaker())["state"] == "closed"


def opened(engine: Engine) -> bool:
    return bool(engine.breaker_status()["demo"]["state"] != "closed")


def closed_again(engine: Engine | None) -> bool:
    return engine is not None and engine.breaker_status()["demo"]["state"] == "closed"
