"""Batches: inputs files checked line by line, the Python API, the local executor, resumes, and
the `crew batch` command (a subprocess against the fake server)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crew import LLM, Agent, Crew, Task
from crew.batch import BatchItem, BatchResult, check_executor, read_inputs, run_one
from crew.errors import BatchInputError, ConfigError, CrewError
from crew.input_types import InputSpec
from crew.limits import rate_limiter
from crew.retry import RetryPolicy
from crew.store import Store
from crew.store.memory import MemoryStore
from crew.testserver import FakeOpenAIServer, ServerReply

FAST = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.02, jitter_s=0.0)
SPECS = {
    "company": InputSpec(name="company", type="string"),
    "employees": InputSpec(name="employees", type="integer"),
    "region": InputSpec(name="region", default="EU", required=False),
}
_COMPANY = re.compile(r"Company: (\w+)")


def echo(body: dict[str, Any]) -> ServerReply:
    """Each answer names the company its prompt is about; a company named 'broken' fails."""
    text = "\n".join(str(m.get("content") or "") for m in body["messages"])
    company = _COMPANY.search(text)
    name = company.group(1) if company else "?"
    if name == "broken":
        return ServerReply(status=400, error="This request is malformed.")
    return ServerReply(text=f"score of {name}")


def leads_crew(llm: LLM, store: Store | None = None) -> Crew:
    agent = Agent(role="Scorer", goal="Score leads", llm=llm)
    research = Task(id="research", description="Company: {company}. Research it.", agent=agent)
    score = Task(
        id="score", description="Company: {company}. Score it.", agent=agent, depends_on=[research]
    )
    return Crew([research, score], name="leads", store=store or MemoryStore())


@pytest.fixture
def llm(server: FakeOpenAIServer) -> LLM:
    server.default = echo
    return LLM("openai/fake", api_base=server.url, api_key="sk-test", retry=FAST)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# Reading and checking inputs


def test_jsonl_lines_are_read_with_their_line_numbers_and_types(tmp_path):
    path = write(tmp_path, "leads.jsonl", '{"company": "acme", "employees": 5}\n\n'
                 '{"company": "zeta", "employees": 7, "region": "US"}\n')  # fmt: skip
    items = read_inputs(path, leads_crew(LLM("openai/x")), batch_id="b1", specs=SPECS)
    assert items == [
        BatchItem(
            line=1, inputs={"company": "acme", "employees": 5, "region": "EU"}, run_id="b1-1"
        ),
        BatchItem(
            line=3, inputs={"company": "zeta", "employees": 7, "region": "US"}, run_id="b1-3"
        ),
    ]


def test_csv_cells_are_converted_to_the_declared_types_and_empty_cells_take_defaults(tmp_path):
    path = write(tmp_path, "leads.csv", 'company,employees,region\nacme,5,\n"ze\nta",7,US\n')
    items = read_inputs(path, leads_crew(LLM("openai/x")), batch_id="b", specs=SPECS)
    assert [(i.line, i.inputs) for i in items] == [
        (2, {"company": "acme", "employees": 5, "region": "EU"}),
        (3, {"company": "ze\nta", "employees": 7, "region": "US"}),
    ]


def test_every_bad_line_is_reported_at_once_as_file_line_field_problem(tmp_path):
    path = write(
        tmp_path, "leads.jsonl",
        '{"company": "acme", "employees": 5}\n'
        '{"company": "b", "employees": "many"}\n'
        '[1, 2]\n'
        '{"employees": 3, "colour": "red"}\n'
        '{not json\n',
    )  # fmt: skip
    with pytest.raises(BatchInputError) as caught:
        read_inputs(path, leads_crew(LLM("openai/x")), batch_id="b", specs=SPECS)
    problems = caught.value.problems
    assert [p.split(" ", 1)[0] for p in problems] == [
        f"{path}:2", f"{path}:3", f"{path}:4", f"{path}:4", f"{path}:5",
    ]  # fmt: skip
    assert f"{path}:2 inputs.employees: expected an integer, got 'many'" in problems[0]
    assert "a JSON list, not an object" in problems[1]
    assert f"{path}:4 inputs.colour: unknown input" in problems[2]
    assert f"{path}:4 inputs.company: missing required input" in problems[3]
    assert str(caught.value).startswith(f"5 problems in {path}:")


def test_python_inputs_that_are_not_dicts_are_refused_by_position(llm):
    with pytest.raises(BatchInputError, match=r"inputs:2 inputs: a str, not a dict"):
        leads_crew(llm).batch([{"company": "a"}, "b"])


def test_without_declared_inputs_each_line_must_fill_every_placeholder(tmp_path):
    path = write(tmp_path, "leads.csv", "company,note\nacme,x\n,y\n")
    with pytest.raises(BatchInputError, match=r"leads.csv:3 inputs: Missing inputs: 'company'"):
        read_inputs(path, leads_crew(LLM("openai/x")), batch_id="b")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("leads.jsonl", "", "no inputs in the file"),
        ("leads.csv", "company,employees\n", "no inputs in the file"),
        ("leads.txt", "company\nacme\n", "name it .jsonl"),
        ("missing.jsonl", None, "cannot read the inputs file"),
    ],
)
def test_an_empty_unknown_or_missing_file_is_one_clear_error(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(BatchInputError, match=message):
        read_inputs(path, leads_crew(LLM("openai/x")), batch_id="b")


# The Python API and the local executor


def test_abatch_returns_every_result_in_input_order_and_a_failed_run_stops_no_other(llm, server):
    crew = leads_crew(llm)
    names = ["a", "b", "broken", "d", "e", "f"]
    results = asyncio.run(
        crew.abatch([{"company": n} for n in names], concurrency=3, batch_id="bt")
    )
    assert [r.line for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r.run_id for r in results] == [f"bt-{n}" for n in range(1, 7)]
    assert [r.status for r in results] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3
    assert [r.output for r in results if r.status == "succeeded"] == [
        f"score of {n}" for n in names if n != "broken"
    ]
    assert "research" in (results[2].error or "") and results[2].output is None
    assert results[0].usage["calls"] == 2
    runs = crew.store.list_runs(None, batch="bt")
    assert sorted((r.batch_line, r.inputs["company"]) for r in runs) == list(
        enumerate(names, start=1)
    )
    stored = crew.store.get_batch("bt")
    assert stored is not None and (stored.size, stored.crew) == (6, "leads")


def test_concurrency_caps_the_runs_at_work_at_once(llm, server):
    server.default = lambda body: ServerReply(text="ok", latency_ms=50)
    crew = leads_crew(llm)
    asyncio.run(crew.abatch([{"company": str(n)} for n in range(6)], concurrency=2))
    calls = server.calls
    in_flight = max(sum(c.started <= a.started < c.finished for c in calls) for a in calls)
    assert len(calls) == 12 and in_flight == 2  # two runs, each one task at a time


def test_batch_is_the_sync_form_and_a_rerun_skips_what_succeeded(llm, server):
    crew = leads_crew(llm)
    first = crew.batch([{"company": "a"}, {"company": "broken"}], batch_id="again")
    assert [r.status for r in first] == ["succeeded", "failed"]
    server.reset()
    server.default = lambda body: ServerReply(text="fixed")
    second = crew.batch([{"company": "a"}, {"company": "broken"}], batch_id="again")
    assert [r.status for r in second] == ["succeeded", "succeeded"]
    assert second[0] == first[0]  # read back from the store: no call
    assert [c.key for c in server.calls] == ["research", "score"]  # the failed run, retried
    assert second[1].output == "fixed"


def test_a_rerun_with_other_inputs_for_the_same_batch_is_refused_before_any_call(llm, server):
    crew = leads_crew(llm)
    crew.batch([{"company": "a"}], batch_id="same")
    server.reset()
    with pytest.raises(ConfigError, match="line 1 of batch same: its run same-1 was stored with"):
        crew.batch([{"company": "z"}], batch_id="same")
    assert server.calls == []


def test_run_one_returns_a_stored_success_without_a_call(llm, server):
    crew = leads_crew(llm)
    item = BatchItem(line=4, inputs={"company": "q"}, run_id="x-4")
    first = asyncio.run(run_one(crew, item, batch_id="x"))
    server.reset()
    again = asyncio.run(run_one(crew, item, batch_id="x"))
    assert (
        again
        == first
        == BatchResult(
            line=4, run_id="x-4", status="succeeded", output="score of q", usage=first.usage
        )
    )
    assert server.calls == []
    assert crew.store.get_run("x-4").batch_line == 4  # type: ignore[union-attr]


def test_run_one_waits_for_a_lease_held_elsewhere_then_resumes_the_run(llm, server):
    crew = leads_crew(llm)
    store = crew.store
    store.create_run(
        "w-1", crew="leads", inputs={"company": "q"}, task_ids=["research", "score"],
        batch_id="w", batch_line=1,
    )  # fmt: skip
    store.acquire_lease("w-1", "another-machine:7", ttl_s=0.3)  # its holder went silent
    item = BatchItem(line=1, inputs={"company": "q"}, run_id="w-1")
    result = asyncio.run(run_one(crew, item, batch_id="w"))
    assert (result.status, result.output) == ("succeeded", "score of q")
    assert [c.key for c in server.calls] == ["research", "score"]
    assert store.lease("w-1") is None  # taken over, then released by the run


def test_the_rate_limit_of_a_model_holds_across_the_whole_batch(server):
    window_s = 0.6
    server.default = ServerReply(text="ok")
    llm = LLM("openai/rpm-batch", api_base=server.url, api_key="sk-test", retry=FAST, max_rpm=3)
    rate_limiter(llm.model, llm.api_base).window_s = window_s
    crew = leads_crew(llm)
    results = crew.batch([{"company": str(n)} for n in range(4)], concurrency=4)
    assert {r.status for r in results} == {"succeeded"}
    starts = sorted(c.started for c in server.calls if c.status == 200)
    assert len(starts) == 8
    busiest = max(sum(s <= t < s + window_s - 0.15 for t in starts) for s in starts)
    assert busiest <= 3  # 4 runs at once, 8 calls: still 3 a window
    assert starts[-1] - starts[0] >= 2 * window_s - 0.15


def test_result_lines_have_the_out_file_shape():
    result = BatchResult(line=2, run_id="b-2", status="failed", output=None, usage={}, error="x")
    assert json.loads(json.dumps(result.as_json())) == {
        "line": 2, "run_id": "b-2", "status": "failed", "output": None, "usage": {}, "error": "x",
    }  # fmt: skip


def test_executors_that_cannot_work_are_refused_in_one_line(tmp_path):
    from crew.store.sqlite import SQLiteStore

    sqlite = SQLiteStore(tmp_path / "crew.db")
    with pytest.raises(ConfigError, match="cannot share the SQLite store"):
        check_executor("dask", sqlite, "tcp://10.0.0.5:8786")
    check_executor("dask", sqlite, "tcp://127.0.0.1:8786")  # same machine: the file is shared
    check_executor("dask", sqlite, None)  # a LocalCluster here
    with pytest.raises(ConfigError, match="needs a store its workers share"):
        check_executor("dask", MemoryStore(), None)
    with pytest.raises(ConfigError, match="is for --executor dask"):
        check_executor("local", sqlite, "tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="'ray' is not one of local, dask"):
        check_executor("ray", sqlite, None)


def test_the_dask_executor_without_dask_says_what_to_install(llm, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "crew.batch_dask", None)  # as if the extra were missing
    crew = leads_crew(llm, store=f"sqlite:///{tmp_path / 'crew.db'}")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"pip install 'crew\[dask\]'"):
        crew.batch([{"company": "a"}], executor="dask")


# The `crew batch` command

CREW = Path(sys.executable).with_name("crew")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIMPLE = """\
name: simple
inputs:
  topic: {description: The topic, type: string}
  pages: {description: How long, type: integer, default: 1}
agents:
  worker:
    role: Worker
    goal: "Work on topic: {topic}"
tasks:
  notes:
    description: Take notes on {topic}
    agent: worker
  summary:
    description: Summarise the notes
    agent: worker
    depends_on: [notes]
"""
_TOPIC = re.compile(r"topic: (\w+)")


def by_topic(slow: str = "", broken: str = "") -> Callable[[dict[str, Any]], ServerReply]:
    """Answers naming the topic; the summary of ``slow`` takes a minute, ``broken`` fails."""

    def reply(body: dict[str, Any]) -> ServerReply:
        text = "\n".join(str(m.get("content") or "") for m in body["messages"])
        found = _TOPIC.search(text)
        topic = found.group(1) if found else "?"
        if topic == broken:
            return ServerReply(status=400, error="This request is malformed.")
        if topic == slow and "Summarise" in text:
            return ServerReply(text="too late", latency_ms=60_000)
        return ServerReply(text=f"about {topic}")

    return reply


def environment(server: FakeOpenAIServer) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    return base | {"CREW_MODEL": "openai/fake", "CREW_API_BASE": server.url, "OPENAI_API_KEY": "k"}


def crew_cli(
    *args: str, cwd: Path, server: FakeOpenAIServer, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CREW), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env=environment(server) | env,
    )  # fmt: skip


def keys(server: FakeOpenAIServer) -> list[str]:
    return sorted(call.key for call in server.calls)


def test_a_bad_inputs_file_exits_2_listing_every_bad_line_before_any_call(tmp_path, server):
    write(tmp_path, "crew.yaml", SIMPLE)
    write(tmp_path, "in.csv", "topic,pages\na,1\nb,many\n,2\nd,4,extra\n")
    done = crew_cli("batch", ".", "--inputs", "in.csv", cwd=tmp_path, server=server)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("error: 3 problems in in.csv:")
    assert "in.csv:3 inputs.pages: expected an integer, got 'many'" in done.stderr
    assert "in.csv:4 inputs.topic: missing required input" in done.stderr
    assert "in.csv:5 row: 3 cells, but the header names 2." in done.stderr
    assert server.calls == []


def test_a_batch_writes_its_results_in_input_order_and_exits_1_if_any_failed(tmp_path, server):
    server.default = by_topic(broken="bad")
    write(tmp_path, "crew.yaml", SIMPLE)
    write(tmp_path, "in.jsonl", '{"topic": "a"}\n{"topic": "bad"}\n{"topic": "c", "pages": 3}\n')
    done = crew_cli(
        "batch", ".", "--inputs", "in.jsonl", "--out", "out/results.jsonl", "--batch-id", "b7",
        "--concurrency", "2", "--json", cwd=tmp_path, server=server,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "batch b7: 3 inputs of in.jsonl" in done.stderr  # the id, first
    summary = json.loads(done.stdout)
    assert summary["batch_id"] == "b7" and summary["inputs"] == 3
    assert summary["counts"] == {"succeeded": 2, "failed": 1}
    assert summary["usage"]["calls"] == 4 and summary["out"] == "out/results.jsonl"
    lines = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    assert [(r["line"], r["run_id"], r["status"]) for r in lines] == [
        (1, "b7-1", "succeeded"), (2, "b7-2", "failed"), (3, "b7-3", "succeeded"),
    ]  # fmt: skip
    assert [r["output"] for r in lines] == ["about a", None, "about c"]
    assert set(lines[0]) == {"line", "run_id", "status", "output", "usage", "error"}
    assert "notes" in lines[1]["error"] and lines[0]["usage"]["calls"] == 2
    assert "--batch-id b7" in done.stderr  # how to retry

    listed = crew_cli("runs", "--batch", "b7", cwd=tmp_path, server=server)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[1] for line in listed.stdout.splitlines() if "b7-" in line] == [
        "b7-1", "b7-2", "b7-3",
    ]  # fmt: skip
    assert "2 of 3 done, 1 failed, 0 never started" in listed.stdout
    shown = crew_cli("show", "b7-3", cwd=tmp_path, server=server)
    assert shown.returncode == 0 and "about c" in shown.stdout
    assert "line 3 of batch b7" in shown.stdout
    unknown = crew_cli("runs", "--batch", "b8", cwd=tmp_path, server=server)
    assert unknown.returncode == 2 and "There is no batch 'b8' in the store." in unknown.stderr


def test_all_succeeded_exits_0_with_plain_lines_when_not_a_terminal(tmp_path, server):
    server.default = by_topic()
    write(tmp_path, "crew.yaml", SIMPLE)
    write(tmp_path, "in.jsonl", '{"topic": "a"}\n{"topic": "b"}\n')
    done = crew_cli("batch", ".", "--inputs", "in.jsonl", "--batch-id", "ok", cwd=tmp_path,
                    server=server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "batch ok: 2 inputs of in.jsonl, crew simple (local, 8 at once)"
    assert sorted(out[1:3]) == ["line 1 ok-1 succeeded", "line 2 ok-2 succeeded"]
    assert out[3].startswith("batch ok: 2 inputs: 2 succeeded; 4 calls")
    assert ANSI not in done.stdout


ANSI = "\x1b["


def start_batch(*args: str, cwd: Path, server: FakeOpenAIServer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CREW), "batch", *args], cwd=cwd, env=environment(server), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_until(store_url: str, process: subprocess.Popen[str], ready: Callable[[Store], bool]):
    from crew.store import open_store

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with open_store(store_url) as store:  # type: ignore[attr-defined]
                if ready(store):
                    return
        except CrewError:
            pass  # the database is not made yet
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the batch never got there: {process.communicate()}")


def halfway(store: Store) -> bool:
    """Inputs 1 and 3 succeeded, 2 has its notes stored and waits for its summary."""
    done = {r.run_id: r.status for r in store.list_runs(None, batch="k")}
    slow = store.finished_outputs("k-2") if "k-2" in done else {}
    return done.get("k-1") == done.get("k-3") == "succeeded" and ("notes", 0) in slow


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_killed_halfway_resumes_without_calling_a_finished_task_again(
    tmp_path, server, backend, request
):
    url = (
        f"sqlite:///{tmp_path / '.crew' / 'crew.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    server.default = by_topic(slow="b", broken="d")
    write(tmp_path, "crew.yaml", SIMPLE)
    write(tmp_path, "in.jsonl", "".join(f'{{"topic": "{t}"}}\n' for t in "abcd"))
    args = ("--inputs", "in.jsonl", "--batch-id", "k", "--store", url)
    process = start_batch(".", *args, cwd=tmp_path, server=server)
    wait_until(url, process, halfway)

    process.kill()  # SIGKILL: nothing recorded, the lease of k-2 stays behind
    process.communicate(timeout=60)

    server.reset()
    server.default = by_topic()
    again = crew_cli("batch", ".", *args, "--out", "out.jsonl", cwd=tmp_path, server=server)
    assert again.returncode == 0, again.stderr
    # k-1 and k-3 not again, k-2 from its checkpoint (its notes kept), k-4 failed: run again.
    assert keys(server) == ["notes", "summary", "summary"]
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["run_id"], r["status"]) for r in results] == [
        (f"k-{n}", "succeeded") for n in range(1, 5)
    ]
    assert [r["output"] for r in results] == ["about a", "about b", "about c", "about d"]


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_batch_interrupts_its_running_runs_and_says_how_to_continue(
    tmp_path, server, sent, code
):
    url = f"sqlite:///{tmp_path / '.crew' / 'crew.db'}"
    server.default = by_topic(slow="b")
    write(tmp_path, "crew.yaml", SIMPLE)
    write(tmp_path, "in.jsonl", "".join(f'{{"topic": "{t}"}}\n' for t in "abc"))
    process = start_batch(".", "--inputs", "in.jsonl", "--batch-id", "k", "--concurrency", "1",
                          cwd=tmp_path, server=server)  # fmt: skip
    wait_until(url, process, lambda store: ("notes", 0) in store.finished_outputs("k-2"))

    process.send_signal(sent)
    _, err = process.communicate(timeout=60)

    assert process.returncode == code, err
    assert "Traceback" not in err
    assert "interrupted: batch k stopped, 1 of 3 inputs finished." in err
    assert "--batch-id k" in err
    from crew.store import open_store

    with open_store(url) as store:  # type: ignore[attr-defined]
        statuses = {r.run_id: r.status for r in store.list_runs(None, batch="k")}
    assert statuses == {"k-1": "succeeded", "k-2": "interrupted"}  # k-3 never started
    listed = crew_cli("runs", "--batch", "k", cwd=tmp_path, server=server)
    assert "1 of 3 done, 1 interrupted, 1 never started" in listed.stdout


def test_a_python_crew_built_from_its_inputs_is_built_with_the_first_line(tmp_path, server):
    server.default = by_topic()
    write(
        tmp_path, "crew.py",
        "from crew import Agent, Crew, Task\n"
        "INPUTS = {'topic': {'description': 'The topic'}}\n"
        "def build_crew(inputs):\n"
        "    agent = Agent(role='Worker', goal='Work on topic: {topic}')\n"
        "    return Crew([Task(id='notes', description='Notes on {topic}', agent=agent)])\n",
    )  # fmt: skip
    write(tmp_path, "in.csv", "topic\nx\ny\n")
    done = crew_cli("batch", "crew.py", "--inputs", "in.csv", "--json", cwd=tmp_path,
                    server=server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}


def test_the_leads_example_runs_as_a_batch(tmp_path, server):
    from tests.test_examples import answer

    server.default = answer
    inputs = EXAMPLES / "leads" / "leads.jsonl"
    done = crew_cli(
        "batch", str(EXAMPLES / "leads"), "--inputs", str(inputs), "--out", "scores.jsonl",
        "--json", cwd=tmp_path, server=server,
        CREW_STORE=f"sqlite:///{tmp_path / 'crew.db'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["counts"] == {"succeeded": 5}
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [s["line"] for s in scores] == [1, 2, 3, 4, 5]
    assert all(set(s["output"]) == {"score", "reason"} for s in scores)
    assert len(server.calls) == 15  # three tasks per lead


def test_dask_with_sqlite_and_a_remote_address_is_refused_in_one_line(tmp_path, server):
    write(tmp_path, "crew.yaml", SIMPLE)
    write(tmp_path, "in.jsonl", '{"topic": "a"}\n')
    done = crew_cli(
        "batch", ".", "--inputs", "in.jsonl", "--executor", "dask",
        "--address", "tcp://10.1.2.3:8786", cwd=tmp_path, server=server,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot share the SQLite store" in done.stderr and server.calls == []


def test_on_a_terminal_the_view_is_one_progress_bar_with_counts_tokens_and_cost():
    from io import StringIO

    from rich.console import Console

    from crew import events
    from crew.console.batch import BatchView

    file = StringIO()
    view = BatchView(
        Console(file=file, force_terminal=True, width=150), batch_id="b", run_ids=["b-1", "b-2"]
    )
    view.start()
    view(events.RunStarted(run_id="b-1", at=0.0, crew="c", task_ids=("t",), inputs={}))
    view(events.RunStarted(run_id="b-2", at=0.0, crew="c", task_ids=("t",), inputs={}))
    view.on_result(BatchResult(line=1, run_id="b-1", status="succeeded", output="x",
                               usage={"total_tokens": 1500, "cost_usd": 0.25}))  # fmt: skip
    view.stop()
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", file.getvalue()).splitlines()[-1]
    assert "batch b" in shown and "1/2" in shown
    assert "1 done 0 failed 1 running" in shown and "1,500 tokens $0.2500" in shown
