"""The operational surface: /readyz and /metrics on an admin listener of their own, or behind
a bearer token on the public listener; /healthz always open. The servers are the ones the
composition root builds (bridge/parts.py), on free ports of 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from bridge.config import HttpConfig
from bridge.http_server import HttpServer, authorized
from bridge.metrics import Metrics
from bridge.parts import build_http_server

TOKEN = "admin-token-0123456789"


class FakeAdapter:
    """Just what build_http_server reads of an adapter: its routes."""

    def routes(self) -> list[web.RouteDef]:
        async def events(_request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        return [web.post("/webhook/web/events", events)]


async def ready() -> tuple[bool, Mapping[str, Any]]:
    return True, {"database": "ok"}


@asynccontextmanager
async def serving(config: HttpConfig) -> AsyncIterator[HttpServer]:
    server = build_http_server(config, Metrics(), ready, [FakeAdapter()])  # type: ignore[list-item]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def status(port: int, path: str, headers: Mapping[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            "POST" if path.startswith("/webhook") else "GET",
            f"http://127.0.0.1:{port}{path}",
            headers=headers,
            json={} if path.startswith("/webhook") else None,
        ) as response,
    ):
        await response.read()
        return response.status


async def test_without_admin_settings_everything_is_public() -> None:
    async with serving(HttpConfig(port=0)) as server:
        assert server.admin is None
        for path in ("/healthz", "/readyz", "/metrics", "/webhook/web/events"):
            assert await status(server.port, path) == 200, path


async def test_admin_listener_takes_readiness_and_metrics_off_the_public_one() -> None:
    async with serving(HttpConfig(port=0, admin_port=0)) as server:
        assert server.admin is not None and server.admin.port not in (0, server.port)
        public, admin = server.port, server.admin.port
        assert await status(public, "/metrics") == 404
        assert await status(public, "/readyz") == 404
        assert await status(public, "/healthz") == 200
        assert await status(public, "/webhook/web/events") == 200
        assert await status(admin, "/metrics") == 200
        assert await status(admin, "/readyz") == 200
        assert await status(admin, "/healthz") == 200
        assert await status(admin, "/webhook/web/events") == 404  # no intake there
    # Both listeners stop with the server.
    with pytest.raises(aiohttp.ClientConnectionError):
        await status(admin, "/healthz")


async def test_bearer_token_guards_readiness_and_metrics() -> None:
    async with serving(HttpConfig(port=0, admin_token=SecretStr(TOKEN))) as server:
        port = server.port
        for path in ("/metrics", "/readyz"):
            assert await status(port, path) == 401
            assert await status(port, path, {"Authorization": "Bearer wrong-token-000000"}) == 401
            assert await status(port, path, {"Authorization": f"Basic {TOKEN}"}) == 401
            assert await status(port, path, {"Authorization": f"Bearer {TOKEN}"}) == 200
        assert await status(port, "/healthz") == 200  # liveness probes carry no token
        assert await status(port, "/webhook/web/events") == 200


async def test_bearer_token_applies_on_the_admin_listener_too() -> None:
    config = HttpConfig(port=0, admin_port=0, admin_token=SecretStr(TOKEN))
    async with serving(config) as server:
        assert server.admin is not None
        assert await status(server.admin.port, "/metrics") == 401
        assert (
            await status(server.admin.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"}) == 200
        )


def test_authorized_header_parsing() -> None:
    assert authorized(f"Bearer {TOKEN}", TOKEN)
    assert authorized(f"bearer {TOKEN}", TOKEN)
    assert not authorized(None, TOKEN)
    assert not authorized(f"Bearer {TOKEN}x", TOKEN)
    assert not authorized(TOKEN, TOKEN)


def test_short_admin_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="admin_token"):
        HttpConfig(admin_token=SecretStr("short"))
