"""Loading a YAML crew file: each section read into drafts (templates applied, references
imported), the whole file checked (``crew.spec.checks``), every problem raised at once, then the
agents, tasks and crew built from the drafts."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from crew.agent import Agent
from crew.budget import Budget
from crew.crew import Crew
from crew.errors import ConfigError, did_you_mean
from crew.expr import parse
from crew.inputs import InputModel, InputSpec, input_spec, placeholder_inputs
from crew.llm import LLM
from crew.prompts import interpolate
from crew.schema import camel_case, schema_model
from crew.spec.checks import Checks, Hints, idle_agents
from crew.spec.models import (
    LOOP_FIELDS,
    AgentModel,
    CrewFile,
    CrewModel,
    Draft,
    LLMResolver,
    LoopModel,
    TaskModel,
)
from crew.spec.python import import_module
from crew.task import JOINS, Task, loop
from crew.templates import find_role, find_task, validate
from crew.yamlfile import Location, YamlFile, load_yaml

_M = TypeVar("_M", bound=BaseModel)
MAX_SUBCREW_DEPTH = 16
"""How many crew files may run each other as subcrews, one inside the next."""


def load_crew_yaml(path: str | Path, *, resolve_llm: LLMResolver | None = None) -> CrewFile:
    """Load and check a YAML crew file; raise one ConfigError listing every problem.

    Args:
        resolve_llm: turns each ``llm:`` value into a model (default: ``LLM(value)``).
    """
    return Loader(load_yaml(path), resolve_llm or LLM).load()


class Loader:
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
        self.hint = Hints()

    def load(self) -> CrewFile:
        data = self.yf.data
        if not isinstance(data, dict):
            raise ConfigError(
                f"{self.yf.path}:1: a crew file is a mapping with `agents:` and `tasks:`,"
                f" got {'an empty file' if data is None else type(data).__name__}."
            )
        header = self._parse(CrewModel, data, ())
        self.dirs = self._template_dirs(header.templates if header else [])
        self.hierarchical = header is not None and header.process == "hierarchical"
        inputs = self._inputs(_section(data, "inputs"))
        agents = self._drafts(_section(data, "agents"), "agents", AgentModel, self._agent)
        tasks = self._drafts(_section(data, "tasks"), "tasks", TaskModel, self._task)
        check = Checks(
            self.yf, self._problem, hierarchical=self.hierarchical, owner=self.owner, hint=self.hint
        )
        check.references(agents, tasks, _section(data, "agents"), _section(data, "tasks"))
        check.routes(tasks, _section(data, "tasks"))
        check.loops(tasks, _section(data, "tasks"))
        check.process(header, _section(data, "agents"))
        if isinstance(data.get("inputs"), dict):
            goal = [Draft((), {"goal": header.goal})] if header and header.goal else []
            check.placeholders([*agents.values(), *tasks.values(), *goal], inputs)
        llm = self._llm(header.llm, ("llm",)) if header and header.llm is not None else None
        if header is None or self.problems:
            raise ConfigError(sorted(self.problems, key=self._line))
        idle = () if self.hierarchical else idle_agents(agents, tasks, self.yf)
        warnings = (*self.warnings, *idle)
        crew = self._build(header, llm, agents, tasks)
        return CrewFile(
            crew=crew,
            source=self.yf.path,
            inputs=inputs if "inputs" in data else placeholder_inputs(crew),
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
        self, raw: Mapping[str, Any], section: str, model: Any, make: Callable[..., Draft]
    ) -> dict[str, Draft]:
        drafts = {}
        for key, value in raw.items():
            parsed = self._parse(model, value, (section, key))
            if parsed is None:
                continue
            draft = make(parsed, Draft((section, key), parsed.model_dump(exclude_unset=True)))
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
            model = self._parse(InputModel, value, ("inputs", name))
            specs[str(name)], problems = input_spec(str(name), model or InputModel())
            for message in problems if model is not None else ():
                self._problem(("inputs", name), message)
        return specs

    def _agent(self, model: AgentModel, draft: Draft) -> Draft:
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

    def _task(self, model: TaskModel, draft: Draft) -> Draft:
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

    def _flow(self, model: TaskModel, draft: Draft) -> None:
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
        """Parse an expression, and check that the names it reads are tasks of this file (the
        planner checks them again, and the fields read, but without the file's lines)."""
        try:
            names = parse(value).names - {"inputs"}
        except ConfigError as exc:
            self._problems(location, exc)
            return
        tasks = _section(self.yf.data, "tasks")
        for name in sorted(names - tasks.keys()):
            hint = self.hint(name, tasks, sentence=True) or " Name a task or `inputs`."
            self._problem(location, f"`{value.strip()}` reads '{name}', no task of the crew.{hint}")

    def _loop_fields(self, model: LoopModel, draft: Draft) -> None:
        for name in [n for n in draft.fields if n not in LOOP_FIELDS]:
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

    def _subcrew(self, ref: str, model: TaskModel, draft: Draft) -> None:
        """Load the crew file ``ref`` names, with its own path in its problems."""
        loc = (*draft.loc, "crew")
        path = Path(os.path.normpath(self.yf.path.parent / ref))
        path = path / "crew.yaml" if path.is_dir() else path
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            message = f"no crew file '{ref}' next to this file; name a crew.yaml or its folder."
            self._problem(loc, message)
            return
        if len(self.files) >= MAX_SUBCREW_DEPTH:
            self._problem(
                loc,
                f"subcrews nest more than {MAX_SUBCREW_DEPTH} files deep here ({self.files[0]}"
                f" -> ... -> {path}); run fewer crews inside each other.",
            )
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
            child = Loader(load_yaml(path), self.resolve_llm, self.files).load()
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

    def _template(self, find: Callable[..., Any], name: str | None, draft: Draft) -> Any:
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

    def _output_model(self, draft: Draft) -> Any:
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
            found: Any = import_module(module_name, self.yf.path.parent)
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

    def _build(
        self,
        header: CrewModel,
        llm: Any,
        agents: Mapping[str, Draft],
        tasks: Mapping[str, Draft],
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
            call_attempts=header.call_attempts,
            task_retries=header.task_retries,
            budget=Budget(**header.budget.model_dump()) if header.budget is not None else None,
            process=header.process,
            manager=built[header.manager] if header.manager is not None else None,
            goal=header.goal or "",
        )

    def _make(
        self, key: str, tasks: Mapping[str, Draft], made: dict[str, Task | None]
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

    def _loop(self, draft: Draft, spec: Mapping[str, Any], body: list[Task]) -> Task | None:
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

    def _construct(self, kind: Any, draft: Draft) -> Any:
        try:
            return kind(**draft.fields)
        except ConfigError as exc:
            self._problems(draft.loc, exc)
            return None


def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _constant(value: Any) -> Callable[[Any], Any]:
    """A subcrew input that is its own declared default."""
    return lambda _board: value
