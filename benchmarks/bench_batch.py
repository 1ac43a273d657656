"""Batches: the local executor against the Dask executor, and the resume of a killed batch.

    python benchmarks/bench_batch.py                  # 1,000 inputs; a few minutes
    python benchmarks/bench_batch.py --inputs 100     # smaller, for a quick look

A 5-task crew (three tasks in parallel, then two in a row) runs once per input against the fake
OpenAI-compatible server, in a process of its own, answering every call after 200 ms: a run
takes three calls' time at least (0.6 s). Runs are stored in PostgreSQL (``--store``, else
``CREW_TEST_POSTGRES_URL``, else the local socket), a fresh schema per measurement.

- **Throughput**: the local executor (``--threads`` x 4 runs at once, one process and event
  loop), then the Dask executor on a LocalCluster of 1, 2 and 4 worker processes of
  ``--threads`` threads each (one run a thread): runs per second over the whole batch (the
  cluster's start included) and from the first result on.
- **Memory**: the peak RSS of each worker process (sampled every 0.2 s), and of this process.
- **Saturation**: the CPU time the fake server and the workers used, against the batch's wall
  time and the machine's cores: which of the two limits the throughput.
- **Resume**: a batch on 2 workers in a child process, killed with SIGKILL (it and its
  workers) once half its runs have succeeded, then run again with the same batch id: the time
  it takes, the runs it skipped, resumed and started, and the calls it made.

One run of each, on whatever else the machine is doing: figures from a shared machine move.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crew import LLM, Agent, Crew, Task
from crew.batch import BatchItem, checked

LATENCY_MS = 200
TASKS = ("part0", "part1", "part2", "join", "last")


def five_tasks(api_base: str, store: str) -> Crew:
    llm = LLM("openai/fake", api_base=api_base, api_key="sk-bench", timeout_s=60)
    agent = Agent(role="Analyst", goal="Know {topic}", backstory="Careful.", llm=llm)
    parts = [Task(id=f"part{n}", description="Study {topic}", agent=agent) for n in range(3)]
    join = Task(id="join", description="Join the parts on {topic}", agent=agent, depends_on=parts)
    last = Task(id="last", description="Conclude on {topic}", agent=agent, depends_on=[join])
    return Crew(tasks=[*parts, join, last], store=store, max_concurrency=3)


def items_for(crew: Crew, count: int, batch_id: str) -> list[BatchItem]:
    rows = [(line, {"topic": f"topic-{line}"}) for line in range(1, count + 1)]
    return checked(rows, crew, batch_id=batch_id)


@contextlib.contextmanager
def fake_server() -> Iterator[tuple[str, int]]:
    """The fake server in its own process: its URL and pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "crew.testserver", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--latency-ms", str(LATENCY_MS)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def fresh_store(base: str) -> Iterator[str]:
    """A PostgreSQL schema of its own, dropped afterwards."""
    import psycopg

    schema = f"crew_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class Sampler:
    """Peak RSS of this process's worker processes, and CPU times, sampled in a thread."""

    def __init__(self, server_pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.server = psutil.Process(server_pid)
        self.peaks: dict[int, float] = {}
        self.cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Sampler:
        self.server_cpu_s = sum(self.server.cpu_times()[:2])
        self.own_cpu_s = time.process_time()
        self.machine = self._psutil.cpu_times()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.server_cpu_s = sum(self.server.cpu_times()[:2]) - self.server_cpu_s
        self.own_cpu_s = time.process_time() - self.own_cpu_s
        now = self._psutil.cpu_times()
        busy = [n - b for n, b in zip(now, self.machine, strict=True)]
        idle = now.idle - self.machine.idle
        self.machine_busy = 1 - idle / max(sum(busy), 1e-9)

    def _sample(self) -> None:
        psutil = self._psutil
        while not self._stop.wait(0.2):
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "spawn_main" not in " ".join(child.cmdline()):
                        continue  # the resource tracker
                    rss_mb = child.memory_info().rss / 2**20
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), rss_mb)
                    self.cpu_s[child.pid] = sum(child.cpu_times()[:2])


def measure(
    name: str, crew: Crew, items: list[BatchItem], server_pid: int, **options: Any
) -> dict[str, Any]:
    from crew import batch_local
    from crew.batch_dask import run_batch_on_dask

    first: list[float] = []

    def seen(_: object) -> None:
        if not first:
            first.append(time.perf_counter())

    with Sampler(server_pid) as sampler:
        start = time.perf_counter()
        if name == "local":
            results = asyncio.run(
                batch_local.run_batch(
                    crew, items, batch_id=items[0].run_id.rsplit("-", 1)[0], on_result=seen,
                    concurrency=options["concurrency"],
                )
            )  # fmt: skip
        else:
            results = asyncio.run(
                run_batch_on_dask(
                    crew, items, batch_id="bench", address=None, on_result=seen, **options
                )
            )
        wall_s = time.perf_counter() - start
    failed = sum(r.status != "succeeded" for r in results)
    return {
        "name": name,
        "wall_s": wall_s,
        "runs_per_s": len(items) / wall_s,
        "steady_runs_per_s": (len(items) - 1) / max(time.perf_counter() - first[0], 1e-9)
        if len(items) > 1
        else 0.0,
        "failed": failed,
        "worker_peaks_mb": sorted(sampler.peaks.values()),
        "workers_cpu_s": sum(sampler.cpu_s.values()),
        "own_cpu_s": sampler.own_cpu_s,
        "server_cpu_s": sampler.server_cpu_s,
        "machine_busy": sampler.machine_busy,
    }


def resume(api_base: str, store: str, count: int, threads: int) -> dict[str, Any]:
    """Kill a 2-worker batch halfway (SIGKILL, its workers too), then time its rerun."""
    from crew.batch_dask import run_batch_on_dask
    from crew.store import open_store

    batch_id = "resumed"
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", api_base, store, str(count), str(threads)],
        start_new_session=True,
    )
    watch = open_store(store)
    ids = [f"{batch_id}-{line}" for line in range(1, count + 1)]

    def statuses() -> dict[str, str]:
        runs = (watch.get_run(run_id) for run_id in ids)
        return {r.run_id: r.status for r in runs if r is not None}

    while sum(s == "succeeded" for s in statuses().values()) < count // 2:
        if child.poll() is not None:
            raise SystemExit("the batch to kill ended before half its runs were done")
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    time.sleep(0.5)  # the workers' sockets close
    before = statuses()
    done = {run_id for run_id, status in before.items() if status == "succeeded"}
    middle = set(before) - done
    kept = sum(
        r.status == "succeeded" for run_id in before for r in watch.task_records(run_id)
    )  # tasks whose output the rerun finds: it calls each of the others once
    crew = five_tasks(api_base, store)
    items = items_for(crew, count, batch_id)
    start = time.perf_counter()
    results = asyncio.run(
        run_batch_on_dask(
            crew, items, batch_id=batch_id, address=None, concurrency=2 * threads, workers=2
        )
    )
    wall_s = time.perf_counter() - start
    watch.close()
    return {
        "wall_s": wall_s,
        "done_before": len(done),
        "resumed": len(middle),
        "started": count - len(before),
        "failed": sum(r.status != "succeeded" for r in results),
        "calls": len(TASKS) * count - kept,
    }


def child(api_base: str, store: str, count: int, threads: int) -> None:
    from crew.batch_dask import run_batch_on_dask

    crew = five_tasks(api_base, store)
    items = items_for(crew, count, "resumed")
    asyncio.run(
        run_batch_on_dask(
            crew, items, batch_id="resumed", address=None, concurrency=2 * threads, workers=2
        )
    )


def report(rows: list[dict[str, Any]], count: int) -> None:
    print(f"\n{count} inputs x 5 tasks, {LATENCY_MS} ms a call, {os.cpu_count()} cores")
    print(
        f"{'executor':<14}{'wall s':>8}{'runs/s':>8}{'steady':>8}{'failed':>7}"
        f"{'worker RSS MB':>16}{'server CPU':>12}{'crew CPU':>10}{'busy':>6}"
    )
    for row in rows:
        peaks = row["worker_peaks_mb"]
        rss = f"{max(peaks):.0f} max" if peaks else "-"
        crew_cpu = row["workers_cpu_s"] + row["own_cpu_s"]
        print(
            f"{row['name']:<14}{row['wall_s']:>8.1f}{row['runs_per_s']:>8.1f}"
            f"{row['steady_runs_per_s']:>8.1f}{row['failed']:>7}{rss:>16}"
            f"{row['server_cpu_s'] / row['wall_s']:>11.0%} {crew_cpu / row['wall_s']:>9.0%}"
            f"{row['machine_busy']:>6.0%}"
        )
    print(
        "server CPU: the fake server's CPU time over the wall time (100% = one core, its only"
        " one); crew CPU: this process's and the workers' (100% = one core); busy: the whole"
        " machine's cores busy, other users included."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1000, help="inputs per batch (1000)")
    parser.add_argument("--threads", type=int, default=8, help="threads per Dask worker (8)")
    parser.add_argument("--workers", default="1,2,4", help="Dask worker counts (1,2,4)")
    parser.add_argument("--store", default=os.environ.get("CREW_TEST_POSTGRES_URL"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        api_base, store, count, threads = args.child
        child(api_base, store, int(count), int(threads))
        return
    base = args.store or "postgresql://postgres@/test?host=/var/run/postgresql"
    count, threads = args.inputs, args.threads
    rows = []
    with fake_server() as (api_base, server_pid):
        with fresh_store(base) as store:
            crew = five_tasks(api_base, store)
            rows.append(
                measure("local", crew, items_for(crew, count, "local"), server_pid,
                        concurrency=4 * threads)
            )  # fmt: skip
            crew.store.close()
        local_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for workers in (int(w) for w in args.workers.split(",")):
            with fresh_store(base) as store:
                crew = five_tasks(api_base, store)
                rows.append(
                    measure(f"dask {workers}x{threads}", crew, items_for(crew, count, "bench"),
                            server_pid, concurrency=workers * threads, workers=workers)
                )  # fmt: skip
                crew.store.close()
        report(rows, count)
        print(f"peak RSS of this process (the local executor's runs, then the clients): "
              f"{local_rss_mb:.0f} MB")  # fmt: skip
        with fresh_store(base) as store:
            resumed = resume(api_base, store, count, threads)
    print(
        f"\nresume of a batch killed halfway (2x{threads} Dask workers): {resumed['wall_s']:.1f} s"
        f" for {resumed['done_before']} runs done before the kill (skipped),"
        f" {resumed['resumed']} in the middle (resumed from their checkpoints) and"
        f" {resumed['started']} not started; {resumed['calls']} tasks without a stored output;"
        f" {resumed['failed']} failed"
    )


if __name__ == "__main__":
    main()
