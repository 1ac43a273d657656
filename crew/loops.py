"""Loops: a group of tasks (the body) run round after round, until a condition holds or the
bound (``until``, ``max_rounds``).

Each round runs the body as a scheduler of its own, sharing the run's slots; each body task
stores its output per round (``crew.instances``), so a resumed run goes on from the round it
stopped in. The loop's output is the last output of its last round. A loop that ran out of
rounds before its ``until`` held still succeeds, with the outputs it has, but its result's
``reason`` says so (a warning of the run) and ``LoopExhausted`` is emitted. The scheduler starts a
loop like any task and hands it itself as the ``Host``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from crew import events
from crew.errors import ConfigError, TaskError
from crew.instances import by_agent, describe, failed, instance_index
from crew.results import TaskOutput, TaskResult
from crew.usage import Usage

if TYPE_CHECKING:
    from crew.plan import Plan
    from crew.task import Task


class Host(Protocol):
    """What a loop needs of the scheduler running it."""

    @property
    def plan(self) -> Plan: ...
    @property
    def emit(self) -> events.Emitter: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def stored(self) -> Mapping[tuple[str, int], TaskResult]: ...
    @property
    def plan_body(self) -> Callable[[Task], Plan] | None: ...
    @property
    def halted(self) -> Callable[[], str | None]: ...
    def announce(self, task_id: str, agent: str) -> None: ...
    async def run_round(
        self, body: Plan, stored: dict[str, TaskResult], number: int
    ) -> tuple[dict[str, TaskResult], set[str]]: ...
    def holds(self, task_id: str, name: str) -> bool: ...
    async def finish(
        self,
        task_id: str,
        output: TaskOutput,
        started: float,
        *,
        by_agent: Mapping[str, Usage],
        reason: str | None = None,
    ) -> TaskResult: ...


async def run_loop(host: Host, task_id: str) -> TaskResult:
    """The loop's body, round after round, until its condition holds or the bound."""
    task, started = host.plan.tasks[task_id], host.clock()
    host.announce(task_id, "")
    rounds = task.max_rounds or 1
    try:
        body = host.plan.groups.get(task_id) or _plan_body(host, task)
    except Exception as exc:
        host.emit(events.TaskFailed, task_id=task_id, error=str(exc), error_type=type(exc).__name__)
        return failed(task_id, exc, 1, started, host.clock(), Usage())
    usage, stopped, number, last = Usage(), "max_rounds", 0, None
    charged: list[tuple[TaskResult, str]] = []  # the rounds' results, each with its agent
    for number in range(1, rounds + 1):
        stored = {
            t: r
            for (t, i), r in host.stored.items()
            if i == instance_index(number) and t in body.tasks
        }
        resumed_past = any(
            i == instance_index(number + 1) and t in body.tasks for (t, i) in host.stored
        )
        if len(stored) < len(body.tasks) or not resumed_past:
            host.emit(events.RoundStarted, task_id=task_id, round=number, max_rounds=rounds)
        results, tolerated = await host.run_round(body, stored, number)
        new = [r for r in results.values() if r.task_id not in stored]
        usage = usage + Usage.sum(r.usage for r in new)
        charged += [(r, _role(body, r.task_id)) for r in new]
        broken = [
            r for r in results.values() if r.status == "failed" and r.task_id not in tolerated
        ]
        if broken:
            error = TaskError(
                f"Loop '{task_id}', round {number}: task '{broken[0].task_id}' failed:"
                f" {broken[0].error}",
                task_id=task_id,
            )
            host.emit(events.TaskFailed, task_id=task_id, error=str(error), error_type="TaskError")
            return failed(
                task_id, error, number, started, host.clock(), usage, by_agent=by_agent(charged)
            )
        if any(r.status == "pending" for r in results.values()) and (why := host.halted()):
            return TaskResult(  # the round's done tasks are stored: a resume runs the others
                task_id=task_id, status="pending", reason=why, attempts=number,
                started_at=started, finished_at=host.clock(), usage=usage,
                usage_by_agent=dict(by_agent(charged)),
            )  # fmt: skip
        last = next((r.output for r in reversed(results.values()) if r.output), last)
        if resumed_past:
            continue  # the stored next round shows this one's condition did not hold
        try:
            done = task.until is not None and host.holds(task_id, "until")
        except Exception as exc:  # a condition that cannot be evaluated fails the loop
            host.emit(
                events.TaskFailed, task_id=task_id, error=str(exc), error_type=type(exc).__name__
            )
            return failed(
                task_id, exc, number, started, host.clock(), usage, by_agent=by_agent(charged)
            )
        if done:
            stopped = "until"
            break
    reason = None
    if stopped == "max_rounds" and task.until is not None:
        reason = (
            f"loop '{task_id}' stopped after {number} round{'s' if number > 1 else ''} without"
            f" meeting its condition {describe(task.until)}"
        )
        host.emit(events.LoopExhausted, task_id=task_id, rounds=number, reason=reason)
    host.emit(events.LoopFinished, task_id=task_id, rounds=number, stopped=stopped)
    output = TaskOutput(
        task_id=task_id, agent=last.agent if last else "", text=last.text if last else "",
        data=last.data if last else None, usage=usage,
    )  # fmt: skip
    return await host.finish(task_id, output, started, by_agent=by_agent(charged), reason=reason)


def _role(body: Plan, task_id: str) -> str:
    agent = body.tasks[task_id].agent
    return agent.role if agent is not None else ""


def _plan_body(host: Host, task: Task) -> Plan:
    if host.plan_body is None:
        raise ConfigError(f"Loop '{task.id}': its body is made at run time; nothing can plan it.")
    return host.plan_body(task)
