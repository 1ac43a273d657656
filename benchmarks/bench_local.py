"""The bundled model from a user's seat: ``crew run examples/research --stream``, cold.

    python benchmarks/bench_local.py            # about a minute; needs the README's install

Each run is a fresh interpreter, as a user's command is, started in a network namespace with
only loopback where this process may make one. It prints: the time from the start of the
command to the worker's first token; the worker's start (process and model load); tokens per
second of each generation (prompt processing included, as a user waits for it); the peak RSS
of crew's process and of the model's worker; and the run's wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, os, resource, sys, threading, time
launched = float(os.environ["BENCH_LAUNCHED"])
from crew import local
from crew.local import client
from crew.cli import main

calls, first = [], []
generate = client.WORKER.generate

def timed(request, deadline, cancel, on_piece):
    def piece(text):
        if not first:
            first.append(time.time())
        on_piece(text)
    result = generate(request, deadline, cancel, piece)
    calls.append(dict(client.WORKER.stats))
    return result

client.WORKER.generate = timed
code = main(["run", "examples/research", "--stream", "--quiet"])
print(json.dumps({
    "code": code,
    "first_token_s": first[0] - launched,
    "worker": local.worker_info(),
    "calls": calls,
    "crew_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "wall_s": time.time() - launched,
}), file=sys.stderr)
"""


def loopback_only(command: list[str]) -> list[str]:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return command
    return ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


def one_run(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env = {k: v for k, v in env.items() if not k.startswith("CREW_") and k != "MODEL"}
    (folder / "examples").symlink_to(ROOT / "examples")
    env["BENCH_LAUNCHED"] = repr(time.time())
    done = subprocess.run(
        loopback_only([sys.executable, "-c", CHILD]),
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    last = done.stderr.strip().splitlines()[-1]
    if done.returncode != 0 or not last.startswith("{"):
        raise SystemExit(f"the run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(last)


def main() -> None:
    import tempfile

    runs = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as folder:
            runs.append(one_run(Path(folder)))
    calls = [c for run in runs for c in run["calls"]]
    rates = [c["completion_tokens"] / c["seconds"] for c in calls if c["seconds"] > 0]
    worker = runs[-1]["worker"]
    median = statistics.median
    print(f"llama.cpp {worker['llama_cpp']}, compiled for: {' '.join(worker['features'])}")
    print(f"runs: 3 cold runs of crew run examples/research --stream, {len(calls)} generations")
    print(
        f"first token after the command started: {median(r['first_token_s'] for r in runs):.2f} s"
    )
    print(f"model load in the worker:              {worker['load_s']:.2f} s")
    print(f"tokens/s per generation (median):      {median(rates):.1f}")
    tokens = median(sum(c["completion_tokens"] for c in r["calls"]) for r in runs)
    print(f"completion tokens per run (median):    {tokens}")
    print(
        f"peak RSS, crew's process:              {max(r['crew_peak_rss_mb'] for r in runs):.0f} MB"
    )
    print(f"peak RSS, model worker:                {max(c['peak_rss_mb'] for c in calls):.0f} MB")
    print(f"wall time of a run (median):           {median(r['wall_s'] for r in runs):.1f} s")


if __name__ == "__main__":
    main()
