"""Batches: inputs files checked line by line, the Python API, the local executor, resumes, and
the `crew batch` command (a subprocess against the fake server)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from crew import LLM, Agent, Crew, Task
from crew.batch import BatchItem, BatchResult, check_executor, read_inputs, run_one
from crew.errors import BatchInputError, ConfigError
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
