"""Fork: a new run that keeps what came before a task, redoes it and what follows, and replays
the model answers that did not change."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel

from crew import Agent, Crew, Task, events
from crew.checkpoint import decide_review
from crew.errors import ConfigError
from crew.fork import fork_run
from crew.store import Store, TaskRecord
from crew.store.memory import MemoryStore
from crew.testing import Reply, ScriptedLLM
from crew.testserver import ServerReply

WORKER = Agent(role="Worker", goal="Work")
GRAPH = {"a": [], "b": ["a"], "c": ["b"], "x": []}


class Verdict(BaseModel):
    ok: bool


def tasks_of(graph: dict[str, list[str]], **extra: Any) -> list[Task]:
    return [
        Task(id=t, description=f"Do {t}", agent=WORKER, depends_on=d, **extra.get(t, {}))
        for t, d in graph.items()
    ]


@pytest.fixture
def store(durable_store: Store) -> Store:
    return durable_store


def snapshot(store: Store, run_id: str) -> tuple[Any, ...]:
    return (
        store.get_run(run_id),
        store.task_records(run_id),
        store.board_entries(run_id),
        store.events(run_id),
        store.reviews(run_id),
    )


def test_a_fork_redoes_the_task_and_what_follows_and_replays_unchanged_requests(
    server, fake_llm, store
):
    for task_id in GRAPH:
        server.script(task_id, ServerReply(text=f"{task_id.upper()}1"))
    crew = Crew(tasks_of(GRAPH), llm=fake_llm, store=store)
    parent = crew.run()
    before = snapshot(store, parent.run_id)
    server.reset()
    server.default = ServerReply(status=500, error="nothing should reach the provider")

    seen: list[events.Event] = []
    fork = crew.fork(parent.run_id, "b", on_event=seen.append)

    assert server.calls == []  # a deterministic crew's fork costs nothing
    assert fork.status == "succeeded" and fork.run_id != parent.run_id
    assert {t: o.text for t, o in fork.outputs.items()} == {
        "a": "A1", "b": "B1", "c": "C1", "x": "X1"
    }  # fmt: skip
    started = {e.task_id for e in seen if isinstance(e, events.TaskStarted)}
    assert started == {"b", "c"}  # a and x were kept, not run
    record = store.get_run(fork.run_id)
    assert record is not None and record.parent_run_id == parent.run_id
    assert record.metadata["fork"] == {"run_id": parent.run_id, "from_task": "b", "set": []}
    assert fork.usage.total.cost_usd == 0.0
    assert snapshot(store, parent.run_id) == before  # the original run is untouched


def test_an_edited_output_counts_as_done_and_its_dependants_run_with_it(server, fake_llm, store):
    for task_id in GRAPH:
        server.script(task_id, ServerReply(text=f"{task_id.upper()}1"))
    crew = Crew(tasks_of(GRAPH), llm=fake_llm, store=store)
    parent = crew.run()
    server.reset()
    server.script("b", ServerReply(text="B2"))
    server.script("c", ServerReply(text="C2"))

    fork = crew.fork(parent.run_id, "c", outputs={"a": "A, edited by hand"})

    # a is given; b depends on it (its request changed); c on b; x is kept
    assert [call.key for call in server.calls] == ["b", "c"]
    assert "A, edited by hand" in server.calls[0].body["messages"][1]["content"]
    assert {t: o.text for t, o in fork.outputs.items()} == {
        "a": "A, edited by hand", "b": "B2", "c": "C2", "x": "X1"
    }  # fmt: skip
    assert fork.board["a"].text == "A, edited by hand"
    assert parent.outputs["a"].text == store.finished_outputs(parent.run_id)[("a", 0)].text == "A1"


def test_fork_copies_every_attempt_and_index_of_the_kept_tasks_only():
    store = MemoryStore()
    crew = Crew(tasks_of(GRAPH), llm=ScriptedLLM(), store=store)
    parent = crew.run()
    for index in (1, 2):  # as a map's items are stored
        store.put_task(
            TaskRecord(run_id=parent.run_id, task_id="a", index=index, status="succeeded",
                       text=f"item {index}")
        )  # fmt: skip
    store.put_task(TaskRecord(run_id=parent.run_id, task_id="c", index=1, status="succeeded"))

    fork_run(store, parent.run_id, crew.plan(), "b", fork_id="f1")

    copied = {(r.task_id, r.index, r.text) for r in store.task_records("f1")}
    assert copied == {("a", 0, "ok"), ("a", 1, "item 1"), ("a", 2, "item 2"), ("x", 0, "ok")}
    assert {(e.key, e.version) for e in store.board_entries("f1")} == {("a", 1), ("x", 1)}


def test_notes_stay_with_the_task_whose_agent_posted_them():
    note = Reply(tool_calls=[("post_note", {"key": "idea", "text": "from a"})])
    late = Reply(tool_calls=[("post_note", {"key": "idea", "text": "from c"})])
    llm = ScriptedLLM({"a": [note, "A"], "c": [late, "C"]})
    store = MemoryStore()
    crew = Crew(tasks_of(GRAPH), llm=llm, store=store)
    parent = crew.run()
    assert [e.text for e in parent.board.history("idea")] == ["from a", "from c"]

    fork_run(store, parent.run_id, crew.plan(), "c", fork_id="f1")

    kept = {(e.key, e.version, e.text) for e in store.board_entries("f1")}
    assert ("idea", 1, "from a") in kept and not any(t == "from c" for _, _, t in kept)
    assert {k for k, _, _ in kept} == {"a", "b", "x", "idea"}


def test_a_kept_review_keeps_its_answer_in_the_fork():
    graph = {"draft": [], "publish": ["draft"]}
    tasks = tasks_of(graph, draft={"human_review": True})
    store = MemoryStore()
    crew = Crew(tasks, llm=ScriptedLLM({"draft": "first draft"}), store=store)
    parent = crew.run()
    decide_review(store, parent.run_id, "draft", "edited", text="edited draft")
    crew.run(resume=parent.run_id)

    llm = ScriptedLLM({"publish": "published again"})
    fork = Crew(tasks, llm=llm, store=store).fork(parent.run_id, "publish", replay=None)

    assert fork.status == "succeeded"  # the draft's review was answered: it does not wait again
    assert [c.task_id for c in llm.calls] == ["publish"]
    assert "edited draft" in llm.calls[0].prompt
    assert fork.outputs["publish"].text == "published again"  # replay=None: asked afresh


def test_a_fork_of_a_fork_replays_through_its_ancestors(server, fake_llm):
    store = MemoryStore()
    crew = Crew(tasks_of(GRAPH), llm=fake_llm, store=store)
    parent = crew.run()
    child = crew.fork(parent.run_id, "c")
    server.reset()

    grandchild = crew.fork(child.run_id, "a", replay_strict=True)  # a was recorded in parent

    assert server.calls == [] and grandchild.status == "succeeded"
    assert store.get_run(grandchild.run_id).parent_run_id == child.run_id


def test_forking_at_an_unknown_task_says_what_is_there_and_writes_nothing():
    store = MemoryStore()
    crew = Crew(tasks_of(GRAPH), llm=ScriptedLLM(), store=store)
    parent = crew.run()
    with pytest.raises(ConfigError) as raised:
        crew.fork(parent.run_id, "bb", outputs={"cc": "text"})
    assert raised.value.problems == [
        "Cannot fork at task 'bb': the crew has no such task. Did you mean 'b'? Its tasks: a, b, "
        "c, x.",
        "Cannot set the output of task 'cc': the crew has no such task. Did you mean 'c'? Its"
        " tasks: a, b, "
        "c, x.",
    ]
    with pytest.raises(ConfigError, match="There is no run 'nope' in the store"):
        crew.fork("nope", "b")
    assert [r.run_id for r in store.list_runs()] == [parent.run_id]


def test_a_given_structured_output_must_fit_its_model():
    tasks = tasks_of(GRAPH, a={"output_model": Verdict})
    store = MemoryStore()
    crew = Crew(tasks, llm=ScriptedLLM({"a": {"ok": False}}), store=store)
    parent = crew.run()
    with pytest.raises(ConfigError, match="Give the output of 'a' as JSON that fits it"):
        crew.fork(parent.run_id, "b", outputs={"a": "yes"})

    fork = crew.fork(parent.run_id, "b", outputs={"a": '{"ok": true}'})
    assert fork.outputs["a"].data == Verdict(ok=True)


def test_afork_runs_in_async_code_with_a_chosen_run_id():
    store = MemoryStore()
    crew = Crew(tasks_of(GRAPH), llm=ScriptedLLM(), store=store)
    parent = crew.run()
    fork = asyncio.run(crew.afork(parent.run_id, "c", fork_id="my-fork"))
    assert fork.run_id == "my-fork" and fork.status == "succeeded"
    assert dataclasses.asdict(store.get_run("my-fork"))["parent_run_id"] == parent.run_id
