"""The process-wide limits of a model (``crew.limits``): calls and tokens per minute over a
sliding window, the provider's Retry-After holding back every call, and the circuit breaker.

The window is the real sliding-window logic, made short (``RateLimiter.window_s``) so that the
tests against the fake server take a second or two; the unit tests use a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from crew import LLM, Agent, Crew, RetryPolicy, Task, events
from crew.config import Settings
from crew.errors import ConfigError, ProviderError, ProviderUnavailableError
from crew.limits import (
    CircuitBreaker,
    RateLimiter,
    circuit_breaker,
    estimate_tokens,
    rate_limiter,
    share_limiters,
)
from crew.testserver import Call, FakeOpenAIServer, ServerReply

FAST = RetryPolicy(attempts=5, initial_s=0.01, max_s=0.02, jitter_s=0.0)
WINDOW_S = 0.6
SLACK_S = 0.15
"""How much earlier than the client a request may reach the server's log: the windows are
checked there over ``WINDOW_S - SLACK_S``, the transport's jitter left out."""


class FakeClock:
    """A clock that moves only when the limiter sleeps, recording each sleep; tasks sleeping at
    once sleep side by side, as on a real clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wakes = self.now + seconds
        await asyncio.sleep(0)  # let other tasks run, as a real sleep does
        self.now = max(self.now, wakes)


def most_in_a_window(times: Sequence[float], weights: Sequence[int], window_s: float) -> int:
    """The largest sum of ``weights`` over calls started within any ``window_s``."""
    pairs = sorted(zip(times, weights, strict=True))
    return max(sum(w for t, w in pairs if start <= t < start + window_s) for start, _ in pairs)


def parallel_crew(llm: LLM, count: int) -> Crew:
    writer = Agent(role="Writer", goal="Write", llm=llm)
    tasks = [Task(id=f"t{i}", description=f"Part {i}", agent=writer) for i in range(count)]
    return Crew(tasks, max_concurrency=count)


def answered(server: FakeOpenAIServer) -> list[Call]:
    return [call for call in server.calls if call.status == 200]


# The limiter, on a fake clock


def test_tokens_per_window_never_exceed_max_tpm():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def main() -> None:
        for _ in range(7):
            await limiter.acquire(max_tpm=100, tokens=40)
            starts.append(clock.now)

    asyncio.run(main())

    assert starts == [1000.0] * 2 + [1060.0] * 2 + [1120.0] * 2 + [1180.0]
    assert most_in_a_window(starts, [40] * 7, 60.0) <= 100


def test_a_call_s_real_usage_replaces_its_estimate():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)

    async def main() -> None:
        first = await limiter.acquire(max_tpm=100, tokens=90)
        limiter.settle(first, 10)  # it used far less than it reserved
        second = await limiter.acquire(max_tpm=100, tokens=90)
        assert second.waited_s == 0
        await limiter.acquire(max_tpm=100, tokens=90)  # now the window is full

    asyncio.run(main())

    assert sum(clock.sleeps) == pytest.approx(60.0)


def test_a_waiting_call_starts_earlier_when_the_one_before_used_fewer_tokens():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)

    async def main() -> float:
        first = await limiter.acquire(max_tpm=100, tokens=90)
        second = asyncio.create_task(limiter.acquire(max_tpm=100, tokens=90))
        await asyncio.sleep(0)  # it reserves 60 s ahead and looks again after 3 s
        limiter.settle(first, 10)
        return (await second).waited_s

    assert asyncio.run(main()) == pytest.approx(3.0)


def test_a_call_over_the_whole_limit_runs_alone_and_is_not_overtaken():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    order: list[tuple[str, float]] = []

    async def call(name: str, tokens: int) -> None:
        await limiter.acquire(max_tpm=100, tokens=tokens)
        order.append((name, clock.now))

    async def main() -> None:
        await call("small", 30)
        clock.now += 10
        await asyncio.gather(call("huge", 250), call("after", 10))

    asyncio.run(main())

    # "huge" waits for "small" to leave the window, then has one to itself; "after", which
    # would have fitted at once, does not pass it.
    assert order == [("small", 1000.0), ("huge", 1060.0), ("after", 1120.0)]


def test_calls_per_window_and_tokens_per_window_both_hold():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def main() -> None:
        for _ in range(6):
            await limiter.acquire(2, max_tpm=1000, tokens=10)
            starts.append(clock.now)

    asyncio.run(main())

    assert starts == [1000.0] * 2 + [1060.0] * 2 + [1120.0] * 2


def test_a_retry_after_holds_back_every_call_and_says_so():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)

    async def main() -> list[tuple[float, str]]:
        limiter.pause(5.0)
        admissions = [await limiter.acquire(), await limiter.acquire(100)]
        return [(a.waited_s, a.limit) for a in admissions]

    waits = asyncio.run(main())

    assert waits == [(5.0, "retry_after"), (0.0, "")]


def test_a_wait_cancelled_gives_its_place_back():
    limiter = RateLimiter(window_s=30.0)

    async def main() -> float:
        await limiter.acquire(1)
        waiting = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        limiter.window_s = 0.05  # the first call leaves the window soon
        started = time.monotonic()
        await limiter.acquire(1)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0  # not behind the cancelled call's place, 30 s away


def test_the_estimate_counts_the_prompt_and_sets_aside_the_answer():
    messages = [{"role": "user", "content": "x" * 400}]
    assert estimate_tokens(messages, None, 50) == 100 + 4 + 50
    assert estimate_tokens(messages, None, None) == 100 + 4 + 1024
    tools = [{"type": "function", "function": {"name": "f" * 100}}]
    assert estimate_tokens(messages, tools, 0) > 104


def test_a_shared_limiter_plugs_in_for_every_model_until_unplugged():
    made: list[tuple[str, str | None]] = []

    def shared(model: str, api_base: str | None) -> RateLimiter:
        made.append((model, api_base))
        return RateLimiter(window_s=1.0)

    mine = rate_limiter("openai/a", None)
    share_limiters(shared)
    try:
        first = rate_limiter("openai/a", None)
        assert first is not mine and first.window_s == 1.0  # the process's own are dropped
        assert rate_limiter("openai/a", None) is first  # one per model, as before
        rate_limiter("openai/b", "http://127.0.0.1:9/v1")
        assert made == [("openai/a", None), ("openai/b", "http://127.0.0.1:9/v1")]
    finally:
        share_limiters(None)
    assert rate_limiter("openai/a", None).window_s == 60.0


# The breaker, on a fake clock


def test_the_breaker_opens_after_n_failures_then_probes_once_and_closes():
    clock = FakeClock()
    breaker = CircuitBreaker("openai/x", clock=clock)
    error = ProviderError("boom", model="openai/x")
    settings = {"failures": 3, "cooldown_s": 30.0}

    assert [breaker.failed(error, probe=False, failures=3) for _ in range(3)] == [None, None, 3]
    with pytest.raises(ProviderUnavailableError, match=r"3 calls in a row failed.*in 30 s"):
        breaker.enter(**settings)
    clock.now += 30
    assert breaker.enter(**settings) is True  # the probe
    with pytest.raises(ProviderUnavailableError, match="probe"):
        breaker.enter(**settings)  # one probe at a time
    assert breaker.succeeded(probe=True) is True
    assert breaker.enter(**settings) is False and not breaker.is_open


def test_a_failed_probe_opens_the_breaker_for_another_cool_down():
    clock = FakeClock()
    breaker = CircuitBreaker("openai/x", clock=clock)
    error = ProviderError("boom", model="openai/x")
    for _ in range(2):
        breaker.failed(error, probe=False, failures=2)
    clock.now += 10
    assert breaker.enter(failures=2, cooldown_s=10) is True
    assert breaker.failed(error, probe=True, failures=2) == 3
    clock.now += 5
    with pytest.raises(ProviderUnavailableError, match="in 5 s"):
        breaker.enter(failures=2, cooldown_s=10)


def test_failures_in_a_row_open_the_breaker_only_once_they_have_lasted_the_window():
    clock = FakeClock()
    breaker = CircuitBreaker("openai/x", clock=clock)
    error = ProviderError("boom", model="openai/x")
    blip = [breaker.failed(error, probe=False, failures=3, window_s=10) for _ in range(50)]
    assert blip == [None] * 50 and not breaker.is_open  # a burst that retries outlast
    clock.now += 9
    assert breaker.failed(error, probe=False, failures=3, window_s=10) is None
    clock.now += 1
    assert breaker.failed(error, probe=False, failures=3, window_s=10) == 52
    assert breaker.is_open
    breaker.succeeded(probe=False)
    clock.now += 100  # a new row starts its own window
    assert breaker.failed(error, probe=False, failures=1, window_s=10) is None


def test_a_success_between_failures_keeps_the_breaker_closed():
    breaker = CircuitBreaker("openai/x")
    error = ProviderError("boom", model="openai/x")
    outcomes = []
    for _ in range(5):
        outcomes += [breaker.failed(error, probe=False, failures=3) for _ in range(2)]
        breaker.succeeded(probe=False)
    assert outcomes == [None] * 10 and not breaker.is_open


# Against the fake server


def test_many_parallel_tasks_under_max_rpm_never_exceed_it_in_the_server_s_log(server):
    llm = LLM("openai/rpm", api_base=server.url, api_key="sk-test", retry=FAST, max_rpm=3)
    rate_limiter(llm.model, llm.api_base).window_s = WINDOW_S
    seen: list[events.Event] = []

    result = asyncio.run(parallel_crew(llm, 10).arun(on_event=seen.append))

    assert result.status == "succeeded"
    starts = [call.started for call in answered(server)]
    assert len(starts) == 10
    assert most_in_a_window(starts, [1] * 10, WINDOW_S - SLACK_S) <= 3
    assert max(starts) - min(starts) >= 3 * WINDOW_S - SLACK_S  # four windows' worth
    waits = [e for e in seen if isinstance(e, events.RateLimited)]
    assert len(waits) == 7 and {e.limit for e in waits} == {"rpm"}
    assert all(e.waited_s > 0 and e.model == "openai/rpm" for e in waits)


def test_many_parallel_tasks_under_max_tpm_never_exceed_it_in_the_server_s_log(server):
    # Each answer reports 100 tokens; the estimate (prompt + max_tokens) is a little more.
    server.default = ServerReply(text="ok", prompt_tokens=60, completion_tokens=40)
    llm = LLM(
        "openai/tpm", api_base=server.url, api_key="sk-test", retry=FAST, max_tokens=40,
        max_tpm=450,
    )  # fmt: skip
    rate_limiter(llm.model, llm.api_base).window_s = WINDOW_S
    seen: list[events.Event] = []

    result = asyncio.run(parallel_crew(llm, 8).arun(on_event=seen.append))

    assert result.status == "succeeded"
    assert result.usage.total.prompt_tokens + result.usage.total.completion_tokens == 800
    starts = [call.started for call in answered(server)]
    assert most_in_a_window(starts, [100] * 8, WINDOW_S - SLACK_S) <= 450
    assert max(starts) - min(starts) >= WINDOW_S - SLACK_S  # they did not all fit at once
    assert {e.limit for e in seen if isinstance(e, events.RateLimited)} == {"tpm"}


def test_a_429_with_retry_after_delays_every_other_task_s_next_call(server):
    server.script("a", ServerReply(status=429, retry_after_s=0.8), ServerReply(text="ok"))
    server.script("first", ServerReply(text="ok", latency_ms=300))
    llm = LLM("openai/pause", api_base=server.url, api_key="sk-test", retry=FAST)
    writer = Agent(role="Writer", goal="Write", llm=llm)
    first = Task(id="first", description="First", agent=writer)
    tasks = [
        Task(id="a", description="A", agent=writer),
        first,
        Task(id="b", description="B", agent=writer, depends_on=[first]),
        Task(id="c", description="C", agent=writer, depends_on=[first]),
    ]
    seen: list[events.Event] = []

    result = asyncio.run(Crew(tasks).arun(on_event=seen.append))

    assert result.status == "succeeded"
    calls = server.calls
    rejected = next(call for call in calls if call.status == 429)
    assert rejected.finished < next(c for c in calls if c.key == "first").finished
    later = [c for c in calls if c.key in ("a", "b", "c") and c.status == 200]
    assert len(later) == 3
    # No call to the model started before the Retry-After ran out, the other tasks' included.
    assert all(call.started >= rejected.finished + 0.8 - 1e-3 for call in later)
    held = {e.task_id for e in seen if isinstance(e, events.RateLimited)}
    assert {"b", "c"} <= held
    assert {e.limit for e in seen if isinstance(e, events.RateLimited)} == {"retry_after"}


def test_the_breaker_opens_fails_fast_and_closes_after_the_cool_down_probe(server):
    server.script("down", ServerReply(status=500))
    llm = LLM(
        "openai/flaky", api_base=server.url, api_key="sk-test", retry=FAST,
        breaker_failures=3, breaker_cooldown_s=1.0, breaker_window_s=0,
    )  # fmt: skip
    writer = Agent(role="Writer", goal="Write", llm=llm)
    seen: list[events.Event] = []

    def run(task_id: str) -> object:
        crew = Crew([Task(id=task_id, description="Write", agent=writer)])
        return asyncio.run(crew.arun(on_event=seen.append))

    failed = run("down")
    down = failed.tasks["down"]  # type: ignore[attr-defined]
    assert down.error_type == "ProviderUnavailableError" and down.attempts == 1
    assert "3 calls in a row failed" in down.error and "crew resume" in down.error
    assert len(server.calls) == 3  # the fourth attempt sent nothing; the task was not retried
    opened = [e for e in seen if isinstance(e, events.CircuitOpened)]
    assert len(opened) == 1 and "3 calls in a row failed" in opened[0].reason

    started = time.monotonic()
    still_down = run("up")
    assert still_down.tasks["up"].error_type == "ProviderUnavailableError"  # type: ignore[attr-defined]
    assert time.monotonic() - started < 1.0 and len(server.calls) == 3  # fast, nothing sent

    time.sleep(1.0)
    recovered = run("up")
    assert recovered.status == "succeeded"  # type: ignore[attr-defined]
    assert len(server.calls) == 4  # one probe
    closed = [e for e in seen if isinstance(e, events.CircuitClosed)]
    assert len(closed) == 1 and closed[0].reason == "the probe call succeeded"
    assert not circuit_breaker(llm.model, llm.api_base).is_open


def test_an_open_breaker_moves_on_to_the_fallback_model(server):
    server.script("t", ServerReply(status=500), model="openai/main")
    server.script("t", ServerReply(text="from the fallback"), model="openai/backup")
    llm = LLM(
        "openai/main", api_base=server.url, api_key="sk-test", retry=FAST,
        breaker_failures=2, breaker_window_s=0, fallbacks=["openai/backup"],
    )  # fmt: skip
    writer = Agent(role="Writer", goal="Write", llm=llm)
    result = Crew([Task(id="t", description="Write", agent=writer)]).run()

    assert result.outputs["t"].text == "from the fallback"
    assert [c.model for c in server.calls] == ["main", "main", "backup"]


def test_breaker_failures_zero_turns_the_breaker_off(server):
    server.script("t", ServerReply(status=500))
    llm = LLM("openai/off", api_base=server.url, api_key="sk-test", retry=FAST, breaker_failures=0)
    writer = Agent(role="Writer", goal="Write", llm=llm)
    result = Crew([Task(id="t", description="Write", agent=writer)], task_retries=0).run()

    assert result.tasks["t"].error_type == "ProviderError"
    assert len(server.calls) == FAST.attempts


# Settings


def test_crew_toml_sets_max_tpm_and_the_breaker_per_profile(tmp_path: Path):
    (tmp_path / "crew.toml").write_text(
        '[llm]\nmodel = "openai/a"\nmax_tpm = 5000\nbreaker_failures = 4\n'
        '[llm.profiles.fast]\nmodel = "openai/b"\nmax_rpm = 10\nmax_tpm = 900\n'
        "breaker_cooldown_s = 5\n"
    )
    settings = Settings.load(cwd=tmp_path, env={"HOME": str(tmp_path)})

    assert settings.default_llm() == LLM("openai/a", max_tpm=5000, breaker_failures=4)
    assert settings.resolve_llm("fast") == LLM(
        "openai/b", max_rpm=10, max_tpm=900, breaker_cooldown_s=5.0
    )


def test_bad_limits_are_config_errors_before_any_call(tmp_path: Path):
    with pytest.raises(ConfigError, match="max_tpm"):
        LLM("openai/x", max_tpm=0)
    with pytest.raises(ConfigError, match="breaker_failures"):
        LLM("openai/x", breaker_failures=-1)
    (tmp_path / "crew.toml").write_text('[llm]\nmodel = "openai/a"\nmax_tpm = 0\n')
    with pytest.raises(ConfigError, match="max_tpm"):
        Settings.load(cwd=tmp_path, env={"HOME": str(tmp_path)})
