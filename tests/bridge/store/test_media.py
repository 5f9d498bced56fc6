"""Media files in the store (SQLite and PostgreSQL): streamed in and out in chunks, nothing
left of a file too large or a broken stream, found again by event, purged with retention,
and the signing key every replica shares."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from bridge.config import MediaConfig
from bridge.parts import media_signing_key
from bridge.store import Store
from bridge.store.media import CHUNK_BYTES, STALE_SECONDS, NewMedia, rechunked
from bridge.store.schema import media, media_chunks


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def new(media_id: str = "m1", inbox_id: int | None = None, position: int = 0) -> NewMedia:
    return NewMedia(media_id, "web", "web:u1", "image/png", "p.png", inbox_id, position)


async def counts(store: Store) -> tuple[int, int]:
    async with store.engine.connect() as conn:
        files = (await conn.execute(select(func.count()).select_from(media))).scalar_one()
        chunks = (await conn.execute(select(func.count()).select_from(media_chunks))).scalar_one()
    return int(files), int(chunks)


async def read_all(store: Store, media_id: str) -> bytes:
    file = await store.media_file(media_id)
    assert file is not None
    return b"".join([chunk async for chunk in store.media_bytes(file)])


async def test_rechunked_keeps_every_byte() -> None:
    data = os.urandom(1000)
    for size in (1, 7, 999, 1000, 5000):
        out = [c async for c in rechunked(pieces(data, size), 64)]
        assert b"".join(out) == data
        assert all(len(c) == 64 for c in out[:-1])


async def test_streamed_in_and_out(store: Store) -> None:
    data = os.urandom(2 * CHUNK_BYTES + 1)
    stored = await store.media_put(new(inbox_id=7, position=2), pieces(data, 10_000), len(data))
    assert stored.file is not None and stored.file.size == len(data)
    assert stored.file.chunks == 3
    assert await read_all(store, "m1") == data
    found = await store.media_of_event(7, 2)
    assert found is not None and found.id == "m1" and found.name == "p.png"
    assert await store.media_of_event(7, 1) is None


async def test_too_large_keeps_nothing(store: Store) -> None:
    data = os.urandom(CHUNK_BYTES + 10)
    stored = await store.media_put(new(), pieces(data, 4096), CHUNK_BYTES)
    assert stored.file is None and stored.seen_bytes > CHUNK_BYTES
    assert await counts(store) == (0, 0)
    assert await store.media_file("m1") is None


async def test_a_broken_stream_keeps_nothing(store: Store) -> None:
    async def breaks() -> AsyncIterator[bytes]:
        yield os.urandom(CHUNK_BYTES)
        yield os.urandom(10)
        raise ConnectionResetError("the platform hung up")

    with pytest.raises(ConnectionResetError):
        await store.media_put(new(), breaks(), 10 * CHUNK_BYTES)
    assert await counts(store) == (0, 0)


async def test_an_incomplete_file_is_never_served(store: Store) -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(CHUNK_BYTES)
        started.set()
        await never.wait()
        yield b""

    task = asyncio.create_task(store.media_put(new(), stalls(), 10 * CHUNK_BYTES))
    await started.wait()
    assert await store.media_file("m1") is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await counts(store) == (0, 0)


async def test_purged_with_the_message_content(store: Store) -> None:
    clock = [1000.0]
    store._core.clock = lambda: clock[0]
    await store.media_put(new("old"), pieces(b"x" * 10, 5), 100)
    clock[0] = 5000.0
    await store.media_put(new("new"), pieces(b"y" * 10, 5), 100)
    await store.purge(older_than_seconds=2000)  # the cutoff: 3000
    assert await store.media_file("old") is None
    assert await read_all(store, "new") == b"y" * 10
    assert await counts(store) == (1, 1)


async def test_left_incomplete_by_a_crash_is_purged(store: Store) -> None:
    # What a process killed in the middle of a download leaves: a file never completed.
    async with store.engine.begin() as conn:
        await conn.execute(
            media.insert().values(
                id="left",
                channel="web",
                requester_id="web:u1",
                inbox_id=3,
                position=0,
                content_type="x/y",
                name=None,
                size=0,
                chunks=0,
                complete=False,
                created_at=1000.0,
            )
        )
        await conn.execute(media_chunks.insert().values(media_id="left", seq=0, data=b"z"))
    assert await store.media_of_event(3, 0) is None
    store._core.clock = lambda: 1000.0 + STALE_SECONDS - 1
    await store.purge(older_than_seconds=10 * STALE_SECONDS)
    assert await counts(store) == (1, 1), "a download may still be writing it"
    store._core.clock = lambda: 1000.0 + STALE_SECONDS + 1
    await store.purge(older_than_seconds=10 * STALE_SECONDS)
    assert await counts(store) == (0, 0)


async def test_one_signing_key_for_every_replica(store: Store) -> None:
    keys = await asyncio.gather(*(media_signing_key(MediaConfig(), store) for _ in range(5)))
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert await media_signing_key(MediaConfig(), store) == keys[0]
    configured = MediaConfig(signing_key="s" * 32)  # type: ignore[arg-type]
    assert await media_signing_key(configured, store) == b"s" * 32
