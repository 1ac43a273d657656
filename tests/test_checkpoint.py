"""Durable runs: every step checkpointed, resume after failure or a real crash (SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel

from crew import LLM, Agent, Crew, Task, events, outbox
from crew.errors import BadRequestError, ConfigError, LeaseHeldError, StoreError
from crew.store import BoardRecord, Store, TaskCommit
from crew.store.memory import MemoryStore
from crew.store.sqlite import SQLiteStore
from crew.store.writer import writer_for
from crew.task import loop
from crew.testing import Reply, ScriptedLLM
from crew.testserver import ServerReply
from tests.conftest import open_test_store

ROOT = Path(__file__).resolve().parent.parent
WORKER = Agent(role="Worker", goal="Work")
GRAPH = {"a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["c"], "f": ["d"], "g": ["e", "f"],
         "h": ["g"]}  # fmt: skip


class Summary(BaseModel):
    points: list[str]


def tasks_of(graph: dict[str, list[str]]) -> list[Task]:
    return [Task(id=t, description=f"Do {t}", agent=WORKER, depends_on=d) for t, d in graph.items()]


def test_a_run_is_recorded_step_by_step():
    store = MemoryStore()
    crew = Crew(
        tasks_of({"a": [], "b": ["a"]}),
        llm=ScriptedLLM({"a": "A", "b": "B"}),
        store=store,
        source="tests/crew.yaml",
    )
    result = crew.run({"topic": "x"})

    run = store.get_run(result.run_id)
    assert run is not None
    assert (run.status, run.crew, run.inputs, run.task_ids, run.source) == (
        "succeeded",
        "crew",
        {"topic": "x"},
        ["a", "b"],
        "tests/crew.yaml",
    )
    assert run.usage["total"]["calls"] == 2
    finished = store.finished_outputs(result.run_id)
    assert {k: r.text for k, r in finished.items()} == {("a", 0): "A", ("b", 0): "B"}
    assert [(r.key, r.version) for r in store.board_entries(result.run_id)] == [("a", 1), ("b", 1)]
    kinds = [e.type for e in store.events(result.run_id)]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    assert kinds.count("TaskFinished") == 2


def test_a_failed_run_resumes_at_the_failed_task_without_calling_finished_ones_again():
    store = MemoryStore()
    graph = {"a": [], "b": ["a"], "c": ["b"], "side": []}
    broken = ScriptedLLM({"b": BadRequestError("bad key", model="m")})
    first = Crew(tasks_of(graph), llm=broken, store=store, on_failure="continue").run()
    assert first.status == "failed"
    assert {t: r.status for t, r in first.tasks.items()} == {
        "a": "succeeded",
        "b": "failed",
        "c": "skipped",
        "side": "succeeded",
    }

    fixed = ScriptedLLM({"b": "B fixed"})
    seen: list[events.Event] = []
    crew = Crew(tasks_of(graph), llm=fixed, store=store)
    second = asyncio.run(crew.arun(resume=first.run_id, on_event=seen.append))

    assert second.run_id == first.run_id and second.status == "succeeded"
    assert [c.task_id for c in fixed.calls] == ["b", "c"]  # a and side are never called again
    assert second.outputs["a"].text == "ok" and second.outputs["b"].text == "B fixed"
    assert "### a (by Worker)\nok" in fixed.calls_for("b")[0].prompt  # the board came back
    assert store.get_run(first.run_id).status == "succeeded"
    assert not any(isinstance(e, events.TaskStarted) and e.task_id == "a" for e in seen)


def test_structured_outputs_come_back_typed_on_resume():
    store = MemoryStore()
    graph = [
        Task(id="sum", description="Sum up", agent=WORKER, output_model=Summary),
        Task(id="next", description="Go on", agent=WORKER, depends_on=["sum"]),
    ]
    llm = ScriptedLLM({"sum": {"points": ["x", "y"]}, "next": BadRequestError("no", model="m")})
    first = Crew(graph, llm=llm, store=store).run()
    second = Crew(graph, llm=ScriptedLLM(), store=store).run(resume=first.run_id)
    assert second.outputs["sum"].data == Summary(points=["x", "y"])


def test_resuming_an_unknown_run_is_a_clear_error():
    with pytest.raises(ConfigError, match="There is no run 'nope' in the store"):
        Crew(tasks_of({"a": []}), llm=ScriptedLLM(), store=MemoryStore()).run(resume="nope")


def test_a_live_run_cannot_be_resumed_by_a_second_process():
    store = MemoryStore()
    first = Crew(
        tasks_of({"a": []}), llm=ScriptedLLM({"a": BadRequestError("x", model="m")}), store=store
    ).run()
    store.acquire_lease(first.run_id, "otherhost:4242", ttl_s=60)
    llm = ScriptedLLM()
    with pytest.raises(LeaseHeldError, match="otherhost:4242"):
        Crew(tasks_of({"a": []}), llm=llm, store=store).run(resume=first.run_id)
    assert llm.calls == []


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once():
    import socket

    store = MemoryStore()
    first = Crew(
        tasks_of({"a": []}), llm=ScriptedLLM({"a": BadRequestError("x", model="m")}), store=store
    ).run()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.acquire_lease(first.run_id, f"{socket.gethostname()}:{dead.pid}", ttl_s=60)
    result = Crew(tasks_of({"a": []}), llm=ScriptedLLM(), store=store).run(resume=first.run_id)
    assert result.status == "succeeded"


# --- a real crash: SIGKILL at random moments, then resume -------------------------------------

CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from crew import Crew, LLM, events
    from crew.store.sqlite import SQLiteStore
    from tests.test_checkpoint import GRAPH, tasks_of

    llm = LLM("openai/fake", api_base=os.environ["SERVER"], api_key="sk-test")
    crew = Crew(tasks_of(GRAPH), llm=llm, store=SQLiteStore(os.environ["DB"]),
                id_factory=lambda: os.environ["RUN_ID"])

    def started(event):
        if isinstance(event, events.RunStarted):
            print("started", flush=True)

    crew.run(on_event=started)
    print("finished", flush=True)
""")


def test_runs_killed_at_random_moments_resume_without_redoing_finished_tasks(server, tmp_path):
    rng = random.Random(20261124)
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(root=str(ROOT)))
    mid_run_kills = 0
    for round_ in range(10):
        server.reset()
        server.default = lambda body: ServerReply(text="done", latency_ms=rng.uniform(150, 300))
        db, run_id = tmp_path / f"crew{round_}.db", f"crash{round_}"
        env = {**os.environ, "SERVER": server.url, "DB": str(db), "RUN_ID": run_id}
        child = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.4, 1.6))
        child.send_signal(signal.SIGKILL)
        child.wait()

        store = SQLiteStore(db)
        finished = {task for task, _ in store.finished_outputs(run_id)}
        mid_run_kills += 0 < len(finished) < len(GRAPH)
        calls_before = len(server.calls)
        llm = LLM("openai/fake", api_base=server.url, api_key="sk-test")
        result = Crew(tasks_of(GRAPH), llm=llm, store=store).run(resume=run_id)

        assert result.status == "succeeded", (round_, result.tasks)
        called_again = {c.key for c in server.calls[calls_before:]}
        assert called_again.isdisjoint(finished), (round_, finished, called_again)
        assert called_again | finished == set(GRAPH), round_
        assert set(result.outputs) == set(GRAPH)
        assert {key for key, _ in store.finished_outputs(run_id)} == set(GRAPH)
        store.close()
    assert mid_run_kills >= 3  # kills landed while tasks were running, not only before or after


ODD = "nul\x00 lone\ud800 low\udfff 🦜"
"""An answer a database cannot take as it is: NUL (PostgreSQL) and lone surrogates (both)."""


def test_any_text_a_model_returns_is_kept_exactly(durable_store: Store):
    store, graph = durable_store, tasks_of({"a": [], "b": ["a"]})
    broken = ScriptedLLM({"a": ODD, "b": BadRequestError("no", model="m")})
    first = Crew(graph, llm=broken, store=store).run()
    assert first.tasks["a"].status == "succeeded" and first.outputs["a"].text == ODD

    assert store.finished_outputs(first.run_id)[("a", 0)].text == ODD
    assert [e.text for e in store.board_entries(first.run_id)] == [ODD]
    finished = [e.payload for e in store.events(first.run_id) if e.type == "TaskFinished"]
    assert finished[0]["output"]["text"] == ODD

    fixed = ScriptedLLM({"b": "B"})
    second = Crew(graph, llm=fixed, store=store).run(resume=first.run_id)
    assert second.status == "succeeded" and second.outputs["a"].text == ODD
    assert ODD in fixed.calls_for("b")[0].prompt  # the board came back exactly

    again = ScriptedLLM()
    replayed = Crew(graph, llm=again, store=store).run(replay=first.run_id, replay_strict=True)
    assert replayed.outputs["a"].text == ODD and again.calls == []  # the recorded exchanges


def test_attempts_are_numbered_on_across_resumes_and_earlier_ones_are_kept(durable_store: Store):
    store, graph = durable_store, tasks_of({"a": [], "b": ["a"]})
    broken = ScriptedLLM({"b": BadRequestError("the key was refused", model="m")})
    first = Crew(graph, llm=broken, store=store).run()
    assert first.status == "failed"

    second = Crew(graph, llm=ScriptedLLM({"b": "B"}), store=store).run(resume=first.run_id)
    assert second.status == "succeeded"
    assert (second.tasks["a"].attempts, second.tasks["b"].attempts) == (1, 2)  # as stored

    b = [r for r in store.task_records(first.run_id) if r.task_id == "b"]
    assert [(r.attempt, r.status) for r in b] == [(1, "failed"), (2, "succeeded")]
    assert "the key was refused" in (b[0].error or "") and b[0].error_type == "BadRequestError"
    assert store.finished_outputs(first.run_id)[("b", 0)].text == "B"
    started = [e.payload for e in store.events(first.run_id) if e.type == "TaskStarted"]
    assert [(p["task_id"], p["attempt"]) for p in started] == [("a", 1), ("b", 1), ("b", 2)]

    third = Crew(graph, llm=broken, store=store).run(resume=first.run_id)  # nothing to redo
    assert third.tasks["b"].attempts == 2 and len(store.task_records(first.run_id)) == 3


def test_a_task_failing_again_after_a_resume_is_its_second_attempt(durable_store: Store):
    store, graph = durable_store, tasks_of({"a": []})
    broken = ScriptedLLM({"a": BadRequestError("refused", model="m")})
    first = Crew(graph, llm=broken, store=store).run()
    again = Crew(graph, llm=broken, store=store).run(resume=first.run_id)
    assert again.status == "failed" and again.tasks["a"].attempts == 2
    records = store.task_records(first.run_id)
    assert [(r.attempt, r.status) for r in records] == [(1, "failed"), (2, "failed")]


class Crash(Exception):
    """The process dies here."""


class CrashingCommit:
    """A store whose process dies while committing ``task_id``: a board version posted before
    the commit must not outlive it."""

    def __init__(self, store: Store, task_id: str) -> None:
        self.store, self.task_id = store, task_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_tasks(self, tasks: list[TaskCommit], **kwargs: Any) -> None:
        for record, _ in tasks:
            if record.task_id == self.task_id and record.status == "succeeded":
                raise Crash(f"killed while committing {record.task_id}")
        self.store.put_tasks(tasks, **kwargs)

    def put_board_entry(self, record: BoardRecord) -> None:
        self.store.put_board_entry(record)


def test_a_crash_before_a_task_commits_leaves_no_board_version_of_its_output(
    durable_store: Store,
):
    store, graph = durable_store, tasks_of({"a": [], "b": ["a"]})
    crashing = cast(Store, CrashingCommit(store, "b"))
    with pytest.raises(Crash):
        Crew(graph, llm=ScriptedLLM({"b": "B lost"}), store=crashing).run(run_id="r1")
    assert [(e.key, e.version) for e in store.board_entries("r1")] == [("a", 1)]

    second = Crew(graph, llm=ScriptedLLM({"b": "B"}), store=store).run(resume="r1")
    assert second.status == "succeeded"
    entries = [(e.key, e.version, e.text) for e in store.board_entries("r1")]
    assert entries == [("a", 1, "ok"), ("b", 1, "B")]


class FlakyEvents:
    """A store that refuses the first ``failures`` writes of each event of type ``kind``, alone
    or in a batch (with other events, or with a task's commit)."""

    def __init__(self, store: Store, kind: str, failures: int) -> None:
        self.store, self.kind, self.failures = store, kind, failures
        self.refused: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _refuse(self, batch: Any) -> None:
        for type, payload in batch:
            if type == self.kind:
                key = str((payload or {}).get("task_id"))
                self.refused[key] = self.refused.get(key, 0) + 1
                if self.refused[key] <= self.failures:
                    raise StoreError("database is locked")

    def append_event(self, run_id: str, type: str, payload: Any = None) -> Any:
        self._refuse([(type, payload)])
        return self.store.append_event(run_id, type, payload)

    def append_events(self, run_id: str, batch: Any) -> Any:
        self._refuse(batch)
        return self.store.append_events(run_id, batch)

    def put_tasks(self, tasks: list[TaskCommit], **kwargs: Any) -> None:
        self._refuse(kwargs.get("events", ()))
        self.store.put_tasks(tasks, **kwargs)


def test_an_event_write_that_fails_is_tried_again(durable_store: Store):
    flaky = cast(Store, FlakyEvents(durable_store, "TaskFinished", failures=2))
    result = Crew(tasks_of({"a": [], "b": ["a"]}), llm=ScriptedLLM(), store=flaky).run()
    kinds = [e.type for e in durable_store.events(result.run_id)]
    assert kinds.count("TaskFinished") == 2 and "SinkFailed" not in kinds


def test_an_event_that_cannot_be_written_is_reported_not_hidden(
    durable_store: Store, caplog: pytest.LogCaptureFixture
):
    broken = cast(Store, FlakyEvents(durable_store, "TaskFinished", failures=99))
    seen: list[events.Event] = []
    crew = Crew(tasks_of({"a": []}), llm=ScriptedLLM(), store=broken)
    result = asyncio.run(crew.arun(on_event=seen.append))

    assert result.status == "succeeded"  # a lost event does not fail the run
    [failed] = [e for e in seen if isinstance(e, events.SinkFailed)]
    assert (failed.event, failed.sink) == ("TaskFinished", "Checkpoint.on_event")
    assert "not recorded after 3 tries" in failed.error and "database is locked" in failed.error
    stored = [e.payload for e in durable_store.events(result.run_id) if e.type == "SinkFailed"]
    assert [p["event"] for p in stored] == ["TaskFinished"]  # crew logs shows the gap
    assert "event TaskFinished was lost by Checkpoint.on_event" in caplog.text


def test_a_provider_error_that_echoes_the_key_is_stored_redacted(
    durable_store: Store, server: Any, monkeypatch: pytest.MonkeyPatch
):
    key, token = "sk-proj-Secret0123456789abcdef", "tok_9f8e7d6c5b4a"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("MY_SERVICE_TOKEN", token)
    echoed = f"Incorrect API key provided: {key} (Authorization: Bearer {token})"
    server.script("a", ServerReply(status=401, error=echoed))
    server.script("b", ServerReply(status=400, error=f"bad request for key {key}"))
    llm = LLM("openai/fake", api_base=server.url, api_key=key)
    graph = tasks_of({"a": [], "b": []})
    result = Crew(graph, llm=llm, store=durable_store, on_failure="continue").run()

    assert result.status == "failed"
    run_id = result.run_id
    kept = [
        *(r.error or "" for r in result.tasks.values()),  # what --json prints
        *(repr(r) for r in durable_store.task_records(run_id)),
        *(repr(e.payload) for e in durable_store.events(run_id)),
        repr(durable_store.get_run(run_id)),
    ]
    assert not [text for text in kept if key in text or token in text or key[:12] in text]
    assert "Incorrect API key provided: [redacted]" in result.tasks["a"].error  # type: ignore[operator]
    assert any("[redacted]" in r.error for r in durable_store.task_records(run_id) if r.error)


class HeldCommit:
    """A store on a thread of its own whose commit of ``task_id`` waits until ``released``."""

    blocks = True

    def __init__(self, store: Store, task_id: str) -> None:
        self.store, self.task_id = store, task_id
        self.entered, self.released = threading.Event(), threading.Event()
        self.waited: bool | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_tasks(self, tasks: list[TaskCommit], **kwargs: Any) -> None:
        if any(r.task_id == self.task_id and r.status == "succeeded" for r, _ in tasks):
            self.entered.set()
            self.waited = self.released.wait(timeout=20)
        self.store.put_tasks(tasks, **kwargs)


def test_a_commit_that_blocks_stalls_neither_the_loop_nor_other_tasks_model_calls(
    durable_store: Store,
):
    held = HeldCommit(durable_store, "a")

    async def b_waits_for_a_commit(call: Any) -> str:
        if call.task_id == "b":
            while not held.entered.is_set():  # runs only if the loop is free while a commits
                await asyncio.sleep(0.01)
            held.released.set()
        return f"{call.task_id} done"

    committed_before: dict[str, bool] = {}

    def watch(event: events.Event) -> None:
        if isinstance(event, events.TaskStarted) and event.task_id == "c":
            stored = durable_store.finished_outputs(event.run_id)
            committed_before["c"] = ("a", 0) in stored  # write-ahead: a is durable first

    llm = ScriptedLLM(b_waits_for_a_commit)
    crew = Crew(tasks_of({"a": [], "b": [], "c": ["a"]}), llm=llm, store=cast(Store, held))
    result = asyncio.run(crew.arun(on_event=watch))

    assert result.status == "succeeded"
    assert held.waited is True  # released by b's model call while a's commit was held
    assert committed_before == {"c": True}


class Writes:
    """A store that notes each write: which task it commits, which events go with it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[tuple[str, list[str]]] = []
        self.exchanges: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_tasks(self, tasks: list[TaskCommit], **kwargs: Any) -> None:
        names = " ".join(record.task_id for record, _ in tasks)
        self.writes.append((f"task {names}", [t for t, _ in kwargs.get("events", ())]))
        self.exchanges.append(len(kwargs.get("exchanges", ())))
        self.store.put_tasks(tasks, **kwargs)

    def append_events(self, run_id: str, batch: Any) -> Any:
        self.writes.append(("events", [t for t, _ in batch]))
        return self.store.append_events(run_id, batch)

    def append_event(self, run_id: str, type: str, payload: Any = None) -> Any:
        self.writes.append(("event", [type]))
        return self.store.append_event(run_id, type, payload)

    def put_exchange(self, *args: Any, **kwargs: Any) -> None:
        self.writes.append(("exchange", []))
        self.store.put_exchange(*args, **kwargs)


def test_a_task_commits_once_with_the_events_before_it(
    durable_store: Store, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(outbox, "EVENT_BATCH_S", 60.0)  # no batch of events on its own
    store = Writes(durable_store)
    result = Crew(
        tasks_of({"a": [], "b": ["a"]}), llm=ScriptedLLM(), store=cast(Store, store)
    ).run()

    assert result.status == "succeeded"
    assert [name for name, _ in store.writes] == ["task a", "task b", "events"]
    assert store.exchanges == [1, 1]  # each task's model exchange (for replay) goes with it
    first, second, last = (kinds for _, kinds in store.writes)
    assert first[:2] == ["RunStarted", "TaskStarted"] and "BoardPosted" in first
    assert second[0] == "TaskFinished" and "TaskStarted" in second
    assert last == ["TaskFinished", "RunFinished"]  # written before the run returned
    stored = durable_store.events(result.run_id)
    assert [e.type for e in stored] == first + second + last
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))


class Verdict(BaseModel):
    approved: bool


def test_a_resumed_run_keeps_a_loops_warning_and_the_usage_by_agent(durable_store: Store):
    writer = Agent(role="Writer", goal="Write")
    body = [
        Task(id="draft", description="Draft", agent=writer),
        Task(id="critique", description="Judge", agent=WORKER, depends_on=["draft"],
             output_model=Verdict),
    ]  # fmt: skip
    graph = [
        loop("refine", body, until="critique.data.approved", max_rounds=2),
        Task(id="publish", description="Publish", agent=WORKER, depends_on=["refine"]),
    ]
    script: dict[str, Any] = {"critique": {"approved": False}}
    refused = BadRequestError("the key was refused", model="fake")
    first = Crew(graph, llm=ScriptedLLM({**script, "publish": refused}), store=durable_store).run(
        run_id="r1"
    )
    assert first.status == "failed"
    warned = first.tasks["refine"]
    assert warned.reason and "stopped after 2 rounds" in warned.reason
    assert set(warned.usage_by_agent) == {"Writer", "Worker"}

    llm = ScriptedLLM({**script, "publish": "out"})
    second = Crew(graph, llm=llm, store=durable_store).run(resume="r1")

    assert second.status == "succeeded" and llm.calls_for("draft") == []
    kept = second.tasks["refine"]
    assert (kept.reason, kept.usage_by_agent) == (warned.reason, warned.usage_by_agent)
    assert second.warnings == [warned.reason]
    assert second.usage.by_agent["Writer"] == warned.usage_by_agent["Writer"]


class RefusedReviews:
    """A store on a thread of its own that cannot record a review."""

    blocks = True

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_review(self, record: Any) -> None:
        raise StoreError("the disk is full")


def test_a_write_queued_without_waiting_that_fails_is_raised_not_lost(durable_store: Store):
    graph = [
        Task(id="a", description="Do a", agent=WORKER, human_review=True),
        Task(id="b", description="Do b", agent=WORKER),
    ]
    crew = Crew(graph, llm=ScriptedLLM(), store=cast(Store, RefusedReviews(durable_store)))
    with pytest.raises(StoreError, match="the disk is full"):
        crew.run(run_id="r1")
    # the events of the tasks that ran are in the store as the error is raised, none left
    # waiting on the loop that Crew.run keeps
    stored = durable_store.events("r1")
    assert sorted(e.payload["task_id"] for e in stored if e.type == "TaskFinished") == ["a", "b"]


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    store = open_test_store(request, tmp_path)
    yield store
    store.close()


def test_each_task_costs_its_sql_store_one_transaction(
    sql_store: Any, monkeypatch: pytest.MonkeyPatch
):
    """A task's output, board version, model exchange and the events before it are written in
    one transaction (PostgreSQL: one statement, so one round trip); only the event batches the
    outbox writes between commits come on top, and they are counted apart."""
    from contextlib import contextmanager

    counts = {"tasks": 0, "batches": 0}
    batch = threading.local()
    use = sql_store._use

    @contextmanager
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts["batches" if getattr(batch, "on", False) else "tasks"] += 1
        with use(*args, **kwargs) as conn:
            yield conn

    def apart(method: Any) -> Any:
        def marked(*args: Any, **kwargs: Any) -> Any:
            batch.on = True
            try:
                return method(*args, **kwargs)
            finally:
                batch.on = False

        return marked

    monkeypatch.setattr(sql_store, "_use", counted)
    # Timed, not per task: the outbox's batches (events, and an exchange whose task had not
    # committed when the batch's time came), and the lease's renewal every ttl/3 (a slow
    # machine can take that long over a run).
    for name in ("append_events", "put_exchange", "renew_lease"):
        monkeypatch.setattr(sql_store, name, apart(getattr(sql_store, name)))
    uses = []
    for n in (10, 30):
        counts["tasks"] = 0
        chain = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)}
        Crew(tasks_of(chain), llm=ScriptedLLM(), store=sql_store).run().raise_for_status()
        uses.append(counts["tasks"])
    assert uses[1] - uses[0] == 20  # one per task; the rest (run, lease, finish) is per run


class Together:
    """An event sink that holds the store's thread from the first of ``tasks`` posting its
    output until the last has, as when a fan-out's leaves answer within a moment of each other:
    their commits queue up behind whatever the thread is doing."""

    def __init__(self, store: Store, tasks: set[str]) -> None:
        self.writer, self.tasks = writer_for(store), tasks
        self.posted: set[str] = set()
        self.gate = threading.Event()

    def __call__(self, event: events.Event) -> None:
        if not isinstance(event, events.BoardPosted) or event.key not in self.tasks:
            return
        if not self.posted:
            self.writer.submit(self.gate.wait, 20)
        self.posted.add(event.key)
        if self.posted == self.tasks:  # opened once the last one's commit is queued too
            asyncio.get_running_loop().call_soon(self.gate.set)


def fan_out(width: int) -> dict[str, list[str]]:
    leaves = {f"leaf{i}": ["root"] for i in range(width)}
    return {"root": [], **leaves, "join": list(leaves)}


def test_tasks_that_finish_together_share_one_transaction_and_each_waits_for_its_own(
    sql_store: Any, monkeypatch: pytest.MonkeyPatch
):
    from contextlib import contextmanager

    commits = []
    committing = threading.local()
    use, put_tasks = sql_store._use, sql_store.put_tasks

    @contextmanager
    def counted(*args: Any, **kwargs: Any) -> Any:
        if getattr(committing, "tasks", None):
            commits.append(committing.tasks)  # a transaction of a commit, and its tasks
        with use(*args, **kwargs) as conn:
            yield conn

    def marked(tasks: list[TaskCommit], **kwargs: Any) -> None:
        committing.tasks = sorted(record.task_id for record, _ in tasks)
        try:
            put_tasks(tasks, **kwargs)
        finally:
            committing.tasks = None

    monkeypatch.setattr(sql_store, "_use", counted)
    monkeypatch.setattr(sql_store, "put_tasks", marked)
    graph = fan_out(8)
    leaves = {t for t in graph if t.startswith("leaf")}
    together = Together(sql_store, leaves)
    stored_before: dict[str, set[str]] = {}

    def watch(event: events.Event) -> None:
        together(event)
        if isinstance(event, events.TaskStarted):  # write-ahead: its dependencies are durable
            stored = {task_id for task_id, _ in sql_store.finished_outputs(event.run_id)}
            stored_before[event.task_id] = stored & set(graph[event.task_id])

    crew = Crew(tasks_of(graph), llm=ScriptedLLM(), store=sql_store)
    result = asyncio.run(crew.arun(on_event=watch))

    assert result.status == "succeeded"
    assert commits == [["root"], sorted(leaves), ["join"]]  # 3 transactions for 10 tasks
    assert stored_before == {task_id: set(deps) for task_id, deps in graph.items()}
    assert sorted(sql_store.finished_outputs(result.run_id)) == [(t, 0) for t in sorted(graph)]
    entries = sorted(e.key for e in sql_store.board_entries(result.run_id))
    assert entries == sorted(graph)  # each with its board version


class Refused:
    """A store on a thread of its own that refuses any commit with ``task_id`` in it, and
    notes the tasks of each commit it is given."""

    blocks = True

    def __init__(self, store: Store, task_id: str) -> None:
        self.store, self.task_id = store, task_id
        self.commits: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_tasks(self, tasks: list[TaskCommit], **kwargs: Any) -> None:
        self.commits.append(sorted(record.task_id for record, _ in tasks))
        if any(record.task_id == self.task_id for record, _ in tasks):
            raise StoreError(f"the store cannot take {self.task_id}")
        self.store.put_tasks(tasks, **kwargs)


def test_a_task_the_store_refuses_fails_alone_and_the_tasks_it_finished_with_commit(
    durable_store: Store,
):
    graph = {"root": [], "a": ["root"], "b": ["root"], "c": ["root"], "after_a": ["a"]}
    refused = Refused(durable_store, "b")
    together = Together(cast(Store, refused), {"a", "b", "c"})
    crew = Crew(tasks_of(graph), llm=ScriptedLLM(), store=cast(Store, refused))
    with pytest.raises(StoreError, match="the store cannot take b"):
        asyncio.run(crew.arun(run_id="r1", on_event=together))

    assert refused.commits[:2] == [["root"], ["a", "b", "c"]]  # together, refused
    assert sorted(refused.commits[2:5]) == [["a"], ["b"], ["c"]]  # then each alone
    stored = durable_store.finished_outputs("r1")
    assert {"root", "a", "c"} <= {task_id for task_id, _ in stored} and ("b", 0) not in stored
    assert {"a", "c"} <= {e.key for e in durable_store.board_entries("r1")}


class Order:
    """A store on a thread of its own that notes its commits and board entries, in order."""

    blocks = True

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_tasks(self, tasks: list[TaskCommit], **kwargs: Any) -> None:
        self.writes.append("commit " + " ".join(sorted(r.task_id for r, _ in tasks)))
        self.store.put_tasks(tasks, **kwargs)

    def put_board_entry(self, record: BoardRecord) -> None:
        self.writes.append(f"{record.kind} {record.key}")
        self.store.put_board_entry(record)


def test_a_note_posted_while_a_commit_is_queued_is_written_before_its_task_commits(
    durable_store: Store,
):
    """b posts a note while a's commit waits on the store's thread, then finishes: it may not
    join a's commit, which would make b durable before its note (a crash between the two would
    lose the note of a finished task)."""
    order = Order(durable_store)
    together = Together(cast(Store, order), {"a", "b"})
    a_posted = asyncio.Event()

    def watch(event: events.Event) -> None:
        together(event)
        if isinstance(event, events.BoardPosted) and event.key == "a":
            a_posted.set()

    async def script(call: Any) -> Any:
        if call.task_id != "b":
            return "ok"
        if call.index == 0:
            await a_posted.wait()
            return Reply(tool_calls=[("post_note", {"key": "hint", "text": "from b"})])
        return "B"

    graph = {"root": [], "a": ["root"], "b": ["root"]}
    crew = Crew(tasks_of(graph), llm=ScriptedLLM(script), store=cast(Store, order))
    result = asyncio.run(crew.arun(on_event=watch))

    assert result.status == "succeeded"
    assert order.writes == ["commit root", "commit a", "note hint", "commit b"]


@pytest.mark.parametrize("blocking", [False, True], ids=["memory", "sqlite"])
def test_a_commit_that_breaks_fails_its_tasks_rather_than_leaving_them_waiting(
    blocking: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Whatever goes wrong in a commit, even outside the store's own errors, the tasks waiting
    for it are told: the run ends, with the error, instead of hanging."""
    from crew.checkpoint import Checkpoint

    real_commit = Checkpoint._commit
    broken = {"left": 1}

    def commit(self: Checkpoint, tasks: list[TaskCommit]) -> list[Exception | None]:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("the commit broke")
        return real_commit(self, tasks)

    monkeypatch.setattr(Checkpoint, "_commit", commit)
    store: Store = SQLiteStore(tmp_path / "crew.db") if blocking else MemoryStore()
    crew = Crew(tasks_of({"a": [], "b": ["a"]}), llm=ScriptedLLM({"a": "A", "b": "B"}), store=store)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            crew.run()
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "the run still waits for a commit that broke"
    assert len(raised) == 1 and "the commit broke" in str(raised[0])  # as a store's error is
