"""The store's runs in the terminal (``crew runs``, ``crew show``, ``crew logs``): tables of runs,
of one run's tasks and board, and its event timeline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from crew.store import EventRecord, RunRecord, Store


def render_runs(runs: Iterable[RunRecord], console: Console) -> None:
    """One row per run, newest first as given; a "from" column when any was forked or a child."""
    runs = list(runs)
    parents = any(run.parent_run_id for run in runs)
    run_column = Column("run", no_wrap=True)  # ids are copied into commands: never wrap them
    table = Table(run_column, "crew", "status", "started", "duration", "tokens", "cost")
    if parents:
        table.add_column("from", no_wrap=True)
    for run in runs:
        total = run.usage.get("total", {})
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at))
        table.add_row(
            run.run_id, run.crew, run.status, started, f"{run.updated_at - run.created_at:.1f}s",
            f"{total.get('total_tokens', 0):,}", f"${total.get('cost_usd', 0.0):.4f}",
            *([escape(origin(run))] if parents else []),
        )  # fmt: skip
    console.print(table)


def render_run(store: Store, run: RunRecord, console: Console) -> None:
    """A stored run: its header, each task attempt, and its board."""
    console.print(
        f"run {run.run_id}  crew {run.crew}  {run.status}  inputs {json.dumps(run.inputs)}"
    )
    if run.parent_run_id:
        console.print(escape(origin(run)))
    table = Table("task", "attempt", "status", "agent", "output or error")
    for record in store.task_records(run.run_id):
        detail = record.error or (record.text or "").strip().replace("\n", " ")
        table.add_row(
            record.task_id, str(record.attempt), record.status, record.agent, escape(detail[:200])
        )
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


def origin(run: RunRecord) -> str:
    """Where a run came from: ``fork of RUN at TASK``, or its parent run; "" for neither."""
    fork = run.metadata.get("fork")
    if isinstance(fork, dict):
        edited = f" (set: {', '.join(fork.get('set') or [])})" if fork.get("set") else ""
        return f"fork of {fork.get('run_id')} at {fork.get('from_task')}{edited}"
    return f"child of {run.parent_run_id}" if run.parent_run_id else ""
