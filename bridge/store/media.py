"""Media files: the bytes of what users sent (bridge/media/), kept in the database so that
every replica serves them and a backup holds them. A file is a ``media`` row and its bytes in
``media_chunks`` rows of CHUNK_BYTES, written one chunk per transaction and read one chunk at
a time: a file of any size passes through in constant memory, and no transaction holds the
store for long (docs/benchmarks.md, "Media: photos in a burst, memory"). A file becomes
visible (``complete``) with its last chunk's write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from bridge.store.core import StorePart
from bridge.store.schema import media, media_chunks

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class NewMedia:
    """A file about to be stored: whose it is (erasure), which inbox event and position it
    belongs to (a retried download finds it again; None for an upload not yet sent), what it
    is."""

    id: str
    channel: str
    requester_id: str
    content_type: str
    name: str | None = None
    inbox_id: int | None = None
    position: int = 0


@dataclass(frozen=True, slots=True)
class MediaFile:
    id: str
    channel: str
    requester_id: str
    inbox_id: int | None
    position: int
    content_type: str
    name: str | None
    size: int
    chunks: int
    created_at: float


@dataclass(frozen=True, slots=True)
class Stored:
    """What a put did: the file, or None when it was more than the limit (nothing kept)."""

    file: MediaFile | None
    seen_bytes: int


def _file(row: Any) -> MediaFile:
    m = row._mapping
    return MediaFile(
        id=m["id"],
        channel=m["channel"],
        requester_id=m["requester_id"],
        inbox_id=m["inbox_id"],
        position=m["position"],
        content_type=m["content_type"],
        name=m["name"],
        size=int(m["size"]),
        chunks=int(m["chunks"]),
        created_at=float(m["created_at"]),
    )


async def rechunked(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The same bytes in pieces of exactly ``size`` (the last one shorter), each joined once
    from what arrived (no copy per incoming chunk)."""
    pieces: list[bytes] = []
    held = 0
    async for chunk in chunks:
        pieces.append(chunk)
        held += len(chunk)
        while held >= size:
            joined = b"".join(pieces)
            yield joined[:size]
            rest = joined[size:]
            pieces, held = ([rest] if rest else []), len(rest)
    if held:
        yield b"".join(pieces)


class MediaFiles(StorePart):
    """Media files: put (streamed in), read (streamed out), found again, purged."""

    async def media_put(
        self, new: NewMedia, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> Stored:
        """Store the bytes ``chunks`` yields; more than ``max_bytes`` stops the reading and
        removes what was written (``Stored.file`` None). A failure (the stream's or the
        store's) removes it too, then raises."""
        now = self._core.clock()
        row = {
            "id": new.id,
            "channel": new.channel,
            "requester_id": new.requester_id,
            "inbox_id": new.inbox_id,
            "position": new.position,
            "content_type": new.content_type[:255],
            "name": new.name[:255] if new.name else None,
            "size": 0,
            "chunks": 0,
            "complete": False,
            "created_at": now,
        }

        def begin(conn: Connection) -> None:
            conn.execute(insert(media).values(row))

        await self._core.tx.write(begin)
        seq = 0
        total = 0
        try:
            async for piece in rechunked(chunks, CHUNK_BYTES):
                total += len(piece)
                if total > max_bytes:
                    await self.media_delete(new.id)
                    return Stored(None, total)
                await self._core.tx.write(_chunk_writer(new.id, seq, piece))
                seq += 1
        except BaseException:
            await self.media_delete(new.id)
            raise
        size, count = total, seq

        def finish(conn: Connection) -> None:
            conn.execute(
                update(media)
                .where(media.c.id == new.id)
                .values(size=size, chunks=count, complete=True)
            )

        await self._core.tx.write(finish)
        file = MediaFile(
            new.id,
            new.channel,
            new.requester_id,
            new.inbox_id,
            new.position,
            str(row["content_type"]),
            new.name[:255] if new.name else None,
            size,
            count,
            now,
        )
        return Stored(file, total)

    async def media_file(self, media_id: str) -> MediaFile | None:
        """A complete file by id."""
        return await self._complete(media.c.id == media_id)

    async def media_of_event(self, inbox_id: int, position: int) -> MediaFile | None:
        """The complete file an event's attachment was stored as (a retry finds it)."""
        return await self._complete(media.c.inbox_id == inbox_id, media.c.position == position)

    async def _complete(self, *where: Any) -> MediaFile | None:
        def unit(conn: Connection) -> MediaFile | None:
            query = select(media).where(*where, media.c.complete.is_(True))
            found = conn.execute(query).first()
            return _file(found) if found is not None else None

        return await self._core.tx.read(unit)

    async def media_bytes(self, file: MediaFile) -> AsyncIterator[bytes]:
        """The file's bytes, one chunk (one read) at a time."""
        for seq in range(file.chunks):

            def unit(conn: Connection, seq: int = seq) -> bytes | None:
                value = conn.execute(
                    select(media_chunks.c.data).where(
                        media_chunks.c.media_id == file.id, media_chunks.c.seq == seq
                    )
                ).scalar()
                return bytes(value) if value is not None else None

            data = await self._core.tx.read(unit)
            if data is None:
                return  # purged or erased meanwhile: the reader sees a short file
            yield data

    async def media_delete(self, media_id: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(delete(media_chunks).where(media_chunks.c.media_id == media_id))
            conn.execute(delete(media).where(media.c.id == media_id))

        await self._core.tx.write(unit)


def _chunk_writer(media_id: str, seq: int, data: bytes) -> Callable[[Connection], None]:
    def unit(conn: Connection) -> None:
        conn.execute(insert(media_chunks).values(media_id=media_id, seq=seq, data=data))

    return unit


#: files deleted per transaction by the purge (their chunks with them)
PURGE_FILES = 50
#: a file still incomplete this long after it was begun was left by a crash
STALE_SECONDS = 3600.0


def purge_batch(cutoff: float, now: float) -> Callable[[Connection], int]:
    """A unit deleting up to PURGE_FILES files begun before ``cutoff`` (the retention
    period, as the message content they belong to) or left incomplete for STALE_SECONDS."""

    def unit(conn: Connection) -> int:
        old = select(media.c.id).where(
            or_(
                media.c.created_at < cutoff,
                and_(media.c.complete.is_(False), media.c.created_at < now - STALE_SECONDS),
            )
        )
        ids = [row[0] for row in conn.execute(old.limit(PURGE_FILES))]
        if not ids:
            return 0
        conn.execute(delete(media_chunks).where(media_chunks.c.media_id.in_(ids)))
        return int(conn.execute(delete(media).where(media.c.id.in_(ids))).rowcount)

    return unit
