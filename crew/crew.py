"""A crew: tasks and the agents that do them, run as one graph."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from crew import events, hooks, sync
from crew.agent import Agent
from crew.budget import Budget, Ledger
from crew.chat import ChatModel
from crew.errors import ConfigError
from crew.fork import fork_run
from crew.llm import prepare, prepared
from crew.model_choice import as_chat_model, default_llm
from crew.plan import Plan, build_plan
from crew.process import Process, hierarchical_tasks
from crew.restore import open_run
from crew.results import CrewResult, RunStatus
from crew.retry import DEFAULT_CALL_ATTEMPTS, DEFAULT_TASK_RETRIES, check_defaults
from crew.run import Run, RunSettings
from crew.scheduler import FailurePolicy, check_settings
from crew.slots import Slots
from crew.store import Store, open_store
from crew.task import Task, every_task
from crew.tracing import TracingSetting
from crew.tracing import check as check_tracing
from crew.tracing import resolve as resolve_tracing

__all__ = ["Crew", "CrewResult", "RunStatus"]


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
        call_attempts: tries in all per model call, for models without ``LLM(retry=...)``.
        task_retries: further attempts at a failed task, for tasks without ``retries``. The
            defaults (``crew.retry``) survive a 25% rate of transient provider faults.
        tracing: OpenTelemetry spans of each run (the ``otel`` extra): True, or
            ``crew.tracing.Tracing(capture_content=..., tracer_provider=...)``; False for none;
            None for ``CREW_TRACING`` (see ``crew.tracing``).
        budget: the most each run may spend on model calls (``crew.budget.Budget``): each call
            reserves its worst case first, and the run stops dispatching once one cannot; it ends
            ``budget_exceeded``. What earlier attempts at a resumed run spent counts.
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
        call_attempts: int = DEFAULT_CALL_ATTEMPTS,
        task_retries: int = DEFAULT_TASK_RETRIES,
        tracing: TracingSetting = None,
        budget: Budget | None = None,
        clock: Callable[[], float] = time.time,
        id_factory: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        # Every constructor argument as given, for replace(): a new parameter is kept too.
        self._arguments = {name: value for name, value in locals().items() if name != "self"}
        self._planned: tuple[ChatModel | None, Plan] | None = None
        """(the default model it was planned with, the plan): made once, reused by every run."""
        self.tasks = tuple(tasks)
        self._arguments.update(tasks=self.tasks, agents=tuple(agents))  # iterables, read once
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
        check_defaults(call_attempts, task_retries)
        self.call_attempts, self.task_retries = call_attempts, task_retries
        check_tracing(tracing)
        self.tracing = tracing
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError(
                f"Crew(budget=...) takes a crew.Budget(max_cost_usd=..., max_tokens=...), got"
                f" {type(budget).__name__}."
            )
        self.budget = budget
        self.name = name
        self._extra_agents = self._arguments["agents"]
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
        found = {id(t.agent): t.agent for t in every_task(self.tasks) if t.agent is not None}
        found.update((id(a), a) for a in self._extra_agents)
        return list(found.values())

    def replace(self, **changes: Any) -> Crew:
        """A copy with some constructor arguments changed: ``crew.replace(max_concurrency=2)``."""
        # The store as opened (if it was), so that a copy shares it.
        arguments = {**self._arguments, "store": self._store, **changes}
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
        """Validate the crew with ``inputs`` and return its plan, without calling any model.

        The crew is checked and planned on the first call; later calls (each run) check only
        their inputs against that plan. It is planned again if the default model changed
        (``CREW_MODEL``), since whether every agent has a model depends on it.
        """
        return self._plan(inputs)[0]

    def _plan(self, inputs: Mapping[str, Any] | None) -> tuple[Plan, ChatModel | None]:
        """``plan(inputs)``, and the default model it was made with (a run uses the same)."""
        default = self._default_llm()
        if self._planned is not None and self._planned[0] == default:
            plan = self._planned[1]
            plan.check_inputs(inputs)
            return plan, default
        plan = build_plan(self.tasks, inputs, default_llm=default, agents=self._extra_agents)
        self._planned = (default, plan)
        return plan, default

    def run(self, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> CrewResult:
        """Run the crew and wait for the result (the sync form of ``arun``)."""
        return sync.wait(self.arun(inputs, **kwargs), "crew-run")

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
        budget: Budget | None = None,
        ledger: Ledger | None = None,
        batch: tuple[str, int] | None = None,
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

        ``budget`` replaces the crew's for this run (a resume with a higher one); ``ledger`` is
        a subcrew's: it spends from its parent's budget. ``batch``: (batch id, line), to store
        a new run as part of a batch (see ``crew.batch``).
        """
        if resume is not None:
            stored_inputs = open_run(self.store, resume)
            inputs = stored_inputs if inputs is None else inputs
        plan, default = self._plan(inputs)  # first: it also rejects inputs that are not a mapping
        traced = resolve_tracing(self.tracing)
        store = self.store  # opened only for a valid crew: a bad one leaves no file behind
        models = [as_chat_model(m) for a in self.agents if (m := a.llm or default) is not None]
        if not prepared(models):  # a first run: the imports on a thread, the loop free meanwhile
            await asyncio.to_thread(prepare, models)
        settings = RunSettings(
            name=self.name, source=self.source, max_concurrency=self.max_concurrency,
            on_failure=self.on_failure, stream=self.stream, review_hook=self.review_hook,
            agents=tuple(self.agents), coworkers_only=self._extra_agents,
            call_attempts=self.call_attempts, task_retries=self.task_retries, tracing=traced,
        )  # fmt: skip
        if ledger is None and (budget := budget or self.budget) is not None:
            ledger = Ledger(budget, **(_spent(store, resume) if resume is not None else {}))
        run = Run(
            settings,
            plan,
            dict(inputs or {}),
            store=store,
            run_id=resume or run_id or self._id_factory(),
            clock=self._clock,
            default=default,
            on_event=on_event,
            replay=replay,
            replay_strict=replay_strict,
            slots=slots,
            ledger=ledger,
        )
        return await run.execute(
            resume=resume is not None, parent_run_id=parent_run_id, batch=batch
        )

    def batch(self, inputs: Iterable[Mapping[str, Any]] | str | Path, **kwargs: Any) -> list[Any]:
        """Run the crew once per input and wait for every result (the sync form of ``abatch``,
        with its arguments)."""
        return sync.wait(self.abatch(inputs, **kwargs), "crew-batch")

    async def abatch(
        self,
        inputs: Iterable[Mapping[str, Any]] | str | Path,
        *,
        concurrency: int | None = None,
        executor: str = "local",
        address: str | None = None,
        batch_id: str | None = None,
        on_result: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """Run the crew once per input, as a batch stored under ``batch_id`` (else a new id);
        the ``crew.batch.BatchResult`` of each input, in input order.

        ``inputs``: dicts of inputs, or the path of a JSON Lines or CSV file (one run a line).
        Every input is checked before any run starts (``BatchInputError`` lists every bad
        one). ``concurrency``: runs at work at once (``executor="local"``: in this event loop;
        ``crew.batch.DEFAULT_CONCURRENCY`` if None);
        ``executor="dask"`` runs each input as a task on the Dask cluster at ``address`` (a
        local one if None). With the ``batch_id`` of an earlier batch, succeeded inputs are not
        run again, interrupted and failed ones are resumed (see ``crew.batch``).
        """
        from crew import batch, batch_local

        batch_id = batch_id or batch.new_batch_id()
        if isinstance(inputs, str | Path):
            items = batch.read_inputs(inputs, self, batch_id=batch_id)
            inputs_file = str(inputs)
        else:
            rows = list(enumerate(inputs, start=1))
            items = batch.checked(rows, self, batch_id=batch_id)
            inputs_file = ""
        return await batch_local.run_batch(
            self, items, batch_id=batch_id, executor=executor,
            concurrency=batch.DEFAULT_CONCURRENCY if concurrency is None else concurrency,
            address=address, inputs_file=inputs_file, on_result=on_result,
        )  # fmt: skip

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
        """Store the fork (see ``crew.fork.fork_run``); the arguments that resume it."""
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
        elif task.body:
            task = dataclasses.replace(task, group=_on_model(task.body, agents, model))
        changed.append(task)
    return changed


def _spent(store: Store, run_id: str) -> dict[str, Any]:
    """What the stored run spent so far (it counts against a resumed run's budget)."""
    record = store.get_run(run_id)
    total = (record.usage if record is not None else {}).get("total") or {}
    tokens = int(total.get("prompt_tokens", 0)) + int(total.get("completion_tokens", 0))
    return {"spent_usd": float(total.get("cost_usd", 0.0)), "spent_tokens": tokens}
