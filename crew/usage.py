"""Tokens and cost: per model call, summed per task, agent and run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    """What model calls consumed."""

    calls: int = 0
    """Model calls made (each retry and each fallback attempt that got an answer counts)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    """Cost as litellm prices it; 0 for models it has no price for (local servers)."""
    retries: int = 0
    """Model calls that failed and were tried again, on the same model or a fallback (a task's
    own retries are its result's ``attempts`` - 1)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            retries=self.retries + other.retries,
        )

    @classmethod
    def sum(cls, usages: Iterable[Usage]) -> Usage:
        total = cls()
        for usage in usages:
            total = total + usage
        return total

    def to_dict(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "retries": self.retries,
        }


@dataclass(frozen=True)
class RunUsage:
    """A run's usage, in total and broken down by task and by agent role."""

    total: Usage = Usage()
    by_task: dict[str, Usage] = field(default_factory=dict)
    by_agent: dict[str, Usage] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total.to_dict(),
            "by_task": {k: v.to_dict() for k, v in self.by_task.items()},
            "by_agent": {k: v.to_dict() for k, v in self.by_agent.items()},
        }
