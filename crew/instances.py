"""Instances of a task: its own run, one per map item, one per loop round.

Each instance keeps its bookkeeping across attempts in a ``TaskAttempt`` and stores its output
under its own index (``instance_index``), so a resumed run finds every finished item and round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crew.results import TaskResult
from crew.usage import Usage

ROUND = 10_000
"""Stored outputs are keyed by (task id, index): index = round * ROUND + item + 1, where round
is 0 outside loops and item + 1 is 0 for a task's own output (so a map has < ROUND items)."""


def instance_index(round_: int = 0, item: int | None = None) -> int:
    """The store index of a task's output in loop round ``round_``, or of one map item."""
    return round_ * ROUND + (item + 1 if item is not None else 0)


@dataclass
class TaskAttempt:
    """Mutable bookkeeping of one task instance across its attempts (owned by the scheduler)."""

    number: int = 0
    usage: Usage = Usage()
    by_agent: dict[str, Usage] = field(default_factory=dict)
    """``usage`` by the role of the agent that made the calls: the task's own, and the
    coworkers it delegated to (their work is charged to the task, but done by them)."""
    item: Any = None
    """The item of a map instance."""
    item_index: int | None = None
    """Its position among the map's items (None: not a map instance)."""
    round: int = 0
    """The loop round (0: not in a loop)."""
    context: tuple[str, ...] = ()
    """More board keys the prompt shows: a loop's outputs from the round before."""
    missing: tuple[str, ...] = ()
    """Dependencies that did not succeed (``join`` other than all): the prompt says so."""
    index: int = 0
    """Where the output is stored (see ``instance_index``)."""

    def add_usage(self, usage: Usage, agent: str) -> None:
        self.usage = self.usage + usage
        self.by_agent[agent] = self.by_agent.get(agent, Usage()) + usage


def failed(
    task_id: str,
    exc: Exception,
    attempts: int,
    started: float | None,
    now: float,
    usage: Usage,
    *,
    by_agent: Mapping[str, Usage] | None = None,
) -> TaskResult:
    """The result of a task (or instance) that failed with ``exc``."""
    return TaskResult(
        task_id=task_id, status="failed", error=str(exc), error_type=type(exc).__name__,
        exception=exc, attempts=attempts, started_at=started, finished_at=now, usage=usage,
        usage_by_agent=dict(by_agent or {}),
    )  # fmt: skip


def by_agent(results: Iterable[tuple[TaskResult, str]]) -> dict[str, Usage]:
    """The usage of ``results`` by agent role; each comes with the role of its task's agent,
    who made the calls its breakdown does not name (a result restored from the store)."""
    total: dict[str, Usage] = {}
    for result, role in results:
        if not result.usage_by_agent and result.usage == Usage():
            continue  # no calls (skipped, say): no agent did anything
        for agent, usage in (result.usage_by_agent or {role: result.usage}).items():
            total[agent] = total.get(agent, Usage()) + usage
    return total


def describe(condition: Any) -> str:
    """How a message names a condition or item source: an expression in backquotes, a callable
    by its name."""
    if isinstance(condition, str):
        return f"`{condition}`"
    return getattr(condition, "__name__", repr(condition))
