"""Reading a CrewAI project's Python without running it, with ``ast``: the ``@CrewBase`` classes
of any module (their ``@agent``, ``@task``, ``@crew`` and ``@tool`` methods, config paths,
``@llm`` methods and hooks), what each module imports and assigns (to tell where a tool comes
from), and main.py's literal ``inputs`` and the classes it kicks off. Expressions that are not
literals are kept as ``Code``, so the loader can say what it cannot run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crew.errors import did_you_mean
from crew.yamlfile import MAX_BYTES


@dataclass(frozen=True)
class Code:
    """An expression of crew.py that is not a literal: ``SerperDevTool()``, ``self.writer()``."""

    text: str
    name: str
    """What it calls or names: ``SerperDevTool``, ``writer``."""
    self_call: bool = False
    """``self.<method>()``: a reference to an ``@agent`` or ``@task`` method."""


@dataclass
class Entry:
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
class CrewPy:
    """What one ``@CrewBase`` class declares."""

    name: str = ""
    """The class name, which ``--crew`` chooses."""
    path: Path | None = None
    """Its module; ``agents_config`` and ``tasks_config`` are relative to its folder."""
    doc: str = ""
    configs: dict[str, str] = field(
        default_factory=lambda: {"agents": "config/agents.yaml", "tasks": "config/tasks.yaml"}
    )
    methods: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {"agent": {}, "task": {}, "crew": {}}
    )
    hooks: list[str] = field(default_factory=list)
    llms: set[str] = field(default_factory=set)
    """``@llm`` methods, which a YAML ``llm:`` may name."""
    tools: dict[str, Any] = field(default_factory=dict)
    """``@tool`` methods, which a YAML ``tools:`` may name -> what they return."""

    @property
    def folder(self) -> Path | None:
        return self.path.parent if self.path is not None else None


@dataclass
class Module:
    """One module of the project, as read."""

    path: Path
    tree: ast.Module
    classes: list[CrewPy]
    """Its ``@CrewBase`` classes, in order."""
    imports: dict[str, str] = field(default_factory=dict)
    """Name -> the module it is imported from (``.tools`` for a relative import)."""
    names: dict[str, Any] = field(default_factory=dict)
    """Module-level names -> their value (``search_tool = SerperDevTool()``); a function or
    class defined here is ``Code("def" or "class", its name)``."""


_BUILDS = {"agent": "Agent", "task": "Task", "crew": "Crew"}
_DECORATORS = (*_BUILDS, "llm", "tool", "before_kickoff", "after_kickoff")


def read_module(tree: ast.Module, path: Path) -> Module:
    """The ``@CrewBase`` classes of a module, its imports and its top-level names."""
    module = Module(path, tree, [])
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            origin = "." * node.level + (node.module or "")
            module.imports.update({a.asname or a.name: origin for a in node.names})
        elif isinstance(node, ast.Import):
            module.imports.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                module.names[name_of(target)] = _value(node.value)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            module.names[node.name] = Code(kind, node.name)
            if kind == "class" and "CrewBase" in map(name_of, node.decorator_list):
                module.classes.append(_crew_class(node, path))  # type: ignore[arg-type]
    return module


def _crew_class(found: ast.ClassDef, path: Path) -> CrewPy:
    result = CrewPy(name=found.name, path=path, doc=ast.get_docstring(found) or "")
    for stmt in found.body:
        if isinstance(stmt, ast.Assign | ast.AnnAssign) and isinstance(stmt.value, ast.Constant):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:  # agents_config = 'config/agents.yaml' (or ...: str = ...)
                kind = name_of(target).removesuffix("_config")
                if kind in result.configs and isinstance(stmt.value.value, str):
                    result.configs[kind] = stmt.value.value
        elif isinstance(stmt, ast.FunctionDef):
            names = [name_of(d) for d in stmt.decorator_list]
            decorator = next((n for n in names if n in _DECORATORS), "")
            if decorator in _BUILDS:
                result.methods[decorator][stmt.name] = _method(path, stmt, _BUILDS[decorator])
            elif decorator == "llm":
                result.llms.add(stmt.name)
            elif decorator == "tool":
                returns = (n.value for n in ast.walk(stmt) if isinstance(n, ast.Return))
                returned = next((value for value in returns if value is not None), None)
                result.tools[stmt.name] = _value(returned) if returned is not None else None
            elif decorator:
                result.hooks.append(f"@{decorator} {stmt.name}")
    return result


def _method(path: Path, method: ast.FunctionDef, builds: str) -> Entry:
    """The keyword arguments of the ``Agent(...)``/``Task(...)``/``Crew(...)`` a method returns."""
    entry = Entry(method.name, origin=f"{path}:{method.lineno} {method.name}")
    calls = (n for n in ast.walk(method) if isinstance(n, ast.Call) and name_of(n) == builds)
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
    return Code(ast.unparse(node), name_of(node), self_call)


def name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return name_of(node.func)
    if isinstance(node, ast.Subscript):
        return name_of(node.value)
    if isinstance(node, ast.Attribute | ast.Name):
        return node.attr if isinstance(node, ast.Attribute) else node.id
    return ast.unparse(node)


def _is_self(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def label(value: Any) -> str:
    return value.name if isinstance(value, Code) else str(value)


def is_ref(value: Any) -> bool:
    """A name (YAML) or ``self.<method>()`` (crew.py)."""
    return isinstance(value, str) or (isinstance(value, Code) and value.self_call)


def main_inputs(tree: ast.Module) -> dict[str, Any]:
    """The literal values of main.py's ``inputs = {...}`` (or ``kickoff(inputs={...})``),
    preferring the one in ``run()``."""
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    for scope in (*runs, tree):
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and any(name_of(t) == "inputs" for t in node.targets):
                value: ast.expr = node.value
            elif isinstance(node, ast.keyword) and node.arg == "inputs":
                value = node.value
            else:
                continue
            if isinstance(value, ast.Dict):
                pairs = zip(value.keys, value.values, strict=True)
                found = {k.value: _value(v) for k, v in pairs if isinstance(k, ast.Constant)}
                return {k: v for k, v in found.items() if isinstance(k, str) and _plain(v)}
    return {}


def called(tree: ast.Module) -> list[str]:
    """The names main.py calls, in order: ``ContentCrew`` in ``ContentCrew().crew().kickoff()``."""
    calls = (name_of(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call))
    return list(dict.fromkeys(calls))


def _plain(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(isinstance(item, str | int | float | bool) for item in items)


_NOT_PROJECT_CODE = {"__pycache__", "node_modules", "site-packages", "venv", "tests", "test"}


def modules_of(folder: Path) -> list[Path]:
    """The Python files under ``folder``, sorted, leaving out tests, virtualenvs and hidden
    folders."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).parts[:-1]
        if not any(p.startswith(".") or p in _NOT_PROJECT_CODE for p in parts):
            found.append(path)
    return found


def declares_crew(path: Path) -> bool:
    """Whether a module's text names ``CrewBase`` (so it is worth parsing)."""
    try:
        with path.open("rb") as file:
            return b"CrewBase" in file.read(MAX_BYTES + 1)
    except OSError:
        return False


def choose_crew(
    classes: list[CrewPy], main: ast.Module | None, chosen: str | None, where: Path
) -> tuple[CrewPy | None, str | None]:
    """The ``@CrewBase`` class to run, else a problem: the one ``--crew`` names, the only one,
    or the one main.py kicks off."""
    names = list(dict.fromkeys(c.name for c in classes))
    if chosen is not None:
        found = next((c for c in classes if c.name == chosen), None)
        if found is None:
            hint = did_you_mean(chosen, names) or f" (classes: {', '.join(names) or 'none'})"
            return None, f"--crew {chosen}: the project has no @CrewBase class {chosen}{hint}."
        return found, None
    if len(classes) <= 1:
        return (classes[0] if classes else None), None
    started = [n for n in called(main) if n in names] if main is not None else []
    if len(started) == 1:
        return next(c for c in classes if c.name == started[0]), None
    listed = ", ".join(f"{c.name} ({c.path})" for c in classes)
    why = "main.py kicks off several of them" if started else "main.py kicks off none of them"
    return None, (
        f"{where}: the project has {len(classes)} @CrewBase classes: {listed}; {why}."
        f" Choose one with --crew {names[0]}."
    )
