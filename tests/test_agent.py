"""Agent execution: delegation to coworkers (the tool loop is tested in test_tools, test_llm)."""

from __future__ import annotations

import pytest

from crew import Agent, Crew, Task
from crew.errors import PlanError
from crew.testing import Call, Reply, ScriptedLLM

LEAD = Agent(role="Lead Writer", goal="Write", allow_delegation=True)
RESEARCHER = Agent(role="Researcher", goal="Research")
CRITIC = Agent(role="Critic", goal="Criticise")


def test_an_agent_delegates_to_a_coworker_matched_tolerantly_and_the_answer_lands_on_the_board():
    llm = ScriptedLLM(
        {
            "draft": [
                Reply(
                    tool_calls=[
                        (
                            "delegate_work",
                            {
                                "coworker": "  'researcher' ",
                                "task_description": "Find three facts",
                                "context": "About Lisbon",
                            },
                        )
                    ]
                ),
                "Draft using the facts",
            ],
            "draft/delegated-1": "fact one, fact two, fact three",
        }
    )
    crew = Crew(
        [Task(id="draft", description="Write a draft", agent=LEAD)], agents=[RESEARCHER], llm=llm
    )
    result = crew.run()

    assert result.outputs["draft"].text == "Draft using the facts"
    delegated = llm.calls_for("draft/delegated-1")
    assert len(delegated) == 1 and delegated[0].agent == "Researcher"
    assert "Find three facts" in delegated[0].prompt and "About Lisbon" in delegated[0].prompt
    assert llm.calls_for("draft")[1].tool_results == ["fact one, fact two, fact three"]
    entry = result.board["draft/delegated-1"]
    assert (entry.author, entry.kind, entry.text) == (
        "Researcher",
        "delegation",
        "fact one, fact two, fact three",
    )
    assert (
        result.usage.by_task["draft"].calls == 3
    )  # the coworker's call counts in the task's usage


def test_an_unknown_coworker_gets_the_list_of_valid_ones_instead_of_failing():
    llm = ScriptedLLM(
        {
            "draft": [
                Reply(tool_calls=[("ask_question", {"coworker": "Editor", "question": "ok?"})]),
                "done",
            ]
        }
    )
    crew = Crew(
        [Task(id="draft", description="d", agent=LEAD)], agents=[RESEARCHER, CRITIC], llm=llm
    )
    result = crew.run()
    assert result.tasks["draft"].status == "succeeded"
    [answer] = llm.calls_for("draft")[1].tool_results
    assert (
        answer
        == "Error: there is no coworker 'Editor' you can ask. Coworkers: 'Researcher', 'Critic'."
    )


def test_delegates_allow_list_and_no_delegating_back_up_the_chain():
    lead = Agent(role="Lead", allow_delegation=True, delegates=["Helper"])
    helper = Agent(role="Helper", allow_delegation=True)

    def reply(call: Call) -> Reply | str:
        if call.task_id == "t" and call.index == 0:
            return Reply(
                tool_calls=[
                    ("ask_question", {"coworker": "Critic", "question": "?"}),
                    ("ask_question", {"coworker": "helper", "question": "?"}),
                ]
            )
        if call.task_id == "t/question-2" and call.index == 0:
            return Reply(tool_calls=[("ask_question", {"coworker": "Lead", "question": "back?"})])
        return "answer"

    llm = ScriptedLLM(reply)
    Crew([Task(id="t", description="d", agent=lead)], agents=[helper, CRITIC], llm=llm).run()
    not_allowed, _ = llm.calls_for("t")[1].tool_results
    assert "no coworker 'Critic'" in not_allowed and "'Helper'" in not_allowed
    [back] = llm.calls_for("t/question-2")[1].tool_results
    assert "no coworker 'Lead'" in back  # the helper cannot hand the question back to its asker


def test_agents_without_delegation_get_no_delegation_tools():
    llm = ScriptedLLM()
    Crew([Task(id="t", description="d", agent=RESEARCHER)], agents=[CRITIC], llm=llm).run()
    names = {tool["function"]["name"] for tool in llm.calls[0].tools or []}
    assert names == {"read_board", "post_note"}


def test_unknown_delegates_are_a_plan_error():
    lead = Agent(role="Lead", allow_delegation=True, delegates=["Reseacher"])
    crew = Crew([Task(id="t", description="d", agent=lead)], agents=[RESEARCHER], llm=ScriptedLLM())
    with pytest.raises(
        PlanError,
        match=r"delegates to 'Reseacher', who is not in the crew. Did you mean 'Researcher'",
    ):
        crew.plan()
