"""The Dask executor of ``crew batch``: each run is one task on a Dask distributed cluster.

With no address, crew starts a ``LocalCluster`` of worker processes on 127.0.0.1 (no dashboard,
nothing bound beyond loopback) and closes it at the end; with one, it connects to that cluster's
scheduler. The only module that imports dask.

- **The crew** goes to each worker once (scattered), pickled by cloudpickle; its store goes as
  its address and each worker process opens its own connection (``SQLiteStore.__reduce__``,
  ``PostgresStore.__reduce__``). A run on a worker is ``crew.batch.run_one`` on the event
  loop that all the process's runs share (as the local executor's do); a Dask thread waits
  for each.
- **The store must be shared**, since any worker may run, or resume, any run. PostgreSQL is.
  A SQLite file is shared by the processes of one machine, so it serves a ``LocalCluster``
  or a cluster at a loopback address (its writes take turns under one lock: fine for a few
  workers); ``crew.batch.check_executor`` refuses it for other addresses, and a memory store.
- **Rate limits** are the scheduler's: a scheduler plugin holds one ``crew.limits.RateLimiter``
  per model, and every worker's calls wait their turn there (``crew.limits.share_limiters``),
  so ``max_rpm`` and ``max_tpm`` hold for the whole cluster. The scheduler outlives any worker.
- **A lost worker**: Dask runs its tasks again on another worker, where ``run_one`` finds the
  run in the store and resumes it from its checkpoint; no finished task is called again. The
  lost process's lease is taken over at once on the same machine, else once it expires
  (``crew.checkpoint.LEASE_TTL_S``): the task waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from crew import events, limits
from crew.batch import BatchItem, BatchResult, Runnable, failed_result, run_one
from crew.errors import ConfigError

try:
    import cloudpickle
    import dask
    import distributed
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError as exc:  # this module is imported only for the dask executor
    raise ConfigError(
        "The dask executor needs Dask distributed: pip install 'crew[dask]'."
    ) from exc


ALLOWED_FAILURES = 6
"""Workers a run's task may lose (killed, out of memory) before the batch gives it up as failed:
each attempt resumes the run where the last one stopped."""
_CONFIG = {
    # No dashboard or profiler, nothing that asks the network who we are.
    "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
    "distributed.diagnostics.nvml": False,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.scheduler.work-stealing": True,
}
_LOOPBACK = "127.0.0.1"
_LIMITS_PLUGIN = "crew-shared-limits"


async def run_batch_on_dask(
    crew: Runnable,
    items: Sequence[BatchItem],
    *,
    batch_id: str,
    address: str | None,
    concurrency: int,
    on_result: Callable[[BatchResult], object] | None = None,
    on_event: events.EventSink | None = None,
    workers: int | None = None,
    rate_window_s: float = 60.0,
) -> list[BatchResult]:
    """Run ``items`` on a Dask cluster, at most ``concurrency`` at once; their results in input
    order. ``on_result`` is called here, in the caller's loop, as each result arrives. The
    caller has checked that the store is one the workers share (``crew.batch.check_executor``).
    A run that fails, or whose task Dask gives up on (its workers lost ``ALLOWED_FAILURES``
    times), is a failed result; the others go on.

    Args:
        address: the scheduler of a running cluster (``tcp://HOST:PORT``); None starts a
            ``LocalCluster`` on 127.0.0.1 for the batch.
        workers: the LocalCluster's worker processes (else as many as cores, at most
            ``concurrency``); each gets an equal share of the ``concurrency`` threads.
        on_event: told ``RunStarted`` as each run's task starts on a worker (the progress view
            counts the runs at work); a run's other events stay on its worker and in the store.
        rate_window_s: the window of the models' ``max_rpm`` and ``max_tpm`` (tests shorten it).

    """
    results: dict[int, BatchResult] = {}
    with dask.config.set(_CONFIG):
        async with _client(address, concurrency, workers) as client:
            await client.register_plugin(SharedLimits(window_s=rate_window_s), name=_LIMITS_PLUGIN)
            shipped = (uuid.uuid4().hex, _pickled(crew))
            if on_event is not None:
                told = _started(crew, items, results, on_event)
                client.subscribe_topic(f"crew-batch-{shipped[0]}", told)
            pending = iter(items)
            waiting = distributed.as_completed()
            submitted: dict[str, BatchItem] = {}

            def submit_next() -> None:
                item = next(pending, None)
                if item is not None:
                    key = f"crew-run-{item.run_id}"
                    submitted[key] = item
                    waiting.add(client.submit(_run, shipped, item, batch_id, key=key, pure=False))

            for _ in range(max(1, concurrency)):
                submit_next()
            async for future in waiting:
                item = submitted.pop(future.key)
                try:
                    result = await future
                except Exception as exc:  # KilledWorker: lost too often; one input's failure
                    result = failed_result(item, exc)
                results[item.line] = result
                if on_result is not None:
                    on_result(result)
                submit_next()
    return [results[item.line] for item in items]


def _pickled(crew: Runnable) -> bytes:
    """The crew, pickled; its own Python modules by value (a crew file run as a script, the
    tools beside a crew file): the workers have crew and its libraries, not the crew's folder."""
    source = Path(crew.source).resolve() if crew.source else None
    folder = source if source is None or source.is_dir() else source.parent
    own = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name == "crew" or name.startswith("crew.") or not file or "site-packages" in file:
            continue
        if name.startswith("_crew_file_") or (
            folder and Path(file).resolve().is_relative_to(folder)
        ):
            own.append(module)
    for module in own:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(crew)
    finally:
        for module in own:
            cloudpickle.unregister_pickle_by_value(module)


def _started(
    crew: Runnable,
    items: Sequence[BatchItem],
    results: dict[int, BatchResult],
    on_event: events.EventSink,
) -> Callable[[tuple[float, dict[str, Any]]], None]:
    """What turns a worker's word that a run started into ``RunStarted`` for ``on_event``."""
    by_run = {item.run_id: item for item in items}
    task_ids = tuple(task.id for task in crew.tasks)

    def told(event: tuple[float, dict[str, Any]]) -> None:
        item = by_run.get(event[1]["run_id"])
        if item is not None and item.line not in results:  # its result may have come first
            on_event(
                events.RunStarted(
                    run_id=item.run_id, at=event[1]["at"], crew=crew.name, task_ids=task_ids,
                    inputs=item.inputs,
                )
            )  # fmt: skip

    return told


@contextlib.asynccontextmanager
async def _client(
    address: str | None, concurrency: int, workers: int | None
) -> AsyncIterator[distributed.Client]:
    """A client of the cluster at ``address``, or of a LocalCluster made for the batch."""
    if address is not None:
        async with distributed.Client(address, asynchronous=True) as client:
            yield client
        return
    count = workers or max(1, min(concurrency, os.cpu_count() or 1))
    cluster = distributed.LocalCluster(
        n_workers=count,
        threads_per_worker=max(1, math.ceil(concurrency / count)),
        processes=True,
        host=_LOOPBACK,
        # Its HTTP endpoints (health, metrics; the dashboard once bokeh is installed) stay on
        # loopback, on a free port: None still binds :8787, which another batch may hold.
        dashboard_address=f"{_LOOPBACK}:0",
        worker_dashboard_address=f"{_LOOPBACK}:0",
        asynchronous=True,
    )
    async with cluster, distributed.Client(cluster, asynchronous=True) as client:
        yield client


_opening = threading.Lock()
_crews: dict[str, Runnable] = {}
"""The crews of the last batches this worker process ran, by batch token."""
_joined: set[str] = set()
"""The scheduler whose rate limiters this worker process uses (at most one)."""


def _run(shipped: tuple[str, bytes], item: BatchItem, batch_id: str) -> BatchResult:
    """One run, in a worker's thread: resumed if the store has it (a lost worker's run).

    The crew comes pickled with each task (a few kB), so that a worker started after a loss
    has it too; each worker process unpickles it, and opens its store, once per batch. The run
    itself goes on the process's loop of runs (``_runs_loop``); this thread waits for it."""
    token, pickled = shipped
    with _opening:
        scheduler = distributed.get_worker().scheduler.address
        if scheduler not in _joined:
            limits.share_limiters(_SchedulerLimiter)
            _joined.clear()
            _joined.add(scheduler)
        if (crew := _crews.get(token)) is None:
            while len(_crews) >= 4:  # an earlier batch's: its runs are over
                _crews.pop(next(iter(_crews))).store.close()
            crew = _crews[token] = cloudpickle.loads(pickled)
            crew.store  # noqa: B018
        loop = _runs_loop()
    worker = distributed.get_worker()
    worker.log_event(f"crew-batch-{token}", {"run_id": item.run_id, "at": time.time()})
    try:  # run_one waits out the lease of a lost worker's run (on another machine)
        running = asyncio.run_coroutine_threadsafe(run_one(crew, item, batch_id=batch_id), loop)
        return running.result()
    except Exception as exc:  # one input's failure is its result, as on the local executor
        return failed_result(item, exc)


def _runs_loop() -> asyncio.AbstractEventLoop:
    """The worker process's event loop for runs, in a thread of its own, made on first use.

    Every run of the process goes on it, as the local executor's runs share one loop: each
    model's HTTP connections are kept from one run to the next (a loop per run would open new
    ones, and a TLS handshake each), and a Dask thread only waits for its run."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        threading.Thread(target=_loop.run_forever, name="crew-runs", daemon=True).start()
    return _loop


_loop: asyncio.AbstractEventLoop | None = None


class SharedLimits(SchedulerPlugin):
    """A scheduler plugin: the cluster's rate limiters, one per (model, api_base), which the
    workers' calls ask over the scheduler's connection (``_SchedulerLimiter``)."""

    idempotent = True
    name = _LIMITS_PLUGIN

    def __init__(self, *, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self.limiters: dict[tuple[str, str | None], limits.RateLimiter] = {}
        self.admitted: dict[int, tuple[float, limits.Admission]] = {}
        self._ids = iter(range(1, 2**62))

    async def start(self, scheduler: Any) -> None:
        scheduler.handlers.update(
            crew_limits_acquire=self.acquire,
            crew_limits_settle=self.settle,
            crew_limits_pause=self.pause,
        )

    def _limiter(self, key: Iterable[str | None]) -> limits.RateLimiter:
        model, api_base = key
        if (str(model), api_base) not in self.limiters:
            self.limiters[str(model), api_base] = limits.RateLimiter(window_s=self.window_s)
        return self.limiters[str(model), api_base]

    async def acquire(
        self, key: list[str | None], max_rpm: int | None, max_tpm: int | None, tokens: int
    ) -> dict[str, Any]:
        """Wait until the call may start; its id (to settle it), wait and limit."""
        admission = await self._limiter(key).acquire(max_rpm, max_tpm=max_tpm, tokens=tokens)
        number = next(self._ids)
        if max_tpm is not None:  # only a token limit has use for the real count
            now = time.monotonic()
            while self.admitted and next(iter(self.admitted.values()))[0] < now - 2 * self.window_s:
                self.admitted.pop(next(iter(self.admitted)))  # never settled: out of the window
            self.admitted[number] = (now, admission)
        return {"id": number, "waited_s": admission.waited_s, "limit": admission.limit}

    def settle(self, key: list[str | None], number: int, tokens: int) -> None:
        if (admitted := self.admitted.pop(number, None)) is not None:
            self._limiter(key).settle(admitted[1], tokens)

    def pause(self, key: list[str | None], seconds: float) -> None:
        self._limiter(key).pause(seconds)


class _SchedulerLimiter:
    """A worker's limiter of one model: the scheduler's (``SharedLimits``) decides when each
    call starts. Its calls go out on the worker's own event loop, awaited from the run's."""

    def __init__(self, model: str, api_base: str | None) -> None:
        self.key = [model, api_base]
        self._worker = distributed.get_worker()
        self._ids: dict[limits.Reservation, int] = {}

    async def acquire(
        self, max_rpm: int | None = None, *, max_tpm: int | None = None, tokens: int = 0
    ) -> limits.Admission:
        answer = await asyncio.wrap_future(
            self._send(
                "crew_limits_acquire",
                key=self.key, max_rpm=max_rpm, max_tpm=max_tpm, tokens=tokens,
            )
        )  # fmt: skip
        reservation = limits.Reservation(time.monotonic(), tokens, max_rpm, max_tpm)
        if max_tpm is not None:  # only a token limit has use for the real count
            if len(self._ids) >= 1000:  # calls that never settled (no answer came): long gone
                self._ids = dict(list(self._ids.items())[500:])
            self._ids[reservation] = answer["id"]
        return limits.Admission(reservation, answer["waited_s"], answer["limit"])

    def settle(self, admission: limits.Admission, tokens: int) -> None:
        if (number := self._ids.pop(admission.reservation, None)) is not None:
            self._send("crew_limits_settle", key=self.key, number=number, tokens=tokens)

    def pause(self, seconds: float) -> None:
        self._send("crew_limits_pause", key=self.key, seconds=seconds)

    def _send(self, op: str, **message: Any) -> Any:
        call = getattr(self._worker.scheduler, op)
        loop: asyncio.AbstractEventLoop = self._worker.loop.asyncio_loop  # type: ignore[attr-defined]
        return asyncio.run_coroutine_threadsafe(call(**message), loop)
