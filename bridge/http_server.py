"""The bridge's one HTTP server: health, readiness, metrics, and the adapters' webhook routes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from bridge.metrics import Metrics

log = logging.getLogger("bridge.http")

Readiness = Callable[[], Awaitable[tuple[bool, Mapping[str, Any]]]]


def build_app(
    metrics: Metrics,
    readiness: Readiness,
    extra_routes: Sequence[web.RouteDef] = (),
    client_max_size: int = 1024 * 1024,
) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ready, parts = await readiness()
        return web.json_response(
            {"status": "ready" if ready else "not ready", **parts}, status=200 if ready else 503
        )

    async def metrics_route(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app = web.Application(client_max_size=client_max_size)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_route),
            *extra_routes,
        ]
    )
    return app


class HttpServer:
    """Owns the runner and site of the app; ``port`` is the bound port (0 picks one)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(
            app, access_log=logging.getLogger("bridge.http.access"), shutdown_timeout=5
        )
        self._host = host
        self._port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("HTTP server listening on http://%s:%s", self._host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
