"""When and how long to wait before trying again. The only module that uses tenacity.

Whether an error is worth another attempt is decided by one attribute, ``retryable``, set on the
exception classes in ``crew.errors``; the wait honours the provider's Retry-After when it sent one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from crew.errors import ConfigError

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState

T = TypeVar("T")

# The defaults are sized for a long run on a flaky provider. At a 25% rate of transient faults
# (429, 5xx, dropped connections), each independent, a call fails for good with probability
# 0.25**attempts: 6e-8 with 12 attempts, so a crew of 8,000 tasks of ~3 calls each loses no task
# with probability 1 - 8000*3*6e-8 > 99.8% (10 attempts would give 97%). A provider that is down
# still fails fast: the 11 waits between 12 attempts add up to ~2.2 min (0.5 s doubling to the
# 20 s cap), and MAX_WAIT_S stops a long Retry-After from stretching that.
DEFAULT_CALL_ATTEMPTS = 12
"""Tries in all of one model call, when neither the LLM nor the crew says otherwise."""
DEFAULT_TASK_RETRIES = 2
"""Further attempts at a task whose attempt failed for a reason of its own (a timeout, invalid
output, no final answer), when neither the task nor the crew says otherwise."""
MAX_WAIT_S = 150.0
"""At most this many seconds of waiting, in all, between the attempts of one call."""
OnRetry = Callable[[int, BaseException, float], None]
"""Called before each wait with (failed attempt number, its error, seconds to wait)."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The n-th wait is ``min(max_s, initial_s * 2**(n-1)) + uniform(0, jitter_s)``, or the
    provider's Retry-After (capped at ``max_retry_after_s``) when it asked for a longer one.
    """

    attempts: int = DEFAULT_CALL_ATTEMPTS
    """Tries in all, the first included; 1 means no retry."""
    initial_s: float = 0.5
    max_s: float = 20.0
    jitter_s: float = 0.25
    max_retry_after_s: float = 60.0
    max_wait_s: float = MAX_WAIT_S
    """Seconds of waiting, in all, after which no attempt is made (the last wait is shortened
    to fit), so a provider that is down fails in bounded time whatever its Retry-After says."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}.")
        waits = (self.initial_s, self.max_s, self.jitter_s, self.max_retry_after_s, self.max_wait_s)
        if min(waits) < 0:
            raise ConfigError("RetryPolicy waits must not be negative.")

    def wait_s(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        backoff = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        backoff += random.uniform(0, self.jitter_s) if self.jitter_s else 0.0
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None and retry_after > 0:
            return max(min(retry_after, self.max_retry_after_s), backoff)
        return backoff


def check_defaults(call_attempts: object, task_retries: object) -> None:
    """Raise one ``ConfigError`` naming each crew-wide retry setting that is out of range."""
    problems = []
    if isinstance(call_attempts, bool) or not isinstance(call_attempts, int) or call_attempts < 1:
        problems.append(
            f"call_attempts must be a whole number >= 1 (tries per model call, the first"
            f" included), got {call_attempts!r}."
        )
    if isinstance(task_retries, bool) or not isinstance(task_retries, int) or task_retries < 0:
        problems.append(
            f"task_retries must be a whole number >= 0 (further attempts at a failed task),"
            f" got {task_retries!r}."
        )
    if problems:
        raise ConfigError(problems)


def is_retryable(error: BaseException) -> bool:
    return bool(getattr(error, "retryable", False))


def worth_another_attempt(error: BaseException) -> bool:
    """For a task: retryable, and not a model error whose retries the model layer has spent."""
    return is_retryable(error) and not getattr(error, "retries_spent", False)


async def retrying(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    retry_if: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Await ``fn()`` under tenacity, trying again while ``retry_if`` holds for the error (by
    default its ``retryable`` attribute) and ``policy`` allows; re-raise the last error.

    The first attempt is awaited directly: most calls succeed at once, and tenacity's
    bookkeeping would cost them more CPU than the call itself takes on a fast server. A failure
    worth retrying is handed to tenacity as its first attempt's outcome, and from there tenacity
    decides every wait and attempt as if it had made the first one."""
    try:
        return await fn()
    except Exception as exc:
        if policy.attempts <= 1 or not retry_if(exc):
            raise
        first: Exception | None = exc

    async def attempt() -> T:  # tenacity awaits only what it sees as a coroutine function
        nonlocal first
        if first is not None:
            error, first = first, None
            raise error
        return await fn()

    return await _retryer(policy, on_retry, retry_if)(attempt)


def _retryer(
    policy: RetryPolicy, on_retry: OnRetry | None, retry_if: Callable[[BaseException], bool]
) -> AsyncRetrying:
    from tenacity import AsyncRetrying, retry_if_exception

    def stop(state: RetryCallState) -> bool:
        waited_all = 0 < policy.max_wait_s <= state.idle_for
        return state.attempt_number >= policy.attempts or waited_all

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        wanted = policy.wait_s(state.attempt_number, error)
        return max(0.0, min(wanted, policy.max_wait_s - state.idle_for))

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            assert error is not None
            on_retry(state.attempt_number, error, state.next_action.sleep)

    return AsyncRetrying(
        stop=stop,
        retry=retry_if_exception(retry_if),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )


def retrying_for(
    fn: Callable[[], T],
    budget_s: float,
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    retry_if: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Call ``fn()`` under tenacity, trying again while ``retry_if`` holds for the error, for up
    to ``budget_s`` seconds after the first try began; re-raise the last error.

    A time budget rather than a number of tries (``policy.attempts`` is not used): a database
    that is down for a while comes back after so long, however many tries that takes. The waits
    follow ``policy``; the last is cut short so that a last try starts when the budget is spent,
    so an outage shorter than ``budget_s`` is outlasted. It blocks: for synchronous callers.

    As in ``retrying``, the first try is made directly and tenacity takes over from its first
    failure (with the budget left after it).
    """
    from tenacity import Retrying, retry_if_exception, stop_after_delay

    began = time.monotonic()
    try:
        return fn()
    except Exception as exc:
        if not retry_if(exc):
            raise
        first: Exception | None = exc
    budget_s = max(0.0, budget_s - (time.monotonic() - began))

    def attempt() -> T:
        nonlocal first
        if first is not None:
            error, first = first, None
            raise error
        return fn()

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        left = max(0.0, budget_s - (state.seconds_since_start or 0.0))
        return min(policy.wait_s(state.attempt_number, error), left)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            assert error is not None
            on_retry(state.attempt_number, error, state.next_action.sleep)

    retryer = Retrying(
        stop=stop_after_delay(budget_s),
        retry=retry_if_exception(retry_if),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retryer(attempt)
