"""The store contract: one suite, run against every backend (memory, SQLite, PostgreSQL).

PostgreSQL runs against a real server: CREW_TEST_POSTGRES_URL (default: a local one), each test in
a schema of its own. Without a reachable server those tests are skipped, except in CI (CI=true),
where that is a failure.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crew.errors import ConfigError, CrewError, LeaseHeldError, StoreError
from crew.store import (
    BatchRecord,
    BoardRecord,
    ReviewRecord,
    RunRecord,
    Store,
    TaskRecord,
    default_holder,
    open_store,
)
from crew.store import postgres as postgres_store
from crew.store import sqlite as sqlite_store
from crew.store.memory import MemoryStore
from crew.store.postgres import PostgresStore
from crew.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0
DATA: dict[str, Any] = {
    "título": "Lisboa ☀️ 🦜",
    "rtl": "שלום",
    "nested": {"list": [1, 2.5, True, None, "日本語"], "empty": {}},
    "quote": 'it\'s "quoted"\n\ttab',
    "big": 2**53,
}


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    name: str
    open: Callable[[], Store]
    """Opens the backend's database again: a new connection (memory: the same store)."""
    sql: Callable[[list[str]], list[list[tuple[Any, ...]]]] | None
    """Runs raw SQL on the database, outside the store (None for memory)."""
    prefix: str = ""
    """Of the table names."""


def _sqlite_sql(path: Path) -> Callable[[list[str]], list[list[tuple[Any, ...]]]]:
    def run(statements: list[str]) -> list[list[tuple[Any, ...]]]:
        with closing(sqlite3.connect(path)) as conn, conn:
            return [conn.execute(s).fetchall() for s in statements]

    return run


def _postgres_sql(url: str) -> Callable[[list[str]], list[list[tuple[Any, ...]]]]:
    import psycopg

    def run(statements: list[str]) -> list[list[tuple[Any, ...]]]:
        with psycopg.connect(url) as conn:  # one transaction, committed on leaving
            cursors = [conn.execute(s) for s in statements]
            return [c.fetchall() if c.description else [] for c in cursors]

    return run


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Backend]:
    opened: list[Store] = []

    def tracked(make: Callable[[], Store]) -> Callable[[], Store]:
        def open_() -> Store:
            opened.append(make())
            return opened[-1]

        return open_

    if request.param == "memory":
        memory = MemoryStore(clock=clock)
        yield Backend("memory", lambda: memory, None)
    elif request.param == "sqlite":
        path = tmp_path / "crew.db"
        make = tracked(lambda: SQLiteStore(path, clock=clock))
        yield Backend("sqlite", make, _sqlite_sql(path))
    else:
        url = request.getfixturevalue("postgres_url")
        make = tracked(lambda: PostgresStore(url, clock=clock))
        yield Backend("postgres", make, _postgres_sql(url), prefix="crew_")
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def new_run(store: Store, run_id: str = "r1", **fields: Any) -> RunRecord:
    fields = {"crew": "trip", "inputs": {"city": "Kyoto"}, "task_ids": ["a", "b"], **fields}
    return store.create_run(run_id, **fields)


def attempt(task_id: str = "a", **fields: Any) -> TaskRecord:
    defaults: dict[str, Any] = {"run_id": "r1", "status": "succeeded", "agent": "Writer"}
    return TaskRecord(task_id=task_id, **{**defaults, **fields})


def board(key: str, version: int, at: float, **fields: Any) -> BoardRecord:
    return BoardRecord(
        **{
            "run_id": "r1",
            "key": key,
            "version": version,
            "text": f"{key} v{version}",
            "author": "Writer",
            "kind": "output",
            "created_at": T0,
            "updated_at": at,
            **fields,
        }
    )


def review(task_id: str = "a", **fields: Any) -> ReviewRecord:
    return ReviewRecord(
        **{"run_id": "r1", "task_id": task_id, "status": "pending", "created_at": T0, **fields}
    )


def race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(0..count-1) on threads released together; their results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # collected for the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# runs


def test_a_run_round_trips_with_unicode_json(store: Store, clock: Clock):
    created = new_run(
        store, source="examples/trip/crew.yaml", inputs=DATA, metadata={"tags": ["ü", 1]}
    )
    assert created == RunRecord(
        run_id="r1",
        crew="trip",
        status="running",
        inputs=DATA,
        task_ids=["a", "b"],
        source="examples/trip/crew.yaml",
        created_at=T0,
        updated_at=T0,
        metadata={"tags": ["ü", 1]},
    )
    assert store.get_run("r1") == created
    assert store.get_run("nope") is None


def test_a_run_id_is_created_once(store: Store):
    new_run(store)
    with pytest.raises(StoreError, match="'r1' is already in the store"):
        new_run(store)


def test_update_run_changes_fields_and_stamps_updated_at(store: Store, clock: Clock):
    new_run(store)
    clock.advance(5)
    usage = {"total": {"calls": 3, "cost_usd": 0.0015}}
    updated = store.update_run("r1", status="succeeded", usage=usage, metadata={"note": "é"})
    assert (updated.status, updated.usage, updated.metadata) == ("succeeded", usage, {"note": "é"})
    assert (updated.created_at, updated.updated_at) == (T0, T0 + 5)
    assert store.get_run("r1") == updated


def test_update_run_refuses_what_it_cannot_change(store: Store):
    new_run(store)
    with pytest.raises(TypeError, match="created_at, nonsense"):
        store.update_run("r1", nonsense=1, created_at=0.0)
    with pytest.raises(ValueError, match="'done' is not one of running"):
        store.update_run("r1", status="done")
    with pytest.raises(StoreError, match="'ghost' is not in the store"):
        store.update_run("ghost", status="failed")
    assert store.get_run("r1").status == "running"  # type: ignore[union-attr]


def test_list_runs_newest_first_with_filters_and_limit(store: Store, clock: Clock):
    for i, (crew, status) in enumerate(
        [("trip", "failed"), ("news", "running"), ("trip", "running")]
    ):
        new_run(store, f"r{i}", crew=crew, status=status)
        clock.advance(1)
    assert [r.run_id for r in store.list_runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in store.list_runs(2)] == ["r2", "r1"]
    assert [r.run_id for r in store.list_runs(None, crew="trip")] == ["r2", "r0"]
    assert [r.run_id for r in store.list_runs(status="running", crew="trip")] == ["r2"]
    assert store.list_runs(status="cancelled") == []


def test_runs_of_a_batch_know_their_line_and_are_listed_by_batch(store: Store, clock: Clock):
    for line, batch in [(1, "b1"), (2, "b1"), (1, "b2")]:
        store.create_run(
            f"{batch}-{line}", crew="leads", inputs={"n": line}, task_ids=["a"],
            batch_id=batch, batch_line=line,
        )  # fmt: skip
        clock.advance(1)
    new_run(store, "alone")
    assert [r.run_id for r in store.list_runs(batch="b1")] == ["b1-2", "b1-1"]
    assert [r.batch_line for r in store.list_runs(None, batch="b2")] == [1]
    assert store.get_run("alone").batch_id is None  # type: ignore[union-attr]
    assert store.get_run("b1-2").batch_id == "b1"  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="batch_id"):
        store.update_run("b1-1", batch_id="b3")


def test_a_batch_round_trips_and_is_replaced_by_its_id(store: Store):
    record = BatchRecord(
        batch_id="b1", crew="leads", source="/x/crew.yaml", inputs_file="leads.jsonl",
        size=5, created_at=T0,
    )  # fmt: skip
    assert store.get_batch("b1") is None
    store.put_batch(record)
    assert store.get_batch("b1") == record
    store.put_batch(dataclasses.replace(record, size=6))
    assert store.get_batch("b1").size == 6  # type: ignore[union-attr]


def test_writes_about_an_unknown_run_are_refused(store: Store):
    writes: list[Callable[[], object]] = [
        lambda: store.put_task(attempt(run_id="ghost")),
        lambda: store.put_board_entry(board("k", 1, T0, run_id="ghost")),
        lambda: store.append_event("ghost", "TaskStarted"),
        lambda: store.put_review(review(run_id="ghost")),
        lambda: store.put_exchange("h", "ghost", model="m", response={}),
        lambda: store.acquire_lease("ghost", "host:1", ttl_s=10),
    ]
    for write in writes:
        with pytest.raises(StoreError, match=r"run 'ghost' is not in the store: create_run"):
            write()


def test_records_check_their_status():
    with pytest.raises(ValueError, match="'done' is not one of"):
        RunRecord(
            run_id="r", crew="c", status="done", inputs={}, task_ids=[], created_at=0, updated_at=0
        )
    with pytest.raises(ValueError, match="'maybe' is not one of pending"):
        review(status="maybe")


# tasks


def test_task_attempts_round_trip_upsert_and_are_durable_on_return(backend: Backend):
    store = backend.open()
    new_run(store)
    first = attempt(
        attempt=1,
        status="failed",
        error="timed out ⏱",
        error_type="TaskTimeoutError",
        usage={"calls": 1},
        started_at=T0,
        finished_at=T0 + 1.25,
    )
    store.put_task(first)
    second = attempt(attempt=2, text="Résumé: 東京", data=DATA, usage={"calls": 2})
    store.put_task(second)
    store.put_task(attempt("b", index=1, text="fan-out"))
    # committed when put_task returned: a second connection sees it
    assert backend.open().task_records("r1") == [
        first,
        second,
        attempt("b", index=1, text="fan-out"),
    ]
    fixed = attempt(attempt=2, text="edited", data=[1, "two"])
    store.put_task(fixed)  # the same identity: replaced, not added
    assert store.task_records("r1") == [first, fixed, attempt("b", index=1, text="fan-out")]
    assert store.task_records("other") == []


def test_finished_outputs_picks_the_latest_succeeded_attempt(store: Store):
    new_run(store)
    for record in [
        attempt("a", attempt=1, status="failed"),
        attempt("a", attempt=3, text="third"),
        attempt("a", attempt=2, text="second"),
        attempt("a", attempt=4, status="failed"),
        attempt("b", attempt=1, status="failed"),
        attempt("c", index=0, text="c0"),
        attempt("c", index=1, text="c1"),
    ]:
        store.put_task(record)
    finished = store.finished_outputs("r1")
    assert sorted(finished) == [("a", 0), ("c", 0), ("c", 1)]
    assert (finished[("a", 0)].attempt, finished[("a", 0)].text) == (3, "third")
    assert finished[("c", 1)].text == "c1"


ODD = "nul\x00 lone\ud800 low\udfff high\udbff end \ufdd0 mark \ufdd00000 not-nul 🦜"
"""Text a model may return that a database cannot take as it is (NUL, lone surrogates), and
the escape's own marker."""


def test_any_text_round_trips_exactly(store: Store):
    data = {ODD: [ODD, {"k": ODD}], "n": 1}
    new_run(store, inputs={"q": ODD}, metadata={ODD: ODD}, source=ODD)
    store.put_task(attempt(text=ODD, data=data, error=ODD, agent=ODD))
    store.put_task(attempt("b", status="failed", error=ODD, error_type="BadRequestError"))
    store.put_board_entry(board(ODD, 1, T0, text=ODD, data=data, author=ODD))
    appended = store.append_event("r1", "TaskFinished", {"output": {"text": ODD}, ODD: data})
    store.put_review(review(text=ODD, data=data, feedback=ODD))
    store.put_exchange("h", "r1", model="m", response={"content": ODD, "raw": data})

    run = store.get_run("r1")
    assert run is not None and (run.inputs, run.metadata, run.source) == (
        {"q": ODD},
        {ODD: ODD},
        ODD,
    )
    assert store.update_run("r1", metadata={"m": ODD}).metadata == {"m": ODD}
    tasks = {r.task_id: r for r in store.task_records("r1")}
    assert (tasks["a"].text, tasks["a"].data, tasks["a"].error, tasks["a"].agent) == (
        ODD,
        data,
        ODD,
        ODD,
    )
    assert tasks["b"].error == ODD
    assert store.finished_outputs("r1")[("a", 0)].text == ODD
    [entry] = store.board_entries("r1")
    assert (entry.key, entry.text, entry.data, entry.author) == (ODD, ODD, data, ODD)
    payload = {"output": {"text": ODD}, ODD: data}
    assert appended.payload == payload
    assert [e.payload for e in store.events("r1")] == [payload]
    got = store.get_review("r1", "a")
    assert got is not None and (got.text, got.data, got.feedback) == (ODD, data, ODD)
    assert store.get_exchange("h", "r1") == {"content": ODD, "raw": data}
    assert store.get_exchange("h") == {"content": ODD, "raw": data}


def test_a_commit_of_several_tasks_round_trips_any_text_and_every_float_exactly(store: Store):
    """put_tasks writes board versions, tasks, exchanges and events in one statement: the same
    values as a lone write, to the last bit of a time."""
    odd = ODD + ' ctl\x01\x1f\t\r\n "q" \\ \\u0000 \u2028'
    data = {odd: [odd, {"k": odd}], "n": 1, "data": DATA}
    times = [T0 + 0.1, 1 / 3, 5e-324, 1.7976931348623157e308, T0 + 1e-6]
    new_run(store, task_ids=list("abcde"))
    store.put_tasks(
        [
            (
                attempt(task_id, text=odd, data=data, agent=odd, started_at=at, finished_at=at,
                        usage={"cost_usd": 0.1 + 0.2}, reason=odd),
                board(f"{odd}{task_id}", 1, at, text=odd, data=data, author=odd),
            )
            for task_id, at in zip("abcde", times, strict=True)
        ],
        events=[("TaskFinished", {"output": {"text": odd}, odd: data})],
        exchanges=[("h", "r1", {"content": odd, "raw": data}), ("h2", "r1", {"n": None})],
    )  # fmt: skip
    tasks = {r.task_id: r for r in store.task_records("r1")}
    for task_id, at in zip("abcde", times, strict=True):
        got = tasks[task_id]
        assert (got.text, got.data, got.agent, got.reason) == (odd, data, odd, odd)
        assert (got.started_at, got.finished_at, got.usage) == (at, at, {"cost_usd": 0.1 + 0.2})
        assert (got.error, got.error_type) == (None, None)
    entries = {e.key: e for e in store.board_entries("r1")}
    assert {key: (e.text, e.data, e.updated_at) for key, e in entries.items()} == {
        f"{odd}{task_id}": (odd, data, at) for task_id, at in zip("abcde", times, strict=True)
    }
    assert [e.payload for e in store.events("r1")] == [{"output": {"text": odd}, odd: data}]
    assert store.get_exchange("h", "r1") == {"content": odd, "raw": data}
    assert store.get_exchange("h2", "r1") == {"n": None}


def test_json_data_must_be_json(store: Store):
    new_run(store)
    with pytest.raises(StoreError, match=r"cannot store data of TaskRecord: .*model_dump"):
        store.put_task(attempt(data=object()))
    with pytest.raises(StoreError, match="NaN"):
        store.update_run("r1", usage={"cost_usd": float("nan")})
    assert store.task_records("r1") == []


# board


def test_the_board_keeps_every_version_in_order(store: Store):
    new_run(store)
    posts = [board("plan", 1, T0), board("notes", 1, T0 + 1, data=DATA, kind="note")]
    posts += [board("plan", 2, T0 + 2, data=["x"]), board("plan", 3, T0 + 3)]
    for post in posts:
        store.put_board_entry(post)
    store.put_board_entry(posts[0])  # writing a version again is harmless (a resume may)
    assert store.board_entries("r1") == posts
    assert store.board_entries("other") == []


# events


def test_a_task_and_its_board_version_are_kept_together_or_not_at_all(store: Store):
    new_run(store)
    store.put_task(attempt("a", text="a v1"), board=board("a", 1, T0))
    assert [(r.task_id, r.text) for r in store.task_records("r1")] == [("a", "a v1")]
    assert [(e.key, e.version) for e in store.board_entries("r1")] == [("a", 1)]

    with pytest.raises(StoreError, match="'ghost' is not in the store"):  # the task fails last
        store.put_task(attempt("b", run_id="ghost"), board=board("b", 1, T0 + 1))
    assert [(e.key, e.version) for e in store.board_entries("r1")] == [("a", 1)]


def test_events_are_numbered_per_run(store: Store, clock: Clock):
    new_run(store)
    new_run(store, "r2")
    first = store.append_event("r1", "TaskStarted", {"task": "a", "ü": ["ß"]})
    clock.advance(1)
    store.append_event("r2", "TaskStarted")
    second = store.append_event("r1", "TaskFinished", {"task": "a"})
    assert (first.seq, first.at, second.seq, second.at) == (1, T0, 2, T0 + 1)
    assert store.events("r1") == [first, second]
    assert store.events("r1", after_seq=1) == [second]
    assert [e.seq for e in store.events("r2")] == [1]
    assert store.events("r2")[0].payload == {}


def test_a_task_commits_with_the_events_before_it_in_one_transaction(store: Store, clock: Clock):
    new_run(store)
    store.append_event("r1", "RunStarted")
    clock.advance(1)
    batch = [("TaskStarted", {"task_id": "a"}), ("BoardPosted", {"key": "a", "ü": ["ß"]})]
    exchange = ("h.0", "gpt", {"content": "A"})
    store.put_task(
        attempt("a", text="A"), board=board("a", 1, T0), events=batch, exchanges=[exchange]
    )
    appended = store.append_events("r1", [("TaskFinished", {"task_id": "a"}), ("Tick", {})])

    stored = store.events("r1")
    assert [(e.seq, e.type, e.payload) for e in stored] == [
        (1, "RunStarted", {}),
        (2, "TaskStarted", {"task_id": "a"}),
        (3, "BoardPosted", {"key": "a", "ü": ["ß"]}),
        (4, "TaskFinished", {"task_id": "a"}),
        (5, "Tick", {}),
    ]
    assert appended == stored[3:] and [e.at for e in stored[1:]] == [T0 + 1] * 4
    assert store.append_events("r1", []) == []
    assert [r.text for r in store.task_records("r1")] == ["A"]
    assert store.get_exchange("h.0", "r1") == {"content": "A"}

    # all or nothing: an event that is not JSON keeps the task and its board version out too
    with pytest.raises(StoreError, match="cannot store"):
        store.put_task(attempt("b"), board=board("b", 1, T0), events=[("TaskStarted", {"x": {1}})])
    with pytest.raises(StoreError, match="is not in the store"):
        store.append_events("ghost", [("TaskStarted", {})])
    assert [r.task_id for r in store.task_records("r1")] == ["a"]
    assert [e.key for e in store.board_entries("r1")] == ["a"]
    assert len(store.events("r1")) == 5


def test_tasks_that_finish_together_commit_together_or_not_at_all(store: Store):
    new_run(store)
    store.append_event("r1", "RunStarted")
    batch = [("TaskStarted", {"task_id": "a"}), ("TaskStarted", {"task_id": "b"})]
    exchanges = [("h.a", "gpt", {"content": "old"}), ("h.b", "gpt", {"content": "B"})]
    exchanges.append(("h.a", "gpt", {"content": "A"}))  # the same request again: the last kept
    records = [
        attempt("a", text=ODD, data=DATA, usage={"calls": 1}, started_at=T0 + 0.1, reason=ODD),
        attempt("b", index=2, attempt=3, text="B", error=ODD, finished_at=T0 + 2.75),
        attempt("c", text="C", usage_by_agent={"Writer": {"calls": 2}}),
    ]
    versions = [board("a", 1, T0, text=ODD, data=DATA), board("c", 1, T0 + 1)]
    store.put_tasks(
        [(records[0], versions[0]), (records[1], None), (records[2], versions[1])],
        events=batch, exchanges=exchanges,
    )  # fmt: skip

    assert store.task_records("r1") == records  # each as it was, whatever the backend sent
    assert store.board_entries("r1") == versions
    assert [(e.seq, e.type) for e in store.events("r1")] == [
        (1, "RunStarted"),
        (2, "TaskStarted"),
        (3, "TaskStarted"),
    ]
    assert store.get_exchange("h.a", "r1") == {"content": "A"}
    assert store.get_exchange("h.b", "r1") == {"content": "B"}

    # one attempt the store refuses keeps the others, their board versions and events out too
    with pytest.raises(StoreError, match="cannot store data of TaskRecord"):
        store.put_tasks(
            [(attempt("d"), board("d", 1, T0)), (attempt("e", data=object()), None)],
            events=[("TaskFinished", {"task_id": "d"})],
        )
    with pytest.raises(StoreError, match="is not in the store"):  # refused by the database
        store.put_tasks(
            [(attempt("d"), board("d", 1, T0)), (attempt("e"), board("e", 1, T0, run_id="x"))],
            events=[("TaskFinished", {"task_id": "d"})],
        )
    assert [r.task_id for r in store.task_records("r1")] == ["a", "b", "c"]
    assert [e.key for e in store.board_entries("r1")] == ["a", "c"]
    assert len(store.events("r1")) == 3


def test_tasks_committed_together_are_of_one_run(store: Store):
    new_run(store)
    new_run(store, "r2")
    with pytest.raises(ValueError, match=r"of one run, not of \['r1', 'r2'\]"):
        store.put_tasks([(attempt("a"), None), (attempt("b", run_id="r2"), None)])
    with pytest.raises(ValueError, match="of one run"):
        store.put_tasks([])
    assert store.task_records("r1") == store.task_records("r2") == []


def test_a_task_keeps_its_warning_and_its_usage_by_agent(store: Store):
    new_run(store)
    by_agent = {"Writer": {"calls": 2, "cost_usd": 0.5}, "Editor": {"calls": 1}}
    store.put_task(attempt("loop", reason="out of rounds", usage_by_agent=by_agent))
    [kept] = store.task_records("r1")
    assert (kept.reason, kept.usage_by_agent) == ("out of rounds", by_agent)
    assert store.finished_outputs("r1")[("loop", 0)] == kept


def test_concurrent_appends_get_every_seq_once(backend: Backend):
    stores = [backend.open(), backend.open()]  # two connections, where the backend has any
    new_run(stores[0])

    def append(i: int) -> list[int]:
        return [stores[i % 2].append_event("r1", "Tick", {"thread": i}).seq for _ in range(25)]

    results = race(4, append)
    seqs = [seq for result in results for seq in result]
    assert sorted(seqs) == list(range(1, 101))
    assert all(result == sorted(result) for result in results)
    assert [e.seq for e in stores[1].events("r1")] == list(range(1, 101))


# reviews


def test_reviews_round_trip_upsert_and_filter(store: Store):
    new_run(store)
    new_run(store, "r2")
    store.put_review(review("a", text="Draft ✍", data=DATA))
    store.put_review(review("b", created_at=T0 + 1))
    store.put_review(review("a", run_id="r2", created_at=T0 + 2))
    decided = review(
        "b",
        status="edited",
        text="Better",
        feedback="tighter",
        created_at=T0 + 1,
        decided_at=T0 + 9,
    )
    store.put_review(decided)
    assert store.get_review("r1", "a") == review("a", text="Draft ✍", data=DATA)
    assert store.get_review("r1", "b") == decided
    assert store.get_review("r1", "zzz") is None
    assert [(r.run_id, r.task_id) for r in store.reviews()] == [
        ("r1", "a"),
        ("r1", "b"),
        ("r2", "a"),
    ]
    assert [r.task_id for r in store.reviews("r1")] == ["a", "b"]
    assert [(r.run_id, r.task_id) for r in store.reviews(status="pending")] == [
        ("r1", "a"),
        ("r2", "a"),
    ]
    assert [r.task_id for r in store.reviews("r1", status="edited")] == ["b"]


# exchanges


def test_exchanges_are_found_by_hash_with_or_without_a_run(store: Store, clock: Clock):
    new_run(store)
    new_run(store, "r2")
    new_run(store, "r3")
    answer = {"choices": [{"message": {"content": "Olá 👋"}}], "usage": {"total_tokens": 7}}
    store.put_exchange("h1", "r1", model="openai/gpt-4o-mini", response=answer)
    clock.advance(1)
    store.put_exchange("h1", "r2", model="openai/gpt-4o-mini", response={"n": 2})
    assert store.get_exchange("h1") == {"n": 2}  # the latest of any run
    assert store.get_exchange("h1", "r1") == answer
    assert store.get_exchange("h1", "r3") is None
    assert store.get_exchange("h2") is None
    clock.advance(1)
    store.put_exchange("h1", "r1", model="m", response={"n": 3})  # replaces r1's
    assert (store.get_exchange("h1", "r1"), store.get_exchange("h1")) == ({"n": 3}, {"n": 3})


# pruning


def fill(store: Store, run_id: str) -> None:
    """A run with something in every table."""
    new_run(store, run_id)
    store.put_task(attempt(run_id=run_id))
    store.put_board_entry(board("k", 1, T0, run_id=run_id))
    store.append_event(run_id, "TaskFinished")
    store.put_review(review(run_id=run_id, status="approved"))  # a pending one is never pruned
    store.put_exchange("h", run_id, model="m", response={"run": run_id})
    store.acquire_lease(run_id, "host:1", ttl_s=1)


TABLES = ["tasks", "board", "events", "reviews", "exchanges", "leases"]


def rows_of(backend: Backend, run_id: str) -> dict[str, int]:
    """How many rows each table holds for the run (memory: nothing to count)."""
    if backend.sql is None:
        return {}
    counts = backend.sql(
        [f"SELECT COUNT(*) FROM {backend.prefix}{t} WHERE run_id = '{run_id}'" for t in TABLES]
    )
    return {table: count[0][0] for table, count in zip(TABLES, counts, strict=True)}


def test_delete_runs_by_age_deletes_everything_of_those_runs(backend: Backend, clock: Clock):
    store = backend.open()
    for run_id in ["first", "second", "third"]:
        fill(store, run_id)
        clock.advance(10)
    store.update_run("second", status="failed")  # at T0 + 30: touched last
    clock.advance(100)  # now T0 + 130: every lease has expired
    assert store.delete_runs(older_than_s=105) == 2  # those untouched since T0 + 25
    assert [r.run_id for r in store.list_runs()] == ["second"]
    for run_id in ["first", "third"]:
        assert store.task_records(run_id) == store.board_entries(run_id) == []
        assert store.events(run_id) == store.reviews(run_id) == []
        assert store.get_exchange("h", run_id) is None
        assert set(rows_of(backend, run_id).values()) <= {0}
    assert store.get_exchange("h") == {"run": "second"}
    assert set(rows_of(backend, "second").values()) <= {1}


def test_delete_runs_keeps_the_newest(store: Store, clock: Clock):
    for i in range(5):
        new_run(store, f"r{i}")
        clock.advance(10)
    assert store.delete_runs(keep=3) == 2
    assert [r.run_id for r in store.list_runs()] == ["r4", "r3", "r2"]
    assert store.delete_runs(keep=3) == 0
    assert store.delete_runs(older_than_s=25, keep=1) == 1  # only r2 is untouched for 25 s
    assert [r.run_id for r in store.list_runs()] == ["r4", "r3"]
    with pytest.raises(ValueError, match="older_than_s, keep, or both"):
        store.delete_runs()


def test_delete_runs_spares_a_run_with_a_live_lease(store: Store, clock: Clock):
    new_run(store, "busy")
    new_run(store, "idle")
    store.acquire_lease("busy", "host:1", ttl_s=60)
    assert store.delete_runs(keep=0) == 1
    assert [r.run_id for r in store.list_runs()] == ["busy"]
    clock.advance(61)
    assert store.delete_runs(older_than_s=0) == 1
    assert store.list_runs() == []


# leases


def test_a_lease_is_held_renewed_and_released(store: Store, clock: Clock):
    new_run(store)
    store.acquire_lease("r1", "host-a:1", ttl_s=30)
    store.acquire_lease("r1", "host-a:1", ttl_s=30)  # our own: renewed
    with pytest.raises(LeaseHeldError, match=r"'r1' is leased by host-a:1 for 30 s more") as held:
        store.acquire_lease("r1", "host-b:2", ttl_s=30)
    assert (held.value.holder, held.value.run_id, held.value.expires_at) == (
        "host-a:1",
        "r1",
        T0 + 30,
    )
    assert isinstance(held.value, StoreError) and isinstance(held.value, CrewError)
    clock.advance(20)
    store.renew_lease("r1", "host-a:1", ttl_s=30)
    clock.advance(20)  # past the first expiry, within the renewed one
    with pytest.raises(LeaseHeldError, match="for 10 s more"):
        store.acquire_lease("r1", "host-b:2", ttl_s=30)
    store.release_lease("r1", "host-b:2")  # not theirs: nothing happens
    with pytest.raises(LeaseHeldError):
        store.acquire_lease("r1", "host-b:2", ttl_s=30)
    store.release_lease("r1", "host-a:1")
    store.acquire_lease("r1", "host-b:2", ttl_s=30)


def test_an_expired_lease_is_taken_over(store: Store, clock: Clock):
    new_run(store)
    store.acquire_lease("r1", "crashed:1", ttl_s=10)
    clock.advance(10.5)
    store.acquire_lease("r1", "resumer:2", ttl_s=10)
    with pytest.raises(LeaseHeldError, match="leased by resumer:2"):
        store.renew_lease("r1", "crashed:1", ttl_s=10)  # the old holder learns it lost the run
    store.release_lease("r1", "crashed:1")
    with pytest.raises(LeaseHeldError, match="leased by resumer:2"):
        store.acquire_lease("r1", "crashed:1", ttl_s=10)


def test_a_running_run_whose_lease_expired_reads_as_interrupted(store: Store, clock: Clock):
    new_run(store, "killed")
    new_run(store, "live")
    new_run(store, "done")
    store.acquire_lease("killed", "gone:1", ttl_s=10)  # then SIGKILL: never renewed, released
    store.acquire_lease("live", "here:2", ttl_s=60)
    store.update_run("done", status="succeeded")
    clock.advance(30)
    store.renew_lease("live", "here:2", ttl_s=60)

    assert store.get_run("killed").status == "interrupted"  # type: ignore[union-attr]
    assert {r.run_id: r.status for r in store.list_runs()} == {
        "killed": "interrupted",
        "live": "running",
        "done": "succeeded",
    }
    assert [r.run_id for r in store.list_runs(status="interrupted")] == ["killed"]
    assert [r.run_id for r in store.list_runs(status="running")] == ["live"]

    store.acquire_lease("killed", "resumer:3", ttl_s=10)  # a resume takes it over
    assert store.get_run("killed").status == "running"  # type: ignore[union-attr]


def test_renewing_a_lease_nobody_holds_is_an_error(store: Store):
    new_run(store)
    with pytest.raises(StoreError, match="no lease held by host:1") as gone:
        store.renew_lease("r1", "host:1", ttl_s=10)
    assert not isinstance(gone.value, LeaseHeldError)
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        store.acquire_lease("r1", "host:1", ttl_s=0)


def test_racing_for_a_lease_exactly_one_wins(backend: Backend, clock: Clock):
    stores = [backend.open(), backend.open()]  # two connections, where the backend has any
    for run in range(12):
        run_id = f"r{run}"
        new_run(stores[0], run_id)
        if run % 2:  # a crashed holder's expired lease, for the racers to take over
            stores[0].acquire_lease(run_id, "crashed:1", ttl_s=1)
            clock.advance(2)
        results = race(4, lambda i: stores[i % 2].acquire_lease(run_id, f"h:{i}", ttl_s=60))  # noqa: B023
        winners = [i for i, result in enumerate(results) if result is None]
        assert len(winners) == 1, results
        losers = [r for r in results if r is not None]
        assert all(isinstance(r, LeaseHeldError) for r in losers), losers
        assert {r.holder for r in losers} == {f"h:{winners[0]}"}


def test_default_holder_is_host_and_pid():
    assert default_holder().endswith(f":{os.getpid()}")


# what the databases add: durability, files, migrations, errors


def test_a_reopened_store_has_its_data(backend: Backend):
    store = backend.open()
    fill(store, "r1")
    again = backend.open()
    assert again.get_run("r1") == store.get_run("r1")
    assert again.task_records("r1") == store.task_records("r1")
    if backend.sql is not None:
        versions = backend.sql([f"SELECT version FROM {backend.prefix}schema_version"])[0]
        assert versions == [
            (1,),
            (2,),
            (3,),
            (4,),
            (5,),
            (6,),
        ]  # applied once, not again on reopening


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
def test_an_older_database_is_migrated_and_keeps_its_data(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
):
    if name == "sqlite":
        path = tmp_path / "old.db"
        sql, migrations, prefix = _sqlite_sql(path), sqlite_store.MIGRATIONS, ""
        current: Callable[[], Store] = lambda: SQLiteStore(path, clock=clock)  # noqa: E731
    else:
        url = request.getfixturevalue("postgres_url")
        sql, migrations, prefix = _postgres_sql(url), postgres_store.MIGRATIONS, "crew_"
        current = lambda: PostgresStore(url, clock=clock)  # noqa: E731
    # What release 1 created: its schema, and a run in it.
    sql(
        [
            f"CREATE TABLE {prefix}schema_version (version INTEGER PRIMARY KEY,"
            " applied_at DOUBLE PRECISION NOT NULL)",
            *migrations[0],
            f"INSERT INTO {prefix}schema_version VALUES (1, 0)",
            f"INSERT INTO {prefix}runs (run_id, crew, status, inputs, task_ids, source,"
            " created_at, updated_at, usage, parent_run_id, metadata) VALUES ('old', 'trip',"
            " 'succeeded', '{\"city\": \"Kyoto\"}', '[\"a\"]', 'crew.yaml', 1.5, 2.5, '{}',"
            " NULL, '{}')",
        ]
    )
    with closing(current()) as store:  # type: ignore[type-var]
        assert store.get_run("old") == RunRecord(
            run_id="old",
            crew="trip",
            status="succeeded",
            inputs={"city": "Kyoto"},
            task_ids=["a"],
            source="crew.yaml",
            created_at=1.5,
            updated_at=2.5,
        )
        store.put_review(review(run_id="old"))  # the tables of version 2 are there
        store.acquire_lease("old", "host:1", ttl_s=5)
        assert store.append_event("old", "RunResumed").seq == 1
        assert store.list_runs(batch="b1") == []  # version 6: runs know their batch
    versions = sql([f"SELECT version FROM {prefix}schema_version ORDER BY version"])[0]
    assert versions == [(1,), (2,), (3,), (4,), (5,), (6,)]
    sql([f"INSERT INTO {prefix}schema_version VALUES (99, 0)"])
    with pytest.raises(StoreError, match="schema version 99, newer than this crew knows"):
        current()


def test_the_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path):
    path = tmp_path / "state" / "crew.db"
    with closing(SQLiteStore(path)) as store:
        new_run(store)
        assert store._conn.execute("PRAGMA synchronous").fetchone() == {"synchronous": 1}  # NORMAL
        assert store._conn.execute("PRAGMA busy_timeout").fetchone() == {"timeout": 5000}
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for file in [path, path.with_name("crew.db-wal"), path.with_name("crew.db-shm")]:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path, monkeypatch):
    """A commit never checkpoints (its fsyncs would stall the task): the store's connection has
    SQLite's automatic checkpoints off, and its own thread moves the WAL into the database file
    every CHECKPOINT_EVERY commits."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "crew.db"
    store = SQLiteStore(path)
    try:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == {
            "wal_autocheckpoint": 0
        }
        new_run(store)
        for n in range(12):
            store.put_task(attempt(f"t{n}", text="x" * 5000))
        thread = store._checkpoints._thread
        assert thread is not None and thread.name == "crew-sqlite-checkpoint"
        store._checkpoints._due.set()  # one more, and wait until it has been made
        deadline = time.monotonic() + 10
        while store._checkpoints._due.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        copy = tmp_path / "alone.db"
        copy.write_bytes(path.read_bytes())  # the database file without its WAL
        with closing(sqlite3.connect(copy)) as conn:
            stored = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        assert stored >= 10  # at least those committed before the last checkpoint asked for
    finally:
        store.close()
    assert not thread.is_alive()


def test_sqlite_failures_are_store_errors_naming_the_file_and_the_fix(tmp_path: Path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(StoreError, match=r"cannot open the SQLite store at .*afile/crew.db: .*"
                       r"\(check the folder exists and is writable\)") as failed:  # fmt: skip
        SQLiteStore(tmp_path / "afile" / "crew.db")
    assert isinstance(failed.value.__cause__, OSError)
    (tmp_path / "junk.db").write_bytes(b"not a database, just bytes " * 100)
    with pytest.raises(StoreError, match=r"store at .*junk.db: file is not a database .*move"):
        SQLiteStore(tmp_path / "junk.db")
    store = SQLiteStore(tmp_path / "crew.db")
    store.close()
    with pytest.raises(StoreError, match=r"cannot read a run: .*closed.* open it again") as closed:
        store.get_run("r1")
    assert isinstance(closed.value.__cause__, sqlite3.Error)


def test_postgres_failures_are_store_errors_without_the_password():
    pytest.importorskip("psycopg")
    url = "postgresql://crew:s3cret@127.0.0.1:1/app"
    with pytest.raises(StoreError, match="cannot open the PostgreSQL store at") as failed:
        PostgresStore(url, connect_timeout_s=2)
    assert "s3cret" not in str(failed.value)
    assert "postgresql://crew:***@127.0.0.1:1/app" in str(failed.value)
    assert "check the server is running" in str(failed.value)


def test_postgres_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs psycopg: pip install 'crew\[postgres\]'"):
        open_store("postgresql://crew@127.0.0.1/app")


def test_a_lost_postgres_connection_is_reopened_and_the_call_tried_again(
    postgres_url: str, _postgres: Any, caplog: pytest.LogCaptureFixture
):
    with closing(PostgresStore(postgres_url)) as store:
        new_run(store)
        pid = store._conn.info.backend_pid
        _postgres.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.get_run("r1") is not None
        assert store._conn.info.backend_pid != pid
    [retried] = [r for r in caplog.records if r.name == "crew.store"]
    assert "cannot read a run: terminating connection" in retried.getMessage()
    assert "trying again in" in retried.getMessage()


# open_store


def test_open_store_understands_every_url_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CREW_STORE")  # conftest points in-process runs at memory
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    cases = {
        f"sqlite:///{tmp_path}/a.db": tmp_path / "a.db",
        "sqlite:///relative/b.sqlite": Path("relative/b.sqlite"),
        "c.db": Path("c.db"),
        None: Path(".crew/crew.db"),
        "": Path(".crew/crew.db"),
    }
    for i, (url, path) in enumerate(cases.items()):
        with closing(open_store(url, clock=clock)) as store:  # type: ignore[type-var]
            assert isinstance(store, SQLiteStore) and store.path == path, url
            assert (tmp_path / path).is_file()
            assert new_run(store, f"r{i}").created_at == T0
    monkeypatch.setenv("CREW_STORE", "memory")
    assert isinstance(open_store(), MemoryStore)
    assert isinstance(open_store("d.db"), SQLiteStore)  # an explicit URL wins


def test_open_store_names_the_accepted_forms(monkeypatch: pytest.MonkeyPatch):
    for url in ["mysql://localhost/x", "sqlite:///", "crew.json"]:
        with pytest.raises(ConfigError, match=r"names no known store\. Use 'memory', 'sqlite:///"):
            open_store(url)
    monkeypatch.setenv("CREW_STORE", "redis://x")
    with pytest.raises(ConfigError, match=r"^CREW_STORE 'redis://x' names no known store"):
        open_store()


def test_open_store_opens_postgres(postgres_url: str):
    with closing(open_store(postgres_url)) as store:  # type: ignore[type-var]
        assert isinstance(store, PostgresStore)
        new_run(store)
        assert "PostgresStore('postgresql://" in repr(store)


def test_importing_the_store_loads_no_database_driver_it_does_not_use():
    code = "import sys, crew, crew.store.sqlite; print(sorted({'psycopg'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
