"""Checkpoints: a run written to its store step by step, so that it can resume after a crash.

A task's output is committed (``on_output``, awaited) before the task counts as done, with its
board version, the events emitted since the last write and the model exchanges of its attempt
(kept for replay), in one transaction. Tasks that finish while the store's thread is busy share
their commit (group commit): a 32-wide fan-out whose leaves answer together costs a couple of
transactions, not 32 one after another, and each task still waits for its own. The other events
are written in batches soon after they happen, and every one is written before the run returns.
A resumed run gets back the finished tasks (never called again) and the board; tasks that were
in flight run again. While a run executes, its process holds the run's lease and renews it, so
two processes never execute one run at once.

Every store call is made on the store's own thread (``crew.store.writer``), in the order made,
never on the event loop: a database that is slow or away for a while (the SQL stores try again
for up to 30 s) holds up only the tasks that wait for their own commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from crew import events
from crew.board import Board, BoardEntry, plain
from crew.errors import (
    ConfigError,
    LeaseHeldError,
    StoreError,
    StoreUnavailableError,
    redact,
)
from crew.outbox import Outbox
from crew.plan import Plan
from crew.restore import Resumed, board_entry, restored
from crew.results import TaskOutput, TaskResult
from crew.store import (
    BoardRecord,
    ReviewRecord,
    ReviewStatus,
    Store,
    TaskCommit,
    TaskRecord,
    default_holder,
)
from crew.store.writer import writer_for
from crew.tool_calls import ToolCallLog
from crew.usage import RunUsage, Usage

LEASE_TTL_S = 30.0
"""A crashed holder's run can be resumed by another process this long after its last renewal."""


class Checkpoint:
    """The link between one run and its store.

    Args:
        store: where the run is kept.
        run_id: the run.
        holder: who executes it (``host:pid`` by default), shown to anyone who tries too.
    """

    def __init__(
        self, store: Store, run_id: str, *, holder: str | None = None, ttl_s: float = LEASE_TTL_S
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.holder = holder or default_holder()
        self.ttl_s = ttl_s
        self.writer = writer_for(store)
        self.outbox = Outbox(store, run_id, self.writer, self._fail)
        """The events and model exchanges waiting for a commit or a batch."""
        self._outputs: dict[str, BoardRecord] = {}
        """Board versions of outputs posted but not yet committed with their task."""
        self._earlier: dict[tuple[str, int], int] = {}
        """(task id, index) -> its last attempt stored by an earlier process: this process's
        attempts are numbered on from there, so they never replace those records."""
        self._lock = threading.Lock()
        self._group: list[_Waiting] | None = None
        """The finished tasks of the commit queued last on the store's thread, while nothing
        has been queued after it: a task that finishes joins them rather than queue a commit
        of its own. Anything queued after it (a note) closes it, so that a task's writes stay
        in the order made: a note it posted is never written after its commit."""
        self._failed: list[BaseException] = []
        """Writes queued without waiting (notes, reviews) that failed: raised by the next
        awaited write, so no failure goes unseen."""

    async def begin(
        self,
        *,
        crew: str,
        inputs: Mapping[str, Any],
        plan: Plan,
        source: str,
        parent: str | None = None,
        batch: tuple[str, int] | None = None,
    ) -> None:
        """Record a new run (``parent``: the run a subcrew's run belongs to; ``batch``: the batch
        id and line it runs for) and take its lease."""
        self.outbox.loop = asyncio.get_running_loop()

        def begin() -> None:
            self.store.create_run(
                self.run_id, crew=crew, inputs=dict(inputs), task_ids=list(plan.all_tasks),
                source=source, parent_run_id=parent,
                batch_id=batch[0] if batch else None, batch_line=batch[1] if batch else None,
            )  # fmt: skip
            self._take_lease()

        await self.writer.call(begin)

    async def resume(self, plan: Plan, board: Board) -> Resumed:
        """Take the lease of an existing run (raises ``LeaseHeldError`` naming a live holder),
        put its board back, and return the results of its finished tasks, with the reviewers'
        feedback on the outputs they rejected (those tasks run again)."""
        self.outbox.loop = asyncio.get_running_loop()
        records, entries, reviews = await self.writer.call(self._read_back)
        for record in records:
            key = (record.task_id, record.index)
            self._earlier[key] = max(self._earlier.get(key, 0), record.attempt)
        tasks = plan.all_tasks
        board.restore(board_entry(r, tasks) for r in entries)
        finished = {(r.task_id, r.index): r for r in records if r.status == "succeeded"}
        results, rejected, stored = {}, {}, {}
        for (task_id, index), record in finished.items():  # the latest attempt of each
            known = tasks.get(task_id)
            if known is None and index == 0:
                continue  # a task this crew no longer has
            result = restored(record, known.output_model if known is not None else None)
            if index != 0:  # a loop round or map item; a loop made at run time has new ids
                stored[(task_id, index)] = result
                continue
            review = reviews.get(task_id)
            if not plan.tasks[task_id].human_review or review is None:
                results[task_id] = result
            elif review.status == "pending":
                results[task_id] = dataclasses.replace(
                    result, status="waiting", reason="waits for a review"
                )
            elif review.status == "approved":
                results[task_id] = result
            elif review.status == "edited":
                results[task_id] = self._edited(result, review, plan, board)
            else:  # rejected: the task runs again, told why
                rejected[task_id] = review.feedback or "The reviewer rejected the answer."
        return Resumed(results, rejected, stored)

    def _read_back(self) -> tuple[list[TaskRecord], list[BoardRecord], dict[str, ReviewRecord]]:
        """On the store's thread: take the lease, then read what a resume needs."""
        self._take_lease()
        self.store.update_run(self.run_id, status="running")
        reviews = {r.task_id: r for r in self.store.reviews(self.run_id)}
        return self.store.task_records(self.run_id), self.store.board_entries(self.run_id), reviews

    def _edited(self, result: TaskResult, review: Any, plan: Plan, board: Board) -> TaskResult:
        """The reviewer's text replaces the output, on the board too, before dependants read it."""
        assert result.output is not None
        model = plan.tasks[result.task_id].output_model
        data = model.model_validate(review.data) if model and review.data is not None else None
        output = dataclasses.replace(result.output, text=review.text or "", data=data)
        entry = board.get(result.task_id)
        if entry is None or entry.text != output.text:
            board.post(result.task_id, output.text, author=output.agent, data=data)
            posted = self._outputs.pop(result.task_id, None)
            if posted is not None:  # its task committed long ago: the version goes alone
                self._queue(self.store.put_board_entry, posted)
        return dataclasses.replace(result, output=output)

    def request_review(self, output: TaskOutput) -> None:
        """Hold ``output`` for a person: a pending review answered with ``crew approve`` & co."""
        data = plain(output.data)
        self._queue(
            self.store.put_review,
            ReviewRecord(
                run_id=self.run_id, task_id=output.task_id, status="pending", text=output.text,
                data=data, created_at=time.time(),
            ),
        )  # fmt: skip

    def on_board_post(self, entry: BoardEntry) -> None:
        """Keep a board version; a task's output waits to be committed with the task (the
        scheduler posts it just before ``on_output``), so a crash between the two cannot leave
        a version of an output whose task never finished."""
        record = BoardRecord(run_id=self.run_id, **_json(entry.to_dict()))
        if entry.kind == "output":
            self._outputs[entry.key] = record
        else:
            self._queue(self.store.put_board_entry, record)

    async def on_output(self, result: TaskResult, index: int = 0) -> None:
        """Commit a finished task (or loop round, or map item: ``index``), with the board version
        of its output and the events not yet written, in one transaction, which the tasks that
        finish before the store's thread gets to it share. Awaited before the task counts as
        done (write-ahead); its warning and usage by agent are kept too."""
        output = result.output
        assert output is not None
        record = TaskRecord(
            run_id=self.run_id, task_id=output.task_id, index=index,
            attempt=self.attempt_number(output.task_id, result.attempts, index), status="succeeded",
            text=output.text, data=_json(plain(output.data)), agent=output.agent,
            usage=output.usage.to_dict(), started_at=result.started_at,
            finished_at=result.finished_at, reason=result.reason,
            usage_by_agent={role: u.to_dict() for role, u in result.usage_by_agent.items()},
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        waiting = _Waiting(record, self._outputs.pop(output.task_id, None), committed)
        with self._lock:
            group, joined = self._group, self._group is not None
            if group is None:
                group = self._group = []
            group.append(waiting)
        if not joined:
            done = self.writer.submit(self._commit_group, group, loop)
            done.add_done_callback(self._check)
        await committed
        self._raise_failed()

    def _commit_group(self, group: list[_Waiting], loop: asyncio.AbstractEventLoop) -> None:
        """On the store's thread: commit ``group``'s tasks, then tell each its outcome on
        ``loop`` (in place if this is the loop: a store that never blocks is called on it)."""
        with self._lock:
            if self._group is group:
                self._group = None  # a task that finishes from now on queues the next commit
        try:
            errors = self._commit([(w.record, w.board) for w in group])
        except Exception as exc:  # whatever it is, no task may wait for its commit forever
            errors = [exc] * len(group)
        outcomes = [(w.committed, error) for w, error in zip(group, errors, strict=True)]
        if _running_loop() is loop:
            _settle(outcomes)
            return
        try:
            loop.call_soon_threadsafe(_settle, outcomes)
        except RuntimeError:  # the loop is closed: its run is over, no task waits any more
            _log.debug("run %s: a commit ended after its run", self.run_id)

    def _commit(self, tasks: list[TaskCommit]) -> list[Exception | None]:
        """The tasks with the pending events and model exchanges, in one transaction; each
        task's error, or None. If the store refuses that, each task commits alone, so that one
        record it cannot take fails only its own task, and the events and exchanges go their
        own way (tried again, and reported if they cannot be written)."""
        batch, exchanges = self.outbox.take()
        try:
            self.store.put_tasks(tasks, events=[(t, p) for _, t, p in batch], exchanges=exchanges)
        except StoreUnavailableError as exc:
            self.outbox.give_back(batch, exchanges)
            return [exc] * len(tasks)
        except StoreError as exc:
            if len(tasks) == 1 and not batch and not exchanges:
                return [exc]
            self.outbox.give_back(batch, exchanges)
            return self._commit_each(tasks)
        except Exception as exc:  # not the database's answer (a bug, a test's crash): all fail
            return [exc] * len(tasks)
        return [None] * len(tasks)

    def _commit_each(self, tasks: list[TaskCommit]) -> list[Exception | None]:
        """Each task in a transaction of its own; once the store is unavailable (it tried for
        its whole retry budget), the rest fail with that at once rather than each waiting."""
        errors: list[Exception | None] = []
        for task in tasks:
            if errors and isinstance(errors[-1], StoreUnavailableError):
                errors.append(errors[-1])
                continue
            try:
                self.store.put_tasks([task])
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def on_event(self, event: events.Event) -> None:
        """Queue an event: it is written with the next commit or batch, within
        ``outbox.EVENT_BATCH_S``."""
        if isinstance(event, events.TokenDelta):  # too many, and the output has the text
            return
        payload = _payload(event)
        if isinstance(payload.get("attempt"), int) and "task_id" in payload:
            payload["attempt"] = self.attempt_number(payload["task_id"], payload["attempt"])
        self.outbox.add_event(event, type(event).__name__, payload)

    def on_exchange(self, request_hash: str, model: str, response: dict[str, Any]) -> None:
        """Queue a model exchange (for replay): written with the attempt's commit, or soon."""
        self.outbox.add_exchange(request_hash, model, response)

    async def flush(self) -> None:
        """Write every event and exchange queued so far."""
        await self.outbox.flush()

    def _queue(self, write: Callable[..., None], *args: Any) -> None:
        """Queue a write without waiting for it; a failure is raised by the next awaited one.
        A task that finishes after it commits after it too (it closes the queued group)."""
        with self._lock:
            self._group = None
        self.writer.submit(write, *args).add_done_callback(self._check)

    def _check(self, done: concurrent.futures.Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._failed.append(error)

    def _raise_failed(self) -> None:
        with self._lock:
            failed, self._failed = self._failed, []
        if failed:
            raise failed[0]

    def tool_calls(self, task_id: str, attempt: int, index: int = 0) -> ToolCallLog:
        """The log of one attempt's calls of tools that are not idempotent: each intent written
        before its call and its result after, both awaited on the store's thread."""
        number = self.attempt_number(task_id, attempt, index)
        return ToolCallLog(
            self.store, self.writer, self.run_id, task_id, index=index, attempt=number
        )

    def attempt_number(self, task_id: str, attempt: int, index: int = 0) -> int:
        """The stored number of this process's ``attempt``: it goes on from earlier processes'."""
        return self._earlier.get((task_id, index), 0) + attempt

    async def finish(
        self,
        status: str,
        results: Mapping[str, TaskResult],
        usage: RunUsage,
        budget: Mapping[str, Any] | None = None,
    ) -> None:
        """Record how the run ended (the tasks that did not succeed too) and free its lease;
        ``budget``: the run's limits, kept in its metadata (``crew show`` reads them)."""
        await self.writer.call(self._finish, status, results, usage, budget)
        self._raise_failed()

    def _finish(
        self,
        status: str,
        results: Mapping[str, TaskResult],
        usage: RunUsage,
        budget: Mapping[str, Any] | None = None,
    ) -> None:
        for result in results.values():
            if result.status in ("failed", "cancelled"):
                self.store.put_task(
                    TaskRecord(
                        run_id=self.run_id, task_id=result.task_id,
                        attempt=self.attempt_number(result.task_id, max(1, result.attempts)),
                        status=result.status, error=_redacted(result.error or result.reason),
                        error_type=result.error_type, usage=result.usage.to_dict(),
                        started_at=result.started_at, finished_at=result.finished_at,
                        usage_by_agent={r: u.to_dict() for r, u in result.usage_by_agent.items()},
                    )
                )  # fmt: skip
        changes: dict[str, Any] = {"status": status, "usage": usage.to_dict()}
        if budget is not None and (record := self.store.get_run(self.run_id)) is not None:
            changes["metadata"] = {**record.metadata, "budget": dict(budget)}
        self.store.update_run(self.run_id, **changes)
        self.store.release_lease(self.run_id, self.holder)

    def _take_lease(self) -> None:
        """Take the run's lease. A holder on this machine whose process is gone (killed, crashed)
        is not waited for until its lease expires: its lease is released and taken at once."""
        try:
            self.store.acquire_lease(self.run_id, self.holder, ttl_s=self.ttl_s)
        except LeaseHeldError as held:
            if not gone_here(held.holder):
                raise
            self.store.release_lease(self.run_id, held.holder)
            self.store.acquire_lease(self.run_id, self.holder, ttl_s=self.ttl_s)

    async def keep_lease(self) -> None:
        """Renew the lease until cancelled; if another process took it over, stop the run."""
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            renew = self.store.renew_lease
            await self.writer.call(renew, self.run_id, self.holder, ttl_s=self.ttl_s)


def decide_review(
    store: Store,
    run_id: str,
    task_id: str,
    decision: ReviewStatus,
    *,
    text: str | None = None,
    feedback: str | None = None,
) -> None:
    """Answer a pending review: ``approved``, ``rejected`` (with feedback: the task runs again)
    or ``edited`` (with the text that replaces the output). ``crew resume`` then goes on."""
    review = store.get_review(run_id, task_id)
    if review is None or review.status != "pending":
        pending = [f"{r.run_id} {r.task_id}" for r in store.reviews(status="pending")]
        listed = "; ".join(pending) or "none"
        raise ConfigError(
            f"Task '{task_id}' of run '{run_id}' has no pending review. Pending: {listed}."
        )
    store.put_review(
        dataclasses.replace(
            review, status=decision, text=text if text is not None else review.text,
            data=None if text is not None else review.data, feedback=feedback,
            decided_at=time.time(),
        )
    )  # fmt: skip


def gone_here(holder: str) -> bool:
    """Whether a lease's ``holder`` (``host:pid``) is a process of this machine that no longer
    exists (killed, crashed): its lease can be taken over at once."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class _Waiting(NamedTuple):
    """A finished task waiting for its group's commit."""

    record: TaskRecord
    board: BoardRecord | None
    committed: asyncio.Future[None]
    """Done once the record is durable (or failed with the store's error), on the run's loop."""


def _settle(outcomes: list[tuple[asyncio.Future[None], Exception | None]]) -> None:
    """On the run's loop: tell each waiting task how its commit went."""
    for committed, error in outcomes:
        if committed.done():  # its task was cancelled meanwhile
            continue
        if error is None:
            committed.set_result(None)
        else:
            committed.set_exception(error)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_CONTENT = ("messages", "answer")
"""``LLMCalled``'s prompts and answer, carried for a tracing sink that captures content: the
store already keeps each exchange (for replay), so the event log does not copy them."""


def _payload(event: events.Event) -> dict[str, Any]:
    """An event's fields as plain JSON data, without the heavy objects (outputs, results)."""
    payload: dict[str, Any] = {}
    for name in _stored_fields(type(event)):
        value = getattr(event, name)
        if isinstance(value, TaskOutput):
            value = {"text": value.text, "agent": value.agent, "model": value.model}
        elif isinstance(value, Usage):
            value = value.to_dict()
        elif name == "error":
            value = _redacted(value)
        payload[name] = value if type(value) in _SCALARS else _json(value)
    return payload


_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Values that are JSON data as they are (the rest go through JSON: tuples become lists,
anything else its text)."""


def _stored_fields(kind: type[events.Event]) -> tuple[str, ...]:
    """The fields of an event type that its stored payload keeps."""
    names = _FIELDS.get(kind)
    if names is None:
        left_out = {"run_id", "at", "result", *_CONTENT}
        names = _FIELDS[kind] = tuple(
            f.name for f in dataclasses.fields(kind) if f.name not in left_out
        )
    return names


_FIELDS: dict[type[events.Event], tuple[str, ...]] = {}


def _redacted(error: str | None) -> str | None:
    """An error's text as stored: without secrets, which providers and tools may echo."""
    return redact(error) if error is not None else None


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


_log = logging.getLogger("crew")
