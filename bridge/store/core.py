"""What the parts of the store share (bridge/store/facade.py combines them): the engine and
the clock, the statements built for the engine's dialect, how a unit of work reaches the
database, the lease clock, the parts' base, and the interface of the dialect's hot path
(hotpath.py) with the request each hot call takes.

Each part's database work is a synchronous function over a Connection, run whole by
``Transactions`` (one thread hop per call on SQLite; see bridge/store/transactions.py). The
hot calls (claim, commit, finish, intake, a channel state put) go through the ``HotPath``
chosen for the dialect when the store is built."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.runners import Compiled, CoreRunner, DirectRunner, Program, StatementRunner
from bridge.store.statements import HotStatements
from bridge.store.transactions import Transactions, transactions_for
from bridge.vocabulary import Accepted, NewEvent, OutboxAck, OutboxItem, Step, Work

Clock = Callable[[], float]
Lease = tuple[str, float]  # a lease's owner and when it ends
T = TypeVar("T")


class StoreCore:
    """The engine, its clock, its statements and units of work, shared by every part."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.q = HotStatements(engine.dialect.name)
        self.tx: Transactions = transactions_for(engine)
        # Hot statements compiled for the dialect, shared by every unit and the native runner.
        self.compiled: dict[Any, Compiled] = {}
        self.runner: Callable[[Connection], StatementRunner] = CoreRunner
        if not engine.echo:
            # With database.echo the statements go through SQLAlchemy, which logs them.
            self.runner = self._direct
        self._lease_reading = 0.0

    def _direct(self, conn: Connection) -> StatementRunner:
        return DirectRunner(conn, self.compiled)

    def expiry(self, now: float, ttl: float) -> float:
        """When a lease taken or renewed at ``now`` for ``ttl`` ends. The clock reading is
        made strictly later than this store's previous one, so that two leases it writes for
        the same length never share an expiry: intake recognises a lease it took by its
        expiry (intake.claimed), and one the same owner held before cannot look the same.
        Called on the event loop only (a read-modify-write)."""
        self._lease_reading = max(now, self._lease_reading + 1e-6)
        return self._lease_reading + ttl


class StorePart:
    """One part of the store, named for what it stores. ``facade.Store`` is every part over
    one core and one hot path, so a part's methods are the store's methods themselves."""

    def __init__(self, core: StoreCore, path: HotPath) -> None:
        self._core = core
        self._path = path


# --- the hot calls: each one's arguments, with the clock readings already made -------------


@dataclass(frozen=True, slots=True)
class AcceptRequest:
    """Store ``events`` and ``state``; with ``lease``, also take the lease of up to
    ``limit`` idle conversations among theirs (intake.py)."""

    channel: str
    events: Sequence[NewEvent]
    state: Mapping[str, str]
    now: float
    lease: Lease | None
    limit: int


@dataclass(frozen=True, slots=True)
class HeldRequest:
    """A call on conversation ``conversation_id`` under the lease ``owner`` holds (or, for a
    claim, takes), at clock reading ``now``."""

    conversation_id: int
    owner: str
    now: float


@dataclass(frozen=True, slots=True)
class ClaimRequest(HeldRequest):
    """Take the lease until ``until`` and read the conversation's work (leases.py)."""

    until: float


@dataclass(frozen=True, slots=True)
class CommitRequest(HeldRequest):
    """A worker's step with the delivery outcomes gathered since its last write
    (commits.py)."""

    step: Step
    channel: str
    acks: Sequence[OutboxAck]


@dataclass(frozen=True, slots=True)
class FinishRequest(HeldRequest):
    """Record ``acks``; keep the lease (until ``until``) with the work due now, or release
    it (leases.py)."""

    acks: Sequence[OutboxAck]
    until: float


class HotPath(Protocol):
    """The hot calls as the engine's dialect runs them best, chosen once when the store is
    built (hotpath.py): each call's database work, given its request."""

    async def run(self, make: Callable[[], Program[T]]) -> T:
        """A program of hot statements (runners.Program), each its own transaction."""
        ...

    async def accept(self, request: AcceptRequest) -> Accepted:
        """The events and state stored; the work of each conversation whose lease it took."""
        ...

    async def claim(self, request: ClaimRequest) -> Work | None:
        """The conversation's work; None when another holds its lease."""
        ...

    async def commit(self, request: CommitRequest) -> list[OutboxItem]:
        """The new replies. Raises LeaseLost."""
        ...

    async def finish(self, request: FinishRequest) -> Work | None:
        """The work due now when the lease is kept; None when released or not held."""
        ...

    async def close(self) -> None:
        """Release what the path keeps (PostgreSQL: its asyncpg connections)."""
        ...
