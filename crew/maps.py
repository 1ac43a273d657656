"""Maps: a task run once per item of a list (``for_each``), the items in parallel.

Each item is an instance of the task (``crew.instances``) with its own attempts and stored
output, so a resumed run reruns only the unfinished items. The map's output lists the items'
outputs in item order. The scheduler starts a map like any task and hands it itself as the
``Host``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from crew import events
from crew.errors import ConfigError, TaskError
from crew.instances import ROUND, TaskAttempt, by_agent, describe, failed, instance_index
from crew.results import TaskOutput, TaskResult
from crew.usage import Usage

if TYPE_CHECKING:
    from crew.board import Board
    from crew.plan import Plan


class Host(Protocol):
    """What a map needs of the scheduler running it."""

    @property
    def plan(self) -> Plan: ...
    @property
    def board(self) -> Board: ...
    @property
    def emit(self) -> events.Emitter: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def round(self) -> int: ...
    @property
    def on_failure(self) -> str: ...
    @property
    def stored(self) -> Mapping[tuple[str, int], TaskResult]: ...
    @property
    def halted(self) -> Callable[[], str | None]: ...
    def scope(self) -> Mapping[str, Any]: ...
    def announce(self, task_id: str, agent: str) -> None: ...
    async def run_task(self, task_id: str, state: TaskAttempt, *, announce: bool) -> TaskResult: ...
    async def finish(
        self,
        task_id: str,
        output: TaskOutput,
        started: float,
        *,
        by_agent: Mapping[str, Usage],
        reason: str | None = None,
    ) -> TaskResult: ...


async def run_map(host: Host, task_id: str, missing: tuple[str, ...]) -> TaskResult:
    """One instance per item, in parallel under the slots; the output lists theirs."""
    task, started = host.plan.tasks[task_id], host.clock()
    agent = task.agent.role if task.agent is not None else ""
    host.announce(task_id, agent)
    try:
        items = _items(host, task_id)
    except Exception as exc:
        host.emit(events.TaskFailed, task_id=task_id, error=str(exc), error_type="ConfigError")
        return failed(task_id, exc, 1, started, host.clock(), Usage())
    host.emit(events.MapStarted, task_id=task_id, items=len(items))
    done: dict[int, TaskResult] = {}

    async def instance(i: int, item: Any) -> None:
        index = instance_index(host.round, i)
        result = host.stored.get((task_id, index))
        if result is None:
            state = TaskAttempt(item=item, item_index=i, round=host.round, missing=missing)
            result = await host.run_task(task_id, state, announce=False)
        done[i] = result
        if result.status == "succeeded":
            host.emit(events.ItemFinished, task_id=task_id, item=i, items=len(items))
        elif result.status == "pending":
            pass  # the run's budget was spent: the other items' calls end, then the map waits
        elif host.on_failure == "fail_fast":
            raise _ItemFailed(i, result)

    try:
        async with asyncio.TaskGroup() as group:
            for i, item in enumerate(items):
                group.create_task(instance(i, item))
    except* _ItemFailed:
        pass  # reported below, from ``done``
    usage = Usage.sum(r.usage for r in done.values())
    spent = by_agent((r, agent) for r in done.values())
    if any(r.status == "pending" for r in done.values()) and (why := host.halted()):
        # The run's budget was spent. The items done are stored: a resume runs the others.
        return TaskResult(
            task_id=task_id, status="pending", reason=why, started_at=started,
            finished_at=host.clock(), usage=usage, usage_by_agent=dict(spent),
        )  # fmt: skip
    failures = sorted(i for i, r in done.items() if r.status != "succeeded")
    if failures or len(done) < len(items):
        first = done[failures[0]] if failures else None
        error = TaskError(
            f"Task '{task_id}': item {failures[0] + 1 if failures else '?'} of {len(items)}"
            f" failed: {first.error if first else 'cancelled'}",
            task_id=task_id,
        )
        host.emit(events.TaskFailed, task_id=task_id, error=str(error), error_type="TaskError")
        return failed(task_id, error, 1, started, host.clock(), usage, by_agent=spent)
    outputs = [done[i].output for i in range(len(items))]
    output = _mapped(task_id, agent, [o for o in outputs if o is not None], usage)
    return await host.finish(task_id, output, started, by_agent=spent)


def _items(host: Host, task_id: str) -> list[Any]:
    task = host.plan.tasks[task_id]
    source = task.for_each
    if callable(source):
        items = source(host.board)
    else:
        items = host.plan.expressions[(task_id, "for_each")].evaluate(host.scope())
    if isinstance(items, str | bytes | Mapping) or not hasattr(items, "__iter__"):
        raise ConfigError(
            f"Task '{task_id}': for_each {describe(source)} gave a {type(items).__name__},"
            " not a list; point it at a list field of a structured output."
        )
    items = list(items)
    if len(items) >= ROUND:
        raise ConfigError(
            f"Task '{task_id}': for_each gave {len(items)} items; the most is {ROUND - 1}."
        )
    return items


class _ItemFailed(Exception):
    def __init__(self, item: int, result: TaskResult) -> None:
        super().__init__(item)
        self.result = result


def _mapped(task_id: str, agent: str, outputs: list[TaskOutput], usage: Usage) -> TaskOutput:
    """The output of a map: every item's, in item order."""
    text = "\n\n".join(f"## Item {i + 1}\n{o.text}" for i, o in enumerate(outputs))
    structured = any(o.data is not None for o in outputs)
    data = [o.data if structured else o.text for o in outputs]
    return TaskOutput(task_id=task_id, agent=agent, text=text, data=data, usage=usage)
