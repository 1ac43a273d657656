"""When and how long to wait before trying again. The only module that uses tenacity.

Whether an error is worth another attempt is decided by one attribute, ``retryable``, set on the
exception classes in ``crew.errors``; the wait honours the provider's Retry-After when it sent one.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from crew.errors import ConfigError

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")
OnRetry = Callable[[int, BaseException, float], None]
"""Called before each wait with (failed attempt number, its error, seconds to wait)."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The n-th wait is ``min(max_s, initial_s * 2**(n-1)) + uniform(0, jitter_s)``, or the
    provider's Retry-After (capped at ``max_retry_after_s``) when it asked for a longer one.
    """

    attempts: int = 3
    """Tries in all, the first included; 1 means no retry."""
    initial_s: float = 0.5
    max_s: float = 20.0
    jitter_s: float = 0.25
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}.")
        if min(self.initial_s, self.max_s, self.jitter_s, self.max_retry_after_s) < 0:
            raise ConfigError("RetryPolicy waits must not be negative.")

    def wait_s(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        backoff = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        backoff += random.uniform(0, self.jitter_s) if self.jitter_s else 0.0
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None and retry_after > 0:
            return max(min(retry_after, self.max_retry_after_s), backoff)
        return backoff


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
    default its ``retryable`` attribute) and ``policy`` allows; re-raise the last error."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.wait_s(state.attempt_number, error)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            assert error is not None
            on_retry(state.attempt_number, error, state.next_action.sleep)

    async def attempt() -> T:  # tenacity awaits only what it sees as a coroutine function
        return await fn()

    retryer = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        retry=retry_if_exception(retry_if),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retryer(attempt)


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
    """
    from tenacity import Retrying, retry_if_exception, stop_after_delay

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
    return retryer(fn)
