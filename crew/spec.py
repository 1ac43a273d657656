"""Crew files: what ``crew run`` and ``crew plan`` load (YAML crews, Python crews), and the
declared inputs of a crew.

Every problem is reported with the file, the line and the field, all at once, before any model
call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crew.crew import Crew
from crew.errors import ConfigError

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
        raise NotImplementedError  # written with the YAML loader


LLMResolver = Callable[[str], Any]
"""Turns an agent's ``llm:`` (a profile name or a litellm model string) into a model."""
