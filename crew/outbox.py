"""A run's outbox: the events and model exchanges it has yet to write to its store.

They wait here, on the event loop, for the next commit of finished tasks, which takes them all
into its one transaction (``Checkpoint.on_output``); those no commit takes within
``EVENT_BATCH_S`` are written in a batch of their own, on the store's thread. ``flush`` writes
what is left before a run returns. An event the store refuses is tried again on its own and, if
it still cannot be written, reported (``on_lost``), never dropped unseen.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from crew import events
from crew.errors import StoreError, StoreUnavailableError
from crew.store import Store
from crew.store.writer import StoreWriter

EVENT_TRIES = 3
"""How many times an event is written before it is given up (and reported)."""
EVENT_BACKOFF_S = 0.05
"""The wait before the second try; it doubles before each next one."""
EVENT_BATCH_S = 0.05
"""How long an event waits for others (or for its task's commit) to be written with them."""

Pending = tuple[events.Event, str, dict[str, Any]]
"""An event not yet written: the event, its type and its payload as stored."""
Exchange = tuple[str, str, dict[str, Any]]
"""A model exchange not yet written: its request hash, model and response."""


class Outbox:
    """What one run has yet to write: events and model exchanges, oldest first.

    Args:
        store: the run's store.
        run_id: the run.
        writer: the store's thread.
        on_failed: told of a model exchange the store could not write (from the store's thread).
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        writer: StoreWriter,
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self.store, self.run_id, self.writer, self.on_failed = store, run_id, writer, on_failed
        self.on_lost: Callable[[events.Event, Exception], None] | None = None
        """Told of each event the store could not record, on the event loop (the run reports
        it as ``SinkFailed``)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The run's event loop, once it began: batches are timed on it."""
        self._events: list[Pending] = []
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()  # the store's thread takes what the loop put
        self._batch: asyncio.TimerHandle | None = None

    def add_event(self, event: events.Event, type_: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._events.append((event, type_, payload))
        self._write_soon()

    def add_exchange(self, request_hash: str, model: str, response: dict[str, Any]) -> None:
        with self._lock:
            self._exchanges.append((request_hash, model, response))
        self._write_soon()

    def take(self) -> tuple[list[Pending], list[Exchange]]:
        """Everything waiting, now the caller's to write (on the store's thread)."""
        with self._lock:
            batch, self._events = self._events, []
            exchanges, self._exchanges = self._exchanges, []
        return batch, exchanges

    def give_back(self, batch: list[Pending], exchanges: list[Exchange]) -> None:
        """Put back what ``take`` gave and could not be written, ahead of the rest."""
        with self._lock:
            self._events[:0] = batch
            self._exchanges[:0] = exchanges

    def _write_soon(self) -> None:
        if self._batch is None:
            if _running_loop() is self.loop and self.loop is not None:
                self._batch = self.loop.call_later(EVENT_BATCH_S, self._write_batch)
            else:  # emitted from another thread (or before the run began): no timer to set
                self.writer.submit(self.write)

    def _write_batch(self) -> None:
        self._batch = None
        self.writer.submit(self.write)

    async def flush(self) -> None:
        """Write everything waiting (and the events that report a lost one)."""
        self._stop_timer()
        while True:
            await self.writer.call(self.write)
            await asyncio.sleep(0)  # let the reports of lost events be emitted
            with self._lock:
                if not self._events and not self._exchanges:
                    return

    async def last_try(self) -> None:
        """The run ends on an error: write what waits, once, and leave no timer behind (the
        loop of ``Crew.run`` outlives the run). A failure is only logged: the run's own error
        is the one raised."""
        self._stop_timer()
        try:
            await self.writer.call(self.write)
        except Exception as exc:
            _log.warning("run %s: events not recorded as the run failed: %s", self.run_id, exc)

    def _stop_timer(self) -> None:
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None

    def write(self) -> None:
        """On the store's thread: write the waiting exchanges, then the events in one
        transaction; if the store refuses, each event on its own (``_append_event``), so only
        those it cannot take are lost, and reported."""
        batch, exchanges = self.take()
        for request_hash, model, response in exchanges:  # a failed attempt's, say
            try:
                self.store.put_exchange(request_hash, self.run_id, model=model, response=response)
            except StoreError as exc:  # a replay of this run will lack it: say so
                _log.warning("run %s: a model exchange was not recorded: %s", self.run_id, exc)
                self.on_failed(exc)
        if not batch:
            return
        lost: list[tuple[events.Event, Exception]] = []
        try:
            self.store.append_events(self.run_id, [(t, p) for _, t, p in batch])
        except StoreUnavailableError as exc:
            lost = [(event, self._unrecorded(type_, exc)) for event, type_, _ in batch]
        except StoreError:
            for event, type_, payload in batch:
                try:
                    self._append_event(type_, payload)
                except StoreError as error:
                    lost.append((event, error))
        for event, why in lost:
            self._report(event, why)

    def _report(self, event: events.Event, exc: Exception) -> None:
        """Tell ``on_lost``, on the event loop, that ``event`` was not recorded."""
        if self.on_lost is None:
            _log.warning("run %s: event %s was not recorded: %s", self.run_id, event, exc)
        elif self.loop is None or _running_loop() is self.loop:
            self.on_lost(event, exc)
        else:
            try:
                self.loop.call_soon_threadsafe(self.on_lost, event, exc)
            except RuntimeError:  # the loop is closed: the run is over, only the log is left
                _log.warning("run %s: event %s was not recorded: %s", self.run_id, event, exc)

    def _append_event(self, type_: str, payload: dict[str, Any]) -> None:
        """Append one event, trying a few times: a busy database often takes it a moment later.

        ``StoreUnavailableError`` is not tried again here: the SQL stores raise it only after
        trying for their whole ``retry_budget_s``, and retries are never stacked."""
        for attempt in range(1, EVENT_TRIES + 1):
            try:
                self.store.append_event(self.run_id, type_, payload)
                return
            except StoreUnavailableError as exc:
                raise self._unrecorded(type_, exc) from exc
            except StoreError as exc:
                if attempt == EVENT_TRIES:
                    raise StoreError(
                        f"event {type_} of run {self.run_id} was not recorded after "
                        f"{EVENT_TRIES} tries, so `crew logs` lacks it: {exc}"
                    ) from exc
                time.sleep(EVENT_BACKOFF_S * 2 ** (attempt - 1))  # on the store's thread

    def _unrecorded(self, type_: str, exc: StoreError) -> StoreError:
        error = StoreError(
            f"event {type_} of run {self.run_id} was not recorded, so `crew logs` lacks it: {exc}"
        )
        error.__cause__ = exc
        return error


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_log = logging.getLogger("crew")
