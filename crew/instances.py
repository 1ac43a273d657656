"""Instances of a task: its own run, one per map item, one per loop round.

Each instance keeps its bookkeeping across attempts in a ``TaskAttempt`` and stores its output
under its own index (``instance_index``), so a resumed run finds every finished item and round.
``run_instance`` runs one: its attempts, each in a slot and within the task's timeout, retried
as the task allows, and its result (the scheduler decides when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from crew import events
from crew.errors import BudgetExceededError, TaskTimeoutError
from crew.results import TaskOutput, TaskResult
from crew.retry import RetryPolicy, retrying, worth_another_attempt
from crew.usage import Usage

if TYPE_CHECKING:
    from crew.plan import Plan
    from crew.slots import Slots
    from crew.task import Task

TASK_RETRY = RetryPolicy(initial_s=0.05, max_s=2.0, jitter_s=0.05)
"""A failed task attempt is tried again quickly: the model layer already waited on provider
errors."""

ROUND = 10_000
"""Stored outputs are keyed by (task id, index): index = round * ROUND + item + 1, where round
is 0 outside loops and item + 1 is 0 for a task's own output (so a map has < ROUND items)."""


def instance_index(round_: int = 0, item: int | None = None) -> int:
    """The store index of a task's output in loop round ``round_``, or of one map item."""
    return round_ * ROUND + (item + 1 if item is not None else 0)


@dataclass
class TaskAttempt:
    """Mutable bookkeeping of one task instance across its attempts (owned by the scheduler)."""

    number: int = 0
    usage: Usage = Usage()
    by_agent: dict[str, Usage] = field(default_factory=dict)
    """``usage`` by the role of the agent that made the calls: the task's own, and the
    coworkers it delegated to (their work is charged to the task, but done by them)."""
    item: Any = None
    """The item of a map instance."""
    item_index: int | None = None
    """Its position among the map's items (None: not a map instance)."""
    round: int = 0
    """The loop round (0: not in a loop)."""
    context: tuple[str, ...] = ()
    """More board keys the prompt shows: a loop's outputs from the round before."""
    missing: tuple[str, ...] = ()
    """Dependencies that did not succeed (``join`` other than all): the prompt says so."""
    index: int = 0
    """Where the output is stored (see ``instance_index``)."""

    def add_usage(self, usage: Usage, agent: str) -> None:
        self.usage = self.usage + usage
        self.by_agent[agent] = self.by_agent.get(agent, Usage()) + usage


def failed(
    task_id: str,
    exc: Exception,
    attempts: int,
    started: float | None,
    now: float,
    usage: Usage,
    *,
    by_agent: Mapping[str, Usage] | None = None,
) -> TaskResult:
    """The result of a task (or instance) that failed with ``exc``."""
    return TaskResult(
        task_id=task_id, status="failed", error=str(exc), error_type=type(exc).__name__,
        exception=exc, attempts=attempts, started_at=started, finished_at=now, usage=usage,
        usage_by_agent=dict(by_agent or {}),
    )  # fmt: skip


def by_agent(results: Iterable[tuple[TaskResult, str]]) -> dict[str, Usage]:
    """The usage of ``results`` by agent role; each comes with the role of its task's agent,
    who made the calls its breakdown does not name (a result restored from the store)."""
    total: dict[str, Usage] = {}
    for result, role in results:
        if not result.usage_by_agent and result.usage == Usage():
            continue  # no calls (skipped, say): no agent did anything
        for agent, usage in (result.usage_by_agent or {role: result.usage}).items():
            total[agent] = total.get(agent, Usage()) + usage
    return total


def describe(condition: Any) -> str:
    """How a message names a condition or item source: an expression in backquotes, a callable
    by its name."""
    if isinstance(condition, str):
        return f"`{condition}`"
    return getattr(condition, "__name__", repr(condition))


Attempt = Callable[[str, TaskAttempt], Awaitable[TaskOutput]]
"""Runs one attempt of a task and returns its output (the crew wires in the agent)."""


class Runner(Protocol):
    """What running an instance reads of its scheduler (``crew.scheduler.Scheduler``)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def attempt(self) -> Attempt: ...
    @property
    def on_output(self) -> Callable[[TaskResult, int], Awaitable[None]]: ...
    @property
    def emit(self) -> events.Emitter: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def hold(self) -> Callable[[TaskOutput], bool]: ...
    @property
    def slots(self) -> Slots | None: ...
    @property
    def task_retries(self) -> int: ...
    @property
    def began(self) -> set[str]: ...
    def priority(self, task_id: str) -> tuple[float, int]: ...


async def run_instance(
    host: Runner,
    task_id: str,
    state: TaskAttempt,
    *,
    announce: bool = True,
    ticket: asyncio.Future[None] | None = None,
) -> TaskResult:
    """All attempts of one task (or of one map item). Returns its result; raises only
    CancelledError. With a ``ticket``, it waits for its slot first (the scheduler frees it); a
    map item holds a slot per attempt; a subcrew's own tasks take slots."""
    task = host.plan.tasks[task_id]
    agent = task.agent.role if task.agent is not None else ""
    state.index = instance_index(state.round, state.item_index)
    if ticket is not None:
        await ticket
    started = host.clock()

    async def one_attempt() -> TaskOutput:
        async with _slot(host, task, task_id, ticket):
            state.number += 1
            if announce:
                host.emit(events.TaskStarted, task_id=task_id, agent=agent, attempt=state.number)
            host.began.add(task_id)
            try:
                async with asyncio.timeout(task.timeout_s):
                    return await host.attempt(task_id, state)
            except TimeoutError as exc:
                raise TaskTimeoutError(
                    f"Task '{task_id}' ran past its timeout_s={task.timeout_s:g} s."
                    " Raise Task(timeout_s=...) or give the task less to do.",
                    task_id=task_id,
                ) from exc

    def on_retry(attempt: int, error: BaseException, delay: float) -> None:
        host.emit(
            events.TaskRetrying,
            task_id=task_id,
            attempt=attempt,
            error=str(error),
            delay_s=delay,
        )

    retries = host.task_retries if task.retries is None else task.retries
    policy = replace(TASK_RETRY, attempts=retries + 1)
    try:
        output = await retrying(
            one_attempt, policy, on_retry=on_retry, retry_if=worth_another_attempt
        )
    except asyncio.CancelledError:
        raise
    except BudgetExceededError as exc:  # not a failure: it runs again on a resume
        return TaskResult(
            task_id=task_id, status="pending", reason=str(exc), attempts=state.number,
            started_at=started, finished_at=host.clock(), usage=state.usage,
            usage_by_agent=dict(state.by_agent),
        )  # fmt: skip
    except Exception as exc:
        if announce:
            host.emit(
                events.TaskFailed,
                task_id=task_id,
                error=str(exc),
                error_type=type(exc).__name__,
            )
        return failed(
            task_id, exc, state.number, started, host.clock(), state.usage,
            by_agent=state.by_agent,
        )  # fmt: skip
    output = replace(output, usage=state.usage, item=state.item_index)
    result = TaskResult(
        task_id=task_id, status="succeeded", output=output, attempts=state.number,
        started_at=started, finished_at=host.clock(), usage=state.usage,
        usage_by_agent=dict(state.by_agent),
    )  # fmt: skip
    await host.on_output(result, state.index)  # durable before the task is done
    if announce:
        host.emit(events.TaskFinished, task_id=task_id, output=output)
        if host.hold(output):
            result = replace(result, status="waiting", reason="waits for a review")
    return result


def _slot(
    host: Runner, task: Task, task_id: str, ticket: asyncio.Future[None] | None
) -> contextlib.AbstractAsyncContextManager[None]:
    if task.kind == "crew" or ticket is not None:
        return contextlib.nullcontext()
    assert host.slots is not None
    return host.slots.hold(host.priority(task_id))
