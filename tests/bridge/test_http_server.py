"""The server's body rule and its one exception: every body is read (within the size limit
and deadline) before the handler runs, except on a route that streams its own."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bridge.http_server import build_app, streams_body
from bridge.metrics import Metrics
from tests.support.net import serving


async def ready() -> tuple[bool, dict[str, str]]:
    return True, {}


async def count_bytes(request: web.Request) -> web.Response:
    total = 0
    while chunk := await request.content.read(65536):
        total += len(chunk)
    return web.json_response({"bytes": total})


async def test_a_streaming_route_takes_more_than_the_size_limit() -> None:
    app = build_app(
        Metrics(),
        ready,
        [web.post("/stream", streams_body(count_bytes)), web.post("/whole", count_bytes)],
        client_max_size=1024,
    )
    body = b"x" * 100_000
    async with serving(app) as url, aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(f"{url}/stream", data=body) as resp:
            assert resp.status == 200
            assert await resp.json() == {"bytes": len(body)}
        async with session.post(f"{url}/whole", data=body) as resp:
            assert resp.status == 413
