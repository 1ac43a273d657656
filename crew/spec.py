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

Control flow (see ``crew.task`` and, for the expressions, ``crew.expr``)::

    tasks:
      triage:
        agent: analyst
        description: ...
        routes: {bug: [fix], question: answer}   # a router: route name -> task id(s)
      fix:
        agent: engineer
        description: ...
        when: "triage.data.severity == 'high'"   # run only if this holds, else skip
        join: any                       # all (default) | any | best_effort | quorum(2)
      expand:
        agent: writer
        description: "Expand {item}"    # {item} and {item_index}: one instance per item
        for_each: ideas.data.items
      research:
        crew: research/crew.yaml        # a subcrew (a file or folder relative to this file)
        inputs: {topic: pick_topic.text}   # its inputs: name -> expression; defaults fill the rest
      refine:
        loop:                           # tasks of this file, run as one body, round after round
          tasks: [draft, critique]      # (they are not top-level tasks)
          until: "critique.data.approved"
          max_rounds: 3
        depends_on: [brief]             # a loop also takes description, when, join, estimate_s

A hierarchical crew has no ``tasks:``: its manager plans them for the other agents::

    process: hierarchical               # default: graph (the tasks of the file)
    manager: lead                       # the key of the agent that plans
    goal: Write a report on {topic}

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
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crew.agent import Agent
from crew.crew import Crew
from crew.errors import ConfigError, did_you_mean
from crew.expr import parse
from crew.llm import LLM
from crew.plan import MAP_NAMES, find_cycles
from crew.prompts import PLACEHOLDER, interpolate, placeholders
from crew.schema import camel_case, schema_model
from crew.task import JOINS, Task, loop
from crew.templates import find_role, find_task, validate
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


class _LoopModel(BaseModel):
    model_config = _STRICT

    tasks: list[str] = Field(min_length=1)
    until: Any = None
    max_rounds: int | None = Field(None, ge=1)


class _TaskModel(BaseModel):
    model_config = _STRICT

    use: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    description: str | None = None
    expected_output: str | None = None
    agent: str | None = None
    depends_on: list[str] = []
    output_model: Any = None
    retries: int = Field(0, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    estimate_s: float = Field(1.0, ge=0)
    human_review: bool = False
    when: Any = None  # expressions are checked by crew.expr, whose messages say more
    join: str = "all"
    routes: dict[str, list[str]] | None = None
    for_each: Any = None
    crew: str | None = None
    inputs: dict[str, Any] = {}
    loop: _LoopModel | None = None

    @field_validator("routes", mode="before")
    @classmethod
    def _one_target(cls, routes: Any) -> Any:
        if not isinstance(routes, dict):
            return routes
        return {name: [t] if isinstance(t, str) else t for name, t in routes.items()}


class _CrewModel(BaseModel):
    model_config = _STRICT

    name: str | None = None
    description: str = ""
    templates: list[str] = []
    inputs: dict[str, Any] = {}
    llm: str | None = None
    max_concurrency: int = Field(8, ge=1)
    on_failure: Literal["fail_fast", "continue"] = "fail_fast"
    process: Literal["graph", "hierarchical"] = "graph"
    manager: str | None = None
    goal: str | None = None
    agents: dict[str, Any]
    tasks: dict[str, Any] | None = None  # required unless hierarchical: see _check_process


_TEXT_FIELDS = ("role", "goal", "backstory", "description", "expected_output")
_LOOP_FIELDS = ("loop", "depends_on", "description", "when", "join", "estimate_s")


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

    def __init__(self, yf: YamlFile, resolve_llm: LLMResolver, outer: Sequence[Path] = ()) -> None:
        self.yf = yf
        self.resolve_llm = resolve_llm
        self.problems: list[str] = []
        self.dirs: list[Path] = []
        self.files = (*outer, yf.path)
        """This file and the crew files that run it as a subcrew, outermost first."""
        self.owner: dict[str, str] = {}
        """Task key -> the key of the loop whose body it is in."""
        self.warnings: list[str] = []
        self.hierarchical = False
        self.lines: dict[str, int] = {}
        """The line in this file of problems found in a subcrew's file, to sort them."""

    def load(self) -> CrewFile:
        data = self.yf.data
        if not isinstance(data, dict):
            raise ConfigError(
                f"{self.yf.path}:1: a crew file is a mapping with `agents:` and `tasks:`,"
                f" got {'an empty file' if data is None else type(data).__name__}."
            )
        header = self._parse(_CrewModel, data, ())
        self.dirs = self._template_dirs(header.templates if header else [])
        self.hierarchical = header is not None and header.process == "hierarchical"
        inputs = self._inputs(_section(data, "inputs"))
        agents = self._drafts(_section(data, "agents"), "agents", _AgentModel, self._agent)
        tasks = self._drafts(_section(data, "tasks"), "tasks", _TaskModel, self._task)
        self._check_references(agents, tasks, _section(data, "agents"), _section(data, "tasks"))
        self._check_routes(tasks, _section(data, "tasks"))
        self._check_loops(tasks, _section(data, "tasks"))
        self._check_process(header, _section(data, "agents"))
        if isinstance(data.get("inputs"), dict):
            goal = [_Draft((), {"goal": header.goal})] if header and header.goal else []
            self._check_placeholders([*agents.values(), *tasks.values(), *goal], inputs)
        llm = self._llm(header.llm, ("llm",)) if header and header.llm is not None else None
        if header is None or self.problems:
            raise ConfigError(sorted(self.problems, key=self._line))
        idle = () if self.hierarchical else _idle_agents(agents, tasks, self.yf)
        warnings = (*self.warnings, *idle)
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
        if problem in self.lines:
            return self.lines[problem]
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
        self._flow(model, draft)
        if model.loop is not None:
            return draft
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
        needs = template or not (model.use or model.crew)  # a subcrew has a default
        if not (draft.fields.get("description") or "").strip() and needs:
            message = "no description: set `description:` or `use:` a task template."
            self._problem(draft.loc, message)
        if draft.fields.get("output_model") is not None:
            draft.fields["output_model"] = self._output_model(draft)
        return draft

    def _flow(self, model: _TaskModel, draft: _Draft) -> None:
        """The control-flow fields, each on its own; the checks against the other tasks come
        after (routes, loops) or from the planner (what an expression reads)."""
        for name in ("when", "for_each"):
            if name in draft.fields:
                self._expression(draft.fields[name], (*draft.loc, name))
        if not re.fullmatch(r"all|any|best_effort|quorum\(\d+\)", model.join):
            self._problem(
                (*draft.loc, "join"),
                f"unknown join '{model.join}'{did_you_mean(model.join, JOINS)}; use all, any,"
                " best_effort or quorum(n), e.g. quorum(2).",
            )
        for name, value in model.inputs.items():
            self._expression(value, (*draft.loc, "inputs", name))
        if model.loop is not None:
            self._loop_fields(model.loop, draft)
        elif model.crew is not None:
            self._subcrew(model.crew, model, draft)
        elif model.inputs:
            self._problem((*draft.loc, "inputs"), "maps a subcrew's inputs; add `crew:`.")

    def _expression(self, value: Any, location: Location) -> None:
        """Parse an expression, for its syntax only: the planner checks what it reads."""
        try:
            parse(value)
        except ConfigError as exc:
            self._problems(location, exc)

    def _loop_fields(self, model: _LoopModel, draft: _Draft) -> None:
        for name in [n for n in draft.fields if n not in _LOOP_FIELDS]:
            self._problem(
                (*draft.loc, name.rstrip("_")),
                "does not apply to a loop; set it on the tasks of its body.",
            )
        if model.until is not None:
            self._expression(model.until, (*draft.loc, "loop", "until"))
        if model.max_rounds is None:
            self._problem(
                (*draft.loc, "loop", "max_rounds"),
                "a loop needs a bound: add `max_rounds:` (e.g. max_rounds: 3); it ends sooner"
                " when `until` holds.",
            )

    def _subcrew(self, ref: str, model: _TaskModel, draft: _Draft) -> None:
        """Load the crew file ``ref`` names, with its own path in its problems."""
        loc = (*draft.loc, "crew")
        path = Path(os.path.normpath(self.yf.path.parent / ref))
        path = path / "crew.yaml" if path.is_dir() else path
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            message = f"no crew file '{ref}' next to this file; name a crew.yaml or its folder."
            self._problem(loc, message)
            return
        again = [i for i, f in enumerate(self.files) if f.resolve() == path.resolve()]
        if again:
            chain = " -> ".join(map(str, [*self.files[again[0] :], path]))
            self._problem(
                loc,
                f"crew files run each other in a cycle: {chain} (each runs the next as a"
                " subcrew); remove one of these `crew:` tasks.",
            )
            return
        try:
            child = _Loader(load_yaml(path), self.resolve_llm, self.files).load()
        except ConfigError as exc:
            self.problems += exc.problems
            self.lines.update(dict.fromkeys(exc.problems, self.yf.line(loc)))
            return
        self.warnings += child.warnings
        draft.fields["crew"] = child.crew
        draft.fields["inputs"] = self._subcrew_inputs(child, model.inputs, loc)
        if not model.description and not model.use:
            draft.fields["description"] = child.description or f"Run the crew '{child.crew.name}'."

    def _subcrew_inputs(
        self, child: CrewFile, given: Mapping[str, Any], loc: Location
    ) -> dict[str, Any]:
        """``given`` (name -> expression), and the subcrew's defaults for the others."""
        known = ", ".join(child.inputs) or "none"
        for name in given:
            if name not in child.inputs:
                hint = did_you_mean(name, child.inputs)
                message = f"the subcrew has no input '{name}'{hint}; its inputs: {known}."
                self._problem((*loc[:-1], "inputs", name), message)
        defaults = {n: s.default for n, s in child.inputs.items() if s.default is not None}
        missing = [n for n in child.inputs if n not in given and n not in defaults]
        if missing:
            example = ", ".join(f"{n}: inputs.{n}" for n in missing)
            self._problem(
                (*loc[:-1], "inputs") if given else loc,
                f"the subcrew needs {', '.join(missing)} (no default); map from the board or"
                f" this crew's inputs: inputs: {{{example}}}.",
            )
        return {**{n: _constant(v) for n, v in defaults.items() if n not in given}, **given}

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
        if not task_keys and isinstance(self.yf.data.get("tasks"), dict) and not self.hierarchical:
            self._problem(("tasks",), "the crew has no tasks; add at least one.")
        graph: dict[str, list[str]] = {}
        for key, draft in tasks.items():
            self._check_agent(draft, agent_keys)
            deps = draft.fields.get("depends_on", [])
            graph[key] = [dep for dep in deps if dep in task_keys and dep != key]
            for dep in deps:
                if dep == key:
                    self._problem((*draft.loc, "depends_on"), "a task cannot depend on itself.")
                elif dep not in task_keys:
                    self._problem((*draft.loc, "depends_on"), _unknown("task", dep, task_keys))
        for cycle in find_cycles(graph):
            self._problem(
                ("tasks", cycle[0], "depends_on"),
                f"tasks depend on each other in a cycle: {' -> '.join([*cycle, cycle[0]])}"
                " (each depends on the next); remove one of these dependencies.",
            )

    def _check_agent(self, draft: _Draft, agent_keys: Mapping[str, Any]) -> None:
        """A task names an agent of the file; a loop or a subcrew has none."""
        agent = draft.fields.get("agent")
        if agent is not None and agent not in agent_keys:
            self._problem((*draft.loc, "agent"), _unknown("agent", agent, agent_keys))
        elif agent is None and not {"loop", "crew"} & draft.fields.keys():
            listed = ", ".join(agent_keys) or "none yet"
            self._problem(draft.loc, f"no agent: add `agent:` (agents: {listed}).")

    def _check_routes(self, tasks: Mapping[str, _Draft], task_keys: Mapping[str, Any]) -> None:
        for draft in tasks.values():
            for name, targets in (draft.fields.get("routes") or {}).items():
                for i, target in enumerate(targets):
                    if target not in task_keys:
                        self._problem(
                            (*draft.loc, "routes", name),
                            _unknown("task", target, task_keys),
                            line_at=(*draft.loc, "routes", name, i),
                        )

    def _check_loops(self, tasks: Mapping[str, _Draft], task_keys: Mapping[str, Any]) -> None:
        """Each task is in one loop's body at most, and no loop is inside itself."""
        bodies = {key: d.fields["loop"]["tasks"] for key, d in tasks.items() if "loop" in d.fields}
        for key, body in bodies.items():
            for i, member in enumerate(body):
                location = ("tasks", key, "loop", "tasks", i)
                if member == key:
                    self._problem(location, "a loop cannot contain itself.")
                elif member not in task_keys:
                    self._problem(location, _unknown("task", member, task_keys))
                elif member in self.owner:
                    where = f"loop '{self.owner[member]}'"
                    self._problem(location, f"already in {where}; a task is in one loop at most.")
                else:
                    self.owner[member] = key
        for cycle in find_cycles({k: [m for m in b if m != k] for k, b in bodies.items()}):
            self._problem(
                ("tasks", cycle[0], "loop", "tasks"),
                f"loops contain each other in a cycle: {' -> '.join([*cycle, cycle[0]])} (each"
                " contains the next); take one out of the other's tasks.",
            )

    def _check_process(self, header: _CrewModel | None, agent_keys: Mapping[str, Any]) -> None:
        """A graph crew has tasks; a hierarchical one has a manager, a goal and no tasks."""
        tasks = self.yf.data.get("tasks")
        if not self.hierarchical:
            if tasks is None:
                self._problem(("tasks",), "this field is required; add `tasks: ...`.")
            if header is not None and header.manager is not None:
                message = "only a hierarchical crew has one; add `process: hierarchical`."
                self._problem(("manager",), message)
            return
        assert header is not None  # hierarchical: the header parsed
        if tasks:
            message = "a hierarchical crew's manager plans the tasks; remove `tasks:`"
            self._problem(("tasks",), f"{message} (or use `process: graph`).")
        if header.manager is None:
            self._problem(("process",), "needs `manager:`, the key of the agent that plans.")
        elif header.manager not in agent_keys:
            self._problem(("manager",), _unknown("agent", header.manager, agent_keys))
        elif not agent_keys.keys() - {header.manager}:
            self._problem(("agents",), "the manager needs other agents to plan the tasks for.")
        if not (header.goal or "").strip():
            self._problem(("process",), "needs `goal:`, what the crew is to achieve.")

    def _check_placeholders(self, drafts: Sequence[_Draft], inputs: Mapping[str, Any]) -> None:
        """Every ``{name}`` in a prompt must be a declared input: name them all, per field."""
        for draft in drafts:
            known = [*inputs, *(MAP_NAMES if "for_each" in draft.fields else ())]
            for name in _TEXT_FIELDS:
                missing = [n for n in placeholders(draft.fields.get(name, "")) if n not in known]
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
        used = {draft.fields.get("agent") for draft in tasks.values()} | {header.manager}
        for draft in tasks.values():
            draft.fields["id"] = draft.loc[-1]
            if "agent" in draft.fields:
                draft.fields["agent"] = built[draft.fields["agent"]]
        made: dict[str, Task | None] = {}
        top = [self._make(key, tasks, made) for key in tasks if key not in self.owner]
        if self.problems:
            raise ConfigError(sorted(self.problems, key=self._line))
        path = self.yf.path
        name = header.name or (path.resolve().parent.name if path.stem == "crew" else path.stem)
        return Crew(
            [task for task in top if task is not None],  # all built: a problem raised above
            agents=[agent for key, agent in built.items() if key not in used],
            name=name,
            llm=llm,
            max_concurrency=header.max_concurrency,
            on_failure=header.on_failure,
            process=header.process,
            manager=built[header.manager] if header.manager is not None else None,
            goal=header.goal or "",
        )

    def _make(
        self, key: str, tasks: Mapping[str, _Draft], made: dict[str, Task | None]
    ) -> Task | None:
        """The task ``key``; for a loop, its body first (None: a problem was reported)."""
        if key not in made:
            draft = tasks[key]
            spec = draft.fields.pop("loop", None)
            if spec is None:
                made[key] = self._construct(Task, draft)
            else:
                body = [self._make(k, tasks, made) for k in spec["tasks"]]
                whole = [task for task in body if task is not None]
                made[key] = self._loop(draft, spec, whole) if len(whole) == len(body) else None
        return made[key]

    def _loop(self, draft: _Draft, spec: Mapping[str, Any], body: list[Task]) -> Task | None:
        fields = draft.fields
        try:
            task = loop(
                fields["id"],
                body,
                max_rounds=spec["max_rounds"],
                until=spec.get("until"),
                depends_on=fields.get("depends_on", ()),
                description=fields.get("description", ""),
                estimate_s=fields.get("estimate_s"),
            )
            gate = {name: fields[name] for name in ("when", "join") if name in fields}
            return dataclasses.replace(task, **gate)
        except ConfigError as exc:
            self._problems(draft.loc, exc)
            return None

    def _construct(self, kind: Any, draft: _Draft) -> Any:
        try:
            return kind(**draft.fields)
        except ConfigError as exc:
            self._problems(draft.loc, exc)
            return None


def _unknown(kind: str, name: str, keys: Mapping[str, Any]) -> str:
    hint = did_you_mean(name, keys) or f" ({kind}s: {', '.join(keys)})"
    return f"unknown {kind} '{name}'{hint}."


def _idle_agents(
    agents: Mapping[str, _Draft], tasks: Mapping[str, _Draft], yf: YamlFile
) -> tuple[str, ...]:
    """Agents that no task uses and no agent can delegate to."""
    used = {draft.fields.get("agent") for draft in tasks.values()}
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
    tasks = _with_bodies(crew.tasks)
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


def _with_bodies(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` and the tasks of their loops' bodies, at any depth."""
    found = []
    for task in tasks:
        found.append(task)
        if not callable(task.group):
            found += _with_bodies(task.group)
    return found


def _constant(value: Any) -> Callable[[Any], Any]:
    """A subcrew input that is its own declared default."""
    return lambda _board: value


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
