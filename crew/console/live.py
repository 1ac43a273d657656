"""The live view of a run in the terminal: one more event subscriber (the core never prints)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from crew import events
from crew.console.text import count, first_line
from crew.prompts import interpolate
from crew.usage import Usage

if TYPE_CHECKING:
    pass


_STATES = {
    "waiting": ("·", "waiting", "dim"),
    "running": ("", "running", "cyan"),
    "retrying": ("↻", "retrying", "yellow"),
    "succeeded": ("✓", "done", "green"),
    "failed": ("✗", "failed", "bold red"),
    "skipped": ("-", "skipped", "dim"),
    "cancelled": ("⊘", "cancelled", "magenta"),
    "pending": ("$", "pending", "yellow"),
}
_DONE = frozenset({"succeeded", "failed", "skipped", "cancelled"})
_TAIL_CHARS = 400


@dataclass
class _Row:
    task_id: str
    agent: str = ""
    state: str = "waiting"
    detail: str = ""
    """What the row says after its columns: retry, error, reason, tool or streamed text."""
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = field(default_factory=Usage)
    streamed: str = ""
    """The end of the text streamed so far by the running attempt."""
    spinner: Spinner | None = None
    parent: str | None = None
    """The row this one is nested under: a subcrew's (``research/search``) or a loop's."""
    flow: str = ""
    """Control flow so far, shown when there is no detail: route, round, items done."""
    items_done: int = 0

    def elapsed_s(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at if self.finished_at is not None else now) - self.started_at


class ConsoleView:
    """An ``EventSink`` that shows a run in the terminal: a row per task, live.

    Args:
        console: where to draw.
        task_ids: the rows, in order (else taken from ``RunStarted``).
        agents: the agent role of each task, by task id, known before the tasks start.
        live: animate with ``rich.live.Live``; None animates only when the console is a
            terminal. Otherwise (piped, CI) each notable event is printed as one plain line.
        clock: wall-clock seconds, for the elapsed time of running tasks.

    A subcrew's tasks (``research/search``) and a loop's (ids not among the run's tasks, started
    while the loop runs) get rows as they start, nested under the row of their subcrew or loop.
    """

    def __init__(
        self,
        console: Console,
        *,
        task_ids: Sequence[str] | None = None,
        agents: Mapping[str, str] | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.crew = ""
        self.run_id = ""
        self.status = ""
        self._clock = clock
        self._rows: dict[str, _Row] = {}
        self._declared = set(task_ids or ())
        self._inputs: Mapping[str, Any] = {}
        """The run's inputs, to fill in the roles shown (``{topic} Researcher``)."""
        self._loops: list[str] = []
        """Loops running, innermost last: a task id they did not declare is in one's body."""
        for task_id in task_ids or ():
            self._row(task_id)
        for task_id, role in (agents or {}).items():
            self._row(task_id).agent = role
        self._lock = threading.Lock()  # events come on the loop thread, refreshes on Live's
        self._display: Live | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            events.RunStarted: self._run_started,
            events.RunFinished: self._run_finished,
            events.TaskStarted: self._task_started,
            events.TaskRetrying: self._retrying,
            events.LLMRetrying: self._retrying,
            events.LLMFallback: self._llm_fallback,
            events.LLMCalled: self._llm_called,
            events.ToolCalled: self._tool_called,
            events.TaskFinished: self._task_finished,
            events.TaskFailed: self._task_failed,
            events.TaskSkipped: self._task_ended,
            events.TaskCancelled: self._task_ended,
            events.RouteChosen: self._route_chosen,
            events.RoundStarted: self._round_started,
            events.LoopFinished: self._loop_finished,
            events.MapStarted: self._map_started,
            events.OutputKeptAsText: self._output_kept_as_text,
            events.ItemFinished: self._item_finished,
            events.BudgetExceeded: self._budget_exceeded,
        }
        token_delta = getattr(events, "TokenDelta", None)  # streaming may not exist yet
        if token_delta is not None:
            self._handlers[token_delta] = self._token_delta

    def __call__(self, event: events.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            with self._lock:
                handler(event)

    def start(self) -> None:
        """Start the live display (nothing to do in plain mode)."""
        if self.live and self._display is None:
            self._display = Live(
                console=self.console,
                refresh_per_second=8,
                get_renderable=self.render,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._display.start()

    def stop(self) -> None:
        """Draw the last frame and give the terminal back; safe to call more than once."""
        display, self._display = self._display, None
        if display is not None:
            display.stop()

    def __enter__(self) -> ConsoleView:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def progress(self) -> tuple[int, int]:
        """(tasks ended, tasks in all), of the run's own tasks: a loop, map or subcrew counts
        once; the rows nested under it do not count."""
        rows = [r for r in self._rows.values() if r.parent is None]
        return sum(r.state in _DONE for r in rows), len(rows)

    def render(self) -> RenderableType:
        """The current frame: a header line and the table of tasks."""
        with self._lock:
            now = self._clock()
            done, total = self.progress
            header = Text.assemble(
                ("crew ", "dim"), (self.crew or "…", "bold"), ("  run ", "dim"),
                (self.run_id or "…", "bold"), ("  ", ""), (f"{done}/{total} done", "cyan"),
            )  # fmt: skip
            if self.status:
                style = "bold green" if self.status == "succeeded" else "bold red"
                header.append(f"  {self.status}", style)
            table = Table(box=None, pad_edge=False, show_edge=False, header_style="dim")
            for name in ("state", "task", "agent", "elapsed", "tokens", "cost", ""):
                right = name in ("elapsed", "tokens", "cost")
                table.add_column(name, justify="right" if right else "left", no_wrap=bool(name))
            for row, depth in self._nested():
                table.add_row(*self._cells(row, now, depth))
            return Group(header, table)

    def __rich__(self) -> RenderableType:
        return self.render()

    def _nested(self) -> list[tuple[_Row, int]]:
        """The rows in order, each nested one after its parent's, with its depth."""
        children: dict[str | None, list[_Row]] = {}
        for row in self._rows.values():
            children.setdefault(row.parent, []).append(row)
        ordered: list[tuple[_Row, int]] = []

        def add(parent: str | None, depth: int) -> None:
            for row in children.get(parent, ()):
                ordered.append((row, depth))
                add(row.task_id, depth + 1)

        add(None, 0)
        return ordered

    def _cells(self, row: _Row, now: float, depth: int = 0) -> list[RenderableType]:
        mark, label, style = _STATES[row.state]
        state: RenderableType = Text(f"{mark} {label}", style=style)
        if row.state == "running":
            row.spinner = row.spinner or Spinner("dots", text=Text(label, style=style))
            state = row.spinner
        seconds = row.elapsed_s(now)
        elapsed = f"{seconds:.1f}s" if seconds is not None else ""
        tokens = f"{row.usage.total_tokens:,}" if row.usage.calls else ""
        cost = f"${row.usage.cost_usd:.4f}" if row.usage.cost_usd else ""
        text = row.detail or row.flow
        if not text and row.streamed:  # the end of the text matters: cut its start to fit
            text = "…" + " ".join(row.streamed.split())[-max(12, self.console.width - 60) :]
        style = "red" if row.state == "failed" else "dim"
        detail = Text(text, style=style, no_wrap=True, overflow="ellipsis")
        name = row.task_id
        if depth:  # its own id, under its parent's: "research/search" -> "  └ search"
            name = "  " * (depth - 1) + "└ " + name.removeprefix(f"{row.parent}/")
        return [state, name, row.agent, elapsed, tokens, cost, detail]

    def _row(self, task_id: str) -> _Row:
        row = self._rows.get(task_id)
        if row is None:
            parent = task_id.rpartition("/")[0] or None
            if parent is None and task_id not in self._declared and self._loops:
                parent = self._loops[-1]
            # A parent made before its child: the nesting can have no cycle.
            row = self._rows[task_id] = _Row(
                task_id, parent=parent if parent in self._rows else None
            )
        return row

    def _say(self, row: _Row, text: str, style: str = "") -> None:
        """One plain line per notable event, when not animating."""
        if not self.live:
            done, total = self.progress
            line = Text.assemble((f"[{done}/{total}] ", "dim"), (text, style))
            self.console.print(line, soft_wrap=True, highlight=False)

    def _run_started(self, event: events.RunStarted) -> None:
        self.crew, self.run_id = event.crew, event.run_id
        self._inputs = event.inputs
        for row in self._rows.values():
            row.agent = interpolate(row.agent, self._inputs)
        self._declared.update(event.task_ids)
        for task_id in event.task_ids:
            self._row(task_id)
        if not self.live:
            line = f"crew {event.crew}: run {event.run_id}, {count(len(self._rows), 'task')}"
            self.console.print(Text(line, style="bold"), soft_wrap=True, highlight=False)

    def _run_finished(self, event: events.RunFinished) -> None:
        self.status = event.status
        for task_id, usage in event.result.usage.by_task.items():
            if task_id in self._rows:  # the run's count is whole (delegated calls included)
                self._rows[task_id].usage = usage

    def _task_started(self, event: events.TaskStarted) -> None:
        row = self._row(event.task_id)
        agent = interpolate(event.agent, self._inputs) if event.agent else row.agent
        row.state, row.agent, row.detail = "running", agent, ""
        row.streamed = ""
        if row.started_at is None or row.finished_at is not None:  # first, or a new round
            row.started_at, row.finished_at = event.at, None
        again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        self._say(row, f"started {_who(row)}{again}")

    def _retrying(self, event: events.TaskRetrying | events.LLMRetrying) -> None:
        row = self._rows.get(event.task_id)
        if row is not None:
            row.state = "retrying"
            row.detail = f"retrying ({_reason(event.error)}, attempt {event.attempt + 1})"
            self._say(row, f"{row.task_id} {row.detail}", "yellow")

    def _llm_fallback(self, event: events.LLMFallback) -> None:
        row = self._rows.get(event.task_id)
        if row is not None:
            row.detail = f"falling back to {event.next_model} ({_reason(event.error)})"
            self._say(row, f"{row.task_id} {row.detail}", "yellow")

    def _output_kept_as_text(self, event: events.OutputKeptAsText) -> None:
        # Printed even while animating: the run goes on, but this task's data is missing.
        line = (
            f"warning: {event.task_id}: the answer does not match {event.model}"
            f" ({_reason(event.error)}); kept as text, as CrewAI does"
        )
        self.console.print(Text(line, style="yellow"), soft_wrap=True, highlight=False)

    def _llm_called(self, event: events.LLMCalled) -> None:
        row = self._rows.get(event.task_id)
        if row is not None:
            row.usage = row.usage + event.usage
            if row.state == "retrying":
                row.state, row.detail = "running", ""

    def _tool_called(self, event: events.ToolCalled) -> None:
        row = self._rows.get(event.task_id)
        if row is not None and row.state == "running":
            row.detail = f"tool {event.tool}"

    def _token_delta(self, event: Any) -> None:
        row = self._rows.get(event.task_id)
        if row is not None and row.state in ("running", "retrying"):
            row.streamed, row.detail = (row.streamed + event.text)[-_TAIL_CHARS:], ""

    def _task_finished(self, event: events.TaskFinished) -> None:
        row = self._end(event, "succeeded", "")
        spent = f", {row.usage.total_tokens:,} tokens" if row.usage.calls else ""
        cost = f", ${row.usage.cost_usd:.4f}" if row.usage.cost_usd else ""
        elapsed = row.elapsed_s(event.at)
        took = f" in {elapsed:.1f}s" if elapsed is not None else ""
        self._say(row, f"✓ {_who(row)} done{took}{spent}{cost}", "green")

    def _task_failed(self, event: events.TaskFailed) -> None:
        row = self._end(event, "failed", first_line(event.error))
        self._say(row, f"✗ {row.task_id} failed: {event.error_type}: {row.detail}", "red")

    def _task_ended(self, event: events.TaskSkipped | events.TaskCancelled) -> None:
        state = "skipped" if isinstance(event, events.TaskSkipped) else "cancelled"
        row = self._end(event, state, first_line(event.reason))
        self._say(row, f"- {row.task_id} {state}: {row.detail}", "dim")

    def _budget_exceeded(self, event: events.BudgetExceeded) -> None:
        """The task's call was refused: it waits for a resume with a higher budget."""
        row = self._end(event, "pending", "the run's budget was spent")
        limits = []
        if event.max_cost_usd is not None:
            limits.append(f"${event.spent_usd:.4f} of ${event.max_cost_usd:g}")
        if event.max_tokens is not None:
            limits.append(f"{event.spent_tokens:,} of {event.max_tokens:,} tokens")
        self._say(
            row,
            f"$ budget spent ({', '.join(limits)}): {row.task_id} waits for a resume;"
            " no new task starts",
            "yellow",
        )

    def _route_chosen(self, event: events.RouteChosen) -> None:
        row = self._row(event.task_id)
        row.flow = f"chose {event.route}"
        why = f": {first_line(event.reason)}" if event.reason.strip() else ""
        self._say(row, f"{row.task_id} chose {event.route}{why}", "cyan")

    def _round_started(self, event: events.RoundStarted) -> None:
        row = self._row(event.task_id)
        if event.task_id not in self._loops:
            self._loops.append(event.task_id)
        row.flow = f"round {event.round}/{event.max_rounds}"
        self._say(row, f"{row.task_id} {row.flow}", "cyan")

    def _loop_finished(self, event: events.LoopFinished) -> None:
        row = self._row(event.task_id)
        if event.task_id in self._loops:
            self._loops.remove(event.task_id)
        row.flow = f"{count(event.rounds, 'round')}, {event.stopped}"
        why = "until held" if event.stopped == "until" else "max rounds reached"
        self._say(row, f"{row.task_id} looped {count(event.rounds, 'round')}: {why}", "cyan")

    def _map_started(self, event: events.MapStarted) -> None:
        row = self._row(event.task_id)
        row.items_done, row.flow = 0, f"0/{event.items} items"
        self._say(row, f"{row.task_id} maps {count(event.items, 'item')}", "cyan")

    def _item_finished(self, event: events.ItemFinished) -> None:
        row = self._row(event.task_id)
        row.items_done += 1
        row.flow = f"{row.items_done}/{event.items} items"
        self._say(row, f"{row.task_id} {row.flow}", "dim")

    def _end(self, event: Any, state: str, detail: str) -> _Row:
        row = self._row(event.task_id)
        row.state, row.detail, row.spinner, row.streamed = state, detail, None, ""
        if event.task_id in self._loops:
            self._loops.remove(event.task_id)
        if row.started_at is not None:
            row.finished_at = event.at
        return row


def _who(row: _Row) -> str:
    return f"{row.task_id} ({row.agent})" if row.agent else row.task_id


def _reason(error: str) -> str:
    """What went wrong, briefly: the HTTP status crew's errors put in brackets, else the first
    sentence without the model's name ("Model 'x': no answer within 60 s. Provider said...")."""
    status = re.search(r"\(([1-5]\d\d)\)", error)
    if status:
        return status.group(1)
    line = re.sub(r"^Model '[^']*': ", "", first_line(error)).split(". ")[0].rstrip(".")
    return line if len(line) <= 40 else line[:39] + "…"
