"""The bundled model's worker process: the only process that loads llama.cpp.

Started by ``crew.local`` as ``python -m crew.local.worker MODEL_PATH`` on the first call to the
bundled model. It speaks JSON lines: requests on stdin, answers on stdout.

- ``{"id": n, "messages": [...], "options": {...}, "stream": bool}`` asks for one chat
  completion. The answer is ``{"id": n, "text": "..."}`` per piece when streaming, then
  ``{"id": n, "result": {...}}`` or ``{"id": n, "error": {"kind": ..., "message": ...}}``.
- ``{"cancel": n}`` stops generation ``n`` at its next token.
- End of input (crew closed the pipe, exited or died) ends the worker at once, even in the middle
  of a generation: the worker never outlives crew.

A crash, a hang or an out-of-memory kill here costs crew one call, never the run: crew sees the
pipe close and turns it into a retryable error. Nothing here imports litellm.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

N_CTX = 4096
"""Context window in tokens (the model was trained on 8192; 4096 keeps memory small)."""
PENALTY_WINDOW = 1024
"""How many of the last tokens the repeat and frequency penalties look at."""


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole foreground process group: crew handles it and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) != 1:
        print("usage: python -m crew.local.worker MODEL_PATH", file=sys.stderr)
        return 2
    # Answers go out on a copy of stdout; whatever llama.cpp prints goes to stderr instead.
    out = _Output(os.fdopen(os.dup(1), "w", encoding="utf-8"))
    os.dup2(2, 1)
    sys.stdin = open(sys.stdin.fileno(), encoding="utf-8", closefd=False)  # noqa: SIM115
    started = time.perf_counter()
    model = _load(argv[0])
    out.send({"ready": True, "load_s": round(time.perf_counter() - started, 3), **_build_info()})
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancelled: set[int] = set()
    threading.Thread(target=_serve, args=(model, requests, cancelled, out), daemon=True).start()
    for line in sys.stdin:
        message = json.loads(line)
        if "cancel" in message:
            cancelled.add(message["cancel"])
        else:
            requests.put(message)
    os._exit(0)  # crew is gone: stop now, whatever the model is doing


class _Output:
    """stdout, one JSON object a line, written whole by one thread at a time."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _serve(
    model: Any,
    requests: queue.Queue[dict[str, Any] | None],
    cancelled: set[int],
    out: _Output,
) -> None:
    while (request := requests.get()) is not None:
        rid = request["id"]
        try:
            for piece in _generate(model, request, functools.partial(cancelled.__contains__, rid)):
                if isinstance(piece, str):
                    out.send({"id": rid, "text": piece})
                else:
                    out.send({"id": rid, "result": piece})
        except ValueError as exc:  # a prompt too long, or a schema llama.cpp cannot compile
            kind = "context_window" if "context window" in str(exc) else "bad_request"
            out.send({"id": rid, "error": {"kind": kind, "message": str(exc)}})
        except Exception as exc:
            out.send({"id": rid, "error": {"kind": "internal", "message": repr(exc)}})
        finally:
            cancelled.discard(rid)


def _generate(
    model: Any, request: dict[str, Any], cancelled: Callable[[], bool]
) -> Iterator[str | dict[str, Any]]:
    """One chat completion: its pieces of text (when streaming), then its result.

    Streamed from llama.cpp even when the caller wants the whole answer, so that a cancel can
    stop it between tokens (llama.cpp offers no other way to interrupt a generation).
    """
    from llama_cpp import LogitsProcessorList

    meter = _Meter()
    json_mode = "response_format" in request["options"]
    finish_reason = "stop"
    pieces: list[str] = []
    started = time.perf_counter()
    first_token_s = None
    chunks = model.create_chat_completion(
        messages=request["messages"],
        stream=True,
        logits_processor=LogitsProcessorList([meter]),
        **request["options"],
    )
    try:
        for chunk in chunks:
            if cancelled():
                finish_reason = "cancelled"
                break
            choice = chunk["choices"][0]
            if text := choice["delta"].get("content"):
                if first_token_s is None:
                    first_token_s = time.perf_counter() - started
                pieces.append(text)
                if request.get("stream") and not json_mode:
                    yield text
            finish_reason = choice.get("finish_reason") or finish_reason
    finally:
        chunks.close()
    # The last sample of a generation that stopped by itself is the end-of-text token.
    completion_tokens = max(0, meter.samples - (finish_reason == "stop"))
    text = _valid_json(pieces) if json_mode else "".join(pieces)
    if json_mode and request.get("stream"):
        yield text  # whole: it may differ from the pieces (see _valid_json)
    yield {
        "text": text,
        "finish_reason": finish_reason,
        "prompt_tokens": meter.prompt_tokens,
        "completion_tokens": completion_tokens,
        "seconds": round(time.perf_counter() - started, 4),
        "first_token_s": None if first_token_s is None else round(first_token_s, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _valid_json(pieces: list[str]) -> str:
    """The answer of a JSON-schema grammar as strict JSON.

    llama.cpp's grammar for JSON strings lets raw control characters (a newline in a paragraph)
    through, which strict parsers (pydantic's) reject; they are escaped here.
    """
    text = "".join(pieces)
    try:
        return json.dumps(json.loads(text, strict=False), ensure_ascii=False)
    except ValueError:
        return text  # cut short (max_tokens): the caller's validation says what is wrong


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


def _load(path: str) -> Any:
    import llama_cpp
    import llama_cpp.llama_cpp as native

    if "AMX" in _system_info():
        # A build tuned to a CPU with AMX repacks the weights for AMX, and llama.cpp's AMX matrix
        # multiply crashes on some such hosts. Plain CPU buffers never take that path.
        default_params = native.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        native.llama_model_default_params = without_extra_buffers
    # Half the cores: llama.cpp's threads spin while they wait, and on a busy machine (crew's own
    # process, the tools, other workers) all of them would fight for every core.
    threads = int(os.environ.get("CREW_LOCAL_THREADS") or max(1, len(os.sched_getaffinity(0)) // 2))
    # Penalties look back over the whole answer, not llama.cpp's default 64 tokens: otherwise a
    # small model copies a paragraph it wrote 100 tokens earlier into the next field.
    return llama_cpp.Llama(
        model_path=path,
        n_ctx=N_CTX,
        n_threads=threads,
        last_n_tokens_size=PENALTY_WINDOW,
        verbose=False,
    )


def _system_info() -> str:
    import llama_cpp

    return str(llama_cpp.llama_print_system_info().decode())


def _build_info() -> dict[str, Any]:
    """What the installed llama.cpp was compiled for: ``features`` lists what is on (``AVX2``)."""
    import llama_cpp

    info = _system_info()
    features = [
        part.split("=")[0].strip()
        for part in info.replace("CPU :", "").split("|")
        if part.strip().endswith("= 1")
    ]
    return {"llama_cpp": llama_cpp.__version__, "features": features, "pid": os.getpid()}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
