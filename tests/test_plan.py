"""The planner: every setup problem reported at once as a PlanError, before any model call; and
what the plan says about the graph (order, levels, critical path, width)."""

from __future__ import annotations

import pytest

from crew import Agent, Crew, Task
from crew.errors import ConfigError, CrewError, PlanError
from crew.plan import Plan, build_plan
from crew.testing import ScriptedLLM

WORKER = Agent(role="Worker", goal="Do the task", llm=ScriptedLLM())


def tasks_of(spec: dict[str, list[str]], **estimates: float) -> list[Task]:
    """Tasks from {id: [dependency ids]}, all done by WORKER; estimate_s by id (default 1)."""
    return [
        Task(
            id=t,
            description=f"Do {t}",
            agent=WORKER,
            depends_on=deps,
            estimate_s=estimates.get(t, 1.0),
        )
        for t, deps in spec.items()
    ]


def plan_error(tasks: list[Task], inputs: object = None, **kwargs: object) -> PlanError:
    with pytest.raises(PlanError) as caught:
        build_plan(tasks, inputs, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- validation ----------------------------------------------------------------------------------


def test_plan_error_is_a_config_error_and_a_crew_error():
    assert issubclass(PlanError, ConfigError)
    assert issubclass(PlanError, CrewError)


def test_cycle_is_reported_with_its_path():
    error = plan_error(tasks_of({"a": ["c"], "b": ["a"], "c": ["b"]}))

    message = str(error)
    assert "a -> c -> b -> a (each depends on the next)" in message
    assert "cycle" in message
    assert "Remove one of these dependencies" in message
    assert len(error.problems) == 1


def test_two_separate_cycles_are_both_reported():
    error = plan_error(tasks_of({"a": ["b"], "b": ["a"], "x": ["y"], "y": ["x"]}))

    cycles = [p for p in error.problems if "cycle" in p]
    assert len(cycles) == 2
    assert any("a -> b -> a" in p or "b -> a -> b" in p for p in cycles)
    assert any("x -> y -> x" in p or "y -> x -> y" in p for p in cycles)


def test_unknown_dependency_suggests_the_close_match():
    error = plan_error(tasks_of({"research": [], "draft": ["reserch"]}))

    assert str(error) == (
        "Task 'draft' depends on 'reserch', which is not defined. Did you mean 'research'?"
    )


def test_unknown_dependency_without_a_close_match_says_how_to_add_it():
    error = plan_error(tasks_of({"research": [], "draft": ["zzz"]}))

    assert "Task 'draft' depends on 'zzz', which is not defined." in str(error)
    assert "Did you mean" not in str(error)
    assert "Add it to Crew(tasks=[...])" in str(error)


def test_duplicate_ids_are_rejected():
    error = plan_error(tasks_of({"a": []}) + tasks_of({"a": []}))

    assert error.problems == ["Task id 'a' is used by more than one task; ids must be unique."]


def test_the_same_task_object_listed_twice_is_not_a_duplicate():
    (task,) = tasks_of({"a": []})

    plan = build_plan([task, task])

    assert plan.order == ("a",)


def test_self_dependency_names_the_task_and_the_fix():
    error = plan_error(tasks_of({"a": ["a"]}))

    # Reported once, as a self-dependency, not a second time as a one-task cycle.
    assert error.problems == ["Task 'a' depends on itself; remove 'a' from its depends_on."]


def test_task_without_agent_is_rejected():
    error = plan_error([Task(id="lonely", description="Do it")])

    assert error.problems == ["Task 'lonely' has no agent; pass Task(agent=...)."]


def test_empty_crew_is_rejected():
    error = plan_error([])

    assert "no tasks" in str(error)
    assert "Crew(tasks=[...])" in str(error)


def test_agent_without_model_and_no_default_lists_its_tasks_and_the_fixes(monkeypatch):
    monkeypatch.delenv("CREW_MODEL", raising=False)
    writer = Agent(role="Writer")
    tasks = [Task(id=t, description="Write", agent=writer) for t in ("intro", "outro")]

    with pytest.raises(PlanError) as caught:
        Crew(tasks).plan()

    message = str(caught.value)
    assert "agent 'Writer' (tasks 'intro', 'outro')" in message
    assert "Agent(llm=...)" in message
    assert "Crew(llm=...)" in message
    assert "CREW_MODEL" in message
    assert len(caught.value.problems) == 1


def test_crew_model_environment_variable_is_the_default(monkeypatch):
    monkeypatch.setenv("CREW_MODEL", "openai/gpt-4o-mini")
    writer = Agent(role="Writer")

    plan = Crew([Task(id="intro", description="Write", agent=writer)]).plan()

    assert plan.order == ("intro",)


def test_crew_llm_is_the_default(monkeypatch):
    monkeypatch.delenv("CREW_MODEL", raising=False)
    writer = Agent(role="Writer")

    plan = Crew([Task(id="intro", description="Write", agent=writer)], llm=ScriptedLLM()).plan()

    assert plan.order == ("intro",)


def test_every_missing_placeholder_is_named_in_one_message():
    agent = Agent(
        role="{domain} researcher",
        goal="Know {goal_topic}",
        backstory="Worked at {employer}",
        llm=ScriptedLLM(),
    )
    tasks = [
        Task(id="a", description="About {topic}", expected_output="In {language}", agent=agent),
        Task(id="b", description="Also {topic} for {audience}", agent=agent),
    ]

    error = plan_error(tasks, {"language": "en"})

    assert len(error.problems) == 1
    message = error.problems[0]
    for name in ("topic", "audience", "domain", "goal_topic", "employer"):
        assert f"'{name}'" in message, name
    assert "'language'" not in message
    assert "task 'a' description, task 'b' description" in message
    assert "agent '{domain} researcher' role" in message
    assert "agent '{domain} researcher' goal" in message
    assert "agent '{domain} researcher' backstory" in message
    assert "crew.run(inputs={" in message
    assert "'topic': ..." in message


def test_json_braces_are_not_placeholders():
    tasks = [
        Task(
            id="a",
            description='Answer like {"a": 1} or { "b": [1, 2] } or {}',
            expected_output='{"title": "..."}',
            agent=WORKER,
        )
    ]

    plan = build_plan(tasks)

    assert plan.order == ("a",)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({"a", "b"}, "set"), (object(), "object"), (b"bytes", "bytes")],
)
def test_input_values_of_unsupported_types_are_rejected(value, type_name):
    error = plan_error(tasks_of({"a": []}), {"bad": value})

    assert error.problems == [
        f"Input 'bad' is a {type_name}; inputs must be strings, numbers, booleans, lists or dicts."
        " Convert it first, e.g. str(value)."
    ]


def test_input_names_must_be_strings():
    error = plan_error(tasks_of({"a": []}), {1: "one"})

    assert error.problems == ["Input name 1 must be a string."]


@pytest.mark.parametrize(("inputs", "type_name"), [({"topic"}, "set"), (["topic"], "list")])
def test_inputs_that_are_not_a_mapping_are_rejected(inputs, type_name):
    tasks = [Task(id="a", description="About {topic}", agent=WORKER)]

    error = plan_error(tasks, inputs)

    assert f"inputs must be a dict of name -> value, got {type_name}." in error.problems


def test_crew_plan_rejects_a_set_of_inputs():
    with pytest.raises(PlanError, match="inputs must be a dict"):
        Crew(tasks_of({"a": []})).plan({"topic"})  # type: ignore[arg-type]


def test_an_object_as_inputs_is_a_plan_error_even_with_placeholders():
    tasks = [Task(id="a", description="About {topic}", agent=WORKER)]

    error = plan_error(tasks, object())

    assert "inputs must be a dict of name -> value, got object." in error.problems


# {"ab"} guards against dict({"ab"}) == {"a": "b"}: a set must not pass as a mapping.
@pytest.mark.parametrize("inputs", [{"topic"}, {"ab"}, object()])
def test_crew_run_rejects_inputs_that_are_not_a_mapping(inputs):
    llm = ScriptedLLM()
    tasks = [Task(id="a", description="Do it", agent=Agent(role="Worker", llm=llm))]

    with pytest.raises(PlanError, match="inputs must be a dict"):
        Crew(tasks).run(inputs)

    assert llm.calls == []


def test_several_problems_are_reported_together():
    llm = ScriptedLLM()
    agent = Agent(role="Worker", llm=llm)
    tasks = [
        Task(id="a", description="Do {thing}", agent=agent, depends_on=["c"]),
        Task(id="b", description="Do b", agent=agent, depends_on=["a"]),
        Task(id="c", description="Do c", agent=agent, depends_on=["b"]),
        Task(id="c", description="Again", agent=agent),
        Task(id="d", description="Do d", agent=agent, depends_on=["d", "reserch"]),
        Task(id="research", description="Look", agent=agent),
        Task(id="orphan", description="No one"),
    ]

    with pytest.raises(PlanError) as caught:
        Crew(tasks).run({"bad": {1, 2}})

    problems = caught.value.problems
    assert len(problems) == 7, problems
    expected_fragments = [
        "Input 'bad' is a set",
        "Task id 'c' is used by more than one task",
        "Task 'd' depends on itself",
        "Did you mean 'research'?",
        "cycle",
        "Task 'orphan' has no agent",
        "Missing inputs: 'thing'",
    ]
    for fragment in expected_fragments:
        assert sum(fragment in p for p in problems) == 1, fragment
    message = str(caught.value)
    assert message.startswith("7 problems in the crew:\n")
    assert all(f"  - {p}" in message for p in problems)
    assert llm.calls == []


def test_no_model_is_called_when_planning_fails():
    llm = ScriptedLLM()
    agent = Agent(role="Worker", llm=llm)
    tasks = [
        Task(id="a", description="Do a", agent=agent),
        Task(id="b", description="Do {missing}", agent=agent, depends_on=["a"]),
    ]

    with pytest.raises(PlanError):
        Crew(tasks).run()

    assert llm.calls == []


# --- analysis ------------------------------------------------------------------------------------


def test_chain():
    plan = build_plan(tasks_of({"a": [], "b": ["a"], "c": ["b"]}, a=2, b=3, c=4))

    assert isinstance(plan, Plan)
    assert plan.order == ("a", "b", "c")
    assert plan.levels == (("a",), ("b",), ("c",))
    assert plan.critical_path == ("a", "b", "c")
    assert plan.critical_path_s == 9
    assert dict(plan.remaining_s) == {"a": 9, "b": 7, "c": 4}
    assert plan.max_parallelism == 1
    assert plan.dependencies("b") == ["a"]
    assert plan.dependants("b") == ["c"]
    assert plan.descendants("a") == {"b", "c"}


def test_fan_out_of_32_then_join():
    middle = [f"m{i:02d}" for i in range(32)]
    spec = {"root": [], **{m: ["root"] for m in middle}, "join": middle}

    plan = build_plan(tasks_of(spec, m17=5))

    assert plan.max_parallelism == 32
    assert plan.levels == (("root",), tuple(middle), ("join",))
    assert plan.critical_path == ("root", "m17", "join")
    assert plan.critical_path_s == 7
    assert plan.remaining_s["m00"] == 2
    assert plan.remaining_s["root"] == 7
    assert plan.order[0] == "root"
    assert plan.order[-1] == "join"
    assert plan.order[1:-1] == tuple(middle)


def test_diamond():
    spec = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}

    plan = build_plan(tasks_of(spec, a=1, b=1, c=5, d=2))

    assert plan.levels == (("a",), ("b", "c"), ("d",))
    assert plan.critical_path == ("a", "c", "d")
    assert plan.critical_path_s == 8
    assert dict(plan.remaining_s) == {"a": 8, "b": 3, "c": 7, "d": 2}
    assert plan.max_parallelism == 2
    assert set(plan.dependencies("d")) == {"b", "c"}


def test_critical_path_ties_go_to_the_first_declared_task():
    plan = build_plan(tasks_of({"x": [], "y": [], "a": ["x", "y"], "b": ["x", "y"]}))

    assert plan.critical_path == ("x", "a")
    assert plan.critical_path_s == 2


def test_critical_path_starts_at_the_root_with_the_longest_remaining_work():
    spec = {"short": [], "long": [], "after_long": ["long"], "after_short": ["short"]}

    plan = build_plan(tasks_of(spec, long=1, after_long=10, short=3, after_short=1))

    assert plan.critical_path == ("long", "after_long")
    assert plan.critical_path_s == 11


def test_width_can_exceed_every_level():
    # A comb: the spine a -> b -> c -> r, with teeth p (after a) and q (after b).
    # Levels: {a}, {b, p}, {c, q}, {r} -- none larger than 2.
    # {p, q, r} is an antichain (no one depends on another), and the three chains
    # a-b-c-r, p, q cover every task, so the width is exactly 3.
    spec = {"a": [], "b": ["a"], "c": ["b"], "r": ["c"], "p": ["a"], "q": ["b"]}

    plan = build_plan(tasks_of(spec))

    assert max(len(level) for level in plan.levels) == 2
    assert plan.levels == (("a",), ("b", "p"), ("c", "q"), ("r",))
    assert plan.max_parallelism == 3


def test_width_of_independent_chains_is_their_number():
    spec = {"a1": [], "a2": ["a1"], "a3": ["a2"], "b1": [], "b2": ["b1"], "c1": []}

    plan = build_plan(tasks_of(spec))

    assert plan.max_parallelism == 3


def test_declaration_order_is_kept_among_unrelated_tasks():
    plan = build_plan(tasks_of({"zeta": [], "alpha": [], "mid": []}))

    assert plan.order == ("zeta", "alpha", "mid")
    assert list(plan.tasks) == ["zeta", "alpha", "mid"]
    assert plan.levels == (("zeta", "alpha", "mid"),)


def test_a_dependant_declared_first_comes_after_its_dependency():
    plan = build_plan(tasks_of({"late": ["early"], "other": [], "early": []}))

    assert plan.order == ("other", "early", "late")
    assert list(plan.tasks) == ["late", "other", "early"]


def test_dependencies_given_as_task_objects():
    (first,) = tasks_of({"first": []})
    second = Task(id="second", description="Then", agent=WORKER, depends_on=[first])

    plan = build_plan([first, second])

    assert plan.dependencies("second") == ["first"]
    assert plan.order == ("first", "second")


def test_crew_plan_validates_with_inputs_without_calling_a_model():
    llm = ScriptedLLM()
    agent = Agent(role="Worker", llm=llm)
    crew = Crew([Task(id="a", description="About {topic}", agent=agent)])

    plan = crew.plan({"topic": "Lisbon"})

    assert plan.order == ("a",)
    assert llm.calls == []
    with pytest.raises(PlanError, match="'topic'"):
        crew.plan()


def test_routed_tasks_depend_on_the_router_once_even_when_listed_too():
    router = Task(
        id="triage", description="Triage", agent=WORKER, routes={"a": ["fix"], "b": "doc"}
    )
    fix = Task(id="fix", description="Fix", agent=WORKER, depends_on=["triage"])
    doc = Task(id="doc", description="Doc", agent=WORKER)

    plan = build_plan([router, fix, doc])

    assert plan.dependencies("fix") == ["triage"]
    assert plan.dependencies("doc") == ["triage"]
    assert plan.dependants("triage") == ["fix", "doc"]
    assert plan.edges() == {("triage", "fix"), ("triage", "doc")}


def test_a_loop_waits_for_what_its_body_needs_from_outside():
    from crew.task import loop

    body = [Task(id="draft", description="Draft", agent=WORKER, depends_on=["brief"])]
    tasks = [
        Task(id="brief", description="Brief", agent=WORKER),
        loop("polish", body, max_rounds=2),
        Task(id="publish", description="Publish", agent=WORKER, depends_on=["draft"]),
    ]

    plan = build_plan(tasks)

    assert plan.dependencies("polish") == ["brief"]
    assert plan.dependencies("publish") == ["polish"]  # a task in a loop stands for the loop
    assert plan.order == ("brief", "polish", "publish")
    assert plan.groups["polish"].order == ("draft",)


def test_a_large_plan_agrees_with_the_definitions():
    import random

    rng = random.Random(4)
    spec: dict[str, list[str]] = {}
    for i in range(600):  # declared in an order that is not topological
        spec[f"t{i}"] = [f"t{j}" for j in rng.sample(range(i), min(i, rng.randint(0, 3)))]
    ids = list(spec)
    rng.shuffle(ids)
    estimates = {t: rng.choice([0.5, 1.0, 2.0]) for t in ids}
    position = {t: i for i, t in enumerate(ids)}

    plan = build_plan(tasks_of({t: spec[t] for t in ids}, **estimates))

    done: set[str] = set()
    for task_id in plan.order:  # each after its dependencies, the first-declared ready one
        ready = [t for t in ids if t not in done and set(spec[t]) <= done]
        assert task_id == min(ready, key=position.__getitem__)
        done.add(task_id)
    depth: dict[str, int] = {}
    for task_id in plan.order:
        depth[task_id] = 1 + max((depth[d] for d in spec[task_id]), default=-1)
    assert [set(level) for level in plan.levels] == [
        {t for t in ids if depth[t] == n} for n in range(max(depth.values()) + 1)
    ]
    for task_id in ids:
        after = [plan.remaining_s[t] for t in ids if task_id in spec[t]]
        assert plan.remaining_s[task_id] == estimates[task_id] + max(after, default=0.0)
    path = plan.critical_path
    assert not spec[path[0]] and all(path[i] in spec[path[i + 1]] for i in range(len(path) - 1))
    assert plan.critical_path_s == max(plan.remaining_s.values())
    downstream: set[str] = set()
    for task_id in plan.order:
        if any(dep == "t0" or dep in downstream for dep in spec[task_id]):
            downstream.add(task_id)
    assert plan.descendants("t0") == downstream


def test_a_cycle_among_many_tasks_is_found():
    spec = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(2000)}
    spec["t0"] = ["t1999"]

    error = plan_error(tasks_of(spec))

    (problem,) = error.problems
    assert problem.startswith("Tasks depend on each other in a cycle: t0 -> t1999 -> t1998")


def test_the_plan_graph_is_a_frozen_networkx_digraph_of_the_plans_edges():
    import networkx as nx

    router = Task(id="triage", description="Triage", agent=WORKER, routes={"a": "fix"})
    tasks = [
        *tasks_of({"report": ["draft", "facts"], "draft": ["facts"], "facts": [], "alone": []}),
        router,
        Task(id="fix", description="Fix", agent=WORKER),
    ]

    plan = build_plan(tasks)

    graph = plan.graph
    assert isinstance(graph, nx.DiGraph)
    assert list(graph) == ["report", "draft", "facts", "alone", "triage", "fix"]
    assert set(graph.edges) == plan.edges()
    assert plan.edges() == {
        ("draft", "report"),
        ("facts", "report"),
        ("facts", "draft"),
        ("triage", "fix"),
    }
    assert plan.dependencies("report") == ["draft", "facts"]  # as declared
    assert plan.dependants("facts") == ["report", "draft"]  # as found, task after task
    assert all(list(graph.predecessors(t)) == plan.dependencies(t) for t in plan.tasks)
    assert all(list(graph.successors(t)) == plan.dependants(t) for t in plan.tasks)
    assert nx.ancestors(graph, "report") == {"draft", "facts"}
    with pytest.raises(nx.NetworkXError, match="Frozen"):
        graph.add_edge("report", "facts")  # the plan's graph cannot change under the scheduler


@pytest.mark.parametrize("seed", range(20))
def test_the_plan_orders_and_levels_are_networkx_own(seed):
    import random

    import networkx as nx

    rng = random.Random(seed)
    ids = [f"t{i}" for i in range(30)]
    spec = {t: rng.sample(ids[:i], min(i, rng.randint(0, 3))) for i, t in enumerate(ids)}
    rng.shuffle(ids)  # declared in another order than their dependencies
    plan = build_plan(tasks_of({t: spec[t] for t in ids}))
    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    graph.add_edges_from((dep, t) for t in ids for dep in spec[t])

    generations = [sorted(g, key=ids.index) for g in nx.topological_generations(graph)]
    assert [list(level) for level in plan.levels] == generations
    position = {t: i for i, t in enumerate(ids)}
    assert list(plan.order) == list(nx.lexicographical_topological_sort(graph, position.get))
    assert all(plan.descendants(t) == nx.descendants(graph, t) for t in ids)


@pytest.mark.parametrize("seed", range(20))
def test_find_cycles_lists_networkx_cycles_and_none_for_a_dag(seed):
    import random

    from crew.plan import find_cycles

    rng = random.Random(seed)
    ids = [f"t{i}" for i in range(12)]
    dag = {t: rng.sample(ids[:i], min(i, rng.randint(0, 3))) for i, t in enumerate(ids)}
    assert find_cycles(dag) == []
    back = rng.randrange(1, len(ids))
    cyclic = {**dag, ids[0]: [ids[back]]}  # t0 depends on a later task: now some cycle exists
    cycles = find_cycles(cyclic)
    assert bool(cycles) == _reaches(dag, ids[back], ids[0])  # a cycle iff it comes back to t0
    assert all(cycle[0] == min(cycle, key=ids.index) for cycle in cycles)
    assert all(
        all(nxt in cyclic[t] for t, nxt in zip(c, [*c[1:], c[0]], strict=True)) for c in cycles
    )


def _reaches(dependencies, start, goal):
    seen, frontier = set(), [start]
    while frontier:
        task = frontier.pop()
        if task == goal:
            return True
        if task not in seen:
            seen.add(task)
            frontier.extend(dependencies[task])
    return False
