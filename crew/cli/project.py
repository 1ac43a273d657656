"""Working on a crew without running it: ``crew plan``, ``init``, ``templates`` and ``config``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crew.cli.target import add_target, configure, given_inputs, load, markup, read_settings, stderr
from crew.errors import ConfigError

if TYPE_CHECKING:
    from crew.crew import CrewResult
    from crew.events import EventSink

    Start = Callable[[EventSink], Coroutine[Any, Any, CrewResult]]
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_plan(commands: Commands) -> None:
    """``crew plan``."""
    plan = commands.add_parser(
        "plan", help="validate a crew and show its task graph, no model call"
    )
    add_target(plan)
    shown = plan.add_mutually_exclusive_group()
    shown.add_argument("--mermaid", action="store_true", help="print a Mermaid flowchart instead")
    shown.add_argument(
        "--estimate", action="store_true",
        help="also print each task's worst-case tokens and cost, and the total",
    )  # fmt: skip
    plan.set_defaults(command=_plan)


def _plan(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crew.console import plan_mermaid, render_plan

    settings = read_settings(args)
    given = given_inputs(args)
    loaded, _ = load(args.target, settings, given, crew_class=args.crew_class)
    for warning in loaded.warnings:  # what `crew run` will warn about, said before it runs
        stderr().print(f"[yellow]warning:[/] {markup(warning)}", highlight=False)
    # Planning needs no real values: each missing input gets a stand-in of its declared type.
    stand_ins = {"integer": 1, "number": 1.0, "boolean": True, "list": [], "object": {}}
    placeholders = {
        name: spec.default if spec.default is not None else stand_ins.get(spec.type, f"<{name}>")
        for name, spec in loaded.inputs.items()
    }
    inputs = loaded.resolve_inputs({**placeholders, **given})
    crew = configure(loaded.crew, settings)
    plan = crew.plan(inputs)
    if args.mermaid:
        sys.stdout.write(plan_mermaid(plan, inputs=inputs) + "\n")
    else:
        render_plan(plan, Console(highlight=False), inputs=inputs)
    if args.estimate:
        from crew.budget import worst_cases
        from crew.console import render_estimate

        estimates = worst_cases(
            plan, default=crew.llm, task_retries=crew.task_retries, inputs=inputs
        )
        render_estimate(estimates, Console(highlight=False, width=120))
    return 0


def add_init(commands: Commands) -> None:
    """``crew init``."""
    init = commands.add_parser("init", help="scaffold a new crew project")
    init.add_argument("name", help="folder to create")
    init.set_defaults(command=_init)


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


def add_templates(commands: Commands) -> None:
    """``crew templates``."""
    templates = commands.add_parser("templates", help="list role and task templates")
    templates.set_defaults(command=_templates)


def _templates(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from crew.templates import TaskTemplate, list_templates

    table = Table(
        "kind", "name", "about", "parameters (with: NAME: VALUE)",
        title="Templates (use: NAME in crew.yaml)",
    )  # fmt: skip
    for template in list_templates():
        params = template.params.values() if isinstance(template, TaskTemplate) else ()
        described = [
            f"{p.name}"
            + (" (required)" if p.default is None else f" = {p.default!r}")
            + (f": {p.description}" if p.description else "")
            for p in params
        ]
        table.add_row(
            template.kind, template.name, markup(template.about), markup("\n".join(described))
        )
    Console(highlight=False).print(table)
    return 0


def add_config(commands: Commands) -> None:
    """``crew config``."""
    config = commands.add_parser("config", help="show the effective settings and their sources")
    config.add_argument("--llm", help="as for run, to see its effect")
    config.set_defaults(command=_config)


def _config(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "from", title="Effective settings")
    for key, value, source in read_settings(args).rows():
        table.add_row(key, value, source)
    Console(highlight=False).print(table)
    return 0


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
