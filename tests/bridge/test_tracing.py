"""Tracing (bridge/tracing.py): one message through the real engine, store and simulator gives
one trace — intake → worker → the Parloa calls and the deliveries — the ``traceparent`` of the
Parloa call reaches the simulator, Parloa's X-Request-Id is on the span, the webhook channel's
delivery POST carries the delivery's ``traceparent``; off by default (no spans, no header);
switched on and exported by the standard OTEL_* variables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapters.webhook.channel import WebhookAdapter, WebhookOptions
from bridge.channel import Adapter, DeliveryRetryable
from bridge.config import MessagesConfig
from bridge.devtools.faults import Faults
from bridge.devtools.simulator import RunningSimulator
from bridge.engine import Bot, Engine
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.textchat.client import TextchatClient, Timeouts
from bridge.tracing import (
    OtelTracing,
    Span,
    Tracing,
    TracingUnavailable,
    tracing_from_environment,
)
from tests.adapters.webhook.test_channel import SECRET, SERVICES, Receiver, serve
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.engine import CHANNEL, FAST, FakeAdapter, inbound
from tests.support.net import local_url
from tests.support.process import webhook_channel as webhook_options
from tests.support.service import running_service, service_url
from tests.support.signing import webhook_signed_headers
from tests.support.store_readers import inbox_rows
from tests.support.waiting import poll_until

WEB = "web"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def tracing(exported: InMemorySpanExporter) -> OtelTracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return OtelTracing(provider)


@asynccontextmanager
async def running(
    store: Store,
    sim: RunningSimulator,
    adapter: Adapter,
    tracing: Tracing | None,
    channel: str = CHANNEL,
) -> AsyncIterator[Engine]:
    """The real engine and Parloa client (as bridge/parts.py builds them) over the
    simulator, ``adapter`` started on the engine's intake, all traced by ``tracing``."""
    client = TextchatClient(
        sim.url, "rel-test", "test-token", timeouts=Timeouts(connect=2, read=5), tracing=tracing
    )
    await client.start()
    engine = Engine(
        store,
        bots={"bot": Bot("bot", client, {})},
        channel_bots={channel: "bot"},
        adapters={channel: adapter},
        config=FAST,
        messages=MessagesConfig(),
        metrics=Metrics(),
        poll_interval=0.05,
        housekeeping_interval=3600,
        tracing=tracing,
    )
    await adapter.start(engine.intake(channel))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop(drain_timeout=5)
        await adapter.stop()
        await client.close()


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def trace_ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {s.get_span_context().trace_id for s in spans}  # type: ignore[union-attr]


# --- one message, one trace ---------------------------------------------------------------------


async def test_one_message_gives_one_trace_intake_worker_parloa_delivery(
    store: Store,
    sim: RunningSimulator,
    tracing: OtelTracing,
    exported: InMemorySpanExporter,
) -> None:
    adapter = FakeAdapter()
    async with running(store, sim, adapter, tracing) as engine:
        await engine.intake(CHANNEL).accept(inbound("c1", "hello"))
        await adapter.wait_for(lambda: "You said: hello" in adapter.texts("c1"))
    spans = exported.get_finished_spans()

    assert len(trace_ids(spans)) == 1, [(s.name, s.context) for s in spans]
    (intake,) = named(spans, "intake")
    (worker,) = named(spans, "worker")
    calls = named(spans, "parloa launch") + named(spans, "parloa message")
    deliveries = named(spans, "delivery")
    assert {s.name for s in spans} == {
        "intake",
        "worker",
        "parloa launch",
        "parloa message",
        "delivery",
    }
    assert len(calls) == 2 and deliveries  # a new session: launch, then the message
    assert intake.parent is None and intake.kind is SpanKind.PRODUCER
    assert parent_of(worker) == span_id(intake) and worker.kind is SpanKind.CONSUMER
    assert all(parent_of(c) == span_id(worker) and c.kind is SpanKind.CLIENT for c in calls)
    assert all(parent_of(d) == span_id(worker) for d in deliveries)
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans)

    # The trace crossed the database: the event carries the intake span's context.
    (item,) = [i for i in await inbox_rows(store) if i.kind == "text"]
    assert item.traceparent == traceparent(intake)
    assert intake.attributes is not None and intake.attributes["bridge.channel"] == CHANNEL
    assert worker.attributes is not None and worker.attributes["bridge.inbox_id"] == item.id
    assert worker.attributes["bridge.outcome"] == "Done"

    # Each Parloa request carried its own span's traceparent; Parloa's request id is on it.
    requests = list(sim.state.requests)
    assert len(requests) == 2
    by_parent = {r.traceparent: r for r in requests}
    for call in calls:
        request = by_parent[traceparent(call)]
        assert call.attributes is not None
        assert call.attributes["parloa.request_id"] == request.request_id
        assert call.attributes["parloa.event"] == request.event_type
        assert call.attributes["http.response.status_code"] == 200
        assert call.attributes["parloa.correlation_id"]

    # What the adapter was handed carries its delivery span's context.
    assert sorted(d.traceparent or "" for d in adapter.deliveries) == sorted(
        traceparent(d) for d in deliveries
    )


async def test_a_503_retried_is_two_worker_spans_of_the_same_trace(
    store: Store,
    sim: RunningSimulator,
    tracing: OtelTracing,
    exported: InMemorySpanExporter,
) -> None:
    sim.state.faults = Faults(status=503)
    adapter = FakeAdapter()
    async with running(store, sim, adapter, tracing) as engine:
        await engine.intake(CHANNEL).accept(inbound("c1", "hello"))
        async with asyncio.timeout(10):
            await sim.state.wait_for(lambda s: s.stats().by_status.get(503, 0) >= 1)
        sim.state.faults = Faults()
        await adapter.wait_for(lambda: "You said: hello" in adapter.texts("c1"))
    spans = exported.get_finished_spans()

    assert len(trace_ids(spans)) == 1
    (intake,) = named(spans, "intake")
    workers = named(spans, "worker")
    assert len(workers) >= 2
    assert all(parent_of(w) == span_id(intake) for w in workers)
    assert [w.attributes["bridge.attempt"] for w in workers] == list(  # type: ignore[index]
        range(1, len(workers) + 1)
    )
    assert workers[0].attributes["bridge.outcome"] == "RetryLater"  # type: ignore[index]
    failed = named(spans, "parloa launch")[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["error.type"] == "ServerError"
    assert failed.attributes["parloa.request_id"] == sim.state.requests[0].request_id


async def test_a_reply_delivered_by_a_later_run_joins_its_events_trace(
    store: Store,
    sim: RunningSimulator,
    tracing: OtelTracing,
    exported: InMemorySpanExporter,
) -> None:
    # The first delivery fails: the replies wait and are delivered by a later run, which
    # finds the trace through the event the reply answers.
    adapter = FakeAdapter(failures=[DeliveryRetryable("platform down")])
    async with running(store, sim, adapter, tracing) as engine:
        await engine.intake(CHANNEL).accept(inbound("c1", "hello"))
        await adapter.wait_for(lambda: "You said: hello" in adapter.texts("c1"))
    spans = exported.get_finished_spans()

    assert len(trace_ids(spans)) == 1
    (intake,) = named(spans, "intake")
    (worker,) = named(spans, "worker")
    first, *later = named(spans, "delivery")
    assert parent_of(first) == span_id(worker)
    assert first.status.status_code is StatusCode.ERROR
    assert later and all(parent_of(d) == span_id(intake) for d in later)
    assert all(d.status.status_code is not StatusCode.ERROR for d in later)


# --- the webhook channel ------------------------------------------------------------------------


@asynccontextmanager
async def webhook_channel(
    store: Store, sim: RunningSimulator, receiver: Receiver, tracing: Tracing | None
) -> AsyncIterator[str]:
    """The webhook channel's adapter on the engine, its events route served; yields the
    route's URL."""
    options = WebhookOptions.model_validate({"secret": SECRET, "deliver_url": receiver.url})
    adapter = WebhookAdapter(WEB, options, SERVICES)
    async with running(store, sim, adapter, tracing, channel=WEB):
        runner, port = await serve(adapter.routes())
        try:
            yield f"{local_url(port)}/webhook/{WEB}/events"
        finally:
            await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    fake = Receiver()
    runner, fake.port = await serve([web.post("/deliver", fake.handle)])
    yield fake
    fake.release.set()
    await runner.cleanup()


async def post_event(url: str, text: str, secret: str = SECRET) -> int:
    raw = json.dumps({"event_id": "ev-1", "user_id": "u-1", "text": text}).encode()
    headers = webhook_signed_headers(secret, raw)
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.post(url, data=raw, headers=headers) as resp,
    ):
        return resp.status


def answered(receiver: Receiver, text: str) -> bool:
    return any(
        e.get("content") == f"You said: {text}"
        for r in receiver.requests
        for e in r.json.get("elements", [])
    )


async def test_the_webhook_channels_delivery_post_carries_the_traceparent(
    store: Store,
    sim: RunningSimulator,
    receiver: Receiver,
    tracing: OtelTracing,
    exported: InMemorySpanExporter,
) -> None:
    async with webhook_channel(store, sim, receiver, tracing) as url:
        assert await post_event(url, "hello") == 200
        await poll_until(lambda: answered(receiver, "hello"), 10)
    spans = exported.get_finished_spans()

    assert len(trace_ids(spans)) == 1
    deliveries = named(spans, "delivery")
    posts = [r for r in receiver.requests if "elements" in r.json]
    assert len(posts) == len(deliveries) >= 1
    assert sorted(r.headers["traceparent"] for r in posts) == sorted(
        traceparent(d) for d in deliveries
    )
    assert {r.traceparent for r in sim.state.requests} == {
        traceparent(s) for s in spans if s.name.startswith("parloa ")
    }


# --- off by default -----------------------------------------------------------------------------


async def test_off_by_default_no_header_reaches_parloa_or_the_webhook_receiver(
    store: Store, sim: RunningSimulator, receiver: Receiver
) -> None:
    assert not tracing_from_environment({}).enabled
    async with webhook_channel(store, sim, receiver, None) as url:
        assert await post_event(url, "hello") == 200
        await poll_until(lambda: answered(receiver, "hello"), 10)
    assert sim.state.requests and all(r.traceparent is None for r in sim.state.requests)
    assert receiver.requests and all("traceparent" not in r.headers for r in receiver.requests)
    assert all(i.traceparent is None for i in await inbox_rows(store))


def test_the_disabled_facade_allocates_nothing_per_span() -> None:
    off = Tracing()
    with off.span("worker", parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01") as span:
        assert span.traceparent is None
        span.set("key", 1)
        assert off.current() is None
    assert off.span("a") is off.start("b") is span
    with off.batch("intake", 3) as spans:
        assert [s.traceparent for s in spans] == [None, None, None]
    assert off.batch("other", 3) is off.batch("intake", 3)
    assert isinstance(span, Span) and not off.enabled


# --- switched on by the environment -------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": ""},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
        # An endpoint alone (a cluster-wide default, say) does not switch tracing on.
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    ],
)
def test_tracing_stays_off_unless_an_exporter_is_named(environ: dict[str, str]) -> None:
    assert type(tracing_from_environment(environ)) is Tracing


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin not supported"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "'grpc'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "http/protobuf",
        ),
    ],
)
def test_what_cannot_be_exported_is_refused_with_the_reason(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(TracingUnavailable, match=says):
        tracing_from_environment(environ)


class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: the export requests it was sent."""

    def __init__(self) -> None:
        self.received: list[ExportTraceServiceRequest] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.received.append(message)
        return web.Response(content_type="application/x-protobuf", body=b"")

    def spans(self) -> list[tuple[str, dict[str, Any]]]:
        return [(span.name, resource) for span, resource in self.exported()]

    def exported(self) -> list[tuple[Any, dict[str, Any]]]:
        """Each span (the protobuf message) with its resource's attributes."""
        found = []
        for message in self.received:
            for resource_spans in message.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    found.extend((span, resource) for span in scope.spans)
        return found


@asynccontextmanager
async def collecting(
    monkeypatch: pytest.MonkeyPatch, extra: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Collector, dict[str, str]]]:
    """A collector on 127.0.0.1 and the OTEL_* variables, set in the process environment
    (which the SDK reads), that send spans to it."""
    collector = Collector()
    runner, port = await serve([web.post("/v1/traces", collector.handle)])
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        **(extra or {}),
    }
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    try:
        yield collector, environ
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("service_name", [None, "bridge-eu-1"])
async def test_otlp_exports_to_the_endpoint_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, service_name: str | None
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    named_as = {"OTEL_SERVICE_NAME": service_name} if service_name else {}
    async with collecting(monkeypatch, named_as) as (collector, environ):
        tracing = tracing_from_environment(environ)
        assert tracing.enabled
        with tracing.span("worker") as span:
            assert span.traceparent is not None
        await tracing.shutdown()  # flushes the batch
    sent = collector.spans()
    assert [name for name, _resource in sent] == ["worker"]
    assert sent[0][1]["service.name"] == (service_name or "parloa-bridge")


async def test_the_service_traced_by_the_environment_exports_each_messages_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: RunningSimulator, receiver: Receiver
) -> None:
    """The composition root: OTEL_* variables alone switch a running service's tracing on;
    its spans reach the collector when it stops."""
    options = webhook_options(receiver.url)
    data = config_data(sqlite_url(tmp_path), sim.url, options)
    async with collecting(monkeypatch) as (collector, _environ):
        async with running_service(service_config(data)) as service:
            url = f"{service_url(service)}/webhook/{options['name']}/events"
            assert await post_event(url, "hello", options["secret"]) == 200
            await poll_until(lambda: answered(receiver, "hello"), 10)
        sent = collector.exported()

    names = sorted(span.name for span, _resource in sent)
    assert names.count("intake") == names.count("worker") == 1
    assert {"parloa launch", "parloa message", "delivery"} <= set(names)
    assert {span.trace_id for span, _resource in sent} == {
        bytes.fromhex(r.traceparent.split("-")[1])  # type: ignore[union-attr]
        for r in sim.state.requests
    }
    posts = [r for r in receiver.requests if "elements" in r.json]
    assert {r.headers["traceparent"].split("-")[1] for r in posts} == {
        span.trace_id.hex() for span, _resource in sent
    }
