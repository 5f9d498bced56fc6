"""Liveness from the database, not from clocks: a process holds a lock for each claim it makes
(a named lease, its own life as a replica), and the lock ends the moment the process dies.

On PostgreSQL a session-level advisory lock on a connection of the process's own, kept open
for the process's life (the server releases its locks when that connection dies); on SQLite,
one host by definition, an operating-system file lock (``flock``) on a file beside the
database file. Time-based leases stay as the fence against a process that is alive but stuck:
a lock tells only that its holder is alive."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.errors import StoreUnavailable

log = logging.getLogger("bridge.store")


class Hold(enum.Enum):
    """What trying to hold a lock found."""

    NEW = "new"  # it was free: whoever held it before is gone; this process holds it now
    KEPT = "kept"  # this process held it already
    TAKEN = "taken"  # another live process holds it
    UNKNOWN = "unknown"  # no lock to be had here: time-based leases only


class Liveness(Protocol):
    """Locks that end with the process holding them, by name."""

    async def hold(self, name: str) -> Hold:
        """Take the lock ``name`` if free (without waiting)."""
        ...

    async def let_go(self, name: str) -> None:
        """Release the lock ``name`` if this process holds it."""
        ...

    async def held_elsewhere(self, name: str) -> bool:
        """Whether a live process holds the lock ``name`` (this one included); True when it
        cannot be told."""
        ...

    async def discard(self, name: str) -> None:
        """Let go of the lock ``name`` and forget it for good: only for a lock no process will
        take again (a replica's own, at its stop or once found dead)."""
        ...

    def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        """Call ``heard`` with the payload of every notice on ``channel`` (PostgreSQL's
        LISTEN, on the locks' connection, from when it is next opened or now; again on each
        connection opened after one was lost). Elsewhere nothing is heard: one process
        hands off in memory."""
        ...

    async def close(self) -> None:
        """Release every lock (the process's claims end as if it died)."""
        ...


def liveness_for(engine: AsyncEngine) -> Liveness:
    """The locks of ``engine``'s database: advisory locks on PostgreSQL, file locks beside a
    SQLite file, none elsewhere."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLocks(engine.url)
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database not in ("", ":memory:"):
        path = Path(database).expanduser().resolve()
        return FileLocks(path.with_name(path.name + ".leases"))
    return NoLocks()


def advisory_key(name: str) -> int:
    """A lock name as PostgreSQL's 64-bit advisory lock key (signed)."""
    digest = hashlib.blake2b(f"parloa-bridge:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLocks:
    """PostgreSQL: session-level advisory locks on one connection of the process's own,
    opened when first needed and opened again (its locks taken anew by their users) when it
    was lost."""

    def __init__(self, url: URL) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: Any = None
        self._held: set[str] = set()
        self._lock = asyncio.Lock()
        self._listeners: dict[str, Callable[[str], None]] = {}

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        if self._conn is not None:
            log.warning("the liveness connection was lost: its locks are taken again")
        self._held.clear()  # the server released them with the old connection
        self._conn = await asyncpg.connect(self._dsn, timeout=10)
        for channel in self._listeners:
            await self._conn.add_listener(channel, self._notice)
        return self._conn

    def _notice(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        heard = self._listeners.get(channel)
        if heard is not None:
            heard(payload)

    def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        self._listeners[channel] = heard

    async def _fetch(self, sql: str, key: int) -> Any:
        try:
            conn = await self._connection()
            return await conn.fetchval(sql, key)
        except (TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"the database is unavailable: {exc}") from exc
        except Exception as exc:  # asyncpg's errors: the connection or the server failed
            if self._conn is not None and self._conn.is_closed():
                self._conn = None
            raise StoreUnavailable(f"the database failed: {exc}") from exc

    async def hold(self, name: str) -> Hold:
        async with self._lock:
            if name in self._held and self._conn is not None and not self._conn.is_closed():
                return Hold.KEPT
            got = await self._fetch("SELECT pg_try_advisory_lock($1)", advisory_key(name))
            if not got:
                return Hold.TAKEN
            self._held.add(name)
            return Hold.NEW

    async def let_go(self, name: str) -> None:
        async with self._lock:
            if name not in self._held:
                return
            self._held.discard(name)
            await self._fetch("SELECT pg_advisory_unlock($1)", advisory_key(name))

    async def discard(self, name: str) -> None:
        await self.let_go(name)  # nothing is left behind on the server

    async def held_elsewhere(self, name: str) -> bool:
        async with self._lock:
            if name in self._held:
                return True
            key = advisory_key(name)
            if not await self._fetch("SELECT pg_try_advisory_lock($1)", key):
                return True
            await self._fetch("SELECT pg_advisory_unlock($1)", key)
            return False

    async def close(self) -> None:
        async with self._lock:
            self._held.clear()
            conn, self._conn = self._conn, None
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)


class FileLocks:
    """SQLite: an ``flock`` on ``<directory>/<name>.lock`` per lock, its file kept open while
    held (the kernel releases it when the process dies). Each open of a file is a lock of its
    own, so two stores in one process exclude each other as two processes do."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._held: dict[str, int] = {}

    def _path(self, name: str) -> Path:
        return self._directory / f"{quote(name, safe='')}.lock"

    def _try(self, name: str, *, create: bool = True) -> int | None:
        """The open, locked file of ``name``; None while another holds it (or, unless
        ``create``, when there is no such file: nobody holds it)."""
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            fd = os.open(self._path(name), flags, 0o600)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the lock file of {name!r}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    async def hold(self, name: str) -> Hold:
        if name in self._held:
            return Hold.KEPT
        fd = self._try(name)
        if fd is None:
            return Hold.TAKEN
        self._held[name] = fd
        return Hold.NEW

    async def let_go(self, name: str) -> None:
        fd = self._held.pop(name, None)
        if fd is not None:
            os.close(fd)  # closing the file releases its lock

    def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        return None

    async def discard(self, name: str) -> None:
        """The lock file removed while locked, so no one holds a lock on a file gone."""
        fd = self._held.pop(name, None)
        if fd is None:
            fd = self._try(name, create=False)
        if fd is None:
            return  # alive after all (left alone), or gone already
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))
        os.close(fd)

    async def held_elsewhere(self, name: str) -> bool:
        if name in self._held:
            return True
        if not self._path(name).exists():
            return False
        fd = self._try(name, create=False)
        if fd is None:
            return self._path(name).exists()  # held, unless discarded meanwhile
        os.close(fd)
        return False

    async def close(self) -> None:
        for name in list(self._held):
            await self.let_go(name)


class NoLocks:
    """No locks to be had: every claim is time-based."""

    async def hold(self, name: str) -> Hold:
        return Hold.UNKNOWN

    async def let_go(self, name: str) -> None:
        return None

    async def held_elsewhere(self, name: str) -> bool:
        return True

    def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        return None

    async def discard(self, name: str) -> None:
        return None

    async def close(self) -> None:
        return None
