"""Tool side effects exactly once across crashes, resumes and retries.

A tool declared ``@tool(idempotent=False)`` is called through a :class:`ToolCallLog`: before the
call, its intent (a ``ToolCallRecord``, status ``pending``) is written to the run's store and the
write awaited; after it, its result (status ``done``). Only then does the model read it.

An attempt at a task starts from the beginning (its model asked again), so it may ask for a call
an earlier attempt already made. The rule that finds it:

- The idempotency key of a call is ``run_id/task_id/index/attempt/call_index``. ``attempt`` counts
  the attempts of the task instance that recorded calls: one more than the highest recorded one
  (an attempt cut off by SIGKILL left no task record, only its calls, so the store's task
  numbering alone would not tell it apart); ``call_index`` is the order its calls began in.
- A call (tool, arguments) is the repeat of an earlier attempt's call with the same tool and the
  same arguments (sha256 of canonical JSON), taken in key order, each at most once per attempt:
  an attempt that sends two identical e-mails repeats the two of the attempt before.
- Repeated, a ``done`` call's result is reused (``ToolResultReused``), not made again. A
  ``pending`` call's outcome is unknown: the tool's ``reconcile(key)`` says (its result: reused;
  None: made again under the same key), or the task fails with ``ToolOutcomeUnknownError``
  (event ``ToolOutcomeUnknown``) until a person says, with :func:`resolve_tool_call`. A
  ``not_done`` call is made again under its key.
- A call that repeats nothing is a new intent under a new key.

Arguments the tool's schema refuses never reach the log: no intent is written for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from crew import events
from crew.errors import ConfigError, ToolOutcomeUnknownError
from crew.store import Store, ToolCallRecord
from crew.store.writer import StoreWriter
from crew.tools import Tool, _as_text


class ToolCallLog:
    """The calls of tools that are not idempotent made by one attempt at one task instance.

    Args:
        store: the run's store; every write is awaited on its thread (``writer``).
        index: the task instance (a map item, a loop round; 0 otherwise).
        attempt: the attempt's number as the store counts them (the log may count higher).
    """

    def __init__(
        self,
        store: Store,
        writer: StoreWriter,
        run_id: str,
        task_id: str,
        *,
        index: int = 0,
        attempt: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.writer, self.clock = store, writer, clock
        self.run_id, self.task_id, self.index, self.attempt = run_id, task_id, index, attempt
        self._calls = itertools.count()
        self._earlier: list[ToolCallRecord] | None = None
        """Earlier attempts' calls not yet repeated by this one, in key order (read once)."""
        self._loading = asyncio.Lock()

    async def call(
        self,
        tool: Tool,
        arguments: dict[str, Any],
        kwargs: dict[str, Any],
        *,
        emit: events.Emitter,
        call_id: str = "",
    ) -> tuple[str, str]:
        """Make the call once: (result text, error type; "" if none). ``kwargs`` are the
        validated ``arguments``. Raises ``ToolOutcomeUnknownError``, and ``StoreError`` if an
        intent or a result cannot be written (then the tool is not called, or its result is not
        given to the model as if it were safe)."""
        call_index = next(self._calls)  # taken before any wait: the order the calls began in
        digest = arguments_hash(tool.name, arguments)
        earlier = await self._repeated(tool.name, digest)
        if earlier is not None and earlier.status == "done":
            return self._reused(earlier, emit, call_id, "recorded")
        if earlier is not None and earlier.status == "pending":
            found = await self._reconcile(tool, earlier, emit)
            if found is not None:
                done = _finished(earlier, found, "", self.clock())
                await self.writer.call(self.store.put_tool_call, done)
                return self._reused(done, emit, call_id, "reconciled")
        if earlier is not None:  # not done: made again, under its key
            intent = _replace(earlier, status="pending", result=None, finished_at=None)
        else:
            key = f"{self.run_id}/{self.task_id}/{self.index}/{self.attempt}/{call_index}"
            intent = ToolCallRecord(
                run_id=self.run_id, key=key, task_id=self.task_id, index=self.index,
                attempt=self.attempt, call_index=call_index, tool=tool.name,
                arguments=arguments, arguments_hash=digest, status="pending",
                created_at=self.clock(),
            )  # fmt: skip
        await self.writer.call(self.store.put_tool_call, intent)
        error_type = ""
        try:
            result = await tool.call(kwargs, key=intent.key)
        except Exception as exc:  # the model reads the error, as for any tool
            error_type = type(exc).__name__
            result = f"Error: {tool.name} raised {error_type}: {exc}"
        done = _finished(intent, result, error_type, self.clock())
        await self.writer.call(self.store.put_tool_call, done)
        return result, error_type

    async def _repeated(self, tool: str, digest: str) -> ToolCallRecord | None:
        """The earlier call this one repeats (taken: no other call of this attempt gets it)."""
        async with self._loading:
            if self._earlier is None:
                read = self.store.tool_calls
                stored = await self.writer.call(read, self.run_id, self.task_id)
                mine = [r for r in stored if r.index == self.index]
                # a new number, so that this attempt's keys never meet an earlier one's
                self.attempt = max([self.attempt, *(r.attempt + 1 for r in mine)])
                self._earlier = mine
        for position, record in enumerate(self._earlier):
            if record.tool == tool and record.arguments_hash == digest:
                return self._earlier.pop(position)
        return None

    async def _reconcile(
        self, tool: Tool, intent: ToolCallRecord, emit: events.Emitter
    ) -> str | None:
        """What became of a call cut off before its result: its result, or None if it did not
        take effect. Raises ``ToolOutcomeUnknownError`` if nothing can tell."""
        if tool.reconcile is None:
            emit(
                events.ToolOutcomeUnknown, task_id=self.task_id, tool=tool.name, key=intent.key,
                arguments=intent.arguments,
            )  # fmt: skip
            raise ToolOutcomeUnknownError(_unknown_message(intent), **_about(intent))
        try:
            if inspect.iscoroutinefunction(tool.reconcile):
                found = await tool.reconcile(intent.key)
            else:
                found = await asyncio.to_thread(tool.reconcile, intent.key)
        except Exception as exc:
            raise ToolOutcomeUnknownError(
                f"{_unknown_message(intent)} Its reconcile() raised {type(exc).__name__}: {exc}",
                **_about(intent),
            ) from exc
        return None if found is None else _as_text(found)

    def _reused(
        self, record: ToolCallRecord, emit: events.Emitter, call_id: str, how: str
    ) -> tuple[str, str]:
        result = record.result or ""
        emit(
            events.ToolResultReused, task_id=self.task_id, tool=record.tool, key=record.key,
            result=result, call_id=call_id, how=how,
        )  # fmt: skip
        return result, record.error_type


def arguments_hash(tool: str, arguments: dict[str, Any]) -> str:
    """sha256 of the tool's name and its arguments as canonical JSON."""
    text = json.dumps([tool, arguments], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def unknown_tool_calls(store: Store, run_id: str) -> list[ToolCallRecord]:
    """The run's calls whose outcome is unknown: begun, with no result recorded."""
    return [r for r in store.tool_calls(run_id) if r.status == "pending"]


def resolve_tool_call(
    store: Store, run_id: str, key: str, *, done: bool, result: str = ""
) -> ToolCallRecord:
    """Record what a person found out about a call whose outcome is unknown: ``done=True`` with
    the ``result`` the model should read (it is not made again), or ``done=False`` (it is made
    again, under the same key, when the run is resumed). Then resume the run.

    Raises:
        ConfigError: the run has no call with that key whose outcome is unknown.
    """
    found = next((r for r in unknown_tool_calls(store, run_id) if r.key == key), None)
    if found is None:
        listed = "; ".join(r.key for r in unknown_tool_calls(store, run_id)) or "none"
        raise ConfigError(
            f"Run '{run_id}' has no tool call '{key}' whose outcome is unknown. Unknown: {listed}."
        )
    if done:
        record = _finished(found, result, "", time.time())
    else:
        record = _replace(found, status="not_done", finished_at=time.time())
    store.put_tool_call(record)
    return record


def _unknown_message(intent: ToolCallRecord) -> str:
    arguments = json.dumps(intent.arguments, ensure_ascii=False, default=str)
    return (
        f"Task '{intent.task_id}': tool '{intent.tool}' was called with {arguments} (key "
        f"'{intent.key}'), and the run stopped before its result was recorded, so crew cannot "
        "tell whether it took effect, and will not call it again blindly. Check whether it did, "
        f"then record it: `crew resolve {intent.run_id} {intent.key} --done RESULT` if it did, "
        "`--not-done` if it did not (in Python: crew.tool_calls.resolve_tool_call); then resume "
        "the run. Or give the tool reconcile= to decide this by itself."
    )


def _about(intent: ToolCallRecord) -> dict[str, str]:
    return {"task_id": intent.task_id, "key": intent.key, "tool": intent.tool}


def _finished(intent: ToolCallRecord, result: str, error_type: str, at: float) -> ToolCallRecord:
    return _replace(intent, status="done", result=result, error_type=error_type, finished_at=at)


def _replace(record: ToolCallRecord, **changes: Any) -> ToolCallRecord:
    return dataclasses.replace(record, **changes)
