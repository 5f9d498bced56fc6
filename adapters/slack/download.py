"""The bytes of a file a user shared in Slack: ``files.info`` through slack-sdk (the adapter's
client), then ``url_private_download`` streamed with the workspace's bot token.

The token goes only to the origin (scheme, host, port) of the URL ``files.info`` gave:
redirects are followed by hand, and one to another origin is followed without it. Errors map
onto the media contract: rate limits, network trouble and 5xx are retryable; a file that is
gone, not shared with the app or refused is unavailable.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError

from adapters.slack.files import parse_locator
from adapters.slack.oauth import RedactingInstallationStore
from adapters.slack.options import SlackOptions
from bridge.channelkit import body_chunks, retry_after_seconds
from bridge.media.attachments import (
    Attachment,
    AttachmentRetryable,
    AttachmentUnavailable,
    Download,
)

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# files.info errors worth asking again; every other error is the file's or the install's.
_RETRYABLE = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# No total timeout: a large file may take long, and the core bounds the whole download.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


async def bot_token_for(
    options: SlackOptions, store: RedactingInstallationStore | None, team_id: str
) -> str:
    """The bot token that may read files of ``team_id``: the channel's own, or the OAuth
    installation's for that workspace."""
    if store is None:
        assert options.bot_token is not None  # required without OAuth
        return options.bot_token.get_secret_value()
    try:
        bot = await store.async_find_bot(enterprise_id=None, team_id=team_id)
    except SQLAlchemyError as exc:
        raise AttachmentRetryable(f"installation store unavailable: {exc!r}") from None
    if bot is None or not bot.bot_token:
        raise AttachmentUnavailable(f"the app is not installed in team {team_id}")
    return str(bot.bot_token)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class SlackFiles:
    """Opens shared files for the core (``Adapter.open_attachment``); one HTTP session,
    opened on first use and closed with :meth:`close`."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @contextlib.asynccontextmanager
    async def open(self, attachment: Attachment, token: str) -> AsyncIterator[Download]:
        """The file's bytes, streamed; ``token`` is the workspace's bot token."""
        parsed = parse_locator(attachment.locator)
        if parsed is None:
            raise AttachmentUnavailable(f"not a Slack file: {attachment.locator!r}")
        info = await self._file_info(parsed[1], token)
        url = info.get("url_private_download") or info.get("url_private")
        if info.get("is_external") or not isinstance(url, str) or not url:
            raise AttachmentUnavailable("the file is not hosted by Slack")
        mime_type = info.get("mimetype") if isinstance(info.get("mimetype"), str) else None
        async with self._get(url, token) as response:
            _check_body_type(response, mime_type)
            served = response.content_type
            if served == "application/octet-stream":
                served = ""  # says nothing: the name may tell more
            size = response.content_length
            if size is None and isinstance(info.get("size"), int):
                size = info["size"]
            yield Download(
                chunks=body_chunks(response, "file download"),
                content_type=mime_type or served or None,
                name=info.get("name") if isinstance(info.get("name"), str) else attachment.name,
                size=size,
            )

    async def _file_info(self, file_id: str, token: str) -> Mapping[str, Any]:
        try:
            response = await self._client.files_info(file=file_id, token=token)
        except SlackApiError as exc:
            raise _api_error(exc) from None
        except (SlackClientError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AttachmentRetryable(f"files.info failed: {exc!r}") from None
        file = response.get("file")
        if not isinstance(file, Mapping):
            raise AttachmentRetryable("files.info answered without a file")
        return file

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env: the proxy settings slack-sdk's own requests follow apply here too
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=True)
        return self._session

    @contextlib.asynccontextmanager
    async def _get(self, url: str, token: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The final response for ``url`` (redirects followed; the token sent only to the
        first URL's origin), its status checked."""
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            if _origin(url)[0] not in ("http", "https"):
                raise AttachmentUnavailable("the file's URL is not http(s)")
            headers = {"Authorization": f"Bearer {token}"} if _origin(url) == origin else {}
            try:
                response = await self._http().get(url, headers=headers, allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise AttachmentRetryable(f"file download failed: {exc!r}") from None
            try:
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                _check_status(response)
                yield response
                return
            finally:
                response.release()
        raise AttachmentUnavailable("too many redirects")


def _api_error(exc: SlackApiError) -> Exception:
    response = exc.response
    error = str(response.get("error") or "")
    if response.status_code == 429 or error == "ratelimited":
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return AttachmentRetryable(f"files.info: Slack said 429 ({error})", retry_after)
    if error in _RETRYABLE or response.status_code >= 500:
        return AttachmentRetryable(f"files.info failed: {error or response.status_code}")
    return AttachmentUnavailable(f"files.info: {error or response.status_code}")


def _check_status(response: aiohttp.ClientResponse) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise AttachmentRetryable("file download: Slack said 429", retry_after)
    if status >= 500 or status == 408:
        raise AttachmentRetryable(f"file download: HTTP {status}")
    raise AttachmentUnavailable(f"file download: HTTP {status}")


def _check_body_type(response: aiohttp.ClientResponse, mime_type: str | None) -> None:
    # Slack answers a request it does not authorise with its sign-in page and status 200.
    if response.content_type == "text/html" and not (mime_type or "").startswith("text/html"):
        raise AttachmentUnavailable(
            "Slack answered with a web page instead of the file (is the files:read scope granted?)"
        )
