"""One conversation's worker, under its lease: deliver the pending replies in order, then take
the oldest due inbound event, carry out what the lifecycle decided for it (calling Parloa) and
commit the outcome in one transaction; again while work is due."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping, Sequence

from bridge.config import HandoverConfig
from bridge.engine import handover, lifecycle
from bridge.engine.board import Board
from bridge.engine.delivery import Deliverer
from bridge.engine.handover import Handing
from bridge.engine.heartbeat import heartbeat
from bridge.engine.lifecycle import (
    Launch,
    LaunchThenMessage,
    Message,
    Quit,
    Reply,
)
from bridge.engine.media import Media, MediaRetry, described_without_files, gather_album
from bridge.engine.parloa import Bot, Call, Parloa, Permanent, quit_quietly
from bridge.engine.shared import Shared
from bridge.store import OUTBOX_BATCH, DataRefused, LeaseLost, StoreError, StoreUnavailable
from bridge.textchat.errors import SessionNotFound, TextchatError
from bridge.textchat.models import LaunchEvent, MessageEvent, TextchatResponse
from bridge.vocabulary import (
    Conversation,
    ConversationState,
    DeadLetter,
    Done,
    Handover,
    InboxItem,
    OutboxAck,
    OutboxItem,
    ParloaCall,
    RetryLater,
    SessionOpened,
    Step,
    Work,
    apply_change,
)

log = logging.getLogger("bridge.engine")


class Run:
    """One pass over a claimed conversation: commits steps and delivers what they created,
    in order. Once a reply must wait (a retry is scheduled), every later one waits too."""

    def __init__(self, worker: Worker, conv: Conversation, acks: list[OutboxAck]) -> None:
        self.worker = worker
        self.conv = conv
        # Deliveries that went out, recorded with this worker's next write (a commit or
        # finish): one transaction fewer per reply. A crash before that write re-sends them,
        # the same crash window as between a send and its own write.
        self.acks = acks
        self.blocked = False
        # The Parloa calls made for the event being worked on (its timeline).
        self.calls: list[ParloaCall] = []
        # Until when the typing indicator shown last is still visible (parloa.Typing).
        self.typing_until = 0.0
        # The conversation's open handover as read for the event being worked on.
        self.handover: Handover | None = None
        self.bot = ""
        self._background: asyncio.Task[None] | None = None

    async def deliver(self, items: Sequence[OutboxItem]) -> None:
        for item in items:
            if self.blocked:
                return
            if item.next_attempt_at > time.time() or not await self.worker.delivery.deliver(
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
        shared = self.worker.shared
        created = await shared.store.commit(
            self.conv.id, shared.instance_id, step, self.conv.channel, self.acks
        )
        self.acks.clear()
        self.conv = apply_change(self.conv, step.conversation)
        return created

    async def settle(self) -> None:
        """Wait for work started by commit_soon()."""
        task, self._background = self._background, None
        if task is not None:
            await task


class Worker:
    """Works on conversations, one worker task per conversation (the dispatcher starts them)."""

    def __init__(
        self,
        shared: Shared,
        board: Board,
        delivery: Deliverer,
        parloa: Parloa,
        bots: Mapping[str, Bot],
        channel_bots: Mapping[str, str],
        media: Media | None = None,
        handing: Handing | None = None,
    ) -> None:
        self.shared = shared
        self.handing = handing or Handing(shared.store, {}, shared.messages, shared.metrics)
        self.board = board
        self.delivery = delivery
        self.parloa = parloa
        self.bots = bots
        self.channel_bots = channel_bots
        self.media = media

    @property
    def renew_interval(self) -> float:
        """How often a worker renews its lease: three renewals fit in one lease."""
        return self.shared.config.lease_seconds / 3

    async def work(self, cid: int, claimed: Work | None = None, claimed_at: float = 0.0) -> None:
        """Work on a conversation while it has work due. ``claimed``: its lease and work,
        taken at intake at ``claimed_at`` (monotonic); used if a slot came before the
        lease's first renewal would be due (renew_interval), otherwise claimed again."""
        board = self.board
        store = self.shared.store
        owner = self.shared.instance_id
        ttl = self.shared.config.lease_seconds
        acks: list[OutboxAck] = []
        try:
            async with board.slots:
                while not board.stopping:
                    waited = time.monotonic() - claimed_at
                    if claimed is not None and waited < self.renew_interval:
                        work: Work | None = claimed
                    else:
                        work = await store.claim(cid, owner, ttl)
                    claimed = None
                    if work is None:
                        return  # another process is on it
                    async with heartbeat(store, cid, owner, ttl, self.renew_interval):
                        read = board.notices
                        while work is not None and not board.stopping:
                            await self._run(work, acks)
                            read = board.notices
                            work = await store.finish(cid, owner, ttl, acks)
                            acks.clear()
                    # finish() read the queues after every event noticed by then; one noticed
                    # since may have been stored after that read. The dispatcher skipped its
                    # notice (this worker was still running): claim again rather than leave
                    # it to the next scan of the database, up to a poll interval later.
                    if not board.noticed_since(cid, read):
                        return
        except LeaseLost:
            log.warning("conversation %s: lease lost to another process; stopping", cid)
        except StoreUnavailable as exc:
            # Not a bug and not the event's fault: nothing was charged to it, and the
            # conversation is claimed again once the store is back (a scan finds it due).
            log.warning(
                "conversation %s: the store is unavailable (%s); stopping until it is back",
                cid,
                exc,
            )
            with contextlib.suppress(Exception):
                await store.finish(cid, owner, 0, acks)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("conversation %s: worker failed; it will be retried", cid)
            with contextlib.suppress(Exception):
                await store.finish(cid, owner, 0, acks)
        finally:
            board.left(cid)

    async def _run(self, work: Work, acks: list[OutboxAck]) -> None:
        """Pending replies first, in order; then the oldest inbound event if it is due."""
        run = Run(self, work.conversation, acks)
        try:
            await run.deliver(work.outbox)
            if len(work.outbox) >= OUTBOX_BATCH:
                run.blocked = True  # older replies remain unread: new ones wait behind them
            item = work.inbox
            # Never tried: due whatever the clock says (as Store.finish sees it).
            if item is not None and (item.attempts == 0 or item.next_attempt_at <= time.time()):
                with self.shared.tracing.span(
                    "worker",
                    parent=item.traceparent,
                    kind="consumer",
                    attributes={
                        "bridge.channel": item.channel,
                        "bridge.conversation_id": item.conversation_id,
                        "bridge.inbox_id": item.id,
                        "bridge.attempt": item.attempts + 1,
                    },
                ):
                    await self._process(run, item)
                    # Replies delivered in the background (commit_soon) belong to this span.
                    await run.settle()
        finally:
            await run.settle()

    # --- one inbound event ------------------------------------------------------------------

    async def _process(self, run: Run, item: InboxItem) -> None:
        conv = run.conv
        bot_name = self.channel_bots.get(conv.channel)
        if bot_name is None:
            # The channel was removed from the configuration: nobody can answer this.
            reason = f"channel {conv.channel!r} is not configured"
            await run.commit(self._dead(item, reason, ""))
            return
        bot = self.bots[bot_name]
        run.bot = bot_name
        try:
            if item.attachments:
                album = await gather_album(self.shared.store, item)
                if album is None:
                    # Sent to Parloa with the first event of its album.
                    await run.commit(
                        Step(inbox_id=item.id, outcome=lifecycle.handled(item, time.time()))
                    )
                    return
                item = await self._with_media(album, conv, bot_name)
            step = await self._handover_or_lifecycle(run, item, bot)
        except Permanent as exc:
            step = self._dead(item, exc.reason, exc.notice)
            if exc.refused_bot:
                self.parloa.refused(bot, exc.reason)
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
        except (TextchatError, MediaRetry) as exc:
            step = self._retry_or_give_up(item, exc)
        except DataRefused as exc:
            step = self._refused(item, exc)
        except StoreError:
            raise  # the store unavailable, the lease lost: the worker stops, the event waits
        except Exception as exc:
            # A bug, not Parloa: retry like a transient failure (bounded by the retry
            # budget), so one bad event can neither spin nor block its conversation forever.
            log.exception("conversation %s: event %s failed unexpectedly", conv.id, item.id)
            step = self._retry_or_give_up(item, exc)
        if step.outcome is not None:
            self.shared.tracing.note("bridge.outcome", type(step.outcome).__name__)
        if run.calls and step.inbox_id == item.id:
            step = dataclasses.replace(step, calls=item.parloa_calls + tuple(run.calls))
        try:
            await run.commit(step)
        except DataRefused as exc:
            # Something the step stores (Parloa's answer, say) is refused: storing it again
            # would fail again, so the event is a dead letter, not retried for ever.
            await self._commit_refused(run, item, exc)
            return
        self.handing.committed(step, run.handover, run.conv.channel)

    async def _handover_or_lifecycle(self, run: Run, item: InboxItem, bot: Bot) -> Step:
        """A handed-over conversation's event goes to its desk (engine/handover.py); a user's
        handover command opens one; the rest is the session lifecycle's."""
        handing, conv, now = self.handing, run.conv, time.time()
        settings = handing.desk_of(bot.name)
        if conv.state is ConversationState.HANDED_OVER:
            run.handover = await handing.open_handover(conv)
            # A desk removed from the configuration still closes its handovers.
            step, then_bot = handover.while_handed_over(
                conv, run.handover, item, settings or HandoverConfig(), now, self.shared.messages
            )
            if not then_bot:
                return step
            await run.commit(step)  # the handover closed: the bot takes the event
            handing.committed(step, run.handover, conv.channel)
            run.handover = None
        elif settings is not None and handover.asks_for_agent(item, settings):
            request = handover.Request(reason="the user asked for a person")
            return await handing.open(conv, item, bot.name, request, now)
        return await self._lifecycle(run, item, bot)

    async def _with_media(self, item: InboxItem, conv: Conversation, bot: str) -> InboxItem:
        """The event with its attachments fetched, stored and described (engine/media.py);
        without media set up, described by type alone."""
        if self.media is None:
            return described_without_files(item, self.shared.messages.placeholders())
        return await self.media.prepare(item, conv.requester_id, bot)

    async def _commit_refused(self, run: Run, item: InboxItem, exc: DataRefused) -> None:
        try:
            await run.commit(self._refused(item, exc))
        except DataRefused:
            # The notice itself is refused (its address): the dead letter alone.
            reason = _refusal(exc)
            await run.commit(lifecycle.dead_letter(item, reason, "", time.time()))

    def _refused(self, item: InboxItem, exc: DataRefused) -> Step:
        reason = _refusal(exc)
        log.warning(
            "conversation %s: event %s dead-lettered: %s",
            item.conversation_id,
            item.id,
            reason,
        )
        return self._dead(item, reason, self.shared.messages.rejected)

    def _park(self, item: InboxItem, bot: Bot) -> Step:
        """The bot's breaker is open: the event waits for it, Parloa is not called."""
        shared = self.shared
        reason = f"waiting: Parloa keeps failing for bot {bot.name} (circuit breaker open)"
        step = lifecycle.park(item, time.time(), shared.config, shared.messages, reason)
        if isinstance(step.outcome, DeadLetter):
            shared.metrics.dead_lettered.labels(item.channel).inc()
        return step

    def _dead(self, item: InboxItem, reason: str, notice: str) -> Step:
        self.shared.metrics.dead_lettered.labels(item.channel).inc()
        return lifecycle.dead_letter(item, reason, notice, time.time())

    def _retry_or_give_up(self, item: InboxItem, exc: Exception) -> Step:
        shared = self.shared
        step = lifecycle.retry_or_give_up(
            item, exc, time.time(), shared.config, shared.messages, shared.uniform
        )
        match step.outcome:
            case DeadLetter():
                shared.metrics.dead_lettered.labels(item.channel).inc()
            case RetryLater(attempts=attempts, next_attempt_at=at):
                log.info(
                    "conversation %s: Parloa failed (%s); attempt %d, retry in %.1fs",
                    item.conversation_id,
                    exc,
                    attempts,
                    at - time.time(),
                )
        return step

    async def _lifecycle(self, run: Run, item: InboxItem, bot: Bot) -> Step:
        """Carry out what the lifecycle decides for one event. Intermediate results (a
        launch) are committed as they happen, so a retry resumes where the last one stopped."""
        conv = run.conv
        now = time.time()
        plan = lifecycle.decide(conv, item, now, self.shared.messages)
        context = item.context
        if isinstance(plan, Launch | LaunchThenMessage) and plan.context:
            context = {**(item.context or {}), **plan.context}
        call = self.parloa.caller(
            run, bot, conv.channel, conv.requester_id, item.address, context, run.calls
        )
        done = lifecycle.handled(item, now)
        if not isinstance(plan, Reply) and not self.parloa.breakers.admits(bot.name):
            return self._park(item, bot)
        match plan:
            case Reply():
                return plan.step
            case Quit():
                result = await quit_quietly(call, plan.session_id)
                said = result.response if result is not None else None
                if said is not None and plan.tells_user:
                    self._count_unknown(said)
                self.shared.metrics.sessions_ended.labels(conv.channel, plan.reason.value).inc()
                return lifecycle.quitted(plan, item, said, done, self.shared.messages)
            case Launch():
                if plan.quit_session is not None:
                    await quit_quietly(call, plan.quit_session)
                    self.shared.metrics.sessions_ended.labels(conv.channel, "user_quit").inc()
                return lifecycle.settle(await self._launch(conv, item, call), item, done)
            case LaunchThenMessage():
                launch = await self._launch(conv, item, call)
                if lifecycle.ended_by_welcome(launch):
                    # The welcome already ended the conversation; nothing to send the text to.
                    return lifecycle.settle(launch, item, done)
                # The launch is stored while Parloa already hears the message, not before:
                # under a burst the store's queue would otherwise delay every message call. A
                # crash before it is stored means a retry opens another session, as a crash
                # during the launch call does. The user sees the welcome while Parloa thinks.
                assert isinstance(launch.conversation, SessionOpened)
                run.commit_soon(launch)
                return await self._message(run, item, call, launch.conversation.session_id, done)
            case Message():
                return await self._message(run, item, call, plan.session_id, done)

    async def _message(
        self, run: Run, item: InboxItem, call: Call, session: str, done: Done
    ) -> Step:
        """Send the event's text in ``session``; reopen the session once if Parloa lost it."""
        text = item.text or ""
        try:
            result = await call(MessageEvent(text=text), session)
        except SessionNotFound:
            # The session expired at Parloa: open a new one quietly and say it again.
            log.info("conversation %s: session expired at Parloa; starting a new one", run.conv.id)
            await run.commit(await self._launch(run.conv, item, call, quiet=True))
            assert run.conv.session_id is not None
            try:
                result = await call(MessageEvent(text=text), run.conv.session_id)
            except SessionNotFound as exc:
                raise Permanent(
                    f"Parloa lost a brand-new session: {exc}", self.shared.messages.unavailable
                ) from exc
        response = result.response
        if response.end_conversation:
            self.shared.metrics.sessions_ended.labels(run.conv.channel, "bot_ended").inc()
        self._count_unknown(response)
        now = time.time()
        step = lifecycle.answered(item, response, done, now)
        return await self.handing.after_answer(run.conv, item, run.bot, step, now)

    async def _launch(
        self, conv: Conversation, item: InboxItem, call: Call, *, quiet: bool = False
    ) -> Step:
        session = str(uuid.uuid4())
        result = await call(LaunchEvent(), session)
        self.shared.metrics.sessions_started.labels(conv.channel).inc()
        if not quiet:
            self._count_unknown(result.response)
        return lifecycle.launched(session, result.response, item, time.time(), quiet=quiet)

    def _count_unknown(self, response: TextchatResponse) -> None:
        for kind in lifecycle.unknown_types(response):
            self.shared.metrics.unknown_elements.labels(kind).inc()


def _refusal(exc: DataRefused) -> str:
    """The dead letter's reason: the database's words, without the NUL that may have been
    what it refused."""
    return (str(exc) or "the database refused a value").replace("\x00", "\\0")
