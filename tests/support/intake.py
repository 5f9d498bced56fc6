"""The core's side of an adapter, in memory: what adapter tests start an adapter with instead
of the engine and the store (the ``Intake`` and ``ChannelState`` protocols of bridge/channel.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from bridge.channel import AcceptResult, Inbound, IntakeUnavailable, StoredReply


class MemoryState:
    """Channel state in a dict; leases are always granted. ``fail_reads``: the next that many
    ``get`` calls raise, as a database blip would."""

    def __init__(self, values: Mapping[str, str] | None = None, *, fail_reads: int = 0) -> None:
        self.values: dict[str, str] = dict(values or {})
        self.fail_reads = fail_reads
        self.watchers: dict[str, list[Callable[[], None]]] = {}

    async def get(self, key: str) -> str | None:
        if self.fail_reads:
            self.fail_reads -= 1
            raise RuntimeError("database blip")
        return self.values.get(key)

    async def put(self, key: str, value: str, *, announce: bool = False) -> None:
        self.values[key] = value
        if announce:
            for wake in list(self.watchers.get(key, ())):
                wake()

    def watch(self, key: str, wake: Callable[[], None]) -> Callable[[], None]:
        self.watchers.setdefault(key, []).append(wake)
        return lambda: self.watchers[key].remove(wake)

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        return None


class MemoryIntake:
    """Records accepted events and deduplicates them by event id, as the store does.

    ``unavailable``: accepting raises IntakeUnavailable (the database is down); ``hold``: accept
    waits for that event once it was called (``entered`` is set then), to look at an adapter
    while the commit is under way; ``conversations``: the keys ``conversation_exists`` knows;
    ``replies``: what ``stored_reply`` finds."""

    def __init__(
        self,
        channel: str = "test",
        state: MemoryState | None = None,
        *,
        instance_id: str = "test-instance",
    ) -> None:
        self._channel = channel
        self._state = state or MemoryState()
        self._instance_id = instance_id
        self.accepted: list[Inbound] = []
        self.unavailable = False
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.conversations: set[str] = set()
        self.replies: dict[int, StoredReply] = {}

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def state(self) -> MemoryState:
        return self._state

    @property
    def instance_id(self) -> str:
        return self._instance_id

    async def accept(self, event: Inbound) -> AcceptResult:
        (result,) = await self.accept_many([event])
        return result

    async def accept_many(
        self, events: Sequence[Inbound], state: Mapping[str, str] | None = None
    ) -> list[AcceptResult]:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.unavailable:
            raise IntakeUnavailable("database is down")
        results = [self._store(event) for event in events]
        self._state.values.update(state or {})
        return results

    def _store(self, event: Inbound) -> AcceptResult:
        if any(e.event_id == event.event_id for e in self.accepted):
            return AcceptResult.DUPLICATE
        self.accepted.append(event)
        self.conversations.add(event.conversation_key)
        return AcceptResult.ACCEPTED

    async def conversation_exists(self, conversation_key: str) -> bool:
        if self.unavailable:
            raise IntakeUnavailable("database is down")
        return conversation_key in self.conversations

    async def stored_reply(self, outbox_id: int) -> StoredReply | None:
        return self.replies.get(outbox_id)
