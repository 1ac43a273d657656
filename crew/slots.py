"""Slots: how many agents work at once, and which waiting one goes next.

A run holds ``max_concurrency`` slots, shared with the loops, maps and subcrews inside it. When
more tasks are ready than there are free slots, the one with the lowest sort key (the
scheduler's: the longest estimated path to the end of the graph first) gets the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Any


class Slots:
    """A semaphore that grants its highest-priority waiter first (lowest sort key).

    ``reserve`` queues a ticket at once, without awaiting, so tasks released by one completion
    all queue before the slot of the finished task is handed on (``release``).
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def reserve(self, priority: Any) -> asyncio.Future[None]:
        """A ticket: a future done once the slot is the holder's."""
        ticket = asyncio.get_running_loop().create_future()
        if self._free > 0 and not self._waiters:
            self._free -= 1
            ticket.set_result(None)
        else:
            heapq.heappush(self._waiters, (priority, next(self._order), ticket))
        return ticket

    def release(self, ticket: asyncio.Future[None]) -> None:
        """Give the slot back, or withdraw a ticket never granted."""
        if not ticket.done() or ticket.cancelled():
            ticket.cancel()
            return
        while self._waiters:
            waiter = heapq.heappop(self._waiters)[2]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    @contextlib.asynccontextmanager
    async def hold(self, priority: Any) -> AsyncIterator[None]:
        ticket = self.reserve(priority)
        try:
            await ticket
            yield
        finally:
            self.release(ticket)
