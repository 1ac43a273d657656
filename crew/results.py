"""What a run produced: each task's output and result, and the run's ``CrewResult``.

Values only, below the runtime: the scheduler, the run, the store's checkpoint and the console
all speak these types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from crew.board import Board, plain
from crew.errors import OutputValidationError, RunFailedError
from crew.usage import RunUsage, Usage

if TYPE_CHECKING:
    from pydantic import BaseModel

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)

TaskStatus = Literal["succeeded", "failed", "skipped", "cancelled", "pending", "waiting"]
"""waiting: the output is ready and waits for a person's review (``human_review=True``)."""


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
    item: int | None = None
    """Which item of a map this instance did (None: the task's own output)."""

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
    """Why the task was skipped or cancelled; on a task that succeeded, a warning (a loop that
    ran out of rounds before its condition held)."""
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = Usage()
    """Every call of every attempt, failed ones included."""
    usage_by_agent: dict[str, Usage] = field(default_factory=dict)
    """``usage`` by the role of the agent that made the calls: a coworker's delegated work
    under the coworker. Empty when not known (restored from the store): all the task's agent's."""

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
            "data": plain(data),
            "agent": output.agent if output is not None else None,
            "error": self.error,
            "error_type": self.error_type,
            "reason": self.reason,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "usage": self.usage.to_dict(),
        }


RunStatus = Literal["succeeded", "failed", "cancelled", "waiting", "budget_exceeded"]
"""waiting: every task that could run has; the rest wait for a person's review.
budget_exceeded: a call's reservation would have passed the run's ``Budget``; the tasks left
are ``pending``, for a resume with a higher budget."""


@dataclass(frozen=True, kw_only=True)
class CrewResult:
    """How a run ended: every task's result, the board, and what it cost."""

    run_id: str
    crew: str
    status: RunStatus
    tasks: dict[str, TaskResult]
    """Every task of the crew, in declaration order (a loop followed by its body), with its
    status."""
    board: Board
    usage: RunUsage
    inputs: dict[str, Any]
    started_at: float
    finished_at: float

    @property
    def outputs(self) -> dict[str, TaskOutput]:
        """The outputs of the tasks that succeeded."""
        return {t: r.output for t, r in self.tasks.items() if r.output is not None}

    @property
    def output(self) -> TaskOutput | None:
        """The crew's final output: that of the last declared task, if it succeeded."""
        return next(reversed(self.tasks.values())).output if self.tasks else None

    @property
    def warnings(self) -> list[str]:
        """What went less well than asked in tasks that succeeded: a loop that ran out of rounds
        before its condition held (its ``reason``). The run still succeeded."""
        return [r.reason for r in self.tasks.values() if r.status == "succeeded" and r.reason]

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at

    def raise_for_status(self) -> CrewResult:
        """Return self if every task succeeded, else raise ``RunFailedError`` naming failures."""
        if self.status == "succeeded":
            return self
        failed = [r for r in self.tasks.values() if r.status == "failed"]
        reasons = "; ".join(f"'{r.task_id}': {r.error}" for r in failed) or self.status
        raise RunFailedError(f"Run {self.run_id} {self.status}: {reasons}", result=self)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-serialisable data."""
        return {
            "run_id": self.run_id,
            "crew": self.crew,
            "status": self.status,
            "inputs": self.inputs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "warnings": self.warnings,
            "tasks": {t: r.to_dict() for t, r in self.tasks.items()},
            "board": self.board.snapshot(),
            "usage": self.usage.to_dict(),
        }


def parse_output(text: str, output_model: type[BaseModel], *, task_id: str = "") -> BaseModel:
    """Validate a model's answer against ``output_model``; code fences around the JSON are fine."""
    from pydantic import ValidationError

    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
    elif not candidate.startswith(("{", "[")) and "{" in candidate:
        candidate = candidate[candidate.find("{") : candidate.rfind("}") + 1]
    try:
        return output_model.model_validate_json(candidate)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise OutputValidationError(
            f"Task '{task_id}': the answer does not match {output_model.__name__}: {details}",
            task_id=task_id,
            text=text,
            details=details,
        ) from exc
