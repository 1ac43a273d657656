"""A store in memory, for tests: the same contract as the databases, nothing kept on disk."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
    _dump_json,
    _lease_gone,
    _lease_held,
    _load_json,
    _new_run,
    _no_run,
    _one_run,
    _run_changes,
    _run_exists,
)

R = TypeVar("R")


def _copy(record: R) -> R:
    """The record with its JSON fields passed through JSON, as a database would return them, so
    that a test on this store sees what it would see on SQLite, and callers share no state."""
    kind = type(record)
    names = _JSON_NAMES.get(kind)
    if names is None:
        fields = dataclasses.fields(record)  # type: ignore[arg-type]
        names = _JSON_NAMES[kind] = tuple(f.name for f in fields if f.name in _JSON_FIELDS)
    changes = {
        name: _load_json(_dump_json(getattr(record, name), f"{name} of {kind.__name__}"))
        for name in names
    }
    return dataclasses.replace(record, **changes)  # type: ignore[type-var]


_JSON_NAMES: dict[type, tuple[str, ...]] = {}
"""The JSON fields of each record type."""


class MemoryStore:
    """Everything in dicts, behind one lock. Safe across threads; gone when the process ends.

    Args:
        clock: returns wall-clock seconds; a parameter so tests can move time.
    """

    blocks = False
    """Its calls never wait on I/O: a run makes them on its event loop, not on a thread."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._tasks: dict[str, dict[tuple[str, int, int], TaskRecord]] = {}
        self._board: dict[str, dict[tuple[str, int], BoardRecord]] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._reviews: dict[tuple[str, str], ReviewRecord] = {}
        self._exchanges: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._tool_calls: dict[tuple[str, str], ToolCallRecord] = {}
        self._batches: dict[str, BatchRecord] = {}

    def __repr__(self) -> str:
        return "MemoryStore()"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _need_run(self, run_id: str) -> None:
        if run_id not in self._runs:
            raise _no_run(run_id)

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
        with self._lock:
            if run_id in self._runs:
                raise _run_exists(run_id)
            record = _copy(
                _new_run(
                    run_id,
                    self._clock(),
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
            )
            self._runs[run_id] = record
            return _copy(record)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        changes = _run_changes(run_id, fields)
        with self._lock:
            self._need_run(run_id)
            record = dataclasses.replace(self._runs[run_id], **changes, updated_at=self._clock())
            self._runs[run_id] = _copy(record)
            return _copy(record)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            record = self._runs.get(run_id)
            return self._as_read(record, self._clock()) if record is not None else None

    def list_runs(
        self,
        limit: int | None = 50,
        *,
        status: RunStatus | None = None,
        crew: str | None = None,
        batch: str | None = None,
    ) -> list[RunRecord]:
        wanted = {"status": status, "crew": crew, "batch_id": batch}
        with self._lock:
            now = self._clock()
            runs = [
                r
                for r in (self._as_read(r, now) for r in self._newest_first())
                if all(value is None or getattr(r, name) == value for name, value in wanted.items())
            ]
        return runs if limit is None else runs[:limit]

    def put_batch(self, record: BatchRecord) -> None:
        with self._lock:
            self._batches[record.batch_id] = record

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._lock:
            return self._batches.get(batch_id)

    def _as_read(self, record: RunRecord, now: float) -> RunRecord:
        """A copy of the run; ``interrupted`` if it is running and its lease has expired."""
        lease = self._leases.get(record.run_id)
        if record.status == "running" and lease is not None and lease[1] <= now:
            record = dataclasses.replace(record, status="interrupted")
        return _copy(record)

    def _newest_first(self) -> list[RunRecord]:
        return sorted(self._runs.values(), key=lambda r: (r.created_at, r.run_id), reverse=True)

    def delete_runs(self, *, older_than_s: float | None = None, keep: int | None = None) -> int:
        with self._lock:
            doomed = self._prunable(older_than_s, keep)
            for run_id in doomed:
                self._forget(run_id)
            return len(doomed)

    def prunable_runs(
        self, *, older_than_s: float | None = None, keep: int | None = None
    ) -> list[str]:
        with self._lock:
            return self._prunable(older_than_s, keep)

    def _prunable(self, older_than_s: float | None, keep: int | None) -> list[str]:
        """The runs to prune (see ``delete_runs``), newest first."""
        if older_than_s is None and keep is None:
            raise ValueError("delete_runs() needs older_than_s, keep, or both")
        now = self._clock()
        newest = self._newest_first()
        kept = {r.run_id for r in newest[: keep or 0]}
        reviewed = {r.run_id for r in self._reviews.values() if r.status == "pending"}
        return [
            r.run_id
            for r in newest
            if r.run_id not in kept
            and (older_than_s is None or r.updated_at < now - older_than_s)
            and not (r.run_id in self._leases and self._leases[r.run_id][1] > now)
            and r.status != "waiting"
            and r.run_id not in reviewed
        ]

    def _forget(self, run_id: str) -> None:
        del self._runs[run_id]
        self._tasks.pop(run_id, None)
        self._board.pop(run_id, None)
        self._events.pop(run_id, None)
        self._leases.pop(run_id, None)
        for key in [k for k in self._reviews if k[0] == run_id]:
            del self._reviews[key]
        for key in [k for k in self._exchanges if k[1] == run_id]:
            del self._exchanges[key]
        for call in [k for k in self._tool_calls if k[0] == run_id]:
            del self._tool_calls[call]

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
        copies = [(_copy(record), _copy(board) if board else None) for record, board in tasks]
        kept = [
            (key, (self._clock(), _load_json(_dump_json(response, f"the response to {key}"))))
            for key, _, response in exchanges
        ]
        with self._lock:
            self._need_run(run_id)
            for _, version in copies:
                if version is not None:
                    self._need_run(version.run_id)
            self._append(run_id, events)  # first: a payload it refuses keeps nothing
            for key, exchange in kept:
                self._exchanges[(key, run_id)] = exchange
            for record, version in copies:
                if version is not None:
                    entries = self._board.setdefault(version.run_id, {})
                    entries[(version.key, version.version)] = version
                identity = (record.task_id, record.index, record.attempt)
                self._tasks.setdefault(run_id, {})[identity] = record

    def task_records(self, run_id: str) -> list[TaskRecord]:
        with self._lock:
            attempts = self._tasks.get(run_id, {})
            return [_copy(attempts[k]) for k in sorted(attempts)]

    def finished_outputs(self, run_id: str) -> dict[tuple[str, int], TaskRecord]:
        return {
            (r.task_id, r.index): r for r in self.task_records(run_id) if r.status == "succeeded"
        }

    # board

    def put_board_entry(self, record: BoardRecord) -> None:
        record = _copy(record)
        with self._lock:
            self._need_run(record.run_id)
            self._board.setdefault(record.run_id, {})[(record.key, record.version)] = record

    def board_entries(self, run_id: str) -> list[BoardRecord]:
        with self._lock:
            entries = self._board.get(run_id, {}).values()
            return [
                _copy(e) for e in sorted(entries, key=lambda e: (e.updated_at, e.key, e.version))
            ]

    # events

    def append_event(
        self, run_id: str, type: str, payload: dict[str, Any] | None = None
    ) -> EventRecord:
        with self._lock:
            self._need_run(run_id)
            return self._append(run_id, [(type, payload or {})])[0]

    def append_events(
        self, run_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[EventRecord]:
        with self._lock:
            self._need_run(run_id)
            return self._append(run_id, events)

    def _append(
        self, run_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[EventRecord]:
        """Number and keep ``events`` (the lock held, the run known)."""
        kept = self._events.setdefault(run_id, [])
        records = [
            EventRecord(run_id=run_id, seq=0, type=type, payload=payload or {}, at=0.0)
            for type, payload in events
        ]
        records = [_copy(r) for r in records]  # every payload checked before any is kept
        appended = []
        for record in records:
            seq = kept[-1].seq + 1 if kept else 1
            kept.append(dataclasses.replace(record, seq=seq, at=self._clock()))
            appended.append(_copy(kept[-1]))
        return appended

    def events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        with self._lock:
            return [_copy(e) for e in self._events.get(run_id, []) if e.seq > after_seq]

    # reviews

    def put_review(self, record: ReviewRecord) -> None:
        record = _copy(record)
        with self._lock:
            self._need_run(record.run_id)
            self._reviews[(record.run_id, record.task_id)] = record

    def get_review(self, run_id: str, task_id: str) -> ReviewRecord | None:
        with self._lock:
            record = self._reviews.get((run_id, task_id))
            return _copy(record) if record is not None else None

    def reviews(
        self, run_id: str | None = None, *, status: ReviewStatus | None = None
    ) -> list[ReviewRecord]:
        with self._lock:
            found = [
                _copy(r)
                for r in self._reviews.values()
                if (run_id is None or r.run_id == run_id) and (status is None or r.status == status)
            ]
        return sorted(found, key=lambda r: (r.created_at, r.run_id, r.task_id))

    # tool calls

    def put_tool_call(self, record: ToolCallRecord) -> None:
        record = _copy(record)
        with self._lock:
            self._need_run(record.run_id)
            self._tool_calls[(record.run_id, record.key)] = record

    def tool_calls(self, run_id: str, task_id: str | None = None) -> list[ToolCallRecord]:
        with self._lock:
            found = [
                r for (run, _), r in self._tool_calls.items()
                if run == run_id and task_id in (None, r.task_id)
            ]  # fmt: skip
        order = sorted(found, key=lambda r: (r.task_id, r.index, r.attempt, r.call_index))
        return [_copy(r) for r in order]

    # exchanges

    def put_exchange(
        self, request_hash: str, run_id: str, *, model: str, response: dict[str, Any]
    ) -> None:
        response = _load_json(_dump_json(response, f"the response to {request_hash}"))
        with self._lock:
            self._need_run(run_id)
            self._exchanges[(request_hash, run_id)] = (self._clock(), response)

    def get_exchange(self, request_hash: str, run_id: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            found = [
                (at, run, response)
                for (hash_, run), (at, response) in self._exchanges.items()
                if hash_ == request_hash and (run_id is None or run == run_id)
            ]
        if not found:
            return None
        latest: dict[str, Any] = max(found, key=lambda f: (f[0], f[1]))[2]  # as ORDER BY at, run_id
        return json.loads(json.dumps(latest))

    # leases

    def acquire_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._lock:
            self._need_run(run_id)
            now = self._clock()
            current = self._leases.get(run_id)
            if current is not None and current[0] != holder and current[1] > now:
                raise _lease_held(run_id, current[0], current[1], now)
            self._leases[run_id] = (holder, now + ttl_s)

    def renew_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            current = self._leases.get(run_id)
            if current is None:
                raise _lease_gone(run_id, holder)
            if current[0] != holder:
                raise _lease_held(run_id, current[0], current[1], now)
            self._leases[run_id] = (holder, now + ttl_s)

    def release_lease(self, run_id: str, holder: str) -> None:
        with self._lock:
            current = self._leases.get(run_id)
            if current is not None and current[0] == holder:
                del self._leases[run_id]

    def lease(self, run_id: str) -> tuple[str, float] | None:
        with self._lock:
            return self._leases.get(run_id)
