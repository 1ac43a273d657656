"""``crew batch``: one crew run once per line of an inputs file, with a progress bar, a summary and
a results file; the same command with ``--batch-id`` continues a stopped or partly failed batch.

Exit codes: 0 every run succeeded, 1 some did not, 2 a setup error (the crew, the inputs file:
every bad line listed), 130 on Ctrl-C and 143 on SIGTERM (the running runs are interrupted,
resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crew.cli.running import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    add_budget,
    add_trace,
    collect_from_now,
    mark_interrupted,
    stoppable,
    with_budget,
)
from crew.cli.target import (
    configure,
    load,
    markup,
    needs_a_model,
    project_store,
    read_settings,
    stderr,
)

if TYPE_CHECKING:
    from rich.console import Console

    from crew.batch import BatchItem, BatchResult
    from crew.cli.running import Commands
    from crew.crew import Crew


def add_batch(commands: Commands) -> None:
    """``crew batch``."""
    batch = commands.add_parser(
        "batch", help="run a crew once per line of a JSONL or CSV file of inputs"
    )
    batch.add_argument("target", type=Path, help="crew.yaml, a folder, or a Python file")
    batch.add_argument(
        "--inputs", type=Path, required=True, metavar="FILE",
        help="JSON Lines (an object of inputs a line) or CSV (a header row of input names)",
    )  # fmt: skip
    batch.add_argument("--out", type=Path, metavar="FILE", help="a JSON line per input, in order")
    batch.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="runs at work at once (8 by default)",
    )
    batch.add_argument("--executor", choices=["local", "dask"], default="local")
    batch.add_argument(
        "--address", metavar="tcp://HOST:PORT", help="the Dask scheduler (--executor dask)"
    )
    batch.add_argument(
        "--batch-id", metavar="ID", help="name the batch; an earlier id continues that batch"
    )
    batch.add_argument("--json", action="store_true", help="print a summary object on stdout")
    batch.add_argument("--llm", help="a profile or litellm model for every agent")
    batch.add_argument("--store", metavar="URL", help="the run store (else CREW_STORE, SQLite)")
    batch.add_argument("--max-concurrency", type=int, help="tasks in flight at most, per run")
    batch.add_argument("--on-failure", choices=["fail_fast", "continue"])
    batch.add_argument(
        "--crew", dest="crew_class", metavar="CLASS",
        help="the @CrewBase class to run, in a CrewAI project that has several",
    )  # fmt: skip
    add_trace(batch)
    add_budget(batch)
    batch.set_defaults(command=_batch)


def _batch(args: argparse.Namespace) -> int:
    from crew import batch

    if args.concurrency is None:
        args.concurrency = batch.DEFAULT_CONCURRENCY
    crew, specs = _crew(args)
    batch.check_executor(args.executor, crew.store, args.address)
    batch_id = args.batch_id or batch.new_batch_id()
    items = batch.read_inputs(args.inputs, crew, batch_id=batch_id, specs=specs)
    out = _console(args)
    out.print(
        markup(
            f"batch {batch_id}: {len(items)} inputs of {args.inputs}, crew {crew.name}"
            f" ({args.executor}, {args.concurrency} at once)"
        ),
        highlight=False,
        soft_wrap=True,
    )
    return _execute(args, crew, items, batch_id, out)


def _crew(args: argparse.Namespace) -> tuple[Crew, dict[str, Any] | None]:
    """The crew to run, configured as ``crew run`` would; its declared inputs, if it has any."""
    from crew.batch import first_inputs

    settings = read_settings(args)
    # A Python crew's build_crew(inputs) is called once, with the first line's inputs.
    given = first_inputs(args.inputs) if args.target.suffix == ".py" else {}
    loaded, _ = load(args.target, settings, given, crew_class=args.crew_class)
    for warning in loaded.warnings:
        stderr().print(f"[yellow]warning:[/] {markup(warning)}", highlight=False)
    crew = configure(loaded.crew, settings).replace(source=str(args.target.resolve()))
    if (store := args.store or project_store(args)) is not None:
        crew = crew.replace(store=store)
    crew = with_budget(args, crew)
    needs_a_model(crew)
    return crew, dict(loaded.inputs) or None


def _execute(
    args: argparse.Namespace, crew: Crew, items: list[BatchItem], batch_id: str, out: Console
) -> int:
    import asyncio  # here, not at the top: main() imports it with the collector off

    from crew.batch_local import run_batch
    from crew.console.batch import BatchView, render_summary

    view = BatchView(out, batch_id=batch_id, run_ids=[item.run_id for item in items])
    got: dict[int, BatchResult] = {}

    def on_result(result: BatchResult) -> None:
        got[result.line] = result
        view.on_result(result)

    started, terminated = time.monotonic(), list[bool]()
    running = run_batch(
        crew, items, batch_id=batch_id, concurrency=args.concurrency, executor=args.executor,
        address=args.address, inputs_file=str(args.inputs), on_result=on_result, on_event=view,
    )  # fmt: skip
    view.start()
    collect_from_now()
    try:
        results = asyncio.run(stoppable(running, terminated))
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not terminated:
            raise
        results = None
    finally:
        view.stop()
    if results is None:
        _write_out(args.out, [got[item.line] for item in items if item.line in got])
        return _interrupted(args, crew, items, batch_id, len(got), bool(terminated))
    _write_out(args.out, results)
    from crew.batch_local import summarize

    summary = summarize(batch_id, results, duration_s=time.monotonic() - started)
    summary["out"] = str(args.out) if args.out is not None else None
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    render_summary(summary, results, out)
    if any(result.status != "succeeded" for result in results):
        again = markup(_again(args, batch_id))
        stderr().print(f"Fix the cause, then retry the inputs that did not succeed: {again}")
        return EXIT_FAILED
    return 0


def _write_out(path: Path | None, results: list[BatchResult]) -> None:
    if path is None:
        return
    lines = "".join(json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines, encoding="utf-8")


def _interrupted(
    args: argparse.Namespace,
    crew: Crew,
    items: list[BatchItem],
    batch_id: str,
    done: int,
    terminated: bool,
) -> int:
    """Mark the batch's stopped runs ``interrupted`` and say how to continue; 143 or 130."""
    store = crew.store
    for run in store.list_runs(None, batch=batch_id):
        if run.status in ("running", "cancelled"):
            mark_interrupted(store, run.run_id)
    stderr().print(
        f"[yellow]interrupted[/]: batch {batch_id} stopped, {done} of {len(items)} inputs"
        f" finished. Continue with: {markup(_again(args, batch_id))}",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _again(args: argparse.Namespace, batch_id: str) -> str:
    """The command that continues the batch."""
    store = f" --store {args.store}" if args.store else ""
    return f"crew batch {args.target} --inputs {args.inputs} --batch-id {batch_id}{store}"


def _console(args: argparse.Namespace) -> Console:
    """Stderr with ``--json``, whose stdout is the summary object."""
    from rich.console import Console

    return Console(stderr=args.json, highlight=False)
