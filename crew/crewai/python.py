"""Reading a CrewAI project's Python without running it: the ``@CrewBase`` class of crew.py
(its ``@agent``, ``@task`` and ``@crew`` methods, config paths, ``@llm`` methods and hooks) and
the literal ``inputs`` of main.py, parsed with ``ast``. Expressions that are not literals are
kept as ``Code``, so the loader can say what it cannot run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    """What the ``@CrewBase`` class of crew.py declares."""

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


_BUILDS = {"agent": "Agent", "task": "Task", "crew": "Crew"}
_DECORATORS = (*_BUILDS, "llm", "before_kickoff", "after_kickoff")


def read_crew_py(tree: ast.Module, path: Path) -> CrewPy:
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    found = next((c for c in classes if "CrewBase" in map(name_of, c.decorator_list)), None)
    if found is None:
        return CrewPy()
    result = CrewPy(doc=ast.get_docstring(found) or "")
    for stmt in found.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            for target in stmt.targets:  # agents_config = 'config/agents.yaml'
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
    """The literal values of main.py's ``inputs = {...}``, preferring the one in ``run()``."""
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    for scope in (*runs, tree):
        for node in ast.walk(scope):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Dict)
                and any(name_of(t) == "inputs" for t in node.targets)
            ):
                pairs = zip(node.value.keys, node.value.values, strict=True)
                found = {k.value: _value(v) for k, v in pairs if isinstance(k, ast.Constant)}
                return {k: v for k, v in found.items() if isinstance(k, str) and _plain(v)}
    return {}


def _plain(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(isinstance(item, str | int | float | bool) for item in items)
