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

    Tickets are granted one per turn of the event loop: the first at once, each next one a turn
    later. A task granted its slot runs up to its model call in the turn after, and its request
    goes out in the turn after that, before the next task has done more than its own share. If
    all were granted at once, every task released by one completion would do its work up to its
    call before any request is written (aiohttp writes a request in a task of its own), so the
    most urgent one's request would wait for the last one's preparations.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._granting = False

    def reserve(self, priority: Any) -> asyncio.Future[None]:
        """A ticket: a future done once the slot is the holder's."""
        ticket = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), ticket))
        if not self._granting:
            self._grant()
        return ticket

    def release(self, ticket: asyncio.Future[None]) -> None:
        """Give the slot back, or withdraw a ticket never granted."""
        if not ticket.done() or ticket.cancelled():
            ticket.cancel()
            return
        self._free += 1
        if not self._granting:
            self._grant()

    def _grant(self) -> None:
        """Grant the first waiter a free slot, if any; the next grant waits for the next turn."""
        while self._waiters and self._free > 0:
            waiter = heapq.heappop(self._waiters)[2]
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)
                self._granting = True
                asyncio.get_running_loop().call_soon(self._grant)
                return
        self._granting = False

    @contextlib.asynccontextmanager
    async def hold(self, priority: Any) -> AsyncIterator[None]:
        ticket = self.reserve(priority)
        try:
            await ticket
            yield
        finally:
            self.release(ticket)
