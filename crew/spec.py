"""Crew files: what ``crew run`` and ``crew plan`` load (YAML crews, Python crews), and the
declared inputs of a crew.

A YAML crew file::

    name: trip-planner                  # default: the file's name (its folder's, for crew.yaml)
    description: Plan a city trip.
    templates: [./my_templates]         # extra template folders, relative to this file
    inputs:                             # each {placeholder} must be declared here
      destination: {description: City to visit}           # type string, required
      days: {description: Length of the trip, type: integer, default: 3}
    llm: openai/gpt-4o-mini             # the crew's default model: a profile or litellm string
    max_concurrency: 8
    on_failure: fail_fast               # or continue
    agents:
      guide:                            # the key tasks name the agent by
        use: researcher                 # a role template; the fields below override it
        role: Local guide for {destination}
        goal: ...
        backstory: ...
        llm: fast                       # optional, like the crew's
        tools: [mypkg.tools:search]     # module:callable, imported from this file's folder
        max_iterations: 10
        board_tools: true
        allow_delegation: false         # delegate_work / ask_question to coworkers ...
        delegates: [planner]            # ... these agents (keys); default: every other one
    tasks:                              # keys are task ids; the order is the crew's order
      sights:
        description: List the sights of {destination}
        expected_output: 10 bullets
        agent: guide
      itinerary:
        use: plan_itinerary             # a task template ...
        with: {subject: "a {days}-day trip to {destination}"}   # ... and its parameters
        agent: guide
        depends_on: [sights]
        output_model:                   # an inline JSON schema, or "module:Class" (pydantic)
          type: object
          properties: {days: {type: array, items: {type: string}}}
        retries: 1
        timeout_s: 120
        estimate_s: 30                  # for the critical path only
        human_review: true              # a person approves, edits or rejects it first

Input types: string, integer, number, boolean, list, object. An input with a default is
optional; ``{description: ...}`` can be written as just the description. A file without
``inputs:`` gets one required string input per placeholder. A ``null`` field clears the value
a template gave. Inside ``{...}`` (a YAML flow mapping) a value with a placeholder must be
quoted: ``{description: "About {topic}"}``.

``use:`` names a template from the ``templates:`` folders, then ``CREW_TEMPLATES_PATH``, then
the built-in library (``crew templates`` lists them; see ``crew.templates``). Agents that no
task uses still join the crew, as coworkers others can delegate to.

Loading is safe: nothing in the file runs except the ``module:callable`` references it names.
Every problem is reported with the file, the line and the field, all at once, before any model
call.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crew.agent import Agent
from crew.crew import Crew
from crew.errors import ConfigError
from crew.llm import LLM
from crew.plan import find_cycles
from crew.prompts import PLACEHOLDER, interpolate, placeholders
from crew.schema import camel_case, schema_model
from crew.task import Task
from crew.templates import did_you_mean, find_role, find_task, validate
from crew.yamlfile import Location, YamlFile, load_yaml

_M = TypeVar("_M", bound=BaseModel)
InputType = Literal["string", "integer", "number", "boolean", "list", "object"]


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a crew."""

    name: str
    description: str = ""
    type: InputType = "string"
    default: Any = None
    required: bool = True
    """A required input without a default must be given (``--input name=value``)."""


@dataclass(frozen=True)
class CrewFile:
    """A crew loaded from a file, ready to run."""

    crew: Crew
    source: Path
    """The file (or project folder) it came from."""
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    """Declared inputs; a crew file without declarations gets one string input per placeholder."""
    description: str = ""
    warnings: tuple[str, ...] = ()
    """What was read but cannot run here (a tool needing credentials, a callback, ...)."""

    def resolve_inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` with defaults filled in and values converted to their declared types
        (``--input days=3`` gives the integer 3). Raises ConfigError listing every problem."""
        return _resolve_inputs(self.inputs, given, self.source)


LLMResolver = Callable[[str], Any]
"""Turns an agent's ``llm:`` (a profile name or a litellm model string) into a model."""


def load_crew_yaml(path: str | Path, *, resolve_llm: LLMResolver | None = None) -> CrewFile:
    """Load and check a YAML crew file; raise one ConfigError listing every problem.

    Args:
        resolve_llm: turns each ``llm:`` value into a model (default: ``LLM(value)``).
    """
    return _Loader(load_yaml(path), resolve_llm or LLM).load()


def load_python_crew(path: str | Path, inputs: Mapping[str, Any]) -> CrewFile:
    """Run the Python file ``path`` and take its crew: ``build_crew(inputs)`` if it defines one,
    else a module-level ``crew``. Its inputs are ``INPUTS`` (name -> ``{description, type,
    default}``) if defined, else one required string per placeholder of the crew."""
    path = Path(path)
    module = _run_module(path)
    declared = getattr(module, "INPUTS", None)
    specs = None if declared is None else _declared_inputs(declared, path)
    build = getattr(module, "build_crew", None)
    if callable(build):
        given = dict(inputs) if specs is None else _resolve_inputs(specs, inputs, path)
        try:
            crew = build(given)
        except ConfigError:
            raise
        except Exception as exc:  # the user's code: say where it failed, keep the traceback
            raise ConfigError(
                f"{path}{_line_in(exc, path)}: build_crew(inputs) raised"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        found = "build_crew(inputs) returned"
    elif hasattr(module, "crew"):
        crew, found = module.crew, "`crew` is"
    else:
        raise ConfigError(
            f"{path}: no crew found. Define a module-level `crew = Crew(...)` or a function"
            " `build_crew(inputs)` that returns a Crew."
        )
    if not isinstance(crew, Crew):
        raise ConfigError(f"{path}: {found} a {type(crew).__name__}, not a crew.Crew.")
    doc = (module.__doc__ or "").strip()
    return CrewFile(
        crew=crew,
        source=path,
        inputs=_placeholder_inputs(crew) if specs is None else specs,
        description=doc.splitlines()[0] if doc else "",
    )


# --- the shapes of a crew file -------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", strict=True)


class _InputModel(BaseModel):
    model_config = _STRICT

    description: str = ""
    type: InputType = "string"
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _description_only(cls, data: Any) -> Any:
        return {"description": data} if isinstance(data, str) else data


class _AgentModel(BaseModel):
    model_config = _STRICT

    use: str | None = None
    role: str | None = None
    goal: str | None = None
    backstory: str | None = None
    llm: str | None = None
    tools: list[str] = []
    max_iterations: int | None = Field(None, ge=1)
    board_tools: bool | None = None
    allow_delegation: bool | None = None
    delegates: list[str] = []


class _TaskModel(BaseModel):
    model_config = _STRICT

    use: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    description: str | None = None
    expected_output: str | None = None
    agent: str
    depends_on: list[str] = []
    output_model: Any = None
    retries: int = Field(0, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    estimate_s: float = Field(1.0, ge=0)
    human_review: bool = False


class _CrewModel(BaseModel):
    model_config = _STRICT

    name: str | None = None
    description: str = ""
    templates: list[str] = []
    inputs: dict[str, Any] = {}
    llm: str | None = None
    max_concurrency: int = Field(8, ge=1)
    on_failure: Literal["fail_fast", "continue"] = "fail_fast"
    agents: dict[str, Any]
    tasks: dict[str, Any]


_TEXT_FIELDS = ("role", "goal", "backstory", "description", "expected_output")


@dataclass
class _Draft:
    """An agent or task with its template applied: the keyword arguments of Agent or Task."""

    loc: Location
    fields: dict[str, Any]
    template: str = ""
    """The template the fields in ``from_template`` came from ("role template 'researcher'")."""
    from_template: set[str] = field(default_factory=set)

    def use(self, template: Any, names: Sequence[str]) -> None:
        self.template = f"{template.kind} template '{template.name}'"
        for name in names:
            if name not in self.fields:
                self.fields[name] = getattr(template, name)
                self.from_template.add(name)

    def where(self, name: str) -> tuple[Location, str]:
        """The location of field ``name`` and a note if the template gave it."""
        if name in self.from_template:
            return (*self.loc, "use"), f" (from {self.template})"
        return (*self.loc, name), ""


class _Loader:
    """Checks a crew file whole, collecting every problem, then builds the crew."""

    def __init__(self, yf: YamlFile, resolve_llm: LLMResolver) -> None:
        self.yf = yf
        self.resolve_llm = resolve_llm
        self.problems: list[str] = []
        self.dirs: list[Path] = []

    def load(self) -> CrewFile:
        data = self.yf.data
        if not isinstance(data, dict):
            raise ConfigError(
                f"{self.yf.path}:1: a crew file is a mapping with `agents:` and `tasks:`,"
                f" got {'an empty file' if data is None else type(data).__name__}."
            )
        header = self._parse(_CrewModel, data, ())
        self.dirs = self._template_dirs(header.templates if header else [])
        inputs = self._inputs(_section(data, "inputs"))
        agents = self._drafts(_section(data, "agents"), "agents", _AgentModel, self._agent)
        tasks = self._drafts(_section(data, "tasks"), "tasks", _TaskModel, self._task)
        self._check_references(agents, tasks, _section(data, "agents"), _section(data, "tasks"))
        if isinstance(data.get("inputs"), dict):
            self._check_placeholders([*agents.values(), *tasks.values()], inputs)
        llm = self._llm(header.llm, ("llm",)) if header and header.llm is not None else None
        if header is None or self.problems:
            raise ConfigError(sorted(self.problems, key=self._line))
        warnings = _idle_agents(agents, tasks, self.yf)
        crew = self._build(header, llm, agents, tasks)
        return CrewFile(
            crew=crew,
            source=self.yf.path,
            inputs=inputs if "inputs" in data else _placeholder_inputs(crew),
            description=header.description,
            warnings=warnings,
        )

    def _problem(self, location: Location, message: str, *, line_at: Location = ()) -> None:
        line = self.yf.line(line_at or location)
        self.problems.append(f"{self.yf.path}:{line} {'.'.join(map(str, location))}: {message}")

    def _line(self, problem: str) -> int:
        """The line a problem is about, to list them in file order."""
        head = problem.removeprefix(f"{self.yf.path}:").split(" ", 1)[0]
        return int(head) if head.isdigit() else 0

    def _problems(self, location: Location, exc: ConfigError) -> None:
        for message in exc.problems:
            self._problem(location, message)

    def _parse(self, model: type[_M], data: Any, location: Location) -> _M | None:
        parsed, problems = validate(model, data, self.yf.where, location)
        self.problems += problems
        return parsed

    def _drafts(
        self, raw: Mapping[str, Any], section: str, model: Any, make: Callable[..., _Draft]
    ) -> dict[str, _Draft]:
        drafts = {}
        for key, value in raw.items():
            parsed = self._parse(model, value, (section, key))
            if parsed is None:
                continue
            draft = make(parsed, _Draft((section, key), parsed.model_dump(exclude_unset=True)))
            draft.fields = {k: v for k, v in draft.fields.items() if v is not None}
            drafts[key] = draft
        return drafts

    def _template_dirs(self, folders: Sequence[str]) -> list[Path]:
        for i, folder in enumerate(folders):
            if not (self.yf.path.parent / folder).is_dir():
                self._problem(("templates", i), f"no folder '{folder}' next to this file.")
        return [self.yf.path.parent / folder for folder in folders]

    def _inputs(self, raw: Mapping[str, Any]) -> dict[str, InputSpec]:
        specs = {}
        for name, value in raw.items():
            model = self._parse(_InputModel, value, ("inputs", name))
            specs[str(name)], problems = _input_spec(str(name), model or _InputModel())
            for message in problems if model is not None else ():
                self._problem(("inputs", name), message)
        return specs

    def _agent(self, model: _AgentModel, draft: _Draft) -> _Draft:
        draft.fields.pop("use", None)
        template = self._template(find_role, model.use, draft)
        if template is not None:
            draft.use(template, ("role", "goal", "backstory", "max_iterations"))
        if not (draft.fields.get("role") or "").strip() and (template or not model.use):
            message = "no role: set `role:` or `use:` a role template (see `crew templates`)."
            self._problem(draft.loc, message)
        if model.llm is not None:
            draft.fields["llm"] = self._llm(model.llm, (*draft.loc, "llm"))
        draft.fields["tools"] = [
            self._reference(ref, (*draft.loc, "tools", i), "tool")
            for i, ref in enumerate(model.tools)
        ]
        return draft

    def _task(self, model: _TaskModel, draft: _Draft) -> _Draft:
        for name in ("use", "with_"):
            draft.fields.pop(name, None)
        params: dict[str, Any] = {}
        if model.use is None and model.with_:
            self._problem(
                (*draft.loc, "with"), "sets the parameters of a task template; add `use:`."
            )
        template = self._template(find_task, model.use, draft)
        if template is not None:
            draft.use(template, ("description", "expected_output", "output_model"))
            params, problems = template.bind(model.with_)
            for message in problems:
                self._problem((*draft.loc, "with"), message)
        for name in ("description", "expected_output"):
            if draft.fields.get(name) is not None:
                draft.fields[name] = interpolate(draft.fields[name], params)
        if not (draft.fields.get("description") or "").strip() and (template or not model.use):
            message = "no description: set `description:` or `use:` a task template."
            self._problem(draft.loc, message)
        if draft.fields.get("output_model") is not None:
            draft.fields["output_model"] = self._output_model(draft)
        return draft

    def _template(self, find: Callable[..., Any], name: str | None, draft: _Draft) -> Any:
        """The template ``use:`` names: None if there is none (a problem if it is unknown)."""
        try:
            return None if name is None else find(name, self.dirs)
        except ConfigError as exc:
            self._problems((*draft.loc, "use"), exc)
            return None

    def _llm(self, value: str, location: Location) -> Any:
        try:
            return self.resolve_llm(value)
        except ConfigError as exc:
            self._problems(location, exc)
            return None

    def _output_model(self, draft: _Draft) -> Any:
        value = draft.fields["output_model"]
        loc, line_at = (*draft.loc, "output_model"), draft.where("output_model")[0]
        if isinstance(value, str):
            found = self._reference(value, loc, "output_model")
            if found is None or (isinstance(found, type) and issubclass(found, BaseModel)):
                return found
            self._problem(loc, f"'{value}' is not a pydantic BaseModel subclass.")
            return None
        model, problems = schema_model(camel_case(str(draft.loc[-1])), value)
        for where, message in problems:
            self._problem((*loc, *where), message, line_at=(*line_at, *where))
        return model

    def _reference(self, ref: str, location: Location, what: str) -> Any:
        """Import ``module:name`` with the crew file's folder on sys.path for the import."""
        module_name, _, attr = ref.partition(":")
        if not re.fullmatch(r"[\w.]+", module_name) or not re.fullmatch(r"[\w.]+", attr):
            example = "mypkg.tools:search" if what == "tool" else "mypkg.models:Report"
            self._problem(location, f"expected 'module:name' such as '{example}', got '{ref}'.")
            return None
        try:
            found: Any = _import(module_name, self.yf.path.parent)
        except ConfigError as exc:
            self._problems(location, exc)
            return None
        for part in attr.split("."):
            if not hasattr(found, part):
                hint = did_you_mean(part, [n for n in dir(found) if not n.startswith("_")])
                self._problem(location, f"'{module_name}' has no '{attr}'{hint}.")
                return None
            found = getattr(found, part)
        if what == "tool" and not callable(found):
            self._problem(location, f"'{ref}' is not callable: it is {found!r}.")
            return None
        return found

    def _check_references(
        self,
        agents: Mapping[str, _Draft],
        tasks: Mapping[str, _Draft],
        agent_keys: Mapping[str, Any],
        task_keys: Mapping[str, Any],
    ) -> None:
        """Agents and coworkers that exist, dependencies that exist, no cycles."""
        for draft in agents.values():
            for key in draft.fields.get("delegates", []):
                if key not in agent_keys or key == draft.loc[-1]:
                    hint = did_you_mean(key, agent_keys) or f" (agents: {', '.join(agent_keys)})"
                    self._problem((*draft.loc, "delegates"), f"no other agent '{key}'{hint}.")
        if not task_keys and isinstance(self.yf.data.get("tasks"), dict):
            self._problem(("tasks",), "the crew has no tasks; add at least one.")
        graph: dict[str, list[str]] = {}
        for key, draft in tasks.items():
            agent = draft.fields["agent"]
            if agent not in agent_keys:
                hint = did_you_mean(agent, agent_keys) or f" (agents: {', '.join(agent_keys)})"
                self._problem((*draft.loc, "agent"), f"unknown agent '{agent}'{hint}.")
            deps = draft.fields.get("depends_on", [])
            graph[key] = [dep for dep in deps if dep in task_keys and dep != key]
            for dep in deps:
                if dep == key:
                    self._problem((*draft.loc, "depends_on"), "a task cannot depend on itself.")
                elif dep not in task_keys:
                    hint = did_you_mean(dep, task_keys) or f" (tasks: {', '.join(task_keys)})"
                    self._problem((*draft.loc, "depends_on"), f"unknown task '{dep}'{hint}.")
        for cycle in find_cycles(graph):
            self._problem(
                ("tasks", cycle[0], "depends_on"),
                f"tasks depend on each other in a cycle: {' -> '.join([*cycle, cycle[0]])}"
                " (each depends on the next); remove one of these dependencies.",
            )

    def _check_placeholders(self, drafts: Sequence[_Draft], inputs: Mapping[str, Any]) -> None:
        """Every ``{name}`` in a prompt must be a declared input: name them all, per field."""
        for draft in drafts:
            for name in _TEXT_FIELDS:
                missing = [n for n in placeholders(draft.fields.get(name, "")) if n not in inputs]
                if not missing:
                    continue
                listed = ", ".join(f"{{{n}}}{did_you_mean(n, inputs)}" for n in missing)
                verb = "is not a declared input" if len(missing) == 1 else "are not declared inputs"
                line_at, via = draft.where(name)
                self._problem(
                    (*draft.loc, name),
                    f"{listed} {verb}{via}; declare under `inputs:` or fix the name.",
                    line_at=line_at,
                )

    def _build(
        self,
        header: _CrewModel,
        llm: Any,
        agents: Mapping[str, _Draft],
        tasks: Mapping[str, _Draft],
    ) -> Crew:
        for draft in agents.values():  # coworkers by key in the file, by role in an Agent
            roles = [agents[key].fields["role"] for key in draft.fields.get("delegates", [])]
            draft.fields["delegates"] = roles
        built = {key: self._construct(Agent, draft) for key, draft in agents.items()}
        used = {draft.fields["agent"] for draft in tasks.values()}
        for draft in tasks.values():
            draft.fields.update(id=draft.loc[-1], agent=built[draft.fields["agent"]])
        crew_tasks = [self._construct(Task, draft) for draft in tasks.values()]
        if self.problems:
            raise ConfigError(sorted(self.problems, key=self._line))
        path = self.yf.path
        name = header.name or (path.resolve().parent.name if path.stem == "crew" else path.stem)
        return Crew(
            crew_tasks,
            agents=[agent for key, agent in built.items() if key not in used],
            name=name,
            llm=llm,
            max_concurrency=header.max_concurrency,
            on_failure=header.on_failure,
        )

    def _construct(self, kind: Any, draft: _Draft) -> Any:
        try:
            return kind(**draft.fields)
        except ConfigError as exc:
            self._problems(draft.loc, exc)
            return None


def _idle_agents(
    agents: Mapping[str, _Draft], tasks: Mapping[str, _Draft], yf: YamlFile
) -> tuple[str, ...]:
    """Agents that no task uses and no agent can delegate to."""
    used = {draft.fields["agent"] for draft in tasks.values()}
    for key, draft in agents.items():
        if draft.fields.get("allow_delegation"):
            used.update(draft.fields.get("delegates") or (k for k in agents if k != key))
    return tuple(
        f"{yf.where(d.loc)}: not used by any task." for k, d in agents.items() if k not in used
    )


def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _input_spec(name: str, model: _InputModel) -> tuple[InputSpec, list[str]]:
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


def _declared_inputs(declared: Any, path: Path) -> dict[str, InputSpec]:
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
        model, found = validate(_InputModel, value, where, ("INPUTS", name))
        specs[str(name)], more = _input_spec(str(name), model or _InputModel())
        problems += found + [f"{where(('INPUTS', name))}: {m}" for m in (more if model else [])]
    if problems:
        raise ConfigError(problems)
    return specs


_A = {
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


def _resolve_inputs(
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
            resolved[name] = spec.default
        elif spec.required:
            about = f" ({spec.description})" if spec.description else ""
            problems.append(
                f"{source} inputs.{name}: missing required input{about}; pass --input {name}=..."
            )
    if problems:
        raise ConfigError(problems)
    return resolved


def _placeholder_inputs(crew: Crew) -> dict[str, InputSpec]:
    texts = [text for t in crew.tasks for text in (t.description, t.expected_output)]
    texts += [text for a in crew.agents for text in (a.role, a.goal, a.backstory)]
    names = dict.fromkeys(name for text in texts for name in placeholders(text))
    return {name: InputSpec(name=name) for name in names}


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)


def _import(name: str, folder: Path) -> ModuleType:
    importlib.invalidate_caches()  # modules written since the last import are found
    _forget_if_shadowed(name.split(".")[0], folder)
    try:
        with _on_sys_path(folder):
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigError(f"no module '{name}' in {folder} or on sys.path.") from exc
        raise ConfigError(f"importing '{name}' failed: {exc}.") from exc
    except Exception as exc:  # the user's module: report it as a setup problem
        raise ConfigError(f"importing '{name}' raised {type(exc).__name__}: {exc}.") from exc


def _forget_if_shadowed(top: str, folder: Path) -> None:
    """Two crew files may each have their own ``tools.py``: the one next to this file wins over
    one of the same name imported earlier from elsewhere."""
    local = [folder / f"{top}.py", folder / top / "__init__.py"]
    cached = getattr(sys.modules.get(top), "__file__", None)
    here = [path.resolve() for path in local if path.is_file()]
    if cached and here and Path(cached).resolve() not in here:
        for module in [m for m in sys.modules if m == top or m.startswith(f"{top}.")]:
            del sys.modules[module]


def _run_module(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file.")
    name = "_crew_file_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic look their module up by name
    try:
        with _on_sys_path(path.parent):
            spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        if isinstance(exc, ConfigError):
            raise
        # The user's code: say where it failed, and keep the traceback.
        raise ConfigError(
            f"{path}{_line_in(exc, path)}: running the file raised {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _line_in(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f":{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() == path.resolve()
    ]
    return f":{frames[-1].lineno}" if frames else ""
