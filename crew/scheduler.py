"""The scheduler: runs each task the moment its last dependency has finished.

There are no levels or supersteps: a completion immediately releases the tasks it unblocks.
At most ``max_concurrency`` tasks run at once; when more are ready, the one with the longest
estimated path to the end of the graph starts first (critical-path priority).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from crew import events
from crew.errors import ConfigError, TaskTimeoutError
from crew.plan import Plan
from crew.retry import RetryPolicy, retrying
from crew.task import TaskOutput, TaskResult
from crew.usage import Usage

FailurePolicy = Literal["fail_fast", "continue"]
Attempt = Callable[[str, "TaskAttempt"], Awaitable[TaskOutput]]
"""Runs one attempt of a task and returns its output (the crew wires in the agent)."""

# A failed task attempt is tried again quickly: the model layer already waited on provider errors.
TASK_RETRY = RetryPolicy(initial_s=0.05, max_s=2.0, jitter_s=0.05)


@dataclass
class TaskAttempt:
    """Mutable bookkeeping of one task across its attempts (owned by the scheduler)."""

    number: int = 0
    usage: Usage = Usage()

    def add_usage(self, usage: Usage) -> None:
        self.usage = self.usage + usage


@dataclass
class Scheduler:
    """Runs the tasks of a plan; one instance per run.

    Args:
        plan: the validated task graph.
        attempt: runs one attempt of one task.
        on_output: called with each output and its attempt number, before the task counts as
            done (post it on the board, commit it to the store).
        emit: the run's event emitter.
        clock: wall-clock seconds, for result timestamps.
    """

    plan: Plan
    attempt: Attempt
    on_output: Callable[[TaskOutput, int], None]
    emit: events.Emitter
    clock: Callable[[], float]
    max_concurrency: int = 8
    on_failure: FailurePolicy = "fail_fast"
    results: dict[str, TaskResult] = field(default_factory=dict)
    """Starts with the tasks a resumed run already finished: they count as done, never run."""
    hold: Callable[[TaskOutput], bool] = lambda output: False
    """True when an output must wait for a person's review: its dependants do not start."""

    def __post_init__(self) -> None:
        check_settings(self.max_concurrency, self.on_failure)

    async def run(self) -> dict[str, TaskResult]:
        """Run every task; return each task's result, in declaration order.

        If this coroutine is cancelled (Ctrl-C), running tasks are cancelled and awaited first, so
        the results hold every finished output and nothing half-done; then it re-raises.
        """
        plan = self.plan
        waiting = self._waiting()
        position = {t: i for i, t in enumerate(plan.order)}
        ready: list[tuple[float, int, str]] = []
        running: dict[str, asyncio.Task[TaskResult]] = {}
        finished: asyncio.Queue[str] = asyncio.Queue()

        def release(task_id: str) -> None:
            heapq.heappush(ready, (-plan.remaining_s[task_id], position[task_id], task_id))

        for task_id, count in waiting.items():
            if count == 0 and task_id not in self.results:
                release(task_id)
        try:
            while ready or running:
                while ready and len(running) < self.max_concurrency:
                    task_id = heapq.heappop(ready)[2]
                    job = asyncio.create_task(self._run_task(task_id), name=f"crew-task-{task_id}")
                    job.add_done_callback(functools.partial(_notify, finished, task_id))
                    running[task_id] = job
                task_id = await finished.get()
                result = running.pop(task_id).result()
                self.results[task_id] = result
                if result.status == "waiting":
                    continue  # its dependants wait for the review; other branches go on
                if result.status == "succeeded":
                    for dependant in plan.graph.successors(task_id):
                        waiting[dependant] -= 1
                        if waiting[dependant] == 0 and dependant not in self.results:
                            release(dependant)
                elif self.on_failure == "continue":
                    self._skip_dependants(task_id)
                else:
                    await self._stop(running, f"the run stopped after task '{task_id}' failed")
                    ready.clear()
                    self._skip_dependants(task_id)
                    self._skip_rest(f"the run stopped after task '{task_id}' failed")
        except BaseException:  # cancelled (Ctrl-C) or a bug: never leave tasks running behind
            await self._stop(running, "the run was cancelled")
            self._skip_rest("the run was cancelled before it started", status="pending")
            raise
        self._skip_rest("it waits for a review of an earlier task", status="pending")
        return {t: self.results[t] for t in plan.tasks}

    def _waiting(self) -> dict[str, int]:
        """Unfinished dependencies per task; tasks restored from a resumed run count as done."""
        graph = self.plan.graph
        waiting = {task_id: graph.in_degree(task_id) for task_id in self.plan.order}
        for task_id, result in self.results.items():
            if result.status != "succeeded":  # a restored output still under review holds them
                continue
            for dependant in graph.successors(task_id):
                waiting[dependant] -= 1
        return waiting

    async def _run_task(self, task_id: str) -> TaskResult:
        """All attempts of one task. Returns its result; raises only CancelledError."""
        task = self.plan.tasks[task_id]
        state = TaskAttempt()
        started = self.clock()
        agent = task.agent.role if task.agent is not None else ""

        async def one_attempt() -> TaskOutput:
            state.number += 1
            self.emit(events.TaskStarted, task_id=task_id, agent=agent, attempt=state.number)
            try:
                async with asyncio.timeout(task.timeout_s):
                    return await self.attempt(task_id, state)
            except TimeoutError as exc:
                raise TaskTimeoutError(
                    f"Task '{task_id}' ran past its timeout_s={task.timeout_s:g} s."
                    " Raise Task(timeout_s=...) or give the task less to do.",
                    task_id=task_id,
                ) from exc

        def on_retry(attempt: int, error: BaseException, delay: float) -> None:
            self.emit(
                events.TaskRetrying,
                task_id=task_id,
                attempt=attempt,
                error=str(error),
                delay_s=delay,
            )

        policy = replace(TASK_RETRY, attempts=task.retries + 1)
        try:
            output = await retrying(one_attempt, policy, on_retry=on_retry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.emit(
                events.TaskFailed, task_id=task_id, error=str(exc), error_type=type(exc).__name__
            )
            return TaskResult(
                task_id=task_id,
                status="failed",
                error=str(exc),
                error_type=type(exc).__name__,
                exception=exc,
                attempts=state.number,
                started_at=started,
                finished_at=self.clock(),
                usage=state.usage,
            )
        output = replace(output, usage=state.usage)
        self.on_output(output, state.number)  # durable before the task counts as done
        self.emit(events.TaskFinished, task_id=task_id, output=output)
        waiting = self.hold(output)
        return TaskResult(
            task_id=task_id,
            status="waiting" if waiting else "succeeded",
            reason="waits for a review" if waiting else None,
            output=output,
            attempts=state.number,
            started_at=started,
            finished_at=self.clock(),
            usage=state.usage,
        )

    async def _stop(self, running: dict[str, asyncio.Task[TaskResult]], reason: str) -> None:
        """Cancel every running task and wait until each has really stopped."""
        for job in running.values():
            job.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for task_id, job in running.items():
            if not job.cancelled() and job.exception() is None:
                self.results[task_id] = job.result()  # it finished before the cancel landed
                continue
            self.results[task_id] = TaskResult(task_id=task_id, status="cancelled", reason=reason)
            self.emit(events.TaskCancelled, task_id=task_id, reason=reason)
        running.clear()

    def _skip_dependants(self, failed_id: str) -> None:
        graph = self.plan.graph
        descendants = self.plan.descendants(failed_id)
        for task_id in self.plan.order:
            if task_id not in descendants or task_id in self.results:
                continue
            if graph.has_edge(failed_id, task_id):
                reason = f"depends on '{failed_id}', which failed"
            else:
                via = next(d for d in graph.predecessors(task_id) if d in descendants)
                reason = f"depends on '{via}', which was skipped because '{failed_id}' failed"
            self._skip(task_id, reason)

    def _skip_rest(self, reason: str, status: Literal["skipped", "pending"] = "skipped") -> None:
        for task_id in self.plan.order:
            if task_id not in self.results:
                self._skip(task_id, reason, status)

    def _skip(
        self, task_id: str, reason: str, status: Literal["skipped", "pending"] = "skipped"
    ) -> None:
        self.results[task_id] = TaskResult(task_id=task_id, status=status, reason=reason)
        if status == "skipped":
            self.emit(events.TaskSkipped, task_id=task_id, reason=reason)


def _notify(queue: asyncio.Queue[str], task_id: str, _job: object) -> None:
    queue.put_nowait(task_id)


def check_settings(max_concurrency: object, on_failure: object) -> None:
    problems = []
    if (
        not isinstance(max_concurrency, int)
        or isinstance(max_concurrency, bool)
        or max_concurrency < 1
    ):
        problems.append(f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}.")
    if on_failure not in ("fail_fast", "continue"):
        problems.append(f"on_failure must be 'fail_fast' or 'continue', got {on_failure!r}.")
    if problems:
        raise ConfigError(problems)
