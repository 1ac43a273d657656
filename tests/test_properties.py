"""Properties of the scheduler over random task graphs: every task runs exactly once, never
before its dependencies, never above the concurrency bound; failures skip exactly the
descendants of the failed tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from crew import Agent, Crew, Task
from crew.errors import BadRequestError
from crew.testing import Call, ScriptedLLM

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@dataclass(frozen=True)
class Graph:
    deps: dict[str, list[str]]
    """Task id -> the ids it depends on; edges only go from a lower to a higher index."""
    declared: list[str]
    """The order the tasks are given to the crew (shuffled: dependants may come first)."""
    delays_ms: dict[str, int]

    def descendants(self, roots: set[str]) -> set[str]:
        dependants: dict[str, list[str]] = {t: [] for t in self.deps}
        for task_id, deps in self.deps.items():
            for dep in deps:
                dependants[dep].append(task_id)
        found: set[str] = set()
        stack = [d for r in roots for d in dependants[r]]
        while stack:
            task_id = stack.pop()
            if task_id not in found:
                found.add(task_id)
                stack.extend(dependants[task_id])
        return found


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    n = draw(st.integers(min_value=1, max_value=25))
    ids = [f"t{i}" for i in range(n)]
    deps = {
        ids[j]: [ids[i] for i in sorted(draw(st.sets(st.integers(0, j - 1), max_size=4)))]
        if j
        else []
        for j in range(n)
    }
    declared = draw(st.permutations(ids))
    delays = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return Graph(deps=deps, declared=list(declared), delays_ms=dict(zip(ids, delays, strict=True)))


def crew_of(graph: Graph, llm: ScriptedLLM, **kwargs: object) -> Crew:
    agent = Agent(role="Worker", llm=llm)
    tasks = [
        Task(id=t, description=f"Do {t}", agent=agent, depends_on=graph.deps[t])
        for t in graph.declared
    ]
    return Crew(tasks, **kwargs)  # type: ignore[arg-type]


class Recorder:
    """A scripted reply function that logs when each call starts and ends, and counts in flight."""

    def __init__(self, graph: Graph, failing: frozenset[str] | set[str] = frozenset()) -> None:
        self.graph = graph
        self.failing = failing
        self.log: list[tuple[str, str]] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, call: Call) -> str | BaseException:
        self.log.append(("start", call.task_id))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.graph.delays_ms[call.task_id] / 1000)
        finally:
            self.in_flight -= 1
        self.log.append(("end", call.task_id))
        if call.task_id in self.failing:
            return BadRequestError("x")
        return f"output of {call.task_id}"


@PROPERTY_SETTINGS
@given(graph=graphs(), max_concurrency=st.integers(min_value=1, max_value=6))
def test_random_graphs_run_every_task_once_in_dependency_order(graph, max_concurrency):
    recorder = Recorder(graph)
    llm = ScriptedLLM(recorder)

    result = crew_of(graph, llm, max_concurrency=max_concurrency).run()

    assert result.status == "succeeded"
    assert list(result.tasks) == graph.declared
    assert all(r.status == "succeeded" for r in result.tasks.values())
    assert sorted(c.task_id for c in llm.calls) == sorted(graph.deps)
    assert {t: result.outputs[t].text for t in graph.deps} == {
        t: f"output of {t}" for t in graph.deps
    }
    position = {event: i for i, event in enumerate(recorder.log)}
    assert len(position) == 2 * len(graph.deps)
    for task_id, deps in graph.deps.items():
        for dep in deps:
            assert position[("end", dep)] < position[("start", task_id)], (dep, task_id)
    assert 1 <= llm.max_in_flight <= max_concurrency
    assert recorder.peak <= max_concurrency


@PROPERTY_SETTINGS
@given(graph=graphs(), max_concurrency=st.integers(min_value=1, max_value=6), data=st.data())
def test_with_continue_exactly_the_descendants_of_failed_tasks_are_skipped(
    graph, max_concurrency, data
):
    failing = data.draw(st.sets(st.sampled_from(sorted(graph.deps))), label="failing")
    recorder = Recorder(graph, failing)
    llm = ScriptedLLM(recorder)

    result = crew_of(graph, llm, max_concurrency=max_concurrency, on_failure="continue").run()

    skipped = graph.descendants(failing)
    failed = failing - skipped  # a failing task below another failure never runs
    expected = {
        t: "skipped" if t in skipped else "failed" if t in failed else "succeeded"
        for t in graph.declared
    }
    assert {t: r.status for t, r in result.tasks.items()} == expected
    assert list(result.tasks) == graph.declared
    assert result.status == ("failed" if failing else "succeeded")
    assert sorted(c.task_id for c in llm.calls) == sorted(set(graph.deps) - skipped)
    for task_id in failed:
        assert result.tasks[task_id].error_type == "BadRequestError"
        assert result.tasks[task_id].attempts == 1
    for task_id in skipped:
        reason = result.tasks[task_id].reason
        assert reason is not None
        assert "failed" in reason
    assert llm.max_in_flight <= max_concurrency
