"""Who works on what in this process: the worker slots and the notices of new work, shared
by intake, the dispatcher and the workers."""

from __future__ import annotations

import asyncio


class Board:
    """Who works on what in this process, and what it was told about since.

    ``notices`` counts notices; ``noticed_while_working`` keeps the latest one for each
    conversation whose worker was running when it came (the worker's last read of the queues
    may not have seen the event behind it: see Worker.work)."""

    def __init__(self, slots: int) -> None:
        self.capacity = slots
        self.slots = asyncio.Semaphore(slots)
        self.workers: dict[int, asyncio.Task[None]] = {}
        self.notified: set[int] = set()
        self.notices = 0
        self.noticed_while_working: dict[int, int] = {}
        self.wake = asyncio.Event()
        self.stopping = False

    @property
    def free(self) -> int:
        """Worker slots no conversation holds."""
        return self.capacity - len(self.workers)

    def notify(self, conversation_id: int) -> None:
        """``conversation_id`` may have work: the dispatcher looks at it."""
        self.notices += 1
        if conversation_id in self.workers:
            self.noticed_while_working[conversation_id] = self.notices
        self.notified.add(conversation_id)
        self.wake.set()

    def noticed_since(self, conversation_id: int, read: int) -> bool:
        """A notice for the conversation came after notice number ``read``."""
        return self.noticed_while_working.get(conversation_id, 0) > read

    def left(self, conversation_id: int) -> None:
        """The conversation's worker ended: its slot is free."""
        self.workers.pop(conversation_id, None)
        self.noticed_while_working.pop(conversation_id, None)
        if not self.stopping:
            self.wake.set()  # a slot is free: look for more work
