"""A crew: tasks and the agents that do them, run as one graph."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, cast

from crew import events, hooks
from crew.agent import Agent, TaskRun
from crew.board import Board, BoardEntry
from crew.checkpoint import Checkpoint, fork_run, open_run
from crew.errors import ConfigError, RunFailedError, TaskError
from crew.llm import ChatModel, as_chat_model, default_llm, prepare
from crew.plan import Plan, build_plan
from crew.process import Process, hierarchical_tasks
from crew.replay import Exchanges
from crew.scheduler import FailurePolicy, Scheduler, Slots, TaskAttempt, check_settings
from crew.store import Store, open_store
from crew.task import Task, TaskOutput, TaskResult
from crew.usage import RunUsage, Usage

RunStatus = Literal["succeeded", "failed", "cancelled", "waiting"]
"""waiting: every task that could run has; the rest wait for a person's review."""


@dataclass(frozen=True, kw_only=True)
class CrewResult:
    """How a run ended: every task's result, the board, and what it cost."""

    run_id: str
    crew: str
    status: RunStatus
    tasks: dict[str, TaskResult]
    """Every task of the crew, in declaration order, with its status."""
    board: Board
    usage: RunUsage
    inputs: dict[str, Any]
    started_at: float
    finished_at: float

    @property
    def outputs(self) -> dict[str, TaskOutput]:
        """The outputs of the tasks that succeeded."""
        return {t: r.output for t, r in self.tasks.items() if r.output is not None}

    @property
    def output(self) -> TaskOutput | None:
        """The crew's final output: that of the last declared task, if it succeeded."""
        return next(reversed(self.tasks.values())).output if self.tasks else None

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at

    def raise_for_status(self) -> CrewResult:
        """Return self if every task succeeded, else raise ``RunFailedError`` naming failures."""
        if self.status == "succeeded":
            return self
        failed = [r for r in self.tasks.values() if r.status == "failed"]
        reasons = "; ".join(f"'{r.task_id}': {r.error}" for r in failed) or self.status
        raise RunFailedError(f"Run {self.run_id} {self.status}: {reasons}", result=self)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-serialisable data."""
        return {
            "run_id": self.run_id,
            "crew": self.crew,
            "status": self.status,
            "inputs": self.inputs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "tasks": {t: r.to_dict() for t, r in self.tasks.items()},
            "board": self.board.snapshot(),
            "usage": self.usage.to_dict(),
        }


class Crew:
    """Tasks and their agents, run as a dependency graph.

    Args:
        tasks: the tasks, in the order that reads best; the last one's output is the crew's.
        name: shown in results and events.
        llm: the model of agents that name none (else ``CREW_MODEL``).
        max_concurrency: tasks (and so model calls) in flight at most.
        on_failure: ``fail_fast`` cancels the run at the first failed task; ``continue`` runs
            every branch that does not depend on it.
        stream: stream model answers and emit ``TokenDelta`` events as text arrives.
        store: where runs are checkpointed: a ``Store``, a store URL, or None for ``CREW_STORE``,
            else SQLite at ``.crew/crew.db`` (see ``crew.store.open_store``).
        source: where the crew was loaded from, kept with each run so ``crew resume`` can
            load it again.
        process: ``graph`` runs ``tasks`` as their dependencies allow; ``hierarchical`` has
            ``manager`` plan the tasks over ``agents`` to reach ``goal`` (see ``crew.process``).
        review_hook: told when an output waits for a review: a webhook URL, a shell command or
            a function (see ``crew.hooks``); None for ``CREW_REVIEW_HOOK``, if set.
        clock: wall-clock seconds; id_factory: new run ids. Parameters so tests can fix them.
    """

    def __init__(
        self,
        tasks: Iterable[Task],
        *,
        agents: Iterable[Agent] = (),
        name: str = "crew",
        llm: str | ChatModel | None = None,
        max_concurrency: int = 8,
        on_failure: FailurePolicy = "fail_fast",
        stream: bool = False,
        store: Store | str | None = None,
        source: str = "",
        review_hook: hooks.ReviewHook | None = None,
        process: Process = "graph",
        manager: Agent | None = None,
        goal: str = "",
        clock: Callable[[], float] = time.time,
        id_factory: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self.tasks = tuple(tasks)
        self.process, self.manager, self.goal = process, manager, goal
        if process not in ("graph", "hierarchical"):
            raise ConfigError(f"process must be 'graph' or 'hierarchical', got {process!r}.")
        if process == "hierarchical":
            if self.tasks:
                raise ConfigError(
                    "A hierarchical crew's manager plans the tasks: pass goal='...' and"
                    " agents=[...], not tasks (or use process='graph')."
                )
            self.tasks = tuple(hierarchical_tasks(cast(Agent, manager), tuple(agents), goal))
        wrong = [type(t).__name__ for t in self.tasks if not isinstance(t, Task)]
        if wrong:
            raise ConfigError(f"Crew(tasks=...) takes Task objects, got {', '.join(wrong)}.")
        check_settings(max_concurrency, on_failure)
        self.name = name
        self._extra_agents = tuple(agents)
        self.llm = as_chat_model(llm) if llm is not None else None
        self.max_concurrency = max_concurrency
        self.stream = stream
        self.source = source
        self.review_hook = review_hook
        self._store = store
        self.on_failure: FailurePolicy = on_failure
        self._clock = clock
        self._id_factory = id_factory

    @property
    def agents(self) -> list[Agent]:
        """The agents of the tasks, each once, in order of first use, then the other ``agents``
        given (coworkers that only answer delegations)."""
        found = {id(t.agent): t.agent for t in _every_task(self.tasks) if t.agent is not None}
        found.update((id(a), a) for a in self._extra_agents)
        return list(found.values())

    def replace(self, **changes: Any) -> Crew:
        """A copy with some constructor arguments changed: ``crew.replace(max_concurrency=2)``."""
        arguments: dict[str, Any] = {
            "tasks": self.tasks, "agents": self._extra_agents, "name": self.name,
            "llm": self.llm, "max_concurrency": self.max_concurrency,
            "on_failure": self.on_failure, "stream": self.stream, "clock": self._clock,
            "id_factory": self._id_factory, "store": self._store, "source": self.source,
            "review_hook": self.review_hook, "process": self.process, "manager": self.manager,
            "goal": self.goal,
        }  # fmt: skip
        if self.process == "hierarchical":
            arguments["tasks"] = ()  # the manager's tasks are made again
        arguments.update(changes)
        return Crew(arguments.pop("tasks"), **arguments)

    def with_llm(self, llm: str | ChatModel) -> Crew:
        """The same crew with every agent on ``llm`` (what ``crew run --llm`` does)."""
        model = as_chat_model(llm)
        agents = {id(a): dataclasses.replace(a, llm=model) for a in self.agents}
        if self.manager is not None:
            manager = dataclasses.replace(self.manager, llm=model)
            agents[id(self.manager)] = manager
            return self.replace(
                agents=[agents[id(a)] for a in self._extra_agents], llm=model, manager=manager
            )
        tasks = _on_model(self.tasks, agents, model)
        return self.replace(
            tasks=tasks, agents=[agents[id(a)] for a in self._extra_agents], llm=model
        )

    def plan(self, inputs: Mapping[str, Any] | None = None) -> Plan:
        """Validate the crew with ``inputs`` and return its plan, without calling any model."""
        return build_plan(
            self.tasks, inputs, default_llm=self._default_llm(), agents=self._extra_agents
        )

    def run(self, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> CrewResult:
        """Run the crew and wait for the result (the sync form of ``arun``)."""
        if not _loop_running():
            return asyncio.run(self.arun(inputs, **kwargs))
        # Called from async code (a notebook): run on a fresh loop in a worker thread.
        with ThreadPoolExecutor(1, thread_name_prefix="crew-run") as pool:
            return pool.submit(asyncio.run, self.arun(inputs, **kwargs)).result()

    async def arun(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        resume: str | None = None,
        on_event: events.EventSink | None = None,
        replay: str | None = None,
        replay_strict: bool = False,
        slots: Slots | None = None,
        parent_run_id: str | None = None,
    ) -> CrewResult:
        """Run the crew. Raises ``ConfigError`` before any model call if the crew is invalid;
        a task failure does not raise: it is in the result (see ``raise_for_status``).

        ``resume=RUN_ID`` continues a crashed, interrupted or failed run from the store: its
        finished tasks are not called again (their outputs and the board come back), the
        others run. Its stored inputs are used unless ``inputs`` are given.

        Every model exchange is recorded in the store. ``replay=RUN_ID`` answers each request
        that run recorded from the store, at no cost and without a model call; the others go to
        the provider, or fail with ``ReplayMissError`` if ``replay_strict`` (see ``crew.replay``).

        ``slots`` and ``parent_run_id`` are for a subcrew's run: it shares its parent's limit on
        agents at work and is stored as the parent's child.
        """
        if resume is not None and inputs is None:
            inputs = open_run(self.store, resume)
        plan = self.plan(inputs)  # first: it also rejects inputs that are not a mapping
        inputs = dict(inputs or {})
        store = self.store  # opened only for a valid crew: a bad one leaves no file behind
        default = self._default_llm()
        models = {id(m): m for a in self.agents for m in (a.llm or default,) if m is not None}
        await asyncio.to_thread(prepare, models.values())
        bus = events.EventBus()
        if on_event is not None:
            bus.subscribe(on_event)
        emit = events.Emitter(bus, resume or run_id or self._id_factory(), self._clock)
        checkpoint = Checkpoint(store, emit.run_id)

        def posted(entry: BoardEntry) -> None:
            checkpoint.on_board_post(entry)
            emit(
                events.BoardPosted,
                key=entry.key,
                version=entry.version,
                author=entry.author,
                kind=entry.kind,
            )

        board = Board(clock=self._clock, on_post=posted)
        reserved = frozenset(plan.tasks)
        coworkers = {agent.role: agent for agent in self.agents}

        exchanges = Exchanges(store, emit.run_id, replay=replay, strict=replay_strict)

        def model_for(agent: Agent) -> ChatModel:
            model = cast(ChatModel | None, agent.llm) or default  # Agent made it a ChatModel
            if model is None:
                raise ConfigError(f"Agent '{agent.role}' has no model; pass Agent(llm=...).")
            return exchanges.wrap(model)  # recorded; answered from the store when replaying

        async def attempt(task_id: str, state: TaskAttempt) -> TaskOutput:
            task = tasks[task_id]
            if task.crew is not None:
                return await self._run_subcrew(task, state, emit, scheduler)
            agent = task.agent
            assert agent is not None  # the planner checked
            llm = model_for(agent)  # the planner checked that there is one
            task, task_inputs = _instance(task, state, inputs)
            run = TaskRun(
                coworkers=coworkers,
                model_for=model_for,
                llm=llm,
                board=board,
                inputs=task_inputs,
                emit=emit,
                on_usage=state.add_usage,
                reserved=reserved,
                stream=self.stream,
                feedback=rejected.get(task_id),
            )
            answer = await agent.execute(task, run)
            return TaskOutput(
                task_id=task_id,
                agent=agent.role,
                text=answer.text,
                data=answer.data,
                model=answer.model,
            )

        def on_output(output: TaskOutput, attempt: int, index: int) -> None:
            if output.item is None:  # a map's items reach the board together, as its output
                board.post(output.task_id, output.text, author=output.agent, data=output.data)
            checkpoint.on_output(output, attempt, index)

        def plan_body(task: Task) -> Plan:
            body = task.group(board) if callable(task.group) else task.group
            made = build_plan(
                body, inputs, default_llm=default, agents=self._extra_agents, outer=tasks
            )
            tasks.update(made.all_tasks)
            return made

        tasks = dict(plan.all_tasks)
        if resume is not None:
            open_run(store, resume)
            restored, rejected, stored = checkpoint.resume(plan, board)
        else:
            checkpoint.begin(
                crew=self.name, inputs=inputs, plan=plan, source=self.source, parent=parent_run_id
            )
            restored, rejected, stored = {}, {}, {}

        def hold(output: TaskOutput) -> bool:
            if not tasks[output.task_id].human_review:
                return False
            checkpoint.request_review(output)
            hooks.announce_review(self.review_hook, emit, crew=self.name, output=output)
            return True

        bus.subscribe(checkpoint.on_event)
        scheduler = Scheduler(
            plan,
            attempt,
            on_output,
            emit,
            self._clock,
            max_concurrency=self.max_concurrency,
            on_failure=self.on_failure,
            results=restored,
            hold=hold,
            board=board,
            inputs=inputs,
            stored=stored,
            plan_body=plan_body,
            slots=slots or Slots(self.max_concurrency),
        )
        started = self._clock()
        lease = asyncio.create_task(checkpoint.keep_lease())
        lease.add_done_callback(functools.partial(_stop_if_lease_lost, asyncio.current_task()))
        emit(events.RunStarted, crew=self.name, task_ids=tuple(plan.tasks), inputs=inputs)
        status: RunStatus = "cancelled"
        try:
            results = await scheduler.run()
            status = _status(scheduler)
        finally:
            results = {t: scheduler.results[t] for t in tasks if t in scheduler.results}
            result = CrewResult(
                run_id=emit.run_id,
                crew=self.name,
                status=status,
                tasks=results,
                board=board,
                usage=_run_usage(tasks, results),
                inputs=inputs,
                started_at=started,
                finished_at=self._clock(),
            )
            lease.cancel()
            checkpoint.finish(status, results, result.usage)
            emit(events.RunFinished, status=status, result=result)
        return result

    async def astream(
        self, inputs: Mapping[str, Any] | None = None, *, run_id: str | None = None
    ) -> AsyncIterator[events.Event]:
        """Run the crew, yielding its events as they happen; the last is ``RunFinished``."""
        queue: asyncio.Queue[events.Event | None] = asyncio.Queue()
        job = asyncio.create_task(self.arun(inputs, run_id=run_id, on_event=queue.put_nowait))
        job.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
            await job  # raises what the run raised (a ConfigError, say)
        finally:
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)

    async def _run_subcrew(
        self,
        task: Task,
        state: TaskAttempt,
        emit: events.Emitter,
        scheduler: Scheduler,
    ) -> TaskOutput:
        """Run ``task.crew`` as a child run of this one: its inputs mapped from the board, its
        events forwarded (task ids prefixed ``task/``), resumed where a crash left it."""
        from crew.expr import parse

        assert task.crew is not None
        scope = scheduler.scope()
        inputs = {
            name: value(scheduler.board) if callable(value) else parse(value).evaluate(scope)
            for name, value in task.inputs.items()
        }
        inputs = {k: v.text if isinstance(v, BoardEntry) else _plain(v) for k, v in inputs.items()}
        suffix = f".r{state.round}" if state.round else ""
        run_id = f"{emit.run_id}.{task.id}{suffix}"

        def forward(event: events.Event) -> None:
            if isinstance(event, events.RunStarted | events.RunFinished):
                return
            if hasattr(event, "task_id"):
                event = dataclasses.replace(event, task_id=f"{task.id}/{event.task_id}")  # type: ignore[call-arg]
            emit.bus.emit(event)

        model = task.crew.llm or self._default_llm()  # a subcrew without a model uses ours
        child = task.crew.replace(store=self.store, clock=self._clock, llm=model)
        exists = self.store.get_run(run_id) is not None
        result = await child.arun(
            None if exists else inputs,
            run_id=None if exists else run_id,
            resume=run_id if exists else None,
            on_event=forward,
            slots=scheduler.slots,
            parent_run_id=emit.run_id,
        )
        state.add_usage(result.usage.total)
        output = result.output
        if result.status != "succeeded" or output is None:
            failed = [f"'{r.task_id}': {r.error}" for r in result.tasks.values() if r.error]
            raise TaskError(
                f"Task '{task.id}': subcrew '{child.name}' (run {run_id}) {result.status}: "
                + ("; ".join(failed) or "it has no final output"),
                task_id=task.id,
            )
        return dataclasses.replace(output, task_id=task.id, usage=Usage())

    @property
    def store(self) -> Store:
        """The store runs are checkpointed in (opened on first use)."""
        if self._store is None or isinstance(self._store, str):
            self._store = open_store(self._store)
        return self._store

    def _default_llm(self) -> ChatModel | None:
        return self.llm if self.llm is not None else default_llm()

    def fork(
        self,
        run_id: str,
        from_task: str,
        *,
        outputs: Mapping[str, str] | None = None,
        fork_id: str | None = None,
        **kwargs: Any,
    ) -> CrewResult:
        """Fork the stored run ``run_id`` at ``from_task`` and run the fork (``crew fork``).

        The fork is a new run (its ``parent_run_id`` is ``run_id``) that keeps every output of
        ``run_id`` not downstream of ``from_task`` and runs ``from_task`` and its dependants
        again. ``outputs`` gives some tasks' outputs as text: they count as done and their
        dependants run again. Model requests that did not change are answered with what
        ``run_id`` recorded (pass ``replay=None`` to call the models afresh). ``fork_id`` names
        the fork (else a new id); other keyword arguments go to ``arun`` (``on_event``,
        ``replay_strict``). ``run_id`` itself is not changed.

        Raises:
            ConfigError: no such run, or ``from_task`` or a task of ``outputs`` is not a task
                of this crew (the message names close matches).
        """
        return self.run(**self._start_fork(run_id, from_task, outputs, fork_id, kwargs))

    async def afork(
        self,
        run_id: str,
        from_task: str,
        *,
        outputs: Mapping[str, str] | None = None,
        fork_id: str | None = None,
        **kwargs: Any,
    ) -> CrewResult:
        """``fork``, for async code."""
        return await self.arun(**self._start_fork(run_id, from_task, outputs, fork_id, kwargs))

    def _start_fork(
        self,
        run_id: str,
        from_task: str,
        outputs: Mapping[str, str] | None,
        fork_id: str | None,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        """Store the fork (see ``crew.checkpoint.fork_run``); the arguments that resume it."""
        fork_id = fork_id or self._id_factory()
        plan = self.plan(open_run(self.store, run_id))
        fork_run(self.store, run_id, plan, from_task, fork_id=fork_id, outputs=outputs)
        return {"replay": run_id, **kwargs, "resume": fork_id}


def _on_model(tasks: Iterable[Task], agents: Mapping[int, Agent], model: ChatModel) -> list[Task]:
    """``tasks`` with their agents replaced, in loop bodies and subcrews too."""
    changed = []
    for task in tasks:
        if task.agent is not None:
            task = dataclasses.replace(task, agent=agents[id(task.agent)])
        elif task.crew is not None:
            task = dataclasses.replace(task, crew=task.crew.with_llm(model))
        elif task.group and not callable(task.group):
            body = _on_model(cast(Sequence[Task], task.group), agents, model)
            task = dataclasses.replace(task, group=body)
        changed.append(task)
    return changed


def _every_task(tasks: Iterable[Task]) -> Iterator[Task]:
    """``tasks`` and the tasks in their loops' bodies (those made at run time aside)."""
    for task in tasks:
        yield task
        if task.group and not callable(task.group):
            yield from _every_task(cast(Sequence[Task], task.group))


def _plain(value: Any) -> Any:
    """A value read from the board as an input: models and lists of them as JSON data."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _status(scheduler: Scheduler) -> RunStatus:
    """failed if a task failed and its dependants could not go on without it."""
    results = scheduler.results.values()
    if any(r.status == "failed" and r.task_id not in scheduler.tolerated for r in results):
        return "failed"
    if any(r.status == "cancelled" for r in results):
        return "failed"
    return "waiting" if any(r.status == "waiting" for r in results) else "succeeded"


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
    return dataclasses.replace(
        task, description=description, depends_on=(*depends_on, *extra)
    ), inputs


def _stop_if_lease_lost(run: asyncio.Task[Any] | None, lease: asyncio.Task[None]) -> None:
    """Another process took the run's lease over (it thought this one dead): stop here."""
    if run is not None and not lease.cancelled() and lease.exception() is not None:
        run.cancel()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_usage(tasks: Mapping[str, Task], results: Mapping[str, TaskResult]) -> RunUsage:
    """Usage by task and agent; a loop's or map's own usage sums its tasks', so the total
    counts only the tasks that called models themselves."""
    by_task = {t: r.usage for t, r in results.items()}
    by_agent: dict[str, Usage] = {}
    for task_id, usage in by_task.items():
        if tasks[task_id].kind == "loop":
            continue
        agent = tasks[task_id].agent
        role = agent.role if agent is not None else ""
        by_agent[role] = by_agent.get(role, Usage()) + usage
    own = [u for t, u in by_task.items() if tasks[t].kind != "loop"]
    return RunUsage(total=Usage.sum(own), by_task=by_task, by_agent=by_agent)
