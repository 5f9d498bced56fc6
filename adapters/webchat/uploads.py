"""The web chat's uploads: ``POST /webchat/{name}/upload`` streams one file of the page's user
into the bridge's media store (``Intake.store_attachment``), which keeps whose it is: only
that user's messages may name it (:func:`named_uploads`)."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

from adapters.webchat.admission import Admission
from adapters.webchat.options import WebchatOptions
from adapters.webchat.protocol import (
    TOKEN,
    USER_ID,
    file_name,
    origin_allowed,
    upload_attachment,
)
from bridge.channel import ChannelState, Intake, IntakeUnavailable, StoredUpload
from bridge.media.attachments import Attachment, AttachmentTooLarge

log = logging.getLogger("adapters.webchat")

RETRY_AFTER_SECONDS = 5

#: The headers an upload names its user with (the identity the page holds).
USER_HEADER = "X-Webchat-User"
TOKEN_HEADER = "X-Webchat-Token"
#: Bytes of an upload read at a time.
UPLOAD_CHUNK_BYTES = 64 * 1024
#: Form fields before the file that are skipped; more is not an upload of this page.
MAX_SKIPPED_PARTS = 4


class _BadUpload(ValueError):
    pass


def _content_type(header: str | None, name: str | None) -> str:
    """A part's declared type (without parameters), else guessed from its name."""
    declared = (header or "").split(";", 1)[0].strip().lower()
    if declared and declared != "application/octet-stream" and len(declared) <= 255:
        major, _, minor = declared.partition("/")
        if major and minor and declared.isascii() and " " not in declared:
            return declared
    guessed = mimetypes.guess_type(name)[0] if name else None
    return guessed or "application/octet-stream"


async def _multipart(request: web.Request) -> aiohttp.MultipartReader:
    """The request's multipart reader; from memory when the server read the body first."""
    if not request.content.at_eof():
        return await request.multipart()
    body = await request.read()
    stream = aiohttp.StreamReader(
        request.protocol, max(len(body), 2**16), loop=asyncio.get_running_loop()
    )
    stream.feed_data(body)
    stream.feed_eof()
    return aiohttp.MultipartReader(request.headers, stream)


async def _file_part(request: web.Request) -> aiohttp.BodyPartReader:
    """The first file part of a multipart body; raises _BadUpload when there is none."""
    if request.content_type != "multipart/form-data":
        raise _BadUpload("expected multipart/form-data")
    reader = await _multipart(request)
    for _ in range(MAX_SKIPPED_PARTS + 1):
        part = await reader.next()
        if part is None:
            break
        if isinstance(part, aiohttp.BodyPartReader) and part.filename is not None:
            return part
    raise _BadUpload("no file in the upload")


class UploadRoute:
    """The upload route of one web chat channel."""

    def __init__(
        self,
        channel: str,
        options: WebchatOptions,
        admission: Admission,
        own_origins: tuple[str, ...],
    ) -> None:
        self.channel = channel
        self.options = options
        self.admission = admission
        self.own_origins = own_origins

    def _uploader(self, request: web.Request) -> str | None:
        user = request.headers.get(USER_HEADER, "")
        token = request.headers.get(TOKEN_HEADER, "")
        if USER_ID.match(user) and TOKEN.match(token) and self.admission.issued(user, token):
            return user
        return None

    async def handle(
        self, request: web.Request, intake: Intake | None, state: ChannelState | None
    ) -> web.StreamResponse:
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if intake is None or state is None:
            return web.json_response({"error": "channel is not running"}, status=503, headers=retry)
        if not self.options.uploads:
            return web.json_response({"error": "uploads are off"}, status=404)
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(
            origin, request.host, self.options.allowed_origins, self.own_origins
        ):
            return web.json_response({"error": "origin not allowed"}, status=403)
        user = self._uploader(request)
        if user is None:
            return web.json_response({"error": "identity_refused"}, status=401)
        refusal = self.admission.upload_limit(user, request.remote or "unknown")
        if refusal is not None:
            return web.json_response({"error": refusal}, status=429, headers=retry)
        try:
            async with asyncio.timeout(self.options.upload_timeout_seconds):
                upload = await self._store_upload(request, user, intake)
        except _BadUpload as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except AttachmentTooLarge:
            return web.json_response({"error": "file too large"}, status=413)
        except TimeoutError:
            log.info("webchat channel %s: an upload did not arrive in time", self.channel)
            return web.json_response({"error": "upload too slow"}, status=408)
        except IntakeUnavailable:
            return web.json_response({"error": "unavailable"}, status=503, headers=retry)
        except (ValueError, AssertionError, RuntimeError) as exc:  # aiohttp: malformed multipart
            log.info("webchat channel %s: a malformed upload: %s", self.channel, exc)
            return web.json_response({"error": "malformed upload"}, status=400)
        except (aiohttp.ClientPayloadError, ConnectionError) as exc:
            log.info("webchat channel %s: an upload broke off: %r", self.channel, exc)
            return web.json_response({"error": "upload incomplete"}, status=400)
        log.debug("webchat channel %s: upload %s of user %s", self.channel, upload.media_id, user)
        return web.json_response(
            {
                "id": upload.media_id,
                "name": upload.name,
                "size": upload.size,
                "content_type": upload.content_type,
            }
        )

    async def _store_upload(self, request: web.Request, user: str, intake: Intake) -> StoredUpload:
        part = await _file_part(request)
        name = file_name(part.filename)
        content_type = _content_type(part.headers.get(aiohttp.hdrs.CONTENT_TYPE), name)
        first = await part.read_chunk(UPLOAD_CHUNK_BYTES)
        if not first:
            raise _BadUpload("the file is empty")
        size = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal size
            chunk = first
            while chunk:
                size += len(chunk)
                yield chunk
                chunk = await part.read_chunk(UPLOAD_CHUNK_BYTES)

        media_id = await intake.store_attachment(user, chunks(), content_type, name)
        return StoredUpload(media_id, name, content_type, size)


async def named_uploads(intake: Intake, user: str, ids: Sequence[str]) -> list[Attachment] | None:
    """The attachments a message names: None when one is not an upload of ``user``. Raises
    IntakeUnavailable."""
    found: list[Attachment] = []
    for media_id in ids:
        upload = await intake.stored_upload(user, media_id)
        if upload is None:
            return None
        found.append(upload_attachment(upload))
    return found
