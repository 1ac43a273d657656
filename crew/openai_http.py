"""The direct path to OpenAI-compatible servers: ``POST {api_base}/chat/completions`` over
aiohttp, without litellm. The only module that imports aiohttp.

``crew.llm.LLM`` sends ``openai/*`` models here: OpenAI itself, or any server named by
``api_base`` that speaks its API (vLLM, llama.cpp's server, Ollama's ``/v1``,
``crew.testserver``). One call is one attempt: what goes wrong comes back as crew's error, with
the provider's own words (``crew.llm`` adds the model and the fix). Retries, Retry-After waits,
fallbacks and rate limits stay in ``crew.llm`` and ``crew.retry``, as for litellm's path.

aiohttp is imported on the first call (or by ``prepare``), not on ``import crew``. It costs
about a quarter of httpx's CPU per call (0.4 ms against 1.6 ms at 256 calls in flight, whose
pool scans its connections for each call), and CPU per call is what bounds a wide run on one
event loop. Each loop keeps one session per server, without a connection limit (crew's slots
bound the calls in flight, critical path first), so its calls reuse their connections: within
a run, and across the runs of a thread (``crew.sync`` keeps a loop per thread for
``Crew.run``). A session never outlives its loop (a pooled connection belongs to the loop that
opened it): a loop's sessions are closed when it shuts down its async generators, as
``asyncio.run()`` and ``crew.sync`` do before closing it, and beyond ``MAX_SESSIONS`` servers
the one used least recently, with no call in flight, is closed.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from crew import errors, prices
from crew.chat import ChatRequest, ChatResponse, ToolCall
from crew.usage import Usage

if TYPE_CHECKING:
    import aiohttp

PROVIDER = "openai"
KEY_VARIABLE = "OPENAI_API_KEY"
OPENAI_BASE = "https://api.openai.com/v1"

_HEADER_PARAMS = {"extra_headers", "headers"}
_DROPPED_PARAMS = {
    "timeout", "api_key", "api_base", "base_url", "api_version", "num_retries", "metadata",
    "organization", "extra_body", "stream", "stream_options", "model",
}  # fmt: skip
"""``LLM.params`` that say how to reach the model (litellm's keywords), not what to send it."""
_CONTEXT_WINDOW = re.compile(
    r"maximum context length|context_length_exceeded|context window|prompt is too long"
    r"|input is too long|too many tokens",
    re.IGNORECASE,
)


def handles(model: str) -> bool:
    """Whether ``model`` is one the direct path serves: ``openai/<name>``."""
    return model.startswith(f"{PROVIDER}/") and len(model) > len(PROVIDER) + 1


def prepare() -> None:
    """Import aiohttp now, so the first call is not charged for it (the price map is read after
    the first answer, when its cost is reckoned: the request goes out ~20 ms sooner)."""
    import aiohttp  # noqa: F401


async def complete(
    request: ChatRequest,
    options: Mapping[str, Any],
    *,
    model: str,
    api_base: str | None,
    api_key: str | None,
    timeout_s: float,
) -> ChatResponse:
    """One chat completion of ``model`` (``openai/<name>``).

    Args:
        request: the messages, and ``on_token`` to stream the answer.
        options: the request body's fields (messages, tools, temperature, response_format...)
            and litellm-style extras (``extra_headers``, ``extra_body``, ``organization``).
        api_base: the server; else ``OPENAI_BASE_URL``/``OPENAI_API_BASE``, else OpenAI's.
        api_key: the key; else ``OPENAI_API_KEY``. Without one, nothing is sent.

    Raises:
        errors.LLMError: the subclass for what went wrong, its message the provider's words.
    """
    key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE)
    if not key:
        raise errors.AuthenticationError("no API key was given", model=model)
    body, headers = _request(model, options)
    headers["Authorization"] = f"Bearer {key}"
    base_url = (
        api_base
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get("OPENAI_API_BASE")
        or OPENAI_BASE
    )
    import aiohttp

    url = base_url.rstrip("/") + "/chat/completions"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            sessions, session = await _session(base_url)
            try:
                if request.on_token is None:
                    data = await _post(session, url, body, headers, model)
                else:
                    data = await _stream(session, url, body, headers, model, request.on_token)
            finally:
                sessions.in_flight[base_url] -= 1
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise errors.LLMTimeoutError(str(exc) or "no answer in time", model=model) from exc
    except aiohttp.ClientConnectionError as exc:  # refused, dropped, reset: the connection failed
        message = str(exc) or type(exc).__name__
        raise errors.LLMConnectionError(message, model=model) from exc
    except aiohttp.ClientError as exc:  # the answer came, unreadable (a broken encoding, say)
        message = str(exc) or type(exc).__name__
        raise errors.ProviderError(message, model=model) from exc
    latency_ms = (time.perf_counter() - started) * 1000
    return _response(data, model, latency_ms)


def _request(model: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and headers of a call, from ``LLM`` options in litellm's terms."""
    body = {k: v for k, v in options.items() if k not in _DROPPED_PARAMS | _HEADER_PARAMS}
    body["model"] = model.removeprefix(f"{PROVIDER}/")
    body.update(options.get("extra_body") or {})
    headers: dict[str, str] = {}
    for name in _HEADER_PARAMS:
        headers.update(options.get(name) or {})
    if options.get("organization"):
        headers["OpenAI-Organization"] = str(options["organization"])
    if ("max_tokens" in body or "temperature" in body) and prices.supports(
        model, "supports_reasoning"
    ):
        # OpenAI's reasoning models take max_completion_tokens and only the default temperature;
        # litellm rewrites the call the same way (its drop_params is on).
        if "max_tokens" in body:
            body.setdefault("max_completion_tokens", body.pop("max_tokens"))
        if body.get("temperature") not in (None, 1):
            del body["temperature"]
    return body, headers


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    model: str,
) -> dict[str, Any]:
    async with session.post(url, json=body, headers=headers) as response:
        raw = await response.read()
    if response.status != 200:
        raise _status_error(response.status, raw, response.headers, model)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        text = raw.decode("utf-8", "replace")
        raise errors.ProviderError(
            f"the answer is not valid JSON ({exc}): {text[:200]}", model=model
        ) from exc
    if not isinstance(data, dict):
        raise errors.ProviderError(f"the answer is not a JSON object: {data!r:.200}", model=model)
    return data


async def _stream(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    model: str,
    on_token: Callable[[str], None],
) -> dict[str, Any]:
    """Stream the answer (server-sent events), passing text on as it comes; return it whole,
    shaped as a non-streamed answer, usage included (``stream_options.include_usage``)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    answer = _Answer()
    async with session.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            raw = await response.read()
            raise _status_error(response.status, raw, response.headers, model)
        async for chunk in _events(response, model):
            if text := answer.add(chunk):
                on_token(text)
    return answer.whole()


async def _events(response: aiohttp.ClientResponse, model: str) -> AsyncIterator[dict[str, Any]]:
    async for line in _lines(response):
        if not line.startswith("data:"):
            continue  # comments, event names, blank lines between events
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise errors.ProviderError(
                f"a streamed piece is not valid JSON ({exc}): {data[:200]}", model=model
            ) from exc
        if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
            raise errors.ProviderError(str(chunk["error"].get("message")), model=model)
        if isinstance(chunk, dict):
            yield chunk


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines as they come, however long (aiohttp's own line reader has a limit)."""
    rest = b""
    async for piece in response.content.iter_any():
        *lines, rest = (rest + piece).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if rest:
        yield rest.rstrip(b"\r").decode("utf-8", "replace")


class _Answer:
    """A streamed answer put back together: text, tool calls (by index) and usage."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.chose = False

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk in; return its text."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        if not isinstance(delta, dict):
            return ""
        self.chose = True
        for piece in delta.get("tool_calls") or ():
            call = self.calls.setdefault(int(piece.get("index", 0)), {"id": "", "name": ""})
            call["id"] = piece.get("id") or call["id"]
            function = piece.get("function") or {}
            call["name"] = function.get("name") or call["name"]
            call["arguments"] = call.get("arguments", "") + (function.get("arguments") or "")
        text = delta.get("content") or ""
        self.text.append(text)
        return text

    def whole(self) -> dict[str, Any]:
        calls = [
            {"id": c["id"], "function": {"name": c["name"], "arguments": c.get("arguments")}}
            for _, c in sorted(self.calls.items())
        ]
        text = "".join(self.text)
        message = {"content": text if text or not calls else None, "tool_calls": calls}
        choices = [{"message": message}] if self.chose else []
        return {"choices": choices, "usage": self.usage}


def _response(data: dict[str, Any], model: str, latency_ms: float) -> ChatResponse:
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        what = "no choices" if first is None else f"no message (choices: {choices!r:.100})"
        raise errors.EmptyAnswerError(f"the answer has {what}", model=model)
    tool_calls = tuple(
        ToolCall.from_raw(
            str(call.get("id") or ""),
            str((call.get("function") or {}).get("name") or ""),
            (call.get("function") or {}).get("arguments"),
        )
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict)
    )
    if message.get("content") is None and not tool_calls:
        raise errors.EmptyAnswerError(
            "the answer has no content (null) and no tool calls", model=model
        )
    return ChatResponse(
        content=message.get("content"),
        tool_calls=tool_calls,
        usage=_usage(data.get("usage"), model),
        model=model,
        latency_ms=latency_ms,
    )


def _usage(raw: Any, model: str) -> Usage:
    raw = raw if isinstance(raw, dict) else {}
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    details = raw.get("prompt_tokens_details")
    cached = int((details.get("cached_tokens") or 0) if isinstance(details, dict) else 0)
    cost = prices.cost_usd(
        model, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )
    return Usage(calls=1, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost)


def _status_error(
    status: int, raw: bytes, headers: Mapping[str, str], model: str
) -> errors.LLMError:
    """A non-200 answer as crew's error: the class by status, the provider's words as message."""
    detail = _provider_message(status, raw.decode("utf-8", "replace"))
    kind: type[errors.LLMError]
    if status in (401, 403):
        kind = errors.AuthenticationError
    elif status == 404:
        kind = errors.ModelNotFoundError
    elif status == 408:
        kind = errors.LLMTimeoutError
    elif status == 429:
        kind = errors.RateLimitError
    elif status >= 500:
        kind = errors.ProviderError
    elif _CONTEXT_WINDOW.search(detail):
        kind = errors.ContextWindowError
    else:
        kind = errors.BadRequestError
    retry_after = retry_after_s(headers)
    return kind(detail, model=model, status_code=status, retry_after_s=retry_after)


def _provider_message(status: int, text: str) -> str:
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text.strip() or f"HTTP {status}"
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error) if error else text.strip()


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The wait a provider asked for: ``retry-after-ms``, or ``retry-after`` in seconds or as an
    HTTP date; None when it asked for none."""
    if not headers:
        return None
    if milliseconds := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


MAX_SESSIONS = 16
"""Servers a loop keeps a session (and its pooled connections) for at most."""


class _Sessions:
    """One loop's sessions by base URL, least recently used first, with their calls in flight."""

    def __init__(self) -> None:
        self.by_url: dict[str, aiohttp.ClientSession] = {}
        self.in_flight: dict[str, int] = {}
        self.closer: AsyncIterator[None] | None = None


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sessions] = (
    weakref.WeakKeyDictionary()
)
"""Each loop's sessions."""
_pools_lock = threading.Lock()


async def _session(base_url: str) -> tuple[_Sessions, aiohttp.ClientSession]:
    """This loop's sessions, and its session for ``base_url`` (made on first use), counted in
    flight: the caller counts it out when its call ends."""
    import aiohttp

    loop = asyncio.get_running_loop()
    with _pools_lock:  # loops of other threads (crew.run() from async code) share the map
        sessions = _pools.get(loop)
        if sessions is None:
            sessions = _pools[loop] = _Sessions()
    if sessions.closer is None:  # the loop's first call (or its first after shutting down)
        sessions.closer = _closing(sessions)  # held here: the loop keeps a weak reference
        await sessions.closer.__anext__()  # now the loop knows it, and closes it at shutdown
    session = sessions.by_url.pop(base_url, None)
    made = session is None
    if session is None:
        # No connection limit: crew's slots bound the calls in flight (aiohttp's default of 100
        # would queue the rest in arrival order, not critical path first). No time limit
        # either: each call has its own (asyncio.timeout, above).
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            proxy=_proxy(base_url),
        )
    sessions.by_url[base_url] = session  # last: the most recently used
    sessions.in_flight[base_url] = sessions.in_flight.get(base_url, 0) + 1
    if made:  # counted in flight already: the others' eviction leaves it alone
        try:
            await _evict(sessions, keep=MAX_SESSIONS)
        except BaseException:
            sessions.in_flight[base_url] -= 1
            raise
    return sessions, session


async def _evict(sessions: _Sessions, keep: int) -> None:
    """Close the sessions used least recently, with no call in flight, beyond ``keep``."""
    idle = [url for url in sessions.by_url if not sessions.in_flight.get(url)]
    for url in idle[: max(0, len(sessions.by_url) - keep)]:
        sessions.in_flight.pop(url, None)
        await sessions.by_url.pop(url).close()


def _proxy(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (``HTTPS_PROXY``, ``NO_PROXY``...), as
    other HTTP clients and litellm honour it; read once per session (aiohttp's ``trust_env``
    would read the environment, and ``~/.netrc``, on every call)."""
    from urllib.request import getproxies, proxy_bypass  # loaded by aiohttp already

    parts = urllib.parse.urlsplit(base_url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


async def _closing(sessions: _Sessions) -> AsyncIterator[None]:
    """Waits, as an async generator, for its loop's shutdown, then closes the loop's sessions."""
    try:
        yield
    finally:
        sessions.closer = None
        closing, sessions.by_url = list(sessions.by_url.values()), {}
        sessions.in_flight.clear()
        for session in closing:
            await session.close()
