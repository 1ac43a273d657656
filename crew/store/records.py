"""The store's records and the helpers its backends share (so that they agree on the edge
cases); the ``Store`` protocol is in ``crew.store.protocol``. Re-exported by ``crew.store``.

Text comes back exactly as it went in, whatever a model wrote: a NUL (which PostgreSQL refuses)
or a lone surrogate (which is not UTF-8, so neither database takes it) is stored escaped, and
decoded on read (see ``_escape``)."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from crew.errors import LeaseHeldError, StoreError

RunStatus = Literal[
    "running", "succeeded", "failed", "cancelled", "waiting", "interrupted", "budget_exceeded"
]
ReviewStatus = Literal["pending", "approved", "rejected", "edited"]
RUN_STATUSES: tuple[str, ...] = (
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "waiting",
    "interrupted",
    "budget_exceeded",
)
REVIEW_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "edited")

DEFAULT_PATH = Path(".crew") / "crew.db"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    """One run of a crew."""

    run_id: str
    crew: str
    """The crew's name."""
    status: RunStatus
    """running, succeeded, failed, cancelled, waiting (for a human review), or interrupted.

    ``get_run`` and ``list_runs`` report a ``running`` run as ``interrupted`` once its lease has
    expired (its process was killed, or crashed); the CLI stores ``interrupted`` for a run it
    stopped on Ctrl-C or SIGTERM. Resume it to go on."""
    inputs: dict[str, Any]
    task_ids: list[str]
    """The plan's task ids, in plan order."""
    source: str = ""
    """Where the crew came from (a crew file or a Python module), so a resume can rebuild it."""
    created_at: float
    updated_at: float
    usage: dict[str, Any] = field(default_factory=dict)
    """``RunUsage.to_dict()`` as of the last update."""
    parent_run_id: str | None = None
    """The run this one was resumed or re-run from."""
    metadata: dict[str, Any] = field(default_factory=dict)
    batch_id: str | None = None
    """The batch the run is part of (``crew batch``), or None."""
    batch_line: int | None = None
    """Its line in the batch's inputs file (1-based), or None."""

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"run status {self.status!r} is not one of {', '.join(RUN_STATUSES)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchRecord:
    """A batch: one crew run once per line of an inputs file (``crew batch``)."""

    batch_id: str
    crew: str
    """The crew's name."""
    source: str = ""
    """Where the crew came from (as ``RunRecord.source``)."""
    inputs_file: str = ""
    """The inputs file, or "" for inputs given in Python."""
    size: int
    """How many inputs (runs) the batch has."""
    created_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRecord:
    """One attempt of one task; its identity is (run_id, task_id, index, attempt)."""

    run_id: str
    task_id: str
    index: int = 0
    """The fan-out index: which of the task's parallel instances this is (0 without fan-out)."""
    attempt: int = 1
    """1 for the first attempt, then 2, 3, ... for retries."""
    status: str
    """A ``TaskStatus``: succeeded, failed, skipped, cancelled or pending."""
    text: str | None = None
    data: Any = None
    """The structured output as JSON data (``model_dump(mode="json")``), or None."""
    agent: str = ""
    """The role of the agent that ran the attempt."""
    error: str | None = None
    error_type: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    """``Usage.to_dict()`` of the attempt."""
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    """A succeeded task's warning (a loop out of rounds), kept for a resumed run."""
    usage_by_agent: dict[str, Any] = field(default_factory=dict)
    """Agent role -> ``Usage.to_dict()``: who made the attempt's calls (a coworker's too)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BoardRecord:
    """One version of one board key (``BoardEntry.to_dict()`` plus the run id)."""

    run_id: str
    key: str
    version: int
    text: str
    data: Any = None
    author: str
    kind: str
    """output, note or delegation."""
    created_at: float
    updated_at: float


TaskCommit = tuple[TaskRecord, BoardRecord | None]
"""A finished attempt as ``Store.put_tasks`` takes it: its record, and the board version of its
output (None if it posted none), kept together or not at all."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRecord:
    """One event of a run, numbered by the store."""

    run_id: str
    seq: int
    """1, 2, 3, ... per run, assigned by the store: strictly increasing, without gaps."""
    type: str
    """The event's class name, e.g. ``TaskFinished``."""
    payload: dict[str, Any]
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ReviewRecord:
    """A human review of a task's output; one per (run_id, task_id)."""

    run_id: str
    task_id: str
    status: ReviewStatus
    text: str | None = None
    """The output under review, or the reviewer's edited text."""
    data: Any = None
    feedback: str | None = None
    """What the reviewer said; a rejected task is re-run with it."""
    created_at: float
    decided_at: float | None = None

    def __post_init__(self) -> None:
        if self.status not in REVIEW_STATUSES:
            raise ValueError(
                f"review status {self.status!r} is not one of {', '.join(REVIEW_STATUSES)}"
            )


ToolCallStatus = Literal["pending", "done", "not_done"]
TOOL_CALL_STATUSES: tuple[str, ...] = ("pending", "done", "not_done")


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCallRecord:
    """A call of a tool that is not idempotent: its intent, written (durably) before the call,
    then its result, written after it. One per (run_id, key)."""

    run_id: str
    key: str
    """The idempotency key: ``run_id/task_id/index/attempt/call_index``."""
    task_id: str
    index: int = 0
    attempt: int
    """The attempt that made the call, counted by the tool-call log (see ``crew.tool_calls``)."""
    call_index: int
    """0, 1, 2, ... in the order the attempt's calls were made."""
    tool: str
    arguments: dict[str, Any]
    arguments_hash: str
    """sha256 of the tool's name and its arguments as canonical JSON: how a later attempt finds
    the call it repeats."""
    status: ToolCallStatus
    """pending (the intent: the call began and no result is known), done (``result`` holds
    it), or not_done (a person or the tool's ``reconcile`` said it never took effect)."""
    result: str | None = None
    """The result as the model read it (an error's text too)."""
    error_type: str = ""
    """The exception the tool raised (its result is then the error's text); empty if none."""
    created_at: float
    finished_at: float | None = None

    def __post_init__(self) -> None:
        if self.status not in TOOL_CALL_STATUSES:
            raise ValueError(
                f"tool call status {self.status!r} is not one of {', '.join(TOOL_CALL_STATUSES)}"
            )


def default_holder() -> str:
    """This process as a lease holder: ``"host:pid"``."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Package-private: shared by the backends, so that they agree on the edge cases.

_JSON_FIELDS = frozenset(
    ("inputs", "task_ids", "usage", "usage_by_agent", "metadata", "data", "payload", "response")
) | {"arguments"}  # of a ToolCallRecord
_RUN_UPDATABLE = frozenset(f.name for f in fields(RunRecord)) - {
    "run_id",
    "created_at",
    "updated_at",
    "batch_id",
    "batch_line",
}


# What a database cannot keep in text: NUL (PostgreSQL's text and jsonb refuse it) and lone
# surrogates (not encodable as UTF-8). Each is stored as _ESCAPE and its code point in 4 hex
# digits, and so is _ESCAPE itself, which makes decoding exact. U+FDD0 is a Unicode
# noncharacter, set aside for a program's internal use such as this: no model writes it.
_ESCAPE = "\ufdd0"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff\ufdd0]")
_ESCAPED = re.compile("\ufdd0([0-9a-f]{4})")


def _escape(value: Any) -> Any:
    """The value with every string (dict keys too) made storable; lists for tuples."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda m: f"{_ESCAPE}{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {_escape(k): _escape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escape(v) for v in value]
    return value


def _unescape(value: Any) -> Any:
    """The inverse of :func:`_escape`: a value as read from the database, as it was written."""
    if isinstance(value, str):
        if _ESCAPE not in value:
            return value
        return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), value)
    if isinstance(value, dict):
        return {_unescape(k): _unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    return value


def _load_json(text: str) -> Any:
    """The value of JSON text that :func:`_dump_json` wrote."""
    if _ESCAPE not in text and "\\u" not in text:
        return json.loads(text)  # no string in it can hold an escape: nothing to undo, sooner
    return _unescape(json.loads(text))


def _dump_json(value: Any, what: str) -> str:
    """JSON text of a value, its strings escaped (``_escape``), or a StoreError that says which
    value did not fit."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if "\\u0000" not in text and not _UNSTORABLE.search(text):
            return text  # nothing to escape (json writes NUL as \u0000): the same text, sooner
        return json.dumps(
            _escape(value), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cannot store {what}: {exc} (the store keeps JSON data only: pass pydantic "
            "models as model_dump(mode='json'), and no NaN or infinity)"
        ) from exc


def _columns(record_type: type) -> list[str]:
    """The fields of a record type: the columns of its table, in order."""
    return [f.name for f in fields(record_type)]


def _row_values(record: Any) -> dict[str, Any]:
    """A record as the values of its table's row: its JSON fields as JSON text, its text
    escaped (``_escape``)."""
    return {
        name: _dump_json(getattr(record, name), f"{name} of {type(record).__name__}")
        if name in _JSON_FIELDS
        else _escape(getattr(record, name))
        for name in _columns(type(record))
    }


def _new_run(run_id: str, now: float, task_ids: Sequence[str], **fields: Any) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        task_ids=list(task_ids),
        created_at=now,
        updated_at=now,
        **{**fields, "metadata": fields.get("metadata") or {}},
    )


def _run_changes(run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Check the fields of an ``update_run`` call, as a function call would."""
    unknown = sorted(set(fields) - _RUN_UPDATABLE)
    if unknown:
        raise TypeError(
            f"update_run() got fields it cannot change: {', '.join(unknown)} "
            f"(it can change {', '.join(sorted(_RUN_UPDATABLE))})"
        )
    status = fields.get("status", "running")
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
    for name in _JSON_FIELDS & set(fields):
        _dump_json(fields[name], f"{name} of run {run_id!r}")
    return fields


def _no_run(run_id: str) -> StoreError:
    return StoreError(f"run {run_id!r} is not in the store: create_run() it first")


def _one_run(tasks: Sequence[TaskCommit]) -> str:
    """The run of the attempts ``put_tasks`` is given: one, or a ValueError (a programming
    error, not the database's), since their events go to one run."""
    runs = {record.run_id for record, _ in tasks}
    if len(runs) != 1:
        raise ValueError(f"put_tasks() takes attempts of one run, not of {sorted(runs)}")
    return runs.pop()


def _run_exists(run_id: str) -> StoreError:
    return StoreError(f"run {run_id!r} is already in the store: pick a new run id")


def _check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0 seconds, not {ttl_s!r}")


def _lease_held(run_id: str, holder: str, expires_at: float, now: float) -> LeaseHeldError:
    return LeaseHeldError(
        f"run {run_id!r} is leased by {holder} for {max(expires_at - now, 0.0):.0f} s more: it "
        "is running there. Wait for it to finish; if that process died, resume the run once "
        "the lease has expired.",
        run_id=run_id,
        holder=holder,
        expires_at=expires_at,
    )


def _lease_gone(run_id: str, holder: str) -> StoreError:
    return StoreError(
        f"run {run_id!r} has no lease held by {holder} (it was released, or the run pruned): "
        "acquire_lease() it again"
    )
