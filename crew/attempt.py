"""One attempt at a task by its agent: the tool loop, structured output and its repair, and
delegation to coworkers.

The ``Agent`` is the definition; an ``Attempt`` keeps each execution's state (messages, usage) in
local variables, so one agent can do many tasks at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crew import events, prompts
from crew.chat import ChatModel, ChatRequest, ChatResponse, ToolCall
from crew.errors import MaxIterationsError, OutputValidationError
from crew.results import parse_output
from crew.task import Assignment
from crew.tools import Tool, board_tools
from crew.usage import Usage

if TYPE_CHECKING:
    from crew.agent import Agent
    from crew.board import Board
    from crew.task import Task
    from crew.tool_calls import ToolCallLog

KEEPS_TEXT = "__crew_keeps_text__"
"""Set to True on an output model whose task keeps an answer that still does not match after
the repair turn, as text without data (CrewAI's rule; crew's own ``output_model`` is strict)."""

MAX_DELEGATION_DEPTH = 2
"""A coworker may delegate once more; below that, no delegation tools (no endless ping-pong)."""


class Attempt:
    """``agent`` doing one task (or a coworker's assignment)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def execute(self, task: Task | Assignment, run: TaskRun) -> AgentAnswer:
        """Do ``task``: the tool loop, then the answer (validated when the task asks for data)."""
        agent = self.agent
        output_model = task.output_model
        schema = output_model.model_json_schema() if output_model is not None else None
        tools = dict(agent.tool_map)
        if agent.board_tools:
            board = board_tools(run.board, author=agent.role, reserved=run.reserved)
            tools.update({t.name: t for t in board})
        if agent.allow_delegation and len(run.chain) < MAX_DELEGATION_DEPTH:
            tools.update({t.name: t for t in self._delegation_tools(task, run)})
        schemas = [t.schema() for t in tools.values()] or None
        context = [
            entry for dep in task.dependency_ids if (entry := run.board.get(dep)) is not None
        ]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompts.system_prompt(agent, run.inputs)},
            {
                "role": "user",
                "content": prompts.task_prompt(
                    task,
                    run.inputs,
                    context,
                    schema,
                    schema_enforced=_enforces_schema(run.llm),
                    feedback=_feedback(task, run),
                ),
            },
        ]
        repaired = False
        for iteration in range(1, agent.max_iterations + 1):
            last = iteration == agent.max_iterations
            if last and iteration > 1 and messages[-1]["role"] == "tool":
                messages.append({"role": "user", "content": prompts.FINAL_ANSWER_PROMPT})
            response = await self._ask(task, run, messages, None if last else schemas, schema)
            if response.tool_calls and not last:
                messages.append(_assistant_message(response))
                results = await asyncio.gather(
                    *(self._call_tool(task, run, tools, call) for call in response.tool_calls)
                )
                messages.extend(
                    {"role": "tool", "tool_call_id": call.id, "content": result}
                    for call, result in zip(response.tool_calls, results, strict=True)
                )
                continue
            text = response.content or ""
            if output_model is None:
                if not text and response.tool_calls:
                    break
                return AgentAnswer(text=text, data=None, model=response.model)
            try:
                data = parse_output(text, output_model, task_id=task.id)
            except OutputValidationError as exc:
                if (repaired or last) and getattr(output_model, KEEPS_TEXT, False):
                    name, error = output_model.__name__, str(exc.details)
                    run.emit(events.OutputKeptAsText, task_id=task.id, model=name, error=error)
                    return AgentAnswer(text=text, data=None, model=response.model)
                if repaired or last:
                    raise
                repaired = True
                messages.append({"role": "assistant", "content": text})
                messages.append(
                    {"role": "user", "content": prompts.repair_prompt(str(exc.details))}
                )
                continue
            return AgentAnswer(text=text, data=data, model=response.model)
        raise MaxIterationsError(
            f"Task '{task.id}': agent '{agent.role}' gave no final answer in {agent.max_iterations}"
            " model calls. Raise Agent(max_iterations=...) or simplify the task.",
            task_id=task.id,
        )

    async def _ask(
        self,
        task: Task | Assignment,
        run: TaskRun,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        schema: dict[str, Any] | None,
    ) -> ChatResponse:
        emit = run.emit

        def on_retry(model: str, attempt: int, error: BaseException, delay: float) -> None:
            run.on_usage(Usage(retries=1), self.agent.role)
            emit(
                events.LLMRetrying,
                task_id=task.id,
                model=model,
                attempt=attempt,
                error=str(error),
                delay_s=delay,
            )

        def on_fallback(failed: str, following: str, error: BaseException) -> None:
            run.on_usage(Usage(retries=1), self.agent.role)
            emit(
                events.LLMFallback,
                task_id=task.id,
                failed_model=failed,
                next_model=following,
                error=str(error),
            )

        def on_token(text: str) -> None:
            emit(events.TokenDelta, task_id=task.id, text=text)

        def on_wait(model: str, limit: str, waited_s: float) -> None:
            emit(events.RateLimited, task_id=task.id, model=model, limit=limit, waited_s=waited_s)

        def on_circuit(model: str, opened: bool, reason: str) -> None:
            kind = events.CircuitOpened if opened else events.CircuitClosed
            emit(kind, task_id=task.id, model=model, reason=reason)

        request = ChatRequest(
            on_token=on_token if run.stream else None,
            messages=list(messages),
            tools=tools,
            output_schema=schema,
            output_name=_schema_name(task),
            task_id=task.id,
            agent=self.agent.role,
            on_retry=on_retry,
            on_fallback=on_fallback,
            on_wait=on_wait,
            on_circuit=on_circuit,
            call_attempts=run.call_attempts,
        )
        response = await run.llm.complete(request)
        run.on_usage(response.usage, self.agent.role)  # a coworker's calls are its own
        content = (
            {"messages": tuple(messages), "answer": _assistant_message(response)}
            if emit.content
            else {}
        )
        emit(
            events.LLMCalled,
            task_id=task.id,
            model=response.model,
            usage=response.usage,
            latency_ms=response.latency_ms,
            request_model=run.llm.name,
            **content,
        )
        return response

    async def _call_tool(
        self, task: Task | Assignment, run: TaskRun, tools: Mapping[str, Tool], call: ToolCall
    ) -> str:
        """Run one tool call; any failure becomes the text the model reads, never a task failure."""
        emit, call_id = run.emit, call.id
        emit(
            events.ToolCalled,
            task_id=task.id,
            tool=call.name,
            arguments=call.arguments,
            call_id=call_id,
        )
        found = tools.get(call.name)
        error_type = ""
        if found is None:
            result = f"Error: there is no tool '{call.name}'. Available tools: {', '.join(tools)}."
            error_type = "unknown_tool"
        elif (
            call.raw_arguments.strip() and not call.arguments and call.raw_arguments.strip() != "{}"
        ):
            result = (
                f"Error: the arguments of {call.name} are not a JSON object: {call.raw_arguments}"
            )
            error_type = "invalid_arguments"
        elif found.idempotent or run.tool_calls is None:
            try:
                result = await found.invoke(call.arguments)
            except Exception as exc:  # the model sees the error and can try another way
                result = f"Error: {call.name} raised {type(exc).__name__}: {exc}"
                error_type = type(exc).__name__
        else:  # recorded before and after, made once across attempts (crew.tool_calls)
            try:
                kwargs = found.validate(call.arguments)
            except Exception as exc:  # refused arguments: no intent, nothing happened
                result = f"Error: {call.name} raised {type(exc).__name__}: {exc}"
                error_type = type(exc).__name__
            else:
                log = run.tool_calls
                result, error_type = await log.call(
                    found, call.arguments, kwargs, emit=emit, call_id=call_id
                )
        emit(
            events.ToolFinished,
            task_id=task.id,
            tool=call.name,
            ok=not error_type,
            result=result,
            call_id=call_id,
            error_type=error_type,
        )
        return result

    def _delegation_tools(self, task: Task | Assignment, run: TaskRun) -> list[Tool]:
        """``delegate_work`` and ``ask_question``, bound to this execution."""
        counter = itertools.count(1)
        delegate_spec, ask_spec = _delegation_tool_specs()

        async def delegate_work(coworker: str, task_description: str, context: str = "") -> str:
            return await self._delegate(
                task,
                run,
                coworker,
                task_description,
                context,
                key=f"{task.id}/delegated-{next(counter)}",
                expected="A complete answer to the task.",
            )

        async def ask_question(coworker: str, question: str, context: str = "") -> str:
            return await self._delegate(
                task,
                run,
                coworker,
                question,
                context,
                key=f"{task.id}/question-{next(counter)}",
                expected="A clear, direct answer to the question.",
            )

        return [delegate_spec.with_fn(delegate_work), ask_spec.with_fn(ask_question)]

    async def _delegate(
        self,
        task: Task | Assignment,
        run: TaskRun,
        name: str,
        work: str,
        context: str,
        *,
        key: str,
        expected: str,
    ) -> str:
        allowed = [
            role
            for role in run.coworkers
            if role != self.agent.role
            and role not in run.chain
            and (
                not self.agent.delegates
                or _normal(role) in {_normal(d) for d in self.agent.delegates}
            )
        ]
        wanted = _normal(name)
        role = next((r for r in allowed if _normal(r) == wanted), None)
        if role is None:
            listed = ", ".join(repr(r) for r in allowed) or "none"
            return f"Error: there is no coworker '{name}' you can ask. Coworkers: {listed}."
        coworker = run.coworkers[role]
        assert run.model_for is not None  # set whenever coworkers are
        description = f"{work}\n\nContext from {self.agent.role}:\n{context}" if context else work
        assignment = Assignment(id=key, description=description, expected_output=expected)
        sub_run = dataclasses.replace(
            run, llm=run.model_for(coworker), chain=(*run.chain, self.agent.role)
        )
        answer = await Attempt(coworker).execute(assignment, sub_run)
        run.board.post(key, answer.text, author=coworker.role, kind="delegation")
        return answer.text


@dataclass(frozen=True, kw_only=True)
class AgentAnswer:
    text: str
    data: Any
    model: str


@dataclass(frozen=True, kw_only=True)
class TaskRun:
    """What one execution of a task needs from the run around it."""

    llm: ChatModel
    board: Board
    inputs: Mapping[str, Any]
    emit: events.Emitter
    on_usage: Callable[[Usage, str], None]
    """Counts a model call's usage against the task, made by the agent of that role."""
    reserved: frozenset[str] = frozenset()
    """Board keys notes may not use: the task ids of the crew."""
    coworkers: Mapping[str, Agent] = field(default_factory=dict)
    """Every agent of the crew by role, for delegation."""
    model_for: Callable[[Agent], ChatModel] | None = None
    """The model an agent runs on (its own, else the crew default), for delegation."""
    chain: tuple[str, ...] = ()
    """Roles that delegated down to this execution, outermost first."""
    stream: bool = False
    """Stream answers and emit TokenDelta events."""
    feedback: str | None = None
    """A reviewer's reason for rejecting this task's previous answer (it runs again)."""
    call_attempts: int | None = None
    """The crew's tries in all per model call, for models without a retry policy of their own."""
    tool_calls: ToolCallLog | None = None
    """Records the calls of tools that are not idempotent, so none is made twice across
    attempts; None: they are called like the others (no store)."""


def _feedback(task: Task | Assignment, run: TaskRun) -> tuple[str, str] | None:
    """(previous answer, reviewer's feedback) for a task whose answer a person rejected."""
    if run.feedback is None:
        return None
    previous = run.board.get(task.id)
    return (previous.text if previous is not None else "", run.feedback)


def _enforces_schema(llm: ChatModel) -> bool:
    """Whether the provider itself holds answers to a JSON schema (``LLM.enforces_schema``; a
    model without the attribute does not)."""
    return bool(getattr(llm, "enforces_schema", False))


def _normal(role: str) -> str:
    """Roles match whatever the case, spacing, underscores or quotes a model writes them with."""
    return " ".join(role.strip().strip("'\"`").replace("_", " ").lower().split())


@functools.cache
def _delegation_tool_specs() -> tuple[Tool, Tool]:
    def delegate_work(coworker: str, task_description: str, context: str = "") -> str:
        """Hand a piece of work to a coworker, who does it and returns the result.

        Args:
            coworker: the role of the coworker to delegate to.
            task_description: what the coworker should do, in full.
            context: everything the coworker needs to know; they know nothing of your task.
        """
        raise NotImplementedError  # a signature for the schema; the bound tool does the work

    def ask_question(coworker: str, question: str, context: str = "") -> str:
        """Ask a coworker a question and get their answer.

        Args:
            coworker: the role of the coworker to ask.
            question: the question, in full.
            context: everything the coworker needs to know to answer.
        """
        raise NotImplementedError  # a signature for the schema; the bound tool does the work

    return Tool(delegate_work), Tool(ask_question)


def _schema_name(task: Task | Assignment) -> str:
    model = task.output_model
    return re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__ if model is not None else task.id)[:64]


def _assistant_message(response: ChatResponse) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": response.content,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments or json.dumps(call.arguments),
                },
            }
            for call in response.tool_calls
        ],
    }
