"""``GET /media/{id}?exp=…&sig=…``: a stored attachment, to whoever holds a valid signed URL
(bridge/media/urls.py), no other credentials. The exact bytes, streamed from the database a
chunk at a time, with their content type and a Content-Disposition; a tampered or unsigned
URL is 403, an expired one or an unknown file 404, never the file."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from bridge.media.urls import Refused, check
from bridge.store import Store, StoreError

log = logging.getLogger("bridge.media")

#: shown in the browser rather than saved (anything else, HTML above all, is a download)
INLINE = ("image/", "audio/", "video/")


def disposition(content_type: str, name: str | None) -> str:
    kind = "inline" if content_type.startswith(INLINE) else "attachment"
    if not name:
        return kind
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def media_routes(
    store: Store, key: Callable[[], Awaitable[bytes]], clock: Callable[[], float] = time.time
) -> list[web.RouteDef]:
    async def serve(request: web.Request) -> web.StreamResponse:
        media_id = request.match_info["id"]
        query = request.query
        try:
            check(await key(), media_id, query.get("exp"), query.get("sig"), clock())
            file = await store.media_file(media_id)
        except Refused as refused:
            return web.json_response({"error": str(refused)}, status=refused.status)
        except StoreError as exc:
            log.warning("media %s: the store is unavailable: %s", media_id, exc)
            return web.json_response(
                {"error": "temporarily unavailable"}, status=503, headers={"Retry-After": "5"}
            )
        if file is None:
            return web.json_response({"error": "no such file"}, status=404)
        response = web.StreamResponse(
            headers={
                "Content-Type": file.content_type,
                "Content-Disposition": disposition(file.content_type, file.name),
                "X-Content-Type-Options": "nosniff",
                # A file served from the bridge's origin must not run there.
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, max-age=3600",
            }
        )
        response.content_length = file.size
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        async for chunk in store.media_bytes(file):
            await response.write(chunk)
        await response.write_eof()
        return response

    return [web.get("/media/{id}", serve, allow_head=True)]
