"""The terminal view of a batch (``crew batch``): one progress bar while it runs, a plain line per
finished input when the output is not a terminal, then a summary; and a stored batch's runs
(``crew runs --batch ID``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from crew import events

if TYPE_CHECKING:
    from rich.console import Console

    from crew.batch import BatchResult
    from crew.store import BatchRecord, RunRecord


class BatchView:
    """Follows a batch's runs (an event subscriber, and told of each result).

    Args:
        console: where to draw; a console that is not a terminal gets plain lines.
        run_ids: the ids of the batch's runs (the events of their subcrews are not counted).
    """

    def __init__(self, console: Console, *, batch_id: str, run_ids: Iterable[str]) -> None:
        self.console = console
        self.batch_id = batch_id
        self._ids = set(run_ids)
        self._running: set[str] = set()
        self._counts = {"done": 0, "failed": 0}
        self._tokens, self._cost = 0, 0.0
        self._progress: Progress | None = None
        self._bar: Any = None

    def start(self) -> None:
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[spent]}"),
            console=self.console,
            transient=False,
        )
        self._bar = self._progress.add_task(
            f"batch {self.batch_id}", total=len(self._ids), counts="", spent=""
        )
        self._progress.start()
        self._refresh()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.RunStarted) and event.run_id in self._ids:
            self._running.add(event.run_id)
            self._refresh()

    def on_result(self, result: BatchResult) -> None:
        self._running.discard(result.run_id)
        self._counts["done" if result.status == "succeeded" else "failed"] += 1
        self._tokens += int(result.usage.get("total_tokens", 0))
        self._cost += float(result.usage.get("cost_usd", 0.0))
        if self._progress is None:
            error = f": {result.error}" if result.error else ""
            self.console.print(
                escape(f"line {result.line} {result.run_id} {result.status}{error}"),
                soft_wrap=True,
            )
        self._refresh()

    def _refresh(self) -> None:
        if self._progress is None:
            return
        done, failed = self._counts["done"], self._counts["failed"]
        counts = (
            f"[green]{done} done[/] [red]{failed} failed[/] [yellow]{len(self._running)} running[/]"
        )
        spent = f"{self._tokens:,} tokens ${self._cost:.4f}"
        self._progress.update(self._bar, completed=done + failed, counts=counts, spent=spent)


def render_summary(
    summary: Mapping[str, Any], results: Iterable[BatchResult], console: Console
) -> None:
    """How the batch ended: its counts and usage, then each input that did not succeed."""
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
    usage = summary["usage"]
    console.print(
        escape(
            f"batch {summary['batch_id']}: {summary['inputs']} inputs: {counts};"
            f" {usage.get('calls', 0)} calls, {usage.get('total_tokens', 0):,} tokens,"
            f" ${usage.get('cost_usd', 0.0):.4f}, {summary['duration_s']:.1f}s"
        ),
        soft_wrap=True,
    )
    for result in results:
        if result.status != "succeeded":
            console.print(
                escape(f"  line {result.line} ({result.run_id}) {result.status}: {result.error}"),
                soft_wrap=True,
            )


def render_batch(batch: BatchRecord | None, runs: list[RunRecord], console: Console) -> None:
    """A stored batch: how far it got (``N of M done, K never started``)."""
    succeeded = sum(run.status == "succeeded" for run in runs)
    others: dict[str, int] = {}
    for run in runs:
        if run.status != "succeeded":
            others[run.status] = others.get(run.status, 0) + 1
    size = batch.size if batch is not None else len(runs)
    parts = [f"{succeeded} of {size} done"]
    parts += [f"{n} {status}" for status, n in sorted(others.items())]
    parts.append(f"{max(size - len(runs), 0)} never started")
    started = ""
    if batch is not None:
        started = time.strftime(" (started %Y-%m-%d %H:%M:%S)", time.localtime(batch.created_at))
        source = f", inputs {batch.inputs_file}" if batch.inputs_file else ""
        console.print(escape(f"batch {batch.batch_id}: crew {batch.crew}{source}{started}"))
    console.print(escape(", ".join(parts)))
