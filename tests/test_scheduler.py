"""The scheduler: dependency order, no barriers, concurrency bound, priorities, failure policies,
retries, timeouts and cancellation. Parallelism is proven with gates and call logs, not timings."""

from __future__ import annotations

import asyncio

import pytest

from crew import Agent, Crew, Task, events
from crew.errors import BadRequestError, ConfigError, RateLimitError, TaskTimeoutError
from crew.scheduler import Scheduler
from crew.testing import Call, Reply, ScriptedLLM
from crew.testserver import ServerReply

WORKER = Agent(role="Worker", goal="Do the task")


def tasks_of(spec: dict[str, list[str]], **kwargs: object) -> list[Task]:
    """Tasks from {id: [dependency ids]}, all done by WORKER."""
    return [
        Task(id=t, description=f"Do {t}", agent=WORKER, depends_on=deps, **kwargs)  # type: ignore[arg-type]
        for t, deps in spec.items()
    ]


def intervals(server_calls: list) -> dict[str, tuple[float, float]]:
    return {c.key: (c.started, c.finished) for c in server_calls}


def test_dependencies_run_in_order_and_independent_tasks_overlap_over_http(server, fake_llm):
    server.script("*", ServerReply(text="done", latency_ms=150))
    spec = {"root": [], "a": ["root"], "b": ["root"], "c": ["root"], "join": ["a", "b", "c"]}
    result = Crew(tasks_of(spec), llm=fake_llm).run()

    assert result.status == "succeeded"
    span = intervals(server.calls)
    assert len(server.calls) == 5
    for branch in "abc":
        assert span[branch][0] >= span["root"][1], f"{branch} started before root finished"
        assert span["join"][0] >= span[branch][1], f"join started before {branch} finished"
    # a, b and c were in flight at the same instant: the latest start precedes the earliest end.
    assert max(span[t][0] for t in "abc") < min(span[t][1] for t in "abc")


def test_a_fast_branch_never_waits_for_a_slow_sibling_over_http(server, fake_llm):
    # Level 0 holds 'slow' and 'fast'; 'next' (level 1) depends only on 'fast'. With a level
    # barrier 'next' would wait for 'slow'; dependency-driven, it runs while 'slow' is in flight.
    server.script("slow", ServerReply(text="slow", latency_ms=600))
    server.script("*", ServerReply(text="quick", latency_ms=20))
    spec = {"slow": [], "fast": [], "next": ["fast"], "last": ["next"], "end": ["slow", "last"]}
    result = Crew(tasks_of(spec), llm=fake_llm).run()

    assert result.status == "succeeded"
    span = intervals(server.calls)
    assert span["next"][0] >= span["fast"][1]
    assert span["last"][1] < span["slow"][1], "the fast chain waited for its slow sibling"
    assert span["end"][0] >= max(span["slow"][1], span["last"][1])


def test_max_concurrency_bounds_calls_in_flight_over_http(server, fake_llm):
    server.script("*", ServerReply(text="ok", latency_ms=60))
    spec = {f"t{i}": [] for i in range(7)}
    Crew(tasks_of(spec), llm=fake_llm, max_concurrency=3).run()

    edges = sorted(
        [(c.started, 1) for c in server.calls] + [(c.finished, -1) for c in server.calls]
    )
    in_flight = peak = 0
    for _, delta in edges:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak == 3


def gated_llm(release: asyncio.Event, gated: set[str], log: list[str]) -> ScriptedLLM:
    async def reply(call: Call) -> str:
        log.append(f"start {call.task_id}")
        if call.task_id in gated:
            await release.wait()
        log.append(f"end {call.task_id}")
        return f"out {call.task_id}"

    return ScriptedLLM(reply)


def test_one_agent_runs_many_tasks_at_once():
    async def main() -> ScriptedLLM:
        all_started = asyncio.Event()
        started: set[str] = set()

        async def reply(call: Call) -> str:
            started.add(call.task_id)
            if len(started) == 4:
                all_started.set()
            await asyncio.wait_for(all_started.wait(), timeout=5)  # only passes if all 4 overlap
            return "ok"

        llm = ScriptedLLM(reply)
        result = await Crew(tasks_of({f"t{i}": [] for i in range(4)}), llm=llm).arun()
        assert result.status == "succeeded"
        return llm

    assert asyncio.run(main()).max_in_flight == 4


def test_ready_tasks_start_in_critical_path_order():
    worker = WORKER
    tasks = [
        Task(id="short", description="s", agent=worker, estimate_s=1),
        Task(id="head", description="h", agent=worker, estimate_s=1),
        Task(id="tail", description="t", agent=worker, depends_on=["head"], estimate_s=5),
    ]
    llm = ScriptedLLM()
    Crew(tasks, llm=llm, max_concurrency=1).run()
    # head heads the longest path (6), then tail (5) is ready and outranks short (1).
    assert [c.task_id for c in llm.calls] == ["head", "tail", "short"]


def test_tasks_released_at_once_start_in_critical_path_order_with_slots_to_spare():
    tasks = [
        Task(id="root", description="r", agent=WORKER, estimate_s=1),
        Task(id="short", description="s", agent=WORKER, depends_on=["root"], estimate_s=1),
        Task(id="long", description="l", agent=WORKER, depends_on=["root"], estimate_s=9),
    ]
    llm = ScriptedLLM()
    Crew(tasks, llm=llm, max_concurrency=8).run()
    # Both start at once: the one on the longer path sends its call first.
    assert [c.task_id for c in llm.calls] == ["root", "long", "short"]


def test_slots_are_granted_one_per_turn_of_the_loop_most_urgent_first():
    """Tasks released together get their slots one turn apart, so each one's request goes out
    before the next has done its own preparations (aiohttp writes a request in a task of its
    own, which waited for every task released with it)."""
    from crew.slots import Slots

    async def main() -> list[list[str]]:
        slots = Slots(3)
        tickets = {name: slots.reserve(rank) for rank, name in [(5, "first"), (9, "c"), (1, "a")]}
        tickets["b"] = slots.reserve(2)  # no slot left for the least urgent (c) once b has one
        granted = []
        for _ in range(4):
            granted.append(sorted(name for name, ticket in tickets.items() if ticket.done()))
            await asyncio.sleep(0)
        slots.release(tickets["first"])  # given back after a while: c has it at once
        granted.append(sorted(name for name, ticket in tickets.items() if ticket.done()))
        return granted

    assert asyncio.run(main()) == [
        ["first"],  # the first is granted at once: a chain's next task never waits for a turn
        ["a", "first"],
        ["a", "b", "first"],
        ["a", "b", "first"],  # all three slots held
        ["a", "b", "c", "first"],
    ]


def test_tasks_that_end_together_are_handled_critical_path_first():
    from crew.results import TaskOutput

    spec = {"x": [], "y": [], "x2": ["x"], "y2": ["y"]}
    estimates = {"x": 1, "y": 1, "x2": 1, "y2": 9}
    tasks = [
        Task(id=t, description=t, agent=WORKER, depends_on=d, estimate_s=estimates[t])
        for t, d in spec.items()
    ]
    plan = Crew(tasks, llm=ScriptedLLM()).plan()
    started: list[str] = []
    x_waits, both_wait = asyncio.Event(), asyncio.Event()

    async def attempt(task_id, state):
        started.append(task_id)
        return TaskOutput(task_id=task_id, agent="Worker", text=task_id)

    async def on_output(result, index):  # x and y end in one turn of the loop, x first
        if result.task_id == "x":
            x_waits.set()
        elif result.task_id == "y":
            await x_waits.wait()
            asyncio.get_running_loop().call_soon(both_wait.set)
        else:
            return
        await both_wait.wait()

    scheduler = Scheduler(
        plan, attempt, on_output, events.Emitter(events.EventBus(), "r", lambda: 0.0), lambda: 0.0
    )
    asyncio.run(scheduler.run())
    assert started[2:] == ["y2", "x2"]  # y2, on the longer path, starts first


def test_fail_fast_cancels_running_tasks_and_skips_the_rest():
    async def main():
        async def reply(call: Call) -> str | BaseException:
            if call.task_id == "bad":
                await asyncio.sleep(0.01)
                return BadRequestError("broken prompt", model="scripted")
            await asyncio.sleep(10)  # 'slow' is still running when 'bad' fails
            return "never"

        spec = {"bad": [], "slow": [], "after_bad": ["bad"], "after_slow": ["slow"]}
        seen: list[events.Event] = []
        result = await Crew(tasks_of(spec), llm=ScriptedLLM(reply)).arun(on_event=seen.append)
        return result, seen

    result, seen = asyncio.run(main())
    status = {t: r.status for t, r in result.tasks.items()}
    assert status == {
        "bad": "failed",
        "slow": "cancelled",
        "after_bad": "skipped",
        "after_slow": "skipped",
    }
    assert result.status == "failed"
    assert "broken prompt" in result.tasks["bad"].error
    assert result.tasks["bad"].error_type == "BadRequestError"
    assert result.tasks["after_bad"].reason == "depends on 'bad', which failed"
    assert "stopped after task 'bad' failed" in result.tasks["slow"].reason
    assert any(isinstance(e, events.TaskCancelled) and e.task_id == "slow" for e in seen)
    assert set(result.board.keys()) == set()


def test_continue_runs_independent_branches_and_says_why_dependants_were_skipped():
    llm = ScriptedLLM({"bad": BadRequestError("no", model="m")})
    spec = {
        "bad": [],
        "good": [],
        "child": ["bad"],
        "grandchild": ["child"],
        "after_good": ["good"],
        "mixed": ["good", "child"],
    }
    result = Crew(tasks_of(spec), llm=llm, on_failure="continue").run()

    status = {t: r.status for t, r in result.tasks.items()}
    assert status == {
        "bad": "failed",
        "good": "succeeded",
        "child": "skipped",
        "grandchild": "skipped",
        "after_good": "succeeded",
        "mixed": "skipped",
    }
    assert result.tasks["child"].reason == "depends on 'bad', which failed"
    assert result.tasks["grandchild"].reason == (
        "depends on 'child', which was skipped because 'bad' failed"
    )
    assert {c.task_id for c in llm.calls} == {"bad", "good", "after_good"}
    assert set(result.outputs) == {"good", "after_good"}
    with pytest.raises(Exception, match=r"'bad': .*no"):
        result.raise_for_status()


def test_task_timeout_fails_the_task_with_a_clear_error():
    llm = ScriptedLLM({"t": Reply(text="late", delay_s=5)})
    tasks = [Task(id="t", description="d", agent=WORKER, timeout_s=0.05)]
    result = Crew(tasks, llm=llm).run()
    assert result.tasks["t"].status == "failed"
    assert isinstance(result.tasks["t"].exception, TaskTimeoutError)
    assert "timeout_s=0.05" in result.tasks["t"].error


def test_task_retries_after_a_timeout_and_records_every_attempt():
    llm = ScriptedLLM({"t": [Reply(text="late", delay_s=5), "on time"]})
    tasks = [Task(id="t", description="d", agent=WORKER, timeout_s=0.2, retries=2)]
    seen: list[events.Event] = []
    result = asyncio.run(Crew(tasks, llm=llm).arun(on_event=seen.append))

    assert result.tasks["t"].status == "succeeded"
    assert result.tasks["t"].attempts == 2
    assert result.outputs["t"].text == "on time"
    retrying = [e for e in seen if isinstance(e, events.TaskRetrying)]
    assert len(retrying) == 1 and retrying[0].attempt == 1
    assert [e.attempt for e in seen if isinstance(e, events.TaskStarted)] == [1, 2]


def test_non_retryable_errors_are_not_retried_at_task_level():
    llm = ScriptedLLM({"t": BadRequestError("bad", model="m")})
    result = Crew([Task(id="t", description="d", agent=WORKER, retries=3)], llm=llm).run()
    assert result.tasks["t"].status == "failed"
    assert len(llm.calls) == 1


def test_a_model_error_the_model_layer_retried_is_not_retried_again_by_the_task():
    spent = RateLimitError("slow down", model="m")
    spent.retries_spent = True  # what LLM.complete marks once its own policy is spent
    llm = ScriptedLLM({"t": spent})
    result = Crew([Task(id="t", description="d", agent=WORKER, retries=3)], llm=llm).run()
    assert result.tasks["t"].status == "failed"
    assert len(llm.calls) == 1


def test_cancelling_a_run_keeps_finished_outputs_and_leaves_nothing_half_written():
    async def main():
        release = asyncio.Event()
        log: list[str] = []
        llm = gated_llm(release, {"b"}, log)
        spec = {"a": [], "b": [], "c": ["b"]}
        seen: list[events.Event] = []
        run = asyncio.create_task(Crew(tasks_of(spec), llm=llm).arun(on_event=seen.append))
        while "end a" not in log or "start b" not in log:
            await asyncio.sleep(0.001)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return seen

    seen = asyncio.run(main())
    finished = [e for e in seen if isinstance(e, events.RunFinished)]
    assert len(finished) == 1
    result = finished[0].result
    assert result.status == "cancelled"
    assert {t: r.status for t, r in result.tasks.items()} == {
        "a": "succeeded",
        "b": "cancelled",
        "c": "pending",
    }
    assert result.outputs["a"].text == "out a"
    assert result.board.keys() == ["a"]


def test_usage_is_summed_by_task_and_by_agent():
    writer = Agent(role="Writer")
    tasks = [
        Task(id="a", description="a", agent=WORKER),
        Task(id="b", description="b", agent=writer),
        Task(id="c", description="c", agent=WORKER, depends_on=["a"]),
    ]
    result = Crew(tasks, llm=ScriptedLLM()).run()
    usage = result.usage
    assert usage.total.calls == 3
    assert usage.by_agent["Worker"].calls == 2 and usage.by_agent["Writer"].calls == 1
    assert usage.total.prompt_tokens == sum(u.prompt_tokens for u in usage.by_task.values()) > 0


def test_run_works_when_called_from_a_running_event_loop():
    async def main():
        return Crew(tasks_of({"a": []}), llm=ScriptedLLM({"a": "hi"})).run()

    assert asyncio.run(main()).outputs["a"].text == "hi"


def test_astream_yields_the_events_of_the_run_in_order():
    async def main():
        crew = Crew(tasks_of({"a": [], "b": ["a"]}), llm=ScriptedLLM())
        return [event async for event in crew.astream()]

    seen = asyncio.run(main())
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    order = [(type(e).__name__, getattr(e, "task_id", getattr(e, "key", ""))) for e in seen]
    assert order.index(("TaskFinished", "a")) < order.index(("TaskStarted", "b"))
    assert ("BoardPosted", "b") in order
    assert len({e.run_id for e in seen}) == 1


def test_astream_raises_setup_errors_before_any_event():
    async def main():
        crew = Crew([Task(id="a", description="about {topic}", agent=WORKER)], llm=ScriptedLLM())
        return [event async for event in crew.astream()]

    with pytest.raises(ConfigError, match="Missing inputs: 'topic'"):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurrency": 0}, "max_concurrency must be a whole number >= 1"),
        ({"on_failure": "explode"}, "on_failure must be 'fail_fast' or 'continue'"),
    ],
)
def test_bad_crew_settings_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Crew(tasks_of({"a": []}), llm=ScriptedLLM(), **kwargs)


def test_two_runs_in_a_row_reuse_nothing_stale_over_http(server, fake_llm):
    server.script("*", ServerReply(text="ok"))
    crew = Crew(tasks_of({"a": [], "b": ["a"]}), llm=fake_llm)
    first, second = crew.run(), crew.run()
    assert first.status == second.status == "succeeded"
    assert first.run_id != second.run_id
    assert len(server.calls) == 4


def test_a_streaming_crew_emits_token_deltas_with_the_scripted_model():
    crew = Crew(
        tasks_of({"a": []}), llm=ScriptedLLM({"a": "a streamed answer, in pieces"}), stream=True
    )
    seen: list[events.Event] = []
    result = asyncio.run(crew.arun(on_event=seen.append))
    deltas = [e for e in seen if isinstance(e, events.TokenDelta)]
    assert len(deltas) > 1 and {e.task_id for e in deltas} == {"a"}
    assert "".join(e.text for e in deltas) == result.outputs["a"].text


def test_tasks_already_finished_are_never_run_again_and_release_their_dependants():
    from crew.results import TaskOutput, TaskResult

    llm = ScriptedLLM()
    crew = Crew(tasks_of({"a": [], "b": ["a"], "c": ["b"], "d": []}), llm=llm)
    plan = crew.plan()
    done = TaskResult(
        task_id="a",
        status="succeeded",
        output=TaskOutput(task_id="a", agent="Worker", text="from before"),
    )
    outputs: list[str] = []

    async def on_output(result, index):
        outputs.append(result.task_id)

    async def attempt(task_id, state):
        await llm.complete(
            __import__("crew.llm", fromlist=["ChatRequest"]).ChatRequest(
                messages=[], task_id=task_id
            )
        )
        return TaskOutput(task_id=task_id, agent="Worker", text=task_id)

    scheduler = Scheduler(
        plan,
        attempt,
        on_output,
        events.Emitter(events.EventBus(), "r", lambda: 0.0),
        lambda: 0.0,
        results={"a": done},
    )
    results = asyncio.run(scheduler.run())
    assert sorted(c.task_id for c in llm.calls) == ["b", "c", "d"]
    assert results["a"].output.text == "from before"
    assert all(r.status == "succeeded" for r in results.values())
