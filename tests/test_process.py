"""The hierarchical process: a manager plans the tasks, the planner checks them, the scheduler
runs them in parallel, and the manager answers; resumable like any run."""

from __future__ import annotations

import asyncio

import pytest

from crew import Agent, Crew, events
from crew.errors import BadRequestError, ConfigError
from crew.store.memory import MemoryStore
from crew.testing import ScriptedLLM

MANAGER = Agent(role="Lead", goal="Deliver what is asked")
RESEARCHER = Agent(role="Researcher", goal="Find facts")
WRITER = Agent(role="Writer", goal="Write clearly")

GOOD_PLAN = {
    "tasks": [
        {"id": "facts", "description": "Find facts on {topic}", "agent": "researcher"},
        {"id": "quotes", "description": "Find quotes", "agent": "Researcher"},
        {
            "id": "draft",
            "description": "Write it",
            "agent": "Writer",
            "depends_on": ["facts", "quotes"],
        },
    ]
}


def hierarchical(llm: ScriptedLLM, store: MemoryStore | None = None) -> Crew:
    return Crew(
        (),
        process="hierarchical",
        manager=MANAGER,
        agents=[RESEARCHER, WRITER],
        goal="A short article on {topic}",
        llm=llm,
        store=store,
    )


def test_the_manager_plans_the_crew_fixes_a_bad_plan_and_writes_the_answer():
    bad = {
        "tasks": [{"id": "facts", "description": "x", "agent": "Astronaut", "depends_on": ["nope"]}]
    }
    llm = ScriptedLLM(
        {"plan": [bad, GOOD_PLAN], "answer": "the article", "facts": "f", "quotes": "q"}
    )
    seen: list[events.Event] = []
    result = asyncio.run(hierarchical(llm).arun({"topic": "tides"}, on_event=seen.append))

    assert result.status == "succeeded"
    assert result.output.text == "the article"
    plan_calls = llm.calls_for("plan")
    assert "A short article on tides" in plan_calls[0].prompt
    assert "- Researcher: Find facts" in plan_calls[0].prompt
    repair = plan_calls[1].messages[-1]["content"]
    assert (
        "'Astronaut' is not in the crew" in repair and "'nope', which is not in the plan" in repair
    )
    order = [c.task_id for c in llm.calls]
    assert order[:2] == ["plan", "plan"] and order[-1] == "answer"
    assert set(order[2:4]) == {"facts", "quotes"} and order[4] == "draft"
    assert "Find facts on (topic)" in llm.calls_for("facts")[0].prompt  # model text is literal
    answer_prompt = llm.calls_for("answer")[0].prompt
    assert all(f"### {t}" in answer_prompt for t in ("facts", "quotes", "draft"))
    assert {"facts", "quotes", "draft", "answer"} <= set(result.tasks)


def test_a_hierarchical_run_resumes_without_planning_again():
    store = MemoryStore()
    broken = ScriptedLLM({"plan": GOOD_PLAN, "draft": BadRequestError("down", model="m")})
    first = hierarchical(broken, store).run({"topic": "tides"})
    assert first.status == "failed"

    fixed = ScriptedLLM({"answer": "done"})
    second = hierarchical(fixed, store).run(resume=first.run_id)
    assert second.status == "succeeded" and second.output.text == "done"
    assert [c.task_id for c in fixed.calls] == ["draft", "answer"]


def test_a_hierarchical_crew_needs_a_manager_a_goal_and_agents():
    with pytest.raises(ConfigError) as caught:
        Crew((), process="hierarchical")
    message = str(caught.value)
    assert "manager=Agent" in message and "goal=" in message and "agents=" in message
    with pytest.raises(ConfigError, match="not tasks"):
        Crew(hierarchical(ScriptedLLM()).tasks, process="hierarchical", manager=MANAGER, goal="g")
    with pytest.raises(ConfigError, match="process must be"):
        Crew((), process="sequential")  # type: ignore[arg-type]
