"""Errors raised by the TextchatV2 client.

Every failure of a call to Parloa is one of these; nothing else escapes the client::

    TextchatError                      root; .retryable tells the engine what to do
    ├── TextchatTransportError         no usable HTTP answer arrived (retryable)
    │   ├── TextchatTimeout            connect or read timeout
    │   └── TextchatConnectionError    refused, reset, DNS, TLS, ...
    ├── TextchatStatusError            Parloa answered with a non-2xx status (.status)
    │   ├── BadRequest          400    the event is rejected for good: keep it, tell the user
    │   ├── Unauthorized        401/403  wrong or missing token: an operator must fix config
    │   ├── SessionNotFound     404    unknown session (or unknown release on launch)
    │   ├── RateLimited         429    retry after .retry_after seconds
    │   ├── ServerError         5xx    transient: retry with backoff
    │   └── UnexpectedStatus    other  retryable only for 408/425
    └── MalformedResponse              2xx, but not a TextchatV2 response (not JSON,
                                       missing or wrong-typed fields, oversized body).
                                       Not retryable: Parloa may already have acted on it.

No message or repr ever contains the API token.
"""

from __future__ import annotations

from typing import TypedDict, Unpack


class TextchatError(Exception):
    """Root of the client's errors. ``retryable`` says whether sending again may succeed."""

    retryable: bool = False
    #: what an operator should do about it, for logs and dead-letter reasons
    hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        ids = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("request_id", self.request_id),
                ("correlation_id", self.correlation_id),
            )
            if value
        )
        return f"{self.message} ({ids})" if ids else self.message


class TextchatTransportError(TextchatError):
    """No usable HTTP answer: the request may or may not have reached Parloa."""

    retryable = True
    hint = "check network reachability of the Parloa base_url"


class TextchatTimeout(TextchatTransportError):
    """The connect or read timeout passed."""


class TextchatConnectionError(TextchatTransportError):
    """The connection could not be made or broke."""


class AnswerDetails(TypedDict, total=False):
    """What a status error tells of Parloa's answer besides its status (the keywords of
    :class:`TextchatStatusError`, passed on by its subclasses)."""

    body_excerpt: str
    request_id: str | None
    correlation_id: str | None


class TextchatStatusError(TextchatError):
    """Parloa answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body_excerpt: str = "",
        request_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, correlation_id=correlation_id)
        self.status = status
        self.body_excerpt = body_excerpt


class BadRequest(TextchatStatusError):
    """400: Parloa rejected the request; sending it again will not help."""

    hint = "the event was rejected; inspect it and the reason"


class Unauthorized(TextchatStatusError):
    """401/403: the API token is wrong or missing for this release."""

    hint = "fix the bot's api_token (and release_id) in the configuration"


class SessionNotFound(TextchatStatusError):
    """404: the session is unknown (expired), or on launch: the release does not exist."""

    hint = "on launch: check release_id; on message: start a new session"


class RateLimited(TextchatStatusError):
    """429: slow down; ``retry_after`` is the server's wish in seconds, if it said one."""

    retryable = True
    hint = "Parloa is rate limiting this bridge"

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        retry_after: float | None = None,
        **answer: Unpack[AnswerDetails],
    ) -> None:
        super().__init__(message, status=status, **answer)
        self.retry_after = retry_after


class ServerError(TextchatStatusError):
    """5xx: Parloa (or a proxy in front of it) failed; try again later."""

    retryable = True
    hint = "Parloa is failing; the bridge retries with backoff"


class UnexpectedStatus(TextchatStatusError):
    """A status the protocol does not name."""

    hint = "unexpected status from Parloa; check base_url"

    def __init__(self, message: str, *, status: int, **answer: Unpack[AnswerDetails]) -> None:
        super().__init__(message, status=status, **answer)
        # 408 Request Timeout and 425 Too Early invite a retry by definition.
        self.retryable = status in (408, 425)


class MalformedResponse(TextchatError):
    """A 2xx answer that is not a TextchatV2 response body."""

    hint = "Parloa (or a proxy) sent something that is not a TextchatV2 response"
