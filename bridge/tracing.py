"""OpenTelemetry traces of each inbound event: intake → worker → Parloa call → delivery.

One facade, :class:`Tracing`, built once in the composition root (bridge/parts.py) and handed
to what traces. ``Tracing()`` traces nothing: every call returns a shared do-nothing object,
and the OpenTelemetry packages are not even imported, so they are an optional extra of the
distribution (``parloa-bridge[tracing]``). :func:`tracing_from_environment` turns tracing on
from the standard ``OTEL_*`` variables.

The trace of an event crosses the database: intake stores its span's W3C ``traceparent`` with
the event (``inbox.traceparent``) and the worker, in whichever process claims the event,
continues that trace. Within a process, spans nest by the current span (a context variable),
so the Parloa client's span is the worker's child without being told.

Off by default: the OpenTelemetry specification makes ``otlp`` the default exporter, which
would make every process that happens to have the SDK installed send spans to a collector
on localhost. Here ``OTEL_TRACES_EXPORTER`` must name one (``otlp``, ``console``, or both,
comma-separated); ``none``, unset, or ``OTEL_SDK_DISABLED=true`` leave tracing off. The
rest is the SDK's own reading of the environment: ``OTEL_SERVICE_NAME`` (else
``parloa-bridge``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``,
``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``/``HEADERS``/``TIMEOUT``/... OTLP is
sent as HTTP/protobuf; ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL=grpc`` is refused rather than
sent to a port that speaks the other protocol.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import SpanKind, Status

log = logging.getLogger("bridge.tracing")

Kind = Literal["internal", "server", "client", "producer", "consumer"]
Value = str | bool | int | float
Attributes = Mapping[str, Value]

DEFAULT_SERVICE_NAME = "parloa-bridge"
EXPORTERS = ("otlp", "console")
TRACEPARENT = "traceparent"


class TracingUnavailable(Exception):
    """The environment asks for tracing that cannot be had (the extra is not installed, an
    exporter or protocol this bridge does not speak)."""


class Span:
    """A span to annotate; this base class is the one used when tracing is off."""

    __slots__ = ()

    @property
    def traceparent(self) -> str | None:
        """The span's W3C trace context, to pass on (None: not traced)."""
        return None

    def set(self, key: str, value: Value) -> None:
        """Set an attribute."""

    def error(self, description: str) -> None:
        """Mark the span failed (an error handled rather than raised through it)."""

    def end(self, exc: BaseException | None = None) -> None:
        """End a span from :meth:`Tracing.start`; ``exc``: what it failed with."""

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class _Spans:
    """The do-nothing scope of :meth:`Tracing.batch`."""

    __slots__ = ("_spans",)

    def __init__(self, spans: Sequence[Span]) -> None:
        self._spans = spans

    def __enter__(self) -> Sequence[Span]:
        return self._spans

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for span in self._spans:
            span.end(exc)


_NO_SPAN = Span()


class _NoSpans(_Spans):
    """:class:`_Spans` of spans that need no ending."""

    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


@functools.lru_cache(maxsize=128)
def _no_spans(count: int) -> _NoSpans:
    # Immutable and shared: a batch costs no allocation when tracing is off.
    return _NoSpans((_NO_SPAN,) * count)


class Tracing:
    """Starts spans and carries trace context. This class traces nothing, at the cost of a
    method call; :class:`OtelTracing` is the one that does."""

    enabled = False

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> Span:
        """A span for a ``with`` block, the current span inside it (spans started there are
        its children) and failed by an exception raised through it. ``parent``: a
        ``traceparent`` to continue (from the database); None: the current span's child, or
        a new trace."""
        return _NO_SPAN

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> Span:
        """A span that is not made current; the caller ends it (:meth:`Span.end`)."""
        return _NO_SPAN

    def batch(
        self,
        name: str,
        count: int,
        *,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> _Spans:
        """``count`` spans (one per item of a batch), each the root of a trace of its own
        (or the current span's child), ended together when the ``with`` block ends."""
        return _no_spans(count)

    def current(self) -> str | None:
        """The current span's ``traceparent``, if a span is current."""
        return None

    def note(self, key: str, value: Value) -> None:
        """Set an attribute on the current span."""

    async def shutdown(self) -> None:
        """Export what is still buffered and stop."""


class _Live(Span):
    """A recording (or sampled-out) OpenTelemetry span; as a context manager, current."""

    __slots__ = ("_otel", "_span", "_token")

    def __init__(self, otel: OtelTracing, span: OtelSpan) -> None:
        self._otel = otel
        self._span = span
        self._token: Token[Context] | None = None

    @property
    def traceparent(self) -> str | None:
        return _format(self._span)

    def set(self, key: str, value: Value) -> None:
        self._span.set_attribute(key, value)

    def error(self, description: str) -> None:
        self._span.set_status(self._otel.status_error(description))

    def end(self, exc: BaseException | None = None) -> None:
        if isinstance(exc, Exception):  # a cancellation is not the span's failure
            self._span.record_exception(exc)
            self._span.set_status(self._otel.status_error(f"{type(exc).__name__}: {exc}"))
        self._span.end()

    def __enter__(self) -> Span:
        self._token = self._otel.attach(self._span)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            self._otel.detach(self._token)
            self._token = None
        self.end(exc)


class OtelTracing(Tracing):
    """Tracing through an OpenTelemetry SDK tracer provider (its own, not the global one)."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._tracer = provider.get_tracer("parloa-bridge")
        self._propagator = TraceContextTextMapPropagator()
        self._context = context
        self._trace = trace
        self._status = Status
        self._error = StatusCode.ERROR
        self._kinds: dict[str, SpanKind] = {
            "internal": SpanKind.INTERNAL,
            "server": SpanKind.SERVER,
            "client": SpanKind.CLIENT,
            "producer": SpanKind.PRODUCER,
            "consumer": SpanKind.CONSUMER,
        }

    def _start(
        self, name: str, parent: str | None, kind: Kind, attributes: Attributes | None
    ) -> _Live:
        ctx: Context | None = None
        if parent is not None:
            # A malformed value gives an empty context: a new trace, never an error.
            ctx = self._propagator.extract({TRACEPARENT: parent})
        span = self._tracer.start_span(
            name, context=ctx, kind=self._kinds[kind], attributes=attributes
        )
        return _Live(self, span)

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> Span:
        return self._start(name, parent, kind, attributes)

    # A live span becomes current only when entered as a ``with`` block (_Live.__enter__).
    start = span

    def batch(
        self,
        name: str,
        count: int,
        *,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> _Spans:
        return _Spans([self._start(name, None, kind, attributes) for _ in range(count)])

    def current(self) -> str | None:
        return _format(self._trace.get_current_span())

    def note(self, key: str, value: Value) -> None:
        self._trace.get_current_span().set_attribute(key, value)

    async def shutdown(self) -> None:
        # The exporters' last flush is blocking network I/O.
        await asyncio.to_thread(self.provider.shutdown)

    # --- for _Live --------------------------------------------------------------------------

    def attach(self, span: OtelSpan) -> Token[Context]:
        return self._context.attach(self._trace.set_span_in_context(span))

    def detach(self, token: Token[Context]) -> None:
        self._context.detach(token)

    def status_error(self, description: str) -> Status:
        return self._status(self._error, description)


def _format(span: OtelSpan) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


# --- from the environment ---------------------------------------------------------------------


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def wanted_exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (empty: tracing off)."""
    if _flag(environ.get("OTEL_SDK_DISABLED")):
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not supported (use otlp, console or none)"
        )
    return list(dict.fromkeys(names))


def tracing_from_environment(environ: Mapping[str, str]) -> Tracing:
    """Tracing as the ``OTEL_*`` variables in ``environ`` ask (the SDK itself reads the
    process environment for the details; see the module's description)."""
    exporters = wanted_exporters(environ)
    if not exporters:
        return Tracing()
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in exporters and protocol.strip().lower() != "http/protobuf":
        raise TracingUnavailable(
            f"OTLP protocol {protocol!r} not supported: this bridge exports OTLP as "
            "http/protobuf (set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and port 4318)"
        )
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise TracingUnavailable(
            "OTEL_TRACES_EXPORTER is set but the OpenTelemetry SDK is not installed "
            "(install parloa-bridge[tracing])"
        ) from exc
    resource = Resource.create()
    named = str(resource.attributes.get(SERVICE_NAME, ""))
    if not named or named.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError as exc:
                raise TracingUnavailable(
                    "the OTLP exporter is not installed (install parloa-bridge[tracing])"
                ) from exc
            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing on: spans exported to %s", ", ".join(exporters))
    return OtelTracing(provider)
