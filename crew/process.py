"""The hierarchical process: a manager agent plans a crew's tasks from its goal.

``Crew(process="hierarchical", manager=Agent(...), agents=[...], goal="...")`` runs two tasks:

- ``plan``: the manager answers with a task graph over the agents (a structured output). It is
  checked like a crew written by hand: unknown agents, unknown or circular dependencies and
  duplicate ids go back to the manager to fix, before any of the work runs.
- ``work``: the graph runs as the one round of a loop, in parallel wherever its dependencies
  allow, checkpointed and resumed like any loop body. Its last task, ``answer``, is the
  manager's: the final answer to the goal, written from every task's output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from crew.agent import Agent
from crew.errors import ConfigError
from crew.plan import find_cycles
from crew.task import Task, loop

if TYPE_CHECKING:
    from pydantic import BaseModel

    from crew.board import Board

Process = Literal["graph", "hierarchical"]
"""graph: the tasks given, run as their dependencies allow; hierarchical: planned by a manager."""
RESERVED = ("plan", "work", "answer")
MAX_TASKS = 12
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)\}")


def hierarchical_tasks(manager: Agent, agents: Sequence[Agent], goal: str) -> list[Task]:
    """The ``plan`` and ``work`` tasks of a hierarchical crew."""
    problems = []
    if not isinstance(manager, Agent):
        problems.append("process='hierarchical' needs manager=Agent(...), the agent that plans.")
    if not isinstance(goal, str) or not goal.strip():
        problems.append("process='hierarchical' needs goal='...': what the crew is to achieve.")
    if not agents:
        problems.append("process='hierarchical' needs agents=[...] for the manager to plan for.")
    if problems:
        raise ConfigError(problems)
    roles = {agent.role: agent for agent in agents}
    roster = "\n".join(f"- {a.role}: {a.goal or a.backstory or 'no stated goal'}" for a in agents)
    plan = Task(
        id="plan",
        description=(
            f"Plan how your crew reaches this goal: {goal}\n\nYour crew:\n{roster}\n\n"
            f"Split the work into at most {MAX_TASKS} tasks, each for one agent of the crew. A"
            " task lists in depends_on the ids of the tasks whose results it needs; tasks that"
            " do not need each other run at the same time, so only add real dependencies."
        ),
        expected_output="The task graph.",
        agent=manager,
        output_model=graph_model(tuple(roles)),
        retries=1,
    )

    def make(board: Board) -> list[Task]:
        return planned_tasks(board["plan"].data, roles, manager, goal)

    work = loop(
        "work", make, max_rounds=1, depends_on=["plan"], description="Do the manager's plan."
    )
    return [plan, work]


def planned_tasks(graph: Any, roles: Mapping[str, Agent], manager: Agent, goal: str) -> list[Task]:
    """The manager's tasks, then its ``answer`` task, which depends on all of them."""
    tasks = [
        Task(
            id=planned.id,
            description=_literal(planned.description),
            expected_output=_literal(planned.expected_output),
            agent=roles[_role(planned.agent, roles)],
            depends_on=planned.depends_on,
        )
        for planned in graph.tasks
    ]
    answer = Task(
        id="answer",
        description=f"Write the final answer to the goal: {goal}\nUse your crew's results.",
        expected_output="The final answer.",
        agent=manager,
        depends_on=[t.id for t in tasks],
    )
    return [*tasks, answer]


def graph_model(roles: tuple[str, ...]) -> type[BaseModel]:
    """The manager's answer: tasks over ``roles``, checked as a graph when validated."""
    from pydantic import BaseModel, Field, create_model, model_validator

    listed = ", ".join(roles)

    class PlannedTask(BaseModel):
        id: str = Field(description="A short snake_case id, unique in the plan.")
        description: str = Field(description="What to do, in full: the agent sees only this.")
        expected_output: str = Field(default="", description="What the result looks like.")
        agent: str = Field(description=f"The role of the agent who does it: one of {listed}.")
        depends_on: list[str] = Field(default=[], description="Ids of tasks it needs first.")

    def check(graph: Any) -> Any:
        problems = _problems(graph.tasks, roles)
        if problems:
            raise ValueError("; ".join(problems))
        return graph

    return create_model(
        "TaskGraph",
        tasks=(list[PlannedTask], Field(description="The tasks, in a sensible order.")),
        __validators__={"check_graph": model_validator(mode="after")(check)},  # type: ignore[dict-item]
    )


def _problems(tasks: Sequence[Any], roles: tuple[str, ...]) -> list[str]:
    problems = []
    if not tasks:
        problems.append("the plan has no tasks")
    if len(tasks) > MAX_TASKS:
        problems.append(f"the plan has {len(tasks)} tasks; use at most {MAX_TASKS}")
    ids = [t.id for t in tasks]
    for task_id in ids:
        if not _ID.match(task_id) or task_id in RESERVED:
            problems.append(
                f"task id '{task_id}' must be snake_case and not one of {', '.join(RESERVED)}"
            )
        if ids.count(task_id) > 1:
            problems.append(f"task id '{task_id}' is used twice")
    for task in tasks:
        if _role(task.agent, dict.fromkeys(roles)) not in roles:
            problems.append(
                f"task '{task.id}': '{task.agent}' is not in the crew ({', '.join(roles)})"
            )
        problems += [
            f"task '{task.id}' depends on '{dep}', which is not in the plan"
            for dep in task.depends_on
            if dep not in ids
        ]
    cycles = find_cycles({t.id: t.depends_on for t in tasks}, limit=1)
    problems += [f"tasks depend on each other in a cycle: {' -> '.join(c)}" for c in cycles]
    return list(dict.fromkeys(problems))


def _role(name: str, roles: Mapping[str, Any]) -> str:
    """The role ``name`` means, ignoring case, spacing and quotes (as delegation does)."""
    wanted = _normal(name)
    return next((role for role in roles if _normal(role) == wanted), name)


def _normal(name: str) -> str:
    return " ".join(name.strip().strip("'\"`").lower().split())


def _literal(text: str) -> str:
    """Model-written text is not a template: ``{name}`` in it is not an input to fill."""
    return _PLACEHOLDER.sub(r"(\1)", text)
