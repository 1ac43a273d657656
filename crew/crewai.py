"""CrewAI projects, run unchanged: ``crew run DIR`` on a folder made by ``crewai create crew``.

Two layouts are read: ``DIR/config/{agents,tasks}.yaml``, and ``DIR/src/<package>/`` holding
``config/``, ``crew.py`` and ``main.py``. crew.py and main.py are read with ``ast``: no code of
the project is ever imported or run. CrewAI's semantics are kept:

- Task order is that of the ``@task`` methods of the ``@CrewBase`` class (or the
  ``tasks=[self.a(), ...]`` of its ``@crew`` method); without crew.py, that of tasks.yaml, whose
  entries no ``@task`` method uses are ignored (with a warning).
- A task without ``context`` depends on every earlier task, as CrewAI hands it all earlier
  outputs; an ``async_execution`` task without ``context`` depends on none. ``context`` lists a
  task's only dependencies, so tasks with disjoint contexts run in parallel.
- A value set in crew.py (``Task(agent=self.researcher(), output_file=...)``) overrides YAML.
- Every ``{placeholder}`` is a required input. Literal values of main.py's ``inputs = {...}``
  (strings, numbers, booleans, lists) are defaults; computed ones such as
  ``str(datetime.now().year)`` are skipped, so those inputs must be given.
- ``output_pydantic``/``output_json`` classes of the package are rebuilt from their annotations
  with ``pydantic.create_model`` when their field types are simple.

What cannot run here (tools, callbacks, custom LLM objects, a hierarchical process, memory,
planning, knowledge sources) gives one warning each, never a failure. Mistakes in the project
raise one ConfigError listing every problem with its file, line and field.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crew.agent import Agent
from crew.crew import Crew
from crew.errors import ConfigError, did_you_mean
from crew.inputs import InputSpec
from crew.llm import LLM
from crew.prompts import placeholders
from crew.spec import CrewFile
from crew.task import Task
from crew.yamlfile import load_yaml


@dataclass(frozen=True)
class CrewAIProject:
    """A CrewAI project loaded as a crew."""

    crew_file: CrewFile
    output_files: dict[str, Path] = field(default_factory=dict)
    """Task id -> the file to write the task's output to after the run (CrewAI's
    ``output_file``), relative to the project folder. It may hold ``{placeholders}``, to fill
    from the run's inputs with ``crew.prompts.interpolate``."""


def is_crewai_project(path: Path) -> bool:
    """Whether ``path`` is a CrewAI project folder, in either layout."""
    return _package_dir(Path(path)) is not None


def load_crewai_project(
    path: Path, *, resolve_llm: Callable[[str], Any] | None = None
) -> CrewAIProject:
    """Read the CrewAI project in ``path`` as a crew, without running any of its code.

    Args:
        path: the project folder.
        resolve_llm: turns an agent's ``llm:`` string into a model; by default ``LLM(value)``.

    Raises:
        ConfigError: listing every problem, each with its file, line and field.
    """
    path = Path(path)
    package = _package_dir(path)
    if package is None:
        raise ConfigError(
            f"{path}: not a CrewAI project: expected config/agents.yaml and config/tasks.yaml"
            " in it or in src/<package>/."
        )
    return _Loader(path, package, resolve_llm or LLM).load()


def _package_dir(path: Path) -> Path | None:
    """The folder holding ``config/`` and ``crew.py``: ``path`` or ``path/src/<package>``."""
    if not path.is_dir():
        return None
    src = path / "src"
    for folder in [path, *sorted(p for p in src.glob("*") if p.is_dir())]:
        if any((folder / "config" / name).is_file() for name in ("agents.yaml", "tasks.yaml")):
            return folder
        crew_py = folder / "crew.py"
        if crew_py.is_file() and "CrewBase" in crew_py.read_text("utf-8", errors="replace"):
            return folder
    return None


@dataclass(frozen=True)
class _Code:
    """An expression of crew.py that is not a literal: ``SerperDevTool()``, ``self.writer()``."""

    text: str
    name: str
    """What it calls or names: ``SerperDevTool``, ``writer``."""
    self_call: bool = False
    """``self.<method>()``: a reference to an ``@agent`` or ``@task`` method."""


@dataclass
class _Entry:
    """One agent, task or crew as read: its fields, and where each was read."""

    name: str
    origin: str
    """``path:line name``, the prefix of problems about the whole entry."""
    values: dict[str, Any] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    """Field (``agent``, or ``context.1`` for an item) -> ``path:line name.field``."""
    config_key: str | None = None
    """For a crew.py method: the key in ``config=self.tasks_config['...']``."""
    broken: bool = False
    """Its config is missing (reported once; its fields are not checked)."""

    def where_of(self, key: str) -> str:
        return self.where.get(key) or self.where.get(key.split(".")[0]) or self.origin


@dataclass
class _CrewPy:
    """What the ``@CrewBase`` class of crew.py declares."""

    doc: str = ""
    configs: dict[str, str] = field(
        default_factory=lambda: {"agents": "config/agents.yaml", "tasks": "config/tasks.yaml"}
    )
    methods: dict[str, dict[str, _Entry]] = field(
        default_factory=lambda: {"agent": {}, "task": {}, "crew": {}}
    )
    hooks: list[str] = field(default_factory=list)
    llms: set[str] = field(default_factory=set)
    """``@llm`` methods, which a YAML ``llm:`` may name."""


_BUILDS = {"agent": "Agent", "task": "Task", "crew": "Crew"}
_DECORATORS = (*_BUILDS, "llm", "before_kickoff", "after_kickoff")


def _read_crew_py(tree: ast.Module, path: Path) -> _CrewPy:
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    found = next((c for c in classes if "CrewBase" in map(_name_of, c.decorator_list)), None)
    if found is None:
        return _CrewPy()
    result = _CrewPy(doc=ast.get_docstring(found) or "")
    for stmt in found.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            for target in stmt.targets:  # agents_config = 'config/agents.yaml'
                kind = _name_of(target).removesuffix("_config")
                if kind in result.configs and isinstance(stmt.value.value, str):
                    result.configs[kind] = stmt.value.value
        elif isinstance(stmt, ast.FunctionDef):
            names = [_name_of(d) for d in stmt.decorator_list]
            decorator = next((n for n in names if n in _DECORATORS), "")
            if decorator in _BUILDS:
                result.methods[decorator][stmt.name] = _method(path, stmt, _BUILDS[decorator])
            elif decorator == "llm":
                result.llms.add(stmt.name)
            elif decorator:
                result.hooks.append(f"@{decorator} {stmt.name}")
    return result


def _method(path: Path, method: ast.FunctionDef, builds: str) -> _Entry:
    """The keyword arguments of the ``Agent(...)``/``Task(...)``/``Crew(...)`` a method returns."""
    entry = _Entry(method.name, origin=f"{path}:{method.lineno} {method.name}")
    calls = (n for n in ast.walk(method) if isinstance(n, ast.Call) and _name_of(n) == builds)
    call = next(calls, None)
    for keyword in call.keywords if call is not None else ():
        key = keyword.arg or "config"  # Agent(**self.agents_config['x']) is a config too
        entry.where[key] = f"{path}:{keyword.value.lineno} {method.name}.{key}"
        entry.config_key = _config_key(keyword.value) if key == "config" else entry.config_key
        if key != "config" or entry.config_key is None:
            entry.values[key] = _value(keyword.value)
    return entry


def _config_key(node: ast.expr) -> str | None:
    """``'x'`` from ``self.tasks_config['x']``."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
        key = node.slice
        if _is_self(node.value.value) and isinstance(key, ast.Constant):
            return key.value if isinstance(key.value, str) else None
    return None


def _value(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, ast.List | ast.Tuple):
        return [_value(item) for item in node.elts]
    self_call = isinstance(node, ast.Call) and _is_self(getattr(node.func, "value", None))
    return _Code(ast.unparse(node), _name_of(node), self_call)


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return _name_of(node.func)
    if isinstance(node, ast.Subscript):
        return _name_of(node.value)
    if isinstance(node, ast.Attribute | ast.Name):
        return node.attr if isinstance(node, ast.Attribute) else node.id
    return ast.unparse(node)


def _is_self(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _label(value: Any) -> str:
    return value.name if isinstance(value, _Code) else str(value)


def _is_ref(value: Any) -> bool:
    """A name (YAML) or ``self.<method>()`` (crew.py)."""
    return isinstance(value, str) or (isinstance(value, _Code) and value.self_call)


def _hint(name: str, options: Iterable[str], what: str) -> str:
    """Did you mean: the close match sharing the longest prefix, else the known names."""
    options = list(options)
    if hint := did_you_mean(name, options, cutoff=0.4, by_prefix=True):
        return hint
    return f" (known {what}: {', '.join(options)})" if options else f" (there are no {what})"


def _main_inputs(tree: ast.Module) -> dict[str, Any]:
    """The literal values of main.py's ``inputs = {...}``, preferring the one in ``run()``."""
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    for scope in (*runs, tree):
        for node in ast.walk(scope):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Dict)
                and any(_name_of(t) == "inputs" for t in node.targets)
            ):
                pairs = zip(node.value.keys, node.value.values, strict=True)
                found = {k.value: _value(v) for k, v in pairs if isinstance(k, ast.Constant)}
                return {k: v for k, v in found.items() if isinstance(k, str) and _plain(v)}
    return {}


def _plain(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(isinstance(item, str | int | float | bool) for item in items)


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


class _Loader:
    """One load of one project: collects every problem and warning on the way."""

    def __init__(self, path: Path, package: Path, resolve_llm: Callable[[str], Any]) -> None:
        self.path, self.package, self.resolve_llm = path, package, resolve_llm
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.agents: dict[str, _Entry] = {}
        self.built: dict[str, Agent | None] = {}
        self.crew_py = _CrewPy()

    def load(self) -> CrewAIProject:
        tree = self._parse(self.package / "crew.py")
        self.crew_py = _read_crew_py(tree, self.package / "crew.py") if tree else _CrewPy()
        self.models = _Models(self.package, tree)
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
            inputs=_inputs(ready, output_files, _main_inputs(main) if main else {}),
            description=self.crew_py.doc,
            warnings=tuple(dict.fromkeys(self.warnings)),
        )
        return CrewAIProject(crew_file, output_files)

    def _parse(self, path: Path) -> ast.Module | None:
        if not path.is_file():
            return None
        try:
            return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            self.problems.append(
                f"{path}:{exc.lineno}: invalid Python: {exc.msg}. crew reads this file without"
                " running it, but it must parse."
            )
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.problems.append(f"{path}: cannot read the file: {exc}.")
        return None

    def _yaml(self, file: Path, kind: str) -> dict[str, _Entry]:
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
        entries: dict[str, _Entry] = {}
        for name, settings in (doc.data or {}).items():
            if not isinstance(settings, dict):
                self.problems.append(f"{doc.where((name,))}: expected the settings of '{name}'.")
                continue
            entry = entries[str(name)] = _Entry(str(name), doc.where((name,)), dict(settings))
            for key, value in settings.items():
                entry.where[key] = doc.where((name, key))
                for i in range(len(value) if isinstance(value, list) else 0):
                    entry.where[f"{key}.{i}"] = doc.where((name, key, i))
        return entries

    def _merge(self, method: _Entry, configs: dict[str, _Entry], kind: str) -> _Entry:
        """A crew.py method's entry over the YAML entry its config names."""
        entry, key = _Entry(method.name, method.origin), method.config_key
        if key is not None and key not in configs:
            entry.broken, file = True, self.crew_py.configs[kind]
            hint = _hint(key, configs, kind)
            self.problems.append(f"{method.where_of('config')}: {file} has no '{key}'{hint}")
        elif key is not None:
            found = configs[key]
            entry = _Entry(method.name, found.origin, dict(found.values), dict(found.where))
        for name, value in method.values.items():
            entry.values[name] = value
            entry.where = {k: w for k, w in entry.where.items() if k.split(".")[0] != name}
            entry.where[name] = method.where[name]
        return entry

    def _task_entries(self, tasks_yaml: dict[str, _Entry]) -> tuple[list[str], dict[str, _Entry]]:
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
        crew = next(iter(methods["crew"].values()), _Entry("crew", ""))
        listed = crew.values.get("tasks")  # Crew(tasks=[self.a(), self.b()]) sets the order
        if not isinstance(listed, list) or not listed:
            return list(entries), entries
        order = list(dict.fromkeys(_label(t) for t in listed))
        for name in order:
            if name not in entries:
                hint = _hint(name, entries, "tasks")
                self.problems.append(f"{crew.where_of('tasks')}: unknown task '{name}'{hint}")
        return [n for n in order if n in entries], entries

    def _task(self, entry: _Entry, earlier: list[str], known: set[str]) -> Task | None:
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

    def _task_agent(self, entry: _Entry) -> Agent | None:
        ref = entry.values.get("agent")
        name, where = _label(ref), entry.where_of("agent")
        if ref is None:
            if not entry.broken:
                self.problems.append(
                    f"{entry.origin}: the task has no agent; add 'agent: <name>' to it in"
                    " tasks.yaml or agent=self.<name>() to its @task method."
                )
        elif not _is_ref(ref):
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

    def _agent(self, entry: _Entry) -> Agent | None:
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

    def _llm(self, entry: _Entry) -> Any:
        value = entry.values.get("llm")
        if value is None:
            return None
        if isinstance(value, str) and value not in self.crew_py.llms:
            try:
                return self.resolve_llm(value)
            except ConfigError as exc:
                self.problems.extend(f"{entry.where_of('llm')}: {p}" for p in exc.problems)
                return None
        text = value.text if isinstance(value, _Code) else value
        self.warnings.append(
            f"llm {text} (agent {entry.name}) is a custom LLM object; the agent uses the crew's"
            " default model"
        )
        return None

    def _text(self, entry: _Entry, key: str, *, required: bool = False) -> str | None:
        value = entry.values.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value).strip()
        if value is None and required and not entry.broken:
            self.problems.append(f"{entry.origin}.{key}: missing; add it to the entry.")
        elif value is not None:
            self.problems.append(
                f"{entry.where_of(key)}: expected a literal string, got {_label(value)}; crew"
                " reads crew.py without running it."
            )
        return None

    def _dependencies(self, entry: _Entry, earlier: list[str], known: set[str]) -> list[str]:
        """CrewAI's rule: no context means every earlier task, or none for an async task."""
        context = entry.values.get("context")
        if context is None:
            return [] if entry.values.get("async_execution") is True else list(earlier)
        if not isinstance(context, list):
            self.problems.append(f"{entry.where_of('context')}: expected a list of task names.")
            return []
        for i, item in enumerate(context):
            if not _is_ref(item) or _label(item) not in known:
                hint = _hint(_label(item), known, "tasks")
                where = entry.where_of(f"context.{i}")
                self.problems.append(f"{where}: unknown task '{_label(item)}'{hint}")
        return [_label(item) for item in context if _is_ref(item) and _label(item) in known]

    def _output_model(self, entry: _Entry) -> Any:
        for key in ("output_pydantic", "output_json"):
            if (ref := entry.values.get(key)) is None:
                continue
            try:
                return self.models.build(_label(ref))
            except (ValueError, TypeError) as exc:  # TypeError: pydantic refused the rebuild
                self.warnings.append(
                    f"{key} {_label(ref)} (task {entry.name}) cannot be rebuilt here: {exc};"
                    " the task returns plain text"
                )
        return None

    def _ignored(self, entry: _Entry, owner: str) -> None:
        """Warn about each setting of ``entry`` that cannot run here."""
        tools = entry.values.get("tools") or []
        for tool in tools if isinstance(tools, list) else [tools]:
            self.warnings.append(
                f"tool {_label(tool)} ({owner}) is not available here; the task runs without it"
            )
        process = entry.values.get("process")
        if _label(process) == "hierarchical":
            text = process.text if isinstance(process, _Code) else repr(process)
            self.warnings.append(f"process={text} ({owner}) is ignored: {_NO_MANAGER}")
        for key, reason in _IGNORED.items():
            if entry.values.get(key) not in (None, False, [], ""):
                self.warnings.append(f"{key} ({owner}) is ignored: {reason}")

    def _output_files(self, order: list[str], entries: dict[str, _Entry]) -> dict[str, Path]:
        files = {}
        for name in order:
            value = entries[name].values.get("output_file")
            if isinstance(value, str) and value.strip():
                files[name] = Path(value.strip())
            elif value is not None:
                self.warnings.append(
                    f"output_file {_label(value)} (task {name}) is not a literal path; the output"
                    " is not written to a file"
                )
        return files


_SIMPLE_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_FIELD_SETTINGS = {"default", "description", "title", "examples", "ge", "gt", "le", "lt"}


class _Models:
    """Pydantic models rebuilt from the class definitions of the package, never imported."""

    def __init__(self, package: Path, crew_tree: ast.Module | None) -> None:
        self._package, self._crew_tree = package, crew_tree
        self._built: dict[str, Any] = {}
        self._building: set[str] = set()

    @functools.cached_property
    def classes(self) -> dict[str, ast.ClassDef]:
        """Classes by name: crew.py's first, then those of the package's other modules."""
        trees = [self._crew_tree] if self._crew_tree is not None else []
        for path in sorted([*self._package.glob("*.py"), *self._package.glob("*/*.py")]):
            if path != self._package / "crew.py" and not path.parent.name.startswith("."):
                try:
                    trees.append(ast.parse(path.read_text(encoding="utf-8")))
                except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                    continue  # its classes are reported as not defined, if one is needed
        found: dict[str, ast.ClassDef] = {}
        for node in (n for tree in trees for n in ast.walk(tree)):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, node)
        return found

    def build(self, name: str) -> Any:
        """The model class ``name``; ValueError saying why when it cannot be rebuilt."""
        if name in self._built:
            return self._built[name]
        node = self.classes.get(name)
        parents = [_name_of(base) for base in node.bases] if node is not None else []
        if node is None or not any(p == "BaseModel" or p in self.classes for p in parents):
            raise ValueError(f"{name} is not a pydantic model defined in the project")
        if name in self._building:
            raise ValueError(f"{name} refers to itself")
        from pydantic import create_model

        self._building.add(name)
        try:
            base: Any = next((self.build(p) for p in parents if p in self.classes), None)
            fields: dict[str, Any] = {
                stmt.target.id: self._field(stmt)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and not stmt.target.id.startswith("_")
                and _name_of(stmt.annotation) != "ClassVar"
            }
            doc = ast.get_docstring(node)
            self._built[name] = create_model(name, __base__=base, __doc__=doc, **fields)
        finally:
            self._building.discard(name)
        return self._built[name]

    def _field(self, stmt: ast.AnnAssign) -> tuple[Any, Any]:
        name = _name_of(stmt.target)
        try:
            annotation = self._type(stmt.annotation)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"field '{name}' has type {ast.unparse(stmt.annotation)}") from exc
        return annotation, _default(stmt.value, name)

    def _type(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body  # a forward reference: "Competitor"
        if isinstance(node, ast.Constant) and node.value is None:
            return type(None)
        name = _name_of(node)
        if isinstance(node, ast.Name | ast.Attribute):
            return _SIMPLE_TYPES[name] if name in _SIMPLE_TYPES else self.build(name)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._type(node.left) | self._type(node.right)
        if isinstance(node, ast.Subscript):
            items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            args = [self._type(item) for item in items]
            if name in ("list", "List") and len(args) == 1:
                return list[args[0]]  # type: ignore[valid-type]
            if name in ("Optional", "Union"):
                return functools.reduce(
                    operator.or_, [*args, type(None)] if name == "Optional" else args
                )
        raise ValueError(ast.unparse(node))


def _default(node: ast.expr | None, name: str) -> Any:
    """A field's default: a literal, or ``Field(...)`` with literal settings."""
    from pydantic import Field

    if node is None:
        return ...
    try:
        if not (isinstance(node, ast.Call) and _name_of(node) == "Field"):
            return ast.literal_eval(node)
        settings = {"default": ast.literal_eval(node.args[0])} if node.args else {}
        for keyword in node.keywords:
            if keyword.arg == "default_factory":
                settings[keyword.arg] = {"list": list, "dict": dict}[_name_of(keyword.value)]
            elif keyword.arg in _FIELD_SETTINGS:
                settings[str(keyword.arg)] = ast.literal_eval(keyword.value)
        return Field(**settings)
    except (ValueError, TypeError, SyntaxError, KeyError) as exc:
        raise ValueError(f"the default of field '{name}' is computed") from exc
