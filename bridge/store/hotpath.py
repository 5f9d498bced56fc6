"""The hot calls' strategy per SQL dialect, chosen once when the store is built
(:func:`hot_path_for`), so that no call asks which database it is on.

* SQLite (:class:`UnitHotPath`): each hot call is one unit of work on the store's writer
  thread; units queued meanwhile share one transaction (transactions.SqliteThread).
* PostgreSQL (:class:`PostgresHotPath`): each hot call is one statement, its own transaction
  (no BEGIN, no COMMIT: one round trip), run on asyncpg itself (native.py). The shapes one
  statement cannot take (a batch of events, several replies whose ids must follow their
  order) run as units, as on SQLite.

The statements and units themselves live with what they store: intake.py, leases.py,
commits.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.engine import Connection

from bridge.store import commits, intake, leases
from bridge.store.core import (
    AcceptRequest,
    ClaimRequest,
    CommitRequest,
    FinishRequest,
    HotPath,
    StoreCore,
)
from bridge.store.native import NativeStatements
from bridge.store.runners import Program, run_program
from bridge.vocabulary import Accepted, OutboxItem, Work

T = TypeVar("T")


def hot_path_for(core: StoreCore) -> HotPath:
    """The hot path for the dialect of the store's engine."""
    if core.engine.dialect.name == "postgresql":
        return PostgresHotPath(core)
    return UnitHotPath(core)


class UnitHotPath:
    """Each hot call one unit of work (SQLite's path; PostgreSQL's for batches)."""

    def __init__(self, core: StoreCore) -> None:
        self._core = core

    async def run(self, make: Callable[[], Program[T]]) -> T:
        core = self._core

        def unit(conn: Connection) -> T:
            return run_program(make(), core.runner(conn))

        return await core.tx.each_statement(unit)

    async def accept(self, request: AcceptRequest) -> Accepted:
        return await self._core.tx.write(intake.accept_batch(self._core, request))

    async def claim(self, request: ClaimRequest) -> Work | None:
        return await self._core.tx.write(leases.claim_unit(self._core, request))

    async def commit(self, request: CommitRequest) -> list[OutboxItem]:
        return await self._core.tx.write(commits.commit_unit(self._core, request))

    async def finish(self, request: FinishRequest) -> Work | None:
        return await self._core.tx.write(leases.finish_unit(self._core, request))

    async def close(self) -> None:
        return None


class PostgresHotPath(UnitHotPath):
    """Each hot call one statement on asyncpg, where one statement can do it."""

    def __init__(self, core: StoreCore) -> None:
        super().__init__(core)
        # None when the engine logs its statements (database.echo) or its pool is too small
        # to lend connections: the programs then run through SQLAlchemy (still one each).
        self._native = NativeStatements.for_engine(core.engine, core.compiled)

    async def run(self, make: Callable[[], Program[T]]) -> T:
        """On a kept asyncpg connection; through SQLAlchemy when none can be had."""
        if self._native is None:
            return await super().run(make)

        def fallback() -> Awaitable[T]:
            return UnitHotPath.run(self, make)

        return await self._native.run(make, fallback)

    async def accept(self, request: AcceptRequest) -> Accepted:
        if len(request.events) == 1 and len(request.state) <= 1:
            return await self.run(intake.accept_in_one(self._core, request))
        return await super().accept(request)

    async def claim(self, request: ClaimRequest) -> Work | None:
        return await self.run(leases.claim_in_one(self._core, request))

    async def commit(self, request: CommitRequest) -> list[OutboxItem]:
        step = request.step
        # A transaction: several replies' ids are handed out in order; a handover's row is
        # written beside the conversation's.
        if len(step.replies) > 1 or step.handover is not None:
            return await super().commit(request)
        return await self.run(commits.commit_in_one(self._core, request))

    async def finish(self, request: FinishRequest) -> Work | None:
        return await self.run(leases.finish_in_one(self._core, request))

    async def close(self) -> None:
        if self._native is not None:
            await self._native.close()
