"""crew: role-based multi-agent crews, run as a dependency-driven parallel graph.

    from crew import Agent, Task, Crew

``import crew`` is cheap: litellm, networkx and pydantic load on first use.
"""

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
