"""What a finished run looks like in the terminal (a summary, the board, usage) and as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from crew.console.text import first_line
from crew.prompts import interpolate
from crew.results import CrewResult, TaskOutput

if TYPE_CHECKING:
    pass


def render_result(
    result: CrewResult,
    console: Console,
    *,
    show_board: bool = False,
    usage: bool = True,
    as_written: bool = False,
) -> None:
    """Print how a run ended: the final output, what failed, the board if asked, the usage
    (unless not ``usage``: ``--quiet`` prints the output alone). The output is rendered as
    markdown (or highlighted JSON), or printed ``as_written``, unwrapped: what ``--quiet``
    pipes into a file or another program."""
    unfinished = [r for r in result.tasks.values() if r.status != "succeeded"]
    if result.status != "succeeded":
        failed = ", ".join(repr(r.task_id) for r in unfinished if r.status == "failed")
        what = f": {failed} failed" if failed else ""
        console.print(
            Text(f"Run {result.run_id} {result.status}{what}.", style="bold red"), soft_wrap=True
        )
    output = result.output
    if output is not None:
        console.print(Rule(Text(output.task_id, style="bold"), align="left"))
        _print_output(output, console, as_written)
    if unfinished:
        console.print(Rule(Text("Unfinished tasks", style="bold"), align="left"))
        for task in unfinished:
            why = task.error if task.status == "failed" else task.reason
            style = "red" if task.status == "failed" else "dim"
            console.print(
                Text.assemble((f"{task.task_id} ({task.status})", style), f": {why or ''}"),
                soft_wrap=True,
            )
    if show_board:
        console.print(_board_table(result))
    if usage:
        console.print(_usage_table(result))


def _print_output(output: TaskOutput, console: Console, as_written: bool) -> None:
    # rich's markdown and JSON load here, not with the module: markdown_it and pygments take
    # ~100 ms, which a run that prints no markdown (--quiet, --json) never pays.
    if output.data is not None:
        text = json.dumps(_plain(output.data), indent=2, default=str)
        if as_written:
            console.out(text, highlight=False)
        else:
            from rich.json import JSON

            console.print(JSON(text))
    elif as_written:
        console.out(output.text, highlight=False)
    else:
        from rich.markdown import Markdown

        console.print(Markdown(output.text))


def _board_table(result: CrewResult) -> Table:
    table = Table(title="Board", title_justify="left")
    for name in ("key", "version", "author", "kind", "text"):
        table.add_column(name, overflow="ellipsis", no_wrap=name == "text")
    for key, versions in result.board.snapshot().items():
        for entry in versions:
            text = first_line(entry["text"])
            author = interpolate(entry["author"], result.inputs)  # roles may hold {topic}
            table.add_row(key, str(entry["version"]), author, entry["kind"], text)
    return table


def _usage_table(result: CrewResult) -> Table:
    busy: dict[str, float] = {}
    for task in result.tasks.values():
        if task.output is not None and task.duration_s is not None:
            busy[task.output.agent] = busy.get(task.output.agent, 0.0) + task.duration_s
    table = Table(
        title="Usage", title_justify="left",
        caption="duration: an agent's succeeded tasks added up; total: the run, start to end",
        caption_justify="left",
    )  # fmt: skip
    table.add_column("agent")
    for name in ("calls", "prompt tokens", "completion tokens", "cost", "duration"):
        table.add_column(name, justify="right")
    rows = [
        (interpolate(role, result.inputs), usage, busy.get(role))  # roles may hold {topic}
        for role, usage in result.usage.by_agent.items()
    ]
    for index, (name, usage, seconds) in enumerate(
        [*rows, ("total", result.usage.total, result.duration_s)]
    ):
        table.add_row(
            name, f"{usage.calls:,}", f"{usage.prompt_tokens:,}",
            f"{usage.completion_tokens:,}", f"${usage.cost_usd:.4f}",
            f"{seconds:.1f}s" if seconds is not None else "",
            style="bold" if index == len(rows) else None, end_section=index == len(rows) - 1,
        )  # fmt: skip
    return table


def result_json(result: CrewResult) -> str:
    """The result as indented JSON (what ``crew run --json`` prints); always serialisable."""
    return json.dumps(_plain(result.to_dict()), indent=2, default=str, allow_nan=False)


def _plain(value: Any) -> Any:
    """JSON-ready: string keys, lists for tuples and sets, null for NaN and infinity."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
