"""Send budgets per key: idle keys are forgotten, busy ones kept."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiolimiter import AsyncLimiter

from bridge.ratelimit import KeyedLimiter


async def refilled(limiter: AsyncLimiter, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not limiter.has_capacity(limiter.max_rate):
        assert time.monotonic() < deadline, "the budget never refilled"
        await asyncio.sleep(0.005)


async def test_a_key_whose_budget_refilled_is_forgotten_a_busy_one_is_kept() -> None:
    made: dict[str, AsyncLimiter] = {}

    def make(key: str) -> AsyncLimiter:
        made[key] = AsyncLimiter(3, 0.05)  # refills within 50 ms
        return made[key]

    limits = KeyedLimiter(make)
    for _ in range(3):
        await limits.acquire("busy")
    await limits.acquire("other")
    assert len(limits) == 2  # "busy" has spent its budget: kept

    await refilled(made["busy"])
    await refilled(made["other"])
    await limits.acquire("third")
    assert len(limits) == 1  # both refilled: a fresh limiter would be the same

    # A kept key still limits: its fourth send within the window waits.
    slow = KeyedLimiter(lambda _key: AsyncLimiter(3, 60))
    for _ in range(3):
        await slow.acquire("chat")
    await slow.acquire("elsewhere")
    assert len(slow) == 2
    fourth = asyncio.create_task(slow.acquire("chat"))
    await asyncio.sleep(0.05)
    assert not fourth.done()
    fourth.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fourth


async def test_at_most_max_keys_are_kept() -> None:
    limits = KeyedLimiter(lambda _key: AsyncLimiter(1, 60), max_keys=5)
    for i in range(20):
        await limits.acquire(f"k{i}")
    assert len(limits) == 5
