"""Crew: replace() keeps every constructor argument; the crew is planned once per crew."""

from __future__ import annotations

import inspect

import pytest

from crew import Agent, Crew, Task
from crew.errors import PlanError
from crew.store.memory import MemoryStore
from crew.testing import ScriptedLLM

WRITER = Agent(role="Writer", goal="Write about {topic}")


def test_replace_keeps_every_constructor_argument():
    parameters = inspect.signature(Crew.__init__).parameters
    crew = Crew([Task(id="t", description="d", agent=WRITER)], llm=ScriptedLLM(), name="n")
    copy = crew.replace(max_concurrency=2)
    assert set(copy._arguments) == set(parameters) - {"self"}
    changed = {k for k in parameters if k != "self" and copy._arguments[k] != crew._arguments[k]}
    assert changed == {"max_concurrency"}


def test_a_crew_is_planned_once_and_each_run_checks_only_its_inputs(monkeypatch):
    from crew import crew as crew_module

    built = []
    real = crew_module.build_plan
    monkeypatch.setattr(crew_module, "build_plan", lambda *a, **k: built.append(1) or real(*a, **k))
    task = Task(id="t", description="On {topic}", agent=WRITER)
    crew = Crew([task], llm=ScriptedLLM(), store=MemoryStore())
    assert crew.run({"topic": "a"}).status == "succeeded"
    assert crew.run({"topic": "b"}).status == "succeeded"
    with pytest.raises(PlanError, match="Missing inputs: 'topic'"):
        crew.plan({})
    assert len(built) == 1
