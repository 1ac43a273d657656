"""Tasks: what is to be done, by whom, after what; and what came of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from crew.agent import Agent
from crew.errors import ConfigError
from crew.usage import Usage

if TYPE_CHECKING:
    from pydantic import BaseModel

TaskStatus = Literal["succeeded", "failed", "skipped", "cancelled", "pending", "waiting"]
"""waiting: the output is ready and waits for a person's review (``human_review=True``)."""


@dataclass(frozen=True, eq=False)
class Task:
    """A unit of work for one agent.

    ``{placeholders}`` in description and expected output are filled from the run's inputs.
    """

    id: str
    """Unique in the crew; the key of the task's output on the board and in results."""
    description: str
    expected_output: str = ""
    agent: Agent | None = None
    depends_on: Sequence[Task | str] = ()
    """Tasks (objects or ids) whose outputs this task needs; it starts when all have finished."""
    output_model: type[BaseModel] | None = None
    """A pydantic model the answer must validate against; the result's ``data`` is an instance."""
    timeout_s: float | None = None
    """Per attempt; an attempt that runs longer fails with TaskTimeoutError."""
    retries: int = 0
    """Further attempts after a failed one (timeouts, invalid output, exhausted model retries)."""
    estimate_s: float = 1.0
    """Expected duration, used only to find the critical path and order ready tasks."""
    human_review: bool = False
    """Hold the output for a person to approve, edit or reject before dependants use it."""

    def __post_init__(self) -> None:
        problems = _check(self)
        if problems:
            raise ConfigError(problems)
        deps = tuple(dep.id if isinstance(dep, Task) else dep for dep in self.depends_on)
        object.__setattr__(self, "depends_on", deps)

    @property
    def dependency_ids(self) -> tuple[str, ...]:
        """``depends_on`` as task ids."""
        return cast(tuple[str, ...], self.depends_on)  # __post_init__ turned Tasks into ids

    def __repr__(self) -> str:
        return f"Task({self.id!r})"


def _check(task: Task) -> list[str]:
    where = f"Task '{task.id}'" if isinstance(task.id, str) and task.id else "Task"
    problems = []
    if not isinstance(task.id, str) or not task.id.strip():
        problems.append("Task(id=...) must be a non-empty string, e.g. id='research'.")
    elif task.id != task.id.strip() or any(c.isspace() for c in task.id):
        problems.append(
            f"{where}: id must not contain spaces; use e.g. '{'_'.join(task.id.split())}'."
        )
    if not isinstance(task.description, str) or not task.description.strip():
        problems.append(f"{where}: description must be a non-empty string.")
    if task.agent is not None and not isinstance(task.agent, Agent):
        problems.append(f"{where}: agent must be an Agent, got {type(task.agent).__name__}.")
    if isinstance(task.depends_on, str | Task) or not all(
        isinstance(dep, str | Task) for dep in task.depends_on
    ):
        problems.append(f"{where}: depends_on must be a list of Tasks or task ids.")
    if task.output_model is not None and not hasattr(task.output_model, "model_validate_json"):
        problems.append(f"{where}: output_model must be a pydantic BaseModel subclass.")
    if not isinstance(task.retries, int) or task.retries < 0:
        problems.append(f"{where}: retries must be a whole number >= 0, got {task.retries!r}.")
    if task.timeout_s is not None and not task.timeout_s > 0:
        problems.append(f"{where}: timeout_s must be > 0 (or None for no limit).")
    if not task.estimate_s >= 0:
        problems.append(f"{where}: estimate_s must be >= 0.")
    return problems


@dataclass(frozen=True, kw_only=True)
class TaskOutput:
    """What a task produced; also posted on the board under the task's id."""

    task_id: str
    agent: str
    text: str
    data: Any = None
    """The validated ``output_model`` instance, or None."""
    model: str = ""
    usage: Usage = Usage()

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    """How a task ended in a run."""

    task_id: str
    status: TaskStatus
    output: TaskOutput | None = None
    error: str | None = None
    """The message of the error that failed the task."""
    error_type: str | None = None
    exception: BaseException | None = None
    reason: str | None = None
    """Why the task was skipped or cancelled."""
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = Usage()
    """Every call of every attempt, failed ones included."""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        output = self.output
        data = output.data if output is not None else None
        return {
            "task_id": self.task_id,
            "status": self.status,
            "text": output.text if output is not None else None,
            "data": data.model_dump(mode="json")
            if data is not None and hasattr(data, "model_dump")
            else data,
            "agent": output.agent if output is not None else None,
            "error": self.error,
            "error_type": self.error_type,
            "reason": self.reason,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "usage": self.usage.to_dict(),
        }
