"""The polling loop on its own: a scripted bot, an in-memory intake and a fake clock. What it
must keep doing whatever fails: wait out flood control, back off on the rest, never confirm
an update that was not stored, never end. (End to end against the fake Bot API:
test_channel.py and test_process.py beside this one.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter

from adapters.telegram.options import TelegramOptions
from adapters.telegram.polling import POLL_BACKOFF, Poller, poll_verdict
from bridge.channel import IntakeUnavailable
from bridge.channelkit import ErrorKind, Retrier
from tests.support.intake import MemoryIntake, MemoryState

TOKEN = "123456:ABC-test-token-0123456789abcdef"


class ScriptedBot:
    """getUpdates as Telegram answers it: updates below the offset are confirmed and dropped,
    the rest handed out again until confirmed. Each call takes the next step of the script:
    an error to raise, or new updates arriving; once the script is spent it blocks like an
    idle long poll."""

    def __init__(self, *script: Sequence[int] | Exception) -> None:
        self.script = list(script)
        self.pending: list[int] = []
        self.offsets: list[int | None] = []
        self.webhook_deletes = 0

    async def get_raw_updates(
        self, offset: int | None, poll_seconds: int, read_timeout: float
    ) -> list[Any]:
        self.offsets.append(offset)
        if offset is not None:
            self.pending = [i for i in self.pending if i >= offset]
        if not self.script:
            await asyncio.Event().wait()
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        self.pending += step
        return [{"update_id": i} for i in self.pending]

    async def delete_webhook(self, drop_pending_updates: bool | None = None) -> bool:
        self.webhook_deletes += 1
        return True


class Store:
    """Stores a batch (or fails as told) and returns the offset after it."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.stored: list[int] = []

    async def __call__(self, intake: Any, updates: Sequence[Any], offset: int | None) -> int | None:
        if not updates:
            return offset
        if self.failures:
            self.failures -= 1
            raise IntakeUnavailable("database down")
        self.stored += [u["update_id"] for u in updates]
        return int(updates[-1]["update_id"]) + 1


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


OPTIONS = TelegramOptions.model_validate({"token": TOKEN, "poll_timeout_seconds": 1})


@asynccontextmanager
async def polling(
    bot: ScriptedBot, store: Store, state: MemoryState, sleep: FakeSleep
) -> AsyncIterator[Poller]:
    retrier = Retrier(POLL_BACKOFF, sleep=sleep, draw=lambda _low, high: high)
    poller = Poller("tg", bot, OPTIONS, store, retrier)
    task = asyncio.create_task(
        poller.run(MemoryIntake("tg", state, instance_id="me")), name="poller-under-test"
    )
    try:
        yield poller
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool]) -> None:
    """The fake clock never sleeps: the poller gets there within a few turns of the loop."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_failures_back_off_and_a_batch_is_confirmed_only_after_it_was_stored() -> None:
    bot = ScriptedBot(
        NetworkError("down"),
        Conflict("another poller"),
        InvalidToken("revoked?"),  # logged as an error, but polling goes on
        [10, 11],
        [12],
    )
    store, sleep = Store(failures=1), FakeSleep()
    async with polling(bot, store, MemoryState({"offset": "10"}), sleep) as poller:
        await until(lambda: store.stored == [10, 11, 12] and len(bot.offsets) == 6)
        assert poller.role == "leader"
    # from the stored offset; a batch that could not be stored is not confirmed (asked for
    # again from the same offset, and handed out again with what arrived since)
    assert bot.offsets == [10, 10, 10, 10, 10, 13]
    # three failures in a row: 1, 2, 4 s; Telegram answered, then storing failed: 1 s again
    assert sleep.waits == [1, 2, 4, 1]
    assert bot.webhook_deletes == 1


async def test_flood_control_is_waited_out_as_told_and_not_counted_as_a_failure() -> None:
    bot = ScriptedBot(NetworkError("down"), RetryAfter(7), NetworkError("down"), [1])
    store, sleep = Store(), FakeSleep()
    async with polling(bot, store, MemoryState(), sleep):
        await until(lambda: store.stored == [1])
    assert sleep.waits == [1, 7, 2]


async def test_an_unforeseen_error_starts_over_from_the_lease_and_the_stored_offset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The offset read right after winning the lease fails (a database blip): logged with a
    traceback, then the poller becomes leader again and reads the offset anew."""
    bot = ScriptedBot([5])
    store, sleep = Store(), FakeSleep()
    state = MemoryState({"offset": "5"}, fail_reads=2)
    with caplog.at_level(logging.INFO, logger="adapters.telegram"):
        async with polling(bot, store, state, sleep) as poller:
            await until(lambda: store.stored == [5])
            assert poller.role == "leader"
    assert bot.offsets[0] == 5  # not None: the offset was read once the database was back
    assert sleep.waits == [1, 2]
    assert bot.webhook_deletes == 3  # each new try at leading deletes the webhook first
    failed = [r for r in caplog.records if "polling failed; retrying" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info for r in failed)


def test_verdicts() -> None:
    flood = poll_verdict(RetryAfter(9))
    assert (flood.kind, flood.retry_after) == (ErrorKind.RATE_LIMITED, 9.0)
    for exc in (Conflict("x"), InvalidToken("x"), NetworkError("x"), RuntimeError("x")):
        assert poll_verdict(exc).kind is ErrorKind.TRANSIENT, exc  # nothing ends polling
