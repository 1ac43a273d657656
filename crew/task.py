"""Tasks: what is to be done, by whom, after what; and what came of it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from crew.agent import Agent
from crew.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from crew.board import Board
    from crew.chat import ChatModel
    from crew.results import CrewResult

Condition = str | Callable[["Board"], bool]
"""An expression over the board (see ``crew.expr``) or a callable given the ``Board``."""
Items = str | Callable[["Board"], Sequence[Any]]
"""Where a map's items come from: an expression (``ideas.data.items``) or a callable."""
Body = Sequence["Task"] | Callable[["Board"], Sequence["Task"]]
"""A group's tasks, or a callable that makes them from the board when the group starts."""
JOINS = ("all", "any", "best_effort", "quorum(n)")
_QUORUM = re.compile(r"^quorum\((\d+)\)$")


class Subcrew(Protocol):
    """What a task needs of the crew that does it (``Task(crew=...)``): a ``crew.Crew``."""

    name: str
    llm: ChatModel | None
    tasks: tuple[Task, ...]

    @property
    def agents(self) -> list[Agent]: ...

    def replace(self, **changes: Any) -> Subcrew: ...

    def with_llm(self, llm: str | ChatModel) -> Subcrew: ...

    async def arun(self, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> CrewResult: ...


@dataclass(frozen=True, eq=False)
class Task:
    """A unit of work for one agent.

    ``{placeholders}`` in description and expected output are filled from the run's inputs.
    """

    id: str
    """Unique in the crew; the key of the task's output on the board and in results."""
    description: str
    expected_output: str = ""
    agent: Agent | None = None
    depends_on: Sequence[Task | str] = ()
    """Tasks (objects or ids) whose outputs this task needs; it starts when all have finished."""
    output_model: type[BaseModel] | None = None
    """A pydantic model the answer must validate against; the result's ``data`` is an instance."""
    timeout_s: float | None = None
    """Per attempt; an attempt that runs longer fails with TaskTimeoutError."""
    retries: int | None = None
    """Further attempts after a failed one (timeouts, invalid output, no final answer); None for
    the crew's ``task_retries`` (2 by default). A model error is retried by the model's own
    ``RetryPolicy`` only, never again here."""
    estimate_s: float = 1.0
    """Expected duration, used only to find the critical path and order ready tasks."""
    human_review: bool = False
    """Hold the output for a person to approve, edit or reject before dependants use it."""
    when: Condition | None = None
    """Run the task only if this holds once its dependencies are done; else it is skipped.
    Tasks an expression names become dependencies."""
    join: str = "all"
    """How dependencies gate the task: ``all`` (every one succeeded), ``any`` (the first
    success starts it), ``quorum(n)`` (n successes start it), ``best_effort`` (once all have
    ended, with those that succeeded; the prompt says what is missing)."""
    routes: Mapping[str, Sequence[Task | str] | Task | str] | None = None
    """Make the task a router: its agent chooses one route by name and the tasks of the other
    routes are skipped. The routed tasks depend on the router. Its answer is ``output_model``
    (if any) with two fields added: ``route`` and ``reason``."""
    for_each: Items | None = None
    """Map: run one instance of the task per item, in parallel; ``{item}`` and ``{item_index}``
    in the description are each instance's. Dependants get the outputs in item order."""
    crew: Subcrew | None = None
    """Subcrew: a whole crew does the task; its final output is the task's output."""
    inputs: Mapping[str, str | Callable[[Board], Any]] = field(default_factory=dict)
    """A subcrew's inputs: name -> expression over the board (``triage.text``,
    ``inputs.topic``) or a callable given the board."""
    group: Body = ()
    """Loop body (see ``loop``): tasks run as one unit, round after round."""
    until: Condition | None = None
    """A loop ends after the first round in which this holds."""
    max_rounds: int | None = None
    """A loop's bound: it ends after this many rounds whatever ``until`` says."""

    def __post_init__(self) -> None:
        problems = _check(self)
        if problems:
            raise ConfigError(problems)
        deps = tuple(dep.id if isinstance(dep, Task) else dep for dep in self.depends_on)
        object.__setattr__(self, "depends_on", deps)
        if self.routes is not None:
            routes = {name: _ids(targets) for name, targets in self.routes.items()}
            object.__setattr__(self, "routes", routes)
            made = self.output_model  # a replace()d router's model was made here before
            if getattr(made, "__crew_routes__", None) != tuple(routes):
                base = getattr(made, "__crew_base__", made)
                object.__setattr__(self, "output_model", route_model(tuple(routes), base))
        if not callable(self.group):
            object.__setattr__(self, "group", tuple(self.group))

    @property
    def body(self) -> tuple[Task, ...]:
        """A loop's tasks, when given up front (empty for other tasks, and for a body made at
        run time)."""
        return () if callable(self.group) else cast(tuple[Task, ...], self.group)

    @property
    def kind(self) -> Literal["agent", "map", "loop", "crew"]:
        """What runs the task: its agent (once, or per item of a map), a loop, or a subcrew."""
        if self.crew is not None:
            return "crew"
        if self.max_rounds is not None or self.group:
            return "loop"
        return "map" if self.for_each is not None else "agent"

    @property
    def quorum(self) -> int | None:
        """Successful dependencies that start the task (None: all of them, ``best_effort``)."""
        if self.join == "any":
            return 1
        match = _QUORUM.match(self.join)
        return int(match.group(1)) if match else None

    @property
    def route_targets(self) -> Mapping[str, tuple[str, ...]]:
        """Route name -> the ids of the tasks it runs (empty unless a router)."""
        return cast(Mapping[str, tuple[str, ...]], self.routes or {})

    @property
    def dependency_ids(self) -> tuple[str, ...]:
        """``depends_on`` as task ids."""
        return cast(tuple[str, ...], self.depends_on)  # __post_init__ turned Tasks into ids

    def __repr__(self) -> str:
        return f"Task({self.id!r})"


def _check(task: Task) -> list[str]:
    where = f"Task '{task.id}'" if isinstance(task.id, str) and task.id else "Task"
    problems = []
    if not isinstance(task.id, str) or not task.id.strip():
        problems.append("Task(id=...) must be a non-empty string, e.g. id='research'.")
    elif task.id != task.id.strip() or any(c.isspace() for c in task.id):
        problems.append(
            f"{where}: id must not contain spaces; use e.g. '{'_'.join(task.id.split())}'."
        )
    if not isinstance(task.description, str) or not task.description.strip():
        problems.append(f"{where}: description must be a non-empty string.")
    if task.agent is not None and not isinstance(task.agent, Agent):
        problems.append(f"{where}: agent must be an Agent, got {type(task.agent).__name__}.")
    if isinstance(task.depends_on, str | Task) or not all(
        isinstance(dep, str | Task) for dep in task.depends_on
    ):
        problems.append(f"{where}: depends_on must be a list of Tasks or task ids.")
    if task.output_model is not None and not hasattr(task.output_model, "model_validate_json"):
        problems.append(f"{where}: output_model must be a pydantic BaseModel subclass.")
    if task.retries is not None and (not isinstance(task.retries, int) or task.retries < 0):
        problems.append(f"{where}: retries must be a whole number >= 0, got {task.retries!r}.")
    if task.timeout_s is not None and not task.timeout_s > 0:
        problems.append(f"{where}: timeout_s must be > 0 (or None for no limit).")
    if not task.estimate_s >= 0:
        problems.append(f"{where}: estimate_s must be >= 0.")
    return problems + _check_flow(task, where)


def _check_flow(task: Task, where: str) -> list[str]:
    """The control-flow fields, each on its own; the planner checks them against the crew."""
    problems = _check_join(task, where)
    for name in ("when", "until", "for_each"):
        value = getattr(task, name)
        if value is not None and not (isinstance(value, str) or callable(value)):
            problems.append(f"{where}: {name} must be an expression string or a callable.")
    if task.routes is not None:
        problems += _check_routes(task, where)
    if task.crew is not None and not hasattr(task.crew, "arun"):
        problems.append(f"{where}: crew must be a Crew, got {type(task.crew).__name__}.")
    if task.inputs and task.crew is None:
        problems.append(f"{where}: inputs= maps a subcrew's inputs; it needs crew=...")
    looping = task.max_rounds is not None or task.until is not None
    if looping and not task.group:
        problems.append(f"{where}: until and max_rounds belong to a loop; use crew.loop(...).")
    if task.group and (task.max_rounds is None or isinstance(task.max_rounds, bool)):
        problems.append(
            f"{where}: a loop needs a bound: pass max_rounds (e.g. max_rounds=3); it ends sooner"
            " when `until` holds."
        )
    elif task.max_rounds is not None and not (
        isinstance(task.max_rounds, int) and task.max_rounds >= 1
    ):
        problems.append(f"{where}: max_rounds must be a whole number >= 1.")
    kinds = [n for n in ("routes", "for_each", "crew", "group") if getattr(task, n)]
    if len(kinds) > 1:
        problems.append(f"{where}: {' and '.join(kinds)} cannot be combined in one task.")
    if (task.crew is not None or task.group) and task.agent is not None:
        problems.append(f"{where}: a subcrew or loop task has no agent of its own; remove agent=.")
    return problems


def _check_join(task: Task, where: str) -> list[str]:
    if task.join not in ("all", "any", "best_effort") and not _QUORUM.match(str(task.join)):
        return [
            f"{where}: join must be one of all, any, best_effort or quorum(n) (e.g. 'quorum(2)'),"
            f" got {task.join!r}."
        ]
    if task.quorum == 0:
        return [
            f"{where}: join 'quorum(0)' would start the task with no dependency succeeded; use"
            " quorum(n) with n >= 1, or join='best_effort' to go on with whatever succeeded."
        ]
    return []  # a quorum above the number of dependencies is the planner's to find


def _check_routes(task: Task, where: str) -> list[str]:
    routes = task.routes
    if not isinstance(routes, Mapping) or not routes:
        return [f"{where}: routes must map route names to tasks, e.g. {{'bug': ['fix']}}."]
    problems = []
    for name, targets in routes.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
            problems.append(f"{where}: route name {name!r} must be a word (letters, _, -).")
        if not isinstance(targets, str | Task | Sequence) or not all(
            isinstance(t, str | Task) for t in _flat(targets)
        ):
            problems.append(f"{where}: route '{name}' must list tasks or task ids.")
        elif task.id in _ids(targets):
            problems.append(f"{where}: route '{name}' routes to the router itself.")
    fields = getattr(task.output_model, "model_fields", {})
    if not hasattr(task.output_model, "__crew_routes__") and {"route", "reason"} & set(fields):
        problems.append(
            f"{where}: a router adds the fields 'route' and 'reason' to its output_model;"
            " rename those of the model."
        )
    return problems


def _flat(targets: Any) -> list[Any]:
    return [targets] if isinstance(targets, str | Task) else list(targets)


def _ids(targets: Any) -> tuple[str, ...]:
    return tuple(t.id if isinstance(t, Task) else t for t in _flat(targets))


def every_task(tasks: Iterable[Task]) -> Iterator[Task]:
    """``tasks``, each followed by the tasks of its loop's body, at any depth."""
    for task in tasks:
        yield task
        yield from every_task(task.body)


def route_model(names: tuple[str, ...], base: type[BaseModel] | None = None) -> type[BaseModel]:
    """The answer of a router: one of ``names``, and why; with the fields of ``base`` if given
    (the result's ``data`` is then still an instance of ``base``)."""
    from pydantic import BaseModel, Field, create_model

    listed = ", ".join(names)
    model = create_model(
        base.__name__ if base is not None else "Route",
        __base__=base or BaseModel,
        route=(Literal[names], Field(description=f"The route to take: one of {listed}.")),  # type: ignore[arg-type]
        reason=(str, Field(default="", description="Why this route, in one sentence.")),
    )
    model.__crew_routes__ = names  # type: ignore[attr-defined]
    model.__crew_base__ = base  # type: ignore[attr-defined]
    return model


def loop(
    id: str,
    tasks: Body,
    *,
    max_rounds: int,
    until: Condition | None = None,
    depends_on: Sequence[Task | str] = (),
    description: str = "",
    estimate_s: float | None = None,
) -> Task:
    """A group of tasks that runs round after round, until ``until`` holds after a round or
    ``max_rounds`` rounds have run. Each round's outputs are new versions of the tasks' board
    entries; from the second round on, each task also sees the group's previous outputs. The
    loop's output is that of its last task in the last round; dependants may name the loop or
    any task in it.

    ``tasks`` may be a callable given the board, to make the group when it starts.
    """
    steps = " -> ".join(t.id for t in tasks) if not callable(tasks) else "tasks made at run time"
    return Task(
        id=id,
        description=description or f"Repeat {steps}, at most {max_rounds} rounds.",
        group=tasks,
        until=until,
        max_rounds=max_rounds,
        depends_on=depends_on,
        estimate_s=estimate_s if estimate_s is not None else _estimate(tasks, max_rounds),
    )


def _estimate(tasks: Body, rounds: Any) -> float:
    if callable(tasks) or not isinstance(rounds, int):
        return 1.0
    return sum(t.estimate_s for t in tasks) * rounds


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """Work handed to a coworker by delegation: a task of its own that is not in the graph."""

    id: str
    description: str
    expected_output: str = ""
    dependency_ids: tuple[str, ...] = ()
    output_model: type[BaseModel] | None = None
