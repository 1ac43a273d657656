"""The store's runs in the terminal (``crew runs``, ``crew show``, ``crew logs``): tables of runs,
of one run's tasks and board, and its event timeline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from crew.store import EventRecord, RunRecord, Store


def render_runs(runs: Iterable[RunRecord], console: Console) -> None:
    """One row per run, newest first as given; then, for each run that was forked or is a
    child, where it came from (a line each, so that no column has to give way to it).

    The run id, crew and status never wrap or shrink (ids are copied into commands); in a
    narrow terminal the other columns wrap first."""
    runs = list(runs)
    kept: dict[str, Any] = {"no_wrap": True}
    table = Table(
        Column("run", **kept), Column("crew", **kept), Column("status", **kept),
        Column("started", min_width=10), Column("duration", justify="right"),
        Column("tokens", justify="right"), Column("cost", justify="right"),
    )  # fmt: skip
    for run in runs:
        total = run.usage.get("total", {})
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at))
        table.add_row(
            run.run_id, escape(run.crew), run.status, started,
            f"{run.updated_at - run.created_at:.1f}s",
            f"{total.get('total_tokens', 0):,}", f"${total.get('cost_usd', 0.0):.4f}",
        )  # fmt: skip
    console.print(table)
    for run in runs:
        if run.parent_run_id:
            console.print(escape(f"{run.run_id}: {origin(run)}"), soft_wrap=True)


def render_run(store: Store, run: RunRecord, console: Console) -> None:
    """A stored run: its header, each task attempt, and its board. A task whose output a
    reviewer edited shows the edited text (marked so), which is what its dependants read."""
    console.print(
        escape(f"run {run.run_id}  crew {run.crew}  {run.status}  inputs {json.dumps(run.inputs)}")
    )
    if run.parent_run_id:
        console.print(escape(origin(run)))
    if run.batch_id is not None:
        console.print(escape(f"line {run.batch_line} of batch {run.batch_id}"))
    if line := budget_line(run):
        console.print(escape(line))
    for line in event_notes(store.events(run.run_id)):
        console.print(escape(line))
    edited = {
        review.task_id: review.text or ""
        for review in store.reviews(run.run_id)
        if review.status == "edited"
    }
    records = store.task_records(run.run_id)
    last = {r.task_id: r.attempt for r in records if r.status == "succeeded" and r.index == 0}
    table = Table("task", "attempt", "status", "agent", "output or error")
    for record in records:
        text = record.text or ""
        mark = ""
        if record.task_id in edited and last.get(record.task_id) == record.attempt:
            text, mark = edited[record.task_id], "(edited) "
        detail = record.error or text.strip().replace("\n", " ")
        table.add_row(
            record.task_id, str(record.attempt), record.status, record.agent,
            escape(mark + detail[:200]),
        )  # fmt: skip
    console.print(table)
    board = Table("board key", "version", "kind", "author", "text")
    for entry in store.board_entries(run.run_id):
        board.add_row(
            entry.key,
            str(entry.version),
            entry.kind,
            entry.author,
            escape(entry.text.strip().replace("\n", " ")[:120]),
        )
    console.print(board)


def log_lines(events: Iterable[EventRecord]) -> Iterator[str]:
    """A run's event timeline, one line per event."""
    for event in events:
        moment = (
            time.strftime("%H:%M:%S", time.localtime(event.at)) + f".{int(event.at % 1 * 1000):03d}"
        )
        details = " ".join(f"{k}={json.dumps(v)[:80]}" for k, v in event.payload.items())
        yield f"{moment} {event.seq:>4} {event.type:<14} {details}\n"


def event_notes(events: Iterable[EventRecord]) -> list[str]:
    """What a run met on the way, from its events, a line each: time spent waiting for rate
    limits, circuit breakers opened and closed, non-idempotent tool results used again or of
    unknown outcome, loops out of rounds."""
    waited: dict[tuple[str, str], list[float]] = {}
    notes: list[str] = []
    for event in events:
        p = event.payload
        if event.type == "RateLimited":
            waited.setdefault((p.get("model", "?"), p.get("limit", "?")), []).append(
                float(p.get("waited_s") or 0.0)
            )
        elif event.type == "CircuitOpened":
            notes.append(f"circuit breaker of {p.get('model')} opened: {p.get('reason')}")
        elif event.type == "CircuitClosed":
            notes.append(f"circuit breaker of {p.get('model')} closed: {p.get('reason')}")
        elif event.type == "ToolResultReused":
            notes.append(
                f"task {p.get('task_id')}: tool {p.get('tool')} not called again, its recorded"
                f" result used ({p.get('key')})"
            )
        elif event.type == "ToolOutcomeUnknown":
            notes.append(
                f"task {p.get('task_id')}: tool {p.get('tool')} was interrupted and whether it took"
                f" effect is unknown ({p.get('key')})"
            )
        elif event.type == "LoopExhausted":
            notes.append(f"task {p.get('task_id')}: {p.get('reason')}")
    limits = [
        f"rate limit ({limit}) of {model}: {len(waits)} calls waited {sum(waits):.1f} s in all"
        for (model, limit), waits in waited.items()
    ]
    return limits + notes


def budget_line(run: RunRecord) -> str:
    """What the run spent of its budget, if it had one: ``budget: spent $0.0123 of $0.05``."""
    budget = run.metadata.get("budget")
    if not isinstance(budget, dict):
        return ""
    total = run.usage.get("total", {})
    parts = []
    if budget.get("max_cost_usd") is not None:
        parts.append(f"${total.get('cost_usd', 0.0):.4f} of ${budget['max_cost_usd']:g}")
    if budget.get("max_tokens") is not None:
        parts.append(f"{total.get('total_tokens', 0):,} of {budget['max_tokens']:,} tokens")
    return "budget: spent " + ", ".join(parts) if parts else ""


def origin(run: RunRecord) -> str:
    """Where a run came from: ``fork of RUN at TASK``, or its parent run; "" for neither."""
    fork = run.metadata.get("fork")
    if isinstance(fork, dict):
        edited = f" (set: {', '.join(fork.get('set') or [])})" if fork.get("set") else ""
        return f"fork of {fork.get('run_id')} at {fork.get('from_task')}{edited}"
    return f"child of {run.parent_run_id}" if run.parent_run_id else ""
