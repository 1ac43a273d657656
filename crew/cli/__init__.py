"""The ``crew`` command: run, resume, fork, batch, review, history, plan, init, templates, config.

Exit codes: 0 done, 1 the run finished with failed tasks, 2 the crew or the command is wrong
(one message, no traceback), 130 interrupted.

Each command's parser sits beside the function that runs it: ``crew.cli.running`` (run, resume,
fork, and loading a crew for them), ``crew.cli.batch`` (batch), ``crew.cli.history`` (the store:
runs, review and its decisions, show, logs, prune), ``crew.cli.project`` (plan, init, templates,
config).
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
from collections.abc import Sequence

from crew.cli.batch import add_batch
from crew.cli.history import (
    add_logs,
    add_prune,
    add_resolve,
    add_review,
    add_runs,
    add_show,
)
from crew.cli.project import add_config, add_init, add_plan, add_templates
from crew.cli.running import EXIT_INTERRUPTED, EXIT_USAGE, add_fork, add_resume, add_run
from crew.cli.target import markup, stderr
from crew.errors import CrewError


def main(argv: Sequence[str] | None = None) -> int:
    # httpx imports its own command-line client (click, pygments and rich: ~30 ms before the
    # first request) unless it is missing. This process never runs it, so it is marked missing
    # before httpx loads; httpx then defines a stub ``httpx.main`` instead.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    # Loading a crew creates a few hundred thousand objects that live as long as the process
    # (modules, classes, functions) and almost no garbage, yet the cyclic collector scans them
    # over and over as they pile up: ~60 ms before the first request. It stays off until the
    # command starts its work (``collect_from_now``, which freezes what is alive), or returns.
    # Once a process: a program that calls main() again keeps its collector as it is, so the
    # garbage it makes meanwhile is never frozen with the rest.
    collecting = gc.isenabled()
    if not gc.get_freeze_count():
        gc.disable()
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        return int(args.command(args))
    except CrewError as exc:
        stderr().print(f"[bold red]error:[/] {markup(_printable(str(exc)))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr().print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    finally:
        if collecting:
            gc.enable()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(message: str) -> str:
    """``message`` with control characters shown as ``\\x1b``: a crew file may quote any text,
    and an escape sequence echoed from it would drive the terminal or the CI log."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", message)


def _parser() -> argparse.ArgumentParser:
    from crew import __version__

    parser = argparse.ArgumentParser(prog="crew", description="Run role-based multi-agent crews.")
    parser.add_argument("--version", action="version", version=f"crew {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for add in (
        add_run, add_resume, add_fork, add_batch, add_runs, add_review, add_show, add_logs,
        add_resolve, add_prune, add_plan, add_init, add_templates, add_config,
    ):  # fmt: skip
        add(commands)  # each command's parser sits above the function that runs it
    return parser
