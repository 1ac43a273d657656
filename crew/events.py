"""The event stream of a run: what happened, in the past tense, as it happens.

Everything that watches a run (the terminal view, ``Crew.astream``, later the store) is a sink
subscribed to one ``EventBus``; the core never prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crew.results import CrewResult, TaskOutput
    from crew.usage import Usage


@dataclass(frozen=True, kw_only=True)
class Event:
    run_id: str
    at: float
    """Wall-clock time (seconds since the epoch) when it happened."""


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    crew: str
    task_ids: tuple[str, ...]
    inputs: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    status: str
    """succeeded, failed, cancelled, waiting or budget_exceeded."""
    result: CrewResult


@dataclass(frozen=True, kw_only=True)
class TaskStarted(Event):
    task_id: str
    agent: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class TaskRetrying(Event):
    task_id: str
    attempt: int
    """The attempt that failed."""
    error: str
    delay_s: float


@dataclass(frozen=True, kw_only=True)
class TaskFinished(Event):
    task_id: str
    output: TaskOutput


@dataclass(frozen=True, kw_only=True)
class TaskFailed(Event):
    task_id: str
    error: str
    error_type: str


@dataclass(frozen=True, kw_only=True)
class TaskSkipped(Event):
    task_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class TaskCancelled(Event):
    task_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RouteChosen(Event):
    """A router's agent chose a route; the tasks of the other routes are skipped."""

    task_id: str
    route: str
    reason: str
    skipped: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class RoundStarted(Event):
    """A loop began a round (1, 2, ...)."""

    task_id: str
    round: int
    max_rounds: int


@dataclass(frozen=True, kw_only=True)
class LoopFinished(Event):
    task_id: str
    rounds: int
    stopped: str
    """until (its condition held) or max_rounds."""


@dataclass(frozen=True, kw_only=True)
class LoopExhausted(Event):
    """A loop ran out of rounds before its ``until`` held: a warning. It still succeeds with
    its last round's outputs; ``LoopFinished`` follows."""

    task_id: str
    rounds: int
    reason: str
    """``loop 'refine' stopped after 3 rounds without meeting its condition `...```."""


@dataclass(frozen=True, kw_only=True)
class MapStarted(Event):
    """A map task found its items; one instance runs per item."""

    task_id: str
    items: int


@dataclass(frozen=True, kw_only=True)
class ItemFinished(Event):
    """One instance of a map finished (``item`` counts from 0)."""

    task_id: str
    item: int
    items: int


@dataclass(frozen=True, kw_only=True)
class LLMCalled(Event):
    task_id: str
    model: str
    """The model that answered (a fallback's, when the primary failed)."""
    usage: Usage
    latency_ms: float
    """From the request to the whole answer: the call began ``latency_ms`` before ``at``."""
    request_model: str = ""
    """The model the agent asked for."""
    messages: tuple[dict[str, Any], ...] = ()
    """The request's messages: only when the emitter carries content (``Emitter.content``)."""
    answer: dict[str, Any] | None = None
    """The answer as an assistant message (text and tool calls), under the same condition."""


@dataclass(frozen=True, kw_only=True)
class LLMRetrying(Event):
    task_id: str
    model: str
    attempt: int
    error: str
    delay_s: float


@dataclass(frozen=True, kw_only=True)
class LLMFallback(Event):
    task_id: str
    failed_model: str
    next_model: str
    error: str


@dataclass(frozen=True, kw_only=True)
class RateLimited(Event):
    """A model call waited before it started, for its model's process-wide limits."""

    task_id: str
    model: str
    limit: str
    """What it waited for: "rpm" (calls per minute), "tpm" (tokens per minute) or
    "retry_after" (the provider's Retry-After, which holds back every call to the model)."""
    waited_s: float


@dataclass(frozen=True, kw_only=True)
class CircuitOpened(Event):
    """A model's circuit breaker opened: its calls fail fast until a probe call succeeds."""

    task_id: str
    model: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class CircuitClosed(Event):
    """A model's circuit breaker closed: its provider answered again."""

    task_id: str
    model: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class BudgetExceeded(Event):
    """A model call's reservation would have passed the run's budget: nothing was sent, and the
    run dispatches no new task (the running ones end; the run ends ``budget_exceeded``)."""

    task_id: str
    model: str
    spent_usd: float
    """Spent and reserved by the run's calls when this one asked (resumed runs included)."""
    reserve_usd: float
    """What this call asked to reserve."""
    max_cost_usd: float | None
    spent_tokens: int
    reserve_tokens: int
    max_tokens: int | None


@dataclass(frozen=True, kw_only=True)
class TokenDelta(Event):
    """A piece of a model's answer as it streams in (only when the crew streams)."""

    task_id: str
    text: str


@dataclass(frozen=True, kw_only=True)
class ToolCalled(Event):
    task_id: str
    tool: str
    arguments: dict[str, Any]
    call_id: str = ""
    """The model's id for the call: it pairs the call with its ``ToolFinished``."""


@dataclass(frozen=True, kw_only=True)
class ToolFinished(Event):
    task_id: str
    tool: str
    ok: bool
    result: str
    call_id: str = ""
    error_type: str = ""
    """Why it failed (not ``ok``): the exception's type, ``unknown_tool`` or
    ``invalid_arguments``; empty when ``ok``."""


@dataclass(frozen=True, kw_only=True)
class ToolResultReused(Event):
    """A call of a tool that is not idempotent was not made again: an earlier attempt (before a
    crash, a resume or a retry) made it, and its result is given to the model instead."""

    task_id: str
    tool: str
    key: str
    """The idempotency key of the earlier call."""
    result: str
    call_id: str = ""
    how: str = "recorded"
    """recorded (the result was in the store: the call's own, or one a person recorded) or
    reconciled (the tool's ``reconcile`` found that the call took effect)."""


@dataclass(frozen=True, kw_only=True)
class ToolOutcomeUnknown(Event):
    """An earlier call of a tool that is not idempotent began, and its result was never
    recorded: whether it took effect is unknown, and no ``reconcile`` can tell. The task fails
    with ``ToolOutcomeUnknownError`` until a person records the outcome."""

    task_id: str
    tool: str
    key: str
    arguments: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class BoardPosted(Event):
    key: str
    version: int
    author: str
    kind: str
    """output (a task's result) or note (posted by an agent's tool)."""


@dataclass(frozen=True, kw_only=True)
class OutputKeptAsText(Event):
    """A CrewAI project's answer still did not match its ``output_pydantic``/``output_json``
    model after the repair turn: as CrewAI does, the task keeps the text (no data) and the run
    goes on."""

    task_id: str
    model: str
    """The output model's name."""
    error: str


@dataclass(frozen=True, kw_only=True)
class ReviewHookFailed(Event):
    """The review hook failed for a task's pending review; the run goes on, the review waits."""

    task_id: str
    hook: str
    """What the hook is, without secrets: ``webhook https://hooks.example.com/...``."""
    error: str


@dataclass(frozen=True, kw_only=True)
class SinkFailed(Event):
    """A sink raised on an event: the store could not record it, say, so ``crew logs`` lacks
    it. The run goes on; the other sinks get this, and the ``crew`` logger a warning."""

    sink: str
    """Which sink: ``Checkpoint.on_event``."""
    event: str
    """The type of the event it failed on."""
    error: str


EventSink = Callable[[Event], None]
"""Anything that takes events: a function, a list's append, a queue's put_nowait."""


class Emitter:
    """Stamps events of one run with its id and the time, and emits them on a bus.

    Building an event costs nothing when nobody listens: the bus's sinks are checked first.
    ``content``: whether ``LLMCalled`` carries the prompts and answers, for a sink that asked
    for them (tracing with ``capture_content``); off, events and the event log stay free of them.
    """

    def __init__(
        self, bus: EventBus, run_id: str, clock: Callable[[], float], *, content: bool = False
    ) -> None:
        self.bus = bus
        self.run_id = run_id
        self.clock = clock
        self.content = content

    def __call__(self, event_type: type[Event], /, **fields: Any) -> None:
        if self.bus.sinks:
            self.bus.emit(event_type(run_id=self.run_id, at=self.clock(), **fields))


@dataclass
class EventBus:
    """Fans events out to its sinks, in subscription order.

    A sink that raises does not stop the run or other sinks, nor goes unseen: its error is
    kept in ``errors``, logged as a warning, and announced to the sinks as ``SinkFailed``.
    """

    sinks: list[EventSink] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        self.sinks.append(sink)
        return lambda: self.sinks.remove(sink)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception as exc:  # a broken view must not fail the run it watches
                self.failed(sink, event, exc)

    def failed(self, sink: EventSink, event: Event, exc: Exception) -> None:
        """Report that ``sink`` lost ``event``: raised, or found later that it could not keep
        it (the store's thread could not write it)."""
        self.errors.append(exc)
        self._failed(sink, event, exc)

    def _failed(self, sink: EventSink, event: Event, exc: Exception) -> None:
        name = getattr(sink, "__qualname__", None) or type(sink).__qualname__
        _log.warning(
            "run %s: event %s was lost by %s: %s", event.run_id, type(event).__name__, name, exc
        )
        if not isinstance(event, SinkFailed):  # a sink failing on this too is only logged
            self.emit(
                SinkFailed(
                    run_id=event.run_id,
                    at=event.at,
                    sink=name,
                    event=type(event).__name__,
                    error=str(exc),
                )
            )


_log = logging.getLogger("crew")
