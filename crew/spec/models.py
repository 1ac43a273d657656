"""The shapes of a crew file: a pydantic model per section (strict: an unknown key is a problem,
with a close match), a ``Draft`` per agent or task as it is loaded, and ``CrewFile``, what
loading gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crew.crew import Crew
from crew.inputs import InputSpec, resolve_inputs
from crew.retry import DEFAULT_CALL_ATTEMPTS, DEFAULT_TASK_RETRIES
from crew.yamlfile import Location

STRICT = ConfigDict(extra="forbid", strict=True)


class AgentModel(BaseModel):
    model_config = STRICT

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


class LoopModel(BaseModel):
    model_config = STRICT

    tasks: list[str] = Field(min_length=1)
    until: Any = None
    max_rounds: int | None = Field(None, ge=1)


class TaskModel(BaseModel):
    model_config = STRICT

    use: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    description: str | None = None
    expected_output: str | None = None
    agent: str | None = None
    depends_on: list[str] = []
    output_model: Any = None
    retries: int | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    estimate_s: float = Field(1.0, ge=0)
    human_review: bool = False
    when: Any = None  # expressions are checked by crew.expr, whose messages say more
    join: str = "all"
    routes: dict[str, list[str]] | None = None
    for_each: Any = None
    crew: str | None = None
    inputs: dict[str, Any] = {}
    loop: LoopModel | None = None

    @field_validator("routes", mode="before")
    @classmethod
    def _one_target(cls, routes: Any) -> Any:
        if not isinstance(routes, dict):
            return routes
        return {name: [t] if isinstance(t, str) else t for name, t in routes.items()}


class BudgetModel(BaseModel):
    """``budget:`` in a crew file: ``max_cost_usd`` and/or ``max_tokens`` (see ``crew.Budget``)."""

    model_config = STRICT

    max_cost_usd: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)


class CrewModel(BaseModel):
    model_config = STRICT

    name: str | None = None
    description: str = ""
    templates: list[str] = []
    inputs: dict[str, Any] = {}
    llm: str | None = None
    max_concurrency: int = Field(8, ge=1)
    on_failure: Literal["fail_fast", "continue"] = "fail_fast"
    call_attempts: int = Field(DEFAULT_CALL_ATTEMPTS, ge=1)
    task_retries: int = Field(DEFAULT_TASK_RETRIES, ge=0)
    budget: BudgetModel | None = None
    process: Literal["graph", "hierarchical"] = "graph"
    manager: str | None = None
    goal: str | None = None
    agents: dict[str, Any]
    tasks: dict[str, Any] | None = None  # required unless hierarchical: see _check_process


TEXT_FIELDS = ("role", "goal", "backstory", "description", "expected_output")
LOOP_FIELDS = ("loop", "depends_on", "description", "when", "join", "estimate_s")


@dataclass
class Draft:
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
        return resolve_inputs(self.inputs, given, self.source)


LLMResolver = Callable[[str], Any]
"""Turns an agent's ``llm:`` (a profile name or a litellm model string) into a model."""
