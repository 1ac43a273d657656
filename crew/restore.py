"""A run read back from its store: the inputs it was started with, and what a resume gets (the
finished tasks' results, with their data as their output models, and the board's entries)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from crew.board import BoardEntry
from crew.errors import ConfigError
from crew.results import TaskOutput, TaskResult
from crew.store import BoardRecord, Store, TaskRecord
from crew.usage import Usage


def open_run(store: Store, run_id: str) -> dict[str, Any]:
    """The stored inputs of ``run_id``, or a ConfigError saying how to find run ids."""
    record = store.get_run(run_id)
    if record is None:
        raise ConfigError(f"There is no run '{run_id}' in the store; `crew runs` lists the runs.")
    return dict(record.inputs)


class Resumed(NamedTuple):
    """What a resumed run gets back from its store."""

    results: dict[str, TaskResult]
    """The finished tasks' results (their own outputs, index 0)."""
    rejected: dict[str, str]
    """Task id -> a reviewer's feedback: those tasks run again."""
    stored: dict[tuple[str, int], TaskResult]
    """Loop rounds' and map items' outputs by (task id, index)."""


def stored_data(data: Any, output_model: Any) -> Any:
    """Stored JSON data back as ``output_model`` instances (a list of them for a map)."""
    if data is None or output_model is None:
        return data
    if isinstance(data, list):
        return [stored_data(item, output_model) for item in data]
    return output_model.model_validate(data)


def _output_model(tasks: Mapping[str, Any], record: BoardRecord) -> Any:
    """The output model of the task whose output ``record`` is (None for notes)."""
    task = tasks.get(record.key) if record.kind == "output" else None
    return task.output_model if task is not None else None


def board_entry(record: BoardRecord, tasks: Mapping[str, Any]) -> BoardEntry:
    """A stored board version as the entry it was, its data as its task's output model."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(BoardEntry)}
    return BoardEntry(**{**fields, "data": stored_data(record.data, _output_model(tasks, record))})


def restored(record: TaskRecord, output_model: Any) -> TaskResult:
    """A stored output as its task's result, with its warning and its usage by agent."""
    data = stored_data(record.data, output_model)
    usage = _usage(record.usage)
    output = TaskOutput(
        task_id=record.task_id, agent=record.agent, text=record.text or "", data=data, usage=usage
    )
    return TaskResult(
        task_id=record.task_id, status="succeeded", output=output, attempts=record.attempt,
        started_at=record.started_at, finished_at=record.finished_at, usage=usage,
        reason=record.reason,
        usage_by_agent={role: _usage(u) for role, u in record.usage_by_agent.items()},
    )  # fmt: skip


def _usage(stored: Mapping[str, Any]) -> Usage:
    return Usage(**{k: stored[k] for k in _USAGE_FIELDS if k in stored})


_USAGE_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "retries")
