"""crew beside a no-framework baseline, on every model path and store, in one run (issue #12).

    python benchmarks/bench_peers.py              # 3 rounds; takes 5-8 minutes
    python benchmarks/bench_peers.py --runs 9 --paths direct --graphs chain0   # store costs only

The fake OpenAI-compatible server runs in its own process, as a real provider would, and answers
each request after the number of milliseconds its prompt names (``sleep_ms=N``). The baseline is
the program anyone would write without a framework: a thread per task that waits for its
dependencies' events, then posts with ``urllib``. crew runs the same graphs with ``Crew.run``,
on the direct path (aiohttp) and through litellm (``CREW_LLM_CLIENT=litellm``), on each store:
memory, SQLite (a new file) and PostgreSQL (``CREW_TEST_POSTGRES_URL``, in a schema of its own
that is dropped at the end; skipped with a line if unreachable).

Each configuration runs in a fresh child process, so its imports and peak RSS are its own, and
``--runs`` rounds each start every configuration once, in turn, so that other work on the
machine weighs on them alike; each figure is the median of the rounds. A child's first act is a
cold run: one task, timed from the parent spawning the child to the request reaching the server
(the server's clock; ``time.perf_counter`` is the system's monotonic clock) and to the run's
end. Then the graphs, each three times in a row (the 0 ms chain five times), the median kept: the
first run of a graph pays for the connections it is the first to need (crew keeps them for the
process's later runs; the baseline's urllib connects for every call):

- a 32-wide fan-out (root -> 32 -> join, 100 ms tasks) and an unbalanced 40-task DAG (50-400
  ms tasks): makespan / critical path (the sum of the latencies along the longest path);
- a chain of 10 tasks of 100 ms: the same ratio;
- a chain of 50 tasks of 0 ms: milliseconds per task (the call's round trip included), and for
  each store the milliseconds it adds over the memory store on the same path.

The issue's targets are printed beside the figures, as is the machine's load average: figures
taken with a load above the core count are inflated by other work. One committed INSERT in the
PostgreSQL server is timed too: each durable task commit pays at least that WAL flush.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
_SLEEP = re.compile(r"sleep_ms=(\d+)")
_COLD = re.compile(r"cold=(\w+)")
Spec = dict[str, tuple[int, list[str]]]
"""task id -> (latency ms, dependency ids)"""

SCHEMA = "crew_bench_peers"
PATHS = ("direct", "litellm")
STORES = ("memory", "sqlite", "postgresql")


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
    branches = []
    for b, length in enumerate([12, 9, 7, 5, 3, 2]):  # 38 tasks + root + join = 40
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


GRAPHS = {
    "fanout": fan_out(),
    "dag40": unbalanced(),
    "chain10": chain(10, 100),
    "chain0": chain(50, 0),
}


def critical_s(spec: Spec) -> float:
    """The sum of the latencies along the longest path."""
    finish: dict[str, float] = {}

    def end(task_id: str) -> float:
        if task_id not in finish:
            ms, deps = spec[task_id]
            finish[task_id] = ms / 1000 + max((end(dep) for dep in deps), default=0.0)
        return finish[task_id]

    return max(end(task_id) for task_id in spec)


# -- the server's process ------------------------------------------------------------------


def serve() -> None:
    """Run the fake server in this process; print its URL, then answer each line read on stdin
    (a cold run's tag) with the time its first request arrived."""
    sys.path.insert(0, str(ROOT))
    from crew.testserver import FakeOpenAIServer, ServerReply

    firsts: dict[str, float] = {}

    def reply(body: dict[str, Any]) -> ServerReply:
        prompt = " ".join(str(m.get("content")) for m in body["messages"] if m["role"] == "user")
        if cold := _COLD.search(prompt):
            firsts.setdefault(cold.group(1), time.perf_counter())
        found = _SLEEP.search(prompt)
        return ServerReply(text="done", latency_ms=float(found.group(1)) if found else 0.0)

    server = FakeOpenAIServer()
    server.default = reply
    server.start()
    print(server.url, flush=True)
    for line in sys.stdin:
        print(firsts.get(line.strip(), float("nan")), flush=True)


# -- a child: one configuration, in a fresh process ----------------------------------------


def _post(url: str, prompt: str) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": prompt}]}
    request = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        json.loads(response.read())


def _baseline(url: str) -> Any:
    """Runs a graph as a thread per task that waits for its dependencies, then posts."""

    def run_graph(spec: Spec, tag: str = "") -> float:
        done = {task_id: threading.Event() for task_id in spec}

        def one(task_id: str, ms: int, deps: list[str]) -> None:
            for dep in deps:
                done[dep].wait()
            _post(url, f"# Task: {task_id}\nDo {task_id}. sleep_ms={ms}{tag}")
            done[task_id].set()

        threads = [threading.Thread(target=one, args=(t, ms, d)) for t, (ms, d) in spec.items()]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    return run_graph


def _crew(url: str, path: str, store_url: str) -> Any:
    """Runs a graph as a crew on one model path and one store (opened once, as a service
    would)."""
    sys.path.insert(0, str(ROOT))
    from crew import LLM, Agent, Crew, Task
    from crew.store import open_store

    client: Literal["auto", "litellm"] = "litellm" if path == "litellm" else "auto"
    llm = LLM("openai/fake", api_base=url, api_key="sk-bench", client=client)
    agent = Agent(role="Worker", goal="Do the task", llm=llm, board_tools=False)
    store = open_store(store_url)

    def run_graph(spec: Spec, tag: str = "") -> float:
        tasks = [
            Task(id=t, description=f"Do {t}. sleep_ms={ms}{tag}", agent=agent, depends_on=deps)
            for t, (ms, deps) in spec.items()
        ]
        crew = Crew(tasks, max_concurrency=64, store=store)
        started = time.perf_counter()
        crew.run().raise_for_status()
        return time.perf_counter() - started

    return run_graph


def child(config: str, url: str, graphs: list[str]) -> None:
    """Measure one configuration (``baseline`` or ``PATH:STORE_URL``); print JSON."""
    tag = f" cold={os.getpid()}"
    if config == "baseline":
        run_graph = _baseline(url)
    else:
        path, store_url = config.split(":", 1)
        run_graph = _crew(url, path, store_url)
    run_graph({"hello": (0, [])}, tag)
    figures: dict[str, Any] = {"cold_end": time.perf_counter(), "cold_tag": str(os.getpid())}
    run_graph(chain(5, 0))  # warm up: connections, caches
    for name in graphs:
        cpu = time.process_time()
        runs = 5 if name == "chain0" else 3
        figures[name] = statistics.median(run_graph(GRAPHS[name]) for _ in range(runs))
        figures[f"{name}_cpu"] = (time.process_time() - cpu) / runs
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["litellm"] = "litellm" in sys.modules
    print(json.dumps(figures))


# -- the parent ----------------------------------------------------------------------------


def _postgres(url: str) -> tuple[str | None, str]:
    """The URL of a schema of its own in the server at ``url`` (None if unreachable), and what
    one committed INSERT takes there (or why it is not measured)."""
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(f"CREATE TABLE {SCHEMA}.flush (n int)")
            times = []
            for n in range(200):
                started = time.perf_counter()
                conn.execute(f"INSERT INTO {SCHEMA}.flush VALUES (%s)", (n,))
                times.append(time.perf_counter() - started)
            conn.execute(f"DROP TABLE {SCHEMA}.flush")
    except Exception as exc:  # no driver or no server: say so, measure the others
        return None, f"PostgreSQL not measured: {type(exc).__name__}: {' '.join(str(exc).split())}"
    median_ms, best_ms = statistics.median(times) * 1000, min(times) * 1000
    flush = (
        f"PostgreSQL: one committed INSERT (its WAL flush) takes {median_ms:.2f} ms in median,"
        f" {best_ms:.2f} ms at best, over 200"
    )
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{SCHEMA}", flush


def _drop_schema(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def _measure(
    config: str, server: subprocess.Popen[str], args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", config, args.url]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, ",".join(args.graphs)], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode:
        raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert server.stdin and server.stdout
    server.stdin.write(figures["cold_tag"] + "\n")
    server.stdin.flush()
    figures["cold_first_ms"] = (float(server.stdout.readline()) - started) * 1000
    figures["cold_end_ms"] = (figures["cold_end"] - started) * 1000
    return figures


def _table(columns: list[str], results: dict[str, list[dict[str, Any]]], graphs: list[str]) -> None:
    keys = [*graphs, "chain0_cpu", "cold_first_ms", "cold_end_ms", "rss_mb"]
    keys = [key for key in keys if key in results[columns[0]][0]]
    med = {c: {k: statistics.median(r[k] for r in results[c]) for k in keys} for c in columns}
    rows = [("", [c.replace(":", " / ") for c in columns], "target")]
    for graph, label in (
        ("fanout", "32-wide fan-out"),
        ("dag40", "unbalanced 40-task DAG"),
        ("chain10", "chain of 10 x 100 ms"),
    ):
        if graph in graphs:
            ratios = [med[c][graph] / critical_s(GRAPHS[graph]) for c in columns]
            target = "" if graph == "chain10" else f"<= {ratios[0] + 0.03:.3f} (baseline + 0.03)"
            rows.append(
                (f"{label}, makespan / critical path", [f"{r:.3f}" for r in ratios], target)
            )
    if "chain0" in graphs:
        per_task = {c: med[c]["chain0"] / 50 * 1000 for c in columns}
        rows.append(
            ("0 ms chain of 50, ms per task", [f"{v:.2f}" for v in per_task.values()], "<= 2.0")
        )
        over = []
        for c in columns:
            memory = c.split(":", 1)[0] + ":memory"
            shown = c != "baseline" and memory in per_task and c != memory
            over.append(f"{per_task[c] - per_task[memory]:+.2f}" if shown else "")
        rows.append(("  store over memory (same path), ms per task", over, "PostgreSQL <= 1.0"))
        cpu = [f"{med[c]['chain0_cpu'] / 50 * 1000:.2f}" for c in columns]
        rows.append(("  CPU of the process per task, ms (less hit by load)", cpu, ""))
    for key, label, target, digits in (
        ("cold_first_ms", "cold first run: ms to the first request", "<= 500", 0),
        ("cold_end_ms", "cold first run: ms to its end", "", 0),
        ("rss_mb", "peak RSS, MB", "<= 120 (direct)", 0),
    ):
        rows.append((label, [f"{med[c][key]:.{digits}f}" for c in columns], target))
    imported = ["yes" if any(r["litellm"] for r in results[c]) else "no" for c in columns]
    rows.append(("litellm imported", imported, ""))
    for i, (label, values, target) in enumerate(rows):
        print(f"| {label} | {' | '.join(values)} | {target} |")
        if not i:
            print("|---" * (len(columns) + 2) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians shown)")
    parser.add_argument("--paths", default=",".join(PATHS), help="of: " + ",".join(PATHS))
    parser.add_argument("--stores", default=",".join(STORES), help="of: " + ",".join(STORES))
    parser.add_argument("--graphs", default=",".join(GRAPHS), help="of: " + ",".join(GRAPHS))
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CREW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"),
        help="the PostgreSQL server (default: CREW_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args()
    args.graphs = args.graphs.split(",")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CREW_", "OPENAI_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env |= {"PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load} ({os.cpu_count()} cores); medians of {args.runs} rounds")
    with tempfile.TemporaryDirectory() as folder:
        # crew's bytecode, cached as an installed package's is (pip compiles it), out of the tree
        env["PYTHONPYCACHEPREFIX"] = f"{folder}/pycache"
        compileall = [sys.executable, "-m", "compileall", "-q", str(ROOT / "crew")]
        subprocess.run(compileall, env=env, check=True, capture_output=True)
        stores = {"memory": "memory", "sqlite": f"{folder}/crew.db"}
        postgres = None
        if "postgresql" in args.stores.split(","):
            postgres, line = _postgres(args.postgres)
            print(line)
            if postgres:
                stores["postgresql"] = postgres
        columns = ["baseline"] + [
            f"{path}:{store}"
            for path in args.paths.split(",")
            for store in args.stores.split(",")
            if store in stores
        ]
        serve = [sys.executable, __file__, "--serve"]
        pipe = subprocess.PIPE
        server = subprocess.Popen(serve, stdin=pipe, stdout=pipe, text=True, env=env)
        try:
            assert server.stdout
            args.url = server.stdout.readline().strip()
            results: dict[str, list[dict[str, Any]]] = {column: [] for column in columns}
            for _ in range(args.runs):
                for column in columns:
                    path, _, store = column.partition(":")
                    child_env = env | ({"CREW_LLM_CLIENT": "litellm"} if path == "litellm" else {})
                    config = "baseline"
                    if store:  # SQLite: a file for each path
                        config = f"{path}:{stores[store].replace('crew.db', f'{path}.db')}"
                    results[column].append(_measure(config, server, args, child_env))
        finally:
            server.kill()
            server.wait()
            if postgres:
                _drop_schema(args.postgres)
    print()
    _table(columns, results, args.graphs)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve()
    elif sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4].split(","))
    else:
        main()
