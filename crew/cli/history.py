"""The store's runs from the command line: ``crew runs``, ``review`` (and ``approve``, ``reject``,
``edit``), ``show``, ``logs`` and ``prune``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crew.cli.running import continue_run
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
    runs.set_defaults(command=_runs)


def _runs(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.console.history import render_runs
    from crew.store import open_store

    render_runs(open_store(None).list_runs(args.limit), Console(highlight=False))
    return 0


def _stored_run(run_id: str) -> tuple[Any, Any]:
    from crew.store import open_store

    store = open_store(None)
    record = store.get_run(run_id)
    if record is None:
        raise ConfigError(f"There is no run '{run_id}' in the store; `crew runs` lists them.")
    return store, record


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
        decide.add_argument("run_id")
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
    from crew.store import open_store

    pending = open_store(None).reviews(status="pending")
    for review in pending:
        first = (review.text or "").strip().splitlines()[:1]
        sys.stdout.write(f"{review.run_id} {review.task_id}: {first[0] if first else ''}\n")
    if not pending:
        sys.stdout.write("no outputs wait for a review\n")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from crew.checkpoint import decide_review

    store, _ = _stored_run(args.run_id)
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
    show.add_argument("run_id")
    show.set_defaults(command=_show)


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.console.history import render_run

    store, run = _stored_run(args.run_id)
    render_run(store, run, Console(highlight=False))
    return 0


def add_logs(commands: Commands) -> None:
    """``crew logs``."""
    logs = commands.add_parser("logs", help="a run's event timeline")
    logs.add_argument("run_id")
    logs.set_defaults(command=_logs)


def _logs(args: argparse.Namespace) -> int:
    from crew.console.history import log_lines

    store, run = _stored_run(args.run_id)
    sys.stdout.writelines(log_lines(store.events(run.run_id)))
    return 0


def add_prune(commands: Commands) -> None:
    """``crew prune``."""
    prune = commands.add_parser("prune", help="delete old runs from the store")
    prune.add_argument("--keep", type=int, metavar="N", help="keep the N newest runs")
    prune.add_argument(
        "--older-than",
        type=_age_s,
        metavar="AGE",
        help="delete runs older than AGE, e.g. 30d, 12h, 45m",
    )
    prune.set_defaults(command=_prune)


def _prune(args: argparse.Namespace) -> int:
    from crew.store import open_store

    if args.keep is None and args.older_than is None:
        raise ConfigError("crew prune: say what to delete: --keep N and/or --older-than 30d.")
    deleted = open_store(None).delete_runs(older_than_s=args.older_than, keep=args.keep)
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
