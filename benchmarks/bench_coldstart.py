"""How soon ``crew run FILE`` sends its first request, on the direct path (``openai/*``, aiohttp).

    python benchmarks/bench_coldstart.py            # 9 runs per store; takes about 20 s
    python benchmarks/bench_coldstart.py --runs 21 --store sqlite --view

The fake OpenAI-compatible server runs in this process and answers at once. Each run starts
``python -m crew.cli run crew.yaml --quiet`` in a fresh process (CREW_MODEL=openai/fake,
CREW_API_BASE=the server) and records the time from spawning it to its first request reaching
the server: the wall clock a user waits before the model starts working. The CPU time of the
whole process (user + system, start to exit) is recorded too, since on a shared machine the wall
clock also counts other people's work. Both stores are measured: ``memory``, and SQLite (the
default a real user gets), in a database earlier runs made (``sqlite``) and in a new one
(``sqlite-new``, a project's first run). ``--view`` adds a run without ``--quiet``, whose live
view (plain lines on a pipe) loads rich before the first request.

Last, one run under ``python -X importtime`` lists the packages whose import costs the most,
and whether litellm, networkx, rich's markdown and pygments were imported at all. The load
average is printed before and after: medians taken with a load above the core count are
inflated by other work.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CREW_FILE = """\
name: coldstart
agents:
  worker: {role: Worker, goal: Answer}
tasks:
  hello: {description: Say hi., agent: worker}
"""
WATCHED = (
    "litellm",
    "networkx",
    "pydantic",
    "aiohttp",
    "httpx",
    "rich",
    "markdown_it",
    "pygments",
    "click",
)
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


STORES = ("memory", "sqlite", "sqlite-new")
SQLITE_DB = Path(tempfile.gettempdir()) / f"crew-bench-coldstart-{os.getpid()}" / "crew.db"


def _environment(url: str, store: str, folder: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CREW_", "OPENAI_", "ANTHROPIC_"))
        and key != "PYTHONDONTWRITEBYTECODE"
    }
    return env | {
        "PYTHONPATH": str(ROOT),
        # crew's bytecode, cached as an installed package's is (pip compiles it): written by
        # the warm-up run, read by the others, outside the source tree
        "PYTHONPYCACHEPREFIX": str(SQLITE_DB.parent / "pycache"),
        "CREW_MODEL": "openai/fake",
        "CREW_API_BASE": url,
        "OPENAI_API_KEY": "sk-bench",
        "CREW_STORE": {"memory": "memory", "sqlite": str(SQLITE_DB)}.get(
            store, str(folder / ".crew" / "crew.db")
        ),
        "HOME": str(folder),  # no user config file weighs on one run and not another
    }


class CPUProbe:
    """The fake server's router: when a request arrives, it reads the CPU time the process
    that sent it has used so far (user + system, all its threads, in Linux's /proc: 10 ms
    ticks), which the load of the machine inflates far less than the wall clock."""

    def __init__(self) -> None:
        self.pid = 0
        self.cpu_s: float | None = None

    def __call__(self, body: dict[str, Any]) -> str:
        if self.cpu_s is None and self.pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{self.pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
                ticks = int(fields[11]) + int(fields[12])  # utime, stime
                self.cpu_s = ticks / os.sysconf("SC_CLK_TCK")
        return "*"


def one_run(
    server: object, probe: CPUProbe, store: str, *flags: str, view: bool = False
) -> tuple[float, float | None, float, str]:
    """Seconds from spawn to the first request, the CPU seconds used by then, the CPU seconds
    of the whole process, and its stderr."""
    server.reset()  # type: ignore[attr-defined]
    probe.pid, probe.cpu_s = 0, None
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "crew.yaml").write_text(CREW_FILE)
        env = _environment(server.url, store, folder)  # type: ignore[attr-defined]
        command = [sys.executable, *flags, "-m", "crew.cli", "run", "crew.yaml"]
        command += [] if view else ["--quiet"]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        probe.pid = process.pid
        _, status, usage = os.wait4(process.pid, 0)
        stderr = process.stderr.read().decode() if process.stderr else ""
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"crew run exited {process.returncode}:\n{stderr}")
    calls = server.calls  # type: ignore[attr-defined]
    return calls[0].started - started, probe.cpu_s, usage.ru_utime + usage.ru_stime, stderr


def offenders(
    server: object, probe: CPUProbe, top: int
) -> tuple[list[tuple[int, str]], dict[str, bool]]:
    """The ``top`` costliest imports of one run (cumulative µs, each package counted where it
    is first entered: ``crew.config`` includes the pydantic it loads), and which of ``WATCHED``
    were imported at all."""
    *_, stderr = one_run(server, probe, "memory", "-X", "importtime")
    totals: dict[str, int] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing imports
    for found in reversed(list(_IMPORT_LINE.finditer(stderr))):  # parents come after children
        cumulative, indent, module = int(found.group(2)), len(found.group(3)), found.group(4)
        parts = module.split(".")
        key = ".".join(parts[:2]) if parts[0] == "crew" else parts[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if all(enclosing != key for _, enclosing in stack):
            totals[key] = totals.get(key, 0) + cumulative
        stack.append((indent, key))
    imported = {name: name in totals for name in WATCHED}
    ranked = sorted(((us, module) for module, us in totals.items()), reverse=True)
    return ranked[:top], imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--store", choices=[*STORES, "all"], default="all")
    parser.add_argument(
        "--view", action="store_true", help="also memory without --quiet (the live view)"
    )
    parser.add_argument("--top", type=int, default=15, help="import offenders to list")
    args = parser.parse_args()
    from crew.testserver import FakeOpenAIServer

    rows = [(store, False) for store in STORES if args.store in (store, "all")]
    if args.view:
        rows.insert(1, ("memory", True))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    probe = CPUProbe()
    try:
        with FakeOpenAIServer(route=probe) as server:
            one_run(server, probe, "sqlite")  # warm the page cache, the .pyc files, the database
            print(
                "| store | first request: wall, median (min-max) | CPU by then, median"
                " | CPU of the whole process, median |"
            )
            print("|---|---|---|---|")
            for store, view in rows:
                samples = [one_run(server, probe, store, view=view)[:3] for _ in range(args.runs)]
                firsts = [first for first, _, _ in samples]
                by_then = [cpu for _, cpu, _ in samples if cpu is not None]
                shown = f"{statistics.median(by_then):.3f} s" if by_then else "n/a (no /proc)"
                print(
                    f"| {store}{' (live view)' if view else ''}"
                    f" | {statistics.median(firsts):.3f} s ({min(firsts):.3f}-{max(firsts):.3f})"
                    f" | {shown} | {statistics.median(whole for _, _, whole in samples):.3f} s |"
                )
            ranked, imported = offenders(server, probe, args.top)
    finally:
        shutil.rmtree(SQLITE_DB.parent, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nTop imports of one run (cumulative, -X importtime; {os.cpu_count()} cores):")
    for us, module in ranked:
        print(f"  {us / 1000:7.1f} ms  {module}")
    print(
        "Imported: " + ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in imported.items())
    )


if __name__ == "__main__":
    main()
