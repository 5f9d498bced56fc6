"""Where inbound events enter: the Intake each adapter is given. Accepting stores the events
(deduplicated, in one transaction) and leases idle conversations to the free worker slots at
the same time, so their workers start at once on what intake read."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from bridge.channel import (
    AcceptResult,
    ChannelState,
    Inbound,
    IntakeRefused,
    IntakeUnavailable,
    StoredReply,
    StoredUpload,
)
from bridge.engine.board import Board
from bridge.engine.dispatch import Dispatcher, Watchers
from bridge.engine.shared import Shared
from bridge.media.attachments import AttachmentTooLarge
from bridge.media.urls import new_media_id
from bridge.store import DataRefused, Store, StoreUnavailable
from bridge.store.liveness import Hold, Liveness
from bridge.store.media import NewMedia
from bridge.textchat.models import parse_element
from bridge.tracing import Span
from bridge.vocabulary import Claim, NewEvent

log = logging.getLogger("bridge.engine")


def requester_id(channel: str, user_id: str) -> str:
    """Parloa's requester id of a channel's user."""
    return f"{channel}:{user_id}"


class Acceptor:
    """Accepts inbound events into the store and hands their conversations to workers."""

    def __init__(self, shared: Shared, board: Board, dispatcher: Dispatcher) -> None:
        self.shared = shared
        self.board = board
        self.dispatcher = dispatcher

    async def accept_many(
        self, channel: str, events: Sequence[Inbound], state: Mapping[str, str] | None
    ) -> list[AcceptResult]:
        # One trace per event begins here: its traceparent is stored with the event, and the
        # worker that takes the event, in whichever process, continues the trace.
        with self.shared.tracing.batch(
            "intake", len(events), kind="producer", attributes={"bridge.channel": channel}
        ) as spans:
            return await self._accept(channel, events, state, spans)

    async def _accept(
        self,
        channel: str,
        events: Sequence[Inbound],
        state: Mapping[str, str] | None,
        spans: Sequence[Span],
    ) -> list[AcceptResult]:
        board, shared = self.board, self.shared
        metrics = shared.metrics
        batch = [
            NewEvent(
                event_id=event.event_id,
                conversation_key=event.conversation_key,
                requester_id=requester_id(channel, event.user_id),
                kind=event.kind,
                text=event.text,
                address=event.address,
                context=event.context,
                attachments=event.attachments,
                traceparent=span.traceparent,
            )
            for event, span in zip(events, spans, strict=True)
        ]
        # Idle conversations are leased as their events are stored, up to the free worker
        # slots, so their workers start at once on the work intake returns: one store call
        # (on PostgreSQL one round trip) per message fewer than a claim of their own
        # (docs/benchmarks.md, "Lease at intake").
        free = board.free
        claim = None
        if free > 0 and not board.stopping:
            claim = Claim(shared.instance_id, shared.config.lease_seconds, free)
        try:
            outcome = await shared.store.accept_claiming(channel, batch, state, claim)
        except StoreUnavailable as exc:
            metrics.inbound.labels(channel, "unavailable").inc(len(batch))
            raise IntakeUnavailable(str(exc)) from exc
        except DataRefused as exc:
            # Permanent: sent again, it would be refused again (a 503 loop for ever).
            metrics.inbound.labels(channel, "refused").inc(len(batch))
            raise IntakeRefused(str(exc)) from exc
        claimed_at = time.monotonic()
        results = []
        for span, (accepted, cid) in zip(spans, outcome.results, strict=True):
            span.set("bridge.conversation_id", cid)
            span.set("bridge.accepted", accepted)
            if accepted:
                metrics.inbound.labels(channel, "accepted").inc()
                if cid not in outcome.claimed:
                    board.notify(cid)
                results.append(AcceptResult.ACCEPTED)
            else:
                metrics.inbound.labels(channel, "duplicate").inc()
                metrics.duplicates.labels(channel).inc()
                results.append(AcceptResult.DUPLICATE)
        for cid, work in outcome.claimed.items():
            if cid in board.workers or board.stopping:
                # A worker that has not claimed yet, or whose finish released the lease
                # just before intake took it: it claims again (the lease is this process's
                # own). At a stop, release_all gives the lease up.
                board.notify(cid)
            else:
                self.dispatcher.start_worker(cid, work, claimed_at)
        return results


class ChannelIntake:
    """The Intake an adapter is given: accept into the store, wake the engine."""

    def __init__(self, acceptor: Acceptor, channel: str) -> None:
        self._acceptor = acceptor
        self._store = acceptor.shared.store
        self._channel = channel
        dispatcher = acceptor.dispatcher
        self._state = ChannelStateView(
            self._store, channel, dispatcher.liveness, dispatcher.watchers
        )

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def instance_id(self) -> str:
        return self._acceptor.shared.instance_id

    async def accept(self, event: Inbound) -> AcceptResult:
        (result,) = await self._acceptor.accept_many(self._channel, [event], None)
        return result

    async def accept_many(
        self, events: Sequence[Inbound], state: Mapping[str, str] | None = None
    ) -> list[AcceptResult]:
        return await self._acceptor.accept_many(self._channel, events, state)

    async def conversation_exists(self, conversation_key: str) -> bool:
        try:
            found = await self._store.find_conversation(self._channel, conversation_key)
        except Exception as exc:
            raise IntakeUnavailable(f"cannot look up the conversation: {exc}") from exc
        return found is not None

    async def store_attachment(
        self, user_id: str, chunks: AsyncIterator[bytes], content_type: str, name: str | None
    ) -> str:
        shared = self._acceptor.shared
        upload = NewMedia(
            id=new_media_id(),
            channel=self._channel,
            requester_id=requester_id(self._channel, user_id),
            content_type=content_type,
            name=name,
        )
        try:
            stored = await self._store.media_put(upload, chunks, shared.max_media_bytes)
        except StoreUnavailable as exc:
            raise IntakeUnavailable(str(exc)) from exc
        except DataRefused as exc:
            raise IntakeRefused(str(exc)) from exc
        if stored.file is None:
            raise AttachmentTooLarge(f"more than {shared.max_media_bytes} bytes")
        return stored.file.id

    async def stored_upload(self, user_id: str, media_id: str) -> StoredUpload | None:
        try:
            file = await self._store.media_file(media_id)
        except StoreUnavailable as exc:
            raise IntakeUnavailable(str(exc)) from exc
        mine = requester_id(self._channel, user_id)
        if file is None or file.channel != self._channel or file.requester_id != mine:
            return None
        if file.inbox_id is not None:  # fetched for an event, not uploaded
            return None
        return StoredUpload(file.id, file.name, file.content_type, file.size)

    async def stored_reply(self, outbox_id: int) -> StoredReply | None:
        try:
            item = await self._store.outbox_item(outbox_id)
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


class ChannelStateView:
    """A channel's own key-value state and named leases (e.g. a poller's offset and lease)."""

    def __init__(self, store: Store, channel: str, liveness: Liveness, watchers: Watchers) -> None:
        self._store = store
        self._channel = channel
        self._liveness = liveness
        self._watchers = watchers

    async def get(self, key: str) -> str | None:
        return await self._store.state_get(self._channel, key)

    async def put(self, key: str, value: str, *, announce: bool = False) -> None:
        """With ``announce``, every replica's watchers of ``key`` are woken once it is
        stored: this process's at once, the others' by the put's own notice (PostgreSQL)."""
        await self._store.state_put(self._channel, key, value, announce=announce)
        if announce:
            self._watchers.announce(self._channel, key)

    def watch(self, key: str, wake: Callable[[], None]) -> Callable[[], None]:
        return self._watchers.watch(self._channel, key, wake)

    async def delete(self, key: str) -> None:
        await self._store.state_delete(self._channel, key)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """The lease's lock first (bridge/store/liveness.py): found free, the previous holder
        died or let go, and the lease is taken at once; held by another live process, the
        lease's expiry decides (the fence against a holder that is alive but stuck)."""
        lease = f"{self._channel}:{name}"
        hold = await self._liveness.hold(lease)
        taken = await self._store.acquire_lease(lease, owner, ttl, holder_gone=hold is Hold.NEW)
        if not taken and hold in (Hold.NEW, Hold.KEPT):
            # Another took the lease while this process was stuck: its lock is the taker's.
            await self._liveness.let_go(lease)
        return taken

    async def release_lease(self, name: str, owner: str) -> None:
        lease = f"{self._channel}:{name}"
        await self._store.release_lease(lease, owner)
        await self._liveness.let_go(lease)
