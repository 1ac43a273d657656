"""Agents: who does a task (role, goal, backstory, model, tools).

An ``Agent`` is an immutable definition; doing a task with one is the runtime's business
(``crew.attempt``), so one agent can do many tasks at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crew.chat import ChatModel
from crew.errors import ConfigError
from crew.tools import Tool, as_tool


@dataclass(frozen=True, eq=False)
class Agent:
    """A role that can be given tasks.

    ``{placeholders}`` in role, goal and backstory are filled from the run's inputs.
    """

    role: str
    goal: str = ""
    backstory: str = ""
    llm: str | ChatModel | None = None
    """A litellm model string, an ``LLM(...)``, any ``ChatModel``, or None for the crew default.
    A string stays a string here; the run makes it an ``LLM``."""
    tools: Sequence[Tool | Callable[..., Any]] = ()
    max_iterations: int = 10
    """Model calls one task may make (tool rounds plus the final answer)."""
    board_tools: bool = True
    """Give the agent ``read_board`` and ``post_note``."""
    allow_delegation: bool = False
    """Give the agent ``delegate_work`` and ``ask_question`` to hand work to its coworkers."""
    delegates: Sequence[str] = ()
    """Roles it may delegate to; empty means every other agent of the crew."""
    tool_map: Mapping[str, Tool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role.strip():
            raise ConfigError("Agent(role=...) must be a non-empty string, e.g. role='Researcher'.")
        if self.max_iterations < 1:
            raise ConfigError(f"Agent '{self.role}': max_iterations must be at least 1.")
        if self.llm is not None and not isinstance(self.llm, str | ChatModel):
            raise ConfigError(
                f"Agent '{self.role}': llm must be a litellm model string, an LLM(...) or a"
                f" ChatModel, got {type(self.llm).__name__}."
            )
        tools = tuple(as_tool(t) for t in self.tools)
        object.__setattr__(self, "tools", tools)
        object.__setattr__(self, "delegates", tuple(self.delegates))
        object.__setattr__(self, "tool_map", {t.name: t for t in tools})
