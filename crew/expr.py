"""Expressions in crews: a small language for conditions and mappings, parsed and never eval'ed.

YAML crews use expressions in ``when``, ``until``, ``for_each`` and subcrew input mappings::

    when: "triage.data.severity == 'high'"
    until: "critique.data.approved"
    for_each: "ideas.data.items"

The grammar is this and nothing else; anything else is rejected when the crew is loaded:

- literals: ``'text'`` or ``"text"``, ``3``, ``-1.5``, ``True``/``False``/``None`` and also
  ``true``/``false``/``null``; lists ``[1, 2]`` and tuples ``(1, 2)``.
- names: a task id (its latest board entry: ``.text``, ``.data``, ``.author``, ``.version``, ...;
  None while the task has not posted) or another name the caller provides, such as ``inputs``.
- fields: ``a.b.c`` reads a field of an object (a pydantic model, a dataclass) or a key of a
  mapping (``inputs.topic``); ``x[0]``, ``x[-1]`` and ``x['key']`` take a literal index or key.
  Names starting with ``_`` are never read.
- comparisons ``== != < <= > >= in``, ``not in``, chained as in Python: ``0 < n <= 3``.
- ``and``, ``or``, ``not``; unary ``-``; ``+ - * /`` on numbers.
- the functions ``len(x)``, ``lower(x)``, ``upper(x)``, ``str(x)``, ``int(x)``, ``float(x)``.

None propagates: a field, index, function or arithmetic of None is None, and ``x in None`` is
False, so a condition on a task that has not posted reads as false instead of failing. A name
not in scope, a missing field or key, and ordering None (``None < 3``) raise ``ConfigError``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import operator
import reprlib
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from crew.board import BoardEntry
from crew.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pydantic import BaseModel

_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "len": len, "lower": str.lower, "upper": str.upper, "str": str, "int": int, "float": float,
}  # fmt: skip
_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt), ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda a, b: b is not None and a in b),
    ast.NotIn: ("not in", lambda a, b: b is None or a not in b),
}  # fmt: skip
_ARITHMETIC: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.USub: operator.neg, ast.UAdd: operator.pos,
}  # fmt: skip
_ALLOWED = (
    ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Compare, ast.BoolOp, ast.UnaryOp,
    ast.BinOp, ast.List, ast.Tuple,
)  # fmt: skip
_REJECTED: dict[type[ast.AST], str] = {
    ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension",
    ast.NamedExpr: "an assignment (:=)", ast.JoinedStr: "an f-string",
    ast.Starred: "unpacking (*)", ast.IfExp: "a conditional (x if c else y)",
    ast.Dict: "a dict literal", ast.Set: "a set literal",
}  # fmt: skip
_MAX_DEPTH = 50  # deeper is a mistake, and evaluation recurses once per level
_MISSING = object()
_ENTRY_FIELDS = [f.name for f in dataclasses.fields(BoardEntry)]


@dataclass(frozen=True)
class Expression:
    """A parsed expression; make one with ``parse``."""

    text: str
    """The source, stripped of surrounding whitespace."""
    names: frozenset[str]
    """The top-level names it reads, such as ``{"triage"}``: the planner orders tasks by them."""
    paths: tuple[tuple[str, ...], ...]
    """Every path read from a name, in source order, such as ``("triage", "data", "severity")``;
    ``x['k']`` adds ``"k"``, an integer index ends the path."""
    _tree: ast.expr = field(repr=False, compare=False)
    _where: str = field(default="", repr=False, compare=False)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The value of the expression, reading names from ``scope``.

        Raises:
            ConfigError: a name is not in scope, a field or key is missing, or operands do not fit.
        """
        return self._eval(self._tree, scope)

    def holds(self, scope: Mapping[str, Any]) -> bool:
        """Whether the value is truthy: ``bool(evaluate(scope))``."""
        return bool(self._eval(self._tree, scope))

    def _error(self, detail: str) -> ConfigError:
        prefix = f"{self._where}: " if self._where else ""
        return ConfigError(f"{prefix}{_quote(self.text)}: {detail}")

    def _eval(self, node: ast.expr, scope: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node.id, scope)
        if isinstance(node, ast.Attribute | ast.Subscript):
            key = node.attr if isinstance(node, ast.Attribute) else _index(node.slice)
            return self._step(self._eval(node.value, scope), key, node.value)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self._eval(item, scope) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BoolOp):
            for item in node.values[:-1]:  # Python's and/or: the first value that decides
                value = self._eval(item, scope)
                if bool(value) == isinstance(node.op, ast.Or):
                    return value
            return self._eval(node.values[-1], scope)
        if isinstance(node, ast.Compare):
            return self._compare(node, scope)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self._eval(node.operand, scope)
        if isinstance(node, ast.UnaryOp | ast.BinOp):
            return self._arithmetic(node, scope)
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # parse checked
        value = self._eval(node.args[0], scope)
        try:
            return None if value is None else _FUNCTIONS[node.func.id](value)
        except (TypeError, ValueError, OverflowError):
            shown = _show(node.args[0], value)
            raise self._error(f"{node.func.id}() cannot take {shown} ({_kind(value)})") from None

    def _name(self, name: str, scope: Mapping[str, Any]) -> Any:
        if name in _LITERALS:
            return _LITERALS[name]
        if name not in scope:
            names = [str(key) for key in scope]
            raise self._error(f"'{name}' is not defined.{_suggest(name, names, 'Names')}")
        return scope[name]

    def _step(self, value: Any, key: str | int | None, owner: ast.expr) -> Any:
        """``value.key`` or ``value[key]``, where ``owner`` is the node ``value`` came from."""
        if value is None:
            return None
        shown = ast.unparse(owner)
        if isinstance(value, Mapping):
            if key not in value:
                keys = [str(k) for k in value]
                raise self._error(f"{shown} has no key {key!r}.{_suggest(str(key), keys, 'Keys')}")
            return value[key]
        if isinstance(key, int):
            if not isinstance(value, Sequence):
                raise self._error(f"{shown} is {_kind(value)}, which has no items")
            if not -len(value) <= key < len(value):
                raise self._error(f"{shown} has no item {key}: it has {len(value)}")
            return value[key]
        assert key is not None  # parse checked
        fields = _fields(value)
        result = _MISSING if key.startswith("_") else getattr(value, key, _MISSING)
        if result is _MISSING:
            more = _suggest(key, fields, "Fields") if fields else f" It is {_kind(value)}."
            raise self._error(f"{shown} has no field {key!r}.{more}")
        if inspect.ismethod(result) or inspect.isbuiltin(result):
            raise self._error(f"{shown}.{key} is a method, not a field.{_suggest(key, fields, '')}")
        return result

    def _compare(self, node: ast.Compare, scope: Mapping[str, Any]) -> bool:
        left_node, left = node.left, self._eval(node.left, scope)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self._eval(right_node, scope)
            symbol, compare = _COMPARE[type(op)]
            try:
                if not compare(left, right):
                    return False
            except TypeError:
                both = f"{_show(left_node, left)} {symbol} {_show(right_node, right)}"
                kinds = f"{_kind(left)} and {_kind(right)}"
                raise self._error(f"cannot evaluate {both}: {kinds} do not compare") from None
            left_node, left = right_node, right
        return True

    def _arithmetic(self, node: ast.UnaryOp | ast.BinOp, scope: Mapping[str, Any]) -> Any:
        nodes = [node.operand] if isinstance(node, ast.UnaryOp) else [node.left, node.right]
        values = [self._eval(item, scope) for item in nodes]
        if any(value is None for value in values):
            return None
        for item, value in zip(nodes, values, strict=True):
            if not isinstance(value, int | float):
                shown = _show(item, value)
                raise self._error(f"{shown} is {_kind(value)}, not a number")
        try:
            return _ARITHMETIC[type(node.op)](*values)
        except (ZeroDivisionError, OverflowError) as exc:
            raise self._error(f"{ast.unparse(node)} fails: {exc}") from None


def parse(text: str, *, where: str = "") -> Expression:
    """Parse ``text``; ``where`` (such as ``"crew.yaml:12 tasks.fix.when"``) starts messages.

    Raises:
        ConfigError: the text is not an expression of the grammar in this module's docstring.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise ConfigError(
            f"{prefix}{text!r} is not an expression: write it as text, such as "
            '"triage.data.approved" (in quotes in YAML).'
        )
    # Lines are joined, so YAML block scalars (| and >) may spread an expression over lines.
    source = " ".join(line.strip() for line in text.strip().splitlines())
    if not source:
        raise ConfigError(f"{prefix}the expression is empty: write one such as `task.data.done`.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # '\d' keeps its backslash, as in Python, silently
            tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        col = exc.offset if exc.offset and exc.offset >= 1 else len(source)
        hint = _syntax_hint(source, col, exc.msg)
        message = f"{prefix}{_quote(source)} is not a valid expression (col {col}): {hint}."
        raise ConfigError(message) from exc
    except (ValueError, MemoryError, RecursionError) as exc:  # NUL bytes; the parser's limits
        why = str(exc) if isinstance(exc, ValueError) else "it is nested too deeply"
        message = f"{prefix}{_quote(source)} is not a valid expression: {why}."
        raise ConfigError(message) from exc
    problem = _problem(tree, 0)
    if problem:
        raise ConfigError(f"{prefix}{_quote(source)} {problem}.")
    paths = _paths(tree)
    return Expression(source, frozenset(path[0] for path in paths), paths, tree, where)


def check_paths(
    expr: Expression, models: Mapping[str, type[BaseModel] | None], *, where: str = ""
) -> list[str]:
    """Problems with the paths ``expr`` reads from tasks, checked against their output models.

    Args:
        expr: a parsed expression.
        models: task id -> its ``output_model`` (None: no structured data). Other names are
            not checked.
        where: starts each message; ``expr``'s own ``where`` when empty.

    Returns:
        One message per problem; empty when every path fits.
    """
    where = where or expr._where
    start = f"{where}: {_quote(expr.text)}: " if where else f"{_quote(expr.text)}: "
    problems: list[str] = []
    for name, *rest in expr.paths:
        if name not in models or not rest:
            continue
        attribute, fields = rest[0], rest[1:]
        model = models[name]
        if attribute not in _ENTRY_FIELDS:
            more = _suggest(attribute, _ENTRY_FIELDS, "Fields")
            problems.append(f"{start}{name} has no field {attribute!r}.{more}")
        elif fields and attribute != "data":
            problems.append(f"{start}{name}.{attribute} has no field {fields[0]!r}.")
        elif fields and model is not None:
            problem = _model_problem(model, fields, f"{name}.data")
            if problem:
                problems.append(f"{start}{problem}")
    return list(dict.fromkeys(problems))


def _model_problem(model: type[BaseModel], fields: list[str], owner: str) -> str | None:
    current: Any = model
    for name in fields:
        known = getattr(current, "model_fields", None) if isinstance(current, type) else None
        if not isinstance(known, dict):
            return None  # a list, a dict, a plain type: checked at run time only
        if current.model_config.get("extra") == "allow" or name in current.model_computed_fields:
            return None
        if name not in known:
            return f"{owner} has no field {name!r}.{_suggest(name, list(known), 'Fields')}"
        current, owner = known[name].annotation, f"{owner}.{name}"
        if get_origin(current) in (Union, types.UnionType):  # Optional[Model] -> Model
            options = [arg for arg in get_args(current) if arg is not type(None)]
            current = options[0] if len(options) == 1 else None
    return None


def _problem(node: ast.expr, depth: int) -> str | None:
    """Why ``node`` is outside the grammar, or None when it and its children are inside."""
    if depth > _MAX_DEPTH:
        return f"is nested more than {_MAX_DEPTH} levels deep, which is not allowed"
    if isinstance(node, ast.Call):
        problem = _call_problem(node)
    elif isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | None):
        problem = f"uses `{ast.unparse(node)}`, which is not allowed: literals are text or numbers"
    elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        problem = f"reads `{node.attr}`, which is not allowed: names starting with '_' are private"
    elif isinstance(node, ast.Subscript) and _index(node.slice) is None:
        problem = (
            f"uses `{ast.unparse(node)}`, which is not allowed: an index must be a literal, "
            "such as x[0], x[-1] or x['key']"
        )
    elif isinstance(node, ast.Compare) and any(isinstance(o, ast.Is | ast.IsNot) for o in node.ops):
        problem = "uses `is`, which is not allowed: use == or != (such as `x == null`)"
    elif isinstance(node, ast.BinOp | ast.UnaryOp) and not isinstance(node.op, ast.Not):
        ok = type(node.op) in _ARITHMETIC
        problem = None if ok else f"uses `{ast.unparse(node)}`, which is not allowed: use + - * /"
    elif not isinstance(node, _ALLOWED):
        what = _REJECTED.get(type(node)) or f"`{ast.unparse(node)}`"
        problem = f"uses {what}, which is not allowed"
    else:
        problem = None
    children = [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]
    return problem or next(filter(None, (_problem(c, depth + 1) for c in children)), None)


def _call_problem(node: ast.Call) -> str | None:
    allowed = ", ".join(_FUNCTIONS)
    func = node.func
    if not isinstance(func, ast.Name) or func.id not in _FUNCTIONS:
        called, hint = ast.unparse(func), ""
        if isinstance(func, ast.Attribute) and func.attr in _FUNCTIONS:
            hint = f" (write `{func.attr}({ast.unparse(func.value)})`)"
        return f"calls `{called}`, which is not allowed{hint}; allowed functions: {allowed}"
    if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
        return f"calls `{ast.unparse(node)}`: {func.id}() takes exactly one argument"
    return None


def _paths(tree: ast.expr) -> tuple[tuple[str, ...], ...]:
    inner = set()  # the start of a longer path, or a function: not paths of their own
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript) and _path(node):
            inner.add(id(node.value))
        elif isinstance(node, ast.Call):
            inner.add(id(node.func))
    nodes = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.expr)), key=lambda n: n.col_offset
    )
    found = [_path(node) for node in nodes if id(node) not in inner]
    return tuple(dict.fromkeys(path for path in found if path))


def _path(node: ast.AST) -> tuple[str, ...] | None:
    if isinstance(node, ast.Name):
        return None if node.id in _LITERALS else (node.id,)
    if isinstance(node, ast.Attribute):
        key = node.attr
    elif isinstance(node, ast.Subscript) and isinstance(index := _index(node.slice), str):
        key = index
    else:
        return None
    head = _path(node.value)
    return (*head, key) if head else None


def _index(node: ast.expr) -> str | int | None:
    """The literal key or index of a subscript: ``'k'``, ``0``, ``-1``; None for anything else."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node, sign = node.operand, -1
    value = node.value if isinstance(node, ast.Constant) else None
    if type(value) is int:
        return sign * value
    return value if type(value) is str and sign == 1 else None


def _fields(value: Any) -> list[str]:
    known = getattr(type(value), "model_fields", None)  # a pydantic model
    if isinstance(known, dict):
        return list(known)
    if dataclasses.is_dataclass(value):
        return [f.name for f in dataclasses.fields(value)]
    return [name for name in getattr(value, "__dict__", {}) if not name.startswith("_")]


def _syntax_hint(source: str, col: int, message: str) -> str:
    before, at, after = source[col - 2 : col - 1], source[col - 1 : col], source[col : col + 1]
    if at == "=" and after != "=" and before not in ("<", ">", "!", "="):
        return "use == to compare"
    if "&&" in source or "||" in source:
        return "use `and` and `or`"
    return message.split(" (detected at")[0]


def _suggest(word: str, options: list[str], label: str) -> str:
    hint = did_you_mean(word, options, sentence=True)
    shown = ", ".join(options[:20]) + (", ..." if len(options) > 20 else "")
    return f"{hint} {label}: {shown or '(none)'}" if label else hint


def _show(node: ast.expr, value: Any) -> str:
    source, shown = ast.unparse(node), reprlib.repr(value)
    return source if source == shown else f"{source} (= {shown})"


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _quote(text: str) -> str:
    return f"`{text if len(text) <= 200 else text[:200] + '...'}`"
