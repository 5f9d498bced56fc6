"""The conversation engine: from the inbox, through Parloa, to the outbox and the adapters.

One worker per conversation at a time (holding the conversation's lease in the database), many
conversations at once. A worker delivers the conversation's pending replies in order, then takes
its oldest pending inbound event, runs the session lifecycle for it, and commits the outcome in
one transaction. Nothing is done twice unless a process dies between a network call and the
commit that records it (the crash window named in the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.channel import (
    AcceptResult,
    Adapter,
    ChannelState,
    Delivery,
    DeliveryError,
    DeliveryRejected,
    DeliveryRetryable,
    Inbound,
    IntakeUnavailable,
    RecipientGone,
    StoredReply,
)
from bridge.config import EngineConfig, MessagesConfig
from bridge.metrics import Metrics
from bridge.store import LeaseLost, Store, StoreUnavailable
from bridge.store.statements import OUTBOX_BATCH
from bridge.textchat.client import TextchatClient, TextchatResult
from bridge.textchat.context import build_context
from bridge.textchat.errors import (
    RateLimited,
    SessionNotFound,
    TextchatError,
    Unauthorized,
)
from bridge.textchat.models import (
    Event,
    LaunchEvent,
    MessageEvent,
    QuitEvent,
    element_to_wire,
    parse_element,
)
from bridge.vocabulary import (
    Answered,
    Claim,
    Conversation,
    DeadLetter,
    DeliveryFailed,
    DeliveryRetry,
    Done,
    Ended,
    EndReason,
    InboundKind,
    InboxItem,
    NewEvent,
    NewReply,
    OutboxAck,
    OutboxItem,
    RetryLater,
    Sent,
    SessionOpened,
    Step,
    Work,
    apply_change,
)

log = logging.getLogger("bridge.engine")

TYPING_REFRESH = 4.0  # Telegram's typing indicator lasts about 5 s
# An answer quicker than this needs no indicator: it would flash for an instant and cost a
# platform API call (and a share of the chat's send budget) per message.
TYPING_DELAY = 0.5


def backoff(attempt: int, initial: float, cap: float) -> float:
    """Capped exponential backoff with jitter (attempt counts from 1)."""
    ceiling = min(cap, initial * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def text_element(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


@dataclass(frozen=True, slots=True)
class Bot:
    name: str
    client: TextchatClient
    context: Mapping[str, Any]


class BotHealth:
    """Which bots Parloa is refusing (401, unknown release): shown on /readyz."""

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}

    def ok(self, bot: str) -> bool:
        """Parloa answered this bot; True when it had been refusing it until now."""
        return self.refused.pop(bot, None) is not None

    def refuse(self, bot: str, reason: str) -> None:
        self.refused[bot] = reason


@dataclass(slots=True)
class _Progress:
    """How far a delivery got: recorded with its outcome."""

    parts_done: int
    platform_message_id: str | None = None


class _Permanent(Exception):
    """This event cannot be processed; dead-letter it and tell the user ``notice``."""

    def __init__(self, reason: str, notice: str, refused_bot: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notice = notice
        self.refused_bot = refused_bot


class _ChannelIntake:
    """The Intake an adapter is given: accept into the store, wake the engine."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self._engine = engine
        self._channel = channel
        self._state = _ChannelStateView(engine.store, channel)

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def instance_id(self) -> str:
        return self._engine.instance_id

    async def accept(self, event: Inbound) -> AcceptResult:
        return await self._engine.accept(self._channel, event)

    async def accept_many(
        self, events: Sequence[Inbound], state: Mapping[str, str] | None = None
    ) -> list[AcceptResult]:
        return await self._engine.accept_many(self._channel, events, state)

    async def conversation_exists(self, conversation_key: str) -> bool:
        try:
            found = await self._engine.store.find_conversation(self._channel, conversation_key)
        except Exception as exc:
            raise IntakeUnavailable(f"cannot look up the conversation: {exc}") from exc
        return found is not None

    async def stored_reply(self, outbox_id: int) -> StoredReply | None:
        try:
            item = await self._engine.store.outbox_item(outbox_id)
        except Exception as exc:
            raise IntakeUnavailable(f"cannot read the reply: {exc}") from exc
        if item is None or item.channel != self._channel:
            return None
        try:
            elements = [parse_element(e) for e in item.elements]
        except Exception as exc:  # stored by this code, so not expected: a reply to forget
            log.warning("reply %s cannot be read again: %s", outbox_id, exc)
            return None
        return StoredReply(outbox_id, item.address or {}, elements)


class _ChannelStateView:
    def __init__(self, store: Store, channel: str) -> None:
        self._store = store
        self._channel = channel

    async def get(self, key: str) -> str | None:
        return await self._store.state_get(self._channel, key)

    async def put(self, key: str, value: str) -> None:
        await self._store.state_put(self._channel, key, value)

    async def delete(self, key: str) -> None:
        await self._store.state_delete(self._channel, key)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        return await self._store.acquire_lease(f"{self._channel}:{name}", owner, ttl)

    async def release_lease(self, name: str, owner: str) -> None:
        await self._store.release_lease(f"{self._channel}:{name}", owner)


class _Run:
    """One pass over a claimed conversation: commits steps and delivers what they created,
    in order. Once a reply must wait (a retry is scheduled), every later one waits too."""

    def __init__(self, engine: Engine, conv: Conversation, acks: list[OutboxAck]) -> None:
        self.engine = engine
        self.conv = conv
        # Deliveries that went out, recorded with this worker's next write (a commit or
        # finish): one transaction fewer per reply. A crash before that write re-sends them,
        # the same crash window as between a send and its own write.
        self.acks = acks
        self.blocked = False
        # Until when the typing indicator shown last is still visible: back-to-back Parloa
        # calls (launch, then the message) share one indicator instead of sending two.
        self.typing_until = 0.0
        self._background: asyncio.Task[None] | None = None

    async def deliver(self, items: Sequence[OutboxItem]) -> None:
        for item in items:
            if self.blocked:
                return
            if item.next_attempt_at > time.time() or not await self.engine._deliver(
                self.conv.id, item, self.conv.conversation_key, self.acks
            ):
                self.blocked = True

    async def commit(self, step: Step) -> None:
        await self.settle()
        await self.deliver(await self._store(step))

    def commit_soon(self, step: Step) -> None:
        """Store ``step`` and deliver what it created while the caller goes on (a launch is
        stored while Parloa already hears the message). The next commit or settle() waits for
        both and raises what they raised: a failed write still fails the attempt."""
        previous = self._background

        async def store_then_deliver() -> None:
            if previous is not None:
                await previous
            await self.deliver(await self._store(step))

        self._background = asyncio.create_task(store_then_deliver(), name=f"commit-{self.conv.id}")

    async def _store(self, step: Step) -> list[OutboxItem]:
        created = await self.engine.store.commit(
            self.conv.id, self.engine.instance_id, step, self.conv.channel, self.acks
        )
        self.acks.clear()
        self.conv = apply_change(self.conv, step.conversation)
        return created

    async def settle(self) -> None:
        """Wait for work started by commit_soon()."""
        task, self._background = self._background, None
        if task is not None:
            await task


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        bots: Mapping[str, Bot],
        channel_bots: Mapping[str, str],
        adapters: Mapping[str, Adapter],
        config: EngineConfig,
        messages: MessagesConfig,
        metrics: Metrics,
        instance_id: str | None = None,
        poll_interval: float = 1.0,
        housekeeping_interval: float = 30.0,
        typing_delay: float = TYPING_DELAY,
    ) -> None:
        self.store = store
        self.bots = bots
        self.channel_bots = channel_bots
        self.adapters = adapters
        self.config = config
        self.messages = messages
        self.metrics = metrics
        self.health = BotHealth()
        for name in bots:  # 0 from the start: an alert can tell "fine" from "no data"
            metrics.bot_refused.labels(name).set(0)
        self.instance_id = instance_id or f"{uuid.uuid4().hex[:12]}"
        self._poll_interval = poll_interval
        self._housekeeping_interval = housekeeping_interval
        self._typing_delay = typing_delay
        self._wake = asyncio.Event()
        self._notified: set[int] = set()
        # Notices counted, and the latest one for each conversation whose worker was running
        # when it came (see _work: finish() may not have seen the event behind it).
        self._notices = 0
        self._noticed_while_working: dict[int, int] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.max_concurrent_conversations)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_signal = asyncio.Event()

    def intake(self, channel: str) -> _ChannelIntake:
        return _ChannelIntake(self, channel)

    # --- intake ---------------------------------------------------------------------------

    def requester_id(self, channel: str, user_id: str) -> str:
        return f"{channel}:{user_id}"

    async def accept(self, channel: str, event: Inbound) -> AcceptResult:
        (result,) = await self.accept_many(channel, [event], None)
        return result

    async def accept_many(
        self, channel: str, events: Sequence[Inbound], state: Mapping[str, str] | None
    ) -> list[AcceptResult]:
        batch = [
            NewEvent(
                event_id=event.event_id,
                conversation_key=event.conversation_key,
                requester_id=self.requester_id(channel, event.user_id),
                kind=event.kind,
                text=event.text,
                address=event.address,
                context=event.context,
            )
            for event in events
        ]
        # Idle conversations are leased as their events are stored, up to the free worker
        # slots, so their workers start at once on the work intake returns: one store call
        # (on PostgreSQL one round trip) per message fewer than a claim of their own.
        free = self.config.max_concurrent_conversations - len(self._workers)
        claim = None
        if free > 0 and not self._stopping:
            claim = Claim(self.instance_id, self.config.lease_seconds, free)
        try:
            outcome = await self.store.accept_claiming(channel, batch, state, claim)
        except StoreUnavailable as exc:
            self.metrics.inbound.labels(channel, "unavailable").inc(len(batch))
            raise IntakeUnavailable(str(exc)) from exc
        claimed_at = time.monotonic()
        results = []
        for accepted, cid in outcome.results:
            if accepted:
                self.metrics.inbound.labels(channel, "accepted").inc()
                if cid not in outcome.claimed:
                    self.notify(cid)
                results.append(AcceptResult.ACCEPTED)
            else:
                self.metrics.inbound.labels(channel, "duplicate").inc()
                self.metrics.duplicates.labels(channel).inc()
                results.append(AcceptResult.DUPLICATE)
        for cid, work in outcome.claimed.items():
            if cid in self._workers or self._stopping:
                # A worker that has not claimed yet, or whose finish released the lease
                # just before intake took it: it claims again (the lease is this process's
                # own). At a stop, release_all gives the lease up.
                self.notify(cid)
            else:
                self._start_worker(cid, work, claimed_at)
        return results

    def notify(self, conversation_id: int) -> None:
        self._notices += 1
        if conversation_id in self._workers:
            self._noticed_while_working[conversation_id] = self._notices
        self._notified.add(conversation_id)
        self._wake.set()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._stop_signal.clear()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="engine-dispatcher"),
            asyncio.create_task(self._housekeeping(), name="engine-housekeeping"),
        ]

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking work, let running workers finish (up to the timeout), release leases."""
        self._stopping = True
        self._wake.set()
        self._stop_signal.set()
        # The loops leave at their next check; cancelling them inside a query could leave a
        # SQLite connection holding its write lock until busy_timeout.
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=10)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        running = list(self._workers.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            released = await self.store.release_all(self.instance_id)
            if released:
                log.info("released %d conversation leases", released)

    @property
    def _renew_interval(self) -> float:
        """How often a worker renews its lease: three renewals fit in one lease."""
        return self.config.lease_seconds / 3

    @property
    def busy(self) -> int:
        return len(self._workers)

    async def _dispatch(self) -> None:
        last_scan = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            if self._stopping:
                return
            candidates = list(self._notified)
            self._notified.clear()
            # Work this process was told about arrives through notify(); the database is
            # scanned for the rest (retries coming due, other replicas' intake, conversations
            # left over after a crash) once per poll interval, not on every wake-up: under
            # load the dispatcher wakes for every accepted event and every finished worker.
            now = time.monotonic()
            if now - last_scan < self._poll_interval:
                candidates = [c for c in candidates if c not in self._workers]
            else:
                last_scan = now
                candidates = await self._scan(candidates)
            for cid in dict.fromkeys(candidates):
                if cid not in self._workers:
                    self._start_worker(cid)

    async def _scan(self, candidates: list[int]) -> list[int]:
        free = self.config.max_concurrent_conversations - len(self._workers)
        if free > len(candidates):
            try:
                candidates += await self.store.due_conversations(free, self.instance_id)
            except Exception as exc:
                log.warning("cannot look for due work: %s", exc)
        return candidates

    async def _housekeeping(self) -> None:
        while not self._stopping:
            try:
                await self.run_housekeeping()
            except Exception as exc:
                log.warning("housekeeping failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_signal.wait(), self._housekeeping_interval)

    async def run_housekeeping(self) -> None:
        """Idle timeouts, retention, gauges. Safe to run from several processes."""
        if self.config.idle_timeout_seconds > 0:
            for conv in await self.store.idle_conversations(self.config.idle_timeout_seconds):
                if await self.store.enqueue_internal(
                    conv, InboundKind.IDLE, f"idle:{conv.session_id}"
                ):
                    self.notify(conv.id)
        if self.config.retention_days > 0:
            inbox_rows, outbox_rows = await self.store.purge(self.config.retention_days * 86400)
            if inbox_rows or outbox_rows:
                log.info("purged %d inbox and %d outbox rows", inbox_rows, outbox_rows)
        await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        stats = await self.store.stats()
        self.metrics.inbox_depth.set(stats.pending)
        self.metrics.inbox_oldest_age.set(stats.oldest_pending_age)
        self.metrics.dead_letters.set(stats.dead)
        self.metrics.outbox_depth.set(stats.outbox_pending)

    # --- one conversation ---------------------------------------------------------------

    def _start_worker(self, cid: int, claimed: Work | None = None, claimed_at: float = 0.0) -> None:
        """The one worker of conversation ``cid`` (the caller checked there is none)."""
        self._workers[cid] = asyncio.create_task(
            self._work(cid, claimed, claimed_at), name=f"conversation-{cid}"
        )

    async def _work(self, cid: int, claimed: Work | None = None, claimed_at: float = 0.0) -> None:
        """Work on a conversation while it has work due. ``claimed``: its lease and work,
        taken at intake at ``claimed_at`` (monotonic); used if a slot came before the
        lease's first renewal would be due (_renew_interval), otherwise claimed again."""
        acks: list[OutboxAck] = []
        try:
            async with self._slots:
                while not self._stopping:
                    waited = time.monotonic() - claimed_at
                    if claimed is not None and waited < self._renew_interval:
                        work: Work | None = claimed
                    else:
                        work = await self.store.claim(
                            cid, self.instance_id, self.config.lease_seconds
                        )
                    claimed = None
                    if work is None:
                        return  # another process is on it
                    async with self._heartbeat(cid):
                        read = self._notices
                        while work is not None and not self._stopping:
                            await self._run(work, acks)
                            read = self._notices
                            work = await self.store.finish(
                                cid, self.instance_id, self.config.lease_seconds, acks
                            )
                            acks.clear()
                    # finish() read the queues after every event noticed by then; one noticed
                    # since may have been stored after that read. The dispatcher skipped its
                    # notice (this worker was still running): claim again rather than leave
                    # it to the next scan of the database, up to a poll interval later.
                    if self._noticed_while_working.get(cid, 0) <= read:
                        return
        except LeaseLost:
            log.warning("conversation %s: lease lost to another process; stopping", cid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("conversation %s: worker failed; it will be retried", cid)
            with contextlib.suppress(Exception):
                await self.store.finish(cid, self.instance_id, 0, acks)
        finally:
            self._workers.pop(cid, None)
            self._noticed_while_working.pop(cid, None)
            if not self._stopping:
                self._wake.set()  # a slot is free: look for more work

    @contextlib.asynccontextmanager
    async def _heartbeat(self, cid: int) -> AsyncIterator[None]:
        """Renew the lease every third of its length while the body runs. A timer, not a
        task, until a renewal is due: most work ends long before (a task per message cost
        a few percent of the CPU)."""
        loop = asyncio.get_running_loop()
        interval = self._renew_interval
        timer: asyncio.TimerHandle | None = None
        renewing: asyncio.Task[None] | None = None

        def due() -> None:
            nonlocal renewing
            renewing = asyncio.create_task(renew(), name=f"lease-{cid}")

        async def renew() -> None:
            nonlocal timer
            if await self.store.renew(cid, self.instance_id, self.config.lease_seconds):
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

    async def _run(self, work: Work, acks: list[OutboxAck]) -> None:
        """Pending replies first, in order; then the oldest inbound event if it is due."""
        run = _Run(self, work.conversation, acks)
        try:
            await run.deliver(work.outbox)
            if len(work.outbox) >= OUTBOX_BATCH:
                run.blocked = True  # older replies remain unread: new ones wait behind them
            item = work.inbox
            # Never tried: due whatever the clock says (as Store.finish sees it).
            if item is not None and (item.attempts == 0 or item.next_attempt_at <= time.time()):
                await self._process(run, item)
        finally:
            await run.settle()

    # --- deliveries -------------------------------------------------------------------------

    async def _deliver(
        self, cid: int, item: OutboxItem, conversation_key: str, acks: list[OutboxAck]
    ) -> bool:
        """Deliver one reply; False when it must wait (a retry is scheduled). A sent reply
        is recorded in ``acks``, the rest at once."""
        adapter = self.adapters.get(item.channel)
        now = time.time()
        if adapter is None:
            # The channel was removed from the configuration: nothing can send this.
            await self.store.update_outbox(
                cid,
                self.instance_id,
                item.id,
                DeliveryFailed(f"channel {item.channel!r} is not configured", now),
            )
            self.metrics.deliveries.labels(item.channel, "failed").inc()
            return True

        # Progress is recorded with the outcome, in the same write: a crash between parts
        # re-sends the earlier parts (the documented crash window), a failure does not.
        done = _Progress(item.parts_done)

        async def progress(index: int, message_id: str | None) -> None:
            done.parts_done = index + 1
            done.platform_message_id = message_id

        delivery = Delivery(
            outbox_id=item.id,
            conversation_key=conversation_key,
            address=item.address or {},
            elements=[parse_element(e) for e in item.elements],
            parts_done=item.parts_done,
            progress=progress,
        )
        try:
            await adapter.deliver(delivery)
        except DeliveryRetryable as exc:
            attempts = item.attempts + (0 if exc.rate_limited else 1)
            if attempts >= self.config.delivery_attempts:
                await self._delivery_failed(cid, item, f"gave up: {exc}", done)
                return True
            delay = backoff(
                max(1, attempts), self.config.retry_initial_seconds, self.config.retry_max_seconds
            )
            if exc.retry_after is not None:
                delay = max(exc.retry_after, 0.0)
            outcome = "rate_limited" if exc.rate_limited else "retry"
            self.metrics.deliveries.labels(item.channel, outcome).inc()
            await self.store.update_outbox(
                cid,
                self.instance_id,
                item.id,
                DeliveryRetry(
                    attempts,
                    time.time() + delay,
                    str(exc),
                    done.parts_done,
                    done.platform_message_id,
                ),
            )
            return False
        except RecipientGone as exc:
            log.info("conversation %s: recipient gone (%s); ending it", cid, exc)
            await self.store.fail_pending_outbox(cid, self.instance_id, f"recipient gone: {exc}")
            await self.store.commit(
                cid,
                self.instance_id,
                Step(conversation=Ended(EndReason.RECIPIENT_GONE)),
                item.channel,
            )
            self.metrics.deliveries.labels(item.channel, "recipient_gone").inc()
            self.metrics.sessions_ended.labels(item.channel, "recipient_gone").inc()
            return False  # everything pending was failed: nothing more to deliver now
        except DeliveryRejected as exc:
            await self._delivery_failed(cid, item, f"rejected: {exc}", done)
            return True
        except DeliveryError as exc:
            await self._delivery_failed(cid, item, str(exc), done)
            return True
        acks.append(
            OutboxAck(item.id, Sent(time.time(), done.parts_done, done.platform_message_id))
        )
        self.metrics.deliveries.labels(item.channel, "sent").inc()
        return True

    async def _delivery_failed(
        self, cid: int, item: OutboxItem, reason: str, done: _Progress
    ) -> None:
        log.warning("conversation %s: delivery %s failed for good: %s", cid, item.id, reason)
        await self.store.update_outbox(
            cid,
            self.instance_id,
            item.id,
            DeliveryFailed(reason, time.time(), done.parts_done, done.platform_message_id),
        )
        self.metrics.deliveries.labels(item.channel, "failed").inc()

    # --- inbound processing -----------------------------------------------------------------

    async def _process(self, run: _Run, item: InboxItem) -> None:
        conv = run.conv
        bot_name = self.channel_bots.get(conv.channel)
        if bot_name is None:
            # The channel was removed from the configuration: nobody can answer this.
            await run.commit(self._dead(item, f"channel {conv.channel!r} is not configured", ""))
            return
        bot = self.bots[bot_name]
        try:
            step = await self._lifecycle(run, item, bot)
        except _Permanent as exc:
            step = self._dead(item, exc.reason, exc.notice)
            if exc.refused_bot:
                self.health.refuse(bot.name, exc.reason)
                self.metrics.bot_refused.labels(bot.name).set(1)
                log.error(
                    "bot %s: %s — fix the configuration; the event is kept as a dead "
                    "letter (parloa-bridge inbox retry)",
                    bot.name,
                    exc.reason,
                )
            else:
                log.warning(
                    "conversation %s: event %s dead-lettered: %s", conv.id, item.id, exc.reason
                )
        except TextchatError as exc:
            step = self._retry_or_give_up(item, exc)
        except (LeaseLost, StoreUnavailable):
            raise
        except Exception as exc:
            # A bug, not Parloa: retry like a transient failure (bounded by the retry
            # budget), so one bad event can neither spin nor block its conversation forever.
            log.exception("conversation %s: event %s failed unexpectedly", conv.id, item.id)
            step = self._retry_or_give_up(item, exc)
        await run.commit(step)

    def _dead(self, item: InboxItem, reason: str, notice: str) -> Step:
        self.metrics.dead_lettered.labels(item.channel).inc()
        return Step(
            inbox_id=item.id,
            outcome=DeadLetter(reason, time.time(), item.attempts + 1),
            replies=(NewReply([text_element(notice)], item.address, item.id),) if notice else (),
        )

    def _retry_or_give_up(self, item: InboxItem, exc: Exception) -> Step:
        attempts = item.attempts + 1
        now = time.time()
        if now - item.created_at >= self.config.retry_budget_seconds:
            return self._dead(
                item,
                f"gave up after {attempts} attempts over {now - item.created_at:.0f}s: {exc}",
                self.messages.unavailable,
            )
        delay = backoff(attempts, self.config.retry_initial_seconds, self.config.retry_max_seconds)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        log.info(
            "conversation %s: Parloa failed (%s); attempt %d, retry in %.1fs",
            item.conversation_id,
            exc,
            attempts,
            delay,
        )
        return Step(inbox_id=item.id, outcome=RetryLater(attempts, now + delay, str(exc)))

    async def _call(
        self,
        run: _Run,
        bot: Bot,
        conv_channel: str,
        address: Mapping[str, Any] | None,
        event: Event,
        requester: str,
        session: str,
        context: Mapping[str, Any] | None,
    ) -> TextchatResult:
        items = build_context(bot.context, context or {})
        adapter = self.adapters.get(conv_channel)
        started = time.monotonic()
        status = "error"
        try:
            async with self._typing(run, adapter, address, event):
                result = await bot.client.send(event, requester, session, items)
            status = str(result.status)
            if self.health.ok(bot.name):
                self.metrics.bot_refused.labels(bot.name).set(0)
            return result
        except TextchatError as exc:
            status = str(getattr(exc, "status", type(exc).__name__))
            raise
        finally:
            self.metrics.parloa_requests.labels(bot.name, event.type, status).inc()
            self.metrics.parloa_latency.labels(bot.name).observe(time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def _typing(
        self,
        run: _Run,
        adapter: Adapter | None,
        address: Mapping[str, Any] | None,
        event: Event,
    ) -> AsyncIterator[None]:
        if adapter is None or address is None or isinstance(event, QuitEvent):
            yield
            return

        async def keep_typing() -> None:
            while True:
                still_shown = run.typing_until - time.monotonic()
                if still_shown > 0:
                    await asyncio.sleep(still_shown)
                try:
                    await adapter.typing(address)
                except Exception as exc:  # a typing indicator is never worth failing for
                    log.debug("typing indicator failed: %s", exc)
                run.typing_until = time.monotonic() + TYPING_REFRESH

        shown: asyncio.Task[None] | None = None

        def show() -> None:
            nonlocal shown
            shown = asyncio.create_task(keep_typing(), name="typing-indicator")

        # A timer until the indicator is due, not a task: most answers come before it.
        timer = asyncio.get_running_loop().call_later(self._typing_delay, show)
        try:
            yield
        finally:
            timer.cancel()
            if shown is not None:
                shown.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shown

    async def _lifecycle(self, run: _Run, item: InboxItem, bot: Bot) -> Step:
        """Run the session lifecycle for one event. Intermediate results (a launch) are
        committed as they happen, so a retry resumes where the last attempt stopped."""
        conv = run.conv
        call = self._caller(run, item, bot)
        now = time.time()
        active = conv.active
        done = Done(now, item.attempts + 1)
        if item.kind == InboundKind.UNSUPPORTED:
            return Step(
                inbox_id=item.id,
                outcome=done,
                replies=(
                    NewReply([text_element(self.messages.unsupported)], item.address, item.id),
                ),
            )
        if item.kind == InboundKind.IDLE:
            if active and f"idle:{conv.session_id}" == item.event_id:
                await self._quit_quietly(call, conv.session_id)
                self.metrics.sessions_ended.labels(conv.channel, "idle_timeout").inc()
                return Step(
                    inbox_id=item.id, outcome=done, conversation=Ended(EndReason.IDLE_TIMEOUT)
                )
            return Step(inbox_id=item.id, outcome=done)
        if item.kind == InboundKind.STOP:
            replies: list[NewReply] = []
            if active:
                result = await self._quit_quietly(call, conv.session_id)
                if result is not None:
                    replies = self._replies(result, item)
            replies.append(
                NewReply([text_element(self.messages.conversation_ended)], item.address, item.id)
            )
            self.metrics.sessions_ended.labels(conv.channel, "user_quit").inc()
            return Step(
                inbox_id=item.id,
                outcome=done,
                replies=tuple(replies),
                conversation=Ended(EndReason.USER_QUIT, now),
            )
        if item.kind in (InboundKind.START, InboundKind.RESTART):
            if active:
                await self._quit_quietly(call, conv.session_id)
                self.metrics.sessions_ended.labels(conv.channel, "user_quit").inc()
            launched = await self._launch_step(conv, item, call)
            return dataclasses.replace(launched, inbox_id=item.id, outcome=done)
        # text and button: a message, launching first when no session is open.
        text = item.text or ""
        session = conv.session_id
        if not active:
            launch = await self._launch_step(conv, item, call)
            assert isinstance(launch.conversation, SessionOpened)
            if launch.conversation.ended_by_bot:
                # The welcome already ended the conversation; nothing to send the text to.
                return dataclasses.replace(launch, inbox_id=item.id, outcome=done)
            # The launch is stored while Parloa already hears the message, not before: under
            # a burst the store's queue would otherwise delay every message call. A crash
            # before it is stored means a retry opens another session, as a crash during the
            # launch call does. The user sees the welcome while Parloa thinks.
            session = launch.conversation.session_id
            run.commit_soon(launch)
        assert session is not None
        try:
            result = await call(MessageEvent(text=text), session)
        except SessionNotFound:
            # The session expired at Parloa: open a new one quietly and say it again.
            log.info("conversation %s: session expired at Parloa; starting a new one", conv.id)
            relaunch = await self._launch_step(conv, item, call, quiet=True)
            await run.commit(relaunch)
            conv = run.conv
            assert conv.session_id is not None
            try:
                result = await call(MessageEvent(text=text), conv.session_id)
            except SessionNotFound as exc:
                raise _Permanent(
                    f"Parloa lost a brand-new session: {exc}", self.messages.unavailable
                ) from exc
        return self._answer_step(conv, item, result, done)

    def _caller(
        self, run: _Run, item: InboxItem, bot: Bot
    ) -> Callable[[Event, str], Awaitable[TextchatResult]]:
        conv = run.conv

        async def call(event: Event, session: str) -> TextchatResult:
            try:
                return await self._call(
                    run,
                    bot,
                    conv.channel,
                    item.address,
                    event,
                    conv.requester_id,
                    session,
                    item.context,
                )
            except Unauthorized as exc:
                raise _Permanent(
                    f"Parloa refused the API token ({exc.status}): {exc}",
                    self.messages.unavailable,
                    refused_bot=True,
                ) from exc
            except SessionNotFound as exc:
                if isinstance(event, LaunchEvent):
                    raise _Permanent(
                        f"Parloa does not know the release (404 on launch): {exc}",
                        self.messages.unavailable,
                        refused_bot=True,
                    ) from exc
                raise
            except TextchatError as exc:
                if not exc.retryable:
                    raise _Permanent(
                        f"{type(exc).__name__}: {exc}", self.messages.rejected
                    ) from exc
                raise

        return call

    async def _quit_quietly(
        self, call: Callable[[Event, str], Awaitable[TextchatResult]], session: str | None
    ) -> TextchatResult | None:
        """Quit is a courtesy to Parloa: a failure never blocks the user."""
        if session is None:
            return None
        try:
            return await call(QuitEvent(), session)
        except (TextchatError, _Permanent) as exc:
            log.info("quit for session %s not delivered: %s", session, exc)
            return None

    async def _launch_step(
        self,
        conv: Conversation,
        item: InboxItem,
        call: Callable[[Event, str], Awaitable[TextchatResult]],
        *,
        quiet: bool = False,
    ) -> Step:
        session = str(uuid.uuid4())
        result = await call(LaunchEvent(), session)
        body = result.response
        self.metrics.sessions_started.labels(conv.channel).inc()
        opened = SessionOpened(
            session_id=session,
            parloa_conversation_id=body.conversation_id,
            at=time.time(),
            address=item.address,
            ended_by_bot=body.end_conversation,
        )
        return Step(
            conversation=opened, replies=() if quiet else tuple(self._replies(result, item))
        )

    def _answer_step(
        self, conv: Conversation, item: InboxItem, result: TextchatResult, done: Done
    ) -> Step:
        body = result.response
        if body.end_conversation:
            self.metrics.sessions_ended.labels(conv.channel, "bot_ended").inc()
        answered = Answered(
            at=time.time(),
            address=item.address,
            parloa_conversation_id=body.conversation_id or None,
            ended_by_bot=body.end_conversation,
        )
        return Step(
            inbox_id=item.id,
            outcome=done,
            conversation=answered,
            replies=tuple(self._replies(result, item)),
        )

    def _replies(self, result: TextchatResult, item: InboxItem) -> list[NewReply]:
        elements = [element_to_wire(e) for e in result.response.response_elements]
        for element in result.response.response_elements:
            if element.type not in ("text", "payload", "cross_card"):
                self.metrics.unknown_elements.labels(element.type or "?").inc()
        return [NewReply(elements, item.address, item.id)] if elements else []
