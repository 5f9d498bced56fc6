"""Send budgets and pauses per key: idle keys are forgotten, busy ones kept, both bounded."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time

from aiolimiter import AsyncLimiter

from bridge.ratelimit import KeyedLimiter, PauseBoard


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_pause_that_ran_out_is_forgotten_without_being_read_again() -> None:
    """Most paused keys are never read again (the chat went quiet): their pauses must not
    pile up until the process ends."""
    clock = FakeClock()
    board = PauseBoard(clock=clock)
    for i in range(1000):
        board.pause(f"chat{i}", 5)
    assert len(board) == 1000
    clock.now += 6  # every pause ran out; none is read
    board.pause("another", 5)
    assert len(board) == 1
    assert board.remaining("another") == 5
    assert board.remaining("chat0") == 0


def test_pauses_still_running_are_kept_and_the_board_never_exceeds_its_size() -> None:
    clock = FakeClock()
    board = PauseBoard(max_keys=10, clock=clock)
    board.pause("long", 600)
    board.pause("long", 1)  # a shorter pause does not shorten a running one
    for i in range(100):
        clock.now += 0.01
        board.pause(f"k{i}", 60)
    assert len(board) == 10
    assert board.remaining("long") > 590  # the pauses ending soonest made room
    assert board.remaining("k99") == 60
    assert board.remaining("k0") == 0
    clock.now += 61
    board.pause("x", 1)
    assert len(board) == 2  # "long" and "x"


def test_docstrings_name_only_parameters_there_are() -> None:
    """``name`` in a docstring of this module is a parameter (or attribute, or method) of the
    thing it documents: a reader configures what the docstring says."""
    for cls in (KeyedLimiter, PauseBoard):
        for member in (cls, *vars(cls).values()):
            function = getattr(member, "__func__", member)
            doc = inspect.getdoc(function) if callable(function) else None
            if not doc:
                continue
            target = cls.__init__ if function is cls else function
            known = set(inspect.signature(target).parameters) | set(vars(cls))
            named = set(re.findall(r"``(\w+)(?:\(\w*\))?``", doc))
            assert named <= known, f"{function.__qualname__}: {sorted(named - known)}"
