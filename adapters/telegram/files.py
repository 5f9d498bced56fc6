"""An attachment's bytes from Telegram: getFile for the file's path, then a streamed GET of
the Bot API's file URL (``{api_base_url}/file/bot<token>/<path>``), chunk by chunk.

The URL carries the bot token, so no error message here names it. Failures map to the
core's errors: flood control, network trouble, timeouts and 5xx are retryable; Telegram's
"file is too big" (bots may download up to 20 MB) is too large; any other refusal (a file id
that is not this bot's, a file gone) makes the attachment unavailable.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

from adapters.telegram.aiohttp_request import AiohttpRequest
from adapters.telegram.bot import BridgeBot, retry_seconds
from adapters.telegram.options import TelegramOptions
from bridge.channelkit import body_chunks, retry_after_seconds
from bridge.media.attachments import (
    Attachment,
    AttachmentRetryable,
    AttachmentTooLarge,
    AttachmentUnavailable,
    Download,
)

_TOO_BIG = re.compile(r"file is too big", re.IGNORECASE)
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})


def download_request(options: TelegramOptions) -> AiohttpRequest:
    """The transport of file downloads: the channel's timeouts apply to each read, not to the
    whole file (the core bounds that)."""
    timeout = options.request_timeout_seconds
    return AiohttpRequest(
        connection_pool_size=options.connection_pool_size,
        read_timeout=timeout,
        connect_timeout=timeout,
        pool_timeout=timeout,
    )


async def _locate(bot: BridgeBot, file_id: str) -> tuple[str, int | None]:
    try:
        return await bot.file_location(file_id)
    except RetryAfter as exc:
        raise AttachmentRetryable("getFile: flood control", retry_seconds(exc)) from None
    except BadRequest as exc:
        if _TOO_BIG.search(exc.message):
            raise AttachmentTooLarge(f"getFile: {exc.message}") from None
        raise AttachmentUnavailable(f"getFile: {exc.message}") from None
    except TelegramError as exc:
        # NetworkError (5xx included) and TimedOut are worth another try, a refusal is not.
        if isinstance(exc, Forbidden | InvalidToken):
            raise AttachmentUnavailable(f"getFile: {exc.message}") from None
        # Not the message: a connection error's names the URL, and the token with it.
        raise AttachmentRetryable(f"getFile failed: {type(exc).__name__}") from None


def _content_type(attachment: Attachment, served: str | None) -> str | None:
    """What the platform told at intake wins: the file server often says only
    ``application/octet-stream``."""
    if attachment.mime_type:
        return attachment.mime_type
    if served and served.lower() not in _GENERIC_TYPES:
        return served
    return None


def _refusal(status: int, retry_after: str | None) -> Exception:
    if status == 429:
        return AttachmentRetryable("file download: 429", retry_after_seconds(retry_after))
    if status >= 500 or status == 408:
        return AttachmentRetryable(f"file download: {status}")
    return AttachmentUnavailable(f"file download: {status}")


@contextlib.asynccontextmanager
async def open_file(
    bot: BridgeBot, downloads: AiohttpRequest, attachment: Attachment
) -> AsyncIterator[Download]:
    """The bytes of ``attachment`` (its locator a file id), streamed through ``downloads``."""
    if not attachment.type.has_bytes or not attachment.locator:
        raise AttachmentUnavailable(f"a {attachment.type} has no file")
    url, size = await _locate(bot, attachment.locator)
    await downloads.initialize()
    async with contextlib.AsyncExitStack() as stack:
        try:
            response = await stack.enter_async_context(downloads.stream(url))
        except TimeoutError:
            raise AttachmentRetryable("file download timed out") from None
        except aiohttp.ClientError as exc:
            raise AttachmentRetryable(f"file download failed: {type(exc).__name__}") from None
        if response.status != 200:
            raise _refusal(response.status, response.headers.get("Retry-After"))
        served = response.content_type if "Content-Type" in response.headers else None
        yield Download(
            chunks=body_chunks(response, "file download"),
            content_type=_content_type(attachment, served),
            name=attachment.name,
            size=response.content_length if response.content_length is not None else size,
        )
