"""A store in PostgreSQL, for runs shared by several machines; psycopg 3, loaded on first use.

The tables are prefixed ``crew_`` so they can live in an application's database (or put them in
a schema of their own: ``?options=-csearch_path%3Dcrew`` in the URL). JSON fields are ``jsonb``.
psycopg's errors become ``StoreError`` here and nowhere else; it is imported nowhere else.

A lost connection (the server restarted, an administrator ended it, the network broke) is
reopened and the write tried again (``SQLStore``), for up to ``retry_budget_s``.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError, redact
from crew.store.records import _JSON_FIELDS, _escape, _no_run, _run_exists
from crew.store.sql import _KEYS, RETRY_BUDGET_S, SQLStore

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow

    from crew.store.sqldb import _Connection, _EventRow

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
    (  # 3: an event's token, so that a write tried again after a glitch finds it, not repeats it
        "ALTER TABLE crew_events ADD COLUMN token text",
        "CREATE UNIQUE INDEX crew_events_token ON crew_events (run_id, token)",
    ),
    (  # 4: a succeeded task's warning and its usage by agent, so a resumed run keeps them
        "ALTER TABLE crew_tasks ADD COLUMN reason text",
        "ALTER TABLE crew_tasks ADD COLUMN usage_by_agent jsonb NOT NULL DEFAULT '{}'",
    ),
    (  # 5: calls of tools that are not idempotent: the intent before, the result after
        f"CREATE TABLE crew_tool_calls ({_RUN}, key text NOT NULL, task_id text NOT NULL,"
        f' "index" integer NOT NULL, attempt integer NOT NULL, call_index integer NOT NULL,'
        f" tool text NOT NULL, arguments jsonb NOT NULL, arguments_hash text NOT NULL,"
        f" status text NOT NULL, result text, error_type text NOT NULL,"
        f" created_at {_TIME} NOT NULL, finished_at {_TIME}, PRIMARY KEY (run_id, key))",
        "CREATE INDEX crew_tool_calls_task ON crew_tool_calls (run_id, task_id)",
    ),
    (  # 6: batches (crew batch), and each run's batch and line in it
        "ALTER TABLE crew_runs ADD COLUMN batch_id text",
        "ALTER TABLE crew_runs ADD COLUMN batch_line integer",
        "CREATE INDEX crew_runs_batch_id ON crew_runs (batch_id)",
        f"CREATE TABLE crew_batches (batch_id text PRIMARY KEY, crew text NOT NULL,"
        f" source text NOT NULL, inputs_file text NOT NULL, size integer NOT NULL,"
        f" created_at {_TIME} NOT NULL)",
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


_COUNT_EVENTS = (
    "UPDATE crew_runs SET last_seq = last_seq + %(n)s WHERE run_id = %(run_id)s"
    " RETURNING last_seq - %(n)s AS base"
)
# The events go as one JSON parameter, as the rows of ``_upsert_rows`` do.
_INSERT_EVENTS = (
    "INSERT INTO crew_events (run_id, seq, type, payload, at, token)"
    " SELECT %(run_id)s, base + e.n, e.type, e.payload::jsonb, %(at)s, e.token"
    " FROM counter, ROWS FROM (json_to_recordset(%(rows)s::json)"
    " AS (type text, payload text, token text)) WITH ORDINALITY AS e(type, payload, token, n)"
    " RETURNING seq"
)
_APPEND_EVENTS = f"WITH counter AS ({_COUNT_EVENTS}) {_INSERT_EVENTS}"


def _event_params(
    run_id: str, rows: Sequence[_EventRow], at: float, prefix: str = ""
) -> dict[str, Any]:
    """The parameters of ``_APPEND_EVENTS`` (each name after ``prefix``)."""
    events = [
        {"type": _escape(type), "payload": payload, "token": token} for type, payload, token in rows
    ]
    params = {"run_id": run_id, "n": len(rows), "at": at, "rows": _json(events)}
    return {f"{prefix}{name}": value for name, value in params.items()}


def _json(rows: list[dict[str, str | None]]) -> str:
    """Rows as the JSON text ``json_to_recordset`` reads."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _upsert_rows(table: str, rows: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """An upsert of ``rows`` (each a row's values) into ``table``, its parameter added to
    ``params``: the rows as one JSON array of objects whose values are all text (or null), read
    back by ``json_to_recordset`` and cast to each column's type. One parameter costs psycopg
    far less than an array per column, and the server less than unnesting them."""
    names = list(rows[0])
    params[table] = _json([{name: _text(row[name]) for name in names} for row in rows])
    columns = ", ".join(f'"{name}"' for name in names)
    values = ", ".join(f'r."{name}"::{_column_type(name)}' for name in names)
    shape = ", ".join(f'"{name}" text' for name in names)
    key = ", ".join(f'"{name}"' for name in _KEYS[table])
    updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n not in _KEYS[table])
    return (
        f"INSERT INTO crew_{table} ({columns}) SELECT {values}"
        f" FROM json_to_recordset(%({table})s::json) AS r({shape})"
        f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


def _column_type(name: str) -> str:
    """The type of a column of the tables a commit of tasks writes (see ``MIGRATIONS``)."""
    if name in _JSON_FIELDS:
        return "jsonb"
    if name in ("index", "attempt", "version"):
        return "integer"
    if name == "at" or name.endswith("_at"):
        return _TIME
    return "text"


def _text(value: Any) -> str | None:
    """A value as the text PostgreSQL reads back exactly (``repr`` of a float is exact)."""
    if value is None or isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) else str(value)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def _password(url: str) -> str | None:
    """The password in a libpq URL, if it has one."""
    found = re.search(r"://[^/@:]*:([^/@]*)@", url) or re.search(r"password=([^&\s]*)", url)
    return found.group(1) if found else None


class PostgresStore(SQLStore):
    """A store in a PostgreSQL database: one connection, guarded by a lock, reopened if lost.

    One connection is enough: a run writes from one thread (the store's, ``crew.store.writer``),
    and each write is one short transaction. psycopg's connection may be used from any thread;
    the store's lock keeps calls from several threads (a CLI command's too) one at a time.
    Several processes (machines) may share the database; leases keep each run to one.

    Args:
        url: a libpq URL, ``postgresql://user:password@host:5432/database``.
        clock: returns wall-clock seconds; a parameter so tests can move time. Lease expiry is
            decided on the clients' clocks, so keep the machines' clocks in sync (NTP).
        connect_timeout_s: how long to wait for the server.
        retry_budget_s: how long the store keeps trying (reconnecting) while the server is
            unreachable.

    Raises:
        ConfigError: psycopg is not installed.
        StoreError: the server cannot be reached, or refuses the user.
    """

    _NAME = "PostgreSQL"
    _MIGRATIONS = MIGRATIONS
    _NEWER_SCHEMA_FIX = "upgrade crew"
    _PARAM = "%({})s"
    _JSON_PARAM = "%({})s::jsonb"
    _PREFIX = "crew_"
    _TIME = _TIME  # the module's, which MIGRATIONS uses too
    _NO_LIMIT = None
    # Leases: a row per run, locked with SELECT ... FOR UPDATE, rather than pg_try_advisory_lock:
    # an advisory lock belongs to a connection, so it would be shared by every thread of this
    # process on our one connection, would vanish with a dropped connection while the run goes
    # on, cannot say who holds it, and has no TTL to match the SQLite and memory stores. A row
    # carries the holder's name and expiry, and outlives connections, which is what a crashed
    # holder's takeover needs.
    _LOCK_ROW = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        connect_timeout_s: int = 5,
        retry_budget_s: float = RETRY_BUDGET_S,
    ) -> None:
        self._pg = _psycopg()
        self.url = url
        super().__init__(_redact(url), clock=clock, retry_budget_s=retry_budget_s)
        self._connect_timeout_s = connect_timeout_s
        self._closed = False  # by its owner: then "the connection is closed" does not pass
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

    def __reduce__(self) -> tuple[Any, ...]:
        # To another process (a Dask worker) as its URL: that process opens its own connection.
        return (functools.partial(PostgresStore, clock=self._clock), (self.url,))

    def close(self) -> None:
        with self._lock:
            self._closed = True
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

    def _hint(self, exc: BaseException) -> str:
        if isinstance(exc, self._pg.errors.InsufficientPrivilege):
            return "grant the user CREATE and USAGE on the schema, or use another schema"
        if isinstance(exc, self._pg.OperationalError):
            return (
                "check the server is running, and the URL's host, port, user, password and "
                "database; a lost connection is reopened, and the call tried again for up to "
                "retry_budget_s"
            )
        return "see the server's log"

    def _transient(self, exc: BaseException) -> bool:
        """A lost or refused connection, the server shutting down or overloaded, and a
        transaction the server rolled back (deadlock, serialization): all pass."""
        pg = self._pg
        passing = isinstance(exc, pg.OperationalError | pg.errors.TransactionRollback)
        return passing and not self._closed

    def _redact(self, text: str) -> str:
        return _redact(redact(text, [_password(self.url)]))

    @contextmanager
    def _use(self, action: str, run_id: str = "") -> Iterator[psycopg.Connection[DictRow]]:
        pg = self._pg
        with self._lock:
            try:
                if self._conn.closed and not self._closed:  # lost (broken), not closed by us
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

    @contextmanager
    def _tx(self, action: str, run_id: str = "") -> Iterator[psycopg.Connection[DictRow]]:
        with self._use(action, run_id) as conn, conn.transaction():
            yield conn

    def _lock_schema(self, conn: _Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def _commit_task(
        self,
        action: str,
        run_id: str,
        upserts: Sequence[tuple[str, dict[str, Any]]],
        rows: Sequence[_EventRow],
    ) -> None:
        """One statement, so one round trip, atomic on its own: each table's rows in one
        upsert (``_upsert_rows``) as a data-modifying WITH clause, then the events (or the last
        upsert) as the statement. Its text depends on the tables written, not on how many rows,
        so psycopg keeps it parsed, and prepared on the server after a few commits."""
        tables: dict[str, list[dict[str, Any]]] = {}
        for table, values in upserts:
            tables.setdefault(table, []).append(values)
        params: dict[str, Any] = {}
        clauses = [_upsert_rows(table, found, params) for table, found in tables.items()]
        if rows:
            clauses.append(_INSERT_EVENTS.replace("%(", "%(e_"))
            params.update(_event_params(_escape(run_id), rows, self._clock(), prefix="e_"))
        *first, last = clauses
        named = [f"w{i} AS ({clause})" for i, clause in enumerate(first)]
        if rows:
            named.append(f"counter AS ({_COUNT_EVENTS.replace('%(', '%(e_')})")
        statement = f"WITH {', '.join(named)} {last}" if named else last
        with self._use(action, run_id) as conn:
            if rows and not conn.execute(statement, params).fetchall():
                raise _no_run(run_id)
            if not rows:
                conn.execute(statement, params)

    def _insert_events(
        self, conn: _Connection, run_id: str, rows: Sequence[_EventRow]
    ) -> list[tuple[int, float]]:
        """One statement for them all (one round trip): the run's row lock orders concurrent
        appends from any connection."""
        at = self._clock()
        numbered = conn.execute(_APPEND_EVENTS, _event_params(run_id, rows, at)).fetchall()
        if not numbered:
            raise _no_run(run_id)
        return [(seq, at) for seq in sorted(row["seq"] for row in numbered)]
