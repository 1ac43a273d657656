"""The store's own thread: a run's store calls made off its event loop, one at a time, in order.

A SQL store blocks its caller for every transaction, and for up to ``retry_budget_s`` (30 s)
while it outlasts a glitch of its database. Made from the event loop, that would stall every
running task (and let their ``timeout_s`` expire). So a run hands its calls to a
:class:`StoreWriter`: one thread per store, fed by a queue (a one-worker thread pool), whose
callers await a future. Why a thread rather than an async driver: the stores stay plain
synchronous code that the CLI and users call directly, one path for both; sqlite3 has no async
driver at all; and one thread keeps the calls in the order they were made, which is what makes a
task's commit (awaited) also the proof that every write queued before it is done.

A store shared by the thread and other callers stays safe: each backend serialises its calls
with a lock, its sqlite3 connection is opened with ``check_same_thread=False`` for this (the
lock, not sqlite3, keeps two threads from using it at once) and a psycopg connection may be
used from any thread. A store whose calls never block (``blocks = False``: the memory store) is
called in place, on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class StoreWriter:
    """Makes one store's calls on a thread of their own, in the order they are given."""

    def __init__(self, store: object) -> None:
        self._blocks = bool(getattr(store, "blocks", True))
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="crew-store")
            if self._blocks
            else None
        )

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the store's thread, once the calls given before are done.

        Cancelling the caller does not stop a call already begun: it runs to its end."""
        if self._pool is None:
            return fn(*args, **kwargs)
        return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))

    def submit(self, fn: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)`` without waiting for it; a future of its result."""
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:
            done.set_exception(exc)
        return done


_writers: weakref.WeakKeyDictionary[object, StoreWriter] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def writer_for(store: object) -> StoreWriter:
    """The store's writer: one per store, so every run on it (a subcrew's too) shares its
    thread, which ends once the store is gone."""
    with _writers_lock:
        try:
            writer = _writers.get(store)
        except TypeError:  # a store that cannot be weakly referenced gets a writer of its own
            return StoreWriter(store)
        if writer is None:
            writer = _writers[store] = StoreWriter(store)
        return writer
