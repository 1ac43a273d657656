"""Test a crew without a network: ``ScriptedLLM`` answers in-process, by task or by a function.

from crew.testing import ScriptedLLM, Reply

llm = ScriptedLLM({"facts": "- Lisbon is on the Tagus", "article": {"title": "Lisbon"}})
with llm.everywhere(crew):              # every model of every agent answers from the script
    result = crew.run(inputs={"topic": "Lisbon"})
assert llm.calls_for("article")[0].model == "scripted"   # the default: none was configured

Used as a model (``Crew(llm=llm)``, ``Agent(llm=llm)``), the script is that model. Under
``everywhere()`` it is the provider behind every ``crew.LLM`` instead: each agent keeps its own
model, retry policy and fallbacks, and an injected ``RateLimitError`` is retried and falls back
exactly as a real one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError, did_you_mean
from crew.llm import LLM, ChatRequest, ChatResponse, ToolCall
from crew.model_choice import default_llm
from crew.task import every_task
from crew.usage import Usage

if TYPE_CHECKING:
    from crew.crew import Crew


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
    """0 for the first call of this task, then 1, 2, ... (retries and fallbacks count too)."""
    started: float
    """time.perf_counter() when the call began."""
    model: str = "scripted"
    """The model asked: the ``LLM``'s model string under ``everywhere()`` (a fallback's, once
    the primary's retries are spent), else the ScriptedLLM's ``name``."""

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
        strict: a script key that names no task is an error, reported with the closest task
            id by ``check(crew)`` and ``everywhere(crew)``, before any call. ``strict=False``
            lets such keys pass.
    """

    replies: Mapping[str, ReplyLike | Sequence[ReplyLike]] | Script = field(default_factory=dict)
    default: ReplyLike = "ok"
    delay_s: float = 0.0
    name: str = "scripted"
    strict: bool = True
    calls: list[Call] = field(default_factory=list, init=False)
    finished: list[tuple[Call, float]] = field(default_factory=list, init=False)
    """(call, time.perf_counter() at its end) for every answered call."""
    in_flight: int = field(default=0, init=False)
    max_in_flight: int = field(default=0, init=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def calls_for(self, task_id: str) -> list[Call]:
        return [c for c in self.calls if c.task_id == task_id]

    def check(self, *crews: Crew) -> None:
        """Raise ``ConfigError`` if a key of the script names no task of ``crews`` (with the
        closest task id). Loop bodies and subcrews count; so do delegations (``task/...``).
        A hierarchical crew's tasks are made by its manager at run time, so it is not checked."""
        if not self.strict or callable(self.replies) or not crews:
            return
        if any(crew.process == "hierarchical" for crew in crews):
            return
        ids = sorted({task_id for crew in crews for task_id in _task_ids(crew)})
        problems = [
            f"ScriptedLLM: the script names '{key}', which is not a task of the crew."
            f"{did_you_mean(key, ids, sentence=True)} Its tasks: {', '.join(ids)}."
            " (Pass strict=False to allow keys that name no task.)"
            for key in self.replies
            if key.split("/", 1)[0] not in ids
        ]
        if problems:
            raise ConfigError(problems)

    @contextlib.contextmanager
    def everywhere(self, *crews: Crew) -> Iterator[ScriptedLLM]:
        """Stand in for every model in this block: each ``crew.LLM`` (every agent's own, its
        fallbacks, the default model) sends its calls here instead of to its provider.

        The LLM's retry policy and fallback chain run as for real, so an injected
        ``RateLimitError`` is retried (waiting as the policy says) and then falls back;
        ``Call.model`` says which model was asked. Agents with no model use the configured
        default, or this script when none is configured. ``crews``, if given, are checked
        first (``check``). Blocks may nest; the innermost answers.
        """
        self.check(*crews)
        with _standing_in(self):
            yield self

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.answer(request, model=self.name)

    async def answer(self, request: ChatRequest, *, model: str) -> ChatResponse:
        """Answer ``request`` as ``model`` would (``complete`` answers as this ScriptedLLM)."""
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
            model=model,
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
        response = _response(reply, call, model)
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


def _task_ids(crew: Crew) -> Iterator[str]:
    for task in every_task(crew.tasks):
        yield task.id
        if task.crew is not None:
            yield from _task_ids(task.crew)  # type: ignore[arg-type]  # a Subcrew is a Crew


_active: list[ScriptedLLM] = []
"""The ScriptedLLMs standing in for every LLM, innermost last."""
_lock = threading.Lock()
_provider_call: Any = None
"""``LLM._call`` as it was before the first stand-in: the one call to the provider, below the
retry policy and the fallback chain of ``LLM.complete``."""


async def _scripted_call(llm: LLM, request: ChatRequest) -> ChatResponse:
    return await _active[-1].answer(request, model=llm.model)


@contextlib.contextmanager
def _standing_in(llm: ScriptedLLM) -> Iterator[None]:
    global _provider_call
    if not hasattr(LLM, "_call"):  # the seam this relies on; a rename must fail loudly
        raise AssertionError("crew.llm.LLM._call, the provider call, is gone")
    with _lock:
        if not _active:
            _provider_call = LLM._call
            LLM._call = _scripted_call  # type: ignore[method-assign, assignment]
        _active.append(llm)
    try:
        with _default_model(llm.name):
            yield
    finally:
        with _lock:
            _active.remove(llm)
            if not _active:
                LLM._call = _provider_call  # type: ignore[method-assign]
                _provider_call = None


@contextlib.contextmanager
def _default_model(name: str) -> Iterator[None]:
    """With no default model configured, make ``name`` the default (``CREW_MODEL``) for the
    block, so that agents which name no model are answered by the script too."""
    if default_llm() is not None:
        yield
        return
    before = os.environ.get("CREW_MODEL")
    os.environ["CREW_MODEL"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CREW_MODEL", None)
        else:
            os.environ["CREW_MODEL"] = before


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
