"""One run of a crew: its board, checkpoint, models and scheduler, wired together.

``Crew.arun`` checks the crew and makes a ``Run`` from its ``RunSettings``; the run executes the
plan and returns a ``CrewResult``. What a task attempt needs (the agent, a map's item, a loop's
earlier round, a subcrew) is decided here; when tasks may start is the scheduler's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crew import events, hooks
from crew.attempt import Attempt, TaskRun
from crew.board import Board, BoardEntry, plain
from crew.budget import Budgeted, Estimate, Ledger
from crew.checkpoint import Checkpoint
from crew.errors import BudgetExceededError, ConfigError, TaskError
from crew.instances import TaskAttempt, by_agent
from crew.model_choice import as_chat_model
from crew.plan import Plan, build_plan
from crew.replay import Exchanges
from crew.results import CrewResult, RunStatus, TaskOutput, TaskResult
from crew.retry import DEFAULT_CALL_ATTEMPTS, DEFAULT_TASK_RETRIES
from crew.scheduler import FailurePolicy, Scheduler
from crew.slots import Slots
from crew.store import Store
from crew.task import Task
from crew.usage import RunUsage, Usage

if TYPE_CHECKING:
    from crew.agent import Agent
    from crew.chat import ChatModel, ChatRequest
    from crew.tracing import Tracing


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What a run needs of its crew besides the plan (see ``crew.Crew`` for each)."""

    name: str
    source: str = ""
    max_concurrency: int = 8
    on_failure: FailurePolicy = "fail_fast"
    stream: bool = False
    review_hook: hooks.ReviewHook | None = None
    agents: tuple[Agent, ...] = ()
    """Every agent of the crew, for delegation."""
    coworkers_only: tuple[Agent, ...] = ()
    """Agents given besides the tasks' (they only answer delegations and plan loop bodies)."""
    call_attempts: int = DEFAULT_CALL_ATTEMPTS
    """Tries in all per model call, for models without a ``RetryPolicy`` of their own."""
    task_retries: int = DEFAULT_TASK_RETRIES
    """Further attempts at a failed task, for tasks that set no ``retries``."""
    tracing: Tracing | None = None
    """OpenTelemetry spans of the run, or None (see ``crew.tracing``)."""


class Run:
    """One execution (or resumption) of a crew's plan.

    Args:
        settings: the crew's name, concurrency, failure policy, streaming, hook and agents.
        plan: the crew's checked plan for ``inputs``.
        default: the model of agents that name none.
        replay, replay_strict: answer recorded requests of that run from the store.
        slots: shared with a parent run (a subcrew); else the run's own.
        ledger: the run's budget account (a subcrew shares its parent's), or None for no budget.
    """

    def __init__(
        self,
        settings: RunSettings,
        plan: Plan,
        inputs: dict[str, Any],
        *,
        store: Store,
        run_id: str,
        clock: Callable[[], float],
        default: ChatModel | None,
        on_event: events.EventSink | None = None,
        replay: str | None = None,
        replay_strict: bool = False,
        slots: Slots | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings, self.plan, self.inputs, self.store = settings, plan, inputs, store
        self.clock, self.default, self.replay = clock, default, replay
        self.tasks = dict(plan.all_tasks)
        self._task_ids = frozenset(self.tasks)
        """The board keys an agent may not post under (its tasks' outputs)."""
        """Every task by id; a loop body made at run time adds its tasks when it starts."""
        self.bus = events.EventBus()
        if on_event is not None:
            self.bus.subscribe(on_event)
        content = settings.tracing is not None and settings.tracing.capture_content
        self.emit = events.Emitter(self.bus, run_id, clock, content=content)
        self.checkpoint = Checkpoint(store, run_id)
        self.board = Board(clock=clock, on_post=self._posted)
        self.coworkers = {agent.role: agent for agent in settings.agents}
        self.exchanges = Exchanges(
            store, run_id, replay=replay, strict=replay_strict, record=self.checkpoint.on_exchange
        )
        self.rejected: dict[str, str] = {}
        self.notices: set[asyncio.Task[None]] = set()
        """Review hooks still running (off the loop); the run ends once they are done."""
        self.scheduler = Scheduler(
            plan,
            self._attempt,
            self._on_output,
            self.emit,
            clock,
            max_concurrency=settings.max_concurrency,
            on_failure=settings.on_failure,
            hold=self._hold,
            board=self.board,
            inputs=inputs,
            plan_body=self._plan_body,
            slots=slots or Slots(settings.max_concurrency),
            task_retries=settings.task_retries,
            halted=self._halted,
        )

    async def execute(
        self,
        *,
        resume: bool,
        parent_run_id: str | None = None,
        batch: tuple[str, int] | None = None,
    ) -> CrewResult:
        """Run (or, with ``resume``, continue) the plan and record how it ended; ``batch``: the
        batch id and line a new run is stored under."""
        checkpoint, scheduler, emit = self.checkpoint, self.scheduler, self.emit
        restored: Mapping[str, TaskResult] = {}
        if resume:
            restored, self.rejected, stored = await checkpoint.resume(self.plan, self.board)
            scheduler.results.update(restored)
            scheduler.stored = stored
        else:
            await checkpoint.begin(
                crew=self.settings.name, inputs=self.inputs, plan=self.plan,
                source=self.settings.source, parent=parent_run_id, batch=batch,
            )  # fmt: skip
        self.bus.subscribe(checkpoint.on_event)
        checkpoint.outbox.on_lost = functools.partial(self.bus.failed, checkpoint.on_event)
        if self.settings.tracing is not None and parent_run_id is None:  # a subcrew: ours
            from crew.tracing import OpenTelemetrySink

            self.bus.subscribe(OpenTelemetrySink(self.settings.tracing))
        started = self.clock()
        lease = asyncio.create_task(checkpoint.keep_lease())
        lease.add_done_callback(functools.partial(_stop_if_lease_lost, asyncio.current_task()))
        emit(
            events.RunStarted,
            crew=self.settings.name,
            task_ids=tuple(self.plan.tasks),
            inputs=self.inputs,
        )
        status: RunStatus = "cancelled"
        try:
            await scheduler.run()
            await asyncio.gather(*self.notices)
            status = _status(scheduler, self._halted() is not None)
        finally:
            for notice in self.notices:
                notice.cancel()  # the run was cancelled: a command still runs to its timeout
            ours = {t: scheduler.results[t] for t in self.tasks if t in scheduler.results}
            results = {  # attempts counted across resumes, as the store numbers them
                t: r if t in restored or not r.attempts else _numbered(r, checkpoint)
                for t, r in ours.items()
            }
            result = CrewResult(
                run_id=emit.run_id, crew=self.settings.name, status=status, tasks=results,
                board=self.board, usage=_run_usage(self.plan.tasks, self.tasks, results),
                inputs=self.inputs,
                started_at=started, finished_at=self.clock(),
            )  # fmt: skip
            lease.cancel()
            limits = dataclasses.asdict(self.ledger.budget) if self.ledger is not None else None
            try:
                await checkpoint.finish(status, ours, result.usage, limits)
            except BaseException:  # the store failed: its error is raised, the events kept
                await checkpoint.outbox.last_try()
                raise
            emit(events.RunFinished, status=status, result=result)
            await checkpoint.flush()  # every event is in the store before the run returns
        return result

    def model_for(self, agent: Agent) -> ChatModel:
        """The model ``agent`` runs on, recorded (and answered from the store when replaying)."""
        model = as_chat_model(agent.llm) if agent.llm is not None else self.default
        if model is None:
            raise ConfigError(f"Agent '{agent.role}' has no model; pass Agent(llm=...).")
        if self.ledger is None:
            return self.exchanges.wrap(model)
        # Only what is sent is budgeted (a replayed answer costs nothing); the request is
        # hashed for replay with the model itself, budget or not.
        return self.exchanges.wrap(model, Budgeted(model, self.ledger, self._exceeded).complete)

    def _halted(self) -> str | None:
        return self.ledger.exceeded if self.ledger is not None else None

    def _exceeded(self, request: ChatRequest, model: str, estimate: Estimate) -> None:
        ledger = self.ledger
        assert ledger is not None
        self.emit(
            events.BudgetExceeded, task_id=request.task_id, model=model,
            spent_usd=ledger.spent_usd + ledger.reserved_usd, reserve_usd=estimate.cost_usd,
            max_cost_usd=ledger.budget.max_cost_usd,
            spent_tokens=ledger.spent_tokens + ledger.reserved_tokens,
            reserve_tokens=estimate.tokens, max_tokens=ledger.budget.max_tokens,
        )  # fmt: skip

    async def _attempt(self, task_id: str, state: TaskAttempt) -> TaskOutput:
        task = self.tasks[task_id]
        if task.crew is not None:
            return await self._run_subcrew(task, state)
        agent = task.agent
        assert agent is not None  # the planner checked
        task, inputs = _instance(task, state, self.inputs)
        run = TaskRun(
            coworkers=self.coworkers,
            model_for=self.model_for,
            llm=self.model_for(agent),
            board=self.board,
            inputs=inputs,
            emit=self.emit,
            on_usage=state.add_usage,
            reserved=self._task_ids,
            stream=self.settings.stream,
            feedback=self.rejected.get(task_id),
            call_attempts=self.settings.call_attempts,
            tool_calls=self.checkpoint.tool_calls(task_id, state.number, state.index),
        )
        answer = await Attempt(agent).execute(task, run)
        return TaskOutput(
            task_id=task_id, agent=agent.role, text=answer.text, data=answer.data,
            model=answer.model,
        )  # fmt: skip

    async def _on_output(self, result: TaskResult, index: int) -> None:
        output = result.output
        assert output is not None
        if output.item is None:  # a map's items reach the board together, as its output
            self.board.post(output.task_id, output.text, author=output.agent, data=output.data)
        await self.checkpoint.on_output(result, index)

    def _posted(self, entry: BoardEntry) -> None:
        self.checkpoint.on_board_post(entry)
        self.emit(
            events.BoardPosted,
            key=entry.key,
            version=entry.version,
            author=entry.author,
            kind=entry.kind,
        )

    def _hold(self, output: TaskOutput) -> bool:
        if not self.tasks[output.task_id].human_review:
            return False
        self.checkpoint.request_review(output)
        notice = asyncio.create_task(
            hooks.announce_review(
                self.settings.review_hook, self.emit, crew=self.settings.name, output=output
            ),
            name=f"crew-review-hook-{output.task_id}",
        )
        self.notices.add(notice)
        notice.add_done_callback(self.notices.discard)
        return True

    def _plan_body(self, task: Task) -> Plan:
        """Plan a loop body made at run time (the manager's tasks, say)."""
        body = task.group(self.board) if callable(task.group) else task.group
        made = build_plan(
            body,
            self.inputs,
            default_llm=self.default,
            agents=self.settings.coworkers_only,
            outer=self.tasks,
        )
        self.tasks.update(made.all_tasks)
        self._task_ids = frozenset(self.tasks)
        return made

    async def _run_subcrew(self, task: Task, state: TaskAttempt) -> TaskOutput:
        """Run ``task.crew`` as a child run of this one: its inputs mapped from the board, its
        events forwarded (task ids prefixed ``task/``), resumed where a crash left it."""
        from crew.expr import parse

        assert task.crew is not None
        scope = self.scheduler.scope()
        inputs = {
            name: value(self.board) if callable(value) else parse(value).evaluate(scope)
            for name, value in task.inputs.items()
        }
        inputs = {k: v.text if isinstance(v, BoardEntry) else plain(v) for k, v in inputs.items()}
        suffix = f".r{state.round}" if state.round else ""
        run_id = f"{self.emit.run_id}.{task.id}{suffix}"
        replayed = f"{self.replay}.{task.id}{suffix}" if self.replay else None
        model = task.crew.llm or self.default  # a subcrew without a model uses ours
        # Its events come here: it is traced as part of this run, if this run is.
        tracing = self.settings.tracing or False
        child = task.crew.replace(store=self.store, clock=self.clock, llm=model, tracing=tracing)
        read = self.checkpoint.writer.call  # on the store's thread, not the event loop
        exists = await read(self.store.get_run, run_id) is not None
        if replayed is not None and await read(self.store.get_run, replayed) is None:
            replayed = None
        result = await child.arun(
            None if exists else inputs,
            run_id=None if exists else run_id,
            resume=run_id if exists else None,
            on_event=functools.partial(_forward, self.bus, task.id),
            replay=replayed,
            slots=self.scheduler.slots,
            parent_run_id=self.emit.run_id,
            ledger=self.ledger,
        )
        for role, usage in result.usage.by_agent.items():  # the subcrew's agents did the work
            state.add_usage(usage, role)
        output = result.output
        if result.status == "budget_exceeded":  # this task waits for a resume, as its calls do
            raise BudgetExceededError(
                f"Task '{task.id}': subcrew '{child.name}' (run {run_id}) stopped: the run's"
                " budget was spent."
            )
        if result.status != "succeeded" or output is None:
            failed = [f"'{r.task_id}': {r.error}" for r in result.tasks.values() if r.error]
            raise TaskError(
                f"Task '{task.id}': subcrew '{child.name}' (run {run_id}) {result.status}: "
                + ("; ".join(failed) or "it has no final output"),
                task_id=task.id,
            )
        return dataclasses.replace(output, task_id=task.id, usage=Usage())


def _forward(bus: events.EventBus, parent_task: str, event: events.Event) -> None:
    """A subcrew's event, on its parent's bus, its task id under the parent task's."""
    if isinstance(event, events.RunStarted | events.RunFinished):
        return
    if hasattr(event, "task_id"):
        event = dataclasses.replace(event, task_id=f"{parent_task}/{event.task_id}")  # type: ignore[call-arg]
    bus.emit(event)


def _instance(
    task: Task, state: TaskAttempt, inputs: dict[str, Any]
) -> tuple[Task, dict[str, Any]]:
    """The task as this attempt does it: one map item, a later loop round, or with some
    dependencies missing (``join``); and the inputs its placeholders are filled from."""
    description, depends_on = task.description, task.dependency_ids
    if state.item_index is not None:
        inputs = {**inputs, "item": state.item, "item_index": state.item_index}
        if "{item}" not in description:
            description += "\n\n## Item\n{item}"
    if state.missing:
        listed = ", ".join(f"'{t}'" for t in state.missing)
        description += (
            f"\n\nNote: the earlier tasks {listed} did not succeed; their outputs are missing."
            " Do the best you can with what there is."
        )
    extra = tuple(t for t in state.context if t not in depends_on)
    if description == task.description and not extra:
        return task, inputs
    changed = dataclasses.replace(task, description=description, depends_on=(*depends_on, *extra))
    return changed, inputs


def _status(scheduler: Scheduler, budget_spent: bool = False) -> RunStatus:
    """failed: a task was cancelled, or failed and the run did not go on without it (a
    dependant needed it, or it has none: see ``Scheduler.tolerated``); budget_exceeded: else,
    when a call's reservation failed and tasks are left to do; waiting: a task waits for a
    review (so may a failure's dependant); else succeeded."""
    results = scheduler.results.values()
    broken = {
        r.task_id for r in results if r.status == "failed" and r.task_id not in scheduler.tolerated
    }
    if broken - scheduler.undecided or any(r.status == "cancelled" for r in results):
        return "failed"
    if budget_spent and any(r.status == "pending" for r in results):
        return "budget_exceeded"
    waiting = broken or any(r.status == "waiting" for r in results)
    return "waiting" if waiting else "succeeded"


def _stop_if_lease_lost(run: asyncio.Task[Any] | None, lease: asyncio.Task[None]) -> None:
    """Another process took the run's lease over (it thought this one dead): stop here."""
    if run is not None and not lease.cancelled() and lease.exception() is not None:
        run.cancel()


def _numbered(result: TaskResult, checkpoint: Checkpoint) -> TaskResult:
    """``result`` with its attempts counted across resumes, as the store numbers them (a task
    that failed once, then succeeded after a resume, made 2 attempts)."""
    attempts = checkpoint.attempt_number(result.task_id, result.attempts)
    return dataclasses.replace(result, attempts=attempts)


def _run_usage(
    top: Mapping[str, Task], tasks: Mapping[str, Task], results: Mapping[str, TaskResult]
) -> RunUsage:
    """Usage by task, and in total and by agent over the crew's own tasks: a loop's usage sums
    every round of its body (``by_task`` keeps a body task's last round), and each task's is
    split among the agents that made the calls (a coworker's delegated work is the coworker's)."""
    own = [(results[t], _role(tasks[t])) for t in top if t in results]
    return RunUsage(
        total=Usage.sum(result.usage for result, _ in own),
        by_task={t: r.usage for t, r in results.items()},
        by_agent=by_agent(own),
    )


def _role(task: Task) -> str:
    return task.agent.role if task.agent is not None else ""
