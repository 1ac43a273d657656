"""Store glitches: a dropped PostgreSQL connection, a server away for a while, SQLite locked by
another process. A glitch within the store's retry budget never fails a task, and no write is
lost or made twice; a longer one is a StoreUnavailableError that names the store and the cause.

PostgreSQL runs against a real server (see tests/conftest.py), reached directly or through a
loopback proxy that the tests can cut, which is how a server restart or a broken network looks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from crew import LLM, Agent, Crew, Task, events
from crew.errors import StoreError, StoreUnavailableError
from crew.retry import RetryPolicy, retrying_for
from crew.store import BoardRecord, ReviewRecord, Store, TaskRecord
from crew.store import sql as sql_store
from crew.store.postgres import PostgresStore
from crew.store.sql import SQLStore
from crew.store.sqlite import SQLiteStore
from crew.testserver import FakeOpenAIServer, ServerReply

WORKER = Agent(role="Worker", goal="Work")
GRAPH = {"a": [], "b": [], "c": ["a", "b"], "d": ["c"]}
SECRET = "hunter2-not-for-logs"


def crew_on(store: Store, llm: LLM) -> Crew:
    tasks = [
        Task(id=t, description=f"Do {t}", agent=WORKER, depends_on=d) for t, d in GRAPH.items()
    ]
    return Crew(tasks, llm=llm, store=store)


def slow_replies(server: FakeOpenAIServer, latency_ms: float) -> None:
    for task_id in GRAPH:
        server.script(task_id, ServerReply(text=f"output of {task_id}", latency_ms=latency_ms))


def run_with(crew: Crew, on_event: Callable[[events.Event], None]) -> Any:
    return asyncio.run(crew.arun(on_event=on_event))


def assert_stored_once(store: Store, server: FakeOpenAIServer, result: Any) -> None:
    """The run succeeded, each model call was made once, each output and event stored once."""
    assert result.status == "succeeded", {t: r.error for t, r in result.tasks.items()}
    assert sorted(call.key for call in server.calls) == sorted(GRAPH)  # no call repeated
    records = store.task_records(result.run_id)
    assert [(r.task_id, r.attempt, r.status, r.text) for r in records] == [
        (t, 1, "succeeded", f"output of {t}") for t in sorted(GRAPH)
    ]
    board = sorted((e.key, e.version) for e in store.board_entries(result.run_id))
    assert board == [(t, 1) for t in sorted(GRAPH)]
    stored = store.events(result.run_id)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    kinds = [e.type for e in stored]
    assert kinds.count("TaskFinished") == len(GRAPH) and kinds.count("RunFinished") == 1
    assert "SinkFailed" not in kinds
    run = store.get_run(result.run_id)
    assert run is not None and run.status == "succeeded"


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "crew.store"]


# the settings


def test_the_default_budget_outlasts_a_30_second_glitch(tmp_path: Path):
    assert sql_store.RETRY_BUDGET_S >= 30
    with closing(SQLiteStore(tmp_path / "crew.db")) as store:
        assert store.retry_budget_s >= 30


def test_a_glitch_as_long_as_the_budget_is_outlasted_by_a_last_try_when_it_is_spent():
    started = time.monotonic()

    def write() -> str:
        if time.monotonic() - started < 0.5:
            raise StoreUnavailableError("database is locked")
        return "written"

    slow = RetryPolicy(initial_s=10, max_s=10, jitter_s=0)  # a wait far past the budget is cut
    assert retrying_for(write, 0.5, slow, retry_if=lambda e: True) == "written"
    assert 0.5 <= time.monotonic() - started < 5


def test_a_negative_budget_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="retry_budget_s must be >= 0"):
        SQLiteStore(tmp_path / "crew.db", retry_budget_s=-1)


# PostgreSQL: a connection dropped mid-run


def test_postgres_connections_terminated_mid_run_fail_no_task(
    postgres_url: str,
    _postgres: Any,
    server: FakeOpenAIServer,
    fake_llm: LLM,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="crew.store")
    slow_replies(server, latency_ms=800)
    store = PostgresStore(postgres_url)
    killed: list[int] = []

    def terminate() -> None:
        if store._conn.closed:
            return  # killed already, not reopened yet
        pid = store._conn.info.backend_pid
        _postgres.execute("SELECT pg_terminate_backend(%s)", (pid,))
        killed.append(pid)

    timers: list[threading.Timer] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.TaskStarted):
            terminate()  # the checkpoint's write of this very event meets a dead connection
            timers.append(threading.Timer(0.2, terminate))  # and so does the task's commit
            timers[-1].start()  # (with its model exchange), made when the (slow) reply comes

    with closing(store):
        result = run_with(crew_on(store, fake_llm), on_event)
        for timer in timers:
            timer.join()
        assert len(killed) >= len(GRAPH)
        assert_stored_once(store, server, result)
    logged = retries_logged(caplog)
    # the failure the fault harness found, now tried again: "terminating connection due to
    # administrator command", or "server closed the connection" if that was read first. Which
    # write meets it (the task's commit, a batch of events, the lease) depends on timing.
    assert any(m.startswith("cannot ") or " cannot " in m for m in logged), logged
    assert any("terminat" in m or "closed" in m for m in logged), logged
    assert all("trying again in" in m for m in logged)


# PostgreSQL: the server away for a while (through a proxy the test cuts)


def _upstream(url: str) -> Callable[[], socket.socket]:
    """How to reach the PostgreSQL server of ``url``: over TCP or its unix socket."""
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port or 5432

    def connect() -> socket.socket:
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            sock = socket.create_connection((host, port))
        return sock

    return connect


class Proxy:
    """A loopback TCP proxy to the database that can be cut (its connections dropped, new ones
    refused, as by a server that is restarting) and restored."""

    def __init__(self, upstream: Callable[[], socket.socket]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()
                continue
            server = self.upstream()
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        for sock in (source, sink):
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with suppress(OSError):  # already shut
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            dropped, self.sockets = self.sockets, []
        for sock in dropped:
            self._drop(sock)

    def restore(self) -> None:
        self.up = True

    def url(self, url: str, *, password: str = "") -> str:
        """``url`` through the proxy (TCP on loopback), with ``password`` if given."""
        parts = urlsplit(url)
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("host="))
        user = parts.username or "postgres"
        login = f"{user}:{password}" if password else user
        return f"postgresql://{login}@127.0.0.1:{self.port}{parts.path}?{query}"

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[Proxy]:
    proxy = Proxy(_upstream(postgres_url))
    yield proxy
    proxy.close()


def test_a_postgres_server_away_for_a_while_fails_no_task(
    postgres_url: str,
    proxy: Proxy,
    server: FakeOpenAIServer,
    fake_llm: LLM,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="crew.store")
    slow_replies(server, latency_ms=300)
    store = PostgresStore(proxy.url(postgres_url, password=SECRET))
    outage: list[float] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.TaskStarted) and event.task_id == "c" and not outage:
            proxy.cut()  # the server goes away while c's model call is in flight ...
            outage.append(time.monotonic())
            threading.Timer(1.5, proxy.restore).start()  # ... and comes back 1.5 s later

    with closing(store):
        result = run_with(crew_on(store, fake_llm), on_event)
        assert outage  # the glitch did happen mid-run
        assert_stored_once(store, server, result)
    logged = retries_logged(caplog)
    assert len(logged) >= 2  # the write was tried more than once while the server was away
    assert not any(SECRET in m for m in logged)


def test_a_postgres_outage_longer_than_the_budget_is_a_clear_store_error(
    postgres_url: str, proxy: Proxy, caplog: pytest.LogCaptureFixture
):
    with closing(
        PostgresStore(proxy.url(postgres_url, password=SECRET), retry_budget_s=1)
    ) as store:
        store.create_run("r1", crew="trip", inputs={}, task_ids=["a"])
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as failed:
            store.put_task(TaskRecord(run_id="r1", task_id="a", status="succeeded", text="A"))
        assert 1 <= time.monotonic() - started < 10
        message = str(failed.value)
        assert message.startswith(
            f"the PostgreSQL store at postgresql://postgres:***@127.0.0.1:{proxy.port}/"
        )
        assert "cannot record a task: " in message and "retry_budget_s=1 s" in message
        assert "gave up after" in message
        assert SECRET not in message and SECRET not in caplog.text
        assert isinstance(failed.value, StoreError) and not failed.value.retryable
        proxy.restore()
        store.put_task(TaskRecord(run_id="r1", task_id="a", status="succeeded", text="A"))
        assert [r.text for r in store.task_records("r1")] == ["A"]


# SQLite: another process holds the write lock


@contextmanager
def locked_for(path: Path, hold_s: float) -> Iterator[Callable[[], None]]:
    """Another connection takes the write lock when the yielded function is called (which
    returns once it has), and holds it ``hold_s`` seconds (a thread with its own connection:
    SQLite locks the file for it as for another process)."""
    go, taken = threading.Event(), threading.Event()

    def take() -> None:
        go.set()
        assert taken.wait(10)

    def hold() -> None:
        go.wait()
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(hold_s)
            conn.execute("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        yield take
    finally:
        go.set()
        holder.join()
    assert taken.is_set()


def test_sqlite_locked_by_another_process_mid_run_fails_no_task(
    tmp_path: Path, server: FakeOpenAIServer, fake_llm: LLM, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="crew.store")
    slow_replies(server, latency_ms=800)
    path = tmp_path / "crew.db"
    # sqlite3 itself waits 0.2 s for the lock; the store's retries bridge the rest of the 2 s
    with closing(SQLiteStore(path, busy_timeout_s=0.2)) as store, locked_for(path, 2.0) as lock:

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.TaskStarted) and event.task_id == "c":
                threading.Timer(0.1, lock).start()  # locked while c's model call runs

        started = time.monotonic()
        result = run_with(crew_on(store, fake_llm), on_event)
        assert time.monotonic() - started >= 2.0  # the run did wait for the lock
        assert_stored_once(store, server, result)
    logged = retries_logged(caplog)
    assert any("cannot record a task and its events: database is locked" in m for m in logged)


def test_sqlite_locked_longer_than_the_budget_is_a_clear_store_error(tmp_path: Path):
    path = tmp_path / "crew.db"
    with closing(SQLiteStore(path, busy_timeout_s=0.1, retry_budget_s=0.5)) as store:
        store.create_run("r1", crew="trip", inputs={}, task_ids=["a"])
        with locked_for(path, 2.0) as lock:
            lock()
            with pytest.raises(StoreUnavailableError) as failed:
                store.append_event("r1", "TaskStarted", {"task_id": "a"})
        message = str(failed.value)
        assert message.startswith(f"the SQLite store at {path} cannot record an event: ")
        assert "database is locked" in message and "retry_budget_s=0.5 s" in message
        assert "another process held its write lock" in message
        assert store.events("r1") == []  # nothing half-written
        store.append_event("r1", "TaskStarted", {"task_id": "a"})
        assert [e.seq for e in store.events("r1")] == [1]


# a try again after a commit whose reply was lost writes nothing twice


@contextmanager
def replies_lost(store: SQLStore, actions: set[str], *, sent: bool = True) -> Iterator[set[str]]:
    """The first try of each of ``actions`` fails as if the connection dropped: after its commit
    (``sent``: the reply was lost), or before anything reached the database."""
    real = store._use
    pending = set(actions)

    @contextmanager
    def use(action: str, run_id: str = "") -> Iterator[Any]:
        lost = StoreUnavailableError(f"{action}: server closed the connection unexpectedly")
        if not sent and action in pending:
            pending.discard(action)
            raise lost
        with real(action, run_id) as conn:
            yield conn
        if action in pending:  # left the connection: committed (see _use and _tx)
            pending.discard(action)
            raise lost

    store._use = use  # type: ignore[method-assign]
    try:
        yield pending
    finally:
        del store._use


@pytest.fixture(params=["sqlite", "postgres"])
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStore]:
    if request.param == "sqlite":
        store: SQLStore = SQLiteStore(tmp_path / "crew.db")
    else:
        store = PostgresStore(request.getfixturevalue("postgres_url"))
    with closing(store):
        yield store


def test_writes_tried_again_after_a_lost_reply_are_not_made_twice(sql_backend: SQLStore):
    store = sql_backend
    writes = {
        "create a run", "update a run", "record a task", "record a task and its board version",
        "record a board entry", "record an event", "record a review", "record a model exchange",
        "take a lease", "renew a lease", "release a lease",
    }  # fmt: skip
    with replies_lost(store, writes) as pending:
        run = store.create_run("r1", crew="trip", inputs={"city": "Kyoto"}, task_ids=["a", "b"])
        assert (run.run_id, run.crew, run.inputs) == ("r1", "trip", {"city": "Kyoto"})
        store.acquire_lease("r1", "host:1", ttl_s=30)
        store.renew_lease("r1", "host:1", ttl_s=30)
        first = store.append_event("r1", "RunStarted", {"crew": "trip"})
        store.append_event("r1", "TaskStarted", {"task_id": "a"})
        store.put_task(TaskRecord(run_id="r1", task_id="a", status="failed", error="boom"))
        board = BoardRecord(run_id="r1", key="a", version=1, text="A", author="Worker",
                            kind="output", created_at=1.0, updated_at=1.0)  # fmt: skip
        store.put_task(
            TaskRecord(run_id="r1", task_id="a", attempt=2, status="succeeded", text="A"),
            board=board,
        )
        store.put_board_entry(BoardRecord(run_id="r1", key="n", version=1, text="note",
                                          author="Worker", kind="note", created_at=2.0,
                                          updated_at=2.0))  # fmt: skip
        store.put_review(ReviewRecord(run_id="r1", task_id="a", status="pending", created_at=3.0))
        store.put_exchange("h.0", "r1", model="m", response={"content": "A"})
        store.update_run("r1", status="succeeded")
        store.release_lease("r1", "host:1")
        assert not pending  # every write had its reply lost once
    assert first.seq == 1
    assert [(e.seq, e.type) for e in store.events("r1")] == [(1, "RunStarted"), (2, "TaskStarted")]
    assert [(r.task_id, r.attempt) for r in store.task_records("r1")] == [("a", 1), ("a", 2)]
    assert [(e.key, e.version) for e in store.board_entries("r1")] == [("a", 1), ("n", 1)]
    assert [r.task_id for r in store.reviews("r1")] == ["a"]
    assert store.get_exchange("h.0", "r1") == {"content": "A"}
    [run] = store.list_runs()
    assert run.status == "succeeded"
    store.acquire_lease("r1", "host:2", ttl_s=30)  # released: another holder may take it


def test_a_run_id_taken_by_someone_else_is_still_refused_on_a_try_again(tmp_path: Path):
    with closing(SQLiteStore(tmp_path / "crew.db")) as store:
        store.create_run("r1", crew="trip", inputs={}, task_ids=["a"])
        with replies_lost(store, {"create a run"}, sent=False) as pending:
            with pytest.raises(StoreError, match="run 'r1' is already in the store"):
                store.create_run("r1", crew="other", inputs={}, task_ids=["a"])
            assert not pending  # it was a try again that found the run
        assert [r.crew for r in store.list_runs()] == ["trip"]


def test_a_commit_with_its_events_tried_again_after_a_lost_reply_is_made_once(
    sql_backend: SQLStore,
):
    store = sql_backend
    store.create_run("r1", crew="trip", inputs={}, task_ids=["a"])
    board = BoardRecord(run_id="r1", key="a", version=1, text="A", author="Worker",
                        kind="output", created_at=1.0, updated_at=1.0)  # fmt: skip
    with replies_lost(store, {"record a task and its events", "record an event"}) as pending:
        store.put_task(
            TaskRecord(run_id="r1", task_id="a", status="succeeded", text="A"),
            board=board,
            events=[("TaskStarted", {"task_id": "a"}), ("BoardPosted", {"key": "a"})],
        )
        appended = store.append_events("r1", [("TaskFinished", {}), ("RunFinished", {})])
        assert not pending  # both had their reply lost once
    assert [e.seq for e in appended] == [3, 4]
    kinds = [(e.seq, e.type) for e in store.events("r1")]
    assert kinds == [
        (1, "TaskStarted"),
        (2, "BoardPosted"),
        (3, "TaskFinished"),
        (4, "RunFinished"),
    ]
    assert [(r.task_id, r.text) for r in store.task_records("r1")] == [("a", "A")]
    assert [(e.key, e.version) for e in store.board_entries("r1")] == [("a", 1)]


def test_tasks_committed_together_and_tried_again_after_a_lost_reply_are_made_once(
    sql_backend: SQLStore,
):
    store = sql_backend
    store.create_run("r1", crew="trip", inputs={}, task_ids=["a", "b"])
    board = BoardRecord(run_id="r1", key="a", version=1, text="A", author="Worker",
                        kind="output", created_at=1.0, updated_at=1.0)  # fmt: skip
    with replies_lost(store, {"record 2 tasks and their events"}) as pending:
        store.put_tasks(
            [(TaskRecord(run_id="r1", task_id="a", status="succeeded", text="A"), board),
             (TaskRecord(run_id="r1", task_id="b", status="succeeded", text="B"), None)],
            events=[("TaskFinished", {"task_id": "a"}), ("TaskFinished", {"task_id": "b"})],
        )  # fmt: skip
        assert not pending  # its reply was lost once
    assert [(e.seq, e.type) for e in store.events("r1")] == [
        (1, "TaskFinished"),
        (2, "TaskFinished"),
    ]
    assert [(r.task_id, r.text) for r in store.task_records("r1")] == [("a", "A"), ("b", "B")]
    assert [(e.key, e.version) for e in store.board_entries("r1")] == [("a", 1)]
