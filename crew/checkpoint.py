"""Checkpoints: a run written to its store step by step, so that it can resume after a crash.

A task's output is committed (``put_task``) before the task counts as done, and every board
version and event is written as it happens. A resumed run gets back the finished tasks (never
called again) and the board; tasks that were in flight run again. While a run executes, its
process holds the run's lease and renews it, so two processes never execute one run at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from crew import events
from crew.board import Board, BoardEntry, plain
from crew.errors import (
    ConfigError,
    LeaseHeldError,
    StoreError,
    StoreUnavailableError,
    did_you_mean,
    redact,
)
from crew.plan import Plan
from crew.results import TaskOutput, TaskResult
from crew.store import (
    BoardRecord,
    ReviewRecord,
    ReviewStatus,
    Store,
    TaskRecord,
    default_holder,
)
from crew.usage import RunUsage, Usage

EVENT_TRIES = 3
"""How many times an event is written before it is given up (and reported)."""
EVENT_BACKOFF_S = 0.05
"""The wait before the second try; it doubles before each next one."""
LEASE_TTL_S = 30.0
"""A crashed holder's run can be resumed by another process this long after its last renewal."""


class Checkpoint:
    """The link between one run and its store.

    Args:
        store: where the run is kept.
        run_id: the run.
        holder: who executes it (``host:pid`` by default), shown to anyone who tries too.
    """

    def __init__(
        self, store: Store, run_id: str, *, holder: str | None = None, ttl_s: float = LEASE_TTL_S
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.holder = holder or default_holder()
        self.ttl_s = ttl_s
        self._outputs: dict[str, BoardRecord] = {}
        """Board versions of outputs posted but not yet committed with their task."""
        self._earlier: dict[tuple[str, int], int] = {}
        """(task id, index) -> its last attempt stored by an earlier process: this process's
        attempts are numbered on from there, so they never replace those records."""

    def begin(
        self,
        *,
        crew: str,
        inputs: Mapping[str, Any],
        plan: Plan,
        source: str,
        parent: str | None = None,
    ) -> None:
        """Record a new run (``parent``: the run a subcrew's run belongs to) and take its lease."""
        self.store.create_run(
            self.run_id, crew=crew, inputs=dict(inputs), task_ids=list(plan.all_tasks),
            source=source, parent_run_id=parent,
        )  # fmt: skip
        self._take_lease()

    def resume(self, plan: Plan, board: Board) -> Resumed:
        """Take the lease of an existing run (raises ``LeaseHeldError`` naming a live holder),
        put its board back, and return the results of its finished tasks, with the reviewers'
        feedback on the outputs they rejected (those tasks run again)."""
        self._take_lease()
        self.store.update_run(self.run_id, status="running")
        for record in self.store.task_records(self.run_id):
            key = (record.task_id, record.index)
            self._earlier[key] = max(self._earlier.get(key, 0), record.attempt)
        tasks = plan.all_tasks
        board.restore(
            BoardEntry(**{**_fields(r), "data": _data(r.data, _model(tasks, r))})
            for r in self.store.board_entries(self.run_id)
        )
        results, rejected, stored = {}, {}, {}
        for (task_id, index), record in self.store.finished_outputs(self.run_id).items():
            known = tasks.get(task_id)
            if known is None and index == 0:
                continue  # a task this crew no longer has
            result = _restored(record, known.output_model if known is not None else None)
            if index != 0:  # a loop round or map item; a loop made at run time has new ids
                stored[(task_id, index)] = result
                continue
            review = self.store.get_review(self.run_id, task_id)
            if not plan.tasks[task_id].human_review or review is None:
                results[task_id] = result
            elif review.status == "pending":
                results[task_id] = dataclasses.replace(
                    result, status="waiting", reason="waits for a review"
                )
            elif review.status == "approved":
                results[task_id] = result
            elif review.status == "edited":
                results[task_id] = self._edited(result, review, plan, board)
            else:  # rejected: the task runs again, told why
                rejected[task_id] = review.feedback or "The reviewer rejected the answer."
        return Resumed(results, rejected, stored)

    def _edited(self, result: TaskResult, review: Any, plan: Plan, board: Board) -> TaskResult:
        """The reviewer's text replaces the output, on the board too, before dependants read it."""
        assert result.output is not None
        model = plan.tasks[result.task_id].output_model
        data = model.model_validate(review.data) if model and review.data is not None else None
        output = dataclasses.replace(result.output, text=review.text or "", data=data)
        entry = board.get(result.task_id)
        if entry is None or entry.text != output.text:
            board.post(result.task_id, output.text, author=output.agent, data=data)
            posted = self._outputs.pop(result.task_id, None)
            if posted is not None:  # its task committed long ago: the version goes alone
                self.store.put_board_entry(posted)
        return dataclasses.replace(result, output=output)

    def request_review(self, output: TaskOutput) -> None:
        """Hold ``output`` for a person: a pending review answered with ``crew approve`` & co."""
        data = plain(output.data)
        self.store.put_review(
            ReviewRecord(
                run_id=self.run_id, task_id=output.task_id, status="pending", text=output.text,
                data=data, created_at=time.time(),
            )
        )  # fmt: skip

    def on_board_post(self, entry: BoardEntry) -> None:
        """Keep a board version; a task's output waits to be committed with the task (the
        scheduler posts it just before ``on_output``), so a crash between the two cannot leave
        a version of an output whose task never finished."""
        record = BoardRecord(run_id=self.run_id, **_json(entry.to_dict()))
        if entry.kind == "output":
            self._outputs[entry.key] = record
        else:
            self.store.put_board_entry(record)

    def on_output(self, output: TaskOutput, attempt: int, index: int = 0) -> None:
        """Commit a finished task (or loop round, or map item: ``index``), with the board version
        of its output, in one transaction. Called before the task counts as done (write-ahead)."""
        self.store.put_task(
            TaskRecord(
                run_id=self.run_id, task_id=output.task_id, index=index,
                attempt=self._attempt(output.task_id, attempt, index), status="succeeded",
                text=output.text, data=_json(plain(output.data)), agent=output.agent,
                usage=output.usage.to_dict(),
            ),
            board=self._outputs.pop(output.task_id, None),
        )  # fmt: skip

    def on_event(self, event: events.Event) -> None:
        if not isinstance(event, events.TokenDelta):  # too many, and the output has the text
            payload = _payload(event)
            if isinstance(payload.get("attempt"), int) and "task_id" in payload:
                payload["attempt"] = self._attempt(payload["task_id"], payload["attempt"])
            self._append_event(type(event).__name__, payload)

    def _append_event(self, type_: str, payload: dict[str, Any]) -> None:
        """Append an event, trying a few times: a busy database often takes it a moment later.
        A StoreError after the last try reaches the event bus, which reports it (SinkFailed).

        ``StoreUnavailableError`` is not tried again here: the SQL stores raise it only after
        trying for their whole ``retry_budget_s``, and retries are never stacked."""
        for attempt in range(1, EVENT_TRIES + 1):
            try:
                self.store.append_event(self.run_id, type_, payload)
                return
            except StoreUnavailableError as exc:
                raise StoreError(
                    f"event {type_} of run {self.run_id} was not recorded, so `crew logs` "
                    f"lacks it: {exc}"
                ) from exc
            except StoreError as exc:
                if attempt == EVENT_TRIES:
                    raise StoreError(
                        f"event {type_} of run {self.run_id} was not recorded after "
                        f"{EVENT_TRIES} tries, so `crew logs` lacks it: {exc}"
                    ) from exc
                # blocks the event loop, as the write itself does, but for 0.15 s at most
                time.sleep(EVENT_BACKOFF_S * 2 ** (attempt - 1))

    def _attempt(self, task_id: str, attempt: int, index: int = 0) -> int:
        """The stored number of this process's ``attempt``: it goes on from earlier processes'."""
        return self._earlier.get((task_id, index), 0) + attempt

    def finish(self, status: str, results: Mapping[str, TaskResult], usage: RunUsage) -> None:
        """Record how the run ended (the tasks that did not succeed too) and free its lease."""
        for result in results.values():
            if result.status in ("failed", "cancelled"):
                self.store.put_task(
                    TaskRecord(
                        run_id=self.run_id, task_id=result.task_id,
                        attempt=self._attempt(result.task_id, max(1, result.attempts)),
                        status=result.status, error=_redacted(result.error or result.reason),
                        error_type=result.error_type, usage=result.usage.to_dict(),
                        started_at=result.started_at, finished_at=result.finished_at,
                    )
                )  # fmt: skip
        self.store.update_run(self.run_id, status=status, usage=usage.to_dict())
        self.store.release_lease(self.run_id, self.holder)

    def _take_lease(self) -> None:
        """Take the run's lease. A holder on this machine whose process is gone (killed, crashed)
        is not waited for until its lease expires: its lease is released and taken at once."""
        try:
            self.store.acquire_lease(self.run_id, self.holder, ttl_s=self.ttl_s)
        except LeaseHeldError as held:
            if not _dead_here(held.holder):
                raise
            self.store.release_lease(self.run_id, held.holder)
            self.store.acquire_lease(self.run_id, self.holder, ttl_s=self.ttl_s)

    async def keep_lease(self) -> None:
        """Renew the lease until cancelled; if another process took it over, stop the run."""
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            self.store.renew_lease(self.run_id, self.holder, ttl_s=self.ttl_s)


def decide_review(
    store: Store,
    run_id: str,
    task_id: str,
    decision: ReviewStatus,
    *,
    text: str | None = None,
    feedback: str | None = None,
) -> None:
    """Answer a pending review: ``approved``, ``rejected`` (with feedback: the task runs again)
    or ``edited`` (with the text that replaces the output). ``crew resume`` then goes on."""
    review = store.get_review(run_id, task_id)
    if review is None or review.status != "pending":
        pending = [f"{r.run_id} {r.task_id}" for r in store.reviews(status="pending")]
        listed = "; ".join(pending) or "none"
        raise ConfigError(
            f"Task '{task_id}' of run '{run_id}' has no pending review. Pending: {listed}."
        )
    store.put_review(
        dataclasses.replace(
            review, status=decision, text=text if text is not None else review.text,
            data=None if text is not None else review.data, feedback=feedback,
            decided_at=time.time(),
        )
    )  # fmt: skip


def open_run(store: Store, run_id: str) -> dict[str, Any]:
    """The stored inputs of ``run_id``, or a ConfigError saying how to find run ids."""
    record = store.get_run(run_id)
    if record is None:
        raise ConfigError(f"There is no run '{run_id}' in the store; `crew runs` lists the runs.")
    return dict(record.inputs)


def _dead_here(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class Resumed(NamedTuple):
    """What a resumed run gets back from its store."""

    results: dict[str, TaskResult]
    """The finished tasks' results (their own outputs, index 0)."""
    rejected: dict[str, str]
    """Task id -> a reviewer's feedback: those tasks run again."""
    stored: dict[tuple[str, int], TaskResult]
    """Loop rounds' and map items' outputs by (task id, index)."""


def _data(data: Any, output_model: Any) -> Any:
    """Stored JSON data back as ``output_model`` instances (a list of them for a map)."""
    if data is None or output_model is None:
        return data
    if isinstance(data, list):
        return [_data(item, output_model) for item in data]
    return output_model.model_validate(data)


def _model(tasks: Mapping[str, Any], record: BoardRecord) -> Any:
    """The output model of the task whose output ``record`` is (None for notes)."""
    task = tasks.get(record.key) if record.kind == "output" else None
    return task.output_model if task is not None else None


def _fields(record: BoardRecord) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(BoardEntry)}


def _restored(record: TaskRecord, output_model: Any) -> TaskResult:
    data = _data(record.data, output_model)
    usage = Usage(**{k: record.usage[k] for k in _USAGE_FIELDS if k in record.usage})
    output = TaskOutput(
        task_id=record.task_id, agent=record.agent, text=record.text or "", data=data, usage=usage
    )
    return TaskResult(
        task_id=record.task_id, status="succeeded", output=output, attempts=record.attempt,
        started_at=record.started_at, finished_at=record.finished_at, usage=usage,
    )  # fmt: skip


_USAGE_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "retries")


def _payload(event: events.Event) -> dict[str, Any]:
    """An event's fields as plain JSON data, without the heavy objects (outputs, results)."""
    payload: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name in ("run_id", "at", "result"):
            continue
        if isinstance(value, TaskOutput):
            value = {"text": value.text, "agent": value.agent, "model": value.model}
        elif isinstance(value, Usage):
            value = value.to_dict()
        elif field.name == "error":
            value = _redacted(value)
        payload[field.name] = value
    return _json(payload)


def _redacted(error: str | None) -> str | None:
    """An error's text as stored: without secrets, which providers and tools may echo."""
    return redact(error) if error is not None else None


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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
