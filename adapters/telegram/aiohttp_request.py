"""python-telegram-bot's transport on aiohttp instead of httpx.

PTB lets the HTTP library be swapped through ``telegram.request.BaseRequest``; everything above
it (the Bot methods, their parameters, error mapping, ``de_json``) stays PTB's. The bridge
already runs aiohttp for Parloa and its own server, one ``send_message`` costs far less CPU
through aiohttp than through httpx (docs/benchmarks.md, "Telegram adapter"), and aiohttp's
connector queues requests for a free connection instead of failing them with a pool timeout
under a burst.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _pick(value: object, default: float | None) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if value is None:
        return None
    return default  # PTB's DEFAULT_NONE: "not given", use ours


class AiohttpRequest(BaseRequest):
    """One pooled aiohttp session; ``connection_pool_size`` caps concurrent requests (the rest
    wait for a connection up to ``pool_timeout``)."""

    def __init__(
        self,
        *,
        connection_pool_size: int = 128,
        read_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read = read_timeout
        self._connect = connect_timeout
        self._pool = pool_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                headers={"User-Agent": self.USER_AGENT},
                # Proxies are not read from the environment: the Bot API endpoint is configured.
                trust_env=False,
            )

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    @contextlib.asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url`` with this transport's pool and timeouts, the body left unread: the
        caller reads it chunk by chunk (a file download). aiohttp's own errors are raised."""
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        connect, pool, read = self._connect, self._pool, self._read
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        async with session.get(url, timeout=timeout) as response:
            yield response

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        connect = _pick(connect_timeout, self._connect)
        pool = _pick(pool_timeout, self._pool)
        read = _pick(read_timeout, self._read)
        # write_timeout is not applied: aiohttp has no write timeout, and its read timeout
        # starts only once the body is written. The bridge uploads no files (photos go by
        # URL), so request bodies are small.
        timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's "connect" includes waiting for a free connection in the pool.
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        data: aiohttp.FormData | bytes | None = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            if request_data.contains_files:
                form = aiohttp.FormData()
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, (filename, content, mime) in request_data.multipart_data.items():
                    form.add_field(name, content, filename=filename, content_type=mime)
                data = form
            else:
                # The same urlencoded form aiohttp would make of the dict, without its FormData
                # (which builds a multipart writer, with a random boundary, on every call).
                data = request_data.url_encoded_parameters().encode()
                headers = _FORM
        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut(f"Telegram request timed out: {url.rsplit('/', 1)[-1]}") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
