"""What a crew's input is (``InputSpec``, its declared type) and how given values are checked
and converted to their types (``--input days=3`` gives the integer 3, a CSV cell "true" the
boolean True). Kept apart from ``crew.inputs`` (how declarations are read) so that the runtime
(``crew.batch``) can check values too, below the crew in the layers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crew.errors import ConfigError, did_you_mean

DeclaredType = Literal["string", "integer", "number", "boolean", "list", "object"]
"""The types a crew file or a Python crew declares."""
InputType = DeclaredType | Literal["text"]
"""``text``: any JSON value, used as Python's ``str()`` writes it (``True``, ``None``,
``['a', 'b']``): CrewAI's rule, for the inputs of CrewAI projects."""


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a crew."""

    name: str
    description: str = ""
    type: InputType = "string"
    default: Any = None
    required: bool = True
    """A required input without a default must be given (``--input name=value``)."""


_A = {
    "text": "a value",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "list": "a list",
    "object": "an object",
}
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}  # fmt: skip


def _matches(value: Any, kind: InputType) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "list": list, "object": dict}
    return isinstance(value, types[kind])


def _convert(value: Any, kind: InputType) -> Any:
    """``value`` as ``kind``: typed values pass if they match, strings (from the command line)
    are parsed; raises ValueError saying what was expected."""
    if _matches(value, kind):
        return value
    if kind == "text":
        return str(value)
    if isinstance(value, str) and kind != "string":
        text = value.strip()
        if kind == "integer" and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if kind == "number":
            with contextlib.suppress(ValueError):
                return float(text)
        if kind == "boolean" and text.lower() in _BOOLEANS:
            return _BOOLEANS[text.lower()]
        if kind in ("list", "object"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(text)
                if _matches(parsed, kind):
                    return parsed
            example = '["a", "b"]' if kind == "list" else '{"key": "value"}'
            raise ValueError(f"expected {_A[kind]} in JSON such as '{example}', got {value!r}")
    raise ValueError(f"expected {_A[kind]}, got {value!r}")


def resolve_inputs(
    specs: Mapping[str, InputSpec],
    given: Mapping[str, Any],
    source: Path | str,
    *,
    give: str = "pass --input {name}=...",
) -> dict[str, Any]:
    """``given`` converted to the declared types, defaults filled in; a ConfigError listing
    every problem as ``SOURCE inputs.NAME: what is wrong`` (unknown, missing, wrong type).
    ``give``: how to give a missing input, said after its problem."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{source}: inputs must be a mapping of name -> value.")
    problems, resolved = [], {}
    for name, value in given.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none"
            hint = did_you_mean(str(name), specs)
            problems.append(f"{source} inputs.{name}: unknown input{hint}; inputs: {known}.")
            continue
        try:
            resolved[name] = _convert(value, spec.type)
        except ValueError as exc:
            problems.append(f"{source} inputs.{name}: {exc}.")
    for name, spec in specs.items():
        if name in given:
            continue
        if spec.default is not None:
            resolved[name] = str(spec.default) if spec.type == "text" else spec.default
        elif spec.required:
            about = f" ({spec.description})" if spec.description else ""
            problems.append(
                f"{source} inputs.{name}: missing required input{about}; {give.format(name=name)}"
            )
    if problems:
        raise ConfigError(problems)
    return resolved
