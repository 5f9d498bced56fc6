"""Delivering one stored reply through its channel's adapter, and what the adapter's answer
means for the reply (a :data:`DeliveryOutcome`) and for the conversation."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.channel import (
    Adapter,
    Delivery,
    DeliveryError,
    DeliveryRejected,
    DeliveryRetryable,
    RecipientGone,
)
from bridge.config import EngineConfig
from bridge.engine.handover import recipient_gone
from bridge.engine.lifecycle import Uniform, backoff
from bridge.engine.shared import Shared
from bridge.handover.desk import Desk, DeskDelivery
from bridge.textchat.models import parse_element
from bridge.vocabulary import (
    DESK_CHANNEL,
    DeliveryFailed,
    DeliveryRetry,
    Ended,
    EndReason,
    OutboxAck,
    OutboxItem,
    Sent,
    Step,
)

log = logging.getLogger("bridge.engine")


@dataclass(slots=True)
class Progress:
    """How far a delivery got: recorded with its outcome."""

    parts_done: int
    platform_message_id: str | None = None

    async def __call__(self, index: int, message_id: str | None) -> None:
        self.parts_done = index + 1
        self.platform_message_id = message_id


def after_retryable(
    item: OutboxItem,
    error: DeliveryRetryable,
    done: Progress,
    now: float,
    config: EngineConfig,
    uniform: Uniform = random.uniform,
) -> DeliveryRetry | DeliveryFailed:
    """The adapter says try again: when (the platform's Retry-After first), or give up once
    the attempts are spent. A rate limit is not an attempt of its own."""
    attempts = item.attempts + (0 if error.rate_limited else 1)
    if attempts >= config.delivery_attempts:
        return failed(f"gave up: {error}", done, now)
    delay = backoff(
        max(1, attempts), config.retry_initial_seconds, config.retry_max_seconds, uniform
    )
    if error.retry_after is not None:
        delay = max(error.retry_after, 0.0)
    return DeliveryRetry(
        attempts, now + delay, str(error), done.parts_done, done.platform_message_id
    )


def failed(reason: str, done: Progress, now: float) -> DeliveryFailed:
    """Given up for good, with the parts that went out."""
    return DeliveryFailed(reason, now, done.parts_done, done.platform_message_id)


class Deliverer:
    """Delivers a conversation's replies for its worker, under the worker's lease."""

    def __init__(
        self,
        shared: Shared,
        adapters: Mapping[str, Adapter],
        desks: Mapping[str, Desk] | None = None,
    ) -> None:
        self.shared = shared
        self.adapters = adapters
        #: bot name -> its handover desk (the outbox rows of DESK_CHANNEL)
        self.desks = desks or {}

    async def deliver(
        self, cid: int, item: OutboxItem, conversation_key: str, acks: list[OutboxAck]
    ) -> bool:
        """Deliver one reply; False when it must wait (a retry is scheduled). A sent reply
        is recorded in ``acks``, the rest at once."""
        shared = self.shared
        if item.channel == DESK_CHANNEL:
            return await self._to_desk(cid, item, acks)
        adapter = self.adapters.get(item.channel)
        if adapter is None:
            # The channel was removed from the configuration: nothing can send this.
            gone = DeliveryFailed(f"channel {item.channel!r} is not configured", time.time())
            await shared.store.update_outbox(cid, shared.instance_id, item.id, gone)
            shared.metrics.deliveries.labels(item.channel, "failed").inc()
            return True

        # Progress is recorded with the outcome, in the same write: a crash between parts
        # re-sends the earlier parts (the documented crash window), a failure does not.
        done = Progress(item.parts_done)
        tracing = shared.tracing
        parent = await self._trace_parent(item) if tracing.enabled else None
        try:
            with tracing.span(
                "delivery",
                parent=parent,
                kind="client",
                attributes={
                    "bridge.channel": item.channel,
                    "bridge.outbox_id": item.id,
                    "bridge.attempt": item.attempts + 1,
                },
            ) as span:
                await adapter.deliver(
                    Delivery(
                        outbox_id=item.id,
                        conversation_key=conversation_key,
                        address=item.address or {},
                        elements=[parse_element(e) for e in item.elements],
                        parts_done=item.parts_done,
                        progress=done,
                        traceparent=span.traceparent,
                    )
                )
        except DeliveryRetryable as exc:
            outcome = after_retryable(item, exc, done, time.time(), shared.config, shared.uniform)
            if isinstance(outcome, DeliveryFailed):
                await self._failed(cid, item, outcome)
                return True
            label = "rate_limited" if exc.rate_limited else "retry"
            shared.metrics.deliveries.labels(item.channel, label).inc()
            await shared.store.update_outbox(cid, shared.instance_id, item.id, outcome)
            return False
        except RecipientGone as exc:
            await self._recipient_gone(cid, item, exc)
            return False  # everything pending was failed: nothing more to deliver now
        except DeliveryRejected as exc:
            await self._failed(cid, item, failed(f"rejected: {exc}", done, time.time()))
            return True
        except DeliveryError as exc:
            await self._failed(cid, item, failed(str(exc), done, time.time()))
            return True
        acks.append(
            OutboxAck(item.id, Sent(time.time(), done.parts_done, done.platform_message_id))
        )
        shared.metrics.deliveries.labels(item.channel, "sent").inc()
        return True

    async def _to_desk(self, cid: int, item: OutboxItem, acks: list[OutboxAck]) -> bool:
        """Deliver a desk event (bridge/handover/) to its bot's desk, as a reply to an
        adapter: retried, given up, or acked with the worker's next write."""
        shared = self.shared
        address = item.address or {}
        desk = self.desks.get(str(address.get("bot")))
        handover = await shared.store.handover(str(address.get("handover")))
        if desk is None or handover is None or not item.elements:
            reason = f"no handover desk for bot {address.get('bot')!r}"
            if desk is not None:
                reason = f"handover {address.get('handover')!r} is gone"
            await self._failed(cid, item, DeliveryFailed(reason, time.time()))
            return True
        done = Progress(item.parts_done)
        try:
            await desk.deliver(DeskDelivery(item.id, handover, item.elements[0], done))
        except DeliveryRetryable as exc:
            outcome = after_retryable(item, exc, done, time.time(), shared.config, shared.uniform)
            if isinstance(outcome, DeliveryFailed):
                await self._failed(cid, item, outcome)
                return True
            shared.metrics.deliveries.labels(DESK_CHANNEL, "retry").inc()
            await shared.store.update_outbox(cid, shared.instance_id, item.id, outcome)
            return False
        except DeliveryError as exc:
            await self._failed(cid, item, failed(f"rejected: {exc}", done, time.time()))
            return True
        acks.append(
            OutboxAck(item.id, Sent(time.time(), done.parts_done, done.platform_message_id))
        )
        shared.metrics.deliveries.labels(DESK_CHANNEL, "sent").inc()
        return True

    async def _recipient_gone(self, cid: int, item: OutboxItem, exc: RecipientGone) -> None:
        """The user blocked the bot or left: nothing pending can reach them; end it."""
        log.info("conversation %s: recipient gone (%s); ending it", cid, exc)
        store, owner, metrics = self.shared.store, self.shared.instance_id, self.shared.metrics
        await store.fail_pending_outbox(cid, owner, f"recipient gone: {exc}")
        ended = Step(conversation=Ended(EndReason.RECIPIENT_GONE))
        handover = await store.open_handover(cid)
        if handover is not None:
            ended = recipient_gone(handover, time.time())
            metrics.handovers_ended.labels(handover.bot, handover.desk, "user_left").inc()
        await store.commit(cid, owner, ended, item.channel)
        metrics.deliveries.labels(item.channel, "recipient_gone").inc()
        metrics.sessions_ended.labels(item.channel, "recipient_gone").inc()

    async def _trace_parent(self, item: OutboxItem) -> str | None:
        """The delivery span's parent: the current span (None here) when the worker that
        made the reply delivers it; else the intake span of the event it answers (a reply
        retried by a later run). Looked up only when tracing is on."""
        if self.shared.tracing.current() is not None or item.inbox_id is None:
            return None
        event = await self.shared.store.inbox_item(item.inbox_id)
        return event.traceparent if event is not None else None

    async def _failed(self, cid: int, item: OutboxItem, outcome: DeliveryFailed) -> None:
        log.warning(
            "conversation %s: delivery %s failed for good: %s", cid, item.id, outcome.reason
        )
        await self.shared.store.update_outbox(cid, self.shared.instance_id, item.id, outcome)
        self.shared.metrics.deliveries.labels(item.channel, "failed").inc()
