"""Batches: one crew run once per input, each input a line of a JSON Lines or CSV file (or a dict
given in Python), every run stored under the batch's id.

A batch's runs are ordinary runs: ``crew show`` and ``crew resume`` work on each. Their ids are
``{batch_id}-{line}``, so running a batch again with the same id finds each input's run: a
succeeded run is not run again, an interrupted or failed one is resumed from its checkpoint (its
finished tasks are not called again), and an input without a run gets one.

Every line is checked against the crew's inputs before any run starts, and every bad line is
reported at once (``BatchInputError``). The executors run the items (``crew.batch_local.run_batch``
picks one): ``local`` runs them in this process and event loop, at most ``concurrency`` at once;
``dask`` runs each on a Dask distributed cluster (``crew.batch_dask``, the ``dask`` extra).
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crew.errors import BatchInputError, ConfigError, LeaseHeldError, StoreError
from crew.input_types import InputSpec, resolve_inputs
from crew.plan import Plan

if TYPE_CHECKING:
    from crew import events
    from crew.results import CrewResult
    from crew.store import RunRecord, Store
    from crew.task import Task

DEFAULT_CONCURRENCY = 8
"""Runs at work at once in a local batch, unless told otherwise: each run's own
``max_concurrency`` still holds inside it, and the model rate limits are shared by all."""
EXECUTORS = ("local", "dask")
_JSONL = (".jsonl", ".json", ".ndjson")
_LEASE_POLL_S = 1.0  # a run held by another process: how often to look whether it finished


class Runnable(Protocol):
    """What a batch needs of a crew (``crew.Crew`` is one)."""

    name: str
    source: str
    tasks: tuple[Task, ...]

    @property
    def store(self) -> Store: ...

    def plan(self, inputs: Mapping[str, Any] | None = None) -> Plan: ...

    async def arun(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        resume: str | None = None,
        on_event: events.EventSink | None = None,
        batch: tuple[str, int] | None = None,
    ) -> CrewResult: ...


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch."""

    line: int
    """1-based line of the inputs file (a CSV row's first line); the position for a list."""
    inputs: dict[str, Any]
    """The run's inputs, checked and converted to their declared types."""
    run_id: str
    """``{batch_id}-{line}``: the same on every run of the batch, so a rerun finds it."""


@dataclass(frozen=True)
class BatchResult:
    """How one input's run ended."""

    line: int
    run_id: str
    status: str
    """The run's status: succeeded, failed, cancelled, interrupted, budget_exceeded, waiting."""
    output: Any
    """The final output: its data (JSON) if its task has an output model, else its text; None
    if the run did not produce one."""
    usage: dict[str, Any]
    """The run's total usage (calls, tokens, cost_usd, ...), all its attempts counted."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The result as one line of ``--out``."""
        return {
            "line": self.line,
            "run_id": self.run_id,
            "status": self.status,
            "output": self.output,
            "usage": self.usage,
            "error": self.error,
        }


OnResult = Callable[[BatchResult], None]
"""Told of each input's result as it comes, in any order (an executor's ``on_result``)."""


def run_id_of(batch_id: str, line: int) -> str:
    return f"{batch_id}-{line}"


def read_inputs(
    path: str | Path,
    plan_or_crew: Plan | Runnable,
    *,
    batch_id: str,
    specs: Mapping[str, InputSpec] | None = None,
) -> list[BatchItem]:
    """The inputs of a batch, one item per line of a JSON Lines file (one object a line) or a
    CSV file (a header row, then a row per run), chosen by its suffix.

    Each line is checked against the crew's inputs: with ``specs`` (a crew file's declared
    inputs), values are converted to their types (CSV cells are text: ``3`` becomes 3 for an
    integer input) and unknown, missing and ill-typed inputs are problems; without, each line
    must fill every placeholder. An empty CSV cell counts as not given (its default applies).

    Raises:
        BatchInputError: the file cannot be read, is empty, or has bad lines: every problem,
            as ``FILE:LINE field: problem``, before any model call.
    """
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise BatchInputError(
            f"{path}: no inputs in the file: write one JSON object (or CSV row) per run.",
            path=str(path),
        )
    return checked(rows, plan_or_crew, batch_id=batch_id, specs=specs, source=str(path))


def checked(
    rows: Iterable[tuple[int, Any]],
    plan_or_crew: Plan | Runnable,
    *,
    batch_id: str,
    specs: Mapping[str, InputSpec] | None = None,
    source: str = "inputs",
) -> list[BatchItem]:
    """``rows`` ((line, inputs) pairs) as batch items, every line checked (see ``read_inputs``).

    Raises:
        BatchInputError: every problem of every line, as ``SOURCE:LINE field: problem``.
    """
    items, problems = [], []
    for line, given in rows:
        where = f"{source}:{line}"
        if isinstance(given, _Unreadable):
            problems.append(f"{where} {given.problem}")
            continue
        if not isinstance(given, Mapping):
            kind = type(given).__name__
            problems.append(f"{where} inputs: a {kind}, not a dict of name: value.")
            continue
        try:
            inputs = given if specs is None else resolve_inputs(specs, given, where, give=_GIVE)
            _check(plan_or_crew, inputs)
        except ConfigError as exc:
            problems += [p if p.startswith(where) else f"{where} inputs: {p}" for p in exc.problems]
            continue
        items.append(BatchItem(line=line, inputs=dict(inputs), run_id=run_id_of(batch_id, line)))
    if problems:
        raise BatchInputError(problems, path=source)
    return items


_GIVE = "add it to the line (a column of the CSV file, a key of the JSON object)"


def _check(plan_or_crew: Plan | Runnable, inputs: Mapping[str, Any]) -> None:
    if isinstance(plan_or_crew, Plan):
        plan_or_crew.check_inputs(inputs)
    else:
        plan_or_crew.plan(inputs)


@dataclass(frozen=True)
class _Unreadable:
    """A line of an inputs file that is no object of inputs, and why."""

    problem: str


def first_inputs(path: str | Path) -> dict[str, Any]:
    """The inputs of the file's first good line, as written, or {} (``read_inputs`` says what
    is wrong): what a Python crew's ``build_crew(inputs)`` is built with for the whole batch."""
    try:
        rows = _rows(Path(path))
    except BatchInputError:
        return {}
    return next((given for _, given in rows if isinstance(given, dict)), {})


def _rows(path: Path) -> list[tuple[int, Any]]:
    """(line, inputs) for each line of the file; a line that is not an object of inputs gets its
    problem (``_Unreadable``) instead."""
    suffix = path.suffix.lower()
    if suffix not in (*_JSONL, ".csv"):
        raise BatchInputError(
            f"{path}: cannot tell the format of the inputs file from its suffix: name it .jsonl"
            " (JSON Lines: one object of inputs a line) or .csv (a header row of input names).",
            path=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchInputError(
            f"{path}: cannot read the inputs file: {exc}.", path=str(path)
        ) from exc
    return _csv_rows(text) if suffix == ".csv" else _jsonl_rows(text)


def _jsonl_rows(text: str) -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue  # blank lines are allowed, as in most JSON Lines readers
        try:
            value = json.loads(content)
        except (ValueError, RecursionError) as exc:
            rows.append((line, _Unreadable(f"line: not JSON ({exc}); write one object a line.")))
            continue
        if not isinstance(value, dict):
            kind = type(value).__name__
            rows.append((line, _Unreadable(f"line: a JSON {kind}, not an object of name: value.")))
        else:
            rows.append((line, value))
    return rows


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    reader = csv.reader(text.splitlines(keepends=True))
    header = next(reader, None)
    if header is None:
        return []
    names = [name.strip() for name in header]
    rows: list[tuple[int, Any]] = []
    last = reader.line_num
    for cells in reader:
        line, last = last + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(names):
            problem = f"row: {len(cells)} cells, but the header names {len(names)}."
            rows.append((line, _Unreadable(problem)))
            continue
        rows.append((line, {n: cell for n, cell in zip(names, cells, strict=True) if cell != ""}))
    return rows


async def run_one(
    crew: Runnable,
    item: BatchItem,
    *,
    batch_id: str,
    on_event: events.EventSink | None = None,
) -> BatchResult:
    """Run one input of the batch, or take its stored result: self-contained, so that a worker
    on another machine can call it with the crew and the item.

    The input's run is looked up in the crew's store. Succeeded: its stored result, without a
    model call. Otherwise (failed, interrupted, cancelled, over budget): resumed, its finished
    tasks not called again; while another process holds its lease, this waits for the lease to
    be released or to expire. No run: a new one, stored as part of the batch.

    Raises:
        ConfigError: the stored run has other inputs than the item (the message names the line
            and the batch): the batch id was reused for another inputs file.
    """
    store = crew.store
    while True:
        record = await asyncio.to_thread(store.get_run, item.run_id)
        if record is not None:
            _check_same_inputs(record, item, batch_id)
            if record.status == "succeeded":
                return await asyncio.to_thread(stored_result, crew, record, item.line)
        try:
            if record is None:
                result = await crew.arun(
                    item.inputs, run_id=item.run_id, on_event=on_event, batch=(batch_id, item.line)
                )
            else:
                result = await crew.arun(resume=item.run_id, on_event=on_event)
        except LeaseHeldError as held:  # another process runs it: wait for it to end or die
            await asyncio.sleep(min(max(held.expires_at - time.time(), 0.0), _LEASE_POLL_S))
            continue
        except StoreError:
            if record is None and await asyncio.to_thread(store.get_run, item.run_id) is not None:
                continue  # another worker created the run meanwhile: look again
            raise
        return result_of(result, item.line)


def _check_same_inputs(record: RunRecord, item: BatchItem, batch_id: str) -> None:
    if _as_json(record.inputs) != _as_json(item.inputs):
        raise ConfigError(
            f"line {item.line} of batch {batch_id}: its run {record.run_id} was stored with other"
            f" inputs ({_shown(record.inputs)}, now {_shown(item.inputs)}): the batch id is for"
            " one inputs file. Use a new --batch-id, or restore the file."
        )


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _shown(inputs: Mapping[str, Any]) -> str:
    text = json.dumps(inputs, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:79] + "…"


def result_of(result: CrewResult, line: int) -> BatchResult:
    """A finished run's result as the batch reports it."""
    output = result.output
    value = None
    if output is not None:
        data = output.data
        value = data.model_dump(mode="json") if hasattr(data, "model_dump") else output.text
    failed = [r for r in result.tasks.values() if r.status == "failed"]
    error = "; ".join(f"{r.task_id}: {r.error}" for r in failed) or None
    if error is None and result.status != "succeeded":
        error = f"the run ended {result.status}"
    return BatchResult(
        line=line,
        run_id=result.run_id,
        status=result.status,
        output=value,
        usage=result.usage.total.to_dict(),
        error=error,
    )


def stored_result(crew: Runnable, record: RunRecord, line: int) -> BatchResult:
    """A succeeded run's result, read from the store (its final task's output)."""
    finished = crew.store.finished_outputs(record.run_id)
    final = finished.get((crew.tasks[-1].id, 0)) if crew.tasks else None
    output = None if final is None else (final.data if final.data is not None else final.text)
    usage = dict(record.usage.get("total") or {})
    return BatchResult(
        line=line, run_id=record.run_id, status=record.status, output=output, usage=usage
    )


def failed_result(item: BatchItem, error: BaseException) -> BatchResult:
    """The result of an input whose run could not be run at all (its store failed, say)."""
    return BatchResult(
        line=item.line,
        run_id=item.run_id,
        status="failed",
        output=None,
        usage={},
        error=f"{type(error).__name__}: {error}",
    )


def check_executor(executor: str, store: Store, address: str | None) -> None:
    """Refuse an executor that cannot work with this store and address, in one line each.

    Raises:
        ConfigError: an unknown executor; ``address`` without ``dask``; ``dask`` with a store
            its workers cannot share (in memory, or SQLite with a cluster at another address).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}.")
    if executor == "local":
        if address is not None:
            raise ConfigError(
                f"--address {address} is for --executor dask; the local executor runs here."
            )
        return
    from crew.store.memory import MemoryStore
    from crew.store.sqlite import SQLiteStore

    if isinstance(store, MemoryStore):
        raise ConfigError(
            "--executor dask needs a store its workers share; the store in memory is this"
            " process's own: use a PostgreSQL store (--store postgresql://...)."
        )
    if isinstance(store, SQLiteStore) and address is not None and not _loopback(address):
        raise ConfigError(
            f"--executor dask --address {address}: workers on other machines cannot share the"
            f" SQLite store at {store.path}: use a PostgreSQL store (--store postgresql://...)."
        )


def _loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_batch_id() -> str:
    """A new batch's id: short, and unlike any other."""
    import uuid

    return f"b{uuid.uuid4().hex[:10]}"
