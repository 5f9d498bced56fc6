"""The TextchatV2 HTTP client: one pooled aiohttp session per client, owned by start/close.

The client sends one request per call and never retries: retrying is the engine's decision,
made durably and in conversation order. Every failure is a :mod:`bridge.textchat.errors` error.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from pydantic import SecretStr, ValidationError
from yarl import URL

from bridge.retry_after import retry_after_seconds
from bridge.textchat.errors import (
    BadRequest,
    MalformedResponse,
    RateLimited,
    ServerError,
    SessionNotFound,
    TextchatConnectionError,
    TextchatError,
    TextchatStatusError,
    TextchatTimeout,
    Unauthorized,
    UnexpectedStatus,
)
from bridge.textchat.models import (
    PLATFORM,
    ContextItem,
    Event,
    LaunchEvent,
    MessageEvent,
    QuitEvent,
    TextchatRequest,
    TextchatResponse,
    describe_validation_error,
    parse_wire,
)
from bridge.tracing import Tracing

log = logging.getLogger("bridge.textchat")

DEFAULT_MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 64  # far beyond any real response; deeper data cannot be stored or re-sent


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0


@dataclass(frozen=True, slots=True)
class TextchatResult:
    """A response and what the transport told about it."""

    response: TextchatResponse
    status: int
    request_id: str
    correlation_id: str | None
    elapsed: float


class TextchatClient:
    """Talks to one TextchatV2 release. Use ``async with`` or ``start()``/``close()``."""

    def __init__(
        self,
        base_url: str,
        release_id: str,
        api_token: SecretStr | str,
        *,
        timeouts: Timeouts | None = None,
        max_connections: int = 1000,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        user_agent: str = "parloa-bridge",
        tracing: Tracing | None = None,
    ) -> None:
        self._url = URL(base_url.rstrip("/") + "/dialoghook").with_query(
            dialog=release_id, platform=PLATFORM
        )
        self.release_id = release_id
        self._token = api_token if isinstance(api_token, SecretStr) else SecretStr(api_token)
        self._timeouts = timeouts or Timeouts()
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._tracing = tracing or Tracing()

    def __repr__(self) -> str:
        return f"TextchatClient(url={str(self._url)!r}, api_token=SecretStr('**********'))"

    @property
    def url(self) -> str:
        return str(self._url)

    async def start(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self._timeouts.connect,
                    sock_read=self._timeouts.read,
                ),
                # Proxies from the environment are not wanted for a service-to-service call.
                trust_env=False,
                headers={"User-Agent": self._user_agent},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- convenience ------------------------------------------------------------------------

    async def launch(
        self, requester_id: str, session_id: str, context: Sequence[ContextItem] = ()
    ) -> TextchatResult:
        return await self.send(LaunchEvent(), requester_id, session_id, context)

    async def message(
        self,
        text: str,
        requester_id: str,
        session_id: str,
        context: Sequence[ContextItem] = (),
    ) -> TextchatResult:
        return await self.send(MessageEvent(text=text), requester_id, session_id, context)

    async def quit(
        self, requester_id: str, session_id: str, context: Sequence[ContextItem] = ()
    ) -> TextchatResult:
        return await self.send(QuitEvent(), requester_id, session_id, context)

    # --- the one call -----------------------------------------------------------------------

    async def send(
        self,
        event: Event,
        requester_id: str,
        session_id: str,
        context: Sequence[ContextItem] = (),
        *,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> TextchatResult:
        """Send one event; return the parsed response or raise a TextchatError."""
        if self._session is None:
            raise RuntimeError("TextchatClient.start() was not called")
        body = TextchatRequest(
            event=event,
            requester_id=requester_id,
            session_id=session_id,
            context=list(context) or None,
        ).to_wire()
        request_id = request_id or str(uuid.uuid4())
        sent_headers = {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Request-Id": request_id,
            **(headers or {}),
        }
        if not self._tracing.enabled:  # nothing more to build when not traced
            return await self._post(event, session_id, body, sent_headers, request_id)
        # The span of the call: the current span's child (the worker's, in the engine); its
        # trace context goes to Parloa in the traceparent header.
        with self._tracing.span(
            f"parloa {event.type}",
            kind="client",
            attributes={
                "http.request.method": "POST",
                "server.address": self._url.host or "",
                "parloa.event": event.type,
                "parloa.session_id": session_id,
            },
        ) as span:
            traceparent = span.traceparent
            if traceparent is not None:
                sent_headers["traceparent"] = traceparent
            try:
                result = await self._post(event, session_id, body, sent_headers, request_id)
            except TextchatError as exc:
                span.set("parloa.request_id", exc.request_id or request_id)
                if exc.correlation_id:
                    span.set("parloa.correlation_id", exc.correlation_id)
                status = getattr(exc, "status", None)
                if isinstance(status, int):
                    span.set("http.response.status_code", status)
                span.set("error.type", type(exc).__name__)
                raise
            span.set("parloa.request_id", result.request_id)
            if result.correlation_id:
                span.set("parloa.correlation_id", result.correlation_id)
            span.set("http.response.status_code", result.status)
            return result

    async def _post(
        self,
        event: Event,
        session_id: str,
        body: object,
        sent_headers: Mapping[str, str],
        request_id: str,
    ) -> TextchatResult:
        assert self._session is not None
        started = time.monotonic()
        try:
            # A lone surrogate (possible in text decoded from a channel's JSON) cannot be
            # encoded as UTF-8; inside a JSON string its backslash form is the same escape.
            data = json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace")
            async with self._session.post(self._url, data=data, headers=sent_headers) as resp:
                rid = resp.headers.get("X-Request-Id") or request_id
                cid = resp.headers.get("X-Correlation-Id")
                raw = await self._read_limited(resp, rid, cid)
                elapsed = time.monotonic() - started
                log.debug(
                    "textchat %s session=%s status=%s elapsed=%.3fs request_id=%s "
                    "correlation_id=%s",
                    event.type,
                    session_id,
                    resp.status,
                    elapsed,
                    rid,
                    cid,
                )
                if not 200 <= resp.status < 300:
                    raise _status_error(resp.status, resp.headers, raw, rid, cid)
                parsed = _parse_body(raw, rid, cid)
                return TextchatResult(parsed, resp.status, rid, cid, elapsed)
        except TextchatError:
            raise
        except TimeoutError as exc:
            raise TextchatTimeout(
                f"Parloa did not answer within the timeout ({_kind(exc)})", request_id=request_id
            ) from None
        except aiohttp.ClientError as exc:
            raise TextchatConnectionError(
                f"cannot reach Parloa at {self._url.origin()}: {type(exc).__name__}",
                request_id=request_id,
            ) from None

    async def _read_limited(self, resp: aiohttp.ClientResponse, rid: str, cid: str | None) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self._max_body:
            raise MalformedResponse(
                f"response body of {declared} bytes exceeds the {self._max_body} byte limit",
                request_id=rid,
                correlation_id=cid,
            )
        if declared is not None:
            return await resp.read()  # no more than the declared length is read
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body:
                raise MalformedResponse(
                    f"response body exceeds the {self._max_body} byte limit",
                    request_id=rid,
                    correlation_id=cid,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _kind(exc: BaseException) -> str:
    return "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "read"


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = raw[:limit].decode("utf-8", errors="replace")
    return " ".join(text.split())


def _status_error(
    status: int, headers: Mapping[str, str], raw: bytes, rid: str, cid: str | None
) -> TextchatStatusError:
    excerpt = _excerpt(raw)
    message = f"Parloa answered {status}" + (f": {excerpt}" if excerpt else "")
    if status == 429:
        return RateLimited(
            message,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
            body_excerpt=excerpt,
            request_id=rid,
            correlation_id=cid,
        )
    cls: type[TextchatStatusError] = _BY_STATUS.get(status) or (
        ServerError if 500 <= status < 600 else UnexpectedStatus
    )
    return cls(message, status=status, body_excerpt=excerpt, request_id=rid, correlation_id=cid)


_BY_STATUS: dict[int, type[TextchatStatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: SessionNotFound,
}


def _depth(value: object, limit: int = 10_000) -> int:
    """Nesting depth of parsed JSON, iteratively (the data may be deep enough to break
    recursion)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack and deepest <= limit:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def _parse_body(raw: bytes, rid: str, cid: str | None) -> TextchatResponse:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedResponse(
            f"response is not JSON: {_excerpt(raw, 80)!r}", request_id=rid, correlation_id=cid
        ) from None
    if not isinstance(data, dict):
        raise MalformedResponse(
            f"response is JSON {type(data).__name__}, not an object",
            request_id=rid,
            correlation_id=cid,
        )
    # Every container opens with "[" or "{": with no more of them than the limit in the raw
    # body (those inside strings count too), the data cannot be deeper; only a body with
    # more is walked: the walk is a noticeable part of every call (docs/benchmarks.md,
    # "Parloa client").
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        raise MalformedResponse(
            f"response is nested deeper than {MAX_JSON_DEPTH} levels",
            request_id=rid,
            correlation_id=cid,
        )
    try:
        return parse_wire(TextchatResponse, data)
    except ValidationError as exc:
        raise MalformedResponse(
            f"response is not a TextchatV2 body: {describe_validation_error(exc)}",
            request_id=rid,
            correlation_id=cid,
        ) from None
