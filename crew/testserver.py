"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It runs its own event loop in a daemon thread, so sync and async test code can both call it::

    with FakeOpenAIServer() as server:
        server.script("facts", ServerReply(text="- a\\n- b", latency_ms=100))
        litellm.completion(model="openai/fake", api_base=server.url, api_key="sk-test", ...)
        assert server.calls[0].key == "facts"

Requests are routed by the first ``# Task: <key>`` line of a user message, or by ``route``.
HTTP/1.1 is hand-written on asyncio streams so the server adds only microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

_TASK_LINE = re.compile(r"^# Task: (\S+)", re.MULTILINE)
_HANG_S = 600.0
_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
_REASONS = {s.value: s.phrase for s in HTTPStatus}


@dataclass(frozen=True, kw_only=True)
class ServerReply:
    """One scripted answer to a chat-completions request."""

    text: str | None = None
    """Assistant message content."""
    json: Any = None
    """A value sent as content via ``json.dumps``; takes precedence over ``text``."""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()
    """``(name, arguments)`` pairs the assistant asks to call."""
    latency_ms: float | None = None
    """Delay before answering; ``None`` uses the server's ``latency_ms``."""
    status: int = 200
    """HTTP status; anything but 200 answers with an OpenAI-style error body."""
    error: str = ""
    """Error message for a non-200 status (a default per status when empty)."""
    retry_after_s: float | None = None
    """Value of a ``Retry-After`` header, in (possibly fractional) seconds."""
    hang: bool = False
    """Never answer (within ``hang_s``), so the client times out."""
    hang_s: float = _HANG_S
    """With ``hang``: how long the request is held before the connection is dropped unanswered,
    as a load balancer's idle timeout does (60-100 s at the big providers)."""
    body: Any = None
    """A JSON value sent as the whole 200 answer instead of a completion (a malformed answer,
    e.g. ``{"choices": []}``)."""
    prompt_tokens: int | None = None
    """Reported prompt tokens; ``None`` estimates ``len(prompt) // 4 + 1``."""
    completion_tokens: int | None = None
    """Reported completion tokens; ``None`` estimates ``len(completion) // 4 + 1``."""


@dataclass(frozen=True)
class Call:
    """One chat-completions request the server received."""

    key: str
    """Routing key (the ``# Task:`` name, or ``"*"``)."""
    model: str
    """The ``model`` field of the request."""
    body: dict[str, Any]
    """The parsed JSON request."""
    status: int
    """HTTP status answered; 0 for a ``hang`` reply, which never answers."""
    started: float
    """``time.perf_counter()`` when the request was fully read."""
    finished: float
    """``time.perf_counter()`` right before the response was written (or the hang gave up)."""
    tool_results: int
    """Number of ``role: "tool"`` messages in the request."""


ReplySource = ServerReply | Callable[[dict[str, Any]], ServerReply]


class Faults:
    """Transient faults put in place of a share of the answers, at random (seeded, so a run
    can be repeated), as a flaky provider sends them: ``FakeOpenAIServer(faults=Faults(...))``.

    Each request draws once: with probability ``rate_limited`` it is answered 429 (with a
    Retry-After of ``retry_after_s`` on a ``retry_after_share`` of them), with ``server_error``
    500, with ``hang`` held ``hang_s`` and then dropped unanswered; else it gets its scripted
    reply. Scripted errors and hangs are left as they are.
    """

    def __init__(
        self,
        *,
        rate_limited: float = 0.0,
        server_error: float = 0.0,
        hang: float = 0.0,
        retry_after_s: float = 1.0,
        retry_after_share: float = 0.5,
        hang_s: float = 5.0,
        seed: int | None = 0,
    ) -> None:
        if rate_limited + server_error + hang > 1 or min(rate_limited, server_error, hang) < 0:
            raise ValueError("Faults: each rate must be >= 0 and together at most 1.")
        self.rate_limited, self.server_error, self.hang = rate_limited, server_error, hang
        self.retry_after_s, self.retry_after_share = retry_after_s, retry_after_share
        self.hang_s = hang_s
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        """How many of each fault were injected: ``429``, ``500``, ``hang``."""

    def pick(self, reply: ServerReply) -> ServerReply:
        """``reply``, or the fault drawn in its place."""
        with self._lock:
            draw, share = self._random.random(), self._random.random()
            if draw < self.rate_limited:
                self.injected["429"] += 1
                after = self.retry_after_s if share < self.retry_after_share else None
                return ServerReply(status=429, error="Rate limit reached.", retry_after_s=after)
            draw -= self.rate_limited
            if draw < self.server_error:
                self.injected["500"] += 1
                return ServerReply(status=500, error="The server had an error.")
            if draw - self.server_error < self.hang:
                self.injected["hang"] += 1
                return ServerReply(hang=True, hang_s=self.hang_s)
        return reply


class FakeOpenAIServer:
    """Scripted OpenAI-compatible server; use as a context manager or via ``start``/``stop``."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        route: Callable[[dict[str, Any]], str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.latency_ms = latency_ms
        self.faults = faults
        """Transient faults injected into a share of the requests (see ``Faults``)."""
        self.default: ReplySource = ServerReply(text="ok")
        self.host, self.port = host, port
        self._route = route or _task_key
        self._rules: dict[tuple[str, str | None], list[ServerReply]] = {}
        self._calls: list[Call] = []
        self._since = 0.0  # calls that started before this (the last reset) are not recorded
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._connections = 0

    @property
    def url(self) -> str:
        """Base URL to pass as ``api_base``, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def calls(self) -> list[Call]:
        """A snapshot of the requests received, in arrival order."""
        with self._lock:
            return list(self._calls)

    @property
    def connections(self) -> int:
        """The connections accepted since the server started (a client that reuses its
        connections opens few)."""
        with self._lock:
            return self._connections

    def script(self, key: str, *replies: ServerReply, model: str | None = None) -> None:
        """Answer requests routed to ``key`` (and ``model``) with ``replies``; the last repeats."""
        if not replies:
            raise ValueError(f"script({key!r}) needs at least one ServerReply.")
        with self._lock:
            self._rules[key, model] = list(replies)

    def reset(self) -> None:
        """Forget all scripted rules and recorded calls. A call in flight now (a request of a
        process a test killed, still being answered) is not recorded when it ends: it belongs
        to what came before the reset."""
        with self._lock:
            self._rules.clear()
            self._calls.clear()
            self._since = time.perf_counter()

    def start(self) -> FakeOpenAIServer:
        """Bind and serve in a background thread; returns ``self``."""
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        # A backlog above asyncio's 100: a client opening hundreds of connections at once
        # would otherwise see its connects beyond the 100th dropped and retried a second later.
        opening = asyncio.start_server(self._connection, self.host, self.port, backlog=1024)
        try:
            self._server = asyncio.run_coroutine_threadsafe(opening, self._loop).result(10)
        except BaseException:
            self.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the server and every open connection, then join the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _pick(self, key: str, model: str) -> ReplySource:
        with self._lock:
            for rule_key in (key, "*"):
                rules = [m for k, m in self._rules if k == rule_key and _same_model(m, model)]
                for rule in [(rule_key, m) for m in rules] + [(rule_key, None)]:
                    if replies := self._rules.get(rule):
                        return replies.pop(0) if len(replies) > 1 else replies[0]
        return self.default

    def _record(self, body: dict[str, Any], key: str, status: int, started: float) -> None:
        tools = sum(1 for m in _messages(body) if m.get("role") == "tool")
        model = str(body.get("model", ""))
        with self._lock:
            if started >= self._since:
                self._calls.append(
                    Call(key, model, body, status, started, time.perf_counter(), tools)
                )

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with self._lock:
            self._connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                fields = (line.partition(":") for line in head[1:])
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                size = int(headers.get("content-length", "0"))
                data = await reader.readexactly(size) if size else b""
                keep_alive = headers.get("connection", "").lower() != "close"
                response = await self._dispatch(method, target, data, reader, keep_alive)
                if response is None:
                    break
                writer.write(response)
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
            pass  # the client went away or spoke something other than HTTP/1.1
        except asyncio.CancelledError:
            pass  # stop() cancelled us; ending quietly keeps asyncio 3.11 from logging it
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _dispatch(
        self, method: str, target: str, data: bytes, reader: asyncio.StreamReader, keep_alive: bool
    ) -> bytes | None:
        path = target.split("?", 1)[0].rstrip("/")
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            try:
                body = json.loads(data)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return _error(
                    ServerReply(status=400, error="The body is not a JSON object."), keep_alive
                )
            return await self._complete(body, reader, keep_alive)
        if method == "GET" and path == "/v1/models":
            model = {"id": "fake", "object": "model", "owned_by": "crew"}
            models = json.dumps({"object": "list", "data": [model]}).encode()
            return _http(200, models, keep_alive)
        return _error(ServerReply(status=404, error=f"No route for {method} {path}"), keep_alive)

    async def _complete(
        self, body: dict[str, Any], reader: asyncio.StreamReader, keep_alive: bool
    ) -> bytes | None:
        started = time.perf_counter()
        key = "*"
        try:
            key = self._route(body)
            source = self._pick(key, str(body.get("model", "")))
            reply = source(body) if callable(source) else source
        except Exception as exc:  # a broken route or default callable answers 500, visibly
            reply = ServerReply(
                status=500, error=f"Fake server failed: {type(exc).__name__}: {exc}"
            )
        if self.faults is not None and reply.status == 200 and not reply.hang:
            reply = self.faults.pick(reply)
        if reply.hang:
            try:  # give up when the client disconnects, the server stops, or after hang_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1), reply.hang_s)
            finally:
                self._record(body, key, 0, started)
            return None
        latency_ms = self.latency_ms if reply.latency_ms is None else reply.latency_ms
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        if reply.status != 200:
            response = _error(reply, keep_alive)
        elif reply.body is not None:
            response = _http(200, json.dumps(reply.body).encode(), keep_alive)
        elif body.get("stream"):
            response = self._stream(body, reply, keep_alive)
        else:
            completion = json.dumps(self._completion(body, reply)).encode()
            response = _http(200, completion, keep_alive)
        self._record(body, key, reply.status, started)
        return response

    def _completion(self, body: dict[str, Any], reply: ServerReply) -> dict[str, Any]:
        content, tool_calls = self._message(reply)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        finish = "tool_calls" if tool_calls else "stop"
        choice = {"index": 0, "message": message, "finish_reason": finish}
        usage = _usage(body, reply, content, tool_calls)
        return {**self._envelope(body, "chat.completion"), "choices": [choice], "usage": usage}

    def _stream(self, body: dict[str, Any], reply: ServerReply, keep_alive: bool) -> bytes:
        content, tool_calls = self._message(reply)
        text = content or ""
        step = max(1, -(-len(text) // 3))  # about three pieces
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in pieces]
        if tool_calls:
            deltas.append({"tool_calls": [{**c, "index": i} for i, c in enumerate(tool_calls)]})
        deltas[0:1] = [{"role": "assistant", **(deltas[0] if deltas else {"content": ""})}]
        finish = "tool_calls" if tool_calls else "stop"
        ends: list[str | None] = [None] * len(deltas) + [finish]
        envelope = self._envelope(body, "chat.completion.chunk")
        events = [
            {**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": end}]}
            for delta, end in zip([*deltas, {}], ends, strict=True)
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events[-1]["usage"] = _usage(body, reply, content, tool_calls)
        lines = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines) + b"0\r\n\r\n"
        stream = ("Content-Type: text/event-stream", "Transfer-Encoding: chunked")
        return _http(200, chunks, keep_alive, *stream)

    def _message(self, reply: ServerReply) -> tuple[str | None, list[dict[str, Any]]]:
        content = reply.text if reply.json is None else json.dumps(reply.json)
        tool_calls = [
            {
                "id": f"call_{next(self._ids)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for name, args in reply.tool_calls
        ]
        return ("" if content is None and not tool_calls else content), tool_calls

    def _envelope(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        envelope = {"id": f"chatcmpl-{next(self._ids)}", "object": kind}
        return {**envelope, "created": int(time.time()), "model": body.get("model", "fake")}


def _task_key(body: dict[str, Any]) -> str:
    for message in _messages(body):
        if message.get("role") == "user" and (found := _TASK_LINE.search(_text(message))):
            return found.group(1)
    return "*"


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _same_model(scripted: str | None, requested: str) -> bool:
    # litellm strips the provider prefix ("openai/backup" -> "backup") before sending.
    return scripted is not None and requested in (scripted, scripted.partition("/")[2])


def _usage(
    body: dict[str, Any], reply: ServerReply, content: str | None, tool_calls: list[dict[str, Any]]
) -> dict[str, int]:
    prompt = "".join(_text(m) for m in _messages(body))
    answer = content or "".join(c["function"]["arguments"] for c in tool_calls)
    asked = len(prompt) // 4 + 1 if reply.prompt_tokens is None else reply.prompt_tokens
    done = len(answer) // 4 + 1 if reply.completion_tokens is None else reply.completion_tokens
    return {"prompt_tokens": asked, "completion_tokens": done, "total_tokens": asked + done}


def _error(reply: ServerReply, keep_alive: bool) -> bytes:
    kind = "server_error" if reply.status >= 500 else "invalid_request_error"
    kind = _ERROR_TYPES.get(reply.status, kind)
    error = {"message": reply.error or _REASONS.get(reply.status, "Error"), "type": kind}
    payload = json.dumps({"error": {**error, "code": reply.status}}).encode()
    headers = ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    if reply.retry_after_s is not None:
        headers.append(f"Retry-After: {reply.retry_after_s:g}")
    return _http(reply.status, payload, keep_alive, *headers)


def _http(status: int, body: bytes, keep_alive: bool, *headers: str) -> bytes:
    """Render one response, head and body together so it goes out in one write."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        *(headers or ("Content-Type: application/json", f"Content-Length: {len(body)}")),
        "Connection: keep-alive" if keep_alive else "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake OpenAI-compatible server.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    with FakeOpenAIServer(latency_ms=args.latency_ms, port=args.port) as server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    _main()
