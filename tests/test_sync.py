"""Crew.run from synchronous code: one loop per thread, kept across runs (``crew.sync``)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from crew import LLM, Agent, Crew, Task, openai_http, sync
from crew.store.memory import MemoryStore
from crew.testserver import ServerReply

ROOT = Path(__file__).resolve().parent.parent
LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("label", default="unset")


def _crew(url: str, width: int = 1) -> Crew:
    llm = LLM("openai/fake", api_base=url, api_key="sk-test")
    agent = Agent(role="A", llm=llm, board_tools=False)
    tasks = [Task(id=f"t{i}", description=f"Do {i}.", agent=agent) for i in range(width)]
    return Crew(tasks, store=MemoryStore(), max_concurrency=width)


def test_the_runs_of_a_thread_reuse_their_connections(server):
    server.default = ServerReply(text="ok", latency_ms=50)
    crew = _crew(server.url, width=4)
    before = server.connections

    def three_runs() -> None:  # on a thread of their own: no connection kept by earlier tests
        for _ in range(3):
            crew.run().raise_for_status()

    thread = threading.Thread(target=three_runs)
    thread.start()
    thread.join()
    assert len(server.calls) == 12
    assert server.connections - before == 4  # the first run's four, kept for the next runs


def test_each_thread_has_a_loop_of_its_own(server):
    crew = _crew(server.url)
    loops: list[asyncio.AbstractEventLoop] = []
    ran, leave = threading.Barrier(3), threading.Event()

    def in_thread() -> None:
        crew.run().raise_for_status()
        loops.append(sync.wait(_running_loop()))
        ran.wait()
        leave.wait()

    threads = [threading.Thread(target=in_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    ran.wait()
    mine = sync.wait(_running_loop())
    assert len({id(loop) for loop in [*loops, mine]}) == 3
    assert mine is sync.wait(_running_loop())  # kept
    assert not any(loop.is_closed() for loop in [*loops, mine])
    leave.set()
    for thread in threads:
        thread.join()
    sync.wait(_running_loop())  # a call closes the loops of threads that have ended
    assert all(loop.is_closed() for loop in loops)
    assert not mine.is_closed()


def test_a_call_runs_in_a_copy_of_the_callers_context():
    async def label(value: str) -> str:
        seen = LABEL.get()
        LABEL.set(value)
        return seen

    token = LABEL.set("caller")
    try:
        assert sync.wait(label("first")) == "caller"
        assert sync.wait(label("second")) == "caller"  # not what the first call set
        assert LABEL.get() == "caller"
    finally:
        LABEL.reset(token)


def test_tasks_a_call_leaves_behind_are_cancelled_before_it_returns():
    cancelled = asyncio.Event()
    left: list[asyncio.Task[None]] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def leave_one() -> str:
        left.append(asyncio.create_task(forever()))
        await asyncio.sleep(0)
        return "done"

    assert sync.wait(leave_one()) == "done"
    assert left[0].cancelled()
    assert cancelled.is_set()


def test_from_a_running_loop_a_call_runs_on_a_worker_thread(server):
    crew = _crew(server.url)

    async def notebook() -> str:
        return crew.run().status  # a notebook's cell: sync code on a running loop

    assert asyncio.run(notebook()) == "succeeded"


def test_a_loop_keeps_a_bounded_number_of_sessions(server, monkeypatch):
    monkeypatch.setattr(openai_http, "MAX_SESSIONS", 2)
    root = server.url.removesuffix("/v1")
    urls = [server.url, server.url + "/", root]  # three servers, as the pool sees them

    async def calls() -> list[str]:
        for url in urls:
            await _crew(url).arun()
        return list(openai_http._pools[asyncio.get_running_loop()].by_url)

    assert asyncio.run(calls()) == urls[1:]  # the least recently used went
    assert len(server.calls) == 3


def test_a_session_with_a_call_in_flight_is_not_closed(server, monkeypatch):
    monkeypatch.setattr(openai_http, "MAX_SESSIONS", 1)
    server.script("slow", ServerReply(text="late", latency_ms=300))
    slow = LLM("openai/fake", api_base=server.url, api_key="sk-test")
    quick = LLM("openai/fake", api_base=server.url + "/", api_key="sk-test")
    agent, other = Agent(role="A", llm=slow), Agent(role="B", llm=quick)

    async def both() -> tuple[str, str]:
        first = Crew([Task(id="slow", description="d", agent=agent)], store=MemoryStore())
        second = Crew([Task(id="quick", description="d", agent=other)], store=MemoryStore())
        a, b = await asyncio.gather(first.arun(), second.arun())
        return a.output.text, b.output.text

    assert asyncio.run(both()) == ("late", "ok")


def test_a_script_that_runs_twice_exits_with_every_connection_closed(server, tmp_path):
    script = textwrap.dedent(f"""
        import gc
        from crew import LLM, Agent, Crew, Task
        from crew.store.memory import MemoryStore
        llm = LLM("openai/fake", api_base="{server.url}", api_key="sk-test")
        crew = Crew([Task(id="t", description="d", agent=Agent(role="A", llm=llm))],
                    store=MemoryStore())
        for _ in range(2):
            assert crew.run().status == "succeeded"
        gc.collect()
        print("OK")
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "OK"
    assert done.stderr == ""  # an unclosed session, socket or loop would be reported here


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_a_loop_of_its_own(server):
    crew = _crew(server.url)
    crew.run().raise_for_status()
    parent = sync.wait(_running_loop())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave at once (or in 60 s, whatever happens)
        signal.alarm(60)
        try:
            child = sync.wait(_running_loop())
            ok = child is not parent and crew.run().status == "succeeded"
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 2)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"ok"
    assert crew.run().status == "succeeded"  # the parent's loop is untouched


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_a_process_that_exits_while_a_daemon_thread_runs_a_crew_exits_quietly(server, tmp_path):
    server.script("slow", ServerReply(text="late", latency_ms=5000))
    script = textwrap.dedent(f"""
        import threading, time
        from crew import LLM, Agent, Crew, Task
        from crew.store.memory import MemoryStore
        llm = LLM("openai/fake", api_base="{server.url}", api_key="sk-test")
        crew = Crew([Task(id="slow", description="d", agent=Agent(role="A", llm=llm))],
                    store=MemoryStore())
        threading.Thread(target=crew.run, daemon=True).start()
        time.sleep(0.5)  # the call is in flight
        print("OK")
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "OK"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
