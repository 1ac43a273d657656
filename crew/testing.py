"""Test a crew without a network: ``ScriptedLLM`` answers in-process, by task or by a function.

from crew.testing import ScriptedLLM, Reply

llm = ScriptedLLM({"facts": "- Lisbon is on the Tagus", "article": {"title": "Lisbon"}})
result = Crew(tasks=[...], llm=llm).run(inputs={"topic": "Lisbon"})
assert [c.task_id for c in llm.calls] == ["facts", "article"]
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crew.llm import ChatRequest, ChatResponse, ToolCall
from crew.usage import Usage


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One scripted answer."""

    text: str | None = None
    data: Any = None
    """Answered as JSON text (for tasks with an output_model)."""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()
    """(tool name, arguments) pairs the model asks for in this turn."""
    error: BaseException | None = None
    """Raised instead of answering (e.g. ``crew.errors.RateLimitError("slow down")``)."""
    delay_s: float = 0.0


ReplyLike = str | dict[str, Any] | Reply | BaseException
"""A str is the answer text, a dict is answered as JSON, an exception is raised."""
Script = Callable[["Call"], ReplyLike | Awaitable[ReplyLike]]


@dataclass(frozen=True, kw_only=True)
class Call:
    """A request the scripted model received."""

    task_id: str
    agent: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    output_schema: dict[str, Any] | None
    index: int
    """0 for the first call of this task, then 1, 2, ..."""
    started: float
    """time.perf_counter() when the call began."""

    @property
    def prompt(self) -> str:
        """The task's user message."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def tool_results(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "tool"]


@dataclass
class ScriptedLLM:
    """An in-process ``ChatModel`` whose answers are scripted.

    Args:
        replies: by task id, one reply or a list consumed call by call (the last one repeats);
            or a function of the ``Call`` returning a reply (it may be async, to gate calls).
        default: the reply for tasks the script does not name.
        delay_s: added to every call (``Reply.delay_s`` adds more).
    """

    replies: Mapping[str, ReplyLike | Sequence[ReplyLike]] | Script = field(default_factory=dict)
    default: ReplyLike = "ok"
    delay_s: float = 0.0
    name: str = "scripted"
    calls: list[Call] = field(default_factory=list, init=False)
    finished: list[tuple[Call, float]] = field(default_factory=list, init=False)
    """(call, time.perf_counter() at its end) for every answered call."""
    in_flight: int = field(default=0, init=False)
    max_in_flight: int = field(default=0, init=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def calls_for(self, task_id: str) -> list[Call]:
        return [c for c in self.calls if c.task_id == task_id]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        index = self._counts.get(request.task_id, 0)
        self._counts[request.task_id] = index + 1
        call = Call(
            task_id=request.task_id,
            agent=request.agent,
            messages=request.messages,
            tools=request.tools,
            output_schema=request.output_schema,
            index=index,
            started=time.perf_counter(),
        )
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = _as_reply(await self._pick(call))
            delay = self.delay_s + reply.delay_s
            if delay:
                await asyncio.sleep(delay)
            if reply.error is not None:
                raise reply.error
        finally:
            self.in_flight -= 1
        self.finished.append((call, time.perf_counter()))
        response = _response(reply, call, self.name)
        if request.on_token is not None and response.content:
            for start in range(0, len(response.content), 8):  # streamed in small pieces
                request.on_token(response.content[start : start + 8])
        return response

    async def _pick(self, call: Call) -> ReplyLike:
        if callable(self.replies):
            picked = self.replies(call)
            return await picked if inspect.isawaitable(picked) else picked
        scripted = self.replies.get(call.task_id, self.default)
        if isinstance(scripted, Sequence) and not isinstance(scripted, str):
            return scripted[min(call.index, len(scripted) - 1)] if scripted else self.default
        return scripted


def _as_reply(value: ReplyLike) -> Reply:
    if isinstance(value, Reply):
        return value
    if isinstance(value, BaseException):
        return Reply(error=value)
    if isinstance(value, str):
        return Reply(text=value)
    return Reply(data=value)


def _response(reply: Reply, call: Call, name: str) -> ChatResponse:
    text = reply.text
    if reply.data is not None:
        data = (
            reply.data.model_dump(mode="json") if hasattr(reply.data, "model_dump") else reply.data
        )
        text = json.dumps(data)
    tool_calls = tuple(
        ToolCall(
            id=f"call_{call.index}_{i}", name=name_, arguments=args, raw_arguments=json.dumps(args)
        )
        for i, (name_, args) in enumerate(reply.tool_calls)
    )
    prompt_chars = sum(len(str(m.get("content") or "")) for m in call.messages)
    usage = Usage(
        calls=1, prompt_tokens=prompt_chars // 4 + 1, completion_tokens=len(text or "") // 4 + 1
    )
    return ChatResponse(content=text, tool_calls=tool_calls, usage=usage, model=name)
