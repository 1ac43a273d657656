"""What a model call is: the request the agent loop makes, the response, and ``ChatModel``, the
protocol every model implements (``crew.llm.LLM`` over HTTP or through litellm,
``crew.testing.ScriptedLLM`` in-process, ``crew.replay`` from the store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from crew.usage import Usage


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""
    """The arguments exactly as the model sent them (may be invalid JSON)."""

    @classmethod
    def from_raw(cls, id: str, name: str, raw: str | None) -> ToolCall:
        """A call as the model sent it; ``arguments`` is {} when ``raw`` is not a JSON object."""
        raw = raw or "{}"
        try:
            arguments = json.loads(raw)
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            arguments = {}
        return cls(id=id, name=name, arguments=arguments, raw_arguments=raw)


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One model call as the agent loop asks for it."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    output_schema: dict[str, Any] | None = None
    """JSON schema the answer must follow; sent as response_format where the model supports it."""
    output_name: str = "output"
    task_id: str = ""
    agent: str = ""
    on_retry: Callable[[str, int, BaseException, float], None] | None = None
    """(model, failed attempt, error, wait seconds) before each retry of a call."""
    on_fallback: Callable[[str, str, BaseException], None] | None = None
    """(failed model, next model, error) before moving to a fallback model."""
    on_token: Callable[[str], None] | None = None
    """When set, the answer is streamed and each piece of text is passed here as it arrives."""
    on_wait: Callable[[str, str, float], None] | None = None
    """(model, limit, seconds waited) after a call waited for its model's rate limits; the limit
    is "rpm", "tpm" or "retry_after"."""
    on_circuit: Callable[[str, bool, str], None] | None = None
    """(model, opened, reason) when a call opened (True) or closed (False) its model's circuit
    breaker."""
    call_attempts: int | None = None
    """The crew's tries in all per call, for a model that sets no retry policy of its own."""


@dataclass(frozen=True, kw_only=True)
class ChatResponse:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    """The model that answered (a fallback's, when the primary failed)."""
    latency_ms: float = 0.0


@runtime_checkable
class ChatModel(Protocol):
    """Anything that can answer a ``ChatRequest``."""

    @property
    def name(self) -> str: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...
