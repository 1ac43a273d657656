"""A store on a SQL database: every ``Store`` method, written once for SQLite and PostgreSQL, on
top of :class:`crew.store.sqldb.SQLDatabase` (the dialect, the connection, retries, migrations).

Every write must be harmless to do twice, since a try may have committed though its reply was
lost: rows are upserted on their keys, a run created again is recognised as ours by its creation
time, and an event carries a token so that its try again finds it rather than appending it twice.

Leases are taken alike: ``INSERT ... ON CONFLICT DO NOTHING`` first, then, if someone holds the
lease, its row is read and locked. PostgreSQL needs the insert first and ``FOR UPDATE`` since two
transactions could each see no row; SQLite's ``BEGIN IMMEDIATE`` already holds the write lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from crew.store.records import (
    _JSON_FIELDS,
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
    _check_ttl,
    _columns,
    _dump_json,
    _escape,
    _lease_gone,
    _lease_held,
    _load_json,
    _new_run,
    _no_run,
    _one_run,
    _row_values,
    _run_changes,
    _run_exists,
    _unescape,
)
from crew.store.sqldb import RETRY_BUDGET_S, SQLDatabase, _Connection, _EventRow, _quoted

__all__ = ["RETRY_BUDGET_S", "SQLStore"]

_EXCHANGE = ("request_hash", "run_id", "model", "response", "at")
_LEASE = ("run_id", "holder", "acquired_at", "expires_at")
_TASK_KEY = ("run_id", "task_id", "index", "attempt")
_BOARD_KEY = ("run_id", "key", "version")
_KEYS = {"tasks": _TASK_KEY, "board": _BOARD_KEY, "exchanges": ("request_hash", "run_id")}
"""The key of each table a commit of tasks upserts rows in."""


class SQLStore(SQLDatabase):
    """The ``Store`` methods as SQL. A backend subclasses it and supplies its connection, its
    dialect and its schema (see ``SQLDatabase``)."""

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
        batch_id: str | None = None,
        batch_line: int | None = None,
    ) -> RunRecord:
        now = self._clock()
        record = _new_run(
            run_id,
            now,
            task_ids,
            crew=crew,
            inputs=inputs,
            source=source,
            status=status,
            parent_run_id=parent_run_id,
            metadata=metadata,
            batch_id=batch_id,
            batch_line=batch_line,
        )
        params = _row_values(record)
        insert = self._insert("runs", _columns(RunRecord)) + " ON CONFLICT (run_id) DO NOTHING"

        def attempt(again: bool) -> RunRecord:
            with self._tx("create a run", run_id) as conn:
                if conn.execute(insert, params).rowcount == 0:
                    # an earlier try may have committed, its reply lost: ours has our created_at
                    stored = self._run_as_stored(conn, run_id)
                    if not again or (stored.created_at, stored.crew) != (now, crew):
                        raise _run_exists(run_id)
                return self._run_as_stored(conn, run_id)  # so JSON data comes back through JSON

        return self._retried("create a run", attempt)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        changes = {
            name: _dump_json(value, f"{name} of run {run_id!r}")
            if name in _JSON_FIELDS
            else _escape(value)
            for name, value in _run_changes(run_id, fields).items()
        }

        def update(conn: _Connection) -> RunRecord:
            changes["updated_at"] = self._clock()
            if self._update(conn, "runs", {"run_id": run_id}, changes) == 0:
                raise _no_run(run_id)
            return self._run_as_stored(conn, run_id)

        return self._on("update a run", run_id, update)

    def _run_as_stored(self, conn: _Connection, run_id: str) -> RunRecord:
        where, params = self._by(run_id=run_id)
        row = conn.execute(self._select("runs", RunRecord, where), params).fetchone()
        return RunRecord(**_unescape(row))

    def get_run(self, run_id: str) -> RunRecord | None:
        where, params = self._by(run_id=run_id)
        rows = self._read("read a run", self._select_runs(where), {**params, "now": self._clock()})
        return RunRecord(**rows[0]) if rows else None

    def list_runs(
        self,
        limit: int | None = 50,
        *,
        status: RunStatus | None = None,
        crew: str | None = None,
        batch: str | None = None,
    ) -> list[RunRecord]:
        where, params = self._where(status=status, crew=crew, batch_id=batch)
        sql = (
            f"{self._select_runs(where)}"
            f" ORDER BY created_at DESC, run_id DESC LIMIT {self._param('limit')}"
        )
        params["limit"] = self._NO_LIMIT if limit is None else limit
        params["now"] = self._clock()
        return [RunRecord(**row) for row in self._read("list runs", sql, params)]

    def _select_runs(self, where: str) -> str:
        """Runs as read (``where`` applies to them): a running run whose lease has expired
        (``now``, a parameter) says ``interrupted``; its process was killed or crashed."""
        names = _columns(RunRecord)
        kept = ", ".join(f'r."{name}"' for name in names if name != "status")
        expired = (
            f"r.status = 'running' AND EXISTS (SELECT 1 FROM {self._table('leases')} l"
            f" WHERE l.run_id = r.run_id AND l.expires_at <= {self._param('now')})"
        )
        runs = (
            f"SELECT {kept}, CASE WHEN {expired} THEN 'interrupted' ELSE r.status END AS status"
            f" FROM {self._table('runs')} r"
        )
        return f"SELECT {_quoted(names)} FROM ({runs}) AS runs{where}"

    def delete_runs(self, *, older_than_s: float | None = None, keep: int | None = None) -> int:
        sql = f"DELETE FROM {self._table('runs')}{self._prunable(older_than_s, keep)}"

        def delete(conn: _Connection) -> int:
            return conn.execute(sql, self._prune_params(older_than_s, keep)).rowcount

        # a try again after a commit whose reply was lost counts 0: the runs are gone all the same
        return self._on("delete runs", "", delete)

    def prunable_runs(
        self, *, older_than_s: float | None = None, keep: int | None = None
    ) -> list[str]:
        where = self._prunable(older_than_s, keep)
        sql = (
            f"SELECT run_id FROM {self._table('runs')}{where} ORDER BY created_at DESC, run_id DESC"
        )
        rows = self._read("list runs to prune", sql, self._prune_params(older_than_s, keep))
        return [row["run_id"] for row in rows]

    def _prunable(self, older_than_s: float | None, keep: int | None) -> str:
        """The WHERE clause of the runs to prune (see ``delete_runs``)."""
        if older_than_s is None and keep is None:
            raise ValueError("delete_runs() needs older_than_s, keep, or both")
        runs, param = self._table("runs"), self._param
        old = "" if older_than_s is None else f"updated_at < {param('cutoff')} AND "
        return (
            f" WHERE {old}run_id NOT IN (SELECT run_id FROM {runs}"
            f"  ORDER BY created_at DESC, run_id DESC LIMIT {param('keep')})"
            f" AND run_id NOT IN (SELECT run_id FROM {self._table('leases')}"
            f" WHERE expires_at > {param('now')})"
            f" AND status <> 'waiting' AND run_id NOT IN (SELECT run_id FROM"
            f" {self._table('reviews')} WHERE status = 'pending')"
        )

    def _prune_params(self, older_than_s: float | None, keep: int | None) -> dict[str, Any]:
        """The parameters of ``_prunable``'s clause, as of now (a try again reads the clock)."""
        now = self._clock()
        params: dict[str, Any] = {"keep": keep or 0, "now": now}
        if older_than_s is not None:
            params["cutoff"] = now - older_than_s
        return params

    # batches

    def put_batch(self, record: BatchRecord) -> None:
        self._put("record a batch", "batches", record, ("batch_id",))

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        where, params = self._by(batch_id=batch_id)
        rows = self._read("read a batch", self._select("batches", BatchRecord, where), params)
        return BatchRecord(**rows[0]) if rows else None

    # tasks

    def put_task(
        self,
        record: TaskRecord,
        *,
        board: BoardRecord | None = None,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        exchanges: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> None:
        self.put_tasks([(record, board)], events=events, exchanges=exchanges)

    def put_tasks(
        self,
        tasks: Sequence[TaskCommit],
        *,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        exchanges: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> None:
        run_id = _one_run(tasks)
        upserts = []
        for record, board in tasks:  # a board version goes before its task, as it was posted
            if board is not None:
                upserts.append(("board", _row_values(board)))
            upserts.append(("tasks", _row_values(record)))
        # one row per request: PostgreSQL's one statement cannot upsert a row twice
        latest = {request_hash: (model, response) for request_hash, model, response in exchanges}
        upserts += [
            ("exchanges", self._exchange_values(request_hash, run_id, model, response))
            for request_hash, (model, response) in latest.items()
        ]
        rows = self._event_rows(events)
        action = _recording(len(tasks), len(upserts), bool(rows))
        if len(upserts) == 1 and not rows:
            table, values = upserts[0]
            self._write(action, self._upsert(table, list(values), _KEYS[table]), values, run_id)
            return

        def put(again: bool) -> None:
            if again and rows and self._event_by_token(run_id, rows[0][2]) is not None:
                return  # an earlier try committed, its reply lost: its events are there
            self._commit_task(action, run_id, upserts, rows)

        self._retried(action, put)

    def _commit_task(
        self,
        action: str,
        run_id: str,
        upserts: Sequence[tuple[str, dict[str, Any]]],
        rows: Sequence[_EventRow],
    ) -> None:
        """Make the ``upserts`` (table, a row's values: the tasks' attempts, each after its
        board version, then the model exchanges) and append the events, in one transaction. A
        backend may do it in fewer round trips."""
        with self._tx(action, run_id) as conn:
            for table, values in upserts:
                conn.execute(self._upsert(table, list(values), _KEYS[table]), values)
            if rows:
                self._insert_events(conn, _escape(run_id), rows)

    def task_records(self, run_id: str) -> list[TaskRecord]:
        where, params = self._by(run_id=run_id)
        sql = self._select("tasks", TaskRecord, where) + ' ORDER BY task_id, "index", attempt'
        return [TaskRecord(**row) for row in self._read("read tasks", sql, params)]

    def finished_outputs(self, run_id: str) -> dict[tuple[str, int], TaskRecord]:
        return {
            (r.task_id, r.index): r for r in self.task_records(run_id) if r.status == "succeeded"
        }

    # board

    def put_board_entry(self, record: BoardRecord) -> None:
        self._put("record a board entry", "board", record, _BOARD_KEY)

    def board_entries(self, run_id: str) -> list[BoardRecord]:
        where, params = self._by(run_id=run_id)
        sql = self._select("board", BoardRecord, where) + " ORDER BY updated_at, key, version"
        return [BoardRecord(**row) for row in self._read("read the board", sql, params)]

    # events

    def append_event(
        self, run_id: str, type: str, payload: dict[str, Any] | None = None
    ) -> EventRecord:
        return self.append_events(run_id, [(type, payload or {})])[0]

    def append_events(
        self, run_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[EventRecord]:
        rows = self._event_rows(events)
        if not rows:
            return []

        def attempt(again: bool) -> list[tuple[int, float]]:
            if again:  # an earlier try may have committed, its reply lost: then it is there
                done = self._event_by_token(run_id, rows[0][2])
                if done is not None:
                    return self._numbered_after(run_id, done, len(rows))
            with self._tx("record an event", run_id) as conn:
                return self._insert_events(conn, _escape(run_id), rows)

        numbered = self._retried("record an event", attempt)
        return [
            EventRecord(run_id=run_id, seq=seq, type=type, payload=_load_json(text), at=at)
            for (seq, at), (type, text, _) in zip(numbered, rows, strict=True)
        ]

    def _event_rows(self, events: Sequence[tuple[str, dict[str, Any]]]) -> list[_EventRow]:
        """Events as rows to insert: their type, payload as JSON text and a unique token (the
        same on every try), checked before anything is written."""
        return [
            (type, _dump_json(payload or {}, f"the payload of a {type} event"), uuid.uuid4().hex)
            for type, payload in events
        ]

    def _numbered_after(
        self, run_id: str, first: tuple[int, float], count: int
    ) -> list[tuple[int, float]]:
        """The seq and at of ``count`` events committed together, the first numbered ``first``."""
        if count == 1:
            return [first]
        stored = self.events(run_id, first[0] - 1)[:count]
        return [(e.seq, e.at) for e in stored]

    def _event_by_token(self, run_id: str, token: str) -> tuple[int, float] | None:
        """The ``seq`` and ``at`` of the event inserted with ``token``, if it was."""
        where, params = self._by(run_id=run_id, token=token)
        with self._use("record an event", run_id) as conn:
            sql = f"SELECT seq, at FROM {self._table('events')}{where}"
            row = conn.execute(sql, params).fetchone()
        return (row["seq"], row["at"]) if row is not None else None

    def events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        where, params = self._by(run_id=run_id)
        sql = self._select("events", EventRecord, where)
        sql += f" AND seq > {self._param('after_seq')} ORDER BY seq"
        rows = self._read("read events", sql, {**params, "after_seq": after_seq})
        return [EventRecord(**row) for row in rows]

    # reviews

    def put_review(self, record: ReviewRecord) -> None:
        self._put("record a review", "reviews", record, ("run_id", "task_id"))

    def get_review(self, run_id: str, task_id: str) -> ReviewRecord | None:
        where, params = self._by(run_id=run_id, task_id=task_id)
        rows = self._read("read a review", self._select("reviews", ReviewRecord, where), params)
        return ReviewRecord(**rows[0]) if rows else None

    def reviews(
        self, run_id: str | None = None, *, status: ReviewStatus | None = None
    ) -> list[ReviewRecord]:
        where, params = self._where(run_id=run_id, status=status)
        sql = self._select("reviews", ReviewRecord, where) + " ORDER BY created_at, run_id, task_id"
        return [ReviewRecord(**row) for row in self._read("read reviews", sql, params)]

    # exchanges

    def put_exchange(
        self, request_hash: str, run_id: str, *, model: str, response: dict[str, Any]
    ) -> None:
        params = self._exchange_values(request_hash, run_id, model, response)
        sql = self._upsert("exchanges", _EXCHANGE, ("request_hash", "run_id"))
        self._write("record a model exchange", sql, params, run_id)

    def _exchange_values(
        self, request_hash: str, run_id: str, model: str, response: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "request_hash": _escape(request_hash),
            "run_id": _escape(run_id),
            "model": _escape(model),
            "response": _dump_json(response, f"the response to {request_hash}"),
            "at": self._clock(),
        }

    def get_exchange(self, request_hash: str, run_id: str | None = None) -> dict[str, Any] | None:
        where, params = self._where(request_hash=request_hash, run_id=run_id)
        sql = (
            f"SELECT response FROM {self._table('exchanges')}{where}"
            " ORDER BY at DESC, run_id DESC LIMIT 1"
        )
        rows = self._read("read a model exchange", sql, params)
        return rows[0]["response"] if rows else None

    # tool calls

    def put_tool_call(self, record: ToolCallRecord) -> None:
        self._put("record a tool call", "tool_calls", record, ("run_id", "key"))

    def tool_calls(self, run_id: str, task_id: str | None = None) -> list[ToolCallRecord]:
        where, params = self._where(run_id=run_id, task_id=task_id)
        order = ' ORDER BY task_id, "index", attempt, call_index'
        sql = self._select("tool_calls", ToolCallRecord, where) + order
        return [ToolCallRecord(**row) for row in self._read("read tool calls", sql, params)]

    # leases

    def _locked_lease(self, conn: _Connection, run_id: str) -> Any:
        """The run's lease row (holder, expires_at) or None, locked until the transaction ends."""
        where, params = self._by(run_id=run_id)
        sql = f"SELECT holder, expires_at FROM {self._table('leases')}{where}{self._LOCK_ROW}"
        return conn.execute(sql, params).fetchone()

    def acquire_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        take = self._insert("leases", _LEASE) + " ON CONFLICT (run_id) DO NOTHING"

        def acquire(conn: _Connection) -> bool:
            """Whether the lease is ours now; False if it was released meanwhile."""
            now = self._clock()
            lease = {"run_id": run_id, "holder": holder, "acquired_at": now}
            if conn.execute(take, {**lease, "expires_at": now + ttl_s}).rowcount == 1:
                return True
            row = self._locked_lease(conn, run_id)
            if row is None:
                return False
            now = self._clock()  # read under the row lock: no one else decides meanwhile
            # a try again after a commit whose reply was lost finds our own lease: renewed
            if row["holder"] != holder and row["expires_at"] > now:
                raise _lease_held(run_id, row["holder"], row["expires_at"], now)
            taken = {"holder": holder, "acquired_at": now, "expires_at": now + ttl_s}
            self._update(conn, "leases", {"run_id": run_id}, taken)
            return True

        while not self._on("take a lease", run_id, acquire):
            pass  # at most twice: once more if the lease was released meanwhile

    def renew_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)

        def renew(conn: _Connection) -> None:
            row = self._locked_lease(conn, run_id)
            now = self._clock()
            if row is None:
                raise _lease_gone(run_id, holder)
            if row["holder"] != holder:
                raise _lease_held(run_id, row["holder"], row["expires_at"], now)
            self._update(conn, "leases", {"run_id": run_id}, {"expires_at": now + ttl_s})

        self._on("renew a lease", run_id, renew)

    def release_lease(self, run_id: str, holder: str) -> None:
        where, params = self._by(run_id=run_id, holder=holder)
        self._write(
            "release a lease", f"DELETE FROM {self._table('leases')}{where}", params, run_id
        )

    def lease(self, run_id: str) -> tuple[str, float] | None:
        where, params = self._by(run_id=run_id)
        sql = f"SELECT holder, expires_at FROM {self._table('leases')}{where}"
        rows = self._read("read a lease", sql, params)
        return (rows[0]["holder"], rows[0]["expires_at"]) if rows else None


def _recording(tasks: int, upserts: int, events: bool) -> str:
    """What a commit of ``tasks`` attempts does, for messages (and for tests, which tell the
    writes apart by it): "record a task and its events"."""
    if tasks > 1:
        return f"record {tasks} tasks and their {'events' if events else 'board versions'}"
    if events:
        return "record a task and its events"
    return "record a task and its board version" if upserts > 1 else "record a task"
