"""The output models of a CrewAI project (``output_pydantic``, ``output_json``), rebuilt with
``pydantic.create_model`` from the class definitions of its package, never imported."""

from __future__ import annotations

import ast
import functools
import operator
from pathlib import Path
from typing import Any

from crew.crewai.python import Module, modules_of, name_of
from crew.errors import ConfigError
from crew.yamlfile import read_text

_SIMPLE_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_FIELD_SETTINGS = {"default", "description", "title", "examples", "ge", "gt", "le", "lt"}


class Models:
    """Pydantic models rebuilt from the class definitions of the package, never imported."""

    def __init__(self, package: Path, crew_module: Module | None) -> None:
        self._package, self._crew_module = package, crew_module
        self._built: dict[str, Any] = {}
        self._building: set[str] = set()

    @functools.cached_property
    def classes(self) -> dict[str, ast.ClassDef]:
        """Classes by name: the crew's module's first, then those of the package's others."""
        first = self._crew_module
        trees = [first.tree] if first is not None else []
        for path in modules_of(self._package):
            if first is None or path != first.path:
                try:
                    trees.append(ast.parse(read_text(path)))
                except (ConfigError, SyntaxError, ValueError, RecursionError, MemoryError):
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
        parents = [name_of(base) for base in node.bases] if node is not None else []
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
                and name_of(stmt.annotation) != "ClassVar"
            }
            doc = ast.get_docstring(node)
            self._built[name] = create_model(name, __base__=base, __doc__=doc, **fields)
        finally:
            self._building.discard(name)
        return self._built[name]

    def _field(self, stmt: ast.AnnAssign) -> tuple[Any, Any]:
        name = name_of(stmt.target)
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
        name = name_of(node)
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
        if not (isinstance(node, ast.Call) and name_of(node) == "Field"):
            return ast.literal_eval(node)
        settings = {"default": ast.literal_eval(node.args[0])} if node.args else {}
        for keyword in node.keywords:
            if keyword.arg == "default_factory":
                settings[keyword.arg] = {"list": list, "dict": dict}[name_of(keyword.value)]
            elif keyword.arg in _FIELD_SETTINGS:
                settings[str(keyword.arg)] = ast.literal_eval(keyword.value)
        return Field(**settings)
    except (ValueError, TypeError, SyntaxError, KeyError) as exc:
        raise ValueError(f"the default of field '{name}' is computed") from exc
