"""Which conversations get a worker, and when: the dispatcher that starts workers (from the
board's notices and from scans of the database) and the housekeeping loop (idle timeouts,
retention, gauges)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from bridge.engine.board import Board
from bridge.engine.handover import idle_event_id, timeout_event_id
from bridge.engine.shared import Shared
from bridge.engine.worker import Worker
from bridge.store.channel_state import replica_lease
from bridge.store.liveness import Hold, Liveness, liveness_for
from bridge.store.statements import (
    STATE_CHANNEL,
    WORK_CHANNEL,
    parse_state_notice,
    parse_work_notice,
)
from bridge.vocabulary import Conversation, InboundKind, Work

log = logging.getLogger("bridge.engine")


class Watchers:
    """Who in this process watches which channel state entry (an open web chat socket, its
    user's mailbox): woken by an announced put, this process's own or, on PostgreSQL,
    another replica's (its notice)."""

    def __init__(self) -> None:
        self._wakes: dict[tuple[str, str], set[Callable[[], None]]] = {}

    def watch(self, channel: str, key: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` on every announced put of ``channel``'s ``key``; returns the
        unsubscribe."""
        entry = (channel, key)
        self._wakes.setdefault(entry, set()).add(wake)

        def unsubscribe() -> None:
            wakes = self._wakes.get(entry)
            if wakes is not None:
                wakes.discard(wake)
                if not wakes:
                    del self._wakes[entry]

        return unsubscribe

    def announce(self, channel: str, key: str) -> None:
        for wake in list(self._wakes.get((channel, key), ())):
            try:
                wake()
            except Exception:  # one watcher's bug is not the others'
                log.exception("a watcher of %s %s failed", channel, key)

    def heard(self, payload: str) -> None:
        self.announce(*parse_state_notice(payload))


class Dispatcher:
    """Starts a worker for each conversation with work due, up to the free slots."""

    def __init__(
        self,
        shared: Shared,
        board: Board,
        worker: Worker,
        poll_interval: float,
        housekeeping_interval: float,
    ) -> None:
        self.shared = shared
        self.board = board
        self.worker = worker
        self._poll_interval = poll_interval
        self._housekeeping_interval = housekeeping_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_signal = asyncio.Event()
        # This process's locks (bridge/store/liveness.py): its life as a replica, and the
        # named leases its channels hold. They end when the process dies.
        self.liveness: Liveness = liveness_for(shared.store.engine)
        self._alive = False  # this replica's lock held and its record written
        # PostgreSQL: another replica's intake wakes this one for the conversations it holds
        # (and for free ones), in the statement that stores the event.
        self.liveness.listen(WORK_CHANNEL, self._heard)
        self.watchers = Watchers()
        self.liveness.listen(STATE_CHANNEL, self.watchers.heard)

    def start_worker(self, cid: int, claimed: Work | None = None, claimed_at: float = 0.0) -> None:
        """The one worker of conversation ``cid`` (the caller checked there is none)."""
        self.board.workers[cid] = asyncio.create_task(
            self.worker.work(cid, claimed, claimed_at), name=f"conversation-{cid}"
        )

    async def start(self) -> None:
        self.board.stopping = False
        self._stop_signal.clear()
        await self._mark_alive()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="engine-dispatcher"),
            asyncio.create_task(self._housekeeping(), name="engine-housekeeping"),
        ]

    async def stop(self, drain_timeout: float) -> None:
        """Start no more work; give the loops and the running workers until ``drain_timeout``
        from now to end, then cancel what is left."""
        deadline = time.monotonic() + drain_timeout
        self.board.stopping = True
        self.board.wake.set()
        self._stop_signal.set()
        # The loops leave at their next check; cancelling them inside a query could leave a
        # SQLite connection holding its write lock until busy_timeout, so they get the time
        # left first, as the workers do.
        await _within(self._tasks, deadline)
        self._tasks = []
        await _within(list(self.board.workers.values()), deadline)
        store, owner = self.shared.store, self.shared.instance_id
        with contextlib.suppress(Exception):
            await store.forget_replica(owner)
            await self.liveness.discard(replica_lease(owner))
        await self.liveness.close()
        self._alive = False

    def _heard(self, payload: str) -> None:
        notice = parse_work_notice(payload)
        if notice is None or self.board.stopping:
            return
        owner, cid = notice
        if owner in ("", self.shared.instance_id):
            self.board.notify(cid)

    async def _mark_alive(self) -> None:
        """Hold this replica's lock, then record it as running: from then on another replica
        that finds the lock free knows this one died and frees its conversations at once."""
        store, owner = self.shared.store, self.shared.instance_id
        try:
            hold = await self.liveness.hold(replica_lease(owner))
            if hold is Hold.NEW or not self._alive:
                await store.register_replica(owner)
            self._alive = True
        except Exception as exc:
            self._alive = False
            log.warning("cannot mark this replica alive (trying again): %s", exc)

    async def free_the_dead(self) -> list[str]:
        """Release the conversation leases of replicas that died (their lock is free): their
        conversations are taken over now, not when the leases expire. Returns those found
        dead."""
        store, me = self.shared.store, self.shared.instance_id
        dead = []
        for owner in await store.replicas():
            if owner == me or await self.liveness.held_elsewhere(replica_lease(owner)):
                continue
            released = await store.release_all(owner)
            await store.forget_replica(owner)
            await self.liveness.discard(replica_lease(owner))
            dead.append(owner)
            log.info("replica %s is gone: took over %d conversation leases", owner, released)
        return dead

    async def _dispatch(self) -> None:
        board = self.board
        last_scan = 0.0
        while not board.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(board.wake.wait(), self._poll_interval)
            board.wake.clear()
            if board.stopping:
                return
            candidates = list(board.notified)
            board.notified.clear()
            # Work this process was told about arrives through notify(); the database is
            # scanned for the rest (retries coming due, other replicas' intake, conversations
            # left over after a crash) once per poll interval, not on every wake-up: under
            # load the dispatcher wakes for every accepted event and every finished worker.
            now = time.monotonic()
            if now - last_scan < self._poll_interval:
                candidates = [c for c in candidates if c not in board.workers]
            else:
                last_scan = now
                candidates = await self._scan(candidates)
            for cid in dict.fromkeys(candidates):
                if cid not in board.workers:
                    self.start_worker(cid)

    async def _scan(self, candidates: list[int]) -> list[int]:
        try:
            await self._mark_alive()  # again: the lock is lost with a lost connection
            await self.free_the_dead()
        except Exception as exc:
            log.warning("cannot look for replicas that died: %s", exc)
        free = self.board.free
        if free > len(candidates):
            try:
                candidates += await self.shared.store.due_conversations(
                    free, self.shared.instance_id
                )
            except Exception as exc:
                log.warning("cannot look for due work: %s", exc)
        return candidates

    async def _housekeeping(self) -> None:
        while not self.board.stopping:
            try:
                await self.run_housekeeping()
            except Exception as exc:
                log.warning("housekeeping failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_signal.wait(), self._housekeeping_interval)

    async def run_housekeeping(self) -> None:
        """Idle timeouts, retention, gauges. Safe to run from several processes."""
        store, config = self.shared.store, self.shared.config
        if config.idle_timeout_seconds > 0:
            for conv in await store.idle_conversations(config.idle_timeout_seconds):
                if await store.enqueue_internal(conv, InboundKind.IDLE, f"idle:{conv.session_id}"):
                    self.board.notify(conv.id)
        await self._handover_timeouts()
        if config.retention_days > 0 or config.conversation_retention_days > 0:
            # retention_days = 0 keeps message content: an infinite age purges none of it,
            # while expired OAuth states and long-idle mappings still go.
            content_days = config.retention_days or math.inf
            inbox_rows, outbox_rows = await store.purge(
                content_days * 86400,
                conversations_idle_seconds=config.conversation_retention_days * 86400,
            )
            if inbox_rows or outbox_rows:
                log.info("purged %d inbox and %d outbox rows", inbox_rows, outbox_rows)
        await self.refresh_gauges()

    async def _handover_timeouts(self) -> None:
        """Handovers no agent took in time, and handed-over conversations gone quiet: an
        event each in the conversation's queue (deduplicated by the handover's key)."""
        store, config = self.shared.store, self.shared.config
        due: list[tuple[Conversation, InboundKind, str]] = []
        for bot, settings in self.worker.handing.settings.items():
            if settings.agent_timeout_seconds > 0:
                late = await store.due_agent_timeouts(bot, settings.agent_timeout_seconds)
                due.extend(
                    (c, InboundKind.HANDOVER_TIMEOUT, timeout_event_id(h.key)) for c, h in late
                )
        if config.idle_timeout_seconds > 0:
            quiet = await store.idle_handovers(config.idle_timeout_seconds)
            due.extend((c, InboundKind.IDLE, idle_event_id(h.key)) for c, h in quiet)
        for conv, kind, event_id in due:
            if await store.enqueue_internal(conv, kind, event_id):
                self.board.notify(conv.id)

    async def refresh_gauges(self) -> None:
        stats = await self.shared.store.stats()
        metrics = self.shared.metrics
        metrics.inbox_depth.set(stats.pending)
        metrics.inbox_oldest_age.set(stats.oldest_pending_age)
        metrics.dead_letters.set(stats.dead)
        metrics.outbox_depth.set(stats.outbox_pending)
        counts = await self.shared.store.open_handover_counts()
        for bot, settings in self.worker.handing.settings.items():
            counts.setdefault((bot, str(settings.desk)), 0)
        for (bot, desk), count in counts.items():
            metrics.handovers_open.labels(bot, desk).set(count)


async def _within(tasks: list[asyncio.Task[None]], deadline: float) -> None:
    """Wait for ``tasks`` until ``deadline`` (monotonic), cancel the rest and wait for those."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
