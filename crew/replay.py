"""Record and replay: every model exchange of a run kept in its store, answered from there later.

Each request is hashed (:func:`request_hash`: the model and its sampling settings, the messages,
the tools and the output schema; not keys, servers, timeouts, retry policy or whether the call
goes directly over HTTP or through litellm) and numbered by occurrence within the run, so the
same request sent twice is two exchanges, ``HASH.0`` and ``HASH.1``, replayed in the same order.
Every answer, whether it came from the provider or from the store, is recorded in the run that
got it (``Store.put_exchange``).

A run started with ``replay=RUN`` looks each request up in RUN first, then in the runs RUN was
forked from: a recorded answer comes back without a model call, with its token counts and a
cost of 0 (it cost nothing this time). A request RUN did not record goes to the provider, or,
with ``strict=True``, fails with ``ReplayMissError``.

A resumed run numbers its requests from 0 again: a request it sends again replaces the record
of the same occurrence, which was an answer to the same request. A run never replays its own
record unless asked: a task resumed after bad answers must be asked afresh.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from crew.errors import ConfigError, ReplayMissError
from crew.llm import LLM, ChatModel, ChatRequest, ChatResponse, ToolCall
from crew.store import Store
from crew.usage import Usage

_TRANSPORT = frozenset(
    {"timeout", "api_key", "api_base", "base_url", "api_version", "extra_headers", "headers",
     "num_retries", "organization", "metadata"}
)  # fmt: skip
"""``LLM.params`` that say how to reach the model, not what it answers: left out of the hash."""

_MAX_LINEAGE = 100

Call = Callable[[ChatRequest], Awaitable[ChatResponse]]


def request_hash(model: ChatModel, request: ChatRequest) -> str:
    """The sha256 of the canonical JSON of what decides a model's answer to ``request``."""
    fields: dict[str, Any] = {
        "model": model.name,
        "messages": request.messages,
        "tools": request.tools,
        "output_schema": request.output_schema,
        "output_name": request.output_name if request.output_schema is not None else None,
    }
    if isinstance(model, LLM):
        fields["temperature"] = model.temperature
        fields["max_tokens"] = model.max_tokens
        fields["params"] = {k: v for k, v in model.params.items() if k not in _TRANSPORT}
    text = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    # surrogatepass: a prompt may quote a model's lone surrogate; other text hashes as UTF-8
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Exchanges:
    """The model exchanges of one run: each recorded, and answered from an earlier run's record
    when replaying. One per run, shared by every model of the run (the occurrence numbers are).

    Args:
        store: where the run is kept.
        run_id: the run whose exchanges are recorded (it must exist in the store by the time the
            first model call is made).
        replay: the run whose recorded answers are replayed, or None to replay nothing.
        strict: fail a request ``replay`` did not record, rather than send it to the provider.
        record: keeps an exchange (its key, model and response): a run's checkpoint, which
            writes it with the task's commit, off the event loop; by default, the store at once.

    Raises:
        ConfigError: ``replay`` is not in the store, or ``strict`` is set without ``replay``.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        replay: str | None = None,
        strict: bool = False,
        record: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        if strict and replay is None:
            raise ConfigError(
                "replay_strict=True needs a run to replay: pass replay='RUN_ID' too "
                "(crew run ... --replay RUN_ID --replay-strict)."
            )
        self.store = store
        self.run_id = run_id
        self.record = record or functools.partial(_put, store, run_id)
        self.replay = replay
        self.strict = strict
        self.sources = _lineage(store, replay) if replay is not None else []
        self.replayed = 0
        """Requests answered from the store."""
        self.sent = 0
        """Requests answered by the model itself."""
        self._seen: dict[str, int] = {}

    def wrap(self, model: ChatModel, call: Call | None = None) -> ChatModel:
        """``model``, its exchanges recorded and, when replaying, answered from the store;
        ``call`` sends what the store does not answer (by default ``model.complete``)."""
        return _Recorded(model, self, call or model.complete)

    async def answer(self, model: ChatModel, request: ChatRequest, call: Call) -> ChatResponse:
        """The recorded answer to ``request`` if the replayed run has it, else ``call``'s."""
        digest = request_hash(model, request)
        occurrence = self._seen.get(digest, 0)
        self._seen[digest] = occurrence + 1  # numbered before any await: a stable order
        key = f"{digest}.{occurrence}"
        record = self._recorded(key)
        if record is not None:
            self.replayed += 1
            response = _replayed(record)
            if request.on_token is not None and response.content:
                request.on_token(response.content)  # streaming consumers see it, in one piece
        elif self.strict:
            raise self._miss(model, request)
        else:
            response = await call(request)
            self.sent += 1
            record = _to_record(response)
        self.record(key, response.model or model.name, record)
        return response

    def _recorded(self, key: str) -> dict[str, Any] | None:
        for run_id in self.sources:
            record = self.store.get_exchange(key, run_id)
            if record is not None:
                return record
        return None

    def _miss(self, model: ChatModel, request: ChatRequest) -> ReplayMissError:
        where = f"Task '{request.task_id}' (agent '{request.agent}')"
        return ReplayMissError(
            f"{where}: its request to model '{model.name}' was not recorded in run "
            f"'{self.replay}', and strict replay (--replay-strict, replay_strict=True) sends "
            "nothing to the provider. Replay a run of the same crew, inputs and models, or drop "
            "--replay-strict to let unrecorded requests through.",
            model=model.name,
        )


class _Recorded:
    """A ``ChatModel`` whose calls go through the run's ``Exchanges``: a wrapper, so any model
    can be recorded, and what the agent loop asks of the model passes through."""

    def __init__(self, model: ChatModel, exchanges: Exchanges, call: Call) -> None:
        self.model = model
        self.exchanges = exchanges
        self.call = call

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def enforces_schema(self) -> bool:
        return bool(getattr(self.model, "enforces_schema", False))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.exchanges.answer(self.model, request, self.call)


def _lineage(store: Store, run_id: str) -> list[str]:
    """``run_id`` and the runs it was forked from, nearest first."""
    if store.get_run(run_id) is None:
        raise ConfigError(
            f"Cannot replay run '{run_id}': it is not in the store. `crew runs` lists the runs."
        )
    lineage: list[str] = []
    current: str | None = run_id
    while current is not None and current not in lineage and len(lineage) < _MAX_LINEAGE:
        record = store.get_run(current)
        if record is None:  # an ancestor pruned away
            break
        lineage.append(current)
        current = record.parent_run_id
    return lineage


def _to_record(response: ChatResponse) -> dict[str, Any]:
    return {
        "content": response.content,
        "tool_calls": [dataclasses.asdict(call) for call in response.tool_calls],
        "usage": response.usage.to_dict(),
        "model": response.model,
    }


def _replayed(record: dict[str, Any]) -> ChatResponse:
    """A recorded answer, as the model gave it, but at no cost: it cost nothing this time."""
    usage = record.get("usage") or {}
    return ChatResponse(
        content=record.get("content"),
        tool_calls=tuple(ToolCall(**call) for call in record.get("tool_calls") or ()),
        usage=Usage(
            calls=int(usage.get("calls", 1)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        ),
        model=str(record.get("model") or ""),
    )


def _put(store: Store, run_id: str, key: str, model: str, response: dict[str, Any]) -> None:
    store.put_exchange(key, run_id, model=model, response=response)
