"""Signed JSON over HTTP, both ways, for the webhook channel (adapters/webhook/) and the
webhook desk (bridge/handover/webhook.py); it lives in the core so that both can use it (the
core never imports adapters).

Out: :class:`SignedPoster` POSTs a JSON body, signed with bridge/signing.py, to one configured
URL (no redirects followed: a signed request must reach that URL; no proxies from the
environment) and reads at most a cap of the answer; :func:`answer_error` says what the answer
means for a delivery: 2xx delivered; 429 wait (``Retry-After`` from
``MIN_RETRY_AFTER_SECONDS`` up to an hour) and retry, without a usable one an ordinary failed
attempt; 5xx retry (after its ``Retry-After``); any other status rejected. A caller may read a
status more finely first (the webhook channel: 410, the recipient is gone).

In: :func:`read_signed_body` reads a request's body within a size limit and checks its
signature; :func:`error_response` is the ``{"error": "<one line>"}`` answer both give a sender.

Errors, one tree (outbound failures are the adapters' DeliveryError tree)::

    RequestRefused        a request is not taken: answer ``status`` (401, 413) with ``reason``
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from bridge.channel import DeliveryError, DeliveryRejected, DeliveryRetryable
from bridge.channelkit import retry_after_seconds
from bridge.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers, verify_signature

#: The shortest Retry-After honoured as a rate limit (see :func:`rate_limited`).
MIN_RETRY_AFTER_SECONDS = 1.0
#: How much of an answer is quoted in an error.
EXCERPT_CHARS = 200


def excerpt(raw: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of an answer on one line, for an error message."""
    return " ".join(raw[:limit].decode("utf-8", "replace").split())


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body; the rest is left unread."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def rate_limited(message: str, header: str | None) -> DeliveryRetryable:
    """The retry a 429 asks for. A wait from ``MIN_RETRY_AFTER_SECONDS`` up to an hour is
    honoured without spending an attempt; a 429 without a usable wait (none, ``0``, a date in
    the past) is an ordinary failed attempt, backed off and counted, so a receiver answering
    ``Retry-After: 0`` for ever does not keep the conversation retrying at once for ever."""
    wait = retry_after_seconds(header)  # finite, capped at an hour
    if wait is None or wait < MIN_RETRY_AFTER_SECONDS:
        return DeliveryRetryable(message + " (no usable Retry-After)")
    return DeliveryRetryable(message, retry_after=wait, rate_limited=True)


def answer_error(
    what: str, status: int, headers: Mapping[str, str], answer: bytes
) -> DeliveryError | None:
    """What a receiver's answer means: None when delivered (2xx), else the DeliveryError to
    raise, its message ``"<what> answered <status>: <excerpt>"``."""
    if 200 <= status < 300:
        return None
    quoted = excerpt(answer)
    message = f"{what} answered {status}" + (f": {quoted}" if quoted else "")
    header = headers.get("Retry-After")
    if status == 429:
        return rate_limited(message, header)
    if status >= 500:
        return DeliveryRetryable(message, retry_after=retry_after_seconds(header))
    return DeliveryRejected(message)


class RequestRefused(Exception):
    """The request is not taken; answer ``status`` with ``reason`` (one line, no values)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_signed_body(
    request: web.Request,
    secret: bytes,
    *,
    max_bytes: int,
    tolerance: float,
    clock: Callable[[], float] = time.time,
) -> bytes:
    """The body of a signed request: at most ``max_bytes`` (413 otherwise, before the
    signature is checked), signed with ``secret`` within ``tolerance`` seconds of the
    ``clock`` (401 otherwise). Raises RequestRefused."""
    too_large = RequestRefused(413, f"body is larger than {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    # The server has read the body already, within its own size limit and deadline
    # (bridge/http_server.py); this limit may be smaller.
    raw = await request.read()
    if len(raw) > max_bytes:
        raise too_large
    problem = verify_signature(
        secret,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        raw,
        now=clock(),
        tolerance=tolerance,
    )
    if problem is not None:
        raise RequestRefused(401, problem)
    return raw


def error_response(
    status: int, reason: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The ``{"error": reason}`` answer to a sender."""
    return web.json_response({"error": reason}, status=status, headers=headers)


class SignedPoster:
    """POSTs signed JSON bodies to ``url`` over one session, open between :meth:`start` and
    :meth:`close`. ``what`` names the URL in errors (``deliver_url``), ``owner`` the part
    using it (``webhook channel``: "webhook channel is not running")."""

    def __init__(
        self,
        *,
        url: str,
        secret: bytes,
        timeout_seconds: float,
        user_agent: str,
        max_answer_bytes: int,
        what: str,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret
        self.timeout_seconds = timeout_seconds
        self._user_agent = user_agent
        self._max_answer_bytes = max_answer_bytes
        self.what = what
        self._owner = owner
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        # The secret stays out of any log line.
        return f"SignedPoster(url={self.url!r})"

    @property
    def running(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        """Open the session; idempotent."""
        if not self.running:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                # Proxies from the environment are not wanted for a configured endpoint.
                trust_env=False,
                headers={"User-Agent": self._user_agent},
            )

    async def close(self) -> bool:
        """Close the session; idempotent. True when it was open."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return False
        await session.close()
        return True

    async def post(
        self, body: bytes, traceparent: str | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST the JSON ``body``, signed now; returns the status, the headers and at most
        ``max_answer_bytes`` of the answer. Raises DeliveryRetryable when not running, on a
        timeout or when the URL cannot be reached."""
        session = self._session
        if session is None or session.closed:
            raise DeliveryRetryable(f"{self._owner} is not running")
        headers = {
            "Content-Type": "application/json",
            **signed_headers(self._secret, str(int(self._clock())), body),
        }
        if traceparent is not None:
            # The receiver's own spans can join the trace this request belongs to.
            headers["traceparent"] = traceparent
        try:
            async with session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                answer = await read_capped(resp.content, self._max_answer_bytes)
                return resp.status, dict(resp.headers), answer
        except TimeoutError:
            raise DeliveryRetryable(
                f"{self.what} did not answer within {self.timeout_seconds}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise DeliveryRetryable(f"{self.what} unreachable: {type(exc).__name__}") from None


__all__ = [
    "MIN_RETRY_AFTER_SECONDS",
    "RequestRefused",
    "SignedPoster",
    "answer_error",
    "error_response",
    "excerpt",
    "rate_limited",
    "read_capped",
    "read_signed_body",
]
