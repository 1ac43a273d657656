"""The Dask executor of ``crew batch``: each run is one task on a Dask distributed cluster.

With no address, crew starts a ``LocalCluster`` of worker processes on 127.0.0.1 (no dashboard,
nothing bound beyond loopback) and closes it at the end; with one, it connects to that cluster's
scheduler. The only module that imports dask.

- **The crew** goes to each worker once (scattered), pickled by cloudpickle; its store goes as
  its address and each worker process opens its own connection (``SQLiteStore.__reduce__``,
  ``PostgresStore.__reduce__``). A run on a worker is ``crew.batch.run_one`` on an event loop
  of its own, in one of the worker's threads.
- **The store must be shared**, since any worker may run, or resume, any run. PostgreSQL is.
  A SQLite file is shared by the processes of one machine, so it serves a ``LocalCluster``
  (its writes take turns under one lock: fine for a few workers); with an address it is
  refused, as is a memory store anywhere.
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
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from crew import limits
from crew.errors import ConfigError, LeaseHeldError

try:
    import dask
    import distributed
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError as exc:  # this module is imported only for the dask executor
    raise ConfigError("The dask executor needs Dask distributed: pip install 'crew[dask]'.") from exc

if TYPE_CHECKING:
    from crew.batch import BatchItem, BatchResult
    from crew.crew import Crew

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
    crew: Crew,
    items: Sequence[BatchItem],
    *,
    batch_id: str,
    address: str | None,
    concurrency: int,
    on_result: Callable[[BatchResult], object],
    workers: int | None = None,
    rate_window_s: float = 60.0,
) -> list[BatchResult]:
    """Run ``items`` on a Dask cluster, at most ``concurrency`` at once; their results in input
    order. ``on_result`` is called here, in the caller's loop, as each result arrives.

    Args:
        address: the scheduler of a running cluster (``tcp://HOST:PORT``); None starts a
            ``LocalCluster`` on 127.0.0.1 for the batch.
        workers: the LocalCluster's worker processes (else as many as cores, at most
            ``concurrency``); each gets an equal share of the ``concurrency`` threads.
        rate_window_s: the window of the models' ``max_rpm`` and ``max_tpm`` (tests shorten it).

    Raises:
        ConfigError: dask is not installed, or the crew's store is not shared by the workers.
    """
    check_shared_store(crew, remote=address is not None)
    results: dict[int, BatchResult] = {}
    with dask.config.set(_CONFIG):
        async with _client(address, concurrency, workers) as client:
            await client.register_plugin(SharedLimits(window_s=rate_window_s), name=_LIMITS_PLUGIN)
            [shipped] = await client.scatter([crew], broadcast=True, hash=False)
            pending = iter(items)
            waiting = distributed.as_completed()

            def submit_next() -> None:
                item = next(pending, None)
                if item is not None:
                    key = f"crew-run-{item.run_id}"
                    run = client.submit(_run, shipped, item, batch_id, key=key, pure=False)
                    waiting.add(run)

            for _ in range(max(1, concurrency)):
                submit_next()
            async for future in waiting:
                result = await future
                results[result.line] = result
                on_result(result)
                submit_next()
    return [results[item.line] for item in items]


def check_shared_store(crew: Crew, *, remote: bool) -> None:
    """Refuse a store the workers cannot share: memory anywhere, SQLite on remote workers."""
    from crew.store.postgres import PostgresStore
    from crew.store.sqlite import SQLiteStore

    store = crew.store
    if isinstance(store, PostgresStore):
        return
    if isinstance(store, SQLiteStore) and not remote:
        return
    where = "on other machines" if remote else "in other processes"
    raise ConfigError(
        f"The dask executor needs a store its workers share, and {store!r} cannot be opened"
        f" {where}: set CREW_STORE=postgresql://user@host/database"
        + ("." if remote else " (or a SQLite file, for a cluster on this machine).")
    )


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
_joined: set[str] = set()
"""The scheduler whose rate limiters this worker process uses (at most one)."""


def _run(crew: Crew, item: BatchItem, batch_id: str) -> BatchResult:
    """One run, in a worker's thread: resumed if the store has it (a lost worker's run)."""
    from crew.batch import run_one

    with _opening:  # the worker's threads share one crew: open its store once
        scheduler = distributed.get_worker().scheduler.address
        if scheduler not in _joined:
            limits.share_limiters(_SchedulerLimiter)
            _joined.clear()
            _joined.add(scheduler)
        crew.store  # noqa: B018
    while True:
        try:
            return asyncio.run(run_one(crew, item, batch_id=batch_id))
        except LeaseHeldError as held:  # a lost worker elsewhere: its lease has to lapse
            time.sleep(max(0.1, min(held.expires_at - time.time(), 60.0)))


class SharedLimits(SchedulerPlugin):  # type: ignore[misc]
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
            self.admitted = {n: a for n, a in self.admitted.items() if a[0] > now - 120}
            self.admitted[number] = (now, admission)
        return {"id": number, "waited_s": admission.waited_s, "limit": admission.limit}

    def settle(self, key: list[str | None], id: int, tokens: int) -> None:
        if (admitted := self.admitted.pop(id, None)) is not None:
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
        if max_tpm is not None:
            self._ids[reservation] = answer["id"]
        return limits.Admission(reservation, answer["waited_s"], answer["limit"])

    def settle(self, admission: limits.Admission, tokens: int) -> None:
        if (number := self._ids.pop(admission.reservation, None)) is not None:
            self._send("crew_limits_settle", key=self.key, id=number, tokens=tokens)

    def pause(self, seconds: float) -> None:
        self._send("crew_limits_pause", key=self.key, seconds=seconds)

    def _send(self, op: str, **message: Any) -> Any:
        call = getattr(self._worker.scheduler, op)
        return asyncio.run_coroutine_threadsafe(call(**message), self._worker.loop.asyncio_loop)
