"""OpenTelemetry tracing of a run: opt-in, through the ``otel`` extra.

Turned on by ``Crew(tracing=True)`` (or ``Tracing(...)``), ``CREW_TRACING=1``, ``[tracing]
enabled = true`` in crew.toml or ``crew run --trace``, a run's events become spans::

    crew.run                           the run (the root)
    └── crew.task draft                one per task; its retries, a map's items: in it
        ├── chat openai/gpt-4o-mini    one per model call (GenAI semantic conventions)
        └── execute_tool search        one per tool call

crew never configures an exporter. Spans go to the tracer provider the application set up
(``opentelemetry.trace.set_tracer_provider``, or ``opentelemetry-instrument crew run ...``),
else to OpenTelemetry's no-op default: nothing is sent anywhere unless a provider is configured
and tracing is on. Prompts, answers, tool arguments and results, inputs and outputs are on the
spans only with ``capture_content``.

The sink is one more subscriber of the run's event bus: a run's, task's or tool call's span
starts at its start event and ends at its end event, and a model call's is made whole from
``LLMCalled``, which says how long the call took. Each takes the events' own times, so spans
have their true durations (they are not made current: other instrumentation's spans, an HTTP
client's say, do not nest under them). A subcrew's events reach its parent's run, so its tasks
are spans under the parent's task. This is the only module that imports opentelemetry, and
only for a traced run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crew import events
from crew.errors import ConfigError, redact

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from crew.usage import Usage

# As crew.toml reads a yes or no (pydantic's words), so that CREW_TRACING means one thing.
_ON, _OFF = ("1", "true", "t", "yes", "y", "on"), ("", "0", "false", "f", "no", "n", "off")

# litellm's provider prefixes whose name in the GenAI conventions differs.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


@dataclass(frozen=True, kw_only=True)
class Tracing:
    """How a run is traced (``Crew(tracing=Tracing(...))``; ``tracing=True`` is the default)."""

    capture_content: bool = False
    """Put prompts, answers, tool arguments and results, the run's inputs and the tasks'
    outputs on the spans. Off, spans carry names, models, tokens, cost and timing only."""
    tracer_provider: Any = None
    """The OpenTelemetry ``TracerProvider`` that makes the spans; None: the global one."""


TracingSetting = bool | Tracing | None
"""``Crew(tracing=...)``: True or a ``Tracing`` to trace, False not to, None for
``CREW_TRACING``."""


def check(setting: object) -> None:
    """Raise ``ConfigError`` unless ``setting`` is a ``TracingSetting``."""
    if setting is not None and not isinstance(setting, bool | Tracing):
        raise ConfigError(
            f"Crew(tracing=...) takes True, False, None or crew.tracing.Tracing(...), got"
            f" {type(setting).__name__}."
        )


def resolve(setting: TracingSetting, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The tracing of a run: ``setting``; None follows ``CREW_TRACING``, and True (as None
    with the variable set) takes ``capture_content`` from ``CREW_TRACING_CAPTURE_CONTENT``.

    Raises:
        ConfigError: a variable that is not a yes or no, or tracing on without OpenTelemetry.
    """
    environ = os.environ if environ is None else environ
    check(setting)
    if setting is None:
        setting = _flag(environ, "CREW_TRACING")
    if setting is True:
        setting = Tracing(capture_content=_flag(environ, "CREW_TRACING_CAPTURE_CONTENT"))
    if setting is False:
        return None
    require()
    return setting


def require() -> None:
    """Raise ``ConfigError`` unless OpenTelemetry's API is installed (before any model call)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "Tracing is on, but OpenTelemetry is not installed. Install it with"
            " pip install 'crew[otel]', or turn tracing off (Crew(tracing=False), CREW_TRACING=0,"
            " [tracing] enabled = false in crew.toml)."
        ) from exc


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value not in _ON + _OFF:
        raise ConfigError(f"{name}={value!r}: write {name}=1 to turn it on, or 0 to turn it off.")
    return value in _ON


class OpenTelemetrySink:
    """Turns one run's events into spans: an ``EventSink``, subscribed by the run itself."""

    def __init__(self, tracing: Tracing) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = trace.get_tracer("crew", tracer_provider=tracing.tracer_provider)
        self.content = tracing.capture_content
        self.run: Span | None = None
        self.tasks: dict[str, Span] = {}
        """The open span of each task that started and has not ended."""
        self.tools: dict[tuple[str, str, str], list[Span]] = {}
        """Open tool spans by (task, call id, tool), oldest first."""
        self.failure = ""
        """The error type of the first task that failed, for the run's span."""
        self._handlers: dict[type[events.Event], Callable[[Any], None]] = {
            events.RunStarted: self._run_started,
            events.RunFinished: self._run_finished,
            events.TaskStarted: self._task_started,
            events.TaskRetrying: self._task_retrying,
            events.TaskFinished: self._task_finished,
            events.TaskFailed: self._task_failed,
            events.TaskCancelled: self._task_ended,
            events.TaskSkipped: self._task_ended,
            events.LLMCalled: self._llm_called,
            events.LLMRetrying: self._llm_retrying,
            events.LLMFallback: self._llm_fallback,
            events.ToolCalled: self._tool_called,
            events.ToolFinished: self._tool_finished,
        }

    def __call__(self, event: events.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _start(
        self,
        name: str,
        at: float,
        parent: Span | None,
        attributes: dict[str, Any],
        *,
        client: bool = False,
    ) -> Span:
        trace = self._trace
        return self.tracer.start_span(
            name,
            context=trace.set_span_in_context(parent) if parent is not None else None,
            kind=trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_ns(at),
        )

    def _parent(self, task_id: str) -> Span | None:
        """The span of ``task_id``'s task, or of the task it is part of (``draft`` for a
        delegation ``draft/delegated-1``, ``research`` for a subcrew's ``research/facts``);
        else the run's."""
        key = task_id
        while key not in self.tasks:
            if "/" not in key:
                return self.run
            key = key.rpartition("/")[0]
        return self.tasks[key]

    def _fail(self, span: Span, error_type: str, message: str) -> None:
        message = redact(message)  # providers and tools may echo keys in their errors
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, message))
        span.set_attribute("error.type", error_type)
        span.add_event("exception", {"exception.type": error_type, "exception.message": message})

    def _run_started(self, event: events.RunStarted) -> None:
        attributes: dict[str, Any] = {
            "crew.run.id": event.run_id,
            "crew.name": event.crew,
            "crew.task_ids": list(event.task_ids),
        }
        if self.content:
            attributes["crew.run.inputs"] = _json(event.inputs)
        self.run = self._start("crew.run", event.at, None, attributes)

    def _run_finished(self, event: events.RunFinished) -> None:
        for spans in self.tools.values():  # cancelled mid-call
            for span in spans:
                span.end(end_time=_ns(event.at))
        for span in self.tasks.values():
            span.end(end_time=_ns(event.at))
        self.tools.clear()
        self.tasks.clear()
        if self.run is None:
            return
        self.run.set_attribute("crew.run.status", event.status)
        self.run.set_attributes(_usage(event.result.usage.total))
        if event.status == "failed":
            self._fail(self.run, self.failure or "failed", f"run {event.run_id} failed")
        self.run.end(end_time=_ns(event.at))
        self.run = None

    def _task_started(self, event: events.TaskStarted) -> None:
        span = self.tasks.get(event.task_id)
        if span is not None:  # a later attempt: the same task's span
            span.set_attribute("crew.task.attempts", event.attempt)
            return
        attributes: dict[str, Any] = {
            "crew.task.id": event.task_id,
            "crew.task.attempts": event.attempt,
        }
        if event.agent:
            attributes |= {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": event.agent,
            }
        parent = self._parent(event.task_id)
        self.tasks[event.task_id] = self._start(
            f"crew.task {event.task_id}", event.at, parent, attributes
        )

    def _task_retrying(self, event: events.TaskRetrying) -> None:
        span = self.tasks.get(event.task_id)
        if span is not None:
            span.add_event(
                "crew.task.retry",
                {
                    "crew.attempt": event.attempt,
                    "crew.error": redact(event.error),
                    "crew.delay_s": event.delay_s,
                },
                timestamp=_ns(event.at),
            )

    def _task_finished(self, event: events.TaskFinished) -> None:
        span = self._ending(event.task_id, event.at)
        output = event.output
        span.set_attribute("crew.task.status", "succeeded")
        span.set_attributes(_usage(output.usage))
        if output.model:
            span.set_attribute("gen_ai.response.model", output.model)
        if self.content:
            span.set_attribute("crew.task.output", output.text)
        span.end(end_time=_ns(event.at))

    def _task_failed(self, event: events.TaskFailed) -> None:
        span = self._ending(event.task_id, event.at)
        span.set_attribute("crew.task.status", "failed")
        self._fail(span, event.error_type, event.error)
        self.failure = self.failure or event.error_type
        span.end(end_time=_ns(event.at))

    def _task_ended(self, event: events.TaskCancelled | events.TaskSkipped) -> None:
        span = self.tasks.pop(event.task_id, None)
        if span is None:  # a task skipped before it began has no span
            return
        status = "cancelled" if isinstance(event, events.TaskCancelled) else "skipped"
        span.set_attributes({"crew.task.status": status, "crew.task.reason": event.reason})
        span.end(end_time=_ns(event.at))

    def _ending(self, task_id: str, at: float) -> Span:
        """The task's open span, taken from the open ones; or, for a task that ended without
        starting (it failed to set up), one that starts here."""
        span = self.tasks.pop(task_id, None)
        if span is None:
            span = self._start(
                f"crew.task {task_id}", at, self._parent(task_id), {"crew.task.id": task_id}
            )
        return span

    def _llm_called(self, event: events.LLMCalled) -> None:
        model = event.request_model or event.model
        provider = _provider(model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,  # the name before semantic conventions 1.37
            "gen_ai.request.model": model,
            "gen_ai.response.model": event.model or model,
            "gen_ai.usage.input_tokens": event.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": event.usage.completion_tokens,
            "crew.cost_usd": event.usage.cost_usd,
            "crew.task.id": event.task_id,
        }
        if self.content and event.messages:
            attributes["gen_ai.input.messages"] = _json([_message(m) for m in event.messages])
        if self.content and event.answer is not None:
            answer = _message(event.answer)
            answer["finish_reason"] = "tool_call" if event.answer.get("tool_calls") else "stop"
            attributes["gen_ai.output.messages"] = _json([answer])
        began = event.at - event.latency_ms / 1000
        span = self._start(
            f"chat {model}", began, self._parent(event.task_id), attributes, client=True
        )
        span.end(end_time=_ns(event.at))

    def _llm_retrying(self, event: events.LLMRetrying) -> None:
        span = self._parent(event.task_id)
        if span is not None:
            span.add_event(
                "crew.llm.retry",
                {
                    "gen_ai.request.model": event.model,
                    "crew.attempt": event.attempt,
                    "crew.error": redact(event.error),
                    "crew.delay_s": event.delay_s,
                },
                timestamp=_ns(event.at),
            )

    def _llm_fallback(self, event: events.LLMFallback) -> None:
        span = self._parent(event.task_id)
        if span is not None:
            span.add_event(
                "crew.llm.fallback",
                {
                    "crew.failed_model": event.failed_model,
                    "crew.next_model": event.next_model,
                    "crew.error": redact(event.error),
                },
                timestamp=_ns(event.at),
            )

    def _tool_called(self, event: events.ToolCalled) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": event.tool,
            "gen_ai.tool.type": "function",
            "crew.task.id": event.task_id,
        }
        if event.call_id:
            attributes["gen_ai.tool.call.id"] = event.call_id
        if self.content:
            attributes["gen_ai.tool.call.arguments"] = _json(event.arguments)
        span = self._start(
            f"execute_tool {event.tool}", event.at, self._parent(event.task_id), attributes
        )
        self.tools.setdefault((event.task_id, event.call_id, event.tool), []).append(span)

    def _tool_finished(self, event: events.ToolFinished) -> None:
        open_spans = self.tools.get((event.task_id, event.call_id, event.tool))
        if not open_spans:
            return
        span = open_spans.pop(0)
        if self.content:
            span.set_attribute("gen_ai.tool.call.result", event.result)
        if not event.ok:
            self._fail(span, event.error_type or "tool_error", f"tool {event.tool} failed")
        span.end(end_time=_ns(event.at))


def _ns(at: float) -> int:
    """Seconds since the epoch (an event's ``at``) as OpenTelemetry's nanoseconds."""
    return int(at * 1_000_000_000)


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "crew.cost_usd": usage.cost_usd,
        "crew.model_calls": usage.calls,
    }


def _provider(model: str) -> str:
    """The GenAI conventions' provider name of a litellm model string (``openai/gpt-4o`` ->
    ``openai``); ``_OTHER`` for a name without a provider."""
    prefix, slash, _ = model.partition("/")
    if not slash:
        return "_OTHER"
    return _PROVIDERS.get(prefix, prefix)


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message in the GenAI conventions' form: a role and its parts."""
    role = str(message.get("role", "user"))
    content = message.get("content")
    parts: list[dict[str, Any]] = []
    if role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}
        )
    elif content:
        parts.append({"type": "text", "content": content})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": _loaded(function.get("arguments")),
            }
        )
    return {"role": role, "parts": parts}


def _loaded(arguments: Any) -> Any:
    """A tool call's arguments as the JSON object they are, else as the model sent them."""
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return arguments


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
