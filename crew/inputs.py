"""A crew's declared inputs: what each is (``InputSpec``), how a declaration is read (from a crew
file's ``inputs:``, a Python crew's ``INPUTS``, a CrewAI project), and how given values are
checked and converted (``--input days=3`` gives the integer 3; the types and the conversion are
in ``crew.input_types``). Shared by the YAML, Python and CrewAI loaders and the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, model_validator

from crew.errors import ConfigError
from crew.input_types import _A, DeclaredType, InputSpec, InputType, _matches, resolve_inputs
from crew.plan import MAP_NAMES
from crew.prompts import PLACEHOLDER, placeholders
from crew.task import every_task
from crew.templates import validate

__all__ = [
    "DeclaredType",
    "InputModel",
    "InputSpec",
    "InputType",
    "declared_inputs",
    "input_spec",
    "placeholder_inputs",
    "resolve_inputs",
]

if TYPE_CHECKING:
    from crew.crew import Crew
    from crew.yamlfile import Location


class InputModel(BaseModel):
    """An input as a crew file declares it: a description, or {description, type, default}."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

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
