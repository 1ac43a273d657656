"""Scheduler and overhead benchmark against the fake OpenAI-compatible server.

    python benchmarks/bench_crew.py                # prints one table; takes about 30 s
    python benchmarks/bench_crew.py --checkpoints  # only the per-task cost of each store,
                                                   # on the direct path, 15 rounds

The server runs in its own process (as a real provider would), answering each task after the
number of milliseconds written in its prompt (``sleep_ms=N``). For each graph it prints the
makespan, the critical path (the sum of the latencies along the longest path), their ratio and
the most calls in flight, next to the same graph run by a hand-written asyncio program calling
litellm directly: the floor, since litellm costs ~3 ms of CPU per call and no scheduler removes
that. Then the per-task overhead of a 50-task chain of 0 ms tasks next to a bare
``litellm.acompletion`` loop and a raw HTTP client against the same server, the time of
``import crew`` in a fresh interpreter, and this process's peak RSS.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crew import LLM, Agent, Crew, Task, events

_SLEEP = re.compile(r"sleep_ms=(\d+)")
Spec = dict[str, tuple[int, list[str]]]
"""task id -> (latency ms, dependency ids)"""


def serve(port: int) -> None:
    """Run the fake server in this process until killed."""
    from crew.testserver import FakeOpenAIServer, ServerReply

    def reply(body: dict) -> ServerReply:
        prompt = " ".join(str(m.get("content")) for m in body["messages"] if m["role"] == "user")
        found = _SLEEP.search(prompt)
        return ServerReply(text="done", latency_ms=float(found.group(1)) if found else 0.0)

    server = FakeOpenAIServer(port=port)
    server.default = reply
    server.start()
    print(server.url, flush=True)
    while True:
        time.sleep(3600)


def fan_out(n: int = 32, ms: int = 100) -> Spec:
    spec: Spec = {"root": (ms, [])}
    spec |= {f"leaf{i}": (ms, ["root"]) for i in range(n)}
    spec["join"] = (ms, [f"leaf{i}" for i in range(n)])
    return spec


def chain(n: int, ms: int) -> Spec:
    return {f"t{i}": (ms, [f"t{i - 1}"] if i else []) for i in range(n)}


def unbalanced(seed: int = 7) -> Spec:
    """40 tasks: 6 branches of lengths 2..12 from one root, 50-400 ms each, cross edges between
    branches, and one join."""
    rng = random.Random(seed)
    spec: Spec = {"root": (rng.randint(50, 400), [])}
    lengths = [12, 9, 7, 5, 3, 2]  # 38 tasks + root + join = 40
    branches = []
    for b, length in enumerate(lengths):
        ids = [f"b{b}_{i}" for i in range(length)]
        for i, task_id in enumerate(ids):
            spec[task_id] = (rng.randint(50, 400), [ids[i - 1]] if i else ["root"])
        branches.append(ids)
    for _ in range(8):  # cross edges from an earlier position of one branch to a later one
        src, dst = rng.sample(range(len(branches)), 2)
        if len(branches[src]) < 2 or len(branches[dst]) < 3:
            continue
        i = rng.randrange(len(branches[src]) - 1)
        j = rng.randrange(min(i + 1, len(branches[dst]) - 1), len(branches[dst]))
        spec[branches[dst][j]][1].append(branches[src][i])
    spec["join"] = (rng.randint(50, 400), [ids[-1] for ids in branches])
    return spec


def build(spec: Spec, llm: LLM, max_concurrency: int, store: object = "memory") -> Crew:
    agent = Agent(role="Worker", goal="Do the task", llm=llm, board_tools=False)
    tasks = [
        Task(
            id=t,
            description=f"Do {t}. sleep_ms={ms}",
            agent=agent,
            depends_on=deps,
            estimate_s=ms / 1000,
        )
        for t, (ms, deps) in spec.items()
    ]
    return Crew(tasks, max_concurrency=max_concurrency, store=store)  # type: ignore[arg-type]


def measure(spec: Spec, llm: LLM, max_concurrency: int = 64) -> dict[str, float]:
    crew = build(spec, llm, max_concurrency)
    plan = crew.plan()
    in_flight = peak = 0

    def watch(event: events.Event) -> None:
        nonlocal in_flight, peak
        if isinstance(event, events.TaskStarted):
            in_flight += 1
            peak = max(peak, in_flight)
        elif isinstance(event, events.TaskFinished | events.TaskFailed):
            in_flight -= 1

    started = time.perf_counter()
    result = asyncio.run(crew.arun(on_event=watch))
    makespan = time.perf_counter() - started
    result.raise_for_status()
    return {
        "makespan_s": makespan,
        "critical_s": plan.critical_path_s,
        "ratio": makespan / plan.critical_path_s if plan.critical_path_s else float("nan"),
        "peak": peak,
        "tasks": len(spec),
    }


async def hand_written(spec: Spec, url: str) -> float:
    """The same graph as a hand-written asyncio program calling litellm directly: each task
    awaits its dependencies' futures, then calls the model. No framework, no bookkeeping: the
    floor for any dependency-driven scheduler on top of litellm."""
    import litellm

    loop = asyncio.get_running_loop()
    done = {t: loop.create_future() for t in spec}

    async def run(task_id: str, ms: int, deps: list[str]) -> None:
        for dep in deps:
            await done[dep]
        await litellm.acompletion(
            model="openai/fake",
            api_base=url,
            api_key="sk-bench",
            num_retries=0,
            messages=[{"role": "user", "content": f"# Task: {task_id}\nsleep_ms={ms}"}],
        )
        done[task_id].set_result(None)

    started = time.perf_counter()
    await asyncio.gather(*(run(t, ms, deps) for t, (ms, deps) in spec.items()))
    return time.perf_counter() - started


async def bare_litellm(url: str, calls: int) -> float:
    import litellm

    started = time.perf_counter()
    for i in range(calls):
        await litellm.acompletion(
            model="openai/fake",
            api_base=url,
            api_key="sk-bench",
            num_retries=0,
            messages=[
                {"role": "system", "content": "You are Worker."},
                {"role": "user", "content": f"# Task: t{i}\nDo t{i}. sleep_ms=0"},
            ],
        )
    return (time.perf_counter() - started) / calls


async def raw_http(url: str, calls: int) -> float:
    import httpx

    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        for i in range(calls):
            response = await client.post(
                f"{url}/chat/completions",
                json={
                    "model": "fake",
                    "messages": [{"role": "user", "content": f"# Task: t{i}\nhi"}],
                },
            )
            response.raise_for_status()
        return (time.perf_counter() - started) / calls


def checkpoint_overhead(llm: LLM, rounds: int) -> None:
    """Per-task cost of checkpointing (0 ms tasks): each store against the in-memory one."""
    import tempfile

    from crew.store import open_store

    stores = {"memory": "memory"}
    with tempfile.TemporaryDirectory() as folder:
        stores["SQLite"] = f"{folder}/bench.db"
        postgres = os.environ.get("CREW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
        try:
            open_store(postgres).close()
            stores["PostgreSQL"] = postgres
        except Exception as exc:  # no server here: say so and measure the others
            print(f"  (PostgreSQL not measured: {exc})")
        per_task: dict[str, list[float]] = {name: [] for name in stores}
        opened = {name: open_store(url) for name, url in stores.items()}
        for _ in range(rounds):
            for name, store in opened.items():
                crew = build(chain(50, 0), llm, 8, store=store)
                started = time.perf_counter()
                asyncio.run(crew.arun())
                per_task[name].append((time.perf_counter() - started) / 50 * 1000)
        base, floor = statistics.median(per_task["memory"]), min(per_task["memory"])
        print(f"\ncheckpointing, 0 ms chain of 50 (median and best of {rounds}):")
        for name, values in per_task.items():
            median, best = statistics.median(values), min(values)
            print(
                f"  {name:<12}{median:>6.2f} ms per task, {median - base:+.2f} ms over memory;"
                f" best {best:.2f} ms, {best - floor:+.2f} ms"
            )


def import_time_s(runs: int = 5) -> float:
    code = "import time; t = time.perf_counter(); import crew; print(time.perf_counter() - t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(times)


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(runs))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(only_checkpoints: bool = False) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip() if server.stdout else ""
        if only_checkpoints:  # on the direct path: less CPU per call, so less noise
            llm = LLM("openai/fake", api_base=url, api_key="sk-bench")
            measure(chain(5, 0), llm)  # warm up
            checkpoint_overhead(llm, rounds=15)
        else:
            report(url)
    finally:
        server.kill()
        server.wait()


def report(url: str, rounds: int = 7) -> None:
    # Through litellm, like the hand-written floor (bench_paths.py compares the direct path).
    llm = LLM("openai/fake", api_base=url, api_key="sk-bench", client="litellm")
    measure(chain(5, 0), llm)  # warm up: litellm import, connection pool
    asyncio.run(bare_litellm(url, 5))
    print(
        f"{'graph (best of 3)':<34}{'tasks':>6}{'makespan':>10}{'critical':>10}{'ratio':>8}"
        f"{'hand-written':>14}{'crew/hand':>11}{'in flight':>11}"
    )
    rows = [
        ("fan-out root -> 32 -> join, 100 ms", fan_out()),
        ("chain of 10, 100 ms", chain(10, 100)),
        ("unbalanced layered DAG, 50-400 ms", unbalanced()),
    ]
    for name, spec in rows:
        runs, floors = [], []
        for _ in range(3):  # interleaved, so that noise hits both alike
            runs.append(measure(spec, llm))
            floors.append(asyncio.run(hand_written(spec, url)))
        m = min(runs, key=lambda r: r["makespan_s"])
        floor = min(floors)
        print(
            f"{name:<34}{m['tasks']:>6.0f}{m['makespan_s']:>9.3f}s{m['critical_s']:>9.3f}s"
            f"{m['ratio']:>8.3f}{floor:>13.3f}s{m['makespan_s'] / floor:>11.3f}{m['peak']:>11.0f}"
        )
    crew_ms, bare_ms, raw_ms = [], [], []
    for _ in range(rounds):  # interleaved again
        crew_ms.append(measure(chain(50, 0), llm)["makespan_s"] / 50 * 1000)
        bare_ms.append(asyncio.run(bare_litellm(url, 50)) * 1000)
        raw_ms.append(asyncio.run(raw_http(url, 50)) * 1000)
    print(f"\nper task or call, over {rounds} interleaved rounds of 50:   best  median")
    for label, values in (
        ("crew, 0 ms chain of 50 tasks", crew_ms),
        ("bare litellm.acompletion loop", bare_ms),
        ("raw httpx client", raw_ms),
    ):
        print(f"  {label:<46}{min(values):>6.2f}{statistics.median(values):>8.2f} ms")
    overhead = min(crew_ms) - min(bare_ms)
    median_overhead = statistics.median(crew_ms) - statistics.median(bare_ms)
    print(
        f"  crew overhead above bare litellm: {overhead:+.2f} ms (best),"
        f" {median_overhead:+.2f} ms (median)"
    )
    checkpoint_overhead(llm, rounds)
    print(f"import crew: {import_time_s() * 1000:.0f} ms (median of 5 fresh interpreters)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main(only_checkpoints="--checkpoints" in sys.argv[1:])
