"""Small HTTP servers on 127.0.0.1 for tests: the fakes of the platforms, receivers, pages."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on (bound, then released): for a server a test starts later, or
    for a connection that must be refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def local_url(port: int) -> str:
    return f"http://{HOST}:{port}"


async def start_app(
    app: web.Application, port: int = 0, *, access_log: bool = True
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``port`` (0: a free one); the runner (``cleanup()`` stops it) and the
    port it listens on. ``access_log=False``: no line per request (a fake under load)."""
    if access_log:
        runner = web.AppRunner(app, shutdown_timeout=1.0)
    else:
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner, int(runner.addresses[0][1])


@asynccontextmanager
async def serving(
    app: web.Application, port: int = 0, *, access_log: bool = True
) -> AsyncIterator[str]:
    """``app`` served while the block runs; yields its base URL (``http://127.0.0.1:PORT``)."""
    runner, bound = await start_app(app, port, access_log=access_log)
    try:
        yield local_url(bound)
    finally:
        await runner.cleanup()


class LocalServer:
    """An app served on 127.0.0.1 from :meth:`start` to :meth:`close`, for an object that owns
    its server (a fake of a platform, a receiver)."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return local_url(self.port)

    async def start(self, app: web.Application, *, access_log: bool = True) -> None:
        self._runner, self.port = await start_app(app, access_log=access_log)

    async def close(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
