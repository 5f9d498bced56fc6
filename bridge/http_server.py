"""The bridge's one HTTP server: health, readiness, metrics, and the adapters' webhook routes.

Every request body is read by the server, before any handler runs, under two limits: its size
(``client_max_size``: 413) and a deadline (``body_timeout_seconds``: a client that announces a
body and dribbles it is answered 408 and the connection closed). A client that goes away
mid-body is noted in one line, not as an error. Handlers then read the body from memory.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

from bridge.metrics import Metrics

log = logging.getLogger("bridge.http")

Readiness = Callable[[], Awaitable[tuple[bool, Mapping[str, Any]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: How long a request body may take to arrive by default ([http] body_timeout_seconds).
BODY_TIMEOUT_SECONDS = 30.0
#: How long the unread rest of a refused body is drained before the connection closes.
LINGER_SECONDS = 1.0
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _refuse(status: int, reason: str) -> web.Response:
    response = web.json_response({"error": reason}, status=status)
    # The rest of the body is not waited for: the connection ends with the answer.
    response.force_close()
    return response


#: set on a handler that reads its own body (streams_body)
_STREAMS_BODY = "__bridge_streams_body__"


def streams_body(handler: Handler) -> Handler:
    """A route handler that reads ``request.content`` itself, under its own size limit and
    deadline (an upload streamed to the store): the server does not read its body first."""

    async def streamed(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    setattr(streamed, _STREAMS_BODY, True)
    return streamed


def body_deadline(timeout: float) -> Any:
    """Middleware that reads each request body in full, within ``timeout`` seconds and the
    app's ``client_max_size``, before the handler runs (which then reads it from memory)."""

    @web.middleware
    async def read_body_first(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in _BODY_METHODS or not request.body_exists:
            return await handler(request)
        if getattr(request.match_info.handler, _STREAMS_BODY, False):
            return await handler(request)
        try:
            async with asyncio.timeout(timeout):
                await request.read()  # kept by the request: request.read() returns it again
        except TimeoutError:
            log.info(
                "%s %s: the body did not arrive within %ss; cut off",
                request.method,
                request.path,
                timeout,
            )
            return _refuse(408, "request body too slow")
        except HTTPRequestEntityTooLarge:
            log.info("%s %s: the body is too large; refused", request.method, request.path)
            return _refuse(413, "request body too large")
        except (ConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            # The client went away (or sent a broken chunked body): nobody reads the answer.
            log.info("%s %s: the body was not completed: %r", request.method, request.path, exc)
            return _refuse(400, "request body incomplete")
        return await handler(request)

    return read_body_first


def build_app(
    metrics: Metrics,
    readiness: Readiness,
    extra_routes: Sequence[web.RouteDef] = (),
    client_max_size: int = 1024 * 1024,
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    *,
    operational: bool = True,
    admin_token: str | None = None,
) -> web.Application:
    """The app: /healthz, the adapters' routes, and (``operational``) /readyz and /metrics,
    behind ``admin_token`` when one is given. Without ``operational`` (the admin listener
    serves them: :func:`build_admin_app`) those two are not found here."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(
        client_max_size=client_max_size, middlewares=[body_deadline(body_timeout_seconds)]
    )
    app.add_routes(
        [
            web.get("/healthz", healthz),
            *(operational_routes(metrics, readiness, admin_token) if operational else ()),
            *extra_routes,
        ]
    )
    return app


def build_admin_app(
    metrics: Metrics,
    readiness: Readiness,
    admin_token: str | None = None,
    extra_routes: Sequence[web.RouteDef] = (),
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
) -> web.Application:
    """The admin listener's app: /healthz, /readyz, /metrics and ``extra_routes`` (the
    operator's admin API and console), nothing a platform posts to."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[body_deadline(body_timeout_seconds)])
    app.add_routes(
        [
            web.get("/healthz", healthz),
            *operational_routes(metrics, readiness, admin_token),
            *extra_routes,
        ]
    )
    return app


def operational_routes(
    metrics: Metrics, readiness: Readiness, admin_token: str | None
) -> list[web.RouteDef]:
    """/readyz and /metrics; with ``admin_token`` each needs ``Authorization: Bearer <token>``
    (/healthz stays open: liveness probes carry no token)."""

    async def readyz(_request: web.Request) -> web.Response:
        ready, parts = await readiness()
        return web.json_response(
            {"status": "ready" if ready else "not ready", **parts}, status=200 if ready else 503
        )

    async def metrics_route(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    return [
        web.get("/readyz", _bearer(readyz, admin_token)),
        web.get("/metrics", _bearer(metrics_route, admin_token)),
    ]


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``token`` as its bearer token."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _bearer(handler: Handler, token: str | None) -> Handler:
    if token is None:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not authorized(request.headers.get("Authorization"), token):
            return web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="parloa-bridge"'},
            )
        return await handler(request)

    return guarded


class HttpServer:
    """Owns the runner and site of the app; ``port`` is the bound port (0 picks one)."""

    def __init__(
        self, app: web.Application, host: str, port: int, admin: HttpServer | None = None
    ) -> None:
        self._runner = web.AppRunner(
            app,
            access_log=logging.getLogger("bridge.http.access"),
            shutdown_timeout=5,
            # After a refusal (408, 413) the rest of a body is read this long at most, so a
            # client still sending sees the answer; a dribbling one is not waited for longer.
            lingering_time=LINGER_SECONDS,
        )
        self._host = host
        self._port = port
        self.port = port
        #: the admin listener (/readyz, /metrics), started and stopped with this one
        self.admin = admin

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("HTTP server listening on http://%s:%s", self._host, self.port)
        if self.admin is not None:
            try:
                await self.admin.start()
            except BaseException:
                await self._runner.cleanup()  # not started as a whole: nothing left open
                raise

    async def stop(self) -> None:
        try:
            if self.admin is not None:
                await self.admin.stop()
        finally:
            await self._runner.cleanup()
