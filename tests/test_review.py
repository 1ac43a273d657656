"""Human review: a task's output waits for a person; approve, edit or reject, then resume."""

from __future__ import annotations

import pytest

from crew import Agent, Crew, Task
from crew.checkpoint import decide_review
from crew.errors import ConfigError
from crew.hooks import ReviewNotice
from crew.store.memory import MemoryStore
from crew.testing import ScriptedLLM

WORKER = Agent(role="Worker", goal="Work")


def crew_with(llm: ScriptedLLM, store: MemoryStore) -> Crew:
    tasks = [
        Task(id="draft", description="Draft it", agent=WORKER, human_review=True),
        Task(id="publish", description="Publish the draft", agent=WORKER, depends_on=["draft"]),
        Task(id="other", description="Unrelated work", agent=WORKER),
    ]
    return Crew(tasks, llm=llm, store=store)


def waiting_run(store: MemoryStore) -> str:
    llm = ScriptedLLM({"draft": "first draft"})
    result = crew_with(llm, store).run()
    assert result.status == "waiting"
    assert {t: r.status for t, r in result.tasks.items()} == {
        "draft": "waiting",
        "publish": "pending",
        "other": "succeeded",
    }
    assert sorted(c.task_id for c in llm.calls) == ["draft", "other"]  # other branches ran
    assert store.get_run(result.run_id).status == "waiting"
    [review] = store.reviews(status="pending")
    assert (review.task_id, review.text) == ("draft", "first draft")
    return result.run_id


def test_an_approved_output_lets_its_dependants_run_on_resume():
    store = MemoryStore()
    run_id = waiting_run(store)
    decide_review(store, run_id, "draft", "approved")
    llm = ScriptedLLM()
    result = crew_with(llm, store).run(resume=run_id)
    assert result.status == "succeeded"
    assert [c.task_id for c in llm.calls] == ["publish"]
    assert "first draft" in llm.calls[0].prompt


def test_an_edited_output_replaces_the_original_for_dependants():
    store = MemoryStore()
    run_id = waiting_run(store)
    decide_review(store, run_id, "draft", "edited", text="the edited draft")
    llm = ScriptedLLM()
    result = crew_with(llm, store).run(resume=run_id)
    assert result.outputs["draft"].text == "the edited draft"
    assert "the edited draft" in llm.calls_for("publish")[0].prompt
    assert result.board["draft"].text == "the edited draft"


def test_a_rejected_output_runs_again_with_the_feedback_and_waits_again():
    store = MemoryStore()
    run_id = waiting_run(store)
    decide_review(store, run_id, "draft", "rejected", feedback="Too long; one sentence.")
    llm = ScriptedLLM({"draft": "short draft"})
    result = crew_with(llm, store).run(resume=run_id)
    assert result.status == "waiting"
    assert [c.task_id for c in llm.calls] == ["draft"]
    prompt = llm.calls[0].prompt
    assert "Too long; one sentence." in prompt and "first draft" in prompt
    [review] = store.reviews(status="pending")
    assert review.text == "short draft"


def test_answering_a_review_that_is_not_pending_is_a_clear_error():
    store = MemoryStore()
    run_id = waiting_run(store)
    with pytest.raises(ConfigError, match=f"no pending review. Pending: {run_id} draft"):
        decide_review(store, run_id, "publish", "approved")


def test_the_review_hook_hears_once_of_each_output_that_comes_to_wait():
    notices: list[ReviewNotice] = []
    store = MemoryStore()
    crew = crew_with(ScriptedLLM({"draft": "first draft"}), store).replace(
        review_hook=notices.append
    )
    run_id = crew.run().run_id
    crew.run(resume=run_id)  # still pending: nobody is told twice
    decide_review(store, run_id, "draft", "rejected", feedback="Shorter.")
    crew.replace(llm=ScriptedLLM({"draft": "short draft"})).run(resume=run_id)
    assert [(n.run_id, n.task_id, n.preview) for n in notices] == [
        (run_id, "draft", "first draft"),
        (run_id, "draft", "short draft"),
    ]
