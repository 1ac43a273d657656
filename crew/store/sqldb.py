"""How a store talks to a SQL database: the dialect, the connection, retries, statement building
and migrations, shared by SQLite and PostgreSQL (``crew.store.sql`` writes the ``Store`` methods
on top of it, ``crew.store.sqlite`` and ``crew.store.postgres`` are the backends).

The two backends once repeated each other almost line for line; now each says only how it
differs, to :class:`SQLDatabase`:

- its dialect, in class attributes: how a named parameter is written (``:name``, or
  ``%(name)s`` with a ``::jsonb`` cast for JSON columns), the tables' prefix, the type of a time
  column, the clause that locks a row read in a transaction (``FOR UPDATE``), LIMIT's "no limit";
- its connection, in two context managers: ``_use`` (the connection under the store's lock, the
  driver's errors made ``StoreError``) and ``_tx`` (the same, in one transaction);
- what is not the same SQL on both: numbering events (``_insert_events``), a task's commit
  in one statement where the database can (``_commit_task``), keeping concurrent
  migrations apart (``_lock_schema``), and the hint that goes with a driver error;
- its schema, ``MIGRATIONS`` (the column types differ).

A glitch of the database (a dropped connection, another process's write lock) is outlasted:
the backend says which driver errors are passing ones (``_transient``), and every method tries
again on them, with backoff, for up to ``retry_budget_s`` (``_retried``). So every write must be
harmless to do twice, since a try may have committed though its reply was lost: rows are upserted
on their keys, a run created again is recognised as ours by its creation time, and an event
carries a token so that its try again finds it rather than appending it twice.

No driver is imported here: each enters through its own module. Connections return rows as
dicts, JSON columns decoded; every statement takes named parameters, in a dict.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, Self, TypeVar

from crew.errors import StoreError, StoreUnavailableError, redact
from crew.retry import RetryPolicy, retrying_for
from crew.store.records import (
    _JSON_FIELDS,
    _columns,
    _escape,
    _row_values,
    _unescape,
)

RETRY_BUDGET_S = 30.0
"""How long a store keeps trying while its database is unreachable or locked: a glitch up to this
long never fails a task. Then it raises ``StoreUnavailableError``."""
RETRY_WAITS = RetryPolicy(initial_s=0.1, max_s=2.0, jitter_s=0.1)
"""The waits between tries: 0.1 s, doubling up to 2 s (its ``attempts`` is not used)."""

T = TypeVar("T")
_EventRow = tuple[str, str, str]
"""An event to insert: its type, its payload as JSON text, its token."""
_log = logging.getLogger("crew.store")


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Connection(Protocol):
    """What the store needs of a driver's connection: sqlite3's and psycopg's both fit."""

    def execute(self, sql: str, params: Any = ..., /) -> _Cursor: ...


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)  # "index" is an SQL keyword


class SQLDatabase(ABC):
    """A SQL database as the store uses it. ``SQLStore`` subclasses it with the ``Store``
    methods; a backend subclasses that and supplies its connection, its dialect and its schema.

    Args:
        location: where the database is, for messages (a path, or a URL without its password).
        clock: returns wall-clock seconds; a parameter so tests can move time.
        retry_budget_s: how long to keep trying while the database is unreachable or locked.
    """

    _NAME: ClassVar[str]  # for messages: "SQLite"
    _MIGRATIONS: ClassVar[tuple[tuple[str, ...], ...]]
    _NEWER_SCHEMA_FIX: ClassVar[str]  # what to do about a schema newer than this crew knows
    _PARAM: ClassVar[str]  # a named parameter, as a format string: ":{}"
    _JSON_PARAM: ClassVar[str]  # the same, into a JSON column
    _PREFIX: ClassVar[str] = ""  # of the table names
    _TIME: ClassVar[str]  # the type of a time column (seconds, a float)
    _LOCK_ROW: ClassVar[str] = ""  # after a SELECT in a transaction: lock the rows till it ends
    _NO_LIMIT: ClassVar[int | None]  # LIMIT's value for "every row"

    def __init__(
        self, location: str, *, clock: Callable[[], float], retry_budget_s: float = RETRY_BUDGET_S
    ) -> None:
        if not retry_budget_s >= 0:
            raise ValueError(f"retry_budget_s must be >= 0 seconds, not {retry_budget_s!r}")
        self._location = location
        self._clock = clock
        self._lock = threading.Lock()
        self.retry_budget_s = retry_budget_s

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    # what a backend supplies

    @abstractmethod
    def _use(self, action: str, run_id: str = "") -> AbstractContextManager[_Connection]:
        """The connection, under the lock, with the driver's errors translated: a lone statement
        on it is its own transaction, committed when ``execute`` returns."""

    @abstractmethod
    def _tx(self, action: str, run_id: str = "") -> AbstractContextManager[_Connection]:
        """Like :meth:`_use`, in one transaction, committed on leaving, rolled back on an error."""

    @abstractmethod
    def _insert_events(
        self, conn: _Connection, run_id: str, rows: Sequence[_EventRow]
    ) -> list[tuple[int, float]]:
        """Number and insert events in the transaction on ``conn`` (each row: its type, its
        payload as JSON text, and a unique token, for ``_event_by_token``); their ``seq`` and
        ``at``."""

    @abstractmethod
    def _hint(self, exc: BaseException) -> str:
        """How to fix what the driver's error says."""

    @abstractmethod
    def _transient(self, exc: BaseException) -> bool:
        """Whether the driver's error is a passing one (a lost connection, a lock held by another
        process), which trying again after a while may get past."""

    @abstractmethod
    def _lock_schema(self, conn: _Connection) -> None:
        """Keep other processes from migrating until ``_migrate``'s transaction ends."""

    # the SQL

    def _table(self, name: str) -> str:
        return f"{self._PREFIX}{name}"

    def _param(self, name: str) -> str:
        return (self._JSON_PARAM if name in _JSON_FIELDS else self._PARAM).format(name)

    def _by(self, **equals: object) -> tuple[str, dict[str, object]]:
        """A WHERE clause that matches these values, and its parameters."""
        clause = " AND ".join(f"{name} = {self._param(name)}" for name in equals)
        return f" WHERE {clause}", {name: _escape(value) for name, value in equals.items()}

    def _where(self, **equals: object) -> tuple[str, dict[str, object]]:
        """Like :meth:`_by`, except that None matches any value (no value: every row)."""
        used = {name: value for name, value in equals.items() if value is not None}
        return self._by(**used) if used else ("", {})

    def _select(self, table: str, record_type: type, where: str = "") -> str:
        return f"SELECT {_quoted(_columns(record_type))} FROM {self._table(table)}{where}"

    def _insert(self, table: str, names: Sequence[str]) -> str:
        values = ", ".join(self._param(name) for name in names)
        return f"INSERT INTO {self._table(table)} ({_quoted(names)}) VALUES ({values})"

    def _upsert(self, table: str, names: Sequence[str], key: tuple[str, ...]) -> str:
        updates = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in names if name not in key)
        return f"{self._insert(table, names)} ON CONFLICT ({_quoted(key)}) DO UPDATE SET {updates}"

    def _error(self, action: str, exc: BaseException) -> StoreError:
        """The driver's error as ours: ``StoreUnavailableError`` if it is a passing one."""
        where, hint = f"the {self._NAME} store at {self._location}", self._hint(exc)
        error = StoreUnavailableError if self._transient(exc) else StoreError
        cause = self._redact(" ".join(str(exc).split()))
        if action == "open":
            return error(f"cannot open {where}: {cause} ({hint})")
        return error(f"{where} cannot {action}: {cause} ({hint})")

    def _redact(self, text: str) -> str:
        """A driver's message without secrets (a backend adds those of its own, a password)."""
        return redact(text)

    def _retried(self, action: str, attempt: Callable[[bool], T]) -> T:
        """``attempt(again)``, tried again while the database is unavailable, for up to
        ``retry_budget_s``; ``again`` says an earlier try failed, and may have committed all the
        same (its reply lost). Each try is logged; after the last, the error says so."""
        tries, started = 0, time.monotonic()

        def one_try() -> T:
            nonlocal tries
            tries += 1
            return attempt(tries > 1)

        def note(_: int, error: BaseException, wait_s: float) -> None:
            _log.warning("%s; trying again in %.1f s", error, wait_s)

        try:
            return retrying_for(
                one_try,
                self.retry_budget_s,
                RETRY_WAITS,
                on_retry=note,
                retry_if=lambda error: isinstance(error, StoreUnavailableError),
            )
        except StoreUnavailableError as exc:
            spent = time.monotonic() - started
            raise StoreUnavailableError(
                f"{exc}; gave up after {tries} tries in {spent:.1f} s (the store tries for "
                f"retry_budget_s={self.retry_budget_s:g} s)"
            ) from exc

    def _on(self, action: str, run_id: str, body: Callable[[_Connection], T], tx: bool = True) -> T:
        """``body(conn)``, in one transaction (``_tx``) or not (``_use``), tried again whole."""
        use = self._tx if tx else self._use

        def attempt(_: bool) -> T:
            with use(action, run_id) as conn:
                return body(conn)

        return self._retried(action, attempt)

    def _write(self, action: str, sql: str, params: dict[str, Any], run_id: str = "") -> int:
        return self._on(action, run_id, lambda conn: conn.execute(sql, params).rowcount, False)

    def _read(self, action: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows, their text as it was written (``_unescape``)."""
        rows = self._on(action, "", lambda conn: conn.execute(sql, params).fetchall(), False)
        return [_unescape(row) for row in rows]

    def _update(
        self, conn: _Connection, table: str, key: dict[str, object], values: dict[str, Any]
    ) -> int:
        """Set ``values`` in the rows that match ``key``; how many rows matched."""
        sets = ", ".join(f"{name} = {self._param(name)}" for name in values)
        where, params = self._by(**key)
        sql = f"UPDATE {self._table(table)} SET {sets}{where}"
        return conn.execute(sql, {**values, **params}).rowcount

    def _put(self, action: str, table: str, record: Any, key: tuple[str, ...]) -> None:
        sql = self._upsert(table, _columns(type(record)), key)
        self._write(action, sql, _row_values(record), getattr(record, "run_id", ""))

    def _migrate(self) -> None:
        """Bring the schema to the latest version, in one transaction, so that two processes
        opening a new database at once cannot both apply a step."""
        versions, latest = self._table("schema_version"), len(self._MIGRATIONS)
        with self._tx("open") as conn:
            self._lock_schema(conn)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {versions}"
                f" (version INTEGER PRIMARY KEY, applied_at {self._TIME} NOT NULL)"
            )
            version = conn.execute(f"SELECT MAX(version) AS v FROM {versions}").fetchone()["v"]
            version = version or 0
            if version > latest:
                raise StoreError(
                    f"the {self._NAME} store at {self._location} has schema version {version}, "
                    f"newer than this crew knows ({latest}): {self._NEWER_SCHEMA_FIX}"
                )
            insert = self._insert("schema_version", ("version", "applied_at"))
            for number, steps in enumerate(self._MIGRATIONS[version:], start=version + 1):
                for step in steps:
                    conn.execute(step)
                conn.execute(insert, {"version": number, "applied_at": self._clock()})
