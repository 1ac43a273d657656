"""The checks of a crew file against itself, made after each section is read and before anything
is built: references between agents and tasks, routes, loops, the process, and placeholders.
Each problem goes to ``problem`` (the loader's, which adds the file and line)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from crew.errors import did_you_mean
from crew.plan import MAP_NAMES, find_cycles
from crew.prompts import placeholders
from crew.spec.models import TEXT_FIELDS, CrewModel, Draft
from crew.yamlfile import YamlFile

Report = Callable[..., None]
"""``problem(location, message, *, line_at=())``."""


class Hints:
    """``did_you_mean`` for the first ``budget`` unknown names of a file, then nothing: each
    search compares the name with every key, so thousands of unknown names among thousands of
    keys would take minutes, and a message lists only the first problems anyway."""

    def __init__(self, budget: int = 200) -> None:
        self.left = budget

    def __call__(self, name: str, options: Iterable[Any], *, sentence: bool = False) -> str:
        if self.left <= 0:
            return ""
        self.left -= 1
        return did_you_mean(name, options, sentence=sentence)


class Checks:
    """The checks of one crew file.

    Args:
        yf: the file.
        problem: records a problem at a location.
        hierarchical: the crew's manager plans its tasks.
        owner: task key -> the loop whose body it is in; filled by ``loops``.
        hint: the close matches of the file's unknown names.
    """

    def __init__(
        self,
        yf: YamlFile,
        problem: Report,
        *,
        hierarchical: bool,
        owner: dict[str, str],
        hint: Hints,
    ) -> None:
        self.yf, self.problem, self.hierarchical, self.owner = yf, problem, hierarchical, owner
        self.hint = hint

    def references(
        self,
        agents: Mapping[str, Draft],
        tasks: Mapping[str, Draft],
        agent_keys: Mapping[str, Any],
        task_keys: Mapping[str, Any],
    ) -> None:
        """Agents and coworkers that exist, dependencies that exist, no cycles."""
        for draft in agents.values():
            for key in draft.fields.get("delegates", []):
                if key not in agent_keys or key == draft.loc[-1]:
                    hint = self.hint(key, agent_keys) or f" (agents: {listing(agent_keys)})"
                    self.problem((*draft.loc, "delegates"), f"no other agent '{key}'{hint}.")
        if not task_keys and isinstance(self.yf.data.get("tasks"), dict) and not self.hierarchical:
            self.problem(("tasks",), "the crew has no tasks; add at least one.")
        graph: dict[str, list[str]] = {}
        for key, draft in tasks.items():
            self.agent(draft, agent_keys)
            deps = draft.fields.get("depends_on", [])
            graph[key] = [dep for dep in deps if dep in task_keys and dep != key]
            for dep in deps:
                if dep == key:
                    self.problem((*draft.loc, "depends_on"), "a task cannot depend on itself.")
                elif dep not in task_keys:
                    self.problem((*draft.loc, "depends_on"), self.unknown("task", dep, task_keys))
        for cycle in find_cycles(graph):
            self.problem(
                ("tasks", cycle[0], "depends_on"),
                f"tasks depend on each other in a cycle: {' -> '.join([*cycle, cycle[0]])}"
                " (each depends on the next); remove one of these dependencies.",
            )

    def agent(self, draft: Draft, agent_keys: Mapping[str, Any]) -> None:
        """A task names an agent of the file; a loop or a subcrew has none."""
        agent = draft.fields.get("agent")
        if agent is not None and agent not in agent_keys:
            self.problem((*draft.loc, "agent"), self.unknown("agent", agent, agent_keys))
        elif agent is None and not {"loop", "crew"} & draft.fields.keys():
            listed = listing(agent_keys) or "none yet"
            self.problem(draft.loc, f"no agent: add `agent:` (agents: {listed}).")

    def routes(self, tasks: Mapping[str, Draft], task_keys: Mapping[str, Any]) -> None:
        for draft in tasks.values():
            for name, targets in (draft.fields.get("routes") or {}).items():
                for i, target in enumerate(targets):
                    if target not in task_keys:
                        self.problem(
                            (*draft.loc, "routes", name),
                            self.unknown("task", target, task_keys),
                            line_at=(*draft.loc, "routes", name, i),
                        )

    def loops(self, tasks: Mapping[str, Draft], task_keys: Mapping[str, Any]) -> None:
        """Each task is in one loop's body at most, and no loop is inside itself."""
        bodies = {key: d.fields["loop"]["tasks"] for key, d in tasks.items() if "loop" in d.fields}
        for key, body in bodies.items():
            for i, member in enumerate(body):
                location = ("tasks", key, "loop", "tasks", i)
                if member == key:
                    self.problem(location, "a loop cannot contain itself.")
                elif member not in task_keys:
                    self.problem(location, self.unknown("task", member, task_keys))
                elif member in self.owner:
                    where = f"loop '{self.owner[member]}'"
                    self.problem(location, f"already in {where}; a task is in one loop at most.")
                else:
                    self.owner[member] = key
        for cycle in find_cycles({k: [m for m in b if m != k] for k, b in bodies.items()}):
            self.problem(
                ("tasks", cycle[0], "loop", "tasks"),
                f"loops contain each other in a cycle: {' -> '.join([*cycle, cycle[0]])} (each"
                " contains the next); take one out of the other's tasks.",
            )

    def process(self, header: CrewModel | None, agent_keys: Mapping[str, Any]) -> None:
        """A graph crew has tasks; a hierarchical one has a manager, a goal and no tasks."""
        tasks = self.yf.data.get("tasks")
        if not self.hierarchical:
            if tasks is None:
                self.problem(("tasks",), "this field is required; add `tasks: ...`.")
            if header is not None and header.manager is not None:
                message = "only a hierarchical crew has one; add `process: hierarchical`."
                self.problem(("manager",), message)
            return
        assert header is not None  # hierarchical: the header parsed
        if tasks:
            message = "a hierarchical crew's manager plans the tasks; remove `tasks:`"
            self.problem(("tasks",), f"{message} (or use `process: graph`).")
        if header.manager is None:
            self.problem(("process",), "needs `manager:`, the key of the agent that plans.")
        elif header.manager not in agent_keys:
            self.problem(("manager",), self.unknown("agent", header.manager, agent_keys))
        elif not agent_keys.keys() - {header.manager}:
            self.problem(("agents",), "the manager needs other agents to plan the tasks for.")
        if not (header.goal or "").strip():
            self.problem(("process",), "needs `goal:`, what the crew is to achieve.")

    def unknown(self, kind: str, name: str, keys: Mapping[str, Any]) -> str:
        listed = f" ({kind}s: {listing(keys)})" if keys else f" (there are no {kind}s)"
        return f"unknown {kind} '{name}'{self.hint(name, keys) or listed}."

    def placeholders(self, drafts: Sequence[Draft], inputs: Mapping[str, Any]) -> None:
        """Every ``{name}`` in a prompt must be a declared input: name them all, per field."""
        for draft in drafts:
            known = [*inputs, *(MAP_NAMES if "for_each" in draft.fields else ())]
            for name in TEXT_FIELDS:
                missing = [n for n in placeholders(draft.fields.get(name, "")) if n not in known]
                if not missing:
                    continue
                listed = ", ".join(f"{{{n}}}{self.hint(n, inputs)}" for n in missing)
                verb = "is not a declared input" if len(missing) == 1 else "are not declared inputs"
                line_at, via = draft.where(name)
                self.problem(
                    (*draft.loc, name),
                    f"{listed} {verb}{via}; declare under `inputs:` or fix the name.",
                    line_at=line_at,
                )


def listing(keys: Iterable[Any], most: int = 10) -> str:
    """``a, b, c``: the first ``most`` keys, and how many more (a file may have thousands)."""
    names = [str(key) for key in keys]
    more = f", ... ({len(names) - most:,} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def idle_agents(
    agents: Mapping[str, Draft], tasks: Mapping[str, Draft], yf: YamlFile
) -> tuple[str, ...]:
    """Agents that no task uses and no agent can delegate to."""
    used = {draft.fields.get("agent") for draft in tasks.values()}
    for key, draft in agents.items():
        if draft.fields.get("allow_delegation"):
            used.update(draft.fields.get("delegates") or (k for k in agents if k != key))
    return tuple(
        f"{yf.where(d.loc)}: not used by any task." for k, d in agents.items() if k not in used
    )
