"""Every exception crew raises.

The tree::

    CrewError
    ├── ConfigError              setup problems, raised before any model call
    │   ├── PlanError            the task graph is invalid (cycles, unknown ids, missing inputs)
    │   └── BatchInputError      lines of a batch's inputs file do not fit the crew's inputs
    ├── LLMError                 a model call failed (``retryable``: may another try help?)
    │   ├── RateLimitError       429                                            retryable
    │   ├── LLMTimeoutError      the provider did not answer in time            retryable
    │   ├── LLMConnectionError   the provider could not be reached              retryable
    │   ├── ProviderError        5xx                                            retryable
    │   ├── EmptyAnswerError     200 with no choice, message or content         retryable
    │   ├── AuthenticationError  401/403                                        not retryable
    │   ├── BadRequestError      400 and other 4xx                              not retryable
    │   ├── ModelNotFoundError   404                                            not retryable
    │   ├── ContextWindowError   the prompt is longer than the model accepts    not retryable
    │   ├── ProviderUnavailableError its circuit breaker is open: fails fast     not retryable
    │   └── ReplayMissError      strict replay: the request was not recorded    not retryable
    ├── TaskError                a task attempt failed for a reason of its own
    │   ├── TaskTimeoutError     the task ran past its ``timeout_s``            retryable
    │   ├── OutputValidationError the output did not match ``output_model``     retryable
    │   ├── MaxIterationsError   the tool loop did not converge                 retryable
    │   └── ToolOutcomeUnknownError a cut-off call of a non-idempotent tool   not retryable
    ├── StoreError               the run store could not be opened, read or written
    │   ├── LeaseHeldError       another live process holds the run's lease
    │   └── StoreUnavailableError its database was unreachable or locked (the store retries it)
    ├── HookError                a review hook failed (the run goes on; it emits ReviewHookFailed)
    ├── BudgetExceededError      a call's reservation would pass the run's budget   not retried
    └── RunFailedError           ``CrewResult.raise_for_status()`` on a run that did not succeed

Foreign exceptions are translated at one boundary each: litellm's in ``crew/llm.py``, the database
drivers' in the store backends (``crew/store/sqlite.py``, ``crew/store/postgres.py``). What a
provider says goes through :func:`redact` there, so no message crew stores or prints holds a key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any


def closest(
    name: str, options: Iterable[object], *, cutoff: float = 0.6, by_prefix: bool = False
) -> str | None:
    """The option most like ``name``, or None: the one close-match rule of every message.

    ``by_prefix``: among the close matches (down to ``cutoff``), the one sharing the longest
    prefix with ``name`` ('reporter' -> 'reporting_analyst' rather than 'researcher').
    """
    names = [str(option) for option in options]
    close = difflib.get_close_matches(name, names, n=len(names) if by_prefix else 1, cutoff=cutoff)
    if not close:
        return None
    if by_prefix:
        return max(close, key=lambda c: len(os.path.commonprefix([name, c])))  # noqa: RUF071
    return close[0]


def did_you_mean(
    name: str,
    options: Iterable[object],
    *,
    sentence: bool = False,
    cutoff: float = 0.6,
    by_prefix: bool = False,
) -> str:
    """The hint for a message about an unknown ``name``, or "" when nothing is close:
    `` (did you mean 'x'?)`` after a file location's phrase, `` Did you mean 'x'?`` after a
    sentence (``sentence=True``)."""
    found = closest(name, options, cutoff=cutoff, by_prefix=by_prefix)
    if found is None:
        return ""
    return f" Did you mean '{found}'?" if sentence else f" (did you mean '{found}'?)"


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters: a foreign value quoted in a message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


SECRET_NAMES = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
"""Environment variables whose names match hold secrets: their values are never shown."""
_TOKENS = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}|(?<=Bearer )[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
_SHORTEST_SECRET = 8  # shorter values ("1", "true") would blank out ordinary words
REDACTED = "[redacted]"


def redact(
    text: str, secrets: Iterable[str | None] = (), *, environ: Mapping[str, str] | None = None
) -> str:
    """``text`` without secrets: the values of environment variables named like secrets (see
    ``SECRET_NAMES``), ``secrets``, and anything shaped like a key (``sk-...``) or a bearer
    token. Providers echo keys in their errors; what crew keeps or prints must not."""
    environ = os.environ if environ is None else environ
    values = {v for name, v in environ.items() if SECRET_NAMES.search(name)} | set(secrets)
    for value in sorted((v for v in values if v and len(v) >= _SHORTEST_SECRET), key=len)[::-1]:
        text = text.replace(value, REDACTED)
    return _TOKENS.sub(REDACTED, text)


MAX_LISTED = 20
"""The problems a ConfigError's message lists; it counts the rest ("... and 2,980 more")."""
_MAX_PROBLEM_CHARS = 600
_MAX_LISTED_CHARS = 6_000  # with the count and the bullets, a message stays under 8 KB


def _summary(problems: list[str], where: str = "the crew") -> str:
    """The message of a ConfigError: its problems, each cut to a readable length, the first
    ``MAX_LISTED`` of them (fewer if they are long). A hostile or generated crew file can have
    thousands; all are kept in ``problems``, but a terminal or CI log gets a page, not
    megabytes."""
    shown: list[str] = []
    for problem in map(_cut, problems[:MAX_LISTED]):
        if shown and sum(map(len, shown)) + len(problem) > _MAX_LISTED_CHARS:
            break
        shown.append(problem)
    if len(problems) == 1:
        return shown[0]
    listed = "\n".join(f"  - {p}" for p in shown)
    more = len(problems) - len(shown)
    rest = f"\n  ... and {more:,} more (fix these, then check again)" if more else ""
    return f"{len(problems):,} problems in {where}:\n{listed}{rest}"


def _cut(problem: str) -> str:
    """``problem`` whole, or its start (where) and end (the fix) around an elision."""
    if len(problem) <= _MAX_PROBLEM_CHARS:
        return problem
    head, tail = problem[: _MAX_PROBLEM_CHARS - 200], problem[-150:]
    return f"{head} [... {len(problem) - len(head) - len(tail):,} characters ...] {tail}"


class CrewError(Exception):
    """Base of every exception crew raises."""

    retryable: bool = False


class ConfigError(CrewError):
    """The crew, its inputs or its settings are wrong; nothing has been sent to a model.

    Attributes:
        problems: every problem found, one message each (the message lists the first
            ``MAX_LISTED``).
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(_summary(self.problems))


class PlanError(ConfigError):
    """The task graph is invalid: cycles, unknown or duplicate ids, missing agents or inputs."""


class BatchInputError(ConfigError):
    """A batch's inputs file cannot be read, or some of its lines do not fit the crew's inputs:
    every bad line is listed, as ``FILE:LINE field: problem``; no run has started.

    Attributes:
        path: the inputs file.
    """

    def __init__(self, problems: str | Iterable[str], *, path: str) -> None:
        super().__init__(problems)
        self.path = path
        self.args = (_summary(self.problems, path),)


class LLMError(CrewError):
    """A model call failed.

    Attributes:
        model: the litellm model string that failed.
        status_code: the HTTP status, when there was one.
        retry_after_s: the provider's Retry-After, when it sent one.
        retries_spent: the model layer already retried the call as its policy allows, so a
            task does not try it again (retries are never stacked).
    """

    retries_spent: bool = False

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class RateLimitError(LLMError):
    retryable = True


class LLMTimeoutError(LLMError):
    retryable = True


class LLMConnectionError(LLMError):
    retryable = True


class ProviderError(LLMError):
    retryable = True


class EmptyAnswerError(LLMError):
    """The provider answered 200 with nothing in it: no choice (``choices: []``), no message, or
    a message with ``content: null`` and no tool calls. Another call usually gets an answer."""

    retryable = True


class AuthenticationError(LLMError):
    pass


class BadRequestError(LLMError):
    pass


class ModelNotFoundError(LLMError):
    pass


class ContextWindowError(LLMError):
    pass


class ProviderUnavailableError(LLMError):
    """The model's circuit breaker is open: its provider failed so many calls in a row that crew
    sends it none for a while (``crew.limits.CircuitBreaker``). Nothing was sent. Neither the
    call nor the task is retried, so a provider that is down stops a run in seconds rather than
    minutes of retries; the model's fallbacks are tried, and the run can be resumed later."""


class ReplayMissError(LLMError):
    """Strict replay (``replay_strict=True``, ``--replay-strict``) met a request that the replayed
    run did not record, so it sends nothing to the provider."""


class TaskError(CrewError):
    """A task attempt failed for a reason of its own (not the model call)."""

    def __init__(self, message: str, *, task_id: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskTimeoutError(TaskError):
    retryable = True


class OutputValidationError(TaskError):
    """The model's answer did not validate against the task's ``output_model``."""

    retryable = True

    def __init__(self, message: str, *, task_id: str = "", text: str = "", details: Any = None):
        super().__init__(message, task_id=task_id)
        self.text = text
        self.details = details


class MaxIterationsError(TaskError):
    retryable = True


class ToolOutcomeUnknownError(TaskError):
    """A tool that is not idempotent was called, and the run stopped before its result was
    recorded; the tool has no ``reconcile`` to find out whether it took effect. Not retried: a
    person checks, then records the outcome (``crew.tool_calls.resolve_tool_call``).

    Attributes:
        key: the call's idempotency key.
        tool: the tool's name.
    """

    def __init__(self, message: str, *, task_id: str = "", key: str = "", tool: str = "") -> None:
        super().__init__(message, task_id=task_id)
        self.key = key
        self.tool = tool


class StoreError(CrewError):
    """The run store could not be opened, read or written; the message names it and the fix."""


class LeaseHeldError(StoreError):
    """Another live process holds the lease of a run, so this one may not run it.

    Attributes:
        run_id: the run whose lease is held.
        holder: who holds it, as ``"host:pid"``.
        expires_at: wall-clock time the lease lapses unless its holder renews it.
    """

    def __init__(self, message: str, *, run_id: str, holder: str, expires_at: float) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.holder = holder
        self.expires_at = expires_at


class StoreUnavailableError(StoreError):
    """The store's database could not be reached for a moment: its connection dropped, the server
    is restarting, another process holds its write lock. The store tries again by itself, for up
    to its ``retry_budget_s``; this reaches its caller only once that is spent."""


class HookError(CrewError):
    """A review hook (webhook or command) failed. The run does not fail: it emits
    ``ReviewHookFailed`` with this message, and the review is pending all the same."""


class BudgetExceededError(CrewError):
    """A model call's reservation (its prompt counted, plus its ``max_tokens`` of answer, at the
    model's prices) would take the run past its ``Budget``. Nothing was sent. Neither the call
    nor the task is retried and no fallback is tried: the run dispatches no new task, lets the
    running ones end, and ends ``budget_exceeded``; resume it with a higher budget."""

    def __init__(self, message: str, *, spent_usd: float = 0.0, spent_tokens: int = 0) -> None:
        super().__init__(message)
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens


class RunFailedError(CrewError):
    """Raised by ``CrewResult.raise_for_status()`` when the run did not succeed."""

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result
        """The ``crew.results.CrewResult`` of the run (typed loosely: errors sit below results)."""
