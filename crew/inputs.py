"""A crew's declared inputs: what each is (``InputSpec``), how a declaration is read (from a crew
file's ``inputs:``, a Python crew's ``INPUTS``, a CrewAI project), and how given values are
checked and converted (``--input days=3`` gives the integer 3). Shared by the YAML, Python and
CrewAI loaders and the CLI.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from crew.errors import ConfigError, did_you_mean
from crew.plan import MAP_NAMES
from crew.prompts import PLACEHOLDER, placeholders
from crew.task import every_task
from crew.templates import validate

if TYPE_CHECKING:
    from crew.crew import Crew
    from crew.yamlfile import Location

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


class InputModel(BaseModel):
    """An input as a crew file declares it: a description, or {description, type, default}."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = ""
    type: DeclaredType = "string"
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _description_only(cls, data: Any) -> Any:
        return {"description": data} if isinstance(data, str) else data


def input_spec(name: str, model: InputModel) -> tuple[InputSpec, list[str]]:
    problems = []
    if not PLACEHOLDER.fullmatch(f"{{{name}}}"):
        problems.append("an input name must be a letter or _ followed by letters, digits, _ or -.")
    has_default = model.default is not None
    if has_default and not _matches(model.default, model.type):
        problems.append(f"default {model.default!r} is not {_A[model.type]}.")
    spec = InputSpec(
        name=name,
        description=model.description,
        type=model.type,
        default=model.default,
        required=not has_default,
    )
    return spec, problems


def declared_inputs(declared: Any, path: Path) -> dict[str, InputSpec]:
    def where(location: Location) -> str:
        return f"{path} {'.'.join(map(str, location))}"

    if not isinstance(declared, Mapping):
        raise ConfigError(
            f"{path} INPUTS: must be a dict of name -> {{description, type, default}}."
        )
    specs, problems = {}, []
    for name, value in declared.items():
        if isinstance(value, InputSpec):
            specs[name] = value
            continue
        model, found = validate(InputModel, value, where, ("INPUTS", name))
        specs[str(name)], more = input_spec(str(name), model or InputModel())
        problems += found + [f"{where(('INPUTS', name))}: {m}" for m in (more if model else [])]
    if problems:
        raise ConfigError(problems)
    return specs


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
    specs: Mapping[str, InputSpec], given: Mapping[str, Any], source: Path
) -> dict[str, Any]:
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
                f"{source} inputs.{name}: missing required input{about}; pass --input {name}=..."
            )
    if problems:
        raise ConfigError(problems)
    return resolved


def placeholder_inputs(crew: Crew) -> dict[str, InputSpec]:
    tasks = list(every_task(crew.tasks))
    names = {
        name: None
        for task in tasks
        for text in (task.description, task.expected_output)
        for name in placeholders(text)
        if not (task.kind == "map" and name in MAP_NAMES)
    }
    agents = [*(t.agent for t in tasks if t.agent is not None), *crew.agents]
    texts = [text for a in agents for text in (a.role, a.goal, a.backstory)]
    texts.append(crew.goal)
    names.update(dict.fromkeys(name for text in texts for name in placeholders(text)))
    return {name: InputSpec(name=name) for name in names}
