"""Control flow beyond a static graph: conditions, join policies, routers, loops, maps and
subcrews; each checked by the planner, visible in events, and resumable mid-way."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import textwrap

import pytest
from pydantic import BaseModel

from crew import Agent, Crew, Task, events
from crew.errors import BadRequestError, ConfigError, PlanError, RunFailedError
from crew.store import Store
from crew.store.memory import MemoryStore
from crew.task import loop
from crew.testing import Call, Reply, ScriptedLLM

WORKER = Agent(role="Worker", goal="Do the task")


class Triage(BaseModel):
    severity: str
    summary: str = ""


class Ideas(BaseModel):
    items: list[str]


class Verdict(BaseModel):
    approved: bool
    notes: str = ""


def task(task_id: str, *deps: str, **kwargs: object) -> Task:
    return Task(id=task_id, description=f"Do {task_id}", agent=WORKER, depends_on=deps, **kwargs)  # type: ignore[arg-type]


def run(crew: Crew, **kwargs: object) -> tuple[object, list[events.Event]]:
    seen: list[events.Event] = []
    result = asyncio.run(crew.arun(on_event=seen.append, **kwargs))  # type: ignore[arg-type]
    return result, seen


# Conditions


def test_a_condition_on_the_board_runs_or_skips_a_task_with_the_reason():
    llm = ScriptedLLM({"triage": {"severity": "low", "summary": "typo"}})
    tasks = [
        task("triage", output_model=Triage),
        task("page_oncall", when="triage.data.severity == 'high'"),
        task("log_it", "triage", when=lambda board: board["triage"].data.severity == "low"),
        task("after_page", "page_oncall"),
    ]
    result, seen = run(Crew(tasks, llm=llm))

    assert result.status == "succeeded"  # a skipped branch is not a failure
    statuses = {t: r.status for t, r in result.tasks.items()}
    assert statuses == {
        "triage": "succeeded",
        "page_oncall": "skipped",
        "log_it": "succeeded",
        "after_page": "skipped",
    }
    assert "triage.data.severity == 'high'" in result.tasks["page_oncall"].reason
    assert "page_oncall" in result.tasks["after_page"].reason
    assert sorted(c.task_id for c in llm.calls) == ["log_it", "triage"]
    skipped = [e.task_id for e in seen if isinstance(e, events.TaskSkipped)]
    assert skipped == ["page_oncall", "after_page"]


def test_a_task_a_condition_reads_becomes_a_dependency():
    llm = ScriptedLLM({"triage": Reply(data={"severity": "high"}, delay_s=0.05)})
    tasks = [
        task("page", when="triage.data.severity == 'high'"),
        task("triage", output_model=Triage),
    ]
    crew = Crew(tasks, llm=llm)

    assert crew.plan().dependencies("page") == ["triage"]
    result = crew.run()
    assert result.tasks["page"].status == "succeeded"
    assert [c.task_id for c in llm.calls] == ["triage", "page"]


# Join policies


def test_join_any_starts_on_the_first_success_while_others_still_run():
    order: list[str] = []

    async def script(call: Call) -> str:
        await asyncio.sleep({"slow": 0.3, "fast": 0.01}.get(call.task_id, 0))
        order.append(call.task_id)
        return call.task_id

    tasks = [task("slow"), task("fast"), task("first", "slow", "fast", join="any")]
    result = Crew(tasks, llm=ScriptedLLM(script)).run()

    assert result.status == "succeeded"
    assert order == ["fast", "first", "slow"]


def test_quorum_starts_after_n_successes_and_skips_when_it_cannot_be_met():
    llm = ScriptedLLM(
        {"b": BadRequestError("no", model="m"), "c": BadRequestError("no", model="m")}
    )
    tasks = [task("a"), task("b"), task("c"), task("two", "a", "b", "c", join="quorum(2)")]
    result = Crew(tasks, llm=llm, on_failure="continue").run()

    assert result.tasks["two"].status == "skipped"
    assert "fewer than 2" in result.tasks["two"].reason

    ok = ScriptedLLM({"c": BadRequestError("no", model="m")})
    result = Crew(tasks, llm=ok, on_failure="continue").run()
    assert result.tasks["two"].status == "succeeded"


def test_best_effort_goes_on_without_a_failed_dependency_and_says_what_is_missing():
    llm = ScriptedLLM({"flaky": BadRequestError("provider refused", model="m")})
    tasks = [task("solid"), task("flaky"), task("report", "solid", "flaky", join="best_effort")]
    result = Crew(tasks, llm=llm).run()  # fail_fast, but the failure is tolerated

    assert result.tasks["flaky"].status == "failed"
    assert result.tasks["report"].status == "succeeded"
    assert result.status == "succeeded"
    prompt = llm.calls_for("report")[0].prompt
    assert "'flaky' did not succeed" in prompt and "### solid" in prompt


FAIL = BadRequestError("no", model="m")


@pytest.mark.parametrize("on_failure", ["fail_fast", "continue"])
@pytest.mark.parametrize(
    ("join", "failing", "ran", "status"),
    [
        ("all", {"b"}, False, "failed"),
        ("any", {"a"}, True, "succeeded"),
        ("any", {"a", "b", "c"}, False, "failed"),
        ("quorum(2)", {"a"}, True, "succeeded"),
        ("quorum(2)", {"a", "b"}, False, "failed"),
        ("best_effort", {"a", "c"}, True, "succeeded"),
        ("best_effort", {"a", "b", "c"}, False, "failed"),
    ],
)
def test_a_failure_is_tolerated_only_when_its_dependant_went_on_without_it(
    join: str, failing: set[str], ran: bool, status: str, on_failure: str
):
    llm = ScriptedLLM({t: FAIL for t in failing})
    tasks = [task("a"), task("b"), task("c"), task("join", "a", "b", "c", join=join)]
    result = Crew(tasks, llm=llm, on_failure=on_failure).run()

    assert result.tasks["join"].status == ("succeeded" if ran else "skipped")
    assert result.status == status
    if status == "failed":
        with pytest.raises(RunFailedError, match=r"'a'|'b'"):
            result.raise_for_status()
    else:
        result.raise_for_status()


def test_an_unmet_quorum_stops_a_fail_fast_run_and_fails_it():
    async def script(call: Call) -> str:
        if call.task_id in ("a", "b"):
            raise FAIL
        await asyncio.sleep(0.5 if call.task_id == "slow" else 0)
        return call.task_id

    tasks = [task("a"), task("b"), task("c"), task("two", "a", "b", "c", join="quorum(2)")]
    result = Crew([*tasks, task("slow")], llm=ScriptedLLM(script)).run()

    assert result.status == "failed"
    assert result.tasks["two"].status == "skipped"
    assert "fewer than 2" in result.tasks["two"].reason
    assert result.tasks["slow"].status in ("cancelled", "skipped")  # the run stopped


def test_a_failure_is_tolerated_when_its_dependant_is_skipped_by_its_condition_or_a_router():
    llm = ScriptedLLM({"a": FAIL, "ok": "fine"})
    when = [task("a"), task("ok"), task("d", "a", "ok", join="any", when="ok.text == 'other'")]
    result = Crew(when, llm=llm).run()
    assert (result.tasks["d"].status, result.status) == ("skipped", "succeeded")

    llm = ScriptedLLM({"a": FAIL, "r": {"route": "right"}})
    routed = [
        task("r", routes={"left": ["x"], "right": ["y"]}),
        task("a"),
        task("x", "r", "a", join="any"),
        task("y", "r"),
    ]
    result = Crew(routed, llm=llm).run()
    assert result.tasks["x"].status == "skipped" and result.tasks["y"].status == "succeeded"
    assert result.status == "succeeded"


def test_a_failure_a_loop_body_went_on_without_does_not_fail_the_run():
    body = [task("x"), task("a"), task("b", "x", "a", join="any")]
    result = Crew([loop("l", body, max_rounds=1)], llm=ScriptedLLM({"a": FAIL})).run()
    assert result.tasks["a"].status == "failed" and result.tasks["b"].status == "succeeded"
    assert result.status == "succeeded"


def test_a_failure_whose_dependant_waits_for_a_review_leaves_the_run_waiting():
    tasks = [task("r", human_review=True), task("f"), task("d", "r", "f", join="any")]
    result = Crew(tasks, llm=ScriptedLLM({"f": FAIL})).run()
    assert result.tasks["d"].status == "pending"
    assert result.status == "waiting"  # d may still go on once 'r' is approved


def test_a_failure_without_dependants_fails_the_run():
    result = Crew([task("a"), task("b")], llm=ScriptedLLM({"b": FAIL}), on_failure="continue").run()
    assert result.status == "failed"


def test_join_all_still_stops_a_fail_fast_run():
    llm = ScriptedLLM({"b": BadRequestError("no", model="m")})
    result = Crew([task("a"), task("b"), task("c", "a", "b")], llm=llm).run()
    assert result.status == "failed"
    assert result.tasks["c"].status == "skipped"


# Routers


def router_crew(llm: ScriptedLLM) -> Crew:
    return Crew(
        [
            task("triage", routes={"bug": ["fix"], "feature": ["spec", "design"]}, retries=1),
            task("fix", "triage"),
            task("spec", "triage"),
            task("design", "spec"),
            task("reply", "fix", "design", join="any"),
        ],
        llm=llm,
    )


def test_a_router_runs_the_chosen_route_and_skips_the_others():
    llm = ScriptedLLM({"triage": {"route": "bug", "reason": "a crash"}})
    result, seen = run(router_crew(llm))

    assert result.status == "succeeded"
    assert {t: r.status for t, r in result.tasks.items()} == {
        "triage": "succeeded",
        "fix": "succeeded",
        "spec": "skipped",
        "design": "skipped",
        "reply": "succeeded",
    }
    assert result.tasks["spec"].reason == "router 'triage' chose 'bug'"
    chosen = next(e for e in seen if isinstance(e, events.RouteChosen))
    assert (chosen.route, chosen.reason, set(chosen.skipped)) == (
        "bug",
        "a crash",
        {"spec", "design"},
    )
    schema = llm.calls_for("triage")[0].output_schema
    assert schema["properties"]["route"]["enum"] == ["bug", "feature"]


def test_an_invalid_route_is_asked_again_then_fails_clearly():
    llm = ScriptedLLM({"triage": [{"route": "nonsense"}, {"route": "feature"}]})
    result = router_crew(llm).run()
    assert result.tasks["triage"].output.data.route == "feature"
    assert result.tasks["fix"].status == "skipped"

    stubborn = ScriptedLLM({"triage": {"route": "nonsense"}})
    result = router_crew(stubborn).run()
    assert result.status == "failed"
    assert "route" in result.tasks["triage"].error and "'bug'" in result.tasks["triage"].error


def test_a_router_with_an_output_model_answers_its_fields_and_a_route():
    routes = {"bug": ["fix"], "feature": ["spec"]}
    triage = task("triage", routes=routes, output_model=Triage)
    llm = ScriptedLLM({"triage": {"severity": "high", "route": "bug"}})
    crew = Crew([triage, task("fix", when="triage.data.severity == 'high'"), task("spec")], llm=llm)

    result = crew.run()

    data = result.outputs["triage"].data
    assert isinstance(data, Triage) and (data.severity, data.route) == ("high", "bug")
    assert {t: r.status for t, r in result.tasks.items()} == {
        "triage": "succeeded",
        "fix": "succeeded",
        "spec": "skipped",
    }
    schema = llm.calls_for("triage")[0].output_schema
    assert set(schema["required"]) >= {"severity", "route"}


def test_a_replaced_router_answers_with_its_new_routes_and_keeps_its_model():
    router = task("triage", routes={"bug": ["fix"]}, output_model=Triage)
    moved = dataclasses.replace(router, routes={"bug": ["fix"], "idea": ["note"]})

    schema = moved.output_model.model_json_schema()
    assert schema["properties"]["route"]["enum"] == ["bug", "idea"]
    assert "severity" in schema["properties"] and issubclass(moved.output_model, Triage)
    assert dataclasses.replace(moved, retries=1).output_model is moved.output_model


def test_a_routers_output_model_may_not_have_a_route_field_of_its_own():
    class Routed(BaseModel):
        route: str

    with pytest.raises(ConfigError, match="adds the fields 'route' and 'reason'"):
        task("t", routes={"bug": ["fix"]}, output_model=Routed)


# Loops


def refine_crew(llm: ScriptedLLM, store: Store | None = None, max_rounds: int = 4) -> Crew:
    body = [
        task("draft"),
        task("critique", "draft", output_model=Verdict),
    ]
    return Crew(
        [
            task("brief"),
            loop(
                "refine",
                body,
                until="critique.data.approved",
                max_rounds=max_rounds,
                depends_on=["brief"],
            ),
            task("publish", "draft"),
        ],
        llm=llm,
        store=store,
    )


def test_a_loop_repeats_until_its_condition_holds_keeping_every_round_on_the_board():
    llm = ScriptedLLM(
        {
            "draft": ["draft one", "draft two"],
            "critique": [{"approved": False, "notes": "too long"}, {"approved": True}],
        }
    )
    result, seen = run(refine_crew(llm))

    assert result.status == "succeeded"
    assert [c.task_id for c in llm.calls] == [
        "brief",
        "draft",
        "critique",
        "draft",
        "critique",
        "publish",
    ]
    assert [e.text for e in result.board.history("draft")] == ["draft one", "draft two"]
    second_draft = llm.calls_for("draft")[1].prompt
    assert "too long" in second_draft and "draft one" in second_draft  # it sees the last round
    assert "draft two" in llm.calls_for("publish")[0].prompt
    rounds = [e.round for e in seen if isinstance(e, events.RoundStarted)]
    finished = next(e for e in seen if isinstance(e, events.LoopFinished))
    assert rounds == [1, 2] and (finished.rounds, finished.stopped) == (2, "until")
    assert result.outputs["refine"].text == '{"approved": true}'


def test_a_loop_out_of_rounds_keeps_its_outputs_and_warns_why():
    llm = ScriptedLLM({"critique": {"approved": False}, "draft": ["one", "two", "three"]})
    result, seen = run(refine_crew(llm, max_rounds=3))

    assert result.status == "succeeded"  # max_rounds is a documented end: dependants go on
    assert len(llm.calls_for("draft")) == 3
    assert "three" in llm.calls_for("publish")[0].prompt
    finished = next(e for e in seen if isinstance(e, events.LoopFinished))
    assert (finished.rounds, finished.stopped) == (3, "max_rounds")
    why = (
        "loop 'refine' stopped after 3 rounds without meeting its condition"
        " `critique.data.approved`"
    )
    loop_result = result.tasks["refine"]
    assert (loop_result.status, loop_result.reason) == ("succeeded", why)
    assert loop_result.output is not None and loop_result.output.data.approved is False
    assert result.warnings == [why] and result.to_dict()["warnings"] == [why]
    exhausted = [e for e in seen if isinstance(e, events.LoopExhausted)]
    assert [(e.task_id, e.rounds, e.reason) for e in exhausted] == [("refine", 3, why)]
    assert seen.index(exhausted[0]) < seen.index(finished)


def test_a_loop_whose_condition_holds_or_that_has_none_gives_no_warning():
    llm = ScriptedLLM({"critique": [{"approved": False}, {"approved": True}]})
    result, seen = run(refine_crew(llm, max_rounds=2))
    assert result.tasks["refine"].reason is None and result.warnings == []

    result, seen = run(Crew([loop("twice", [task("a")], max_rounds=2)], llm=ScriptedLLM()))
    assert result.tasks["twice"].reason is None and result.warnings == []
    assert not any(isinstance(e, events.LoopExhausted) for e in seen)


def test_a_dependant_can_refuse_the_output_of_a_loop_out_of_rounds():
    crew = refine_crew(ScriptedLLM({"critique": {"approved": False}}), max_rounds=1)
    strict = crew.replace(
        tasks=[*crew.tasks[:-1], task("publish", "draft", when="critique.data.approved")]
    )
    result = strict.run()
    assert result.tasks["publish"].status == "skipped"
    assert result.warnings == [
        "loop 'refine' stopped after 1 round without meeting its condition `critique.data.approved`"
    ]


def test_a_loop_resumes_in_the_round_where_it_stopped(durable_store: Store):
    store = durable_store
    broken = ScriptedLLM({"critique": [{"approved": False}, BadRequestError("down", model="m")]})
    first = refine_crew(broken, store).run()
    assert first.status == "failed"
    assert [c.task_id for c in broken.calls] == ["brief", "draft", "critique", "draft", "critique"]

    fixed = ScriptedLLM({"critique": {"approved": True}})
    second = refine_crew(fixed, store).run(resume=first.run_id)
    assert second.status == "succeeded"
    assert [c.task_id for c in fixed.calls] == ["critique", "publish"]  # round 2's draft kept
    assert [e.text for e in second.board.history("draft")] == ["ok", "ok"]


# Maps


def map_crew(llm: ScriptedLLM, store: Store | None = None, **kwargs: object) -> Crew:
    return Crew(
        [
            task("ideas", output_model=Ideas),
            Task(
                id="expand",
                description="Expand the idea: {item} (number {item_index})",
                agent=WORKER,
                for_each="ideas.data.items",
                retries=0,
            ),
            task("pick", "expand"),
        ],
        llm=llm,
        store=store,
        **kwargs,
    )


def expand_each(call: Call) -> object:
    if call.task_id == "ideas":
        return {"items": ["tea", "coffee", "cocoa"]}
    if call.task_id == "expand":
        idea = re.search(r"Expand the idea: (\w+)", call.prompt).group(1)  # type: ignore[union-attr]
        return Reply(text=f"about {idea}", delay_s=0.05)
    return "picked"


def test_a_map_runs_one_instance_per_item_in_parallel_and_keeps_item_order():
    llm = ScriptedLLM(expand_each)
    result, seen = run(map_crew(llm))

    assert result.status == "succeeded"
    assert len(llm.calls_for("expand")) == 3
    assert llm.max_in_flight == 3
    output = result.outputs["expand"]
    assert output.data == ["about tea", "about coffee", "about cocoa"]
    assert "## Item 1\nabout tea" in output.text
    assert "about cocoa" in llm.calls_for("pick")[0].prompt
    assert "number 1" in next(c.prompt for c in llm.calls if "coffee" in c.prompt)
    assert [e.items for e in seen if isinstance(e, events.MapStarted)] == [3]
    assert len([e for e in seen if isinstance(e, events.ItemFinished)]) == 3


def test_a_map_respects_the_concurrency_limit():
    llm = ScriptedLLM(expand_each)
    map_crew(llm, max_concurrency=2).run().raise_for_status()
    assert llm.max_in_flight == 2


def test_a_map_over_something_that_is_not_a_list_fails_clearly():
    llm = ScriptedLLM({"ideas": {"items": []}})
    crew = Crew(
        [
            task("ideas", output_model=Ideas),
            Task(id="each", description="Do {item}", agent=WORKER, for_each="ideas.text"),
        ],
        llm=llm,
    )
    result = crew.run()
    assert result.status == "failed"
    assert "gave a str, not a list" in result.tasks["each"].error


def test_a_map_resumes_only_its_unfinished_items(durable_store: Store):
    store = durable_store

    def cocoa_fails(call: Call) -> object:
        if call.task_id == "expand" and "cocoa" in call.prompt:  # after the others finished
            return Reply(error=BadRequestError("down", model="m"), delay_s=0.3)
        return expand_each(call)

    broken = ScriptedLLM(cocoa_fails)
    first = map_crew(broken, store).run()
    assert first.status == "failed" and "item 3 of 3" in first.tasks["expand"].error

    fixed = ScriptedLLM(expand_each)
    second = map_crew(fixed, store).run(resume=first.run_id)
    assert second.status == "succeeded"
    assert [c.task_id for c in fixed.calls] == ["expand", "pick"]
    assert "cocoa" in fixed.calls_for("expand")[0].prompt
    assert second.outputs["expand"].data == ["about tea", "about coffee", "about cocoa"]


# Subcrews


def research_crew() -> Crew:
    return Crew(
        [
            Task(id="search", description="Search {topic}", agent=WORKER),
            Task(id="summary", description="Summarise", agent=WORKER, depends_on=["search"]),
        ],
        name="research",
    )


def parent_crew(llm: ScriptedLLM, store: Store) -> Crew:
    return Crew(
        [
            task("pick_topic"),
            Task(
                id="research",
                description="Research the topic",
                crew=research_crew(),
                inputs={"topic": "pick_topic.text"},
            ),
            task("write", "research"),
        ],
        llm=llm,
        store=store,
    )


def test_a_subcrew_does_a_task_with_inputs_from_the_board_and_nests_its_run():
    store = MemoryStore()
    llm = ScriptedLLM({"pick_topic": "octopuses", "summary": "they have three hearts"})
    result, seen = run(parent_crew(llm, store))

    assert result.status == "succeeded"
    assert "Search octopuses" in llm.calls_for("search")[0].prompt
    assert result.outputs["research"].text == "they have three hearts"
    assert "three hearts" in llm.calls_for("write")[0].prompt
    child = store.get_run(f"{result.run_id}.research")
    assert child is not None and child.parent_run_id == result.run_id
    assert child.status == "succeeded"
    nested = [e.task_id for e in seen if isinstance(e, events.TaskFinished)]
    assert nested == ["pick_topic", "research/search", "research/summary", "research", "write"]
    assert result.usage.total.calls == 4
    assert result.usage.by_agent == {"Worker": result.usage.total}  # the subcrew's agent's calls


def test_a_subcrew_resumes_inside_itself(durable_store: Store):
    store = durable_store
    broken = ScriptedLLM({"pick_topic": "octopuses", "summary": BadRequestError("down", model="m")})
    first = parent_crew(broken, store).run()
    assert first.status == "failed" and "subcrew 'research'" in first.tasks["research"].error

    fixed = ScriptedLLM({"summary": "three hearts"})
    second = parent_crew(fixed, store).run(resume=first.run_id)
    assert second.status == "succeeded"
    assert [c.task_id for c in fixed.calls] == ["summary", "write"]  # search is not redone


# The planner


def test_the_planner_rejects_bad_control_flow_before_any_model_call():
    llm = ScriptedLLM()
    with pytest.raises(PlanError) as caught:
        Crew(
            [
                task("triage", output_model=Triage),
                task("a", when="triag.data.severity == 'high'"),
                task("b", when="triage.data.sevrity == 'high'"),
                task("router", routes={"x": ["fixx"]}),
                Task(id="sub", description="d", crew=research_crew()),
            ],
            llm=llm,
        ).plan()
    message = str(caught.value)
    assert "reads 'triag'" in message and "Did you mean 'triage'?" in message
    assert "Did you mean 'severity'?" in message
    assert "goes to 'fixx', which is not defined" in message
    assert "needs inputs topic" in message
    assert llm.calls == []


def test_a_quorum_of_zero_or_of_more_than_the_dependencies_is_refused_before_any_model_call():
    with pytest.raises(ConfigError, match=r"Task 'two': join 'quorum\(0\)'.*n >= 1"):
        task("two", "a", join="quorum(0)")
    llm = ScriptedLLM()
    tasks = [
        task("a"),
        task("b"),
        task("three", "a", "b", join="quorum(3)"),
        task("z", join="quorum(1)"),
    ]
    with pytest.raises(PlanError) as caught:
        Crew(tasks, llm=llm).run()
    assert caught.value.problems == [
        "Task 'three' join='quorum(3)' needs 3 of its dependencies to succeed, but it has"
        " only 2 ('a', 'b'). Lower n to at most 2 or add tasks to its depends_on.",
        "Task 'z' join='quorum(1)' needs 1 of its dependencies to succeed, but it has none."
        " Add tasks to its depends_on.",
    ]
    assert llm.calls == []
    body = loop("l", [task("x", "a", "b", join="quorum(2)")], max_rounds=1)
    Crew([task("a"), task("b"), body], llm=llm).plan()  # dependencies before the loop count


def test_a_quorum_is_checked_in_a_crew_file_too(tmp_path):
    from crew.spec import load_crew_yaml

    text = """\
        agents:
          w: {role: Writer}
        tasks:
          a: {agent: w, description: A}
          b: {agent: w, description: B, depends_on: [a], join: quorum(0)}
          c: {agent: w, description: C, depends_on: [a], join: quorum(2)}
        """
    path = tmp_path / "crew.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_crew_yaml(path)
    assert "crew.yaml:5 tasks.b: Task 'b': join 'quorum(0)'" in str(caught.value)

    path.write_text(textwrap.dedent(text).replace("quorum(0)", "any"))
    crew = load_crew_yaml(path).crew.with_llm(ScriptedLLM())
    with pytest.raises(
        PlanError, match=r"Task 'c' join='quorum\(2\)' needs 2 of .* only 1 \('a'\)"
    ):
        crew.plan()


def test_the_planner_finds_a_task_that_can_never_run():
    with pytest.raises(PlanError, match="'both' can never run"):
        Crew(
            [
                task("r", routes={"left": ["x"], "right": ["y"]}),
                task("x", "r"),
                task("y", "r"),
                task("both", "x", "y"),
            ],
            llm=ScriptedLLM(),
        ).plan()


def test_a_loop_needs_a_bound_and_human_review_stays_out_of_loops():
    with pytest.raises(Exception, match="max_rounds"):
        Task(id="l", description="d", group=[task("a")])
    with pytest.raises(PlanError, match="human_review"):
        Crew([loop("l", [task("a", human_review=True)], max_rounds=2)], llm=ScriptedLLM()).plan()


def test_a_loop_inside_a_loop_is_refused_with_the_way_around():
    inner = loop("inner", [task("a")], max_rounds=2)
    with pytest.raises(PlanError, match="loop inside a loop"):
        Crew([loop("outer", [inner], max_rounds=2)], llm=ScriptedLLM()).plan()


def test_a_body_task_with_join_any_on_tasks_before_the_loop_runs():
    crew = Crew(
        [task("a"), loop("l", [task("b", "a", join="any")], max_rounds=1)], llm=ScriptedLLM()
    )
    result = crew.run()
    assert result.tasks["b"].status == "succeeded"


def test_with_llm_reaches_agents_in_loop_bodies_and_subcrews():
    own = Agent(role="Own", llm=ScriptedLLM(default="own model"))
    sub = Crew([Task(id="s", description="d", agent=own)], name="sub")
    crew = Crew(
        [
            loop("l", [Task(id="b", description="d", agent=own)], max_rounds=1),
            Task(id="c", description="d", crew=sub),
        ],
    )
    swapped = ScriptedLLM(default="swapped")
    result = crew.with_llm(swapped).run()
    assert result.outputs["b"].text == "swapped" and result.outputs["c"].text == "swapped"
    assert sorted(c.task_id for c in swapped.calls) == ["b", "s"]
