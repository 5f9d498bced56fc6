"""A fake adapter and a small harness: the real engine and store, the simulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.channel import (
    AcceptResult,
    Adapter,
    Delivery,
    DeliveryError,
    Inbound,
    InboundKind,
    Intake,
)
from bridge.config import EngineConfig, HandoverConfig, MessagesConfig
from bridge.devtools.simulator import RunningSimulator
from bridge.engine import Bot, Engine
from bridge.engine.intake import requester_id
from bridge.engine.media import Media
from bridge.handover.desk import Desk
from bridge.media.attachments import Attachment, AttachmentError, AttachmentUnavailable, Download
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.textchat.client import TextchatClient, Timeouts
from bridge.textchat.models import CardElement, PayloadElement, TextElement
from bridge.vocabulary import NewEvent

CHANNEL = "test"

T = TypeVar("T")


@dataclass
class Sent:
    conversation: str
    kind: str  # text, chips, card, other
    body: str


@dataclass
class FakeAdapter(Adapter):
    """Records what the engine delivers; failures can be scripted per delivery."""

    name: str = CHANNEL
    sent: list[Sent] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    typing_calls: int = 0
    failures: list[DeliveryError] = field(default_factory=list)
    intake: Intake | None = None
    #: what open_attachment serves, by locator; failures raised first, one per call
    files: dict[str, bytes] = field(default_factory=dict)
    file_failures: list[AttachmentError] = field(default_factory=list)
    fetches: list[str] = field(default_factory=list)
    #: set: every download waits for it (a slow platform)
    downloads_wait: asyncio.Event | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        super().__init__(self.name)

    @contextlib.asynccontextmanager
    async def open_attachment(self, attachment: Attachment) -> AsyncIterator[Download]:
        self.fetches.append(attachment.locator)
        if self.file_failures:
            raise self.file_failures.pop(0)
        if attachment.locator not in self.files:
            raise AttachmentUnavailable(f"no file {attachment.locator}")
        data = self.files[attachment.locator]
        if self.downloads_wait is not None:
            await self.downloads_wait.wait()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 100_000):
                yield data[start : start + 100_000]

        yield Download(chunks(), content_type=None, size=len(data))

    async def start(self, intake: Intake) -> None:
        self.intake = intake

    async def stop(self) -> None:
        self.intake = None

    async def typing(self, address: Mapping[str, Any]) -> None:
        self.typing_calls += 1

    async def deliver(self, delivery: Delivery) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.deliveries.append(delivery)
        conversation = str(delivery.address.get("conversation", "?"))
        for index, element in enumerate(delivery.elements):
            if index < delivery.parts_done:
                continue
            if isinstance(element, TextElement):
                self.sent.append(Sent(conversation, "text", element.content))
            elif isinstance(element, PayloadElement):
                chips = ",".join(c.value for c in element.chips())
                self.sent.append(Sent(conversation, "chips", chips))
            elif isinstance(element, CardElement):
                self.sent.append(Sent(conversation, "card", element.title or ""))
            else:
                self.sent.append(Sent(conversation, "other", element.type))
            await delivery.progress(index, f"m{len(self.sent)}")
        async with self._changed:
            self._changed.notify_all()

    def texts(self, conversation: str) -> list[str]:
        return [s.body for s in self.sent if s.conversation == conversation and s.kind == "text"]

    async def wait_for(self, predicate: Callable[[], T], within: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every delivery) and return its
        value; AssertionError after ``within`` seconds, as ``poll_until`` and the fakes do."""
        try:
            async with asyncio.timeout(within), self._changed:
                return await self._changed.wait_for(predicate)
        except TimeoutError:
            recent = [(s.conversation, s.kind, s.body) for s in self.sent[-5:]]
            raise AssertionError(
                f"condition not met within {within}s; last sent: {recent}"
            ) from None


_ids = itertools.count(1)


def inbound(
    conversation: str,
    text: str = "",
    kind: InboundKind = InboundKind.TEXT,
    event_id: str = "",
    attachments: tuple[Attachment, ...] = (),
) -> Inbound:
    return Inbound(
        event_id=event_id or f"ev-{next(_ids)}",
        conversation_key=conversation,
        user_id=f"user-{conversation}",
        kind=kind,
        text=text,
        address={"conversation": conversation},
        context={"platform": "test"},
        attachments=attachments,
    )


def stored_event(conversation: str, text: str, event_id: str) -> NewEvent:
    """What the intake stores for ``inbound(conversation, text)``: for tests that write to
    the store as another replica's intake would."""
    e = inbound(conversation, text, event_id=event_id)
    requester = requester_id(CHANNEL, e.user_id)
    return NewEvent(e.event_id, e.conversation_key, requester, e.kind, e.text, e.address, e.context)


@dataclass
class Harness:
    engine: Engine
    adapter: FakeAdapter
    store: Store
    simulator: RunningSimulator

    async def send(self, conversation: str, text: str = "", **kw: Any) -> AcceptResult:
        return await self.engine.intake(CHANNEL).accept(inbound(conversation, text, **kw))

    def events(self, conversation: str) -> list[tuple[str, str | None]]:
        """What Parloa saw from this conversation's requester (accepted requests only)."""
        requester = f"{CHANNEL}:user-{conversation}"
        return [
            (r.event_type or "", r.text)
            for r in self.simulator.state.requests
            if r.requester_id == requester and r.status == 200
        ]

    def calls(self, conversation: str) -> list[tuple[str, int]]:
        requester = f"{CHANNEL}:user-{conversation}"
        return [
            (r.event_type or "", r.status)
            for r in self.simulator.state.requests
            if r.requester_id == requester
        ]


FAST = EngineConfig(
    retry_initial_seconds=0.05,
    retry_max_seconds=0.2,
    lease_seconds=5,
    idle_timeout_seconds=0,
    retention_days=0,
)


@asynccontextmanager
async def harness(
    store: Store,
    simulator: RunningSimulator,
    config: EngineConfig = FAST,
    read_timeout: float = 5.0,
    adapter: FakeAdapter | None = None,
    poll_interval: float = 0.05,
    media: Callable[[Store, Mapping[str, Adapter]], Media] | None = None,
    messages: MessagesConfig | None = None,
    handover: Mapping[str, HandoverConfig] | None = None,
    desks: Mapping[str, Desk] | None = None,
) -> AsyncIterator[Harness]:
    client = TextchatClient(
        simulator.url, "rel-test", "test-token", timeouts=Timeouts(connect=2, read=read_timeout)
    )
    await client.start()
    adapter = adapter or FakeAdapter()
    engine = Engine(
        store,
        bots={"bot": Bot("bot", client, {"brand": "acme"})},
        channel_bots={CHANNEL: "bot"},
        adapters={CHANNEL: adapter},
        config=config,
        messages=messages or MessagesConfig(),
        metrics=Metrics(),
        poll_interval=poll_interval,
        housekeeping_interval=3600,
        media=media(store, {CHANNEL: adapter}) if media is not None else None,
        handover=handover,
        desks=desks,
    )
    await adapter.start(engine.intake(CHANNEL))
    await engine.start()
    try:
        yield Harness(engine, adapter, store, simulator)
    finally:
        await engine.stop(drain_timeout=5)
        await client.close()
