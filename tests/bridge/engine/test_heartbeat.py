"""The lease heartbeat: renewals go on while the worker runs, through a failed one."""

from __future__ import annotations

import asyncio
from typing import cast

from bridge.engine.heartbeat import heartbeat
from bridge.store import Store, StoreUnavailable
from tests.support.waiting import poll_until


class FlakyLeases:
    """A store whose first lease renewal fails (the database blinked) when ``fail_first``;
    each renewal finds the lease held, or with ``held=False`` gone."""

    def __init__(self, *, fail_first: bool = True, held: bool = True) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.held = held

    async def renew(self, conversation_id: int, owner: str, ttl: float) -> bool:
        self.calls += 1
        if self.calls == 1 and self.fail_first:
            raise StoreUnavailable("connection reset")
        return self.held


async def test_a_renewal_that_fails_is_tried_again_at_the_next_interval() -> None:
    leases = FlakyLeases()
    async with heartbeat(cast(Store, leases), 7, "me", ttl=30.0, interval=0.01):
        await poll_until(lambda: leases.calls >= 3 or None, within=5.0)
    assert leases.calls >= 3


async def test_a_lease_found_gone_is_not_renewed_again() -> None:
    leases = FlakyLeases(fail_first=False, held=False)
    async with heartbeat(cast(Store, leases), 7, "me", ttl=30.0, interval=0.01):
        await poll_until(lambda: leases.calls >= 1 or None, within=5.0)
        calls = leases.calls
        # Several intervals go by (a further renewal would be due in each): none comes.
        await asyncio.sleep(0.2)
    assert leases.calls == calls == 1
