"""Running crew's coroutines from synchronous code (``Crew.run``, ``Crew.batch``).

Each thread that calls ``wait`` keeps one event loop for all its calls, instead of a new loop
per call as ``asyncio.run`` would make. What lives on a loop outlives the call: above all the
model clients' pooled connections (``crew.openai_http`` keeps one session per loop and server),
so the second run of a script or a service does not connect again to its model server, and no
run pays for making and closing a loop. Everything else is as ``asyncio.run``: the coroutine
runs in a copy of the caller's context, Ctrl-C cancels it (and raises ``KeyboardInterrupt``), and
the tasks it leaves behind are cancelled before ``wait`` returns.

A thread's loop is closed (its async generators shut down, so its clients close their
connections) when the interpreter exits, or, for a thread that has ended, at the next ``wait``
of any thread. A process forked while a loop is kept starts with none.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_runners: dict[threading.Thread, asyncio.Runner] = {}
_lock = threading.Lock()


def wait(job: Coroutine[Any, Any, T], thread_name: str = "crew") -> T:
    """Run ``job`` to its end on this thread's loop; called from async code (a notebook, whose
    loop is running), on a new loop in a worker thread named ``thread_name``."""
    if _loop_running():
        with ThreadPoolExecutor(1, thread_name_prefix=thread_name) as pool:
            return pool.submit(asyncio.run, job).result()
    runner = _runner()
    before = asyncio.all_tasks(runner.get_loop())
    try:
        return runner.run(job, context=contextvars.copy_context())
    finally:
        _cancel_left(runner, before)


def _runner() -> asyncio.Runner:
    """This thread's runner (made on first use); closes those of threads that have ended."""
    me = threading.current_thread()
    with _lock:
        ended = [t for t in _runners if not t.is_alive()]
        gone = [_runners.pop(t) for t in ended]
        runner = _runners.get(me)
        if runner is None:
            # with a loop factory, the runner leaves the thread's current loop alone (none, as
            # after asyncio.run), and closing it from another thread leaves that thread's alone
            runner = _runners[me] = asyncio.Runner(loop_factory=asyncio.new_event_loop)
    for old in gone:
        old.close()
    return runner


def _cancel_left(runner: asyncio.Runner, before: set[asyncio.Task[Any]]) -> None:
    """Cancel the tasks a call left running, and let them end (``asyncio.run`` does the same
    before closing its loop)."""
    left = [t for t in asyncio.all_tasks(runner.get_loop()) if t not in before and not t.done()]
    if not left:
        return
    for task in left:
        task.cancel()
    runner.get_loop().run_until_complete(asyncio.gather(*left, return_exceptions=True))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@atexit.register
def close_all() -> None:
    """Close every thread's loop (at exit; also for tests that want no loop left open)."""
    with _lock:
        runners = list(_runners.values())
        _runners.clear()
    for runner in runners:
        if runner.get_loop().is_running():
            continue  # a daemon thread's call still runs on it: the process ends it as it is
        runner.close()


def _forget() -> None:
    """In a forked child: the parent's loops (their selectors, their sockets) are not ours."""
    global _lock
    _runners.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget)
