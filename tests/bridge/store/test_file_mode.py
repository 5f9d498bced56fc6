"""A SQLite database and its WAL and shared-memory files are readable by their owner only,
whatever the process's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bridge.store import Store
from bridge.store.database import create_private_file
from tests.support.database import closing, engine_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "data" / "bridge.db"
    previous = os.umask(0o022)  # the usual umask: files would be world-readable
    try:
        async with (
            engine_for(f"sqlite+aiosqlite:///{db}", migrated=True) as engine,
            closing(Store(engine)) as store,
        ):
            await store.state_put("web", "k", "v")  # a write: the WAL is in use
            files = [db, db.with_name("bridge.db-wal"), db.with_name("bridge.db-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        os.umask(previous)


def test_an_existing_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.write_bytes(b"")
    path.chmod(0o640)
    create_private_file(path)
    assert mode(path) == 0o640 and path.read_bytes() == b""
