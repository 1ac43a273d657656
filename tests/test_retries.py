"""Retries that fit production: the crew-wide defaults for call attempts and task retries (from
Python, the crew file and crew.toml, and which wins), empty answers retried as provider errors,
the retry budget, and a run with the defaults surviving faults the fake server injects."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from crew import LLM, Agent, Crew, RetryPolicy, Task, errors, events
from crew.cli.target import configure
from crew.config import Settings
from crew.llm import ChatRequest
from crew.retry import DEFAULT_CALL_ATTEMPTS, DEFAULT_TASK_RETRIES, MAX_WAIT_S, retrying
from crew.spec import load_crew_yaml
from crew.testserver import FakeOpenAIServer, Faults, ServerReply

FAST = RetryPolicy(initial_s=0.01, max_s=0.05, jitter_s=0.0)
"""The default number of attempts, with waits short enough for a test."""


class Article(BaseModel):
    title: str


def one_task(llm: LLM, **crew_settings: object) -> Crew:
    writer = Agent(role="Writer", goal="Write", llm=llm)
    return Crew([Task(id="t", description="Write it", agent=writer)], **crew_settings)  # type: ignore[arg-type]


def article(llm: LLM, *, retries: int | None = None, **crew_settings: object) -> Crew:
    writer = Agent(role="Writer", goal="Write", llm=llm)
    task = Task(id="t", description="Write", agent=writer, output_model=Article, retries=retries)
    return Crew([task], **crew_settings)  # type: ignore[arg-type]


def test_the_defaults_survive_a_quarter_of_calls_failing_and_a_down_provider_fails_fast():
    policy = RetryPolicy()
    assert policy.attempts == DEFAULT_CALL_ATTEMPTS == 12 and DEFAULT_TASK_RETRIES == 2
    # 8,000 tasks of ~3 calls, each call failing for good only if every attempt hits a fault.
    lost_any = 1 - (1 - 0.25**policy.attempts) ** (8000 * 3)
    assert lost_any < 0.01
    waits = [min(policy.max_s, policy.initial_s * 2**n) + policy.jitter_s for n in range(11)]
    assert sum(waits) <= policy.max_wait_s == MAX_WAIT_S <= 180


def test_waiting_stops_at_the_budget_whatever_the_attempts():
    policy = RetryPolicy(attempts=50, initial_s=0.02, max_s=0.02, jitter_s=0.0, max_wait_s=0.05)
    tries = 0

    async def failing() -> None:
        nonlocal tries
        tries += 1
        raise errors.ProviderError("down", model="m")

    with pytest.raises(errors.ProviderError):
        asyncio.run(retrying(failing, policy))
    assert tries == 4  # waits of 0.02, 0.02 and the last 0.01 that fits, then no more


def test_tenacity_takes_over_from_the_first_failure_as_if_it_had_made_it(monkeypatch):
    """The first attempt is made without tenacity; its failure is tenacity's first outcome:
    the same attempt numbers, waits and reports as a retryer that made every attempt."""
    from crew import retry

    policy = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.04, jitter_s=0.0)
    made = []
    real = retry._retryer
    monkeypatch.setattr(retry, "_retryer", lambda *a: made.append(a) or real(*a))
    outcomes = ["fail", "fail", "ok"]
    reported = []

    async def flaky() -> str:
        if outcomes.pop(0) == "fail":
            raise errors.ProviderError("busy", model="m")
        return "answer"

    async def once() -> str:
        return "at once"

    on_retry = lambda n, error, wait: reported.append((n, str(error), wait))  # noqa: E731
    assert asyncio.run(retrying(once, policy, on_retry=on_retry)) == "at once"
    assert made == []  # a call that succeeds at once costs no retryer
    assert asyncio.run(retrying(flaky, policy, on_retry=on_retry)) == "answer"
    assert len(made) == 1
    assert [(n, wait) for n, _, wait in reported] == [(1, 0.01), (2, 0.02)]
    assert "busy" in reported[0][1]


def test_an_error_not_worth_retrying_is_raised_at_once():
    tries = 0

    async def refused() -> None:
        nonlocal tries
        tries += 1
        raise errors.BadRequestError("no", model="m")

    with pytest.raises(errors.BadRequestError):
        asyncio.run(retrying(refused, RetryPolicy(attempts=5, initial_s=0.01)))
    assert tries == 1


def test_crew_call_attempts_apply_to_models_without_a_policy(server):
    server.script("t", ServerReply(status=500))
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test")
    result = one_task(llm, call_attempts=2).run()
    assert result.tasks["t"].error_type == "ProviderError"
    assert len(server.calls) == 2  # spent model retries are not tried again by the task
    assert result.usage.total.retries == 1


def test_an_llm_retry_policy_wins_over_the_crew_default(server):
    server.script("t", ServerReply(status=500), ServerReply(status=500), ServerReply(text="ok"))
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test", retry=FAST)
    result = one_task(llm, call_attempts=1).run()
    assert result.outputs["t"].text == "ok"
    assert len(server.calls) == 3 and result.usage.total.retries == 2


def test_a_task_retries_wins_over_the_crew_default(server, fake_llm):
    server.script("t", ServerReply(text="no json"))
    assert article(fake_llm, task_retries=0).run().tasks["t"].attempts == 1
    server.reset()
    server.script("t", ServerReply(text="no json"))
    assert article(fake_llm, retries=1, task_retries=0).run().tasks["t"].attempts == 2
    server.reset()
    server.script("t", ServerReply(text="no json"))
    assert article(fake_llm, retries=0).run().tasks["t"].attempts == 1


def test_crew_settings_are_checked_before_any_call():
    with pytest.raises(errors.ConfigError) as caught:
        Crew([], call_attempts=0, task_retries=-1)
    assert len(caught.value.problems) == 2
    assert "call_attempts must be a whole number >= 1" in str(caught.value)


def test_the_crew_file_sets_the_defaults_and_a_task_its_own(tmp_path: Path):
    path = tmp_path / "crew.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            call_attempts: 4
            task_retries: 0
            agents:
              writer: {role: Writer, goal: Write, llm: openai/fake}
            tasks:
              draft: {description: Draft it, agent: writer}
              polish: {description: Polish it, agent: writer, depends_on: [draft], retries: 3}
            """
        )
    )
    crew = load_crew_yaml(path).crew
    assert (crew.call_attempts, crew.task_retries) == (4, 0)
    assert {t.id: t.retries for t in crew.tasks} == {"draft": None, "polish": 3}


def test_the_crew_file_rejects_a_bad_default(tmp_path: Path):
    path = tmp_path / "crew.yaml"
    path.write_text("call_attempts: 0\nagents: {}\ntasks: {}\n")
    with pytest.raises(errors.ConfigError, match="call_attempts"):
        load_crew_yaml(path)


def settings(tmp_path: Path, toml: str = "", **env: str) -> Settings:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "crew.toml").write_text(toml)
    home = {"HOME": str(tmp_path / "home")}
    return Settings.load(cwd=project, env={**home, **env}, read_dotenv=False)


def test_crew_toml_sets_the_defaults_and_the_environment_wins(tmp_path: Path):
    found = settings(tmp_path, "[run]\ncall_attempts = 5\ntask_retries = 1\n")
    assert (found.run.call_attempts, found.run.task_retries) == (5, 1)
    assert found.sources["run.call_attempts"] == "./crew.toml"
    crew = configure(Crew([], call_attempts=3, task_retries=0, llm="openai/x"), found)
    assert (crew.call_attempts, crew.task_retries) == (5, 1)  # as for max_concurrency
    found = settings(tmp_path, "[run]\ncall_attempts = 5\n", CREW_CALL_ATTEMPTS="7")
    assert (
        found.run.call_attempts == 7
        and found.sources["run.call_attempts"] == "env CREW_CALL_ATTEMPTS"
    )


def test_untouched_config_leaves_the_crew_file_s_values(tmp_path: Path):
    found = settings(tmp_path)
    assert found.run.call_attempts == DEFAULT_CALL_ATTEMPTS
    crew = configure(Crew([], call_attempts=3, task_retries=0, llm="openai/x"), found)
    assert (crew.call_attempts, crew.task_retries) == (3, 0)


def test_crew_toml_names_a_bad_value(tmp_path: Path):
    with pytest.raises(errors.ConfigError, match=r"crew.toml: run.task_retries"):
        settings(tmp_path, "[run]\ntask_retries = -1\n")


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ({"id": "x", "object": "chat.completion", "created": 1, "model": "fake", "choices": []},
         "no choices"),
        ({"id": "x", "object": "chat.completion", "created": 1, "model": "fake",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": None}}]},
         "no content"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("client", ["auto", "litellm"])  # the direct path, and litellm's
def test_an_empty_answer_is_retried_and_the_next_answer_used(server, body, what, client):
    server.script("t", ServerReply(body=body), ServerReply(text="the answer"))
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test", retry=FAST, client=client)
    seen: list[events.Event] = []
    result = asyncio.run(one_task(llm).arun(on_event=seen.append))
    assert result.outputs["t"].text == "the answer"
    retried = [e for e in seen if isinstance(e, events.LLMRetrying)]
    assert len(retried) == 1 and what in retried[0].error
    assert result.usage.total.retries == 1 and result.tasks["t"].attempts == 1


@pytest.mark.parametrize("client", ["auto", "litellm"])
def test_an_empty_answer_alone_fails_as_a_provider_error(server, client):
    server.script("t", ServerReply(body={"choices": []}))
    llm = LLM("openai/fake", api_base=server.url, api_key="sk-test", retry=FAST, client=client)
    with pytest.raises(errors.EmptyAnswerError) as caught:
        asyncio.run(llm.complete(ChatRequest(messages=[{"role": "user", "content": "# Task: t"}])))
    assert caught.value.retryable and caught.value.retries_spent
    assert len(server.calls) == FAST.attempts


def test_a_run_with_the_default_attempts_survives_injected_faults():
    faults = Faults(
        rate_limited=0.1, server_error=0.1, hang=0.05, hang_s=0.05, retry_after_s=0.02, seed=3
    )
    with FakeOpenAIServer(faults=faults) as server:
        llm = LLM("openai/fake", api_base=server.url, api_key="sk-test", retry=FAST)
        writer = Agent(role="Writer", goal="Write", llm=llm)
        tasks = [Task(id=f"t{i}", description=f"Part {i}", agent=writer) for i in range(30)]
        tasks.append(Task(id="end", description="Join", agent=writer, depends_on=tasks))
        result = Crew(tasks).run()
    assert result.status == "succeeded" and len(result.outputs) == 31
    injected = sum(faults.injected.values())
    assert injected > 0 and faults.injected["hang"] > 0
    assert result.usage.total.retries == injected  # each fault cost exactly one retry
    assert len(server.calls) == 31 + injected


def test_faults_are_repeatable_from_their_seed():
    def draws(seed: int) -> list[int]:
        faults = Faults(rate_limited=0.3, server_error=0.3, seed=seed)
        return [faults.pick(ServerReply(text="ok")).status for _ in range(50)]

    assert draws(1) == draws(1) != draws(2)
    assert {429, 500, 200} == set(draws(1))
