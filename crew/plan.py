"""The planner: the task graph of a crew, checked whole before any model call.

The graph is a networkx ``DiGraph`` (``Plan.graph``), built in one ``add_edges_from`` from the
edges found in one pass over the tasks. networkx checks it is acyclic (and lists the cycles
only when it is not), gives its generations, descendants and width; the declaration-ordered
topological order is walked here over the graph's adjacency, as networkx's lexicographic sort
would be several times slower. This is networkx's only door, imported on the first plan:
planning 10,000 tasks takes 0.2-0.4 s in a fresh process, networkx's import (0.1-0.2 s)
included, and 0.1-0.2 s after that (``python benchmarks/bench_scale.py --plan``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError, PlanError, did_you_mean
from crew.plan_checks import (
    MAP_NAMES as MAP_NAMES,  # where the crew's other modules have always found it
)
from crew.plan_checks import (
    check_agents,
    check_coworkers,
    check_dependencies,
    check_inputs,
    check_placeholders,
    check_quorums,
    check_reachable,
    check_routes,
)
from crew.prompts import placeholders
from crew.task import every_task

if TYPE_CHECKING:
    import networkx as nx

    from crew.agent import Agent
    from crew.chat import ChatModel
    from crew.expr import Expression
    from crew.task import Task


@dataclass(frozen=True)
class Plan:
    """A valid task graph and what the scheduler needs to know about it."""

    tasks: Mapping[str, Task]
    """By id, in the order the crew declared them."""
    _graph: nx.DiGraph = field(repr=False)
    """An edge u -> v means v depends on u; edges in the order they were found."""
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

    @property
    def graph(self) -> nx.DiGraph:
        """The task graph, frozen (networkx refuses to change it): an edge u -> v means v
        depends on u; nodes in declaration order, a loop's body in ``groups``. For networkx's
        algorithms (``nx.ancestors(plan.graph, "report")``); crew itself asks the methods."""
        return self._graph

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
        problems = check_inputs(inputs)
        problems += self._placeholder_problems(inputs if isinstance(inputs, Mapping) else {})
        if problems:
            raise PlanError(list(dict.fromkeys(problems)))

    def _placeholder_problems(self, inputs: Mapping[str, Any]) -> list[str]:
        problems = check_placeholders(self.tasks.values(), inputs)
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
    problems = check_inputs(inputs) if outer is None else []
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
    inner = {task_id: _inner([task]) for task_id, task in by_id.items() if task.group}
    owner = {t.id: task_id for task_id, ts in inner.items() for t in ts}
    problems += [
        f"Task id '{i}' is used by more than one task; ids must be unique."
        for i in owner
        if i in by_id or (outer is not None and i in outer)
    ]
    known = {**(outer or {}), **by_id, **{t.id: t for ts in inner.values() for t in ts}}
    every = [t for task in by_id.values() for t in (task, *inner.get(task.id, ()))]
    expressions, expression_problems = _parse_expressions(known, tasks=every)
    problems += expression_problems
    reads = _reads(expressions)
    needs = {task.id: _needs(task, inner.get(task.id, ()), reads) for task in by_id.values()}
    for task in by_id.values():
        problems += check_dependencies(task, known)
    graph = _graph(by_id, needs, owner)
    if not nx.is_directed_acyclic_graph(graph):
        problems += _check_cycles(graph)  # simple_cycles, only for a graph that has some
    problems += check_quorums(by_id.values(), graph.pred, needs, [*(outer or {})])
    problems += check_agents(by_id.values(), default_llm)
    problems += check_coworkers(by_id.values(), agents, default_llm)
    problems += check_placeholders(by_id.values(), inputs)
    problems += check_routes(by_id, owner)
    groups: dict[str, Plan] = {}
    for task in by_id.values():
        problems += _check_kind(task, default_llm)
        if task.group and task.body:
            around = {k: t for k, t in known.items() if k not in {b.id for b in task.body}}
            try:
                groups[task.id] = build_plan(
                    task.body, inputs, default_llm=default_llm, agents=agents, outer=around
                )
            except PlanError as exc:
                problems += exc.problems
    if not problems:  # so the graph is acyclic
        generations = list(nx.topological_generations(graph))
        problems += check_reachable(itertools.chain(*generations), graph.pred, by_id)
    if problems:
        raise PlanError(list(dict.fromkeys(problems)))
    return _analyse(by_id, graph, generations, groups, expressions)


def _inner(tasks: Iterable[Task]) -> list[Task]:
    """Every task inside the loops among ``tasks`` (with bodies given up front), at any depth."""
    return [inner for task in tasks for inner in every_task(task.body)]


def _reads(expressions: Mapping[tuple[str, str], Expression]) -> dict[str, list[str]]:
    """Task id -> the tasks its expressions read, each expression's names in sorted order."""
    reads: dict[str, list[str]] = {}
    for (task_id, _), expression in expressions.items():
        reads.setdefault(task_id, []).extend(sorted(expression.names - {"inputs"}))
    return reads


def _needs(task: Task, inner: Sequence[Task], reads: Mapping[str, list[str]]) -> Sequence[str]:
    """Every task ``task`` must wait for: its dependencies, the tasks its expressions read,
    and for a loop (``inner``: its body, at any depth), whatever its body needs from outside."""
    if not inner and task.id not in reads:
        return task.dependency_ids  # the common case (callers drop repeated ids)
    needs = [*task.dependency_ids, *reads.get(task.id, ())]
    for one in inner:
        needs += one.dependency_ids
        needs += reads.get(one.id, ())
    inside = {one.id for one in inner}
    return [dep for dep in dict.fromkeys(needs) if dep not in inside]


def _graph(
    by_id: Mapping[str, Task], needs: Mapping[str, Sequence[str]], owner: Mapping[str, str]
) -> nx.DiGraph:
    """The task graph: a task waits for what it needs (a task inside a loop stands for the
    loop), and a router's targets wait for the router. Edges in the order they turn up, so that
    each task's dependencies and dependants keep the order they were declared in."""
    import networkx as nx

    found: dict[tuple[str, str], None] = {}  # edges, each once: one add_edges_from is fast
    for task in by_id.values():
        for dep in dict.fromkeys(owner.get(dep, dep) for dep in needs[task.id]):
            if dep != task.id and dep in by_id:
                found[(dep, task.id)] = None
        if task.routes:  # asked first: most tasks are no routers
            for targets in task.route_targets.values():
                found.update(((task.id, t), None) for t in targets if t in by_id)
    graph = nx.DiGraph()
    graph.add_nodes_from(by_id)
    graph.add_edges_from(found)
    return nx.freeze(graph)


def _parse_expressions(
    known: Mapping[str, Task], *, tasks: Iterable[Task]
) -> tuple[dict[tuple[str, str], Expression], list[str]]:
    """Parse the expression strings of ``tasks`` (each followed by its loop's body, if any):
    ``when``, ``until``, ``for_each`` and subcrew ``inputs``; check the names and fields they
    read."""
    from crew.expr import check_paths, parse

    parsed: dict[tuple[str, str], Expression] = {}
    problems: list[str] = []
    models: dict[str, Any] | None = None
    for task in tasks:
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
            if models is None:  # made once, on the first expression: most crews have none
                models = {task_id: t.output_model for task_id, t in known.items()}
            problems += check_paths(expression, models, where=where)
            parsed[(task.id, name)] = expression
    return parsed, problems


def _analyse(
    by_id: dict[str, Task],
    graph: nx.DiGraph,
    generations: list[list[str]],
    groups: Mapping[str, Plan],
    expressions: Mapping[tuple[str, str], Expression],
) -> Plan:
    position = {task_id: i for i, task_id in enumerate(by_id)}
    dependants = dict(graph.adjacency())  # task -> {dependant: edge data}, the graph's own dicts
    order = _declared_order(graph, dependants, position)
    remaining: dict[str, float] = {}
    for task_id in reversed(order):
        after = max((remaining[s] for s in dependants[task_id]), default=0.0)
        remaining[task_id] = by_id[task_id].estimate_s + after
    path = [max(generations[0], key=lambda t: (remaining[t], -position[t]))]
    while successors := dependants[path[-1]]:
        path.append(max(successors, key=lambda t: (remaining[t], -position[t])))
    levels = tuple(tuple(sorted(level, key=position.__getitem__)) for level in generations)
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


def _declared_order(
    graph: nx.DiGraph, dependants: Mapping[str, Iterable[str]], position: Mapping[str, int]
) -> tuple[str, ...]:
    """The topological order that takes, each time, the first-declared task that is ready:
    networkx's ``lexicographical_topological_sort`` keyed by position, walked here over the
    graph's adjacency, as networkx's own takes several times longer."""
    waiting = dict(graph.in_degree)
    ready = [position[task_id] for task_id, count in waiting.items() if not count]
    heapq.heapify(ready)
    by_position = list(position)
    order = []
    while ready:
        task_id = by_position[heapq.heappop(ready)]
        order.append(task_id)
        for dependant in dependants[task_id]:
            waiting[dependant] -= 1
            if not waiting[dependant]:
                heapq.heappush(ready, position[dependant])
    return tuple(order)


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
    dependencies = {task_id: list(deps) for task_id, deps in graph.pred.items()}
    return [
        f"Tasks depend on each other in a cycle: {' -> '.join([*cycle, cycle[0]])} (each"
        " depends on the next). Remove one of these dependencies."
        for cycle in find_cycles(dependencies)
    ]


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
