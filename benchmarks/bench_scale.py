"""Planning and running at scale: a 10,000-task plan, a 1,000-task run at 256 in flight, and the
memory each task in flight costs.

    python benchmarks/bench_scale.py           # prints three sections; takes about two minutes
    python benchmarks/bench_scale.py --plan    # planning only; a few seconds
    python benchmarks/bench_scale.py --run     # the 1,000-task run only

Planning runs in fresh child processes (three), so that its one-time imports are seen: the time
to make 10,000 ``Task`` objects (not planning, but reported), the first ``Crew.plan()`` (cold:
networkx is imported by it), then warm plans of fresh crews, and the same crew with one cycle
added (its error lists the cycle). The import of networkx alone is timed in one more fresh
process, to show its share of the cold plan.

Running: a 1,000-task unbalanced DAG at max_concurrency=256, each task answered after its own
latency (50-200 ms, also its estimate): once by an in-process ``ScriptedLLM`` (crew alone, no
HTTP), once by the fake OpenAI-compatible server in its own process (``sleep_ms=N`` in the
prompt) on the direct HTTP path, on the memory store and on the default SQLite store, and by
hand-written asyncio programs with no framework: on httpx's default client, on httpx clients of
16 connections each (crew's direct path before it moved to aiohttp), and on aiohttp (as crew's
direct path). crew runs by ``Crew.run``, on its thread's loop, which keeps its connections
from one run to the next as a script's or a service's runs do; the hand-written programs run
on one loop too and keep their session and clients. Each side warms up once. The CPU an HTTP
client costs per call sets how close to the critical path a run at 256 in flight comes on one
event loop. For each: the makespan against the critical path
(the sum of the latencies along the longest path), the most tasks started and the most calls
the model side held open at once, this process's CPU time per task, and, along the chain of
tasks that ended last, how long each task waited after its dependency's answer.

Memory: independent tasks held open by the model for seconds, 128 then 256 at once; the live
Python memory (tracemalloc) at each plateau, per task in flight, for both models. (RSS says
little here: after the warm-up runs, the allocator reuses memory it already holds.)
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SLEEP = re.compile(r"sleep_ms=(\d+)")
Spec = dict[str, tuple[int, list[str]]]
"""task id -> (latency ms, dependency ids)"""
PLAN_TASKS = 10_000
RUN_TASKS = 1_000
CONCURRENCY = 256


def layered(n: int, seed: int = 3) -> Spec:
    """An unbalanced DAG: each task depends on 1-3 earlier tasks, mostly among the last 30
    declared (long chains), sometimes anywhere before it (long edges)."""
    rng = random.Random(seed)
    spec: Spec = {}
    for i in range(n):
        deps: set[int] = set()
        for _ in range(rng.choice([1, 1, 2, 2, 3]) if i else 0):
            deps.add(rng.randrange(max(0, i - 30), i) if rng.random() < 0.6 else rng.randrange(i))
        spec[f"t{i}"] = (rng.randint(50, 200), [f"t{d}" for d in sorted(deps)])
    return spec


def branches(n: int, seed: int = 5) -> Spec:
    """An unbalanced DAG of ``n`` tasks: a root, then 8 long branches (25-35 tasks) among
    ~300 short ones (1-4 tasks), with cross edges from one branch to a shallower task of
    another, and a join. Over 256 tasks are ready at once after the root, so the limit and
    the critical-path priority both matter."""
    rng = random.Random(seed)
    spec: Spec = {"root": (rng.randint(50, 200), [])}
    lengths = [rng.randint(25, 35) for _ in range(8)]
    while sum(lengths) < n - 2:
        lengths.append(min(n - 2 - sum(lengths), rng.randint(1, 4)))
    rng.shuffle(lengths)
    by_depth: dict[int, list[str]] = {}
    ends = []
    for b, length in enumerate(lengths):
        previous = "root"
        for depth in range(length):
            task_id = f"b{b}_{depth}"
            deps = [previous]
            if depth and by_depth.get(depth - 1) and rng.random() < 0.3:
                deps.append(rng.choice(by_depth[depth - 1]))  # from another branch, shallower
            spec[task_id] = (rng.randint(50, 200), list(dict.fromkeys(deps)))
            by_depth.setdefault(depth, []).append(task_id)
            previous = task_id
        ends.append(previous)
    spec["join"] = (rng.randint(50, 200), ends)
    return spec


def with_cycle(spec: Spec) -> Spec:
    """``spec`` with its first task made to depend on its last (a cycle through the graph)."""
    first, last = next(iter(spec)), list(spec)[-1]
    ms, deps = spec[first]
    return {**spec, first: (ms, [*deps, last])}


# --- planning, in a fresh child process ----------------------------------------------------------


def plan_child() -> None:
    """Measure planning in this fresh process and print the numbers as JSON."""
    started = time.perf_counter()
    from crew import LLM, Agent, Crew, Task
    from crew.errors import PlanError

    imported_s = time.perf_counter() - started
    spec = layered(PLAN_TASKS)
    llm = LLM("openai/fake", api_base="http://127.0.0.1:9/v1", api_key="sk-bench")
    agent = Agent(role="Worker", goal="Do the task", llm=llm, board_tools=False)

    def tasks_of(spec: Spec) -> list[Task]:
        return [
            Task(id=t, description=f"Do {t}.", agent=agent, depends_on=d, estimate_s=ms / 1000)
            for t, (ms, d) in spec.items()
        ]

    started = time.perf_counter()
    tasks = tasks_of(spec)
    construct_s = time.perf_counter() - started
    networkx_before = "networkx" in sys.modules
    started = time.perf_counter()
    plan = Crew(tasks).plan()
    first_s = time.perf_counter() - started
    warm = []
    for _ in range(5):
        crew = Crew(tasks)  # a fresh crew: its plan is not cached
        started = time.perf_counter()
        crew.plan()
        warm.append(time.perf_counter() - started)
    cyclic = Crew(tasks_of(with_cycle(spec)))
    started = time.perf_counter()
    try:
        cyclic.plan()
        cycle_message = "no error"
    except PlanError as exc:
        cycle_message = exc.problems[0][:60]
    cycle_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "import_crew_s": imported_s,
                "construct_s": construct_s,
                "first_plan_s": first_s,
                "networkx_by_plan": not networkx_before and "networkx" in sys.modules,
                "warm_s": warm,
                "cycle_s": cycle_s,
                "cycle_message": cycle_message,
                "levels": len(plan.levels),
                "critical_path": len(plan.critical_path),
                "edges": len(plan.edges()),
            }
        )
    )


def networkx_import_s() -> float:
    """The import of networkx alone, in a fresh process."""
    script = "import time; t = time.perf_counter(); import networkx; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def report_planning(processes: int = 3) -> None:
    runs = []
    for _ in range(processes):
        done = subprocess.run(
            [sys.executable, __file__, "--plan-child"], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(done.stdout))
    m = runs[0]
    print(
        f"planning {PLAN_TASKS:,} tasks ({m['edges']:,} edges, {m['levels']} levels, critical"
        f" path of {m['critical_path']} tasks), {processes} fresh processes, best (median):"
    )

    def line(name: str, values: list[float], note: str = "") -> None:
        best, median = min(values), statistics.median(values)
        print(f"  {name:<26}{best:7.3f} s  ({median:.3f} s){note}")

    construct = [r["construct_s"] for r in runs]
    line("Task construction", construct, f"  {min(construct) / PLAN_TASKS * 1e6:.0f} us per task")
    imported = all(r["networkx_by_plan"] for r in runs)
    note = "  networkx imported by it" if imported else "  networkx NOT imported by it"
    line("first plan, cold", [r["first_plan_s"] for r in runs], note)
    line("import networkx alone", [networkx_import_s() for _ in range(processes)], "  one-time")
    line("plan, warm (5 per process)", [s for r in runs for s in r["warm_s"]])
    line("one cycle added", [r["cycle_s"] for r in runs], f"  {m['cycle_message']}...")


# --- the fake server, in its own process ---------------------------------------------------------


def serve(port: int) -> None:
    """Run the fake server in this process; on each line of stdin, print the calls since the
    last line as JSON [[task key, started, finished], ...] and forget them."""
    from crew.testserver import FakeOpenAIServer, ServerReply

    def reply(body: dict[str, Any]) -> ServerReply:
        prompt = " ".join(str(m.get("content")) for m in body["messages"] if m["role"] == "user")
        found = _SLEEP.search(prompt)
        return ServerReply(text="done", latency_ms=float(found.group(1)) if found else 0.0)

    server = FakeOpenAIServer(port=port)
    server.default = reply
    server.start()
    print(server.url, flush=True)
    for _ in sys.stdin:
        # perf_counter is CLOCK_MONOTONIC on Linux: the same clock in both processes.
        calls = [[c.key, c.started, c.finished] for c in server.calls]
        server.reset()
        server.default = reply
        print(json.dumps(calls), flush=True)


class Server:
    """The fake server's process, and the calls it saw."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.url = self.process.stdout.readline().strip()

    def calls(self) -> dict[str, tuple[float, float]]:
        """The calls since the last time, as task id -> (started, finished)."""
        assert self.process.stdout is not None and self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return {key: (s, f) for key, s, f in json.loads(self.process.stdout.readline())}

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def peak_in_flight(intervals: list[tuple[float, float]]) -> int:
    moments = sorted([(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals])
    count = peak = 0
    for _, change in moments:
        count += change
        peak = max(peak, count)
    return peak


# --- a 1,000-task run at 256 in flight -----------------------------------------------------------


def build(spec: Spec, llm: Any, max_concurrency: int, store: Any = "memory") -> Any:
    from crew import Agent, Crew, Task

    agent = Agent(role="Worker", goal="Do the task", llm=llm, board_tools=False)
    tasks = [
        Task(
            id=t,
            description=f"Do {t}. sleep_ms={ms}",
            agent=agent,
            depends_on=d,
            estimate_s=ms / 1000,
        )
        for t, (ms, d) in spec.items()
    ]
    return Crew(tasks, max_concurrency=max_concurrency, store=store)


def over_http(url: str) -> Any:
    """The model on the fake server, by the direct HTTP path."""
    from crew import LLM

    return LLM("openai/fake", api_base=url, api_key="sk-bench")


def run_crew(
    spec: Spec,
    llm: Any,
    max_concurrency: int,
    calls: Callable[[], dict[str, tuple[float, float]]],
    store: Any = "memory",
) -> dict[str, Any]:
    """Run ``spec`` and measure it; ``calls``: each task's call as (started, finished), on the
    perf_counter clock, since the last time it was asked."""
    from crew import events

    crew = build(spec, llm, max_concurrency, store)
    plan = crew.plan()
    in_flight = peak = 0

    def watch(event: events.Event) -> None:
        nonlocal in_flight, peak
        if isinstance(event, events.TaskStarted):
            in_flight += 1
            peak = max(peak, in_flight)
        elif isinstance(event, events.TaskFinished | events.TaskFailed):
            in_flight -= 1

    calls()  # forget earlier calls
    cpu = time.process_time()
    started = time.perf_counter()
    result = crew.run(on_event=watch)  # on the thread's loop, which keeps its connections
    ended = time.perf_counter()
    cpu = time.process_time() - cpu
    result.raise_for_status()
    seen = calls()
    return {
        "makespan_s": ended - started,
        "critical_s": plan.critical_path_s,  # the estimates are the latencies
        "peak_client": peak,
        "peak_model": peak_in_flight(list(seen.values())),
        "gaps": _last_chain_gaps(spec, seen, started),
        "tail_s": ended - max(f for _, f in seen.values()),
        "cpu_s": cpu,
    }


def scripted_calls(llm: Any) -> Callable[[], dict[str, tuple[float, float]]]:
    """The calls a ``ScriptedLLM`` answered since the last time, as ``Server.calls`` gives."""

    def calls() -> dict[str, tuple[float, float]]:
        seen = {call.task_id: (call.started, ended) for call, ended in llm.finished}
        llm.finished.clear()
        return seen

    return calls


def _last_chain_gaps(
    spec: Spec, calls: dict[str, tuple[float, float]], started: float
) -> list[float]:
    """Along the chain that ended last (from the last call, back through the dependency that
    answered last each time): the wait of each task after its last dependency's answer, the
    first one measured from the start of the run."""
    task = max(calls, key=lambda t: calls[t][1])
    gaps = []
    while True:
        deps = spec[task][1]
        if not deps:
            gaps.append(calls[task][0] - started)
            return gaps[::-1]
        last = max(deps, key=lambda d: calls[d][1])
        gaps.append(calls[task][0] - calls[last][1])
        task = last


async def hand_written(spec: Spec, url: str, max_concurrency: int, client: str) -> float:
    """The same graph as a hand-written program: each task awaits its dependencies' futures and
    a semaphore, then posts its request. ``client``: "httpx" (one client, httpx's default
    limits: 100 connections, 20 kept alive), "httpx/16" (clients of 16 connections, a call
    taking the first with one free) or "aiohttp" (one session, no connection limit, as crew's
    direct path)."""
    import aiohttp
    import httpx

    loop = asyncio.get_running_loop()
    done = {t: loop.create_future() for t in spec}
    gate = asyncio.Semaphore(max_concurrency)
    clients: dict[httpx.AsyncClient, int] = _CLIENTS.setdefault(client, {})
    if client == "aiohttp" and client not in _SESSIONS:
        _SESSIONS[client] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def take() -> httpx.AsyncClient:
        size = 16 if client == "httpx/16" else 100
        for each, calls in clients.items():
            if calls < size or client == "httpx":
                clients[each] = calls + 1
                return each
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=min(size, 20))
        made = httpx.AsyncClient(base_url=url + "/", limits=limits)  # the default: 100 and 20
        clients[made] = 1
        return made

    async def post(body: dict[str, Any]) -> None:
        if client == "aiohttp":
            async with _SESSIONS[client].post(url + "/chat/completions", json=body) as response:
                response.raise_for_status()
                await response.read()
            return
        each = take()
        try:
            (await each.post("chat/completions", json=body)).raise_for_status()
        finally:
            clients[each] -= 1

    async def run(task_id: str, ms: int, deps: list[str]) -> None:
        for dep in deps:
            await done[dep]
        async with gate:
            content = f"# Task: {task_id}\nsleep_ms={ms}"
            await post({"model": "fake", "messages": [{"role": "user", "content": content}]})
        done[task_id].set_result(None)

    started = time.perf_counter()
    await asyncio.gather(*(run(t, ms, deps) for t, (ms, deps) in spec.items()))
    return time.perf_counter() - started


_SESSIONS: dict[str, Any] = {}
_CLIENTS: dict[str, dict[Any, int]] = {}
"""The hand-written programs' aiohttp session and httpx clients (with their calls in flight),
kept from one run to the next on one loop (``report_run``'s), as crew's ``Crew.run`` keeps its
connections on its thread's loop."""


async def close_kept() -> None:
    for session in _SESSIONS.values():
        await session.close()
    for clients in _CLIENTS.values():
        for each in clients:
            await each.aclose()
    _SESSIONS.clear()
    _CLIENTS.clear()


def report_run(server: Server, rounds: int = 5) -> None:
    from crew.store import open_store
    from crew.testing import Reply, ScriptedLLM

    spec = branches(RUN_TASKS)
    http = over_http(server.url)
    run_crew(branches(50), http, 16, server.calls)  # warm up: imports, the connection pool
    scripted = ScriptedLLM(
        {t: Reply(text="done", delay_s=ms / 1000) for t, (ms, _) in spec.items()}
    )
    rows: dict[str, list[dict[str, Any]]] = {
        "in-process model": [],
        "fake server, HTTP": [],
        "  + SQLite store": [],
    }
    folder = tempfile.TemporaryDirectory()
    sqlite = open_store(f"{folder.name}/crew.db")  # the default store, opened once
    cpu_s: dict[str, list[float]] = {"httpx": [], "httpx/16": [], "aiohttp": []}
    floors: dict[str, list[float]] = {"httpx": [], "httpx/16": [], "aiohttp": []}
    kept = asyncio.Runner()  # one loop for the hand-written runs: their connections are kept
    for client in floors:  # warm up, as crew's warm-up run does
        kept.run(hand_written(branches(50), server.url, 16, client))
        server.calls()
    for _ in range(rounds):  # interleaved, so that noise hits all alike
        rows["in-process model"].append(
            run_crew(spec, scripted, CONCURRENCY, scripted_calls(scripted))
        )
        rows["fake server, HTTP"].append(run_crew(spec, http, CONCURRENCY, server.calls))
        rows["  + SQLite store"].append(
            run_crew(spec, http, CONCURRENCY, server.calls, store=sqlite)
        )
        for client, times in floors.items():
            cpu = time.process_time()
            times.append(kept.run(hand_written(spec, server.url, CONCURRENCY, client)))
            cpu_s[client].append(time.process_time() - cpu)
            server.calls()
    kept.run(close_kept())
    kept.close()
    sqlite.close()
    folder.cleanup()
    critical_s = rows["fake server, HTTP"][0]["critical_s"]
    print(
        f"\n{RUN_TASKS:,}-task unbalanced DAG, 50-200 ms per task, max_concurrency={CONCURRENCY},"
        f" critical path {critical_s:.3f} s (the median of {rounds} runs; ratio = makespan /"
        " critical path):"
    )
    print(
        f"  {'model':<20}{'makespan':>9}{'ratio':>7}{'each run':>27}{'started':>9}{'open':>6}"
        f"{'CPU/task':>10}   the chain that ended last"
    )
    for name, runs in rows.items():
        middle = sorted(runs, key=lambda r: r["makespan_s"])[len(runs) // 2]  # the median run
        ratios = "/".join(f"{r['makespan_s'] / r['critical_s']:.2f}" for r in runs)
        gaps = middle["gaps"]
        print(
            f"  {name:<20}{middle['makespan_s']:>8.3f}s{middle['makespan_s'] / critical_s:>7.3f}"
            f"{ratios:>27}{middle['peak_client']:>9}{middle['peak_model']:>6}"
            f"{middle['cpu_s'] / RUN_TASKS * 1000:>8.2f}ms   {len(gaps)} tasks, waits after a"
            f" dependency's answer: median {statistics.median(gaps[1:]) * 1000:.1f} ms, total"
            f" {sum(gaps[1:]) * 1000:.0f} ms; first request {gaps[0] * 1000:.0f} ms after the"
            f" start, run ended {middle['tail_s'] * 1000:.0f} ms after the last answer"
        )
    notes = {
        "httpx": "one client, httpx's default limits",
        "httpx/16": "httpx clients of 16 connections each",
        "aiohttp": "one session, no connection limit, as crew's direct path",
    }
    for client, times in floors.items():
        floor, cpu = statistics.median(times), statistics.median(cpu_s[client])
        print(
            f"  {'bare ' + client:<20}{floor:>8.3f}s{floor / critical_s:>7.3f}"
            f"{'/'.join(f'{f / critical_s:.2f}' for f in times):>27}{'':>15}"
            f"{cpu / RUN_TASKS * 1000:>8.2f}ms   (asyncio futures and a semaphore, no framework;"
            f" {notes[client]})"
        )
    print(
        "  started: most tasks started at once; open: most calls the model side held at once;"
        " CPU/task: this process's CPU time over the run, per task"
    )


# --- memory per task in flight -------------------------------------------------------------------


def memory_in_flight(
    llm: Any, calls: Callable[[], dict[str, tuple[float, float]]], count: int, hold_ms: int
) -> tuple[int, int]:
    """(live Python bytes, by tracemalloc, minus those just before the run; calls open) while
    ``count`` independent tasks are in flight, held by the model for ``hold_ms``."""
    from crew import events

    spec: Spec = {f"m{i}": (hold_ms, []) for i in range(count)}
    crew = build(spec, llm, count)
    crew.plan()
    all_started = asyncio.Event()
    seen = 0

    def watch(event: events.Event) -> None:
        nonlocal seen
        if isinstance(event, events.TaskStarted):
            seen += 1
            if seen == count:
                all_started.set()

    async def main() -> tuple[int, float]:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        run = asyncio.create_task(crew.arun(on_event=watch))
        await all_started.wait()
        await asyncio.sleep(hold_ms / 4000)  # every call made, none answered
        gc.collect()
        live, moment = tracemalloc.get_traced_memory()[0] - base, time.perf_counter()
        (await run).raise_for_status()
        return live, moment

    calls()
    live, moment = asyncio.run(main())
    return live, sum(1 for s, f in calls().values() if s <= moment <= f)


def report_memory(server: Server, hold_ms: int = 4000) -> None:
    from crew.testing import ScriptedLLM

    scripted = ScriptedLLM(delay_s=hold_ms / 1000)
    models = {
        "in-process model": (scripted, scripted_calls(scripted)),
        "fake server, HTTP": (over_http(server.url), server.calls),
    }
    half = CONCURRENCY // 2
    print(
        f"\nmemory per task in flight (live Python memory by tracemalloc; independent tasks held"
        f" {hold_ms} ms by the model):"
    )
    for name, (llm, calls) in models.items():
        memory_in_flight(llm, calls, 16, hold_ms=200)  # warm up: every import, the pool
        tracemalloc.start()
        try:
            small = memory_in_flight(llm, calls, half, hold_ms)
            large = memory_in_flight(llm, calls, CONCURRENCY, hold_ms)
        finally:
            tracemalloc.stop()
        print(
            f"  {name:<20}{large[0] / CONCURRENCY / 1024:6.1f} KiB per task with {CONCURRENCY} in"
            f" flight ({large[1]} calls open at the model); each task from {half} to"
            f" {CONCURRENCY}: {(large[0] - small[0]) / half / 1024:.1f} KiB"
        )


def main() -> None:
    report_planning()
    server = Server()
    try:
        report_run(server)
        report_memory(server)
    finally:
        server.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    elif sys.argv[1:2] == ["--plan-child"]:
        plan_child()
    elif sys.argv[1:2] == ["--plan"]:
        report_planning()
    elif sys.argv[1:2] == ["--run"]:
        server = Server()
        try:
            report_run(server)
        finally:
            server.close()
    else:
        main()
