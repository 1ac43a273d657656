"""The store: where durable runs keep their checkpoints, so a run can resume after a crash.

One protocol, :class:`Store`, and three backends: ``MemoryStore`` (tests), ``SQLiteStore`` (the
default, ``.crew/crew.db``) and ``PostgresStore`` (shared by several machines). Pick one with
:func:`open_store`::

    open_store(None)                          # CREW_STORE, else SQLite at .crew/crew.db
    open_store("memory")
    open_store("sqlite:///runs/crew.db")      # or just "runs/crew.db"
    open_store("postgresql://crew@db.internal/app")

Every method is synchronous and each write is one short transaction, committed before the
method returns. A SQL store outlasts a glitch of its database (a dropped connection, a write
lock held by another process) by trying again for up to ``retry_budget_s`` (30 s), blocking its
caller meanwhile; then it raises ``StoreUnavailableError``. So a run never calls a store from
its event loop: its calls go, in order, to the store's own thread (``crew.store.writer``).

Write-ahead discipline: the scheduler must have :meth:`Store.put_tasks` return with a succeeded
attempt (its board version and the events before it in the same transaction, which tasks that
finished meanwhile may share) *before* it counts the task as done (before dependents start,
before the run moves on). A crash after that point loses nothing; a crash before it re-runs
only that attempt.

Values are plain data: the JSON fields of the records (inputs, data, usage, payloads, ...) must be
JSON-serialisable (pydantic models go in as ``model_dump(mode="json")``); they come back as
``json.loads`` returns them, so tuples come back as lists and dict keys as strings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from crew.errors import ConfigError
from crew.store.protocol import Store
from crew.store.records import (
    DEFAULT_PATH,
    REVIEW_STATUSES,
    RUN_STATUSES,
    BatchRecord,
    BoardRecord,
    EventRecord,
    ReviewRecord,
    ReviewStatus,
    RunRecord,
    RunStatus,
    TaskCommit,
    TaskRecord,
    ToolCallRecord,
    default_holder,
)

__all__ = [
    "DEFAULT_PATH",
    "REVIEW_STATUSES",
    "RUN_STATUSES",
    "BatchRecord",
    "BoardRecord",
    "EventRecord",
    "ReviewRecord",
    "ReviewStatus",
    "RunRecord",
    "RunStatus",
    "Store",
    "TaskCommit",
    "TaskRecord",
    "ToolCallRecord",
    "default_holder",
    "open_store",
]


def open_store(url: str | None = None, *, clock: Callable[[], float] = time.time) -> Store:
    """The store a URL names; with no URL, ``CREW_STORE``, else SQLite at ``.crew/crew.db``.

    Raises:
        ConfigError: the URL is of no known form, or its backend's driver is not installed.
        StoreError: the store could not be opened.
    """
    where = "the store URL"
    if url is None:
        url, where = os.environ.get("CREW_STORE"), "CREW_STORE"
    url = (url or "").strip()
    if url in ("memory", "memory://"):
        from crew.store.memory import MemoryStore

        return MemoryStore(clock=clock)
    if url.startswith(("postgresql://", "postgres://")):
        from crew.store.postgres import PostgresStore

        return PostgresStore(url, clock=clock)
    path = url.removeprefix("sqlite:///")
    if not url or (path and (path != url or path.endswith(".db"))):
        from crew.store.sqlite import SQLiteStore

        return SQLiteStore(path or DEFAULT_PATH, clock=clock)
    raise ConfigError(
        f"{where} {url!r} names no known store. Use 'memory', 'sqlite:///path/to/crew.db' (or "
        "a path ending in .db) or 'postgresql://user@host:5432/database'; leave it unset for "
        f"SQLite at {DEFAULT_PATH}."
    )
