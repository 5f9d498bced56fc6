"""What one simulator remembers: sessions (a bounded LRU, optionally with a TTL), the faults
in force, the requests it saw and its counters."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.devtools.faults import Faults


@dataclass(kw_only=True)
class RecordedRequest:
    """One dialoghook call, accepted or rejected. ``status`` is 0 while (or if) unanswered,
    e.g. a hung request. ``request_id`` is the X-Request-Id answered with. What the body
    says is None until it is read (and where it does not say it)."""

    at: float
    status: int = 0
    release_id: str | None
    event_type: str | None = None
    text: str | None = None
    requester_id: str | None = None
    session_id: str | None = None
    context: list[dict[str, Any]] | None = None
    request_id: str | None
    #: the W3C trace context the caller sent (None: not traced)
    traceparent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of one simulator's counters, taken by :meth:`SimulatorState.stats`."""

    requests: int  # arrived
    by_status: Mapping[int, int]  # answered, by HTTP status
    in_flight: int
    active_sessions: int
    sessions_started: int
    sessions_evicted: int
    sessions_expired: int

    def answered(self, status: int) -> int:
        """How many requests were answered with ``status``."""
        return self.by_status.get(status, 0)

    def to_json(self) -> dict[str, Any]:
        """As in ``GET /_simulator/state``: ``by_status`` keyed by status strings."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["by_status"] = {str(k): v for k, v in sorted(self.by_status.items())}
        return data


@dataclass
class Session:
    """One demo-bot session, under the requester's ``sessionId``."""

    conversation_id: str
    requester_id: str
    release_id: str
    last_used: float
    turns: int = 0


class SimulatorState:
    """Sessions, faults, recorded requests and counters of one simulator.

    Not thread-safe: use it from the event loop the simulator runs on.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        faults: Faults | None = None,
        max_sessions: int = 10_000,
        session_ttl: float | None = None,
        max_recorded: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.token = token or None
        self.faults = faults if faults is not None else Faults()
        self.max_sessions = max_sessions
        self.session_ttl = session_ttl
        self.clock = clock
        self.rng = random.Random(seed)
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        # Ordered by last use, oldest first: LRU eviction and TTL purge both pop from the front.
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._total = 0
        self._by_status: collections.Counter[int] = collections.Counter()
        self._in_flight = 0
        self._sessions_started = 0
        self._sessions_evicted = 0
        self._sessions_expired = 0
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        # Never show the token.
        return (
            f"SimulatorState(token={'set' if self.token else 'none'}, faults={self.faults!r}, "
            f"sessions={len(self._sessions)}, requests={self._total})"
        )

    # --- sessions (the demo bot's) ---

    def _purge_expired(self) -> None:
        if self.session_ttl is None:
            return
        deadline = self.clock() - self.session_ttl
        while self._sessions:
            first = next(iter(self._sessions.values()))
            if first.last_used >= deadline:
                break
            self._sessions.popitem(last=False)
            self._sessions_expired += 1

    def start_session(self, session_id: str, requester_id: str, release_id: str) -> Session:
        """A new session under ``session_id`` (replacing one there); evicts the least recently
        used beyond ``max_sessions``."""
        self._purge_expired()
        self._sessions.pop(session_id, None)
        session = Session(str(uuid.uuid4()), requester_id, release_id, self.clock())
        self._sessions[session_id] = session
        self._sessions_started += 1
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
            self._sessions_evicted += 1
        return session

    def touch_session(self, session_id: str) -> Session | None:
        """The live session under ``session_id``, marked as just used; None if unknown."""
        self._purge_expired()
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_used = self.clock()
            self._sessions.move_to_end(session_id)
        return session

    def end_session(self, session_id: str) -> Session | None:
        """Forget the session; the one that was there, if any."""
        self._purge_expired()
        return self._sessions.pop(session_id, None)

    def expire_sessions(self, session_id: str | None = None) -> int:
        """Forget one session or all of them (their next message gets 404). Returns how many."""
        if session_id is None:
            count = len(self._sessions)
            self._sessions.clear()
        else:
            count = 1 if self._sessions.pop(session_id, None) is not None else 0
        self._sessions_expired += count
        return count

    def has_session(self, session_id: str) -> bool:
        self._purge_expired()
        return session_id in self._sessions

    # --- requests (the HTTP handler reports each one's arrival, answer and end) ---

    def arrive(
        self, release_id: str | None, request_id: str, traceparent: str | None = None
    ) -> RecordedRequest:
        """Record a request that just arrived; it stays in flight until :meth:`left`."""
        record = RecordedRequest(
            at=self.clock(), release_id=release_id, request_id=request_id, traceparent=traceparent
        )
        self.requests.append(record)
        self._total += 1
        self._in_flight += 1
        self._notify()
        return record

    def answered(self, record: RecordedRequest, status: int) -> None:
        record.status = status
        self._by_status[status] += 1
        self._notify()

    def left(self) -> None:
        self._in_flight -= 1
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter, then start a fresh generation of the event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[SimulatorState], bool]) -> None:
        """Wait until ``predicate(state)`` holds, checked on every request arrival and answer.
        Lets tests wait without sleeping; bound it with ``asyncio.timeout``."""
        while not predicate(self):
            await self._changed.wait()

    def events(self, session_id: str | None = None) -> list[tuple[str, str | None]]:
        """``(event_type, text)`` of the accepted (200) requests, in arrival order."""
        return [
            (r.event_type, r.text)
            for r in self.requests
            if r.status == 200
            and r.event_type is not None
            and (session_id is None or r.session_id == session_id)
        ]

    def stats(self) -> Stats:
        """The counters now (sessions past their TTL are purged first)."""
        self._purge_expired()
        return Stats(
            requests=self._total,
            by_status=dict(self._by_status),
            in_flight=self._in_flight,
            active_sessions=len(self._sessions),
            sessions_started=self._sessions_started,
            sessions_evicted=self._sessions_evicted,
            sessions_expired=self._sessions_expired,
        )
