"""The scheduler: runs each task the moment its dependencies allow.

There are no levels or supersteps: a completion immediately releases the tasks it unblocks. A
task's ``join`` says what its dependencies must have done (all succeeded, any, a quorum, or all
ended), its ``when`` whether it runs at all, and a router's choice which of its routes run.
At most ``max_concurrency`` agents work at once (one slot each, shared with the loops, maps and
subcrews inside the run); when more are ready, the one with the longest estimated path to the
end of the graph goes first (critical-path priority). Maps (``crew.maps``) and loops
(``crew.loops``) are started here like any task and run their items and rounds through it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from crew import events
from crew.board import Board
from crew.errors import ConfigError
from crew.instances import Attempt, TaskAttempt, describe, failed, instance_index, run_instance
from crew.loops import run_loop
from crew.maps import run_map
from crew.plan import Plan
from crew.results import TaskOutput, TaskResult
from crew.retry import DEFAULT_TASK_RETRIES
from crew.slots import Slots
from crew.task import Task
from crew.usage import Usage

FailurePolicy = Literal["fail_fast", "continue"]


@dataclass
class Scheduler:
    """Runs the tasks of a plan; one instance per run (and per loop round inside it).

    Args:
        plan: the validated task graph.
        attempt: runs one attempt of one task.
        on_output: awaited with each task's result and its store index before the task counts
            as done (post its output on the board, commit it to the store): no dependant starts,
            and the run does not end, before it returns.
        emit: the run's event emitter.
        clock: wall-clock seconds, for result timestamps.
    """

    plan: Plan
    attempt: Attempt
    on_output: Callable[[TaskResult, int], Awaitable[None]]
    emit: events.Emitter
    clock: Callable[[], float]
    max_concurrency: int = 8
    on_failure: FailurePolicy = "fail_fast"
    results: dict[str, TaskResult] = field(default_factory=dict)
    """Starts with the tasks a resumed run already finished: they count as done, never run."""
    hold: Callable[[TaskOutput], bool] = lambda output: False
    """True when an output must wait for a person's review: its dependants do not start."""
    board: Board = field(default_factory=Board)
    """What conditions and maps read."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    stored: Mapping[tuple[str, int], TaskResult] = field(default_factory=dict)
    """Outputs a resumed run stored for loop rounds and map items, by (task id, index)."""
    plan_body: Callable[[Task], Plan] | None = None
    """Plans a loop body made at run time (``loop(tasks=callable)``)."""
    slots: Slots | None = None
    round: int = 0
    tolerated: set[str] = field(default_factory=set)
    """Failed tasks the run went on without (see ``_judge_failures``), known once the run (or,
    for a loop's body, the round) has ended."""
    undecided: set[str] = field(default_factory=set)
    """Failed tasks with a dependant that has not decided yet (it waits for a review)."""
    task_retries: int = DEFAULT_TASK_RETRIES
    """Retries of a task that sets none (``Task.retries`` is None): the crew's."""
    halted: Callable[[], str | None] = lambda: None
    """Why no new task may start (the run's budget is spent), or None. Once it says so, the
    scheduler dispatches nothing more: running tasks end, the rest stay ``pending``."""

    def __post_init__(self) -> None:
        check_settings(self.max_concurrency, self.on_failure)
        if self.slots is None:
            self.slots = Slots(self.max_concurrency)
        self._position = {t: i for i, t in enumerate(self.plan.order)}
        self._deps = {t: self.plan.dependencies(t) for t in self.plan.order}
        self._next: dict[str, list[str]] = {}
        """Each task's dependants, highest priority first (made when the task ends)."""

    async def run(self) -> dict[str, TaskResult]:
        """Run every task; return each task's result, in declaration order.

        If this coroutine is cancelled (Ctrl-C), running tasks are cancelled and awaited first, so
        the results hold every finished output and nothing half-done; then it re-raises.
        """
        plan = self.plan
        self._open = {t: set(self._deps[t]) for t in plan.order}
        self._ok: dict[str, set[str]] = {t: set() for t in plan.order}
        self._bad: dict[str, set[str]] = {t: set() for t in plan.order}
        """Dependencies that ended without succeeding (failed, skipped, cancelled)."""
        self._excluded: dict[str, str] = {}
        self._passed_over: set[str] = set()
        """Tasks skipped by their condition or a router: not for want of a dependency."""
        self._why: dict[str, str] = {}
        self.began: set[str] = set()
        """Tasks that started an attempt (or a map or loop that began): a stop cancels them."""
        self._running: dict[str, asyncio.Task[TaskResult]] = {}
        self._tickets: dict[str, asyncio.Future[None]] = {}
        self._finished: asyncio.Queue[str] = asyncio.Queue()
        self._stopping: str | None = None
        for task_id, result in list(self.results.items()):
            if task_id in self._open:
                self._resolve(task_id, result)
        for task_id in sorted(plan.order, key=self.priority):
            if not self._open[task_id] and not self._deps[task_id]:
                self._decide(task_id)
        try:
            while self._stopping is None and self._running:
                self._handle(await self._finished.get())
            if self._stopping is not None:
                await self._stop(self._stopping)
                self._skip_rest(self._stopping)
        except BaseException:  # cancelled (Ctrl-C) or a bug: never leave tasks running behind
            await self._stop("the run was cancelled")
            self._skip_rest("the run was cancelled before it started", status="pending")
            raise
        halted = self.halted()
        self._skip_rest(
            "the run's budget was spent" if halted else "it waits for a review of an earlier task",
            status="pending",
        )
        self._judge_failures()
        return {t: self.results[t] for t in plan.tasks}

    def _handle(self, first: str) -> None:
        """Handle ``first`` and every other task that ended meanwhile, the one with the
        longest path to the end first: the tasks each releases queue for a slot before the
        slots of the ended tasks are handed on, and the most urgent task starts first."""
        ended = [first]
        while not self._finished.empty():
            ended.append(self._finished.get_nowait())
        if len(ended) > 1:
            ended.sort(key=self.priority)
        handled = []
        for task_id in ended:
            if self._stopping is not None:
                break  # the rest stay running (done): the stop records their results
            self._resolve(task_id, self._running.pop(task_id).result())
            handled.append(task_id)
        for task_id in handled:
            self._free(task_id)

    def _judge_failures(self) -> None:
        """Sort the failures into ``tolerated`` and ``undecided``. The run went on without a
        failed task if it has dependants and each ran, or was skipped by its own condition or a
        router; not if one was skipped because its ``join`` could not be met (``all``, too few
        successes for ``any`` or ``quorum(n)``, none for ``best_effort``) or the run stopped.
        Undecided: a dependant has not decided yet (it waits for a review)."""
        for task_id in [t for t, r in self.results.items() if r.status == "failed"]:
            dependants = self.plan.dependants(task_id) if task_id in self.plan.tasks else []
            ended = [self.results.get(d) for d in dependants]
            if not dependants or any(  # without dependants, its output was the point
                r is not None and r.status == "skipped" and r.task_id not in self._passed_over
                for r in ended
            ):
                continue
            if all(r is not None and r.status != "pending" for r in ended):
                self.tolerated.add(task_id)
            else:
                self.undecided.add(task_id)

    def priority(self, task_id: str) -> tuple[float, int]:
        """The sort key of a task where it waits: the longest path to the end first."""
        return (-self.plan.remaining_s[task_id], self._position[task_id])

    def _resolve(self, task_id: str, result: TaskResult) -> None:
        """Record how a task ended and let its dependants decide whether to start."""
        self.results[task_id] = result
        if result.status in ("waiting", "pending"):
            return  # its dependants wait (for a review, or for the next run)
        if result.status == "succeeded" and self.plan.tasks[task_id].routes:
            self._route(task_id, result)
        if result.status == "failed":
            dependants = self._dependants(task_id)
            if not dependants or any(self.plan.tasks[d].join == "all" for d in dependants):
                self._stop_after(task_id)  # else its dependants may go on without it
        succeeded = result.status == "succeeded"
        for dependant in self._dependants(task_id):
            self._open[dependant].discard(task_id)
            (self._ok if succeeded else self._bad)[dependant].add(task_id)
            self._decide(dependant)

    def _dependants(self, task_id: str) -> list[str]:
        dependants = self._next.get(task_id)
        if dependants is None:
            dependants = sorted(self.plan.dependants(task_id), key=self.priority)
            self._next[task_id] = dependants
        return dependants

    def _stop_after(self, task_id: str) -> None:
        """A failure the run cannot go on without: a ``fail_fast`` run stops."""
        if self.on_failure == "fail_fast" and self._stopping is None:
            self._stopping = f"the run stopped after task '{task_id}' failed"

    def _cannot_join(self, task_id: str, reason: str) -> None:
        """Skip a task whose ``join`` can no longer be met; a failed dependency it could not do
        without stops a ``fail_fast`` run."""
        for dep in self._deps[task_id]:
            if self.results.get(dep) is not None and self.results[dep].status == "failed":
                self._stop_after(dep)
                break
        self._skip(task_id, reason)

    def _route(self, task_id: str, result: TaskResult) -> None:
        task = self.plan.tasks[task_id]
        data = result.output.data if result.output is not None else None
        chosen = getattr(data, "route", None)
        keep = set(task.route_targets.get(str(chosen), ()))
        skipped = tuple(
            t for ts in task.route_targets.values() for t in ts if t not in keep and t in self._open
        )
        for target in skipped:
            self._excluded[target] = f"router '{task_id}' chose '{chosen}'"
        self.emit(
            events.RouteChosen,
            task_id=task_id,
            route=str(chosen),
            reason=str(getattr(data, "reason", "")),
            skipped=tuple(dict.fromkeys(skipped)),
        )

    def _decide(self, task_id: str) -> None:
        """Start, skip, or leave waiting a task whose dependencies changed. It is called once
        per dependency that ends, so it counts, and lists the dependencies only once it acts."""
        if task_id in self.results or task_id in self._running:
            return
        if task_id in self._excluded:
            self._why[task_id] = self._excluded[task_id]
            self._passed_over.add(task_id)
            self._skip(task_id, self._excluded[task_id])
            return
        task = self.plan.tasks[task_id]
        deps = self._deps[task_id]
        ok, still_open, bad = self._ok[task_id], self._open[task_id], self._bad[task_id]
        need = task.quorum
        if not deps:  # none here (a loop's body task may depend only on tasks before the loop)
            self._start(task_id)
        elif task.join == "all" and bad:
            dep = next(d for d in deps if d in bad)
            self._why[task_id] = self._why.get(dep, f"'{dep}' failed")
            self._skip(task_id, self._skipped_because(dep))
        elif task.join == "all" or task.join == "best_effort":
            if still_open:
                return
            if not ok:
                self._cannot_join(task_id, "none of its dependencies succeeded")
            else:
                self._start(task_id, missing=tuple(d for d in deps if d in bad))
        elif need is not None and len(ok) >= need:
            self._start(task_id, missing=tuple(d for d in deps if d not in ok))
        elif need is not None and len(ok) + len(still_open) < need:
            self._cannot_join(task_id, f"fewer than {need} of its dependencies succeeded")

    def _skipped_because(self, dep: str) -> str:
        status = self.results[dep].status
        if status == "failed":
            return f"depends on '{dep}', which failed"
        root = self._why.get(dep)
        return f"depends on '{dep}', which was {status}" + (f" because {root}" if root else "")

    def _start(self, task_id: str, *, missing: tuple[str, ...] = ()) -> None:
        if self._stopping is not None or self.halted():
            return  # the run is stopping: nothing new starts (the rest is skipped or pending)
        task = self.plan.tasks[task_id]
        try:
            runs = self.holds(task_id, "when")
        except Exception as exc:  # a condition that cannot be evaluated fails its task
            self._fail_now(task_id, exc)
            return
        if not runs:
            self._why[task_id] = f"the condition of '{task_id}' is false"
            self._passed_over.add(task_id)
            self._skip(task_id, f"its condition is false: {describe(task.when)}")
            return
        if task.kind == "loop":
            job = run_loop(self, task_id)
        elif task.kind == "map":
            job = run_map(self, task_id, missing)
        else:
            earlier = tuple(self.plan.tasks) if self.round > 1 else ()  # the last round's
            state = TaskAttempt(missing=missing, round=self.round, context=earlier)
            if task.kind == "agent":
                assert self.slots is not None
                self._tickets[task_id] = self.slots.reserve(self.priority(task_id))
            job = self.run_task(task_id, state, ticket=self._tickets.get(task_id))
        running = asyncio.create_task(job, name=f"crew-task-{task_id}")
        running.add_done_callback(functools.partial(_notify, self._finished, task_id))
        self._running[task_id] = running

    def holds(self, task_id: str, name: str) -> bool:
        condition = getattr(self.plan.tasks[task_id], name)
        if condition is None:
            return True
        if callable(condition):
            return bool(condition(self.board))
        return self.plan.expressions[(task_id, name)].holds(self.scope())

    def announce(self, task_id: str, agent: str) -> None:
        """A map or loop began: say so; from now on, a stop cancels it instead of skipping it."""
        self.emit(events.TaskStarted, task_id=task_id, agent=agent, attempt=1)
        self.began.add(task_id)

    async def run_round(
        self, body: Plan, stored: dict[str, TaskResult], number: int
    ) -> tuple[dict[str, TaskResult], set[str]]:
        """Round ``number`` of a loop's body, as a scheduler of its own sharing the slots: the
        results (recorded with this run's too) and the failures its dependants tolerated."""
        inner = replace(
            self, plan=body, results=dict(stored), round=number, tolerated=set(), undecided=set()
        )
        results = await inner.run()
        self.results.update(results)
        self.tolerated |= inner.tolerated  # the run's status reads the body's failures too
        return results, inner.tolerated

    def scope(self) -> Mapping[str, Any]:
        """What expressions read: ``inputs`` and the board's latest entries by task id."""
        return _Scope(self.board, self.inputs)

    def _fail_now(self, task_id: str, exc: Exception) -> None:
        self.emit(events.TaskFailed, task_id=task_id, error=str(exc), error_type=type(exc).__name__)
        self._resolve(task_id, failed(task_id, exc, 0, None, self.clock(), Usage()))

    def _free(self, task_id: str) -> None:
        ticket = self._tickets.pop(task_id, None)
        if ticket is not None:
            assert self.slots is not None
            self.slots.release(ticket)

    async def run_task(
        self,
        task_id: str,
        state: TaskAttempt,
        *,
        announce: bool = True,
        ticket: asyncio.Future[None] | None = None,
    ) -> TaskResult:
        """All attempts of one task (or of one map item): ``crew.instances.run_instance``."""
        return await run_instance(self, task_id, state, announce=announce, ticket=ticket)

    async def finish(
        self,
        task_id: str,
        output: TaskOutput,
        started: float,
        *,
        by_agent: Mapping[str, Usage],
        reason: str | None = None,
    ) -> TaskResult:
        """Store the output of a map or loop and say it finished (its instances stored theirs);
        ``by_agent``: its usage by agent role; ``reason``: a warning (a loop out of rounds)."""
        result = TaskResult(
            task_id=task_id, status="succeeded", output=output, attempts=1, reason=reason,
            started_at=started, finished_at=self.clock(), usage=output.usage,
            usage_by_agent=dict(by_agent),
        )  # fmt: skip
        await self.on_output(result, instance_index(self.round))
        self.emit(events.TaskFinished, task_id=task_id, output=output)
        return result

    async def _stop(self, reason: str) -> None:
        """Cancel every running task and wait until each has really stopped."""
        running = dict(self._running)
        for job in running.values():
            job.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        self._running.clear()
        for task_id in list(self._tickets):
            self._free(task_id)
        for task_id, job in running.items():
            if not job.cancelled() and job.exception() is None:
                self.results[task_id] = job.result()  # it finished before the cancel landed
            elif task_id not in self.began:
                self._skip(task_id, reason)
            else:
                self.results[task_id] = TaskResult(
                    task_id=task_id, status="cancelled", reason=reason
                )
                self.emit(events.TaskCancelled, task_id=task_id, reason=reason)

    def _skip_rest(self, reason: str, status: Literal["skipped", "pending"] = "skipped") -> None:
        for task_id in self.plan.order:
            if task_id not in self.results:
                self._skip(task_id, reason, status, resolve=False)

    def _skip(
        self,
        task_id: str,
        reason: str,
        status: Literal["skipped", "pending"] = "skipped",
        *,
        resolve: bool = True,
    ) -> None:
        result = TaskResult(task_id=task_id, status=status, reason=reason)
        if status == "skipped":
            self.emit(events.TaskSkipped, task_id=task_id, reason=reason)
        if resolve:
            self._resolve(task_id, result)
        else:
            self.results[task_id] = result


class _Scope(Mapping[str, Any]):
    """What expressions read: ``inputs``, and every other name as a task's board entry."""

    def __init__(self, board: Board, inputs: Mapping[str, Any]) -> None:
        self._board = board
        self._inputs = inputs

    def __getitem__(self, name: str) -> Any:
        return self._inputs if name == "inputs" else self._board.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(["inputs", *self._board.keys()])

    def __len__(self) -> int:
        return 1 + len(self._board)


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
