"""Waiting on conditions, never on fixed sleeps. The fakes wake their waiters on every change
they record (their ``wait_for``); what nothing signals (another process, the store, the
simulator's state) is polled against a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    within: float = 5.0,
    *,
    every: float = 0.02,
    failure: Callable[[], str] | None = None,
) -> T: ...


@overload
async def poll_until(
    check: Callable[[], T | None],
    within: float = 5.0,
    *,
    every: float = 0.02,
    failure: Callable[[], str] | None = None,
) -> T: ...


async def poll_until(
    check: Callable[[], Any],
    within: float = 5.0,
    *,
    every: float = 0.02,
    failure: Callable[[], str] | None = None,
) -> Any:
    """Call ``check`` (plain or async) until its value is truthy and return that value;
    AssertionError after ``within`` seconds, with ``failure()`` as the message if given."""
    deadline = time.monotonic() + within
    while True:
        value: Any = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(failure() if failure else f"condition not met within {within}s")
        await asyncio.sleep(every)
