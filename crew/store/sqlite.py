"""The default store: one SQLite file (``.crew/crew.db``), through the standard library's sqlite3.

WAL mode lets readers (``crew runs`` in another terminal) work while a run writes, and
``synchronous=NORMAL`` makes a commit cost microseconds instead of an fsync: a commit survives a
crash of the process, though the last ones may be lost if the machine loses power (the run then
re-does those tasks on resume). sqlite3's errors become ``StoreError`` here and nowhere else.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from crew.errors import StoreError
from crew.store import (
    _JSON_FIELDS,
    BoardRecord,
    EventRecord,
    ReviewRecord,
    ReviewStatus,
    RunRecord,
    RunStatus,
    TaskRecord,
    _check_ttl,
    _columns,
    _dump_json,
    _lease_gone,
    _lease_held,
    _new_run,
    _no_run,
    _row_values,
    _run_changes,
    _run_exists,
)

_RUN = "run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE"

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
)
SCHEMA_VERSION = len(MIGRATIONS)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)  # "index" is an SQL keyword


def _select(table: str, record_type: type) -> str:
    return f"SELECT {_quoted(_columns(record_type))} FROM {table}"


def _insert(table: str, record_type: type) -> str:
    names = _columns(record_type)
    placeholders = ", ".join(f":{name}" for name in names)
    return f"INSERT INTO {table} ({_quoted(names)}) VALUES ({placeholders})"


def _upsert(table: str, record_type: type, key: tuple[str, ...]) -> str:
    updates = ", ".join(
        f'"{name}" = excluded."{name}"' for name in _columns(record_type) if name not in key
    )
    return f"{_insert(table, record_type)} ON CONFLICT ({_quoted(key)}) DO UPDATE SET {updates}"


_CREATE_RUN = _insert("runs", RunRecord)
_PUT_TASK = _upsert("tasks", TaskRecord, ("run_id", "task_id", "index", "attempt"))
_PUT_BOARD = _upsert("board", BoardRecord, ("run_id", "key", "version"))
_PUT_REVIEW = _upsert("reviews", ReviewRecord, ("run_id", "task_id"))
_TASKS = _select("tasks", TaskRecord) + ' WHERE run_id = ? ORDER BY task_id, "index", attempt'


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    return {
        name: json.loads(value) if name in _JSON_FIELDS and value is not None else value
        for name, value in row.items()
    }


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return _decoded(
        {column[0]: value for column, value in zip(cursor.description, values, strict=True)}
    )


def _where(**equals: object) -> tuple[str, list[object]]:
    used = {name: value for name, value in equals.items() if value is not None}
    clause = " AND ".join(f"{name} = ?" for name in used)
    return (f" WHERE {clause}" if clause else ""), list(used.values())


def _hint(exc: BaseException) -> str:
    message = str(exc).lower()
    if "locked" in message or "busy" in message:
        return "another process is writing to it: try again, or raise busy_timeout_s"
    if "not a database" in message or "malformed" in message:
        return "the file is not a crew store, or is damaged: move it aside or pick another path"
    if "full" in message:
        return "the disk is full: free some space"
    if "closed" in message:
        return "the store was closed: open it again"
    return "check the folder exists and is writable"


def _create_private(path: Path) -> None:
    """Create the folder (0700) and the file (0600): runs hold inputs and outputs, often private.
    An existing file or folder keeps its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


class SQLiteStore:
    """A store in one SQLite file: one connection, guarded by a lock, usable from any thread.

    Args:
        path: the database file; it and its folder are created if missing.
        clock: returns wall-clock seconds; a parameter so tests can move time.
        busy_timeout_s: how long a write waits for another process's write to finish.

    Raises:
        StoreError: the file cannot be created or opened, or is not a crew store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path).expanduser()
        self._clock = clock
        self._lock = threading.Lock()
        try:
            _create_private(self.path)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error("open", exc) from exc
        self._conn.row_factory = _row
        try:
            with self._translate("open"):
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute("PRAGMA foreign_keys = ON")  # ON DELETE CASCADE prunes runs
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, in one transaction, so two processes opening a
        new file at once cannot both apply a step."""
        with self._tx("open") as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            version = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()["v"]
            version = version or 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the SQLite store at {self.path} has schema version {version}, newer than "
                    f"this crew knows ({SCHEMA_VERSION}): upgrade crew, or pick another path"
                )
            for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
                for step in steps:
                    conn.execute(step)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (number, self._clock()))

    def _error(self, action: str, exc: BaseException) -> StoreError:
        if action == "open":
            return StoreError(f"cannot open the SQLite store at {self.path}: {exc} ({_hint(exc)})")
        return StoreError(f"the SQLite store at {self.path} cannot {action}: {exc} ({_hint(exc)})")

    @contextmanager
    def _translate(self, action: str, run_id: str = "") -> Iterator[None]:
        try:
            yield
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
        """One write transaction, committed before it returns. BEGIN IMMEDIATE takes the write
        lock first, so what the transaction reads cannot change before it writes."""
        with self._lock, self._translate(action, run_id):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _write(self, action: str, sql: str, params: Any, run_id: str = "") -> int:
        """One statement, its own transaction (autocommit): committed when this returns."""
        with self._lock, self._translate(action, run_id):
            return self._conn.execute(sql, params).rowcount

    def _read(self, action: str, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        with self._lock, self._translate(action):
            return self._conn.execute(sql, params).fetchall()

    # runs

    def create_run(
        self,
        run_id: str,
        *,
        crew: str,
        inputs: dict[str, Any],
        task_ids: Sequence[str],
        source: str = "",
        status: RunStatus = "running",
        parent_run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunRecord:
        record = _new_run(
            run_id,
            self._clock(),
            task_ids,
            crew=crew,
            inputs=inputs,
            source=source,
            status=status,
            parent_run_id=parent_run_id,
            metadata=metadata,
        )
        params = _row_values(record)
        self._write("create a run", _CREATE_RUN, params, run_id)
        return RunRecord(**_decoded(params))  # as read back: JSON data passed through JSON

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        changes = {
            name: _dump_json(value, f"{name} of run {run_id!r}") if name in _JSON_FIELDS else value
            for name, value in _run_changes(run_id, fields).items()
        }
        with self._tx("update a run", run_id) as conn:
            changes["updated_at"] = self._clock()
            sets = ", ".join(f"{name} = :{name}" for name in changes)
            updated = conn.execute(
                f"UPDATE runs SET {sets} WHERE run_id = :run_id", {**changes, "run_id": run_id}
            )
            if updated.rowcount == 0:
                raise _no_run(run_id)
            row = conn.execute(_select("runs", RunRecord) + " WHERE run_id = ?", (run_id,))
            return RunRecord(**row.fetchone())

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._read("read a run", _select("runs", RunRecord) + " WHERE run_id = ?", (run_id,))
        return RunRecord(**rows[0]) if rows else None

    def list_runs(
        self, limit: int | None = 50, *, status: RunStatus | None = None, crew: str | None = None
    ) -> list[RunRecord]:
        where, params = _where(status=status, crew=crew)
        sql = f"{_select('runs', RunRecord)}{where} ORDER BY created_at DESC, run_id DESC LIMIT ?"
        rows = self._read("list runs", sql, [*params, -1 if limit is None else limit])
        return [RunRecord(**row) for row in rows]

    def delete_runs(self, *, older_than_s: float | None = None, keep: int | None = None) -> int:
        if older_than_s is None and keep is None:
            raise ValueError("delete_runs() needs older_than_s, keep, or both")
        with self._tx("delete runs") as conn:
            now = self._clock()
            return conn.execute(
                "DELETE FROM runs WHERE (:cutoff IS NULL OR updated_at < :cutoff)"
                " AND run_id NOT IN (SELECT run_id FROM runs"
                "  ORDER BY created_at DESC, run_id DESC LIMIT :keep)"
                " AND run_id NOT IN (SELECT run_id FROM leases WHERE expires_at > :now)",
                {
                    "cutoff": None if older_than_s is None else now - older_than_s,
                    "keep": keep or 0,
                    "now": now,
                },
            ).rowcount

    # tasks

    def put_task(self, record: TaskRecord) -> None:
        self._write("record a task", _PUT_TASK, _row_values(record), record.run_id)

    def task_records(self, run_id: str) -> list[TaskRecord]:
        return [TaskRecord(**row) for row in self._read("read tasks", _TASKS, (run_id,))]

    def finished_outputs(self, run_id: str) -> dict[tuple[str, int], TaskRecord]:
        return {
            (r.task_id, r.index): r for r in self.task_records(run_id) if r.status == "succeeded"
        }

    # board

    def put_board_entry(self, record: BoardRecord) -> None:
        self._write("record a board entry", _PUT_BOARD, _row_values(record), record.run_id)

    def board_entries(self, run_id: str) -> list[BoardRecord]:
        sql = _select("board", BoardRecord) + " WHERE run_id = ? ORDER BY updated_at, key, version"
        return [BoardRecord(**row) for row in self._read("read the board", sql, (run_id,))]

    # events

    def append_event(
        self, run_id: str, type: str, payload: dict[str, Any] | None = None
    ) -> EventRecord:
        text = _dump_json(payload or {}, f"the payload of a {type} event")
        with self._tx("record an event", run_id) as conn:
            last = conn.execute("SELECT MAX(seq) AS seq FROM events WHERE run_id = ?", (run_id,))
            seq = (last.fetchone()["seq"] or 0) + 1
            at = self._clock()
            conn.execute(
                "INSERT INTO events (run_id, seq, type, payload, at) VALUES (?, ?, ?, ?, ?)",
                (run_id, seq, type, text, at),
            )
        return EventRecord(run_id=run_id, seq=seq, type=type, payload=json.loads(text), at=at)

    def events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        sql = _select("events", EventRecord) + " WHERE run_id = ? AND seq > ? ORDER BY seq"
        return [EventRecord(**row) for row in self._read("read events", sql, (run_id, after_seq))]

    # reviews

    def put_review(self, record: ReviewRecord) -> None:
        self._write("record a review", _PUT_REVIEW, _row_values(record), record.run_id)

    def get_review(self, run_id: str, task_id: str) -> ReviewRecord | None:
        sql = _select("reviews", ReviewRecord) + " WHERE run_id = ? AND task_id = ?"
        rows = self._read("read a review", sql, (run_id, task_id))
        return ReviewRecord(**rows[0]) if rows else None

    def reviews(
        self, run_id: str | None = None, *, status: ReviewStatus | None = None
    ) -> list[ReviewRecord]:
        where, params = _where(run_id=run_id, status=status)
        sql = f"{_select('reviews', ReviewRecord)}{where} ORDER BY created_at, run_id, task_id"
        return [ReviewRecord(**row) for row in self._read("read reviews", sql, params)]

    # exchanges

    def put_exchange(
        self, request_hash: str, run_id: str, *, model: str, response: dict[str, Any]
    ) -> None:
        self._write(
            "record a model exchange",
            "INSERT INTO exchanges (request_hash, run_id, model, response, at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_hash, run_id) DO UPDATE"
            " SET model = excluded.model, response = excluded.response, at = excluded.at",
            (
                request_hash,
                run_id,
                model,
                _dump_json(response, f"the response to {request_hash}"),
                self._clock(),
            ),
            run_id,
        )

    def get_exchange(self, request_hash: str, run_id: str | None = None) -> dict[str, Any] | None:
        where, params = _where(request_hash=request_hash, run_id=run_id)
        sql = f"SELECT response FROM exchanges{where} ORDER BY at DESC, run_id DESC LIMIT 1"
        rows = self._read("read a model exchange", sql, params)
        return rows[0]["response"] if rows else None

    # leases

    def acquire_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._tx("take a lease", run_id) as conn:
            row = conn.execute(
                "SELECT holder, expires_at FROM leases WHERE run_id = ?", (run_id,)
            ).fetchone()
            now = self._clock()  # read under the write lock: no one else can decide meanwhile
            if row is not None and row["holder"] != holder and row["expires_at"] > now:
                raise _lease_held(run_id, row["holder"], row["expires_at"], now)
            conn.execute(
                "INSERT INTO leases (run_id, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET holder = excluded.holder,"
                " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                (run_id, holder, now, now + ttl_s),
            )

    def renew_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._tx("renew a lease", run_id) as conn:
            row = conn.execute(
                "SELECT holder, expires_at FROM leases WHERE run_id = ?", (run_id,)
            ).fetchone()
            now = self._clock()
            if row is None:
                raise _lease_gone(run_id, holder)
            if row["holder"] != holder:
                raise _lease_held(run_id, row["holder"], row["expires_at"], now)
            conn.execute("UPDATE leases SET expires_at = ? WHERE run_id = ?", (now + ttl_s, run_id))

    def release_lease(self, run_id: str, holder: str) -> None:
        self._write(
            "release a lease",
            "DELETE FROM leases WHERE run_id = ? AND holder = ?",
            (run_id, holder),
            run_id,
        )
