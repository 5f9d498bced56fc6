"""Keeping a conversation's lease while its worker runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bridge.store import Store, StoreError

log = logging.getLogger("bridge.engine")


@contextlib.asynccontextmanager
async def heartbeat(
    store: Store, cid: int, owner: str, ttl: float, interval: float
) -> AsyncIterator[None]:
    """Renew ``owner``'s lease of conversation ``cid`` for ``ttl`` every ``interval`` seconds
    while the body runs. A timer, not a task, until a renewal is due: most work ends long
    before (a task per message costs several times a timer: docs/benchmarks.md,
    "Timers, not tasks"). A renewal that finds the lease gone sets no further timer: the
    worker's next write raises LeaseLost. A renewal the store could not make (a database
    blip) is tried again at the next interval: the lease outlives several intervals."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    renewing: asyncio.Task[None] | None = None

    def due() -> None:
        nonlocal renewing
        renewing = asyncio.create_task(renew(), name=f"lease-{cid}")

    async def renew() -> None:
        nonlocal timer
        try:
            held = await store.renew(cid, owner, ttl)
        except StoreError as exc:
            log.warning("conversation %s: cannot renew the lease (trying again): %s", cid, exc)
            held = True
        if held:
            timer = loop.call_later(interval, due)

    timer = loop.call_later(interval, due)
    try:
        yield
    finally:
        if renewing is not None:
            renewing.cancel()  # first: it sets no further timer after this
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewing
        timer.cancel()
