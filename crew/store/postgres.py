"""A store in PostgreSQL, for runs shared by several machines; psycopg 3, loaded on first use.

The tables are prefixed ``crew_`` so they can live in an application's database (or put them in
a schema of their own: ``?options=-csearch_path%3Dcrew`` in the URL). JSON fields are ``jsonb``.
psycopg's errors become ``StoreError`` here and nowhere else; it is imported nowhere else.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError, StoreError
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

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow

_RUN = "run_id text NOT NULL REFERENCES crew_runs ON DELETE CASCADE"
_TIME = "double precision"

# The schema, one tuple of statements per version. Never edit a released step: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: runs and what they produce
        f"CREATE TABLE crew_runs (run_id text PRIMARY KEY, crew text NOT NULL,"
        f" status text NOT NULL, inputs jsonb NOT NULL, task_ids jsonb NOT NULL,"
        f" source text NOT NULL, created_at {_TIME} NOT NULL, updated_at {_TIME} NOT NULL,"
        f" usage jsonb NOT NULL, parent_run_id text, metadata jsonb NOT NULL,"
        f" last_seq bigint NOT NULL DEFAULT 0)",
        "CREATE INDEX crew_runs_created_at ON crew_runs (created_at)",
        f'CREATE TABLE crew_tasks ({_RUN}, task_id text NOT NULL, "index" integer NOT NULL,'
        f" attempt integer NOT NULL, status text NOT NULL, text text, data jsonb,"
        f" agent text NOT NULL, error text, error_type text, usage jsonb NOT NULL,"
        f" started_at {_TIME}, finished_at {_TIME},"
        f' PRIMARY KEY (run_id, task_id, "index", attempt))',
        f"CREATE TABLE crew_board ({_RUN}, key text NOT NULL, version integer NOT NULL,"
        f" text text NOT NULL, data jsonb, author text NOT NULL, kind text NOT NULL,"
        f" created_at {_TIME} NOT NULL, updated_at {_TIME} NOT NULL,"
        f" PRIMARY KEY (run_id, key, version))",
        f"CREATE TABLE crew_events ({_RUN}, seq bigint NOT NULL, type text NOT NULL,"
        f" payload jsonb NOT NULL, at {_TIME} NOT NULL, PRIMARY KEY (run_id, seq))",
    ),
    (  # 2: human reviews, recorded model exchanges (replay), leases (resume after a crash)
        f"CREATE TABLE crew_reviews ({_RUN}, task_id text NOT NULL, status text NOT NULL,"
        f" text text, data jsonb, feedback text, created_at {_TIME} NOT NULL,"
        f" decided_at {_TIME}, PRIMARY KEY (run_id, task_id))",
        "CREATE INDEX crew_reviews_status ON crew_reviews (status)",
        f"CREATE TABLE crew_exchanges (request_hash text NOT NULL, {_RUN}, model text NOT NULL,"
        f" response jsonb NOT NULL, at {_TIME} NOT NULL, PRIMARY KEY (request_hash, run_id))",
        "CREATE INDEX crew_exchanges_run_id ON crew_exchanges (run_id)",
        f"CREATE TABLE crew_leases (run_id text PRIMARY KEY REFERENCES crew_runs"
        f" ON DELETE CASCADE, holder text NOT NULL, acquired_at {_TIME} NOT NULL,"
        f" expires_at {_TIME} NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Serialises the first opening of a database by several processes (any 64-bit constant).
_MIGRATION_LOCK = 0x63726577_73746F72


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            "The PostgreSQL store needs psycopg: pip install 'crew[postgres]'"
        ) from exc
    return psycopg


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)  # "index" is an SQL keyword


def _select(table: str, record_type: type) -> str:
    return f"SELECT {_quoted(_columns(record_type))} FROM {table}"


def _insert(table: str, record_type: type) -> str:
    names = _columns(record_type)
    values = ", ".join(
        f"%({name})s::jsonb" if name in _JSON_FIELDS else f"%({name})s" for name in names
    )
    return f"INSERT INTO {table} ({_quoted(names)}) VALUES ({values})"


def _upsert(table: str, record_type: type, key: tuple[str, ...]) -> str:
    updates = ", ".join(
        f'"{name}" = EXCLUDED."{name}"' for name in _columns(record_type) if name not in key
    )
    return f"{_insert(table, record_type)} ON CONFLICT ({_quoted(key)}) DO UPDATE SET {updates}"


_CREATE_RUN = _insert("crew_runs", RunRecord)
_PUT_TASK = _upsert("crew_tasks", TaskRecord, ("run_id", "task_id", "index", "attempt"))
_PUT_BOARD = _upsert("crew_board", BoardRecord, ("run_id", "key", "version"))
_PUT_REVIEW = _upsert("crew_reviews", ReviewRecord, ("run_id", "task_id"))
_TASKS = _select("crew_tasks", TaskRecord) + ' WHERE run_id = %s ORDER BY task_id, "index", attempt'
# One statement: the run's row lock orders concurrent appends from any connection.
_APPEND_EVENT = (
    "WITH counter AS (UPDATE crew_runs SET last_seq = last_seq + 1 WHERE run_id = %(run_id)s"
    " RETURNING last_seq) INSERT INTO crew_events (run_id, seq, type, payload, at)"
    " SELECT %(run_id)s, last_seq, %(type)s, %(payload)s::jsonb, %(at)s FROM counter RETURNING seq"
)


def _where(**equals: object) -> tuple[str, list[object]]:
    used = {name: value for name, value in equals.items() if value is not None}
    clause = " AND ".join(f"{name} = %s" for name in used)
    return (f" WHERE {clause}" if clause else ""), list(used.values())


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def _hint(exc: BaseException, psycopg: ModuleType) -> str:
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return "grant the user CREATE and USAGE on the schema, or use another schema"
    if isinstance(exc, psycopg.OperationalError):
        return (
            "check the server is running, and the URL's host, port, user, password and "
            "database; a lost connection is reopened on the next call"
        )
    return "see the server's log"


class PostgresStore:
    """A store in a PostgreSQL database: one connection, guarded by a lock, reopened if lost.

    One connection is enough: the scheduler writes from one thread, and each write is one short
    transaction. Several processes (machines) may share the database; leases keep each run to one.

    Args:
        url: a libpq URL, ``postgresql://user:password@host:5432/database``.
        clock: returns wall-clock seconds; a parameter so tests can move time. Lease expiry is
            decided on the clients' clocks, so keep the machines' clocks in sync (NTP).
        connect_timeout_s: how long to wait for the server.

    Raises:
        ConfigError: psycopg is not installed.
        StoreError: the server cannot be reached, or refuses the user.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        connect_timeout_s: int = 5,
    ) -> None:
        self._pg = _psycopg()
        self.url = url
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        try:
            self._conn = self._connect()
        except self._pg.Error as exc:
            raise self._error("open", exc) from exc
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({_redact(self.url)!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _connect(self) -> psycopg.Connection[DictRow]:
        from psycopg.rows import dict_row

        # autocommit: a lone statement is its own transaction, committed when execute returns
        conn: psycopg.Connection[DictRow] = self._pg.connect(
            self.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=self._connect_timeout_s,
            application_name="crew",
        )
        return conn

    def _migrate(self) -> None:
        with self._use("open") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS crew_schema_version"
                f" (version integer PRIMARY KEY, applied_at {_TIME} NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) AS v FROM crew_schema_version").fetchone()
            version = (row or {}).get("v") or 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the PostgreSQL store at {_redact(self.url)} has schema version {version}, "
                    f"newer than this crew knows ({SCHEMA_VERSION}): upgrade crew"
                )
            for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
                for step in steps:
                    conn.execute(step)
                conn.execute(
                    "INSERT INTO crew_schema_version VALUES (%s, %s)", (number, self._clock())
                )

    @contextmanager
    def _use(self, action: str, run_id: str = "") -> Iterator[psycopg.Connection[DictRow]]:
        """The connection, under the lock, with psycopg's errors translated."""
        pg = self._pg
        with self._lock:
            try:
                if self._conn.broken:
                    self._conn = self._connect()
                yield self._conn
            except pg.errors.ForeignKeyViolation as exc:
                raise _no_run(run_id) from exc
            except pg.errors.UniqueViolation as exc:
                if exc.diag.table_name == "crew_runs":
                    raise _run_exists(run_id) from exc
                raise self._error(action, exc) from exc
            except pg.Error as exc:
                raise self._error(action, exc) from exc

    def _error(self, action: str, exc: BaseException) -> StoreError:
        where, hint = _redact(self.url), _hint(exc, self._pg)
        if action == "open":
            return StoreError(f"cannot open the PostgreSQL store at {where}: {exc} ({hint})")
        return StoreError(f"the PostgreSQL store at {where} cannot {action}: {exc} ({hint})")

    def _write(self, action: str, sql: str, params: Any, run_id: str = "") -> int:
        with self._use(action, run_id) as conn:
            return conn.execute(sql, params).rowcount

    def _read(self, action: str, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with self._use(action) as conn:
            return conn.execute(sql, params).fetchall()

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
        sql = f"{_CREATE_RUN} RETURNING {_quoted(_columns(RunRecord))}"
        with self._use("create a run", run_id) as conn:
            rows = conn.execute(sql, _row_values(record)).fetchall()
        return RunRecord(**rows[0])

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        changes = {
            name: _dump_json(value, f"{name} of run {run_id!r}") if name in _JSON_FIELDS else value
            for name, value in _run_changes(run_id, fields).items()
        }
        sets = ", ".join(
            f"{name} = %({name})s::jsonb" if name in _JSON_FIELDS else f"{name} = %({name})s"
            for name in [*changes, "updated_at"]
        )
        sql = (
            f"UPDATE crew_runs SET {sets} WHERE run_id = %(run_id)s"
            f" RETURNING {_quoted(_columns(RunRecord))}"
        )
        with self._use("update a run", run_id) as conn:
            params = {**changes, "updated_at": self._clock(), "run_id": run_id}
            row = conn.execute(sql, params).fetchone()
        if row is None:
            raise _no_run(run_id)
        return RunRecord(**row)

    def get_run(self, run_id: str) -> RunRecord | None:
        sql = _select("crew_runs", RunRecord) + " WHERE run_id = %s"
        rows = self._read("read a run", sql, (run_id,))
        return RunRecord(**rows[0]) if rows else None

    def list_runs(
        self, limit: int | None = 50, *, status: RunStatus | None = None, crew: str | None = None
    ) -> list[RunRecord]:
        where, params = _where(status=status, crew=crew)
        sql = (
            f"{_select('crew_runs', RunRecord)}{where}"
            " ORDER BY created_at DESC, run_id DESC LIMIT %s"
        )
        return [RunRecord(**row) for row in self._read("list runs", sql, [*params, limit])]

    def delete_runs(self, *, older_than_s: float | None = None, keep: int | None = None) -> int:
        if older_than_s is None and keep is None:
            raise ValueError("delete_runs() needs older_than_s, keep, or both")
        now = self._clock()
        return self._write(
            "delete runs",
            "DELETE FROM crew_runs"
            " WHERE (%(cutoff)s::double precision IS NULL OR updated_at < %(cutoff)s)"
            " AND run_id NOT IN (SELECT run_id FROM crew_runs"
            "  ORDER BY created_at DESC, run_id DESC LIMIT %(keep)s)"
            " AND run_id NOT IN (SELECT run_id FROM crew_leases WHERE expires_at > %(now)s)",
            {
                "cutoff": None if older_than_s is None else now - older_than_s,
                "keep": keep or 0,
                "now": now,
            },
        )

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
        sql = (
            _select("crew_board", BoardRecord)
            + " WHERE run_id = %s ORDER BY updated_at, key, version"
        )
        return [BoardRecord(**row) for row in self._read("read the board", sql, (run_id,))]

    # events

    def append_event(
        self, run_id: str, type: str, payload: dict[str, Any] | None = None
    ) -> EventRecord:
        text = _dump_json(payload or {}, f"the payload of a {type} event")
        with self._use("record an event", run_id) as conn:
            at = self._clock()
            params = {"run_id": run_id, "type": type, "payload": text, "at": at}
            row = conn.execute(_APPEND_EVENT, params).fetchone()
        if row is None:
            raise _no_run(run_id)
        return EventRecord(
            run_id=run_id, seq=row["seq"], type=type, payload=json.loads(text), at=at
        )

    def events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        sql = _select("crew_events", EventRecord) + " WHERE run_id = %s AND seq > %s ORDER BY seq"
        return [EventRecord(**row) for row in self._read("read events", sql, (run_id, after_seq))]

    # reviews

    def put_review(self, record: ReviewRecord) -> None:
        self._write("record a review", _PUT_REVIEW, _row_values(record), record.run_id)

    def get_review(self, run_id: str, task_id: str) -> ReviewRecord | None:
        sql = _select("crew_reviews", ReviewRecord) + " WHERE run_id = %s AND task_id = %s"
        rows = self._read("read a review", sql, (run_id, task_id))
        return ReviewRecord(**rows[0]) if rows else None

    def reviews(
        self, run_id: str | None = None, *, status: ReviewStatus | None = None
    ) -> list[ReviewRecord]:
        where, params = _where(run_id=run_id, status=status)
        sql = f"{_select('crew_reviews', ReviewRecord)}{where} ORDER BY created_at, run_id, task_id"
        return [ReviewRecord(**row) for row in self._read("read reviews", sql, params)]

    # exchanges

    def put_exchange(
        self, request_hash: str, run_id: str, *, model: str, response: dict[str, Any]
    ) -> None:
        self._write(
            "record a model exchange",
            "INSERT INTO crew_exchanges (request_hash, run_id, model, response, at)"
            " VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT (request_hash, run_id) DO UPDATE"
            " SET model = EXCLUDED.model, response = EXCLUDED.response, at = EXCLUDED.at",
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
        sql = f"SELECT response FROM crew_exchanges{where} ORDER BY at DESC, run_id DESC LIMIT 1"
        rows = self._read("read a model exchange", sql, params)
        return rows[0]["response"] if rows else None

    # leases
    #
    # A row per run, locked with SELECT ... FOR UPDATE, rather than pg_try_advisory_lock: an
    # advisory lock belongs to a connection, so it would be shared by every thread of this
    # process on our one connection, would vanish with a dropped connection while the run goes
    # on, cannot say who holds it, and has no TTL to match the SQLite and memory stores. A row
    # carries the holder's name and expiry, and outlives connections, which is what a crashed
    # holder's takeover needs.

    def acquire_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._use("take a lease", run_id) as conn:
            while True:  # at most twice: once more if the lease was released meanwhile
                with conn.transaction():
                    now = self._clock()
                    inserted = conn.execute(
                        "INSERT INTO crew_leases (run_id, holder, acquired_at, expires_at)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
                        (run_id, holder, now, now + ttl_s),
                    )
                    if inserted.rowcount == 1:
                        return
                    row = conn.execute(
                        "SELECT holder, expires_at FROM crew_leases WHERE run_id = %s FOR UPDATE",
                        (run_id,),
                    ).fetchone()
                    if row is None:
                        continue
                    now = self._clock()  # read under the row lock: no one else decides meanwhile
                    if row["holder"] != holder and row["expires_at"] > now:
                        raise _lease_held(run_id, row["holder"], row["expires_at"], now)
                    conn.execute(
                        "UPDATE crew_leases SET holder = %s, acquired_at = %s, expires_at = %s"
                        " WHERE run_id = %s",
                        (holder, now, now + ttl_s, run_id),
                    )
                    return

    def renew_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._use("renew a lease", run_id) as conn, conn.transaction():
            row = conn.execute(
                "SELECT holder, expires_at FROM crew_leases WHERE run_id = %s FOR UPDATE",
                (run_id,),
            ).fetchone()
            now = self._clock()
            if row is None:
                raise _lease_gone(run_id, holder)
            if row["holder"] != holder:
                raise _lease_held(run_id, row["holder"], row["expires_at"], now)
            conn.execute(
                "UPDATE crew_leases SET expires_at = %s WHERE run_id = %s", (now + ttl_s, run_id)
            )

    def release_lease(self, run_id: str, holder: str) -> None:
        self._write(
            "release a lease",
            "DELETE FROM crew_leases WHERE run_id = %s AND holder = %s",
            (run_id, holder),
            run_id,
        )
