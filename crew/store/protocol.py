"""The ``Store`` protocol: what the scheduler and the CLI need of a store. Re-exported by
``crew.store``; its backends are ``crew.store.memory``, ``crew.store.sqlite`` and
``crew.store.postgres``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from crew.store.records import (
    BatchRecord,
    BoardRecord,
    EventRecord,
    ReviewRecord,
    ReviewStatus,
    RunRecord,
    RunStatus,
    TaskCommit,
    TaskRecord,
    ToolCallRecord,
)


class Store(Protocol):
    """What the scheduler and the CLI need to keep runs durable. Every backend passes the same
    contract suite (``tests/test_store.py``). Errors of the database are raised as
    ``StoreError``; writes about a run that does not exist raise ``StoreError`` too."""

    def close(self) -> None: ...

    def create_run(
        self,
        run_id: str,
        *,
        crew: str,
        inputs: dict[str, Any],
        task_ids: Sequence[str],
        source: str = "",
        status: RunStatus = "running",
        parent_run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        batch_id: str | None = None,
        batch_line: int | None = None,
    ) -> RunRecord:
        """Record a new run, stamped with the store's clock; StoreError if the id exists.
        ``batch_id`` and ``batch_line``: the batch it is part of, and its line there."""
        ...

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Change some fields of a run (status, usage, metadata, ...); stamps ``updated_at``."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run; ``interrupted`` if it is ``running`` with an expired lease."""
        ...

    def list_runs(
        self,
        limit: int | None = 50,
        *,
        status: RunStatus | None = None,
        crew: str | None = None,
        batch: str | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first (by ``created_at``); a ``running`` run whose lease has expired is
        reported (and filtered) as ``interrupted``. ``batch``: only the runs of that batch."""
        ...

    def put_batch(self, record: BatchRecord) -> None:
        """Insert or replace the batch ``record.batch_id``."""
        ...

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def delete_runs(self, *, older_than_s: float | None = None, keep: int | None = None) -> int:
        """Prune runs and everything that belongs to them; returns how many runs went.

        Deletes the runs not updated for ``older_than_s`` seconds, except the ``keep`` newest;
        with only ``keep``, every run but the ``keep`` newest. Runs with a live lease stay, and
        so do runs that wait for a review (``waiting``, or with a pending review).
        """
        ...

    def prunable_runs(
        self, *, older_than_s: float | None = None, keep: int | None = None
    ) -> list[str]:
        """The ids of the runs ``delete_runs`` would delete now, newest first; deletes nothing."""
        ...

    def put_task(
        self,
        record: TaskRecord,
        *,
        board: BoardRecord | None = None,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        exchanges: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> None:
        """Insert or replace one attempt; durable when it returns (see the module docstring).

        With ``board``, the board version of its output is kept in the same transaction: a
        crash leaves both or neither, never a version whose task did not commit. ``events``
        ((type, payload) pairs of the same run) are appended in that transaction too, and
        ``exchanges`` ((request hash, model, response), as ``put_exchange`` takes them) kept,
        so a task's completion costs one commit. ``put_tasks`` with one attempt."""
        ...

    def put_tasks(
        self,
        tasks: Sequence[TaskCommit],
        *,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        exchanges: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> None:
        """Insert or replace several attempts of one run, each with the board version of its
        output if it has one, and append ``events`` and keep ``exchanges`` (as ``put_task``),
        all in one transaction: tasks that finish together cost one commit between them. If
        the store refuses any of it, none of it is kept.

        Raises:
            ValueError: ``tasks`` is empty or holds attempts of more than one run."""
        ...

    def task_records(self, run_id: str) -> list[TaskRecord]:
        """Every attempt of every task of the run, by task id, index and attempt."""
        ...

    def finished_outputs(self, run_id: str) -> dict[tuple[str, int], TaskRecord]:
        """The latest succeeded attempt of each (task_id, index): what a resume need not re-run."""
        ...

    def put_board_entry(self, record: BoardRecord) -> None:
        """Keep one version of a board key (writing the same version again replaces it)."""
        ...

    def board_entries(self, run_id: str) -> list[BoardRecord]:
        """Every version of every key, in the order posted (``updated_at``, key, version)."""
        ...

    def append_event(
        self, run_id: str, type: str, payload: dict[str, Any] | None = None
    ) -> EventRecord:
        """Append an event; the store numbers it and stamps it with its clock."""
        ...

    def append_events(
        self, run_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[EventRecord]:
        """Append several events, (type, payload) pairs, in order, in one transaction."""
        ...

    def events(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """The run's events with ``seq > after_seq``, in order."""
        ...

    def put_review(self, record: ReviewRecord) -> None:
        """Insert or replace the review of (run_id, task_id)."""
        ...

    def get_review(self, run_id: str, task_id: str) -> ReviewRecord | None: ...

    def reviews(
        self, run_id: str | None = None, *, status: ReviewStatus | None = None
    ) -> list[ReviewRecord]:
        """Reviews of one run or of all runs, oldest first."""
        ...

    def put_exchange(
        self, request_hash: str, run_id: str, *, model: str, response: dict[str, Any]
    ) -> None:
        """Record a model's response to a request, for replay (replaces the same hash and run)."""
        ...

    def get_exchange(self, request_hash: str, run_id: str | None = None) -> dict[str, Any] | None:
        """The recorded response to a request: of that run, or the latest of any run."""
        ...

    def put_tool_call(self, record: ToolCallRecord) -> None:
        """Insert or replace the record of (run_id, key); durable when it returns."""
        ...

    def tool_calls(self, run_id: str, task_id: str | None = None) -> list[ToolCallRecord]:
        """The run's tool-call records (of one task), by task id, index, attempt, call index."""
        ...

    def acquire_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        """Take the run's lease for ``ttl_s`` seconds, or renew our own.

        Raises:
            LeaseHeldError: another holder has the lease and it has not expired. An expired lease
                is taken over: that is how a crashed holder's run becomes resumable.
        """
        ...

    def renew_lease(self, run_id: str, holder: str, *, ttl_s: float) -> None:
        """Extend our lease; LeaseHeldError if another holder took it over, StoreError if gone."""
        ...

    def release_lease(self, run_id: str, holder: str) -> None:
        """Give the lease up; does nothing if ``holder`` does not hold it."""
        ...

    def lease(self, run_id: str) -> tuple[str, float] | None:
        """The run's lease as (holder, expires_at), expired or not; None if nobody holds it."""
        ...
