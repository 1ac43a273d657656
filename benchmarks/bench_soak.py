"""Soak benchmark: many runs of one crew against a flaky provider, with crew's default settings.

    python benchmarks/bench_soak.py --runs 200     # about 8,000 tasks; a few minutes
    python benchmarks/bench_soak.py --runs 10      # a quick check

The fake OpenAI-compatible server runs in its own process (as a real provider would) and
injects faults into a share of the calls (``crew.testserver.Faults``, seeded): 10% answered 429
(half of them with ``Retry-After: 1``), 10% answered 500, and 5% hangs. A hang is held for
``--hang-s`` seconds and then the connection is dropped unanswered: that is what a real hang
turns into, since the load balancers in front of hosted providers end an idle request after
60-100 s (and the client's ``timeout_s`` ends one that never ends). The hold is shortened here
so the benchmark runs in minutes; it is the server's side, not a crew setting.

Each run is a 40-task graph (a root, six branches of uneven length, a fan-out of ten, cross
edges, and a join); ``--parallel`` runs go at once. Crew is used as shipped: only ``api_base``
points at the fake server, every retry, timeout and concurrency setting is the default. It
prints the runs that succeeded, the outputs lost (tasks without an output: must be 0), the
retries (model calls retried, from the runs' usage, and task attempts retried), the faults the
server injected, and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crew import LLM, Agent, Crew, CrewResult, Task, events

Spec = dict[str, list[str]]
"""task id -> dependency ids"""


def serve(seed: int, hang_s: float, latency_ms: float) -> None:
    """Run the faulty fake server in this process; print its URL, and the faults it injected
    once stdin closes."""
    from crew.testserver import FakeOpenAIServer, Faults

    faults = Faults(
        rate_limited=0.10,
        server_error=0.10,
        hang=0.05,
        retry_after_s=1.0,
        retry_after_share=0.5,
        hang_s=hang_s,
        seed=seed,
    )
    with FakeOpenAIServer(faults=faults, latency_ms=latency_ms) as server:
        print(server.url, flush=True)
        sys.stdin.read()
        print(json.dumps(dict(faults.injected)), flush=True)


def graph(seed: int = 7) -> Spec:
    """40 tasks: a root, branches of 8, 6, 5, 4, 3 and 2 tasks, a fan-out of ten from the
    middle of the longest branch, cross edges between branches, and a join of every end."""
    rng = random.Random(seed)
    spec: Spec = {"root": []}
    branches = []
    for b, length in enumerate([8, 6, 5, 4, 3, 2]):
        ids = [f"b{b}_{i}" for i in range(length)]
        for i, task_id in enumerate(ids):
            spec[task_id] = [ids[i - 1]] if i else ["root"]
        branches.append(ids)
    for _ in range(6):
        src, dst = rng.sample(range(len(branches)), 2)
        i = rng.randrange(len(branches[src]) - 1)
        j = rng.randrange(i + 1, len(branches[dst])) if i + 1 < len(branches[dst]) else None
        if j is not None:
            spec[branches[dst][j]].append(branches[src][i])
    spec |= {f"fan{i}": ["b0_3"] for i in range(10)}
    ends = [ids[-1] for ids in branches] + [f"fan{i}" for i in range(10)]
    spec["join"] = ends
    assert len(spec) == 40
    return spec


def build(spec: Spec, url: str) -> Crew:
    # Only api_base (and a key the fake ignores) differ from what a user gets by default.
    llm = LLM("openai/fake", api_base=url, api_key="sk-fake")
    agent = Agent(role="Worker", goal="Do each task well", llm=llm)
    tasks = [
        Task(id=task_id, description=f"Do part {task_id}.", agent=agent, depends_on=deps)
        for task_id, deps in spec.items()
    ]
    return Crew(tasks, name="soak")


async def soak(crew: Crew, runs: int, parallel: int) -> tuple[list[CrewResult], int]:
    gate = asyncio.Semaphore(parallel)
    retrying = 0

    def watch(event: events.Event) -> None:
        nonlocal retrying
        if isinstance(event, events.LLMRetrying | events.TaskRetrying):
            retrying += 1

    async def one() -> CrewResult:
        async with gate:
            return await crew.arun(on_event=watch)

    results = await asyncio.gather(*(one() for _ in range(runs)))
    return list(results), retrying


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=50, help="runs at once")
    parser.add_argument("--hang-s", type=float, default=3.0, help="how long a hang is held")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.seed, args.hang_s, args.latency_ms)
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", f"--seed={args.seed}", f"--hang-s={args.hang_s}",
         f"--latency-ms={args.latency_ms}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    try:
        url = server.stdout.readline().strip()
        spec = graph()
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)  # the default store, SQLite in ./.crew/crew.db, lands here
            crew = build(spec, url)
            started = time.perf_counter()
            results, retrying = asyncio.run(soak(crew, args.runs, args.parallel))
            wall_s = time.perf_counter() - started
            os.chdir(os.path.dirname(os.path.abspath(__file__)))
        server.stdin.close()
        injected = json.loads(server.stdout.readline() or "{}")
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
    report(results, retrying, injected, wall_s, len(spec))


def report(
    results: list[CrewResult], retrying: int, injected: dict[str, int], wall_s: float, size: int
) -> None:
    succeeded = sum(r.status == "succeeded" for r in results)
    lost = sum(
        size - sum(t.output is not None and t.status == "succeeded" for t in r.tasks.values())
        for r in results
    )
    model_retries = sum(r.usage.total.retries for r in results)
    task_retries = sum(t.attempts - 1 for r in results for t in r.tasks.values() if t.attempts)
    calls = sum(r.usage.total.calls for r in results)
    failures = sorted({t.error_type or "" for r in results for t in r.tasks.values() if t.error})
    print(f"runs completed:   {succeeded} of {len(results)} ({len(results) * size} tasks)")
    print(f"outputs lost:     {lost}" + (f"  ({', '.join(failures)})" if failures else ""))
    print(f"retries:          {model_retries} model calls, {task_retries} task attempts")
    print(f"retry events:     {retrying} (LLMRetrying + TaskRetrying)")
    print(f"answered calls:   {calls}")
    shown = ", ".join(f"{injected.get(k, 0)} {k}" for k in ("429", "500", "hang"))
    print(f"faults injected:  {sum(injected.values())} ({shown})")
    print(f"wall time:        {wall_s:.1f} s")


if __name__ == "__main__":
    main()
