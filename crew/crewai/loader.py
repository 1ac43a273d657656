"""Turning what was read of a CrewAI project (its YAML config and crew.py) into a crew: agents,
tasks in CrewAI's order and dependencies, inputs, output files; one warning for each thing that
cannot run here, one ConfigError listing every mistake.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crew.agent import Agent
from crew.crew import Crew
from crew.crewai.models import Models
from crew.crewai.python import Code, CrewPy, Entry, is_ref, label, main_inputs, read_crew_py
from crew.errors import ConfigError, did_you_mean
from crew.inputs import InputSpec
from crew.prompts import placeholders
from crew.spec import CrewFile
from crew.task import Task
from crew.yamlfile import load_yaml, read_text


@dataclass(frozen=True)
class CrewAIProject:
    """A CrewAI project loaded as a crew."""

    crew_file: CrewFile
    output_files: dict[str, Path] = field(default_factory=dict)
    """Task id -> the file to write the task's output to after the run (CrewAI's
    ``output_file``), relative to the project folder. It may hold ``{placeholders}``, to fill
    from the run's inputs with ``crew.prompts.interpolate``."""


def _hint(name: str, options: Iterable[str], what: str) -> str:
    """Did you mean: the close match sharing the longest prefix, else the known names."""
    options = list(options)
    if hint := did_you_mean(name, options, cutoff=0.4, by_prefix=True):
        return hint
    return f" (known {what}: {', '.join(options)})" if options else f" (there are no {what})"


def _inputs(
    tasks: list[Task], output_files: dict[str, Path], defaults: dict[str, Any]
) -> dict[str, InputSpec]:
    """One input per placeholder (and per main.py input), typed by its default."""
    texts = [str(file) for file in output_files.values()]
    for task in tasks:
        agent = task.agent
        texts += [agent.role, agent.goal, agent.backstory] if agent is not None else []
        texts += [task.description, task.expected_output]
    names = placeholders("\n".join(texts))
    names += [name for name in defaults if name not in names]
    return {name: _input_spec(name, defaults.get(name)) for name in names}


def _input_spec(name: str, default: Any) -> InputSpec:
    types = ((bool, "boolean"), (int, "integer"), (float, "number"), (list, "list"))
    kind = next((k for t, k in types if isinstance(default, t)), "string")
    return InputSpec(name, type=kind, default=default)  # type: ignore[arg-type]


_NO_MANAGER = "there is no manager; the tasks run as a dependency graph"
_IGNORED = {
    **dict.fromkeys(
        ("callback", "step_callback", "task_callback", "callbacks", "guardrail"),
        "callbacks are not run here",
    ),
    "human_input": "runs take no human input here",
    "allow_code_execution": "code execution is not supported",
    "knowledge_sources": "knowledge sources are not supported",
    "memory": "memory is not supported; tasks share their outputs through the board",
    "planning": "planning is not supported; the task graph is the plan",
    "manager_llm": _NO_MANAGER,
    "manager_agent": _NO_MANAGER,
}


class Loader:
    """One load of one project: collects every problem and warning on the way."""

    def __init__(self, path: Path, package: Path, resolve_llm: Callable[[str], Any]) -> None:
        self.path, self.package, self.resolve_llm = path, package, resolve_llm
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.agents: dict[str, Entry] = {}
        self.built: dict[str, Agent | None] = {}
        self.crew_py = CrewPy()

    def load(self) -> CrewAIProject:
        tree = self._parse(self.package / "crew.py")
        self.crew_py = read_crew_py(tree, self.package / "crew.py") if tree else CrewPy()
        self.models = Models(self.package, tree)
        main = self._parse(self.package / "main.py")
        tasks_file = self.package / self.crew_py.configs["tasks"]
        agents_yaml = self._yaml(self.package / self.crew_py.configs["agents"], "agents")
        tasks_yaml = self._yaml(tasks_file, "tasks")
        if self.problems:  # a file is missing or broken: checking the wiring would add noise
            raise ConfigError(self.problems)
        methods = self.crew_py.methods
        self.agents = dict(agents_yaml)
        self.agents.update(
            {n: self._merge(m, agents_yaml, "agents") for n, m in methods["agent"].items()}
        )
        order, entries = self._task_entries(tasks_yaml)
        if not order:
            self.problems.append(f"{tasks_file}: the project has no tasks.")
        tasks = [self._task(entries[n], order[:i], set(order)) for i, n in enumerate(order)]
        for hook in self.crew_py.hooks:
            self.warnings.append(f"{hook} (crew) is ignored: hooks are not run here")
        for entry in methods["crew"].values():
            self._ignored(entry, "crew")
        output_files = self._output_files(order, entries)
        if self.problems:
            raise ConfigError(self.problems)
        ready = [task for task in tasks if task is not None]
        crew_file = CrewFile(
            crew=Crew(ready, name=self.path.resolve().name),
            source=self.path,
            inputs=_inputs(ready, output_files, main_inputs(main) if main else {}),
            description=self.crew_py.doc,
            warnings=tuple(dict.fromkeys(self.warnings)),
        )
        return CrewAIProject(crew_file, output_files)

    def _parse(self, path: Path) -> ast.Module | None:
        if not path.is_file():
            return None
        try:
            return ast.parse(read_text(path), filename=str(path))
        except ConfigError as exc:  # too large, or not UTF-8 text
            self.problems.extend(exc.problems)
        except SyntaxError as exc:
            self.problems.append(
                f"{path}:{exc.lineno}: invalid Python: {exc.msg}. crew reads this file without"
                " running it, but it must parse."
            )
        except (MemoryError, RecursionError) as exc:  # the parser's limits: nested too deeply
            self.problems.append(
                f"{path}: invalid Python: nested too deeply for Python's parser"
                f" ({type(exc).__name__}); crew reads this file without running it, but it must"
                " parse."
            )
        except ValueError as exc:
            self.problems.append(f"{path}: cannot read the file: {exc}.")
        return None

    def _yaml(self, file: Path, kind: str) -> dict[str, Entry]:
        if not file.is_file():
            self.problems.append(f"{file}: not found; a CrewAI project declares its {kind} there.")
            return {}
        try:
            doc = load_yaml(file)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return {}
        if not isinstance(doc.data, dict | None):
            self.problems.append(f"{doc.where(())}: expected {kind} by name, each a mapping.")
            return {}
        entries: dict[str, Entry] = {}
        for name, settings in (doc.data or {}).items():
            if not isinstance(settings, dict):
                self.problems.append(f"{doc.where((name,))}: expected the settings of '{name}'.")
                continue
            entry = entries[str(name)] = Entry(str(name), doc.where((name,)), dict(settings))
            for key, value in settings.items():
                entry.where[key] = doc.where((name, key))
                for i in range(len(value) if isinstance(value, list) else 0):
                    entry.where[f"{key}.{i}"] = doc.where((name, key, i))
        return entries

    def _merge(self, method: Entry, configs: dict[str, Entry], kind: str) -> Entry:
        """A crew.py method's entry over the YAML entry its config names."""
        entry, key = Entry(method.name, method.origin), method.config_key
        if key is not None and key not in configs:
            entry.broken, file = True, self.crew_py.configs[kind]
            hint = _hint(key, configs, kind)
            self.problems.append(f"{method.where_of('config')}: {file} has no '{key}'{hint}")
        elif key is not None:
            found = configs[key]
            entry = Entry(method.name, found.origin, dict(found.values), dict(found.where))
        for name, value in method.values.items():
            entry.values[name] = value
            entry.where = {k: w for k, w in entry.where.items() if k.split(".")[0] != name}
            entry.where[name] = method.where[name]
        return entry

    def _task_entries(self, tasks_yaml: dict[str, Entry]) -> tuple[list[str], dict[str, Entry]]:
        """The task order and entries: crew.py's ``@task`` methods if any, else tasks.yaml."""
        methods = self.crew_py.methods
        if not methods["task"]:
            return list(tasks_yaml), tasks_yaml
        entries = {n: self._merge(m, tasks_yaml, "tasks") for n, m in methods["task"].items()}
        used = {m.config_key for m in methods["task"].values()}
        for entry in (e for name, e in tasks_yaml.items() if name not in used):
            self.warnings.append(
                f"{entry.origin}: not used by any @task method of crew.py; ignored"
            )
        crew = next(iter(methods["crew"].values()), Entry("crew", ""))
        listed = crew.values.get("tasks")  # Crew(tasks=[self.a(), self.b()]) sets the order
        if not isinstance(listed, list) or not listed:
            return list(entries), entries
        order = list(dict.fromkeys(label(t) for t in listed))
        for name in order:
            if name not in entries:
                hint = _hint(name, entries, "tasks")
                self.problems.append(f"{crew.where_of('tasks')}: unknown task '{name}'{hint}")
        return [n for n in order if n in entries], entries

    def _task(self, entry: Entry, earlier: list[str], known: set[str]) -> Task | None:
        agent = self._task_agent(entry)
        depends_on = self._dependencies(entry, earlier, known)
        description = self._text(entry, "description", required=True)
        expected_output = self._text(entry, "expected_output") or ""
        output_model = self._output_model(entry)
        self._ignored(entry, f"task {entry.name}")
        if agent is None or description is None:
            return None
        try:
            return Task(entry.name, description, expected_output, agent, depends_on, output_model)
        except ConfigError as exc:
            self.problems.extend(f"{entry.origin}: {problem}" for problem in exc.problems)
            return None

    def _task_agent(self, entry: Entry) -> Agent | None:
        ref = entry.values.get("agent")
        name, where = label(ref), entry.where_of("agent")
        if ref is None:
            if not entry.broken:
                self.problems.append(
                    f"{entry.origin}: the task has no agent; add 'agent: <name>' to it in"
                    " tasks.yaml or agent=self.<name>() to its @task method."
                )
        elif not is_ref(ref):
            self.problems.append(f"{where}: expected an agent name or self.<agent>(), got {ref}.")
        elif name not in self.agents:
            self.problems.append(
                f"{where}: unknown agent '{name}'{_hint(name, self.agents, 'agents')}"
            )
        else:
            if name not in self.built:  # one Agent per agent, shared by its tasks
                self.built[name] = self._agent(self.agents[name])
            return self.built[name]
        return None

    def _agent(self, entry: Entry) -> Agent | None:
        role = self._text(entry, "role", required=True)
        goal, backstory = self._text(entry, "goal") or "", self._text(entry, "backstory") or ""
        llm, max_iter = self._llm(entry), entry.values.get("max_iter")
        self._ignored(entry, f"agent {entry.name}")
        settings: dict[str, Any] = {}
        if entry.values.get("allow_delegation") is True:  # CrewAI: may ask any other agent
            settings["allow_delegation"] = True
        if isinstance(max_iter, int) and not isinstance(max_iter, bool):
            settings["max_iterations"] = max_iter
        elif max_iter is not None:
            self.problems.append(f"{entry.where_of('max_iter')}: expected a whole number.")
        if role is None:
            return None
        try:
            return Agent(role=role, goal=goal, backstory=backstory, llm=llm, **settings)
        except ConfigError as exc:
            self.problems.extend(f"{entry.origin}: {problem}" for problem in exc.problems)
            return None

    def _llm(self, entry: Entry) -> Any:
        value = entry.values.get("llm")
        if value is None:
            return None
        if isinstance(value, str) and value not in self.crew_py.llms:
            try:
                return self.resolve_llm(value)
            except ConfigError as exc:
                self.problems.extend(f"{entry.where_of('llm')}: {p}" for p in exc.problems)
                return None
        text = value.text if isinstance(value, Code) else value
        self.warnings.append(
            f"llm {text} (agent {entry.name}) is a custom LLM object; the agent uses the crew's"
            " default model"
        )
        return None

    def _text(self, entry: Entry, key: str, *, required: bool = False) -> str | None:
        value = entry.values.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value).strip()
        if value is None and required and not entry.broken:
            self.problems.append(f"{entry.origin}.{key}: missing; add it to the entry.")
        elif value is not None:
            self.problems.append(
                f"{entry.where_of(key)}: expected a literal string, got {label(value)}; crew"
                " reads crew.py without running it."
            )
        return None

    def _dependencies(self, entry: Entry, earlier: list[str], known: set[str]) -> list[str]:
        """CrewAI's rule: no context means every earlier task, or none for an async task."""
        context = entry.values.get("context")
        if context is None:
            return [] if entry.values.get("async_execution") is True else list(earlier)
        if not isinstance(context, list):
            self.problems.append(f"{entry.where_of('context')}: expected a list of task names.")
            return []
        for i, item in enumerate(context):
            if not is_ref(item) or label(item) not in known:
                hint = _hint(label(item), known, "tasks")
                where = entry.where_of(f"context.{i}")
                self.problems.append(f"{where}: unknown task '{label(item)}'{hint}")
        return [label(item) for item in context if is_ref(item) and label(item) in known]

    def _output_model(self, entry: Entry) -> Any:
        for key in ("output_pydantic", "output_json"):
            if (ref := entry.values.get(key)) is None:
                continue
            try:
                return self.models.build(label(ref))
            except (ValueError, TypeError) as exc:  # TypeError: pydantic refused the rebuild
                self.warnings.append(
                    f"{key} {label(ref)} (task {entry.name}) cannot be rebuilt here: {exc};"
                    " the task returns plain text"
                )
        return None

    def _ignored(self, entry: Entry, owner: str) -> None:
        """Warn about each setting of ``entry`` that cannot run here."""
        tools = entry.values.get("tools") or []
        for tool in tools if isinstance(tools, list) else [tools]:
            self.warnings.append(
                f"tool {label(tool)} ({owner}) is not available here; the task runs without it"
            )
        process = entry.values.get("process")
        if label(process) == "hierarchical":
            text = process.text if isinstance(process, Code) else repr(process)
            self.warnings.append(f"process={text} ({owner}) is ignored: {_NO_MANAGER}")
        for key, reason in _IGNORED.items():
            if entry.values.get(key) not in (None, False, [], ""):
                self.warnings.append(f"{key} ({owner}) is ignored: {reason}")

    def _output_files(self, order: list[str], entries: dict[str, Entry]) -> dict[str, Path]:
        files = {}
        for name in order:
            value = entries[name].values.get("output_file")
            if isinstance(value, str) and value.strip():
                files[name] = Path(value.strip())
            elif value is not None:
                self.warnings.append(
                    f"output_file {label(value)} (task {name}) is not a literal path; the output"
                    " is not written to a file"
                )
        return files
