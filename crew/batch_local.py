"""Running a batch: storing it, checking its stored runs, and the local executor, which runs the
inputs in this process and event loop, at most ``concurrency`` at once (``run_batch`` hands them
to the Dask executor, ``crew.batch_dask``, when asked). What a batch is: ``crew.batch``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from crew.batch import (
    DEFAULT_CONCURRENCY,
    BatchItem,
    BatchResult,
    OnResult,
    Runnable,
    _check_same_inputs,
    check_executor,
    failed_result,
    run_one,
)
from crew.errors import ConfigError

if TYPE_CHECKING:
    from crew import events
    from crew.store import Store


async def run_batch(
    crew: Runnable,
    items: Sequence[BatchItem],
    *,
    batch_id: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    executor: str = "local",
    address: str | None = None,
    inputs_file: str = "",
    on_result: OnResult | None = None,
    on_event: events.EventSink | None = None,
) -> list[BatchResult]:
    """Run every item (see ``run_one``) and return their results in the items' order.

    The batch is stored first (its id, crew, inputs file and size), and every item whose run is
    stored with other inputs is refused before any run starts. ``on_result`` is told of each
    result as it comes (in any order); ``on_event`` of every event of the local runs.

    Raises:
        ConfigError: the executor, concurrency or store do not fit, or a stored run has other
            inputs (every such line), before any model call.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a whole number >= 1, got {concurrency!r}.")
    store = crew.store
    check_executor(executor, store, address)
    await asyncio.to_thread(_begin, crew, store, items, batch_id, inputs_file)
    if executor == "dask":
        return await _on_dask(crew, items, batch_id, address, concurrency, on_result, on_event)
    return await _run_here(crew, items, batch_id, concurrency, on_result, on_event)


def _begin(
    crew: Runnable, store: Store, items: Sequence[BatchItem], batch_id: str, inputs_file: str
) -> None:
    """Check the stored runs against the items, then store the batch (its first creation time
    kept when it runs again)."""
    from crew.store import BatchRecord

    stored = {r.run_id: r for r in store.list_runs(None, batch=batch_id)}
    problems = []
    for item in items:
        record = stored.get(item.run_id) or store.get_run(item.run_id)
        if record is None:
            continue
        try:
            _check_same_inputs(record, item, batch_id)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    earlier = store.get_batch(batch_id)
    store.put_batch(
        BatchRecord(
            batch_id=batch_id, crew=crew.name, source=crew.source, inputs_file=inputs_file,
            size=len(items), created_at=earlier.created_at if earlier else time.time(),
        )
    )  # fmt: skip


async def _run_here(
    crew: Runnable,
    items: Sequence[BatchItem],
    batch_id: str,
    concurrency: int,
    on_result: OnResult | None,
    on_event: events.EventSink | None,
) -> list[BatchResult]:
    """The local executor: ``concurrency`` workers on this event loop take the items in order.
    A run that fails (or raises) never stops the others; cancelling this cancels every worker,
    so the items not started stay unstarted and the running runs end resumable."""
    results: dict[int, BatchResult] = {}
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:  # one shared iterator: each item goes to one worker
            try:
                result = await run_one(crew, item, batch_id=batch_id, on_event=on_event)
            except Exception as exc:  # one input's failure is its result
                result = failed_result(item, exc)
            results[index] = result
            if on_result is not None:
                on_result(result)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)) or 1)))
    return [results[index] for index in range(len(items))]


async def _on_dask(
    crew: Runnable,
    items: Sequence[BatchItem],
    batch_id: str,
    address: str | None,
    concurrency: int,
    on_result: OnResult | None,
    on_event: events.EventSink | None = None,
) -> list[BatchResult]:
    # An executor of an optional extra, loaded on demand like a store's backend.
    try:
        from crew.batch_dask import run_batch_on_dask
    except ImportError as exc:
        raise ConfigError(
            f"--executor dask needs Dask distributed, which is not installed ({exc}):"
            " pip install 'crew[dask]'."
        ) from exc
    done = run_batch_on_dask(
        crew, items, batch_id=batch_id, address=address, concurrency=concurrency,
        on_result=on_result, on_event=on_event,
    )  # fmt: skip
    results = await done if inspect.isawaitable(done) else done
    return list(results)


def summarize(
    batch_id: str, results: Sequence[BatchResult], *, duration_s: float = 0.0
) -> dict[str, Any]:
    """A batch's summary as data (``crew batch --json``): its id, the inputs, how many runs ended
    in each status, and the usage of all its runs summed."""
    counts: dict[str, int] = {}
    usage: dict[str, float] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
        for name, value in result.usage.items():
            if isinstance(value, int | float):
                usage[name] = usage.get(name, 0) + value
    return {
        "batch_id": batch_id,
        "inputs": len(results),
        "counts": counts,
        "usage": usage,
        "duration_s": round(duration_s, 3),
    }
