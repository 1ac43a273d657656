"""The store's runs from the command line: ``crew runs``, ``review`` (and ``approve``, ``reject``,
``edit``), ``show``, ``logs`` and ``prune``."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crew.cli.running import as_shown, continue_run, find_run
from crew.cli.target import markup
from crew.errors import ConfigError

if TYPE_CHECKING:
    from crew.crew import CrewResult
    from crew.events import EventSink
    from crew.store import ReviewStatus

    Start = Callable[[EventSink], Coroutine[Any, Any, CrewResult]]
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_runs(commands: Commands) -> None:
    """``crew runs``."""
    runs = commands.add_parser("runs", help="list the runs in the store, newest first")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument(
        "--batch", metavar="ID", help="the runs of one batch, by line, and its progress"
    )
    runs.set_defaults(command=_runs)


def _runs(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.console.history import render_runs
    from crew.store import open_store

    store = open_store(None)
    if args.batch is not None:
        return _batch_runs(store, args.batch)
    runs = [as_shown(store, run) for run in store.list_runs(args.limit)]
    render_runs(runs, Console(highlight=False))
    if any(run.status == "interrupted" for run in runs):
        sys.stdout.write("Continue an interrupted run with: crew resume RUN\n")
    return 0


def _batch_runs(store: Any, batch_id: str) -> int:
    """``crew runs --batch ID``: the batch's runs, by line, then how far the batch got."""
    from rich.console import Console

    from crew.console.batch import render_batch
    from crew.console.history import render_runs

    batch = store.get_batch(batch_id)
    runs = [as_shown(store, run) for run in store.list_runs(None, batch=batch_id)]
    if batch is None and not runs:
        raise ConfigError(f"There is no batch '{batch_id}' in the store.")
    runs.sort(key=lambda run: run.batch_line or 0)
    console = Console(highlight=False)
    render_runs(runs, console)
    render_batch(batch, runs, console)
    return 0


def _stored_run(given: str) -> tuple[Any, Any]:
    """The store, and the run ``given`` names (an id, a unique prefix, or ``latest``)."""
    from crew.store import open_store

    store = open_store(None)
    return store, as_shown(store, find_run(store, given))


_RUN_ID_HELP = "the run: its id, a unique prefix of it, or latest"


def add_review(commands: Commands) -> None:
    """``crew review``, and ``crew approve``, ``reject`` and ``edit`` a reviewed output."""
    review = commands.add_parser("review", help="list the outputs waiting for a review")
    review.set_defaults(command=_review)
    for name, help_text in (
        ("approve", "approve a task's output as it is"),
        ("reject", "reject a task's output: it runs again with feedback"),
        ("edit", "replace a task's output with your own text"),
    ):
        decide = commands.add_parser(name, help=help_text)
        decide.add_argument("run_id", help=_RUN_ID_HELP)
        decide.add_argument("task_id")
        if name == "reject":
            decide.add_argument("--feedback", required=True, help="what to change")
        if name == "edit":
            given = decide.add_mutually_exclusive_group(required=True)
            given.add_argument("--text", help="the new output")
            given.add_argument("--file", type=Path, help="a file holding the new output")
        decide.add_argument(
            "--resume-now", action="store_true", help="then resume the run in this process"
        )
        decide.add_argument("--json", action="store_true", help="with --resume-now: as for run")
        decide.add_argument("--quiet", action="store_true", help="with --resume-now: as for run")
        decide.set_defaults(command=_decide, decision=name)


def _review(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.store import open_store

    console = Console(highlight=False)
    pending = open_store(None).reviews(status="pending")
    for review in pending:
        # The whole output: a reviewer approves all of it, not its first line.
        text = (review.text or "").strip()
        head = f"{review.run_id} {review.task_id}:"
        if "\n" in text:
            console.print(markup(head), soft_wrap=True)
            console.print(markup(textwrap.indent(text, "  ")), soft_wrap=True)
        else:
            console.print(markup(f"{head} {text}"), soft_wrap=True)
    if not pending:
        sys.stdout.write("no outputs wait for a review\n")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from crew.checkpoint import decide_review

    store, run = _stored_run(args.run_id)
    args.run_id = run.run_id
    text = None
    if args.decision == "edit":
        text = args.text if args.text is not None else _read(args.file)
    status: ReviewStatus = _DECISIONS[args.decision]
    decide_review(
        store, args.run_id, args.task_id, status, text=text,
        feedback=getattr(args, "feedback", None),
    )  # fmt: skip
    if args.resume_now:
        sys.stdout.write(f"{args.task_id}: {status}. Resuming run {args.run_id}.\n")
        sys.stdout.flush()  # before the run's own output
        return continue_run(args, args.run_id)
    sys.stdout.write(
        f"{args.task_id}: {status}. Continue the run with: crew resume {args.run_id}"
        " (or answer with --resume-now)\n"
    )
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}.") from exc


def add_show(commands: Commands) -> None:
    """``crew show``."""
    show = commands.add_parser("show", help="a run's tasks, outputs, board and errors")
    show.add_argument("run_id", help=_RUN_ID_HELP)
    show.set_defaults(command=_show)


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.console.history import render_run

    store, run = _stored_run(args.run_id)
    render_run(store, run, Console(highlight=False))
    if run.status in ("interrupted", "failed", "cancelled"):
        sys.stdout.write(f"Continue it with: crew resume {run.run_id}\n")
    return 0


def add_resolve(commands: Commands) -> None:
    """``crew resolve``: record what a person found out about an interrupted tool call."""
    resolve = commands.add_parser(
        "resolve",
        help="say whether an interrupted non-idempotent tool call took effect",
        description="A non-idempotent tool's call was interrupted before its result was"
        " recorded, so crew will not call it again blindly. Check whether it took effect, record"
        " it here, then `crew resume RUN`. Without KEY, lists the calls whose outcome is unknown.",
    )
    resolve.add_argument("run_id", help=_RUN_ID_HELP)
    resolve.add_argument("key", nargs="?", help="the call's key, as `crew show` prints it")
    outcome = resolve.add_mutually_exclusive_group()
    outcome.add_argument("--done", metavar="RESULT", help="it took effect; the model reads RESULT")
    outcome.add_argument(
        "--not-done", action="store_true", help="it did not: make it again on resume"
    )
    resolve.set_defaults(command=_resolve)


def _resolve(args: argparse.Namespace) -> int:
    from crew.tool_calls import resolve_tool_call, unknown_tool_calls

    store, run = _stored_run(args.run_id)
    if args.key is None:
        for call in unknown_tool_calls(store, run.run_id):
            line = (
                f"{call.key}  task {call.task_id}  tool {call.tool}  {json.dumps(call.arguments)}"
            )
            sys.stdout.write(line + "\n")
        return 0
    if args.done is None and not args.not_done:
        raise ConfigError("Say what happened: --done RESULT (it took effect) or --not-done.")
    resolve_tool_call(store, run.run_id, args.key, done=not args.not_done, result=args.done or "")
    sys.stdout.write(f"Recorded. Continue the run with: crew resume {run.run_id}\n")
    return 0


def add_logs(commands: Commands) -> None:
    """``crew logs``."""
    logs = commands.add_parser("logs", help="a run's event timeline")
    logs.add_argument("run_id", help=_RUN_ID_HELP)
    logs.set_defaults(command=_logs)


def _logs(args: argparse.Namespace) -> int:
    from crew.console.history import log_lines

    store, run = _stored_run(args.run_id)
    sys.stdout.writelines(log_lines(store.events(run.run_id)))
    return 0


def add_prune(commands: Commands) -> None:
    """``crew prune``."""
    prune = commands.add_parser(
        "prune",
        help="delete old runs from the store",
        description="Delete old runs, and everything they stored, from the store. With both"
        " --keep and --older-than, a run goes only if it meets both conditions: it is not among"
        " the N newest and it is older than AGE. Runs still running and runs that wait for a"
        " review are never deleted. SQLite's file gives the space back.",
    )
    prune.add_argument(
        "--keep", type=int, metavar="N",
        help="keep the N newest runs (with --older-than: delete only runs that are both)",
    )  # fmt: skip
    prune.add_argument(
        "--older-than",
        type=_age_s,
        metavar="AGE",
        help="delete runs older than AGE, e.g. 30d, 12h, 45m (with --keep: both conditions)",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="list the runs that would go; delete nothing"
    )
    prune.set_defaults(command=_prune)


def _prune(args: argparse.Namespace) -> int:
    from crew.store import open_store

    if args.keep is None and args.older_than is None:
        raise ConfigError("crew prune: say what to delete: --keep N and/or --older-than 30d.")
    store = open_store(None)
    if args.dry_run:
        doomed = store.prunable_runs(older_than_s=args.older_than, keep=args.keep)
        for run_id in doomed:
            sys.stdout.write(f"{run_id}\n")
        sys.stdout.write(f"would delete {len(doomed)} run{'s' if len(doomed) != 1 else ''}\n")
        return 0
    deleted = store.delete_runs(older_than_s=args.older_than, keep=args.keep)
    sys.stdout.write(f"deleted {deleted} run{'s' if deleted != 1 else ''}\n")
    return 0


def _age_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write an age like 30d, 12h, 45m or 90s")
    return float(number) * units[unit]


_DECISIONS: dict[str, ReviewStatus] = {
    "approve": "approved", "reject": "rejected", "edit": "edited"
}  # fmt: skip
