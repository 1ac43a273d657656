"""The default store: one SQLite file (``.crew/crew.db``), through the standard library's sqlite3.

WAL mode lets readers (``crew runs`` in another terminal) work while a run writes, and
``synchronous=NORMAL`` makes a commit cost microseconds instead of an fsync: a commit survives a
crash of the process, though the last ones may be lost if the machine loses power (the run then
re-does those tasks on resume). sqlite3's errors become ``StoreError`` here and nowhere else.

A commit appends pages to the WAL; moving them into the database file (a checkpoint, with its
fsyncs: milliseconds) is left to a thread of the store's own, every ``CHECKPOINT_EVERY``
commits, rather than done by the commit that finds the WAL long (SQLite's default), which would
stall the task whose commit it is, and the tasks waiting for it.

Another process's write (a run, ``crew approve``, a tool holding a transaction open) keeps ours
waiting: sqlite3 waits ``busy_timeout_s`` for it, then the store tries again (``SQLStore``), up
to ``retry_budget_s`` in all.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from crew.store.records import (
    _JSON_FIELDS,
    EventRecord,
    _columns,
    _escape,
    _no_run,
    _run_exists,
)
from crew.store.sql import RETRY_BUDGET_S, SQLStore

if TYPE_CHECKING:
    from crew.store.sqldb import _Connection, _EventRow

_RUN = "run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE"
CHECKPOINT_EVERY = 64
"""Commits between two checkpoints of the WAL (on the checkpoint thread)."""
_log = logging.getLogger("crew")

# The schema, one tuple of statements per version. Never edit a released step: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: runs and what they produce
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, crew TEXT NOT NULL, status TEXT NOT NULL,"
        " inputs TEXT NOT NULL, task_ids TEXT NOT NULL, source TEXT NOT NULL,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL, usage TEXT NOT NULL,"
        " parent_run_id TEXT, metadata TEXT NOT NULL)",
        "CREATE INDEX runs_created_at ON runs (created_at)",
        f'CREATE TABLE tasks ({_RUN}, task_id TEXT NOT NULL, "index" INTEGER NOT NULL,'
        " attempt INTEGER NOT NULL, status TEXT NOT NULL, text TEXT, data TEXT,"
        " agent TEXT NOT NULL, error TEXT, error_type TEXT, usage TEXT NOT NULL,"
        ' started_at REAL, finished_at REAL, PRIMARY KEY (run_id, task_id, "index", attempt))',
        f"CREATE TABLE board ({_RUN}, key TEXT NOT NULL, version INTEGER NOT NULL,"
        " text TEXT NOT NULL, data TEXT, author TEXT NOT NULL, kind TEXT NOT NULL,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (run_id, key, version))",
        f"CREATE TABLE events ({_RUN}, seq INTEGER NOT NULL, type TEXT NOT NULL,"
        " payload TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (run_id, seq))",
    ),
    (  # 2: human reviews, recorded model exchanges (replay), leases (resume after a crash)
        f"CREATE TABLE reviews ({_RUN}, task_id TEXT NOT NULL, status TEXT NOT NULL, text TEXT,"
        " data TEXT, feedback TEXT, created_at REAL NOT NULL, decided_at REAL,"
        " PRIMARY KEY (run_id, task_id))",
        "CREATE INDEX reviews_status ON reviews (status)",
        f"CREATE TABLE exchanges (request_hash TEXT NOT NULL, {_RUN}, model TEXT NOT NULL,"
        " response TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (request_hash, run_id))",
        "CREATE INDEX exchanges_run_id ON exchanges (run_id)",
        "CREATE TABLE leases (run_id TEXT PRIMARY KEY REFERENCES runs ON DELETE CASCADE,"
        " holder TEXT NOT NULL, acquired_at REAL NOT NULL, expires_at REAL NOT NULL)",
    ),
    (  # 3: an event's token, so that a write tried again after a glitch finds it, not repeats it
        "ALTER TABLE events ADD COLUMN token TEXT",
        "CREATE UNIQUE INDEX events_token ON events (run_id, token)",
    ),
    (  # 4: a succeeded task's warning and its usage by agent, so a resumed run keeps them
        "ALTER TABLE tasks ADD COLUMN reason TEXT",
        "ALTER TABLE tasks ADD COLUMN usage_by_agent TEXT NOT NULL DEFAULT '{}'",
    ),
    (  # 5: calls of tools that are not idempotent: the intent before, the result after
        f"CREATE TABLE tool_calls ({_RUN}, key TEXT NOT NULL, task_id TEXT NOT NULL,"
        ' "index" INTEGER NOT NULL, attempt INTEGER NOT NULL, call_index INTEGER NOT NULL,'
        " tool TEXT NOT NULL, arguments TEXT NOT NULL, arguments_hash TEXT NOT NULL,"
        " status TEXT NOT NULL, result TEXT, error_type TEXT NOT NULL,"
        " created_at REAL NOT NULL, finished_at REAL, PRIMARY KEY (run_id, key))",
        "CREATE INDEX tool_calls_task ON tool_calls (run_id, task_id)",
    ),
    (  # 6: batches (crew batch), and each run's batch and line in it
        "ALTER TABLE runs ADD COLUMN batch_id TEXT",
        "ALTER TABLE runs ADD COLUMN batch_line INTEGER",
        "CREATE INDEX runs_batch_id ON runs (batch_id)",
        "CREATE TABLE batches (batch_id TEXT PRIMARY KEY, crew TEXT NOT NULL,"
        " source TEXT NOT NULL, inputs_file TEXT NOT NULL, size INTEGER NOT NULL,"
        " created_at REAL NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    """A row as a dict, its JSON columns decoded."""
    return {
        column[0]: json.loads(value) if column[0] in _JSON_FIELDS and value is not None else value
        for column, value in zip(cursor.description, values, strict=True)
    }


def _create_private(path: Path) -> None:
    """Create the folder (0700) and the file (0600): runs hold inputs and outputs, often private.
    An existing file or folder keeps its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


class SQLiteStore(SQLStore):
    """A store in one SQLite file: one connection, guarded by a lock, usable from any thread.

    Args:
        path: the database file; it and its folder are created if missing.
        clock: returns wall-clock seconds; a parameter so tests can move time.
        busy_timeout_s: how long one try of a write waits for another process's write to finish.
        retry_budget_s: how long the store keeps trying while the database is locked.

    Raises:
        StoreError: the file cannot be created or opened, or is not a crew store.
    """

    _NAME = "SQLite"
    _MIGRATIONS = MIGRATIONS
    _NEWER_SCHEMA_FIX = "upgrade crew, or pick another path"
    _PARAM = _JSON_PARAM = ":{}"  # JSON is stored as text
    _TIME = "REAL"
    _NO_LIMIT = -1
    # _LOCK_ROW stays empty: BEGIN IMMEDIATE has locked the whole database for the transaction.

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
        retry_budget_s: float = RETRY_BUDGET_S,
    ) -> None:
        self.path = Path(path).expanduser()
        super().__init__(str(self.path), clock=clock, retry_budget_s=retry_budget_s)
        try:
            _create_private(self.path)
            # A run calls the store from the store's thread (crew.store.writer), a CLI command
            # or a test from its own: the store's lock, not sqlite3, keeps them one at a time.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error("open", exc) from exc
        self._conn.row_factory = _row
        self._checkpoints = _Checkpoints(self.path, busy_timeout_s)
        weakref.finalize(self, self._checkpoints.stop)  # a store dropped unclosed: its thread ends
        try:
            with self._use("open") as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")  # ON DELETE CASCADE prunes runs
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread's work
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # To another process (a Dask worker) as its file: that process opens its own connection.
        return (functools.partial(SQLiteStore, clock=self._clock), (str(self.path),))

    def close(self) -> None:
        self._checkpoints.close()
        with self._lock:
            self._conn.close()

    def _hint(self, exc: BaseException) -> str:
        message = str(exc).lower()
        if "locked" in message or "busy" in message:
            return "another process held its write lock: let it finish, or raise retry_budget_s"
        if "not a database" in message or "malformed" in message:
            return "the file is not a crew store, or is damaged: move it aside or pick another path"
        if "full" in message:
            return "the disk is full: free some space"
        if "closed" in message:
            return "the store was closed: open it again"
        return "check the folder exists and is writable"

    def _transient(self, exc: BaseException) -> bool:
        """SQLITE_BUSY and SQLITE_LOCKED: another connection holds the lock we need."""
        name = getattr(exc, "sqlite_errorname", "")
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or (
            isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)
        )

    @contextmanager
    def _use(self, action: str, run_id: str = "") -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise _no_run(run_id) from exc
                if "runs.run_id" in str(exc):
                    raise _run_exists(run_id) from exc
                raise self._error(action, exc) from exc
            except sqlite3.Error as exc:
                raise self._error(action, exc) from exc

    @contextmanager
    def _tx(self, action: str, run_id: str = "") -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock first, so what the transaction reads cannot
        change before it writes."""
        with self._use(action, run_id) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._checkpoints.committed()

    def _write(self, action: str, sql: str, params: dict[str, Any], run_id: str = "") -> int:
        """One statement, committed as it ends (no transaction around it): counted too."""
        count = super()._write(action, sql, params, run_id)
        self._checkpoints.committed()
        return count

    def delete_runs(self, *, older_than_s: float | None = None, keep: int | None = None) -> int:
        """Then give the space back: SQLite keeps a deleted row's pages in the file until
        VACUUM; the WAL checkpoint moves the vacuumed pages into the file and empties the WAL."""
        deleted = super().delete_runs(older_than_s=older_than_s, keep=keep)
        if deleted:

            def vacuum(conn: _Connection) -> None:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

            self._on("reclaim the space of deleted runs", "", vacuum, False)
        return deleted

    def _lock_schema(self, conn: _Connection) -> None:
        """Nothing more to do: BEGIN IMMEDIATE has taken the write lock for the transaction."""

    def _insert_events(
        self, conn: _Connection, run_id: str, rows: Sequence[_EventRow]
    ) -> list[tuple[int, float]]:
        """The next seq is MAX(seq) + 1, which no one can change under BEGIN IMMEDIATE."""
        last = conn.execute(
            "SELECT MAX(seq) AS seq FROM events WHERE run_id = :run_id", {"run_id": run_id}
        )
        first = (last.fetchone()["seq"] or 0) + 1
        at = self._clock()
        insert = self._insert("events", [*_columns(EventRecord), "token"])
        values = [
            {"run_id": run_id, "seq": first + i, "type": _escape(type), "payload": payload,
             "at": at, "token": token}
            for i, (type, payload, token) in enumerate(rows)
        ]  # fmt: skip
        cast(sqlite3.Connection, conn).executemany(insert, values)
        return [(first + i, at) for i in range(len(rows))]


class _Checkpoints:
    """Checkpoints a database's WAL on a thread of their own, with a connection of their own,
    once every ``CHECKPOINT_EVERY`` commits: PASSIVE ones, which never wait for a reader or the
    writer (pages still in use are left for the next one). The thread starts with the first
    checkpoint and ends with ``close`` or the process; a failed checkpoint is only logged (the
    WAL waits for the next one, and a commit never depends on it)."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self._path, self._busy_timeout_s = path, busy_timeout_s
        self._commits = 0
        self._due = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def committed(self) -> None:
        """Count a commit; every ``CHECKPOINT_EVERY``-th asks for a checkpoint."""
        with self._lock:
            self._commits += 1
            if self._commits < CHECKPOINT_EVERY or self._closed:
                return
            self._commits = 0
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="crew-sqlite-checkpoint", daemon=True
                )
                self._thread.start()
        self._due.set()

    def close(self) -> None:
        """Stop the thread, once its checkpoint in progress is made."""
        thread = self.stop()
        if thread is not None:
            thread.join()

    def stop(self) -> threading.Thread | None:
        """Tell the thread to end, without waiting for it; the thread, if it was started."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._due.set()
        return thread

    def _work(self) -> None:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._closed:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    _log.debug("SQLite store %s: a checkpoint failed: %s", self._path, exc)
        finally:
            conn.close()
