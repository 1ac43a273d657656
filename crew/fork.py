"""Forks: a new run that keeps a stored run's work up to one task and does the rest again."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from crew.errors import ConfigError, did_you_mean
from crew.plan import Plan
from crew.store import BoardRecord, Store, TaskRecord


def fork_run(
    store: Store,
    run_id: str,
    plan: Plan,
    from_task: str,
    *,
    fork_id: str,
    outputs: Mapping[str, str] | None = None,
) -> None:
    """Store a fork of ``run_id`` as the new run ``fork_id`` (its child), ready to be resumed.

    The fork gets every record of ``run_id`` (each attempt, each fan-out index) of the tasks
    that are neither ``from_task`` nor downstream of it or of a task in ``outputs``, with their
    board versions (outputs, delegations, the notes their agents posted) and their reviews.
    ``outputs`` (task id -> text) become finished tasks of the fork. Resuming the fork runs the
    rest. ``run_id`` is only read.

    Raises:
        ConfigError: ``run_id`` is not in the store; ``from_task`` or a task of ``outputs`` is
            not in ``plan`` (with close matches); a given output does not fit its task's
            ``output_model``. Raised before anything is written.
    """
    parent = store.get_run(run_id)
    if parent is None:
        raise ConfigError(f"There is no run '{run_id}' in the store; `crew runs` lists the runs.")
    given = dict(outputs or {})
    problems = [
        p
        for t, verb in [(from_task, "fork at"), *((t, "set the output of") for t in given)]
        if (p := _not_a_task(t, plan, verb)) is not None
    ]
    data = _given_data(plan, given, problems)
    if problems:
        raise ConfigError(problems)
    again = {from_task, *plan.descendants(from_task)}
    for task_id in given:
        again |= plan.descendants(task_id)
    kept = set(plan.tasks) - again - set(given)  # top-level tasks: a loop with its body
    store.create_run(
        fork_id, crew=parent.crew, inputs=parent.inputs, task_ids=parent.task_ids,
        source=parent.source, parent_run_id=run_id,
        metadata={"fork": {"run_id": run_id, "from_task": from_task, "set": sorted(given)}},
    )  # fmt: skip
    for record in store.task_records(run_id):
        if _owner(record.task_id, plan) in kept:
            store.put_task(dataclasses.replace(record, run_id=fork_id))
    _copy_board(store, run_id, fork_id, plan, kept)
    for review in store.reviews(run_id):
        if _owner(review.task_id, plan) in kept:
            store.put_review(dataclasses.replace(review, run_id=fork_id))
    now = time.time()
    for task_id, text in given.items():
        agent = plan.tasks[task_id].agent
        role = agent.role if agent is not None else ""
        store.put_task(
            TaskRecord(run_id=fork_id, task_id=task_id, status="succeeded", text=text,
                       data=data.get(task_id), agent=role)
        )  # fmt: skip
        store.put_board_entry(
            BoardRecord(run_id=fork_id, key=task_id, version=1, text=text, data=data.get(task_id),
                        author=role, kind="output", created_at=now, updated_at=now)
        )  # fmt: skip


def _not_a_task(task_id: str, plan: Plan, verb: str = "fork at") -> str | None:
    """None if ``task_id`` is a task of ``plan``, else the problem, with the closest match;
    ``verb`` says what was asked of it ("fork at", "set the output of")."""
    if task_id in plan.tasks:
        return None
    loop = _owner(task_id, plan)
    if loop is not None:
        return f"Cannot {verb} task '{task_id}': it is inside loop '{loop}'; {verb} '{loop}'."
    hint = did_you_mean(task_id, plan.tasks, sentence=True)
    return (
        f"Cannot {verb} task '{task_id}': the crew has no such task.{hint}"
        f" Its tasks: {', '.join(plan.tasks)}."
    )


def _given_data(plan: Plan, given: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The given outputs of tasks with an ``output_model``, validated, as JSON data."""
    from crew.errors import OutputValidationError
    from crew.results import parse_output

    data: dict[str, Any] = {}
    for task_id, text in given.items():
        model = plan.tasks[task_id].output_model if task_id in plan.tasks else None
        if model is None:
            continue
        try:
            data[task_id] = parse_output(text, model, task_id=task_id).model_dump(mode="json")
        except OutputValidationError as exc:
            problems.append(f"{exc} Give the output of '{task_id}' as JSON that fits it.")
    return data


def _copy_board(store: Store, run_id: str, fork_id: str, plan: Plan, kept: set[str]) -> None:
    """Copy the board versions of the kept tasks, numbered again 1, 2, ... per key."""
    owners = _note_owners(store, run_id)
    versions: dict[str, int] = {}
    for entry in store.board_entries(run_id):
        if entry.kind == "note":
            posted_by = owners.get((entry.key, entry.version))
            keep = posted_by is None or _owner(posted_by, plan) in kept  # unknown origin: kept
        else:
            keep = _owner(entry.key, plan) in kept
        if keep:
            versions[entry.key] = versions.get(entry.key, 0) + 1
            store.put_board_entry(
                dataclasses.replace(entry, run_id=fork_id, version=versions[entry.key])
            )


def _note_owners(store: Store, run_id: str) -> dict[tuple[str, int], str]:
    """(key, version) of each note -> the task (or delegation) whose agent posted it, from the
    run's event log: a ``post_note`` tool call, then the ``BoardPosted`` of its key."""
    posting: dict[str, str] = {}
    owners: dict[tuple[str, int], str] = {}
    for event in store.events(run_id):
        payload = event.payload
        if event.type == "ToolCalled" and payload.get("tool") == "post_note":
            key = (payload.get("arguments") or {}).get("key")
            if isinstance(key, str):
                posting[key] = str(payload.get("task_id", ""))
        elif event.type == "BoardPosted" and payload.get("kind") == "note":
            task_id = posting.pop(str(payload.get("key")), None)
            if task_id is not None:
                owners[(str(payload["key"]), int(payload["version"]))] = task_id
    return owners


def _owner(key: str, plan: Plan) -> str | None:
    """The top-level task a task id, board key or delegation belongs to: ``draft`` and
    ``draft/delegated-1`` to draft, a task in a loop's body to the loop; None for no task."""
    if key in plan.tasks:
        return key
    for loop, body in plan.groups.items():
        if _owner(key, body) is not None:
            return loop
    owners = [t for t in plan.tasks if key.startswith(f"{t}/")]
    return max(owners, key=len) if owners else None
