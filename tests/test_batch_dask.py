"""The dask executor of crew batch: real LocalClusters of worker processes on 127.0.0.1, the fake
server, and the PostgreSQL store (or a SQLite file, on one machine)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cloudpickle
import psutil
import pytest

from crew import LLM, Agent, Crew, Task, tool
from crew.batch import BatchItem, BatchResult
from crew.events import RunStarted
from crew.store import open_store
from crew.store.postgres import PostgresStore
from crew.store.sqlite import SQLiteStore
from crew.testserver import FakeOpenAIServer, ServerReply

dask = pytest.importorskip("distributed")
batch_dask = pytest.importorskip("crew.batch_dask")

_TOPIC = re.compile(r"topic-(\d+)")


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


def five_tasks(llm: LLM, store: object, tools: Sequence[object] = ()) -> Crew:
    """Three tasks in parallel, then two in a row, as in the benchmark."""
    agent = Agent(role="Analyst", goal="Know {topic}", backstory="Careful.", llm=llm, tools=tools)
    first = [Task(id=f"part{n}", description="Study {topic}", agent=agent) for n in range(3)]
    join = Task(id="join", description="Join the parts on {topic}", agent=agent, depends_on=first)
    last = Task(id="last", description="Conclude on {topic}", agent=agent, depends_on=[join])
    return Crew(tasks=[*first, join, last], store=store)  # type: ignore[arg-type]


def items(count: int, batch_id: str) -> list[BatchItem]:
    return [
        BatchItem(line, {"topic": f"topic-{line}"}, f"{batch_id}-{line}") for line in range(count)
    ]


def batch(crew: Crew, work: Sequence[BatchItem], **options: object) -> list[BatchResult]:
    seen: list[BatchResult] = []
    options = {"address": None, "concurrency": 4, "workers": 2, **options}
    results = asyncio.run(
        batch_dask.run_batch_on_dask(
            crew,
            work,
            batch_id="b",
            on_result=seen.append,
            **options,  # type: ignore[arg-type]
        )
    )
    assert sorted(r.line for r in seen) == [item.line for item in work]  # each told once
    return results


def line_of(call: object) -> int:
    found = _TOPIC.search(str(call.body["messages"]))  # type: ignore[attr-defined]
    assert found is not None
    return int(found.group(1))


def test_import_crew_loads_no_dask() -> None:
    code = "import crew, sys; print(sorted({'dask', 'distributed'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_crew_with_tools_and_an_opened_store_pickles_and_reopens_its_store(
    tmp_path: Path, postgres_url: str
) -> None:
    llm = LLM("openai/fake", api_base="http://127.0.0.1:9/v1", api_key="sk-test", max_rpm=10)
    for url, kind in ((str(tmp_path / "crew.db"), SQLiteStore), (postgres_url, PostgresStore)):
        crew = five_tasks(llm, url, tools=[word_count])
        crew.plan({"topic": "x"})
        crew.store.create_run("r1", crew="c", inputs={}, task_ids=["part0"], source="")
        copy = cloudpickle.loads(cloudpickle.dumps(crew))
        assert isinstance(copy.store, kind) and copy.store is not crew.store
        assert copy.store.get_run("r1") is not None  # the same database, its own connection
        assert [t.id for t in copy.tasks] == [t.id for t in crew.tasks]
        assert copy.agents[0].llm == llm
        assert [t.name for t in copy.agents[0].tools] == ["word_count"]
        crew.store.close()
        copy.store.close()


def test_the_local_cluster_listens_on_loopback_only() -> None:
    async def listening() -> tuple[str, dict[str, int], set[str]]:
        async with batch_dask._client(None, 4, 2) as client:
            pids = await client.run(os.getpid)
            processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
            bound = {
                c.laddr.ip
                for p in processes
                for c in p.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            }
            return client.scheduler.address, pids, bound

    scheduler, workers, bound = asyncio.run(listening())
    assert scheduler.startswith("tcp://127.0.0.1:")
    assert len(workers) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in workers)
    assert bound == {"127.0.0.1"}


def test_a_batch_runs_on_worker_processes_with_postgres(server: FakeOpenAIServer, postgres_url):
    server.default = ServerReply(text="fine", latency_ms=20)
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test")
    crew = five_tasks(llm, postgres_url)
    started: list[object] = []
    results = batch(crew, items(6, "pg"), on_event=started.append)
    assert [r.line for r in results] == list(range(6))
    assert sorted(e.run_id for e in started if isinstance(e, RunStarted)) == [
        f"pg-{n}" for n in range(6)
    ]  # each run's start, told as its task starts on a worker (the view counts them)
    assert {r.status for r in results} == {"succeeded"}
    assert sorted({(line_of(c), c.key) for c in server.calls}) == sorted(
        (line, task) for line in range(6) for task in ("part0", "part1", "part2", "join", "last")
    )
    store = open_store(postgres_url)
    assert {store.get_run(f"pg-{n}").status for n in range(6)} == {"succeeded"}  # type: ignore[union-attr]
    server.reset()
    again = batch(crew, items(6, "pg"))  # the same batch again: every run is done
    assert {r.status for r in again} == {"succeeded"} and server.calls == []
    store.close()


def test_crew_batch_on_dask_with_a_sqlite_file_on_this_machine(server, tmp_path: Path) -> None:
    def reply(body: dict[str, object]) -> ServerReply:
        if "topic-3" in str(body["messages"]):
            return ServerReply(status=400, error="This request is malformed.")
        return ServerReply(text="fine")

    server.default = reply
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test")
    crew = five_tasks(llm, str(tmp_path / "crew.db"))
    topics = [{"topic": f"topic-{n}"} for n in range(1, 5)]
    results = crew.batch(topics, executor="dask", concurrency=4, batch_id="lite")
    assert [(r.line, r.run_id, r.status) for r in results] == [
        (n, f"lite-{n}", "failed" if n == 3 else "succeeded") for n in range(1, 5)
    ]  # a failed run is its input's result; the others go on
    assert "malformed" in str(results[2].error)
    assert {line_of(c) for c in server.calls if c.status == 200} == {1, 2, 4}


def test_the_leads_example_runs_as_a_batch_on_dask_with_postgres(server, postgres_url, tmp_path):
    from tests.test_batch import EXAMPLES, crew_cli
    from tests.test_examples import answer

    server.default = answer
    done = crew_cli(
        "batch", str(EXAMPLES / "leads"), "--inputs", str(EXAMPLES / "leads" / "leads.jsonl"),
        "--executor", "dask", "--out", "scores.jsonl", "--json", "--concurrency", "4",
        cwd=tmp_path, server=server, CREW_STORE=postgres_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["counts"] == {"succeeded": 5}
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [s["line"] for s in scores] == [1, 2, 3, 4, 5]
    assert all(set(s["output"]) == {"score", "reason"} for s in scores)  # its output model's
    assert len(server.calls) == 15


def test_a_python_crew_file_and_its_tools_go_to_the_workers_by_value(server, tmp_path: Path):
    from tests.test_batch import EXAMPLES, crew_cli, write
    from tests.test_examples import answer

    server.default = answer
    write(tmp_path, "in.jsonl", '{"topic": "Lisbon"}\n{"topic": "Porto"}\n')
    done = crew_cli(
        "batch", str(EXAMPLES / "quickstart.py"), "--inputs", "in.jsonl", "--executor", "dask",
        "--json", cwd=tmp_path, server=server, CREW_STORE=str(tmp_path / "crew.db"),
    )  # fmt: skip
    # The file runs as module _crew_file_quickstart, which no worker could import.
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}


def test_max_rpm_holds_across_two_worker_processes(server: FakeOpenAIServer, tmp_path: Path):
    server.default = ServerReply(text="fine", latency_ms=10)
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test", max_rpm=3)
    agent = Agent(role="Counter", goal="Count {topic}", backstory="Exact.", llm=llm)
    crew = Crew(tasks=[Task(id="count", description="Count {topic}", agent=agent)],
                store=str(tmp_path / "crew.db"))  # fmt: skip
    window_s = 2.0
    results = batch(crew, items(9, "rpm"), concurrency=8, workers=2, rate_window_s=window_s)
    assert {r.status for r in results} == {"succeeded"}
    starts = sorted(call.started for call in server.calls)
    assert len(starts) == 9
    # Any 4 starts span a window (each worker alone would have let 3 + 3 start at once), less
    # the time from the scheduler's go to the server, longer for a worker's first call (imports).
    spans = [later - earlier for earlier, later in zip(starts, starts[3:], strict=False)]
    assert min(spans) >= window_s - 0.5, spans
    assert starts[-1] - starts[0] >= 2 * window_s - 0.5


def test_the_schedulers_limiter_counts_a_calls_real_tokens_once_it_answers() -> None:
    shared = batch_dask.SharedLimits(window_s=60.0)
    key = ["openai/fake", None]

    async def second_call_after_the_first_settles() -> dict[str, object]:
        first = await shared.acquire(key, None, 100, 80)
        shared.settle(key, first["id"], 10)  # it used 10 tokens, not the 80 it reserved
        return await asyncio.wait_for(shared.acquire(key, None, 100, 80), 5)

    # 10 + 80 fit in 100 tokens a minute; unsettled, 80 + 80 would wait for the window.
    assert asyncio.run(second_call_after_the_first_settles())["waited_s"] == 0


@pytest.mark.slow
def test_a_lost_workers_runs_resume_on_another_worker_from_their_checkpoints(
    server: FakeOpenAIServer, postgres_url: str
) -> None:
    server.default = ServerReply(text="fine", latency_ms=300)
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test")
    crew = five_tasks(llm, postgres_url)
    store = open_store(postgres_url)
    work = items(10, "lost")
    seen: list[BatchResult] = []

    def committed(before: float = float("inf")) -> dict[int, set[str]]:
        done: dict[int, set[str]] = {}
        for item in work:
            records = store.task_records(item.run_id)
            done[item.line] = {
                r.task_id
                for r in records
                if r.status == "succeeded" and (r.started_at or 0.0) < before
            }
        return done

    async def scenario() -> tuple[list[BatchResult], float, float, set[int]]:
        async with (
            dask.LocalCluster(
                n_workers=2, threads_per_worker=3, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", asynchronous=True,
            ) as cluster,
            dask.Client(cluster, asynchronous=True) as client,
        ):  # fmt: skip
            pids = await client.run(os.getpid)
            running = asyncio.create_task(
                batch_dask.run_batch_on_dask(
                    crew, work, batch_id="lost", address=cluster.scheduler_address,
                    concurrency=6, on_result=seen.append,
                )
            )  # fmt: skip
            while True:  # until a worker holds a run with some tasks done and some not
                await asyncio.sleep(0.05)
                assert not running.done()
                processing = await client.processing()
                done = committed()
                victims = [
                    (worker, {int(key.rsplit("-", 1)[1]) for key in keys})
                    for worker, keys in processing.items()
                    if any(0 < len(done[int(k.rsplit("-", 1)[1])]) < 5 for k in keys)
                ]
                if victims:
                    break
            worker, its_lines = victims[0]
            os.kill(pids[worker], signal.SIGKILL)
            killed_at, killed_wall = time.perf_counter(), time.time()
            return await running, killed_at, killed_wall, its_lines

    results, killed_at, killed_wall, lost_lines = asyncio.run(scenario())
    assert [r.line for r in results] == list(range(10))
    assert {r.status for r in results} == {"succeeded"}
    # What the lost worker committed: the tasks it started before the kill. Reading the store at
    # the kill instead would race the COMMITs it had already sent, which PostgreSQL still applies.
    done_at_kill = committed(before=killed_wall)
    # Every input ended with every task answered once at least...
    answered = {(line_of(c), c.key) for c in server.calls if c.status == 200}
    assert len(answered) == 10 * 5
    # ...and no task committed by the time of the kill was called again after it.
    again = [
        (line_of(c), c.key)
        for c in server.calls
        if c.started > killed_at and c.key in done_at_kill[line_of(c)]
    ]
    assert again == []
    resumed = [line for line in lost_lines if 0 < len(done_at_kill[line]) < 5]
    assert resumed, "the lost worker held a run in the middle"
    for line in resumed:  # it finished elsewhere, its missing tasks called after the kill
        late = {c.key for c in server.calls if line_of(c) == line and c.started > killed_at}
        assert late == {"part0", "part1", "part2", "join", "last"} - done_at_kill[line]
    store.close()
