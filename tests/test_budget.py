"""Budgets (``crew.budget``): each model call reserves its worst case before it is sent, the run
stops dispatching once a reservation fails, ends ``budget_exceeded``, and resumes with a higher
budget. The end-to-end tests run a priced model (``openai/gpt-4o-mini``'s prices, from litellm's
map) against the fake server, whose answers report known usage."""

from __future__ import annotations

import json

import pytest

from crew import LLM, Agent, Budget, Crew, RetryPolicy, Task, events
from crew.budget import Estimate, Ledger, call_estimate, prices_of
from crew.errors import BudgetExceededError, ConfigError, RunFailedError
from crew.limits import estimate_tokens
from crew.prices import cost_usd
from crew.store.memory import MemoryStore
from crew.task import loop
from crew.testserver import Call, FakeOpenAIServer, ServerReply

MODEL = "openai/gpt-4o-mini"
ANSWER_TOKENS = 200
FAST = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.02, jitter_s=0.0)


def priced(server: FakeOpenAIServer) -> LLM:
    return LLM(MODEL, api_base=server.url, api_key="sk-test", max_tokens=ANSWER_TOKENS, retry=FAST)


def parallel_crew(llm: LLM, count: int, **kwargs: object) -> Crew:
    writer = Agent(role="Writer", goal="Write", llm=llm)
    tasks = [Task(id=f"t{i}", description=f"Part {i}", agent=writer) for i in range(count)]
    return Crew(tasks, max_concurrency=8, store=MemoryStore(), **kwargs)  # type: ignore[arg-type]


def answered(server: FakeOpenAIServer) -> list[Call]:
    return [call for call in server.calls if call.status == 200]


def one_call_estimate(llm: LLM) -> Estimate:
    """A generous estimate of one call of these crews (their prompts are short)."""
    return call_estimate(400, ANSWER_TOKENS, prices_of(llm))


# The ledger


def test_ledger_refuses_a_reservation_that_would_pass_the_budget():
    ledger = Ledger(Budget(max_cost_usd=1.0))
    first = ledger.reserve(Estimate(10, 0.6), what="call 1")
    with pytest.raises(BudgetExceededError, match=r"max_cost_usd \$1"):
        ledger.reserve(Estimate(10, 0.6), what="call 2")
    assert ledger.exceeded is not None
    ledger.settle(first, cost_usd=0.2, tokens=5)
    assert (ledger.spent_usd, ledger.reserved_usd, ledger.spent_tokens) == (0.2, 0.0, 5)


def test_ledger_gives_back_a_failed_calls_reservation_and_counts_earlier_spending():
    ledger = Ledger(Budget(max_tokens=100), spent_tokens=60)
    held = ledger.reserve(Estimate(40, 0.0), what="call")
    ledger.release(held)
    assert ledger.reserved_tokens == 0
    with pytest.raises(BudgetExceededError, match="max_tokens 100"):
        ledger.reserve(Estimate(41, 0.0), what="call")


@pytest.mark.parametrize("bad", [{"max_cost_usd": -1}, {"max_tokens": 1.5}, {"max_cost_usd": "5"}])
def test_a_bad_budget_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="Budget"):
        Budget(**bad)  # type: ignore[arg-type]


def test_prices_come_from_the_price_map_and_an_unknown_model_costs_nothing(server):
    assert prices_of(priced(server))[1] > 0
    assert prices_of(LLM("openai/not-a-model-anyone-prices", api_base=server.url)) == (0.0, 0.0)


# End to end, against the fake server


def cost_of(calls: list[Call], prompt_tokens: int) -> float:
    """What the answered calls cost, from the usage the server was scripted to report."""
    one = cost_usd(MODEL, prompt_tokens=prompt_tokens, completion_tokens=ANSWER_TOKENS)
    return one * len(calls)


def estimate_error(calls: list[Call], prompt_tokens: int, llm: LLM) -> float:
    """The most any answered call cost beyond what it reserved (0 when none did)."""
    prices = prices_of(llm)
    real = cost_usd(MODEL, prompt_tokens=prompt_tokens, completion_tokens=ANSWER_TOKENS)
    errors = [
        real
        - call_estimate(
            estimate_tokens(c.body["messages"], None, 0), ANSWER_TOKENS, prices
        ).cost_usd
        for c in calls
    ]
    return max([0.0, *errors])


def test_parallel_calls_never_spend_past_the_budget_by_more_than_one_calls_estimate_error(
    server,
):
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)
    llm = priced(server)
    per_call = one_call_estimate(llm).cost_usd
    budget = Budget(max_cost_usd=round(per_call * 5.5, 8))
    seen: list[events.Event] = []

    crew = parallel_crew(llm, 20, budget=budget)

    result = crew.run(on_event=seen.append)

    calls = answered(server)
    real = cost_of(calls, 20)
    assert result.status == "budget_exceeded"
    assert 0 < len(calls) < 20
    assert real <= budget.max_cost_usd + estimate_error(calls, 20, llm)
    assert result.usage.total.cost_usd == pytest.approx(real)
    pending = [r for r in result.tasks.values() if r.status == "pending"]
    assert len(pending) == 20 - len(calls)
    assert all("budget" in (r.reason or "") for r in pending)
    exceeded = [e for e in seen if isinstance(e, events.BudgetExceeded)]
    assert exceeded and exceeded[0].max_cost_usd == budget.max_cost_usd
    assert exceeded[0].model == MODEL
    finished = [e for e in seen if isinstance(e, events.RunFinished)]
    assert finished[-1].status == "budget_exceeded"
    logged = [e.type for e in crew.store.events(result.run_id)]
    assert "BudgetExceeded" in logged
    assert (
        crew.store.get_run(result.run_id).metadata["budget"]["max_cost_usd"] == budget.max_cost_usd
    )
    with pytest.raises(RunFailedError, match="budget_exceeded"):
        result.raise_for_status()


def test_a_provider_counting_more_than_the_estimate_overshoots_by_one_calls_error_at_most(
    server,
):
    """The provider counts 10 times the prompt tokens crew estimated: each call costs more than
    it reserved, and one at a time the run passes its budget by one call's error at most."""
    server.default = ServerReply(text="done", prompt_tokens=2000, completion_tokens=ANSWER_TOKENS)
    llm = priced(server)
    budget = Budget(
        max_cost_usd=cost_usd(MODEL, prompt_tokens=2000, completion_tokens=ANSWER_TOKENS) * 3.5
    )
    crew = parallel_crew(llm, 10, budget=budget).replace(max_concurrency=1)

    result = crew.run()

    calls = answered(server)
    error = estimate_error(calls, 2000, llm)
    assert result.status == "budget_exceeded"
    assert error > 0
    assert budget.max_cost_usd < cost_of(calls, 2000) <= budget.max_cost_usd + error


def test_a_resume_with_a_higher_budget_finishes_without_calling_finished_tasks_again(server):
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)
    llm = priced(server)
    per_call = one_call_estimate(llm).cost_usd
    crew = parallel_crew(llm, 12, budget=Budget(max_cost_usd=per_call * 4))
    first = crew.run(run_id="r1")
    done = {t for t, r in first.tasks.items() if r.status == "succeeded"}
    assert first.status == "budget_exceeded" and done
    server.reset()
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)

    again = crew.run(resume="r1", budget=Budget(max_cost_usd=per_call * 20))

    assert again.status == "succeeded"
    called = {c.key for c in answered(server)}
    assert len(answered(server)) == 12 - len(done)
    assert called and not called & done
    # The run's usage covers all of it: the restored tasks' and the new calls'.
    assert again.usage.total.cost_usd == pytest.approx(
        cost_of(answered(server), 20) * 12 / len(answered(server))
    )


def test_what_a_run_spent_counts_against_the_budget_of_its_resume(server):
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)
    llm = priced(server)
    per_call = one_call_estimate(llm).cost_usd
    budget = Budget(max_cost_usd=per_call * 4)
    crew = parallel_crew(llm, 12, budget=budget)
    first = crew.run(run_id="r1")
    before = answered(server)
    server.reset()
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)
    seen: list[events.Event] = []

    again = crew.run(resume="r1", on_event=seen.append)  # the same budget: little is left

    assert first.status == again.status == "budget_exceeded"
    assert cost_of(before + answered(server), 20) <= budget.max_cost_usd
    exceeded = [e for e in seen if isinstance(e, events.BudgetExceeded)]
    assert exceeded[0].spent_usd >= first.usage.total.cost_usd > 0


def test_a_map_stops_at_the_budget_and_its_resume_runs_only_the_items_left(server):
    server.default = ServerReply(
        text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS, latency_ms=50
    )
    llm = priced(server)
    writer = Agent(role="Writer", goal="Write", llm=llm)
    each = Task(
        id="each", description="Write {item}", agent=writer, for_each=lambda _: list("abcdefghij")
    )
    per_call = one_call_estimate(llm).cost_usd
    crew = Crew(
        [each], max_concurrency=8, store=MemoryStore(), budget=Budget(max_cost_usd=per_call * 3)
    )

    first = crew.run(run_id="m1")

    assert first.status == "budget_exceeded"
    assert first.tasks["each"].status == "pending"
    done = len(answered(server))
    assert 0 < done < 10
    again = crew.run(resume="m1", budget=Budget(max_cost_usd=1.0))
    assert again.status == "succeeded"
    assert len(answered(server)) == 10  # no item answered twice
    assert len(again.outputs["each"].data) == 10


def test_a_loop_stops_at_the_budget_between_rounds_and_resumes(server):
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)
    llm = priced(server)
    writer = Agent(role="Writer", goal="Write", llm=llm)
    body = [Task(id="draft", description="Draft it again", agent=writer)]
    per_call = one_call_estimate(llm).cost_usd
    crew = Crew(
        [loop("refine", body, max_rounds=3)], store=MemoryStore(),
        budget=Budget(max_cost_usd=per_call * 1.5),
    )  # fmt: skip

    first = crew.run(run_id="l1")

    assert first.status == "budget_exceeded"
    assert first.tasks["refine"].status == "pending"
    rounds = len(answered(server))
    assert 0 < rounds < 3
    again = crew.run(resume="l1", budget=Budget(max_cost_usd=1.0))
    assert again.status == "succeeded"
    assert len(answered(server)) == 3  # the rounds done were not called again


def test_a_subcrew_spends_from_its_parents_budget(server):
    server.default = ServerReply(
        text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS, latency_ms=50
    )
    llm = priced(server)
    per_call = one_call_estimate(llm).cost_usd
    inner = parallel_crew(llm, 6).replace(name="inner")
    writer = Agent(role="Writer", goal="Write", llm=llm)
    outer = Crew(
        [Task(id="own", description="Write it", agent=writer),
         Task(id="sub", description="Its parts", crew=inner)],
        store=MemoryStore(), budget=Budget(max_cost_usd=per_call * 3),
    )  # fmt: skip

    result = outer.run(run_id="p1")

    assert result.status == "budget_exceeded"
    assert result.tasks["sub"].status == "pending"
    assert cost_of(answered(server), 20) <= per_call * 3  # the parent's and the child's calls
    again = outer.run(resume="p1", budget=Budget(max_cost_usd=1.0))
    assert again.status == "succeeded"
    assert len(answered(server)) == 7  # nothing answered twice


def test_replayed_answers_cost_nothing_and_hash_as_without_a_budget(server):
    server.default = ServerReply(text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS)
    llm = priced(server)
    plain = parallel_crew(llm, 3)
    recorded = plain.run(run_id="r1")
    server.reset()
    tiny = plain.replace(budget=Budget(max_cost_usd=0.0, max_tokens=0))

    replayed = tiny.run(replay="r1", replay_strict=True)

    assert recorded.status == replayed.status == "succeeded"
    assert not server.calls
    assert replayed.usage.total.cost_usd == 0


# The crew file and the command line

PARALLEL = """\
name: parallel
budget: {max_cost_usd: 0.001}
max_concurrency: 3
agents:
  w: {role: Writer}
tasks:
  a: {description: Write part a, agent: w}
  b: {description: Write part b, agent: w}
  c: {description: Write part c, agent: w}
"""


def test_the_crew_files_budget_key_builds_a_budget(tmp_path):
    from crew.spec import load_crew_yaml

    path = tmp_path / "crew.yaml"
    path.write_text(PARALLEL, encoding="utf-8")
    assert load_crew_yaml(path).crew.budget == Budget(max_cost_usd=0.001)
    path.write_text(PARALLEL.replace("max_cost_usd", "max_cost"), encoding="utf-8")
    with pytest.raises(ConfigError, match="max_cost"):
        load_crew_yaml(path)


def test_the_command_line_stops_at_the_budget_shows_it_and_resumes_with_max_cost(tmp_path, server):
    from tests.test_cli import crew as run_crew

    (tmp_path / "crew.yaml").write_text(PARALLEL, encoding="utf-8")
    server.default = ServerReply(
        text="done", prompt_tokens=20, completion_tokens=ANSWER_TOKENS, latency_ms=300
    )
    env = {"CREW_MODEL": MODEL, "CREW_API_BASE": server.url, "OPENAI_API_KEY": "sk-test"}

    done = run_crew("run", ".", "--json", cwd=tmp_path, **env)

    assert done.returncode == 3, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "budget_exceeded"
    assert "--max-cost" in done.stderr and "Traceback" not in done.stderr
    first = len(answered(server))
    assert 0 < first < 3
    shown = run_crew("show", result["run_id"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "budget_exceeded" in shown.stdout
    assert "budget: spent $" in shown.stdout and "of $0.001" in shown.stdout

    again = run_crew("resume", result["run_id"], "--max-cost", "1", "--json", cwd=tmp_path, **env)

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "succeeded"
    assert len(answered(server)) == 3  # the tasks done before were not called again
    assert "of $1" in run_crew("show", result["run_id"], cwd=tmp_path).stdout


def test_a_negative_max_cost_is_a_usage_error(tmp_path, server):
    from tests.test_cli import assert_usage_error
    from tests.test_cli import crew as run_crew

    (tmp_path / "crew.yaml").write_text(PARALLEL, encoding="utf-8")
    done = run_crew("run", ".", "--max-cost", "-1", cwd=tmp_path, server=server)
    assert_usage_error(done, "max_cost_usd")
    assert not server.calls


ESTIMATED = """\
name: est
agents:
  w: {role: Writer, llm: openai/gpt-4o-mini, board_tools: false}
  r: {role: Reviewer, board_tools: false}
tasks:
  a: {description: Write part a, agent: w}
  b: {description: Review part a, agent: r, depends_on: [a], retries: 0}
"""


def test_plan_estimate_prints_each_tasks_worst_case_the_total_and_what_is_unpriced(tmp_path):
    from tests.test_cli import crew as run_crew

    (tmp_path / "crew.yaml").write_text(ESTIMATED, encoding="utf-8")

    done = run_crew("plan", ".", "--estimate", cwd=tmp_path, CREW_MODEL="openai/local-thing")

    assert done.returncode == 0, done.stderr
    lines = {
        line.split()[1]: line for line in done.stdout.splitlines() if line[:3] in ("│ a", "│ b")
    }
    # a: gpt-4o-mini, 1024 answer tokens, 3 attempts (2 retries), one call each (no tools)
    assert "openai/gpt-4o-mini" in lines["a"] and "│ 3 " in lines["a"]
    one_a = int(lines["a"].split("│")[3].split()[0].replace(",", ""))
    assert one_a > 1024
    # b reads a's output: as many tokens as a's model may answer, counted in its prompt
    one_b = int(lines["b"].split("│")[3].split()[0].replace(",", ""))
    assert one_b > 1024 + 1024 and "│ 1 " in lines["b"]
    a_cost = cost_usd(MODEL, prompt_tokens=one_a - 1024, completion_tokens=1024) * 3
    assert f"Worst case in total: ${a_cost:.4f}" in done.stdout
    assert "No price known for openai/local-thing" in done.stdout
