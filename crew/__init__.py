"""crew: role-based multi-agent crews, run as a dependency-driven parallel graph.

    from crew import Agent, Task, Crew

``import crew`` is cheap: each public name loads its module on first use (PEP 562), and litellm,
networkx and pydantic load later still. ``python -m crew.cli`` imports this package first, so
the command line pays only for the modules its command uses.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crew.agent import Agent
    from crew.board import Board, BoardEntry
    from crew.budget import Budget
    from crew.crew import Crew
    from crew.errors import ConfigError, CrewError, LLMError, PlanError, RunFailedError
    from crew.llm import LLM, ChatModel
    from crew.plan import Plan
    from crew.results import CrewResult, TaskOutput, TaskResult
    from crew.retry import RetryPolicy
    from crew.task import Task
    from crew.tools import Tool, tool
    from crew.usage import RunUsage, Usage

__version__ = "0.1.0"

# litellm fetches its price map from the internet when it is imported, and reports telemetry:
# off from the moment crew is imported, so that a script which imports litellm itself (for a
# tool, say) after crew stays offline too. A value the user set is kept.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

_HOMES = {
    "Agent": "crew.agent",
    "Board": "crew.board",
    "BoardEntry": "crew.board",
    "Budget": "crew.budget",
    "Crew": "crew.crew",
    "ConfigError": "crew.errors",
    "CrewError": "crew.errors",
    "LLMError": "crew.errors",
    "PlanError": "crew.errors",
    "RunFailedError": "crew.errors",
    "LLM": "crew.llm",
    "ChatModel": "crew.llm",
    "Plan": "crew.plan",
    "CrewResult": "crew.results",
    "TaskOutput": "crew.results",
    "TaskResult": "crew.results",
    "RetryPolicy": "crew.retry",
    "Task": "crew.task",
    "Tool": "crew.tools",
    "tool": "crew.tools",
    "RunUsage": "crew.usage",
    "Usage": "crew.usage",
}

__all__ = [
    "LLM",
    "Agent",
    "Board",
    "BoardEntry",
    "Budget",
    "ChatModel",
    "ConfigError",
    "Crew",
    "CrewError",
    "CrewResult",
    "LLMError",
    "Plan",
    "PlanError",
    "RetryPolicy",
    "RunFailedError",
    "RunUsage",
    "Task",
    "TaskOutput",
    "TaskResult",
    "Tool",
    "Usage",
    "tool",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'crew' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
