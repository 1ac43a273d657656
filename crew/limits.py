"""How fast and whether calls to one model may start: the rate limiter (calls and tokens per
minute, and the provider's Retry-After) and the circuit breaker, one of each per (model,
api_base), shared by every task, crew and run of the process.

Both are plain data under a thread lock, never held across an ``await``: ``crew.run()`` starts a
new event loop each time, and several loops (or threads) may call the same model at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from crew import errors
from crew.chat import ChatRequest, ChatResponse

DEFAULT_ANSWER_TOKENS = 1024
"""Tokens set aside for the answer of a call whose model sets no ``max_tokens``."""
DEFAULT_BREAKER_FAILURES = 12
"""Consecutive failures that open a model's circuit breaker. As many as a call's default
attempts: at 25% transient faults, 12 failures in a row happen with probability 0.25**12 = 6e-8
per call, so a flaky provider does not open it, while a provider that is down opens it within a
second or two when tasks run in parallel."""
DEFAULT_BREAKER_COOLDOWN_S = 30.0
"""Seconds an open breaker fails calls fast before it lets one probe call through."""
DEFAULT_BREAKER_WINDOW_S = 10.0
"""How long the failures in a row must last, at least, before they open the breaker. Hundreds of
calls in flight can fail together in a blip (a burst of dropped connections, a load balancer
restarting); retries outlast such a blip. A provider that fails everything for this long is
down, and then failing fast is kinder than a storm of retries."""


class Reservation:
    """One call's place in its model's window: when it starts, the tokens counted for it, and
    the limits it asked under."""

    __slots__ = ("at", "max_rpm", "max_tpm", "tokens")

    def __init__(self, at: float, tokens: int, max_rpm: int | None, max_tpm: int | None) -> None:
        self.at = at
        self.tokens = tokens
        self.max_rpm = max_rpm
        self.max_tpm = max_tpm


@dataclass(frozen=True)
class Admission:
    """A call let through by the limiter: its reservation, and how long it waited and why."""

    reservation: Reservation
    waited_s: float = 0.0
    limit: str = ""
    """What made it wait longest: "rpm", "tpm" or "retry_after" ("" when it did not wait)."""


class RateLimiter:
    """At most ``max_rpm`` calls and ``max_tpm`` tokens start in any ``window_s`` (a sliding
    window), and no call starts while the provider's Retry-After lasts.

    Each call reserves its start time when it asks, after every call that asked before, then
    sleeps until then: waiting calls never race for a freed slot and none is overtaken, so one
    larger than the whole ``max_tpm`` gets a window to itself (it starts once the window holds no
    other tokens, and the calls after it wait for it to leave) rather than waiting forever. A
    call's tokens are an estimate until its answer comes; when the real count is lower, the
    waiting calls' starts are planned again, earlier (they wake every ``window_s / 20`` to see).
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._reserved: deque[Reservation] = deque()  # by start time, future ones included
        self._paused_until = -math.inf
        self._lock = threading.Lock()

    async def acquire(
        self, max_rpm: int | None = None, *, max_tpm: int | None = None, tokens: int = 0
    ) -> Admission:
        """Wait until a call of ``tokens`` may start within the limits, and count it."""
        waited: dict[str, float] = {}
        while True:
            reservation, limit = self._reserve(Reservation(0.0, tokens, max_rpm, max_tpm))
            # A loop's timer may fire a hair early (asyncio's clock resolution): sleep it out.
            while (wait_s := reservation.at - self._clock()) > 0:
                if max_tpm is not None:  # a start that may move earlier is looked at again
                    wait_s = min(wait_s, self.window_s / 20)
                try:
                    await self._sleep(wait_s)
                except BaseException:  # cancelled while waiting: give the place back
                    self._release(reservation)
                    raise
                waited[limit] = waited.get(limit, 0.0) + wait_s
            if self._still_valid(reservation):
                break
        longest = max(waited, key=waited.__getitem__, default="")
        return Admission(reservation, sum(waited.values()), longest)

    def settle(self, admission: Admission, tokens: int) -> None:
        """Count the call's real tokens in place of its estimate (once its answer came)."""
        with self._lock:
            reservation = admission.reservation
            fewer = tokens < reservation.tokens
            reservation.tokens = max(0, tokens)
            if fewer:
                self._replan()

    def pause(self, seconds: float) -> None:
        """Start no call for ``seconds`` (the provider's Retry-After), whoever asks."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _reserve(self, reservation: Reservation) -> tuple[Reservation, str]:
        """Place ``reservation`` at its earliest start, after every call already placed."""
        with self._lock:
            now = self._clock()
            reserved = self._reserved
            while reserved and reserved[0].at <= now - self.window_s:
                reserved.popleft()
            reservation.at, limit = self._earliest(reserved, reservation, now)
            reserved.append(reservation)
            return reservation, limit

    def _replan(self) -> None:
        """Move the waiting calls' starts earlier where fewer tokens now fill their windows."""
        now = self._clock()
        placed = list(self._reserved)
        for position, reservation in enumerate(placed):
            if reservation.at > now and reservation.max_tpm is not None:
                start, _ = self._earliest(placed[:position], reservation, now)
                reservation.at = min(reservation.at, start)

    def _earliest(
        self, before: Sequence[Reservation], reservation: Reservation, now: float
    ) -> tuple[float, str]:
        """The earliest start of ``reservation`` within its limits, not before ``now``, a pause,
        or the calls ``before`` it; and what set it."""
        start = max(now, self._paused_until, before[-1].at if before else now)
        limit = "retry_after" if self._paused_until > now else ""
        if reservation.max_rpm is None and reservation.max_tpm is None:
            return start, limit  # no limit of its own: the window (a minute of calls) is not read
        while True:  # each limit only moves the start later, so this ends
            in_window = [r for r in before if r.at > start - self.window_s]
            latest, why = max(
                (_rpm_start(in_window, start, reservation, self.window_s), "rpm"),
                (_tpm_start(in_window, start, reservation, self.window_s), "tpm"),
            )
            if latest <= start:
                return start, limit
            start, limit = latest, why

    def _still_valid(self, reservation: Reservation) -> bool:
        """Whether a call may start at its reserved time; else (a Retry-After came while it
        slept) it gives its place back to ask again."""
        with self._lock:
            if self._paused_until <= reservation.at:
                return True
        self._release(reservation)
        return False

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation in self._reserved:
                self._reserved.remove(reservation)


def _rpm_start(
    in_window: list[Reservation], start: float, reservation: Reservation, window_s: float
) -> float:
    limit = reservation.max_rpm
    if limit is None or len(in_window) < limit:
        return start
    # The oldest of the last max_rpm starts must leave the window first.
    return in_window[-limit].at + window_s


def _tpm_start(
    in_window: list[Reservation], start: float, reservation: Reservation, window_s: float
) -> float:
    limit, tokens = reservation.max_tpm, reservation.tokens
    if limit is None:
        return start
    used = sum(r.tokens for r in in_window)
    if used + tokens <= limit or used <= 0:  # a call over the whole limit runs alone
        return start
    for earlier in in_window:  # oldest first: wait until enough tokens have left
        used -= earlier.tokens
        if used + tokens <= limit or used <= 0:
            return earlier.at + window_s
    return start


class CircuitBreaker:
    """Fails calls to a model fast once its provider has failed ``failures`` calls in a row.

    Closed, calls go through. After ``failures`` consecutive retryable failures it opens: calls
    raise ``ProviderUnavailableError`` at once, sending nothing, for ``cooldown_s``. Then one
    call is let through as a probe (the others still fail fast): its success closes the breaker,
    its failure opens it for another ``cooldown_s``. Any success closes it, and an answer the
    provider rejected (a 400, a 401) counts as one: the provider is up.
    """

    def __init__(self, model: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self._clock = clock
        self._failures = 0
        self._failing_since = 0.0
        self._opened_at: float | None = None
        self._probing = False
        self._last_error = ""
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def enter(self, *, failures: int, cooldown_s: float) -> bool:
        """Before a call: whether it is the probe of an open breaker whose cool-down is over.
        Raises ``ProviderUnavailableError`` while the breaker is open (or another call probes)."""
        if failures <= 0:
            return False
        with self._lock:
            if self._opened_at is None:
                return False
            left_s = self._opened_at + cooldown_s - self._clock()
            if left_s > 0 or self._probing:
                raise errors.ProviderUnavailableError(
                    self._message(max(left_s, 0.0)), model=self.model
                )
            self._probing = True
            return True

    def succeeded(self, *, probe: bool) -> bool:
        """After a call the provider answered: whether this closed the breaker."""
        with self._lock:
            self._failures = 0
            if probe:
                self._probing = False
            closed = self._opened_at is not None
            self._opened_at = None
            return closed

    def failed(
        self, error: BaseException, *, probe: bool, failures: int, window_s: float = 0.0
    ) -> int | None:
        """After a call failed for a reason that may pass: the failures in a row if this opened
        the breaker (or, for a probe, opened it again), else None. The row opens the breaker
        once it holds ``failures`` failures over ``window_s`` seconds at least."""
        with self._lock:
            if self._failures == 0:
                self._failing_since = self._clock()
            self._failures += 1
            self._last_error = errors.shorten(str(error), 200)
            if probe:
                self._probing = False
                self._opened_at = self._clock()
                return self._failures
            lasted_s = self._clock() - self._failing_since
            if (
                failures > 0
                and self._opened_at is None
                and self._failures >= failures
                and lasted_s >= window_s
            ):
                self._opened_at = self._clock()
                return self._failures
            return None

    def abandoned(self, *, probe: bool) -> None:
        """A call ended with no answer either way (cancelled, or a bug): free the probe's place."""
        if probe:
            with self._lock:
                self._probing = False

    def _message(self, left_s: float) -> str:
        when = f"in {left_s:.0f} s" if left_s >= 1 else "as soon as the probe in flight answers"
        return (
            f"Model '{self.model}': its provider is unavailable: {self._failures} calls in a row"
            f" failed (last: {self._last_error}). crew sends it no calls for now (the circuit"
            f" breaker is open) and tries one again {when}. Check the provider, then resume the"
            " run (crew resume RUN), or give the model fallbacks; LLM(breaker_failures=0) turns"
            " the breaker off."
        )


class Limiter(Protocol):
    """What a call asks of its model's rate limiter: ``RateLimiter``, or one that several
    processes share (see ``share_limiters``)."""

    async def acquire(
        self, max_rpm: int | None = None, *, max_tpm: int | None = None, tokens: int = 0
    ) -> Admission: ...
    def settle(self, admission: Admission, tokens: int) -> None: ...
    def pause(self, seconds: float) -> None: ...


_limiters: dict[tuple[str, str | None], Limiter] = {}
_breakers: dict[tuple[str, str | None], CircuitBreaker] = {}
_registry_lock = threading.Lock()
_make_limiter: Callable[[str, str | None], Limiter] | None = None


def rate_limiter(model: str, api_base: str | None) -> Limiter:
    """The process-wide limiter of calls to ``model`` at ``api_base``."""
    with _registry_lock:
        if (model, api_base) not in _limiters:
            make = _make_limiter
            _limiters[model, api_base] = make(model, api_base) if make else RateLimiter()
        return _limiters[model, api_base]


def share_limiters(make: Callable[[str, str | None], Limiter] | None) -> None:
    """Make each model's limiter with ``make(model, api_base)`` from now on: one that several
    processes share, so that ``max_rpm`` holds across them (a Dask worker of ``crew batch``
    asks the scheduler). None: every process limits its own calls again."""
    global _make_limiter
    with _registry_lock:
        _make_limiter = make
        _limiters.clear()


def circuit_breaker(model: str, api_base: str | None) -> CircuitBreaker:
    """The process-wide circuit breaker of ``model`` at ``api_base``."""
    with _registry_lock:
        if (model, api_base) not in _breakers:
            _breakers[model, api_base] = CircuitBreaker(model)
        return _breakers[model, api_base]


def reset() -> None:
    """Forget every limiter and breaker, as in a new process (tests start each from scratch)."""
    with _registry_lock:
        _limiters.clear()
        _breakers.clear()


def estimate_tokens(
    messages: Iterable[Mapping[str, Any]], tools: object, answer_tokens: int | None
) -> int:
    """A call's tokens, guessed before it is sent: about 4 characters a token for the messages
    and tools (a little over what tokenizers count for English, so the limit holds), a few per
    message, and ``answer_tokens`` (else ``DEFAULT_ANSWER_TOKENS``) for the answer."""
    chars = len(json.dumps(tools, default=str)) if tools else 0
    count = 0
    for message in messages:
        count += 1
        content = message.get("content")
        if isinstance(content, list):
            parts = (part for part in content if isinstance(part, dict))
            chars += sum(len(str(part.get("text", ""))) for part in parts)
        elif content is not None:
            chars += len(str(content))
        for call in message.get("tool_calls") or ():
            chars += len(json.dumps(call, default=str))
    allowance = DEFAULT_ANSWER_TOKENS if answer_tokens is None else answer_tokens
    return math.ceil(chars / 4) + 4 * count + allowance


class Limited(Protocol):
    """What the limits read of a model's settings (``crew.llm.LLM`` documents each)."""

    @property
    def model(self) -> str: ...
    @property
    def api_base(self) -> str | None: ...
    @property
    def max_rpm(self) -> int | None: ...
    @property
    def max_tpm(self) -> int | None: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def breaker_failures(self) -> int: ...
    @property
    def breaker_cooldown_s(self) -> float: ...
    @property
    def breaker_window_s(self) -> float: ...


async def guarded(
    send: Callable[[ChatRequest], Awaitable[ChatResponse]],
    request: ChatRequest,
    llm: Limited,
    *,
    max_retry_after_s: float,
) -> ChatResponse:
    """``send(request)`` once the model's circuit breaker and rate limiter let it start, with
    what came of it told to both: the tokens it used, a Retry-After (held to
    ``max_retry_after_s``), a failure or success. Raises ``ProviderUnavailableError`` at once
    while the breaker is open."""
    breaker = circuit_breaker(llm.model, llm.api_base)
    probe = breaker.enter(failures=llm.breaker_failures, cooldown_s=llm.breaker_cooldown_s)
    limiter = rate_limiter(llm.model, llm.api_base)
    answered = False
    try:
        admission = await _admit(limiter, request, llm)
        try:
            response = await send(request)
        except errors.LLMError as exc:
            answered = True
            if exc.status_code is not None:  # refused before any generation: no tokens
                limiter.settle(admission, 0)
            if isinstance(exc, errors.RateLimitError) and exc.retry_after_s:
                limiter.pause(min(exc.retry_after_s, max_retry_after_s))
            _failed(breaker, probe, exc, request, llm)
            raise
        answered = True
        if used := response.usage.prompt_tokens + response.usage.completion_tokens:
            limiter.settle(admission, used)
        why = "the probe call succeeded" if probe else "a call succeeded"
        _closed(breaker.succeeded(probe=probe), request, llm, why)
        return response
    finally:
        if not answered:
            breaker.abandoned(probe=probe)


async def _admit(limiter: Limiter, request: ChatRequest, llm: Limited) -> Admission:
    tokens = 0
    if llm.max_tpm is not None:
        tokens = estimate_tokens(request.messages, request.tools, llm.max_tokens)
    admission = await limiter.acquire(llm.max_rpm, max_tpm=llm.max_tpm, tokens=tokens)
    if admission.waited_s > 0 and request.on_wait is not None:
        request.on_wait(llm.model, admission.limit, admission.waited_s)
    return admission


def _failed(
    breaker: CircuitBreaker,
    probe: bool,
    error: errors.LLMError,
    request: ChatRequest,
    llm: Limited,
) -> None:
    """Tell the breaker of a failed call: one that may pass counts towards opening it; one the
    provider rejected (a 400, a 401) shows it is up."""
    if not error.retryable:
        _closed(breaker.succeeded(probe=probe), request, llm, "the provider answered")
        return
    failures = breaker.failed(
        error, probe=probe, failures=llm.breaker_failures, window_s=llm.breaker_window_s
    )
    if failures is None or request.on_circuit is None:
        return
    last = errors.shorten(str(error), 200)
    what = (
        f"the probe call failed ({last})"
        if probe
        else f"{failures} calls in a row failed over {llm.breaker_window_s:g} s or more"
    )
    if not probe:
        what += f" (last: {last})"
    request.on_circuit(
        llm.model,
        True,
        f"{what}; its calls fail fast for {llm.breaker_cooldown_s:g} s, then one probe call"
        " goes through",
    )


def _closed(closed: bool, request: ChatRequest, llm: Limited, why: str) -> None:
    if closed and request.on_circuit is not None:
        request.on_circuit(llm.model, False, why)
