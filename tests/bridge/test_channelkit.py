"""The adapter kit: Retry-After parsing, the background task set, the retry loop by kind of
failure (on a fake clock: no test here sleeps)."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.channelkit import (
    MAX_RETRY_AFTER_SECONDS,
    PERMANENT,
    TRANSIENT,
    Backoff,
    ErrorKind,
    Retrier,
    TaskSet,
    Verdict,
    retry_after_seconds,
)

NOW = datetime(2030, 5, 17, 12, 0, 0, tzinfo=UTC).timestamp()


# --- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),  # not RFC delta-seconds, but servers send it and it means what it says
        ("-1", 0.0),  # a negative wait is no wait
        ("inf", MAX_RETRY_AFTER_SECONDS),  # a server asking for ever is capped, not obeyed
        ("Infinity", MAX_RETRY_AFTER_SECONDS),
        ("1e309", MAX_RETRY_AFTER_SECONDS),  # overflows to inf
        ("99999999999", MAX_RETRY_AFTER_SECONDS),
        ("nan", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("soon", None),
        ("12abc", None),
        ("Fri, 99 Foo 2030 25:61:00 GMT", None),
        (120, 120.0),
        (2.5, 2.5),
        (-3, 0.0),
        (math.inf, MAX_RETRY_AFTER_SECONDS),
        (math.nan, None),
        (True, None),  # a bool is not a number of seconds
        (timedelta(seconds=3), 3.0),
        (timedelta(days=365), MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_retry_after_values(value: str | float | timedelta | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_an_http_date_is_measured_from_now() -> None:
    future = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert future.endswith("GMT")
    assert retry_after_seconds(future, now=NOW) == 90.0
    past = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert retry_after_seconds(past, now=NOW) == 0.0
    far = format_datetime(datetime.fromtimestamp(NOW + 10 * 86400, UTC), usegmt=True)
    assert retry_after_seconds(far, now=NOW) == MAX_RETRY_AFTER_SECONDS
    # "-0000" (no zone said) is UTC, whatever this host's zone is
    assert retry_after_seconds("Fri, 17 May 2030 12:01:00 -0000", now=NOW) == 60.0
    assert retry_after_seconds("Fri, 17 May 2030 14:01:00 +0200", now=NOW) == 60.0


def test_the_cap_is_the_callers() -> None:
    assert retry_after_seconds("120", maximum=60) == 60.0
    assert retry_after_seconds("inf", maximum=60) == 60.0
    assert retry_after_seconds("30", maximum=60) == 30.0
    assert retry_after_seconds("30", maximum=0) == 0.0
    for bad in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="maximum"):
            retry_after_seconds("30", maximum=bad)


@settings(derandomize=True, max_examples=300, deadline=None, database=None)
@given(
    value=st.one_of(
        st.text(max_size=40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.none(),
    ),
    maximum=st.floats(min_value=0, max_value=1e9),
)
def test_the_answer_is_always_finite_and_within_the_cap(
    value: str | float | None, maximum: float
) -> None:
    seconds = retry_after_seconds(value, maximum=maximum, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and 0.0 <= seconds <= maximum)


# --- the task set -------------------------------------------------------------------------


async def test_tasks_are_named_kept_until_done_and_forgotten_after() -> None:
    tasks = TaskSet(logging.getLogger("test.kit"))
    release = asyncio.Event()
    task = tasks.spawn(release.wait(), "waiting-one")
    assert task.get_name() == "waiting-one"
    assert len(tasks) == 1
    release.set()
    await task
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert len(tasks) == 0


async def test_a_failure_is_logged_with_the_tasks_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet(logging.getLogger("test.kit"))

    async def broken() -> None:
        raise RuntimeError("boom")

    task = tasks.spawn(broken(), "broken-one")
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    failures = [r for r in caplog.records if r.name == "test.kit"]
    assert [r.getMessage() for r in failures] == ["background task broken-one failed"]
    assert failures[0].exc_info is not None and "boom" in str(failures[0].exc_info[1])
    assert len(tasks) == 0


async def test_close_cancels_and_awaits_every_task_even_one_spawned_while_closing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet(logging.getLogger("test.kit"))
    started = asyncio.Event()
    late: list[asyncio.Task[object]] = []
    cleaned: list[str] = []

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            late.append(tasks.spawn(asyncio.Event().wait(), "spawned-while-closing"))
            cleaned.append("stubborn")

    first = tasks.spawn(stubborn(), "stubborn")
    await started.wait()
    await tasks.close()
    assert first.cancelled() and cleaned == ["stubborn"]
    assert late and late[0].cancelled()
    assert len(tasks) == 0
    assert not [r for r in caplog.records if r.name == "test.kit"]  # cancelling is no failure
    # usable again (an adapter started again after a stop)
    again = tasks.spawn(asyncio.sleep(0), "again")
    await again
    await tasks.close()


# --- the retry loop -----------------------------------------------------------------------


class FakeSleep:
    """Records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def longest(low: float, high: float) -> float:
    return high


class Script:
    """A call that fails with the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Flood(Exception):
    def __init__(self, seconds: float | None) -> None:
        super().__init__(f"flood {seconds}")
        self.seconds = seconds


class Refused(Exception):
    pass


def classify(exc: Exception) -> Verdict:
    if isinstance(exc, Flood):
        return Verdict.rate_limited(exc.seconds)
    if isinstance(exc, Refused):
        return PERMANENT
    return TRANSIENT


async def test_transient_failures_back_off_exponentially_up_to_the_cap() -> None:
    sleep = FakeSleep()
    retrier = Retrier(Backoff(initial=1, maximum=10), sleep=sleep, draw=longest)
    call = Script(*[OSError("network")] * 6)
    assert await retrier.run(call, classify) == "ok"
    assert sleep.waits == [1, 2, 4, 8, 10, 10]
    assert call.calls == 7
    assert retrier.failures == 0  # the success reset it


async def test_jitter_draws_between_half_and_the_whole_wait() -> None:
    drawn: list[tuple[float, float]] = []

    def draw(low: float, high: float) -> float:
        drawn.append((low, high))
        return low

    sleep = FakeSleep()
    retrier = Retrier(Backoff(initial=2, maximum=60), sleep=sleep, draw=draw)
    await retrier.run(Script(OSError(), OSError()), classify)
    assert drawn == [(1.0, 2.0), (2.0, 4.0)]
    assert sleep.waits == [1.0, 2.0]


async def test_a_rate_limit_waits_what_the_server_said_capped_and_is_not_counted() -> None:
    sleep = FakeSleep()
    retrier = Retrier(Backoff(initial=1, max_retry_after=30), sleep=sleep, draw=longest)
    call = Script(OSError(), Flood(7), Flood(math.inf), Flood(1e12), OSError())
    assert await retrier.run(call, classify) == "ok"
    # the second transient failure is the second one counted: the floods did not count
    assert sleep.waits == [1, 7, 30, 30, 2]


async def test_a_rate_limit_without_a_usable_wait_backs_off() -> None:
    """None, NaN or 0 from the server: the backoff applies (and counts), so a server that
    keeps saying "slow down, by 0 s" is not hammered in a tight loop."""
    sleep = FakeSleep()
    retrier = Retrier(Backoff(initial=1), sleep=sleep, draw=longest)
    await retrier.run(Script(Flood(None), Flood(math.nan), Flood(0), Flood(-5)), classify)
    assert sleep.waits == [1, 2, 4, 8]


async def test_a_permanent_failure_is_raised_at_once() -> None:
    sleep = FakeSleep()
    call = Script(OSError(), Refused("bad token"))
    with pytest.raises(Refused):
        await Retrier(sleep=sleep, draw=longest).run(call, classify)
    assert call.calls == 2
    assert sleep.waits == [1]  # only the transient failure before it was waited out


async def test_at_most_max_attempts() -> None:
    sleep = FakeSleep()
    call = Script(*[OSError(str(i)) for i in range(5)])
    with pytest.raises(OSError, match=r"^2$"):
        await Retrier(sleep=sleep, draw=longest).run(call, classify, max_attempts=3)
    assert call.calls == 3
    assert len(sleep.waits) == 2


async def test_each_failure_is_shown_to_the_adapter_with_its_verdict() -> None:
    seen: list[tuple[str, ErrorKind]] = []
    call = Script(OSError("a"), Flood(3), Refused("c"))
    with pytest.raises(Refused):
        await Retrier(sleep=FakeSleep()).run(
            call, classify, on_failure=lambda exc, verdict: seen.append((str(exc), verdict.kind))
        )
    assert seen == [
        ("a", ErrorKind.TRANSIENT),
        ("flood 3", ErrorKind.RATE_LIMITED),
        ("c", ErrorKind.PERMANENT),
    ]


async def test_failures_count_on_across_runs_until_one_succeeds() -> None:
    """A loop that repeats an action for good (polling) keeps one Retrier: a turn that failed
    after an earlier failed turn waits longer; a successful turn starts over."""
    sleep = FakeSleep()
    retrier = Retrier(Backoff(initial=1), sleep=sleep, draw=longest)
    retrier.failures = 2  # two failed turns before
    await retrier.run(Script(OSError()), classify)
    assert sleep.waits == [4]
    await retrier.run(Script(OSError()), classify)
    assert sleep.waits == [4, 1]
    retrier.failures = 3
    retrier.reset()
    assert retrier.failures == 0


async def test_cancelling_is_not_a_failure() -> None:
    sleep = FakeSleep()

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await Retrier(sleep=sleep).run(cancelled, classify)
    assert sleep.waits == []


def test_backoff_does_not_overflow_after_very_many_failures() -> None:
    backoff = Backoff(initial=1, maximum=60, factor=10)
    assert backoff.delay(10**6, longest) == 60
    assert backoff.delay(1, longest) == 1
    assert backoff.delay(0, longest) == 1
