"""``GET /media/{id}``: the route with the real store (SQLite and PostgreSQL) behind it."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from bridge.media.serve import media_routes
from bridge.media.urls import Signer
from bridge.store import Store
from bridge.store.media import CHUNK_BYTES, NewMedia
from tests.support.net import serving

KEY = b"the-key-of-this-test-32-bytes-ok"


async def pieces(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def put(store: Store, data: bytes, content_type: str, name: str | None) -> str:
    new = NewMedia(os.urandom(8).hex(), "web", "web:u1", content_type, name)
    stored = await store.media_put(new, pieces(data), 10 * 1024 * 1024)
    assert stored.file is not None
    return stored.file.id


@pytest.fixture
async def served(store: Store) -> AsyncIterator[tuple[str, Signer]]:
    async def key() -> bytes:
        return KEY

    app = web.Application()
    app.add_routes(media_routes(store, key))
    async with serving(app) as url:
        yield url, Signer(KEY, lambda: url, 3600)


async def get(url: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.request(method, url) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


async def test_the_exact_bytes_without_credentials(
    store: Store, served: tuple[str, Signer]
) -> None:
    _, signer = served
    data = os.urandom(3 * CHUNK_BYTES + 17)  # several chunks, the last one short
    media_id = await put(store, data, "image/jpeg", "Schaden – Foto.jpg")
    status, body, headers = await get(signer.url(media_id, time.time()))
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Length"] == str(len(data))
    assert headers["Content-Disposition"] == (
        "inline; filename=\"Schaden _ Foto.jpg\"; filename*=UTF-8''Schaden%20%E2%80%93%20Foto.jpg"
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, body, headers = await get(signer.url(media_id, time.time()), "HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))


async def test_a_page_is_a_download_that_cannot_run(
    store: Store, served: tuple[str, Signer]
) -> None:
    _, signer = served
    media_id = await put(store, b"<script>alert(1)</script>", "text/html", None)
    status, _, headers = await get(signer.url(media_id, time.time()))
    assert status == 200
    assert headers["Content-Disposition"] == "attachment"
    assert "sandbox" in headers["Content-Security-Policy"]


async def test_refused_never_the_file(store: Store, served: tuple[str, Signer]) -> None:
    base, signer = served
    media_id = await put(store, b"secret bytes", "application/pdf", "x.pdf")
    good = signer.url(media_id, time.time())
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    expired = signer.url(media_id, time.time() - 7200)
    path = urlsplit(good).path
    for url, expected in (
        (tampered, 403),
        (f"{base}{path}", 403),
        (f"{base}{path}?exp=1&sig=", 403),
        (expired, 404),
        (signer.url("no-such-file", time.time()), 404),
    ):
        status, body, _ = await get(url)
        assert status == expected, url
        assert b"secret" not in body
