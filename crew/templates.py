"""Role and task templates: the prompts a crew file starts from (``use: researcher``).

A role template, ``roles/<name>.yaml``::

    about: Finds facts on a subject and checks them.   # one line, shown by `crew templates`
    role: Researcher
    goal: ...
    backstory: ...
    max_iterations: 10                                 # optional

A task template, ``tasks/<name>.yaml``, has parameters, which a task fills with ``with:``::

    about: Research a subject and report the key facts.
    params:
      subject: {description: What to research}                       # required
      focus: {description: What matters most, default: the key facts}
    description: Research {subject}, concentrating on {focus}.
    expected_output: ...
    output_model: {type: object, properties: ...}      # optional inline JSON schema

Parameters are substituted when the crew file is loaded; any other ``{name}`` stays a run input.

A name is looked up in, first to last: the crew file's ``templates:`` folders, the folders of
``CREW_TEMPLATES_PATH`` (separated by ``os.pathsep``), then the built-in library. Each folder
holds ``roles/`` and ``tasks/``; the first file of a name wins.

Crew files and template files are checked the same way, so this module also holds what they
share: pydantic validation with ``file:line field`` messages, and inline JSON schemas as models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from crew.errors import ConfigError, did_you_mean, shorten
from crew.prompts import PLACEHOLDER
from crew.schema import schema_model
from crew.yamlfile import Location, load_yaml

Kind = Literal["role", "task"]
Where = Callable[[Location], str]
"""Turns a location in a document into the ``file:line dotted.field`` prefix of a message."""

_PACKAGE = Path(__file__).resolve().parent
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a file stem: no path separators
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class Template:
    """A template file, as ``crew templates`` lists it."""

    kind: Kind
    name: str
    """The file name without ``.yaml``; what ``use:`` names."""
    about: str
    """One line saying what the template is for."""
    path: Path
    source: Path
    """The library folder it was found in (the one holding ``roles/`` and ``tasks/``)."""


@dataclass(frozen=True, kw_only=True)
class RoleTemplate(Template):
    """The fields an agent gets from ``use: <name>``; the agent's own fields override them."""

    role: str
    goal: str
    backstory: str
    max_iterations: int | None = None


@dataclass(frozen=True, kw_only=True)
class Param:
    """A parameter of a task template."""

    name: str
    description: str = ""
    default: Any = None
    """Used when ``with:`` does not set the parameter; None makes the parameter required."""


@dataclass(frozen=True, kw_only=True)
class TaskTemplate(Template):
    """The fields a task gets from ``use: <name>``, with ``{params}`` filled by ``with:``."""

    params: Mapping[str, Param]
    description: str
    expected_output: str = ""
    output_model: Mapping[str, Any] | None = None
    """An inline JSON schema (see ``schema_model``)."""

    def bind(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The value of every parameter (given, else its default) and the problems: unknown
        names, values that are not text or numbers, required parameters not given."""
        problems, bound = [], {}
        for name, value in values.items():
            if name not in self.params:
                takes = ", ".join(self.params) or "no parameters"
                problems.append(
                    f"task template '{self.name}' has no parameter '{name}'"
                    f"{did_you_mean(str(name), self.params)}; it takes: {takes}."
                )
            elif isinstance(value, dict | list) or value is None:
                problems.append(f"parameter '{name}' must be text or a number, got {value!r}.")
            else:
                bound[name] = value
        for param in self.params.values():
            if param.name in bound:
                continue
            if param.default is None and param.name not in values:
                about = f" ({param.description})" if param.description else ""
                problems.append(
                    f"task template '{self.name}' needs parameter '{param.name}'{about};"
                    f" add it under with:, e.g. with: {{{param.name}: ...}}."
                )
            bound[param.name] = "" if param.default is None else param.default
        return bound, problems


def _one_line(text: str) -> str:
    if "\n" in text.strip():
        raise ValueError("must be one line")
    return text.strip()


def _param_name(name: str) -> str:
    if not PLACEHOLDER.fullmatch(f"{{{name}}}"):
        raise ValueError("a parameter name must be a letter or _ then letters, digits, _ or -")
    return name


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError("must be text or a number")
    return value


_About = Annotated[str, AfterValidator(_one_line)]


class _RoleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    about: _About
    role: str
    goal: str
    backstory: str
    max_iterations: int | None = Field(None, ge=1)


class _ParamFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    description: str = ""
    default: Annotated[Any, AfterValidator(_scalar)] = None


class _TaskFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    about: _About
    params: dict[Annotated[str, AfterValidator(_param_name)], _ParamFile] = {}
    description: str
    expected_output: str = ""
    output_model: dict[str, Any] | None = None


def builtin_dir() -> Path:
    """The built-in library: inside the package in a wheel, the repository root in a checkout."""
    packaged = _PACKAGE / "_templates"
    return packaged if packaged.is_dir() else _PACKAGE.parent


def library_dirs(extra_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """The folders searched for templates, first to last."""
    env = os.environ.get("CREW_TEMPLATES_PATH", "")
    from_env = [Path(part) for part in env.split(os.pathsep) if part.strip()]
    return [*map(Path, extra_dirs), *from_env, builtin_dir()]


def list_templates(extra_dirs: Iterable[str | Path] = ()) -> list[Template]:
    """Every template that ``use:`` can name, roles then tasks, by name. A name found in several
    folders is listed once, from the folder that wins. Raises ConfigError if a file is invalid."""
    found: list[Template] = []
    problems: list[str] = []
    dirs = library_dirs(extra_dirs)
    for kind in ("role", "task"):
        for name, (path, source) in sorted(_index(kind, dirs).items()):
            try:
                found.append(_load(kind, name, path, source))
            except ConfigError as exc:
                problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return found


def find_role(name: str, extra_dirs: Iterable[str | Path] = ()) -> RoleTemplate:
    """The role template ``name``; ConfigError (with close matches) if there is none."""
    path, source = _locate("role", name, library_dirs(extra_dirs))
    template = _load("role", name, path, source)
    assert isinstance(template, RoleTemplate)
    return template


def find_task(name: str, extra_dirs: Iterable[str | Path] = ()) -> TaskTemplate:
    """The task template ``name``; ConfigError (with close matches) if there is none."""
    path, source = _locate("task", name, library_dirs(extra_dirs))
    template = _load("task", name, path, source)
    assert isinstance(template, TaskTemplate)
    return template


def _index(kind: Kind, dirs: Sequence[Path]) -> dict[str, tuple[Path, Path]]:
    index: dict[str, tuple[Path, Path]] = {}
    for folder in dirs:
        sub = folder / f"{kind}s"
        if sub.is_dir():
            for path in sorted(sub.glob("*.yaml")):
                index.setdefault(path.stem, (path, folder))
    return index


def _locate(kind: Kind, name: str, dirs: Sequence[Path]) -> tuple[Path, Path]:
    index = _index(kind, dirs) if _NAME.match(name) else {}
    if name in index:
        return index[name]
    known = ", ".join(sorted(index)) or "none"
    searched = ", ".join(str(folder) for folder in dirs)
    raise ConfigError(
        f"unknown {kind} template '{name}'{did_you_mean(name, index)}."
        f" {kind.capitalize()} templates: {known} (searched {searched})."
    )


def _load(kind: Kind, name: str, path: Path, source: Path) -> Template:
    yf = load_yaml(path)
    common: dict[str, Any] = {"kind": kind, "name": name, "path": path, "source": source}
    if kind == "role":
        role, problems = validate(_RoleFile, yf.data, yf.where)
        if role is None:
            raise ConfigError(problems)
        return RoleTemplate(**common, **role.model_dump())
    task, problems = validate(_TaskFile, yf.data, yf.where)
    schema = yf.data.get("output_model") if isinstance(yf.data, dict) else None
    if isinstance(schema, dict):  # checked even when other fields are wrong: all problems at once
        _, found = schema_model("Output", schema)
        problems += [f"{yf.where(('output_model', *loc))}: {message}" for loc, message in found]
    if task is None or problems:
        raise ConfigError(problems)
    params = {
        key: Param(name=key, description=p.description, default=p.default)
        for key, p in task.params.items()
    }
    return TaskTemplate(**common, **task.model_dump(exclude={"params"}), params=params)


# --- validation shared with crew files -----------------------------------------------------------


def validate(
    model: type[_M], data: Any, where: Where, location: Location = ()
) -> tuple[_M | None, list[str]]:
    """``data`` as ``model``, or None and one message per problem, each prefixed by
    ``where(location + the field's location)``."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_describe(error, model, where, location) for error in exc.errors()]


def _describe(error: Any, model: type[BaseModel], where: Where, location: Location) -> str:
    loc = tuple(part for part in error["loc"] if part != "[key]")
    prefix = where((*location, *loc))
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _field_names(_model_at(model, loc[:-1]))
        return (
            f"{prefix}: unknown field '{loc[-1]}'{did_you_mean(str(loc[-1]), allowed)}."
            f" Allowed fields: {', '.join(allowed)}."
        )
    if kind == "missing":
        return f"{prefix}: this field is required; add `{loc[-1]}: ...`."
    got = shorten(repr(error["input"]), 60)
    if kind == "model_type":
        fields = ", ".join(_field_names(_model_at(model, loc)))
        return f"{prefix}: should be a mapping of fields ({fields}), got {got}."
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "should be")
    return f"{prefix}: {message}, got {got}."


def _model_at(model: type[BaseModel], loc: Location) -> type[BaseModel] | None:
    """The pydantic model that validates the value at ``loc`` (for its field names)."""
    current: Any = model
    for part in loc:
        current = _optional_arg(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[str(part)].annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return None
    current = _optional_arg(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _optional_arg(annotation: Any) -> Any:
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    return args[0] if len(args) == 1 and type(None) in get_args(annotation) else annotation


def _field_names(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]
