"""``crew run``, ``crew resume`` and ``crew fork``: running a crew (loaded and configured by
``crew.cli.target``) with the live view, stopping it on Ctrl-C or SIGTERM, and reporting."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from crew.cli.target import (
    add_target,
    configure,
    given_inputs,
    load,
    markup,
    needs_a_model,
    pairs,
    project_dir,
    project_store,
    read_settings,
    stderr,
)
from crew.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from crew.console import ConsoleView
    from crew.crew import Crew, CrewResult
    from crew.events import EventSink
    from crew.spec import CrewFile
    from crew.store import RunRecord, Store

    Start = Callable[[EventSink], Coroutine[Any, Any, CrewResult]]
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

T = TypeVar("T")
EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 3, 130, 143
QUIET = "no live view; only the final output, as written (not rendered as markdown)"


def add_run(commands: Commands) -> None:
    """``crew run``."""
    run = commands.add_parser("run", help="run a crew (crew.yaml, a CrewAI project, or a .py)")
    add_target(run)
    run.add_argument("--llm", help="a profile or litellm model for every agent")
    run.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help=QUIET)
    run.add_argument("--stream", action="store_true", help="stream answers into the live view")
    run.add_argument("--max-concurrency", type=int, help="tasks in flight at most")
    run.add_argument("--on-failure", choices=["fail_fast", "continue"])
    run.add_argument(
        "--replay", metavar="RUN", help="answer the model requests RUN recorded from the store"
    )
    run.add_argument(
        "--replay-strict", action="store_true", help="with --replay: fail what RUN did not record"
    )
    add_trace(run)
    add_budget(run)
    run.set_defaults(command=_run)


def add_trace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace", action="store_true",
        help="OpenTelemetry spans of the run, to the tracer provider the environment configured"
        " (the otel extra; e.g. under opentelemetry-instrument)",
    )  # fmt: skip


def add_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-cost", type=float, metavar="USD",
        help="the run's budget in US dollars, the whole run's spending counted (resumes too);"
        " calls are checked before they are sent",
    )  # fmt: skip
    parser.add_argument(
        "--max-tokens", type=int, metavar="N", help="the run's budget in tokens (prompt + answer)"
    )


def with_budget(args: argparse.Namespace, crew: Crew) -> Crew:
    """``crew`` with the budget flags over its own budget (the crew file's ``budget:``)."""
    from crew.budget import Budget

    cost, tokens = getattr(args, "max_cost", None), getattr(args, "max_tokens", None)
    if cost is None and tokens is None:
        return crew
    own = crew.budget or Budget()
    return crew.replace(
        budget=Budget(
            max_cost_usd=own.max_cost_usd if cost is None else cost,
            max_tokens=own.max_tokens if tokens is None else tokens,
        )
    )


def _run(args: argparse.Namespace) -> int:
    settings = read_settings(args)
    given = given_inputs(args)
    loaded, output_files = load(args.target, settings, given, crew_class=args.crew_class)
    inputs = loaded.resolve_inputs(given)
    crew = configure(loaded.crew, settings).replace(
        stream=args.stream, source=str(args.target.resolve())
    )
    if (store := project_store(args)) is not None:
        crew = crew.replace(store=store)
    crew = with_budget(args, crew)
    needs_a_model(crew)
    crew.plan(inputs)  # every setup problem surfaces here, before the view starts
    replayed = args.replay and find_run(crew.store, args.replay).run_id
    replay = {"replay": replayed, "replay_strict": args.replay_strict}
    return execute(
        args, crew, loaded, output_files, lambda sink: crew.arun(inputs, on_event=sink, **replay)
    )


def add_resume(commands: Commands) -> None:
    """``crew resume``."""
    resume = commands.add_parser("resume", help="continue a crashed, interrupted or failed run")
    resume.add_argument(
        "run_id", help="the run to continue: its id, a unique prefix of it, or latest"
    )
    resume.add_argument("--llm", help="a profile or litellm model for every agent")
    resume.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    resume.add_argument("--quiet", action="store_true", help=QUIET)
    add_trace(resume)
    add_budget(resume)
    resume.set_defaults(command=_resume)


def _resume(args: argparse.Namespace) -> int:
    from crew.store import open_store

    return continue_run(args, find_run(open_store(None), args.run_id).run_id)


def continue_run(args: argparse.Namespace, run_id: str) -> int:
    """Resume ``run_id`` in this process, with the crew it was started from."""
    crew, loaded, output_files = stored_crew(
        args, run_id, f"resume it there with crew.run(resume={run_id!r})"
    )
    return execute(
        args, crew, loaded, output_files, lambda sink: crew.arun(resume=run_id, on_event=sink)
    )


def add_fork(commands: Commands) -> None:
    """``crew fork``."""
    fork = commands.add_parser(
        "fork", help="run again from a task: a new run that keeps the outputs before it"
    )
    fork.add_argument(
        "run_id", help="the run to fork (its id, a unique prefix, or latest); it is not changed"
    )
    fork.add_argument(
        "--from", dest="from_task", required=True, metavar="TASK", help="the first task to redo"
    )
    fork.add_argument(
        "--set", action="append", default=[], metavar="TASK=TEXT",
        help="use TEXT as TASK's output; its dependants run again (repeatable)",
    )  # fmt: skip
    replaying = fork.add_mutually_exclusive_group()
    replaying.add_argument(
        "--no-replay", action="store_true", help="call the models even for unchanged requests"
    )
    replaying.add_argument(
        "--replay-strict", action="store_true", help="fail requests the run did not record"
    )
    fork.add_argument("--llm", help="a profile or litellm model for every agent")
    fork.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    fork.add_argument("--quiet", action="store_true", help=QUIET)
    add_trace(fork)
    add_budget(fork)
    fork.set_defaults(command=_fork)


def _fork(args: argparse.Namespace) -> int:
    from crew.store import open_store

    given = pairs(args.set, "--set TASK=TEXT", "draft='The new draft'")
    run_id = find_run(open_store(None), args.run_id).run_id
    crew, loaded, output_files = stored_crew(
        args, run_id, f"fork it there with crew.fork({run_id!r}, {args.from_task!r})"
    )
    replay: dict[str, Any] = {"replay": None} if args.no_replay else {}
    return execute(
        args, crew, loaded, output_files,
        lambda sink: crew.afork(
            run_id, args.from_task, outputs=given, on_event=sink,
            replay_strict=args.replay_strict, **replay,
        ),
    )  # fmt: skip


def stored_crew(
    args: argparse.Namespace, run_id: str, from_python: str
) -> tuple[Crew, CrewFile, dict[str, Path]]:
    """The crew run ``run_id`` was started from, configured by the settings, on the store."""
    from crew.store import open_store

    settings = read_settings(args)
    store = open_store(None)
    record = find_run(store, run_id)
    if not record.source:
        raise ConfigError(f"Run '{run_id}' was started from Python; {from_python}.")
    loaded, output_files = load(Path(record.source), settings, record.inputs)
    crew = configure(loaded.crew, settings).replace(store=store, source=record.source)
    return with_budget(args, crew), loaded, output_files


def execute(
    args: argparse.Namespace,
    crew: Crew,
    loaded: CrewFile,
    output_files: Mapping[str, Path],
    start: Start,
) -> int:
    """Run ``start(on_event)`` (a run, resume or fork of ``crew``) with the live view; report."""
    import asyncio  # here, not at the top: main() imports it with the collector off

    from crew import events

    for warning in loaded.warnings:
        stderr().print(f"[yellow]warning:[/] {markup(warning)}", highlight=False)
    view = None if args.quiet else _live_view(args, crew)
    failed_hooks: list[events.ReviewHookFailed] = []
    started: list[str] = []  # the run's id, once it has started

    def on_event(event: events.Event) -> None:
        collect_from_now()  # the run has begun: the crew and its model's client are loaded
        if isinstance(event, events.RunStarted) and not started:
            started.append(event.run_id)
        if isinstance(event, events.ReviewHookFailed):
            failed_hooks.append(event)
        if view is not None:
            view(event)

    if view is not None:
        # The header at once, not after the models load (importing litellm alone takes seconds).
        view.crew = crew.name
        view.start()
    terminated: list[bool] = []
    try:
        result = asyncio.run(stoppable(start(on_event), terminated))
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not terminated:
            raise
        result = None
    finally:
        if view is not None:
            view.stop()
    if result is None:
        return interrupted(args, crew, started[0] if started else None, bool(terminated))
    for failed in failed_hooks:
        stderr().print(
            f"[yellow]warning:[/] the review hook failed for task '{failed.task_id}':"
            f" {markup(failed.error)}"
        )
    write_outputs(result, output_files, loaded.source if loaded.source.is_dir() else Path())
    return report(args, result, view.console if view is not None else _console(args))


def collect_from_now() -> None:
    """The cyclic collector back on, once the crew is loaded (``crew.cli.main`` keeps it off
    until then: a run's first event, a batch's start), with what the loading made frozen out
    of its sight: those objects live until the process exits, and scanning them at each
    collection of a long run would cost as much as it did at startup. Nothing to do when the
    collector is on already."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _live_view(args: argparse.Namespace, crew: Crew) -> ConsoleView:
    from crew.console import ConsoleView

    return ConsoleView(
        _console(args),
        task_ids=[t.id for t in crew.tasks],
        agents={t.id: t.agent.role for t in crew.tasks if t.agent is not None},
    )


def _console(args: argparse.Namespace) -> Console:
    """Where the run is shown and reported: stderr with ``--json``, whose stdout is the JSON."""
    from rich.console import Console

    return Console(stderr=args.json, highlight=False)


async def stoppable(run: Coroutine[Any, Any, T], terminated: list[bool]) -> T:
    """``run``, stopped by SIGTERM as by Ctrl-C: asyncio.run cancels its task on the first
    Ctrl-C, so the run's own cleanup records what finished and frees its lease; SIGTERM
    (a service manager, ``kill``, a CI timeout) does the same here, and says so in
    ``terminated``."""
    import asyncio

    loop, main = asyncio.get_running_loop(), asyncio.current_task()

    def stop() -> None:
        if not terminated and main is not None:  # a second SIGTERM must not cut the cleanup
            terminated.append(True)
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
        return await run
    try:
        return await run
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def interrupted(args: argparse.Namespace, crew: Crew, run_id: str | None, terminated: bool) -> int:
    """Mark the stopped run ``interrupted`` (its tasks were cancelled, its finished outputs are
    stored) and say how to continue it; the exit code (143 for SIGTERM, 130 for Ctrl-C)."""
    code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    if run_id is None:
        stderr().print("[yellow]interrupted[/] before the run started")
        return code
    mark_interrupted(crew.store, run_id)
    where = f"cd {project_dir(args)} && " if project_store(args) else ""  # the run's store
    stderr().print(
        f"[yellow]interrupted[/]: run {run_id} stopped."
        f" Continue with: {markup(where)}crew resume {run_id}"
    )
    return code


def mark_interrupted(store: Store, run_id: str) -> None:
    """Mark a run this process stopped ``interrupted`` (resumable), and free its lease if the run
    could not free it itself."""
    from crew.store import default_holder

    record = store.get_run(run_id)
    if record is not None and record.status in ("running", "cancelled"):
        store.update_run(run_id, status="interrupted")
    store.release_lease(run_id, default_holder())


def report(args: argparse.Namespace, result: CrewResult, out: Console) -> int:
    """Print the result and what to do next; the exit code."""
    from crew.console import render_result, result_json

    if args.json:
        sys.stdout.write(result_json(result) + "\n")
    else:
        render_result(result, out, usage=not args.quiet, as_written=args.quiet)
    where = f"cd {project_dir(args)} && " if project_store(args) else ""  # the run's store
    if result.status == "waiting":
        waiting = [t for t, r in result.tasks.items() if r.status == "waiting"]
        stderr().print(
            f"Run {result.run_id} waits for a review of: {', '.join(waiting)}. Answer with"
            f" {where}crew approve|reject|edit {result.run_id} TASK --resume-now (or answer,"
            f" then: crew resume {result.run_id})"
        )
        return 0
    if result.status == "budget_exceeded":
        total = result.usage.total
        stderr().print(
            f"Run {result.run_id} stopped: its budget was spent (${total.cost_usd:.4f},"
            f" {total.total_tokens:,} tokens so far). Continue with a higher one:"
            f" {where}crew resume {result.run_id} --max-cost USD"
        )
        return EXIT_BUDGET
    if result.status != "succeeded":
        stderr().print(f"Fix the cause, then continue with: {where}crew resume {result.run_id}")
    return 0 if result.status == "succeeded" else EXIT_FAILED


def write_outputs(result: CrewResult, files: Mapping[str, Path], folder: Path) -> None:
    """CrewAI's ``output_file``: each task's output written where the project says."""
    from crew.prompts import interpolate

    for task_id, relative in files.items():
        output = result.outputs.get(task_id)
        if output is not None:
            path = folder / interpolate(str(relative), result.inputs)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(output.text, encoding="utf-8")


def find_run(store: Store, given: str) -> RunRecord:
    """The run a user named: its id, ``latest`` (the newest run) or a unique prefix of its id.

    Raises:
        ConfigError: no run matches (with close matches), or a prefix matches several.
    """
    if given == "latest":
        # A subcrew's run is its parent's child, started after it: the parent is the latest.
        started = (r for r in store.list_runs(None) if not r.parent_run_id or "fork" in r.metadata)
        newest = next(started, None)
        if newest is None:
            raise ConfigError("There are no runs in the store yet: `latest` names none.")
        return newest
    record = store.get_run(given)
    if record is not None:
        return record
    ids = [run.run_id for run in store.list_runs(None)]
    matches = [run_id for run_id in ids if run_id.startswith(given)]
    if len(matches) == 1:
        found = store.get_run(matches[0])
        if found is not None:
            return found
    if len(matches) > 1:
        shown = ", ".join(matches[:10]) + (
            f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        )
        raise ConfigError(
            f"Run id '{given}' is ambiguous: it starts {len(matches)} runs ({shown})."
            " Give more of the id."
        )
    from crew.errors import did_you_mean

    hint = did_you_mean(given, ids, sentence=True)
    raise ConfigError(f"There is no run '{given}' in the store.{hint} `crew runs` lists them.")


def as_shown(store: Store, run: RunRecord) -> RunRecord:
    """The run as ``crew runs`` and ``crew show`` show it: a ``running`` run whose process is
    gone is ``interrupted``. The store says so once the lease expires; a holder on this machine
    whose process no longer exists (killed, crashed) is known to be gone at once, and a running
    run that no one holds a lease of was stopped before it took one."""
    if run.status != "running":
        return run
    from crew.checkpoint import gone_here

    lease = store.lease(run.run_id)
    if lease is None or gone_here(lease[0]):
        return dataclasses.replace(run, status="interrupted")
    return run
