"""Turning what was read of a CrewAI project (its YAML config and its ``@CrewBase`` class) into
a crew: agents, tasks in CrewAI's order and dependencies, inputs, output files; one warning for
each thing that cannot run here, one ConfigError listing every mistake.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crew.agent import Agent
from crew.attempt import KEEPS_TEXT
from crew.crew import Crew
from crew.crewai.models import Models
from crew.crewai.python import (
    Code,
    CrewPy,
    Entry,
    Module,
    choose_crew,
    declares_crew,
    is_ref,
    label,
    main_inputs,
    modules_of,
    read_module,
)
from crew.errors import ConfigError, did_you_mean
from crew.inputs import InputSpec
from crew.prompts import placeholders
from crew.spec import CrewFile
from crew.spec.checks import listing
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
    return f" (known {what}: {listing(options)})" if options else f" (there are no {what})"


def _inputs(
    tasks: list[Task], output_files: dict[str, Path], defaults: dict[str, Any]
) -> dict[str, InputSpec]:
    """One input per placeholder (and per main.py input), with main.py's value as default."""
    texts = [str(file) for file in output_files.values()]
    for task in tasks:
        agent = task.agent
        texts += [agent.role, agent.goal, agent.backstory] if agent is not None else []
        texts += [task.description, task.expected_output]
    names = placeholders("\n".join(texts))
    names += [name for name in defaults if name not in names]
    return {name: _input_spec(name, defaults.get(name)) for name in names}


def _owners(owners: list[str]) -> str:
    """``agents researcher, analyst; task write`` from ``agent researcher``, ..."""
    kinds: dict[str, list[str]] = {}
    for owner in dict.fromkeys(owners):
        kind, _, name = owner.partition(" ")
        kinds.setdefault(kind, []).append(name)
    return "; ".join(
        f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}" for kind, names in kinds.items()
    )


def _input_spec(name: str, default: Any) -> InputSpec:
    """CrewAI takes any value and fills it in as ``str(value)`` does: ``text``."""
    return InputSpec(name, type="text", default=default)


# crewai_tools' tools that call a paid service, and the variable holding its key.
_CREDENTIALS = {
    "SerperDevTool": "SERPER_API_KEY",
    "SerplyWebSearchTool": "SERPLY_API_KEY",
    "SerplyNewsSearchTool": "SERPLY_API_KEY",
    "EXASearchTool": "EXA_API_KEY",
    "BraveSearchTool": "BRAVE_API_KEY",
    "TavilySearchTool": "TAVILY_API_KEY",
    "TavilyExtractorTool": "TAVILY_API_KEY",
    "FirecrawlScrapeWebsiteTool": "FIRECRAWL_API_KEY",
    "FirecrawlSearchTool": "FIRECRAWL_API_KEY",
    "FirecrawlCrawlWebsiteTool": "FIRECRAWL_API_KEY",
    "BrowserbaseLoadTool": "BROWSERBASE_API_KEY",
    "ScrapflyScrapeWebsiteTool": "SCRAPFLY_API_KEY",
    "SpiderTool": "SPIDER_API_KEY",
    "ApifyActorsTool": "APIFY_API_TOKEN",
    "ComposioTool": "COMPOSIO_API_KEY",
    "DallETool": "OPENAI_API_KEY",
    "GithubSearchTool": "GITHUB_TOKEN",
}

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

    def __init__(
        self,
        path: Path,
        package: Path,
        resolve_llm: Callable[[str], Any],
        crew_class: str | None = None,
    ) -> None:
        self.path, self.package, self.resolve_llm = path, package, resolve_llm
        self.crew_class = crew_class
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.agents: dict[str, Entry] = {}
        self.built: dict[str, Agent | None] = {}
        self.crew_py = CrewPy()
        self.module: Module | None = None
        self._parsed: set[Path] = set()
        self.tools: dict[str, tuple[str, list[str]]] = {}
        """Tool class -> why it cannot run here, and who uses it: one warning per tool."""

    def load(self) -> CrewAIProject:
        modules = [
            read_module(tree, path)
            for path in modules_of(self.package)
            if path != self.package / "main.py"
            and declares_crew(path)
            and (tree := self._parse(path))
        ]
        main = self._parse(self.package / "main.py")
        classes = [c for module in modules for c in module.classes]
        chosen, problem = choose_crew(classes, main, self.crew_class, self.package)
        if problem is not None:  # which config files to read depends on the class
            raise ConfigError([*self.problems, problem])
        self.crew_py = chosen or CrewPy()
        self.module = next((m for m in modules if any(c is chosen for c in m.classes)), None)
        self.models = Models(self.package, self.module)
        folder = self.crew_py.folder or self.package
        tasks_file = folder / self.crew_py.configs["tasks"]
        agents_yaml = self._yaml(folder / self.crew_py.configs["agents"], "agents")
        tasks_yaml = self._yaml(tasks_file, "tasks")
        if self.problems:  # a file is missing or broken: checking the wiring would add noise
            raise ConfigError(self.problems)
        methods = self.crew_py.methods
        self.agents = dict(agents_yaml)
        self.agents.update(
            {n: self._merge(m, agents_yaml, "agents") for n, m in methods["agent"].items()}
        )
        # A task another class of the project uses (from the same tasks.yaml) is not unused.
        used = {
            method.config_key
            for c in classes
            if (c.folder or folder).joinpath(c.configs["tasks"]).resolve() == tasks_file.resolve()
            for method in c.methods["task"].values()
        }
        order, entries = self._task_entries(tasks_yaml, used)
        if not order:
            self.problems.append(f"{tasks_file}: the project has no tasks.")
        tasks = [self._task(entries[n], order[:i], set(order)) for i, n in enumerate(order)]
        for hook in self.crew_py.hooks:
            self.warnings.append(f"{hook} (crew) is ignored: hooks are not run here")
        for entry in methods["crew"].values():
            self._ignored(entry, "crew")
        for tool, (reason, owners) in self.tools.items():
            self.warnings.append(
                f"tool {tool} ({_owners(owners)}) is not available here: {reason}; the tasks"
                " run without it"
            )
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
        if not path.is_file() or path in self._parsed:
            return None
        self._parsed.add(path)
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

    def _task_entries(
        self, tasks_yaml: dict[str, Entry], used: set[str | None]
    ) -> tuple[list[str], dict[str, Entry]]:
        """The task order and entries: the class's ``@task`` methods if any, else tasks.yaml."""
        methods = self.crew_py.methods
        if not methods["task"]:
            return list(tasks_yaml), tasks_yaml
        entries = {n: self._merge(m, tasks_yaml, "tasks") for n, m in methods["task"].items()}
        for entry in (e for name, e in tasks_yaml.items() if name not in used):
            self.warnings.append(f"{entry.origin}: not used by any @task method; ignored")
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
                " reads the project's Python without running it."
            )
        return None

    def _dependencies(self, entry: Entry, earlier: list[str], known: set[str]) -> list[str]:
        """CrewAI's rule: no context means every earlier task, or none for an async task.

        CrewAI's ``Crew._execute_tasks`` hands an async task ``[last_sync_output]``, but sets
        ``last_sync_output`` only for tasks skipped when replaying (``crewai replay``); in a
        kickoff it stays None, so an async task without ``context`` gets no context.
        """
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
                model = self.models.build(label(ref))
                setattr(model, KEEPS_TEXT, True)  # CrewAI keeps an answer that does not parse
                return model
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
            name, reason = self._tool(tool)
            self.tools.setdefault(name, (reason, []))[1].append(owner)
        process = entry.values.get("process")
        if label(process) == "hierarchical":
            text = process.text if isinstance(process, Code) else repr(process)
            self.warnings.append(f"process={text} ({owner}) is ignored: {_NO_MANAGER}")
        for key, reason in _IGNORED.items():
            if entry.values.get(key) not in (None, False, [], ""):
                self.warnings.append(f"{key} ({owner}) is ignored: {reason}")

    def _tool(self, value: Any) -> tuple[str, str]:
        """A tool's class, found through the names that hold it (tools.yaml's ``search_tool``:
        an ``@tool`` method or a module variable), and why it cannot run here."""
        methods, names = self.crew_py.tools, self.module.names if self.module else {}
        for _ in range(4):  # search_tool -> self.search_tool() -> SerperDevTool()
            name = label(value)
            if not isinstance(value, str | Code):
                break
            is_name = isinstance(value, str) or value.self_call or value.text == name
            found = methods.get(name) if isinstance(value, str) or value.self_call else None
            found = names.get(name) if found is None else found
            if not is_name or found is None or found == value:
                break
            value = found
        name = label(value)
        imports = self.module.imports if self.module else {}
        head = value.text.split("(")[0].split(".")[0] if isinstance(value, Code) else name
        origin = imports.get(name) or imports.get(head, "")  # SerperDevTool, crewai_tools.X
        package = origin.split(".")[0]
        if not isinstance(value, str | Code):
            return name, "it is not a tool (expected a name or a tool object)"
        defined = isinstance(value, Code) and value.text in ("def", "class")
        if defined or not package or self._is_project(package):
            return name, "it is the project's own code, which crew never runs"
        reasons = [f"it needs credentials ({_CREDENTIALS[name]})"] if name in _CREDENTIALS else []
        try:
            installed = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            installed = False
        reasons.append(
            f"crew does not run {package}'s tools"
            if installed
            else f"its package {package} is not installed"
        )
        return name, " and ".join(reasons)

    def _is_project(self, package: str) -> bool:
        """Whether an import's top-level name is the project's own package or module."""
        folder = self.package
        return package == folder.name or any(
            p.exists() for p in (folder / package, folder / f"{package}.py")
        )

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
