"""Crew files: YAML crews checked whole with file:line messages, inputs, Python crews."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from crew import LLM, Agent, Crew, Task
from crew.errors import ConfigError, PlanError
from crew.spec import CrewFile, InputSpec, load_crew_yaml, load_python_crew
from crew.testing import Reply, ScriptedLLM

FIXTURES = Path(__file__).parent / "fixtures" / "spec"
TRIP = FIXTURES / "trip"


def write(tmp_path: Path, text: str, name: str = "crew.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_crew_yaml(path, **kwargs)
    return caught.value.problems


MINIMAL = """\
    agents:
      writer: {role: Writer}
    tasks:
      draft: {description: Write a draft, agent: writer}
    """


# --- a valid crew, end to end --------------------------------------------------------------------


def test_the_trip_crew_loads_into_real_objects():
    loaded = load_crew_yaml(TRIP / "crew.yaml")
    crew = loaded.crew
    assert isinstance(crew, Crew) and crew.name == "trip-planner"
    assert (crew.max_concurrency, crew.on_failure) == (4, "continue")
    assert loaded.description == "Plan a city trip." and loaded.warnings == ()
    assert [t.id for t in crew.tasks] == ["sights", "food", "itinerary", "welcome"]
    sights, food, itinerary, welcome = crew.tasks
    assert sights.agent is food.agent  # one Agent per key, shared by its tasks
    guide = sights.agent
    assert guide is not None and guide.role == "Local guide for {destination}"  # overridden
    assert guide.goal.startswith("Find the facts that matter most")  # from `use: researcher`
    assert list(guide.tool_map) == ["count_words"]
    assert itinerary.agent is not None and itinerary.agent.max_iterations == 5
    assert itinerary.depends_on == ("sights", "food")
    assert (itinerary.retries, itinerary.timeout_s) == (1, 120)
    assert sights.output_model is not None and sights.output_model.__name__ == "Sights"
    assert itinerary.output_model is not None and itinerary.output_model.__name__ == "Itinerary"
    assert welcome.output_model is not None and welcome.output_model.__name__ == "Welcome"
    assert food.description.startswith("Research the food of {destination}. Concentrate on street")
    assert itinerary.description.startswith("Plan a {days}-day trip to {destination}, using")
    assert welcome.description == "Write a warm welcome note for a visitor to {destination}."
    assert welcome.agent is not None and welcome.agent.role == "Host in {destination}"
    assert loaded.inputs == {
        "destination": InputSpec(name="destination", description="City to visit"),
        "days": InputSpec(
            name="days", description="Length of the trip", type="integer", default=3, required=False
        ),
    }


def test_the_trip_crew_runs_with_a_scripted_model():
    loaded = load_crew_yaml(TRIP / "crew.yaml")
    llm = ScriptedLLM(
        {
            "sights": [
                Reply(tool_calls=[("count_words", {"text": "Belem Tower"})]),
                {"names": ["Belem Tower", "Alfama"]},
            ],
            "food": "- pastel de nata",
            "itinerary": {
                "title": "Lisbon in 3 days",
                "days": [{"day": 1, "theme": "Old town", "activities": ["Alfama", "Castle"]}],
            },
            "welcome": {"greeting": "Bem-vindo!"},
        }
    )
    inputs = loaded.resolve_inputs({"destination": "Lisbon"})
    result = loaded.crew.with_llm(llm).run(inputs)

    assert result.status == "succeeded", result.to_dict()
    assert result.outputs["sights"].data.names == ["Belem Tower", "Alfama"]
    assert llm.calls_for("sights")[1].tool_results == ["2"]  # the module:callable tool ran
    plan = result.outputs["itinerary"].data
    assert plan.title == "Lisbon in 3 days" and plan.days[0].activities == ["Alfama", "Castle"]
    assert result.outputs["welcome"].data.model_dump() == {"greeting": "Bem-vindo!", "mood": "warm"}
    assert result.outputs["food"].text == "- pastel de nata"

    ended = {call.task_id: at for call, at in llm.finished}
    started = {call.task_id: call.started for call in reversed(llm.calls)}  # first call each
    assert started["itinerary"] >= max(ended["sights"], ended["food"])
    assert started["welcome"] >= ended["itinerary"]
    prompt = llm.calls_for("itinerary")[0].prompt
    assert "Plan a 3-day trip to Lisbon" in prompt
    assert "### sights" in prompt and "### food" in prompt
    assert llm.calls_for("itinerary")[0].output_schema["title"] == "Itinerary"
    system = llm.calls_for("sights")[0].messages[0]["content"]
    assert system.startswith("You are Local guide for Lisbon.")


def test_a_minimal_crew_without_inputs_takes_its_placeholders_as_inputs(tmp_path):
    path = write(
        tmp_path,
        """\
        agents:
          writer:
            role: Writer on {topic}
        tasks:
          draft:
            description: Write about {topic} for {audience}
            agent: writer
        """,
    )
    loaded = load_crew_yaml(path)
    assert loaded.crew.name == tmp_path.name  # crew.yaml is named after its folder
    assert loaded.inputs == {"topic": InputSpec(name="topic"), "audience": InputSpec("audience")}
    assert isinstance(loaded.crew.tasks[0].agent, Agent)
    assert loaded.crew.llm is None and loaded.crew.tasks[0].agent.llm is None
    with pytest.raises(ConfigError, match=r"inputs\.audience: missing required input"):
        loaded.resolve_inputs({"topic": "tea"})
    assert load_crew_yaml(write(tmp_path, MINIMAL, name="draft.yaml")).crew.name == "draft"


def test_llm_values_go_through_the_resolver(tmp_path):
    path = write(
        tmp_path,
        """\
        name: models
        llm: smart
        agents:
          writer: {role: Writer, llm: fast}
          editor: {role: Editor}
        tasks:
          draft: {description: Draft, agent: writer}
          edit: {description: Edit, agent: editor}
        """,
        name="other.yaml",
    )
    seen = []

    def resolve(value: str) -> LLM:
        seen.append(value)
        return LLM(f"openai/{value}")

    crew = load_crew_yaml(path, resolve_llm=resolve).crew
    assert sorted(seen) == ["fast", "smart"]
    assert crew.llm == LLM("openai/smart")
    assert crew.tasks[0].agent.llm == LLM("openai/fast")
    assert crew.tasks[1].agent.llm is None
    # Without a resolver a value is a litellm model string.
    assert load_crew_yaml(path).crew.llm == LLM("smart")


def test_a_resolver_error_is_reported_at_the_llm_line(tmp_path):
    path = write(
        tmp_path,
        """\
        llm: bad
        agents:
          writer:
            role: Writer
            llm: nope
        tasks:
          draft: {description: Draft, agent: writr}
        """,
    )

    def resolve(value: str) -> LLM:
        raise ConfigError(f"unknown profile '{value}' (did you mean 'fast'?).")

    assert problems(path, resolve_llm=resolve) == [
        f"{path}:1 llm: unknown profile 'bad' (did you mean 'fast'?).",
        f"{path}:5 agents.writer.llm: unknown profile 'nope' (did you mean 'fast'?).",
        f"{path}:7 tasks.draft.agent: unknown agent 'writr' (did you mean 'writer'?).",
    ]


def test_an_unused_agent_is_a_warning(tmp_path):
    path = write(tmp_path, MINIMAL.replace("tasks:", "  extra: {role: Extra}\n    tasks:"))
    assert load_crew_yaml(path).warnings == (f"{path}:3 agents.extra: not used by any task.",)


def test_delegates_name_agent_keys_and_coworkers_join_the_crew(tmp_path):
    path = write(
        tmp_path,
        """\
        agents:
          editor: {role: Editor, allow_delegation: true, delegates: [fact_checker]}
          fact_checker: {use: critic, role: Fact checker}
          idle: {role: Idle}
        tasks:
          edition: {description: Edit, agent: editor}
        """,
    )
    loaded = load_crew_yaml(path)
    editor, checker, idle = loaded.crew.agents
    assert (editor.allow_delegation, editor.delegates) == (True, ("Fact checker",))
    assert (checker.role, idle.role) == ("Fact checker", "Idle")  # in the crew without a task
    assert loaded.warnings == (f"{path}:4 agents.idle: not used by any task.",)
    # Without a list, a delegating agent may ask every other one: nobody is idle.
    path.write_text(path.read_text().replace(", delegates: [fact_checker]", ""))
    assert load_crew_yaml(path).warnings == ()
    path.write_text(path.read_text().replace("allow_delegation: true", "delegates: [fact_chekcer]"))
    assert problems(path) == [
        f"{path}:2 agents.editor.delegates: no other agent 'fact_chekcer' (did you mean"
        " 'fact_checker'?)."
    ]


# --- every problem, with its line ----------------------------------------------------------------


def test_every_problem_is_reported_at_once_in_file_order():
    path = TRIP / "broken.yaml"
    assert [p.split(": ", 1)[0] for p in problems(path)] == [
        f"{path}:4 inputs.days",
        f"{path}:5 max_concurency",
        f"{path}:6 on_failure",
        f"{path}:9 agents.guide.use",
        f"{path}:10 agents.guide.role",
        f"{path}:11 agents.guide.tools.0",
        f"{path}:11 agents.guide.tools.1",
        f"{path}:11 agents.guide.tools.2",
        f"{path}:11 agents.guide.tools.3",
        f"{path}:14 agents.planner.goal",
        f"{path}:17 agents.idle.max_iterations",
        f"{path}:21 tasks.sights.agent",
        f"{path}:22 tasks.sights.depends_on",
        f"{path}:23 tasks.itinerary.with",
        f"{path}:26 tasks.itinerary.depends_on",
        f"{path}:27 tasks.itinerary.output_model",
        f"{path}:31 tasks.first.depends_on",
        f"{path}:36 tasks.second.output_model.properties.when.type",
        f"{path}:40 tasks.third.retries",
        f"{path}:41 tasks.third.bogus",
    ]


def test_the_messages_say_what_is_wrong_and_how_to_fix_it():
    found = {
        p.split(": ", 1)[0].split(" ")[1]: p.split(": ", 1)[1]
        for p in problems(TRIP / "broken.yaml")
    }
    assert found["inputs.days"] == "default 'three' is not an integer."
    assert found["max_concurency"].startswith(
        "unknown field 'max_concurency' (did you mean 'max_concurrency'?). Allowed fields: name,"
    )
    assert found["on_failure"] == "should be 'fail_fast' or 'continue', got 'keep_going'."
    assert found["agents.guide.use"].startswith(
        "unknown role template 'reseacher' (did you mean 'researcher'?). Role templates: analyst,"
    )
    assert found["agents.guide.role"] == (
        "{destinaton} (did you mean 'destination'?) is not a declared input;"
        " declare under `inputs:` or fix the name."
    )
    assert (
        found["agents.guide.tools.0"]
        == "'trip_tools' has no 'count_wrds' (did you mean 'count_words'?)."
    )
    assert found["agents.guide.tools.1"] == (
        "expected 'module:name' such as 'mypkg.tools:search', got 'not_a_ref'."
    )
    assert found["agents.guide.tools.2"] == "'trip_tools:NUMBER' is not callable: it is 42."
    assert found["agents.guide.tools.3"].startswith("no module 'no_such_module' in ")
    assert found["agents.planner.goal"] == (
        "{dayz} (did you mean 'days'?), {budget} are not declared inputs;"
        " declare under `inputs:` or fix the name."
    )
    assert found["agents.idle.max_iterations"] == "should be greater than or equal to 1, got 0."
    assert found["tasks.sights.agent"] == "unknown agent 'gide' (did you mean 'guide'?)."
    assert found["tasks.sights.depends_on"] == "a task cannot depend on itself."
    assert found["tasks.itinerary.with"] == (
        "task template 'plan_itinerary' needs parameter 'subject' (What to plan, e.g. \"a 3-day"
        ' trip to Lisbon"); add it under with:, e.g. with: {subject: ...}.'
    )
    assert found["tasks.itinerary.depends_on"] == "unknown task 'sight' (did you mean 'sights'?)."
    assert found["tasks.itinerary.output_model"] == (
        "'trip_tools:NotAModel' is not a pydantic BaseModel subclass."
    )
    assert found["tasks.first.depends_on"] == (
        "tasks depend on each other in a cycle: first -> second -> first (each depends on the"
        " next); remove one of these dependencies."
    )
    assert found["tasks.second.output_model.properties.when.type"].startswith(
        "unsupported type 'date'; use string, integer, number, boolean, array or object"
    )
    assert found["tasks.third.retries"] == "should be greater than or equal to 0, got -1."
    assert found["tasks.third.bogus"].startswith(
        "unknown field 'bogus'. Allowed fields: use, with,"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "agents: {}\ntasks: {}\n",
            ["2 tasks: the crew has no tasks; add at least one."],
        ),
        (
            "name: x\n",
            [
                "1 agents: this field is required; add `agents: ...`.",
                "1 tasks: this field is required; add `tasks: ...`.",
            ],
        ),
        (
            MINIMAL + "max_concurrency: many\n",
            ["5 max_concurrency: should be a valid integer, got 'many'."],
        ),
        (
            MINIMAL + "max_concurrency: 0\n",
            ["5 max_concurrency: should be greater than or equal to 1, got 0."],
        ),
        (
            MINIMAL.replace("{role: Writer}", "{role: Writer, tols: [a:b]}"),
            [
                "2 agents.writer.tols: unknown field 'tols' (did you mean 'tools'?). Allowed"
                " fields: use, role, goal, backstory, llm, tools, max_iterations, board_tools,"
                " allow_delegation, delegates."
            ],
        ),
        (
            MINIMAL.replace("agent: writer}", "agent: writer, depends_on: draft}"),
            ["4 tasks.draft.depends_on: should be a valid list, got 'draft'."],
        ),
        (
            "agents:\n  writer: Writer\ntasks:\n  draft: {description: D, agent: writer}\n",
            [
                "2 agents.writer: should be a mapping of fields (use, role, goal, backstory, llm,"
                " tools, max_iterations, board_tools, allow_delegation, delegates), got 'Writer'."
            ],
        ),
        (
            "- a\n- b\n",
            ["1: a crew file is a mapping with `agents:` and `tasks:`, got list."],
        ),
        (
            MINIMAL.replace("{description: Write a draft, agent: writer}", "{agent: writer}"),
            ["4 tasks.draft: no description: set `description:` or `use:` a task template."],
        ),
        (
            MINIMAL.replace("{role: Writer}", "{goal: Write}"),
            [
                "2 agents.writer: no role: set `role:` or `use:` a role template"
                " (see `crew templates`)."
            ],
        ),
        (
            MINIMAL.replace("draft: {", "my draft: {"),
            ["4 tasks.my draft: Task 'my draft': id must not contain spaces; use e.g. 'my_draft'."],
        ),
        (
            MINIMAL.replace("Write a draft", '"Write about {topic}"') + "inputs: [topic]\n",
            ["5 inputs: should be a valid dictionary, got ['topic']."],
        ),
        (
            MINIMAL + "templates: [./nowhere]\n",
            ["5 templates.0: no folder './nowhere' next to this file."],
        ),
    ],
)
def test_single_problems(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:{e}" for e in expected]


def test_a_cycle_shows_its_path(tmp_path):
    path = write(
        tmp_path,
        """\
        agents:
          a: {role: A}
        tasks:
          one: {description: "1", agent: a, depends_on: [three]}
          two: {description: "2", agent: a, depends_on: [one]}
          three: {description: "3", agent: a, depends_on: [two]}
          four: {description: "4", agent: a, depends_on: [one]}
        """,
    )
    assert problems(path) == [
        f"{path}:4 tasks.one.depends_on: tasks depend on each other in a cycle:"
        " one -> three -> two -> one (each depends on the next); remove one of these dependencies."
    ]


def test_input_declarations_are_checked(tmp_path):
    path = write(
        tmp_path,
        """\
        inputs:
          days: {type: integer, default: 2.5}
          flag: {type: boolean, default: "yes"}
          tags: {type: list, default: [a]}
          when: {type: date}
          bad name: {description: x}
          extra: {description: x, requird: true}
        agents:
          writer: {role: Writer}
        tasks:
          draft: {description: "Write {days} {flag} {tags}", agent: writer}
        """,
    )
    assert problems(path) == [
        f"{path}:2 inputs.days: default 2.5 is not an integer.",
        f"{path}:3 inputs.flag: default 'yes' is not true or false.",
        f"{path}:5 inputs.when.type: should be 'string', 'integer', 'number', 'boolean', 'list'"
        " or 'object', got 'date'.",
        f"{path}:6 inputs.bad name: an input name must be a letter or _ followed by letters,"
        " digits, _ or -.",
        f"{path}:7 inputs.extra.requird: unknown field 'requird'. Allowed fields: description,"
        " type, default.",
    ]


# --- templates in crew files ---------------------------------------------------------------------


def test_task_template_params_problems_point_at_with(tmp_path):
    path = write(
        tmp_path,
        """\
        agents:
          a: {use: researcher}
        tasks:
          facts:
            use: research
            with:
              subjet: tea
            agent: a
          notes:
            description: Notes
            with: {x: 1}
            agent: a
          more:
            use: reserch
            agent: a
        """,
    )
    *found, unknown = problems(path)
    assert found == [
        f"{path}:6 tasks.facts.with: task template 'research' has no parameter 'subjet'"
        " (did you mean 'subject'?); it takes: subject, focus.",
        f"{path}:6 tasks.facts.with: task template 'research' needs parameter 'subject'"
        " (What to research); add it under with:, e.g. with: {subject: ...}.",
        f"{path}:11 tasks.notes.with: sets the parameters of a task template; add `use:`.",
    ]
    assert unknown.startswith(
        f"{path}:14 tasks.more.use: unknown task template 'reserch' (did you mean 'research'?)."
        " Task templates: critique, plan_itinerary, research,"
    )


def test_placeholders_from_templates_and_params_must_be_declared(tmp_path):
    path = write(
        tmp_path,
        """\
        inputs:
          city: {description: City}
        agents:
          a: {use: researcher}
        tasks:
          facts:
            use: research
            with: {subject: "{cty} in {year}"}
            agent: a
        """,
    )
    assert problems(path) == [
        f"{path}:7 tasks.facts.description: {{cty}} (did you mean 'city'?), {{year}} are not"
        " declared inputs (from task template 'research'); declare under `inputs:` or fix the name."
    ]


def test_templates_folders_and_the_environment_provide_templates(tmp_path, monkeypatch):
    monkeypatch.setenv("CREW_TEMPLATES_PATH", str(FIXTURES / "library"))
    local = tmp_path / "mine" / "roles"
    local.mkdir(parents=True)
    (local / "writer.yaml").write_text("about: a\nrole: Mine\ngoal: g\nbackstory: b\n")
    path = write(
        tmp_path,
        """\
        templates: [mine]
        inputs:
          audience: {description: Readers, default: everyone}
        agents:
          writer: {use: writer}
          translator: {use: translator, goal: null}
        tasks:
          draft: {use: write_article, with: {subject: tea}, agent: writer}
          french:
            use: translate
            with: {language: French}
            agent: translator
            depends_on: [draft]
        """,
    )
    crew = load_crew_yaml(path).crew
    draft, french = crew.tasks
    assert draft.agent is not None and draft.agent.role == "Mine"  # templates: first
    assert french.agent is not None and french.agent.role == "Translator"  # then the environment
    assert french.agent.goal == ""  # null clears what the template gave
    assert french.description == (
        "Translate the earlier output into French, in a neutral register, for {audience}."
    )
    assert draft.description.startswith("Write an article about tea for curious general readers")


def test_a_task_overrides_its_template_and_null_drops_the_output_model(tmp_path):
    path = write(
        tmp_path,
        """\
        agents:
          p: {use: planner, backstory: A local.}
        tasks:
          plan:
            use: plan_itinerary
            with: {subject: a weekend}
            expected_output: Three lines about {subject}.
            output_model: null
            agent: p
        """,
    )
    task = load_crew_yaml(path).crew.tasks[0]
    assert task.output_model is None
    assert task.expected_output == "Three lines about a weekend."  # params fill overrides too
    assert task.agent is not None and task.agent.backstory == "A local."
    assert task.agent.role == "Planner"


# --- module:callable references ------------------------------------------------------------------


def test_references_import_from_the_crew_files_folder_only_for_the_import(tmp_path):
    (tmp_path / "spec_refs_a.py").write_text(
        "from pydantic import BaseModel\n\n"
        "class Report(BaseModel):\n    title: str\n\n"
        "class Outer:\n    class Inner(BaseModel):\n        x: int\n\n"
        "def search(query: str) -> str:\n    return query\n"
    )
    (tmp_path / "spec_refs_b.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "spec_refs_c.py").write_text("raise RuntimeError('boom')\n")
    path = write(
        tmp_path,
        """\
        agents:
          a: {role: A, tools: ["spec_refs_a:search"]}
          b: {role: B, tools: ["spec_refs_b:x", "spec_refs_c:x", "spec_refs_a:Report.title"]}
        tasks:
          one: {description: "1", agent: a, output_model: "spec_refs_a:Report"}
          two: {description: "2", agent: a, output_model: "spec_refs_a:Outer.Inner"}
          three: {description: "3", agent: b, output_model: "spec_refs_a:search"}
          four: {description: "4", agent: b, output_model: [1]}
        """,
    )
    before = list(sys.path)
    assert problems(path) == [
        f"{path}:3 agents.b.tools.0: importing 'spec_refs_b' failed: No module named"
        " 'not_installed_anywhere'.",
        f"{path}:3 agents.b.tools.1: importing 'spec_refs_c' raised RuntimeError: boom.",
        f"{path}:3 agents.b.tools.2: 'spec_refs_a' has no 'Report.title'.",
        f"{path}:7 tasks.three.output_model: 'spec_refs_a:search' is not a pydantic BaseModel"
        " subclass.",
        f"{path}:8 tasks.four.output_model: an inline output_model must be a JSON schema with"
        " `type: object`, got [1]; or name a pydantic model as 'module:Class'.",
    ]
    assert sys.path == before
    path = write(
        tmp_path,
        """\
        agents:
          a: {role: A, tools: ["spec_refs_a:search"]}
        tasks:
          one: {description: "1", agent: a, output_model: "spec_refs_a:Report"}
          two: {description: "2", agent: a, output_model: "spec_refs_a:Outer.Inner"}
        """,
        name="valid.yaml",
    )
    crew = load_crew_yaml(path).crew
    one, two = crew.tasks
    assert one.output_model is sys.modules["spec_refs_a"].Report
    assert two.output_model is sys.modules["spec_refs_a"].Outer.Inner
    assert list(one.agent.tool_map) == ["search"]  # type: ignore[union-attr]


def test_each_crew_file_imports_its_own_neighbour_module(tmp_path):
    for folder, role in (("one", "First"), ("two", "Second")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "spec_same_name.py").write_text(
            f"def act() -> str:\n    return {role!r}\n"
        )
        write(
            tmp_path / folder,
            """\
            agents:
              a: {role: A, tools: ["spec_same_name:act"]}
            tasks:
              t: {description: T, agent: a}
            """,
        )
    first = load_crew_yaml(tmp_path / "one" / "crew.yaml").crew.tasks[0].agent
    second = load_crew_yaml(tmp_path / "two" / "crew.yaml").crew.tasks[0].agent
    assert first is not None and second is not None
    assert (first.tools[0](), second.tools[0]()) == ("First", "Second")  # type: ignore[operator]


# --- control flow --------------------------------------------------------------------------------

FLOW = """\
    inputs:
      topic: {description: The topic, default: tea}
    agents:
      analyst: {role: Analyst}
      writer: {role: "Writer on {topic}"}
    tasks:
      triage:
        agent: analyst
        description: Triage {topic}
        routes: {bug: [fix, log], question: answer}
      fix: {agent: writer, description: Fix, when: "triage.data.reason == 'crash'", join: any}
      log: {agent: writer, description: Log, join: quorum(2), depends_on: [answer]}
      answer: {agent: writer, description: Answer}
      ideas:
        agent: analyst
        description: Ideas
        output_model: {type: object, properties: {items: {type: array, items: {type: string}}}}
      expand:
        agent: writer
        description: "Expand {item} ({item_index}) on {topic}"
        for_each: ideas.data.items
      draft: {agent: writer, description: Draft, depends_on: [expand]}
      critique:
        agent: analyst
        description: Critique
        depends_on: [draft]
        output_model: {type: object, properties: {approved: {type: boolean}}}
      refine:
        loop: {tasks: [draft, critique], until: critique.data.approved, max_rounds: 3}
        depends_on: [ideas]
        join: best_effort
        description: Refine the draft
    """


def test_each_control_flow_construct_loads_into_its_task_fields(tmp_path):
    loaded = load_crew_yaml(write(tmp_path, FLOW))
    crew = loaded.crew
    tasks = {t.id: t for t in crew.tasks}
    assert list(tasks) == ["triage", "fix", "log", "answer", "ideas", "expand", "refine"]
    assert tasks["triage"].routes == {"bug": ("fix", "log"), "question": ("answer",)}
    assert tasks["triage"].output_model is not None  # the route model
    assert tasks["fix"].when == "triage.data.reason == 'crash'" and tasks["fix"].join == "any"
    assert tasks["log"].quorum == 2
    assert (tasks["expand"].kind, tasks["expand"].for_each) == ("map", "ideas.data.items")
    refine = tasks["refine"]
    assert refine.kind == "loop" and [t.id for t in refine.group] == ["draft", "critique"]
    assert (refine.until, refine.max_rounds) == ("critique.data.approved", 3)
    assert (refine.depends_on, refine.join) == (("ideas",), "best_effort")
    assert refine.description == "Refine the draft" and refine.agent is None
    draft, critique = refine.group
    assert draft.depends_on == ("expand",) and critique.output_model is not None
    # {item} and {item_index} belong to the map; only {topic} is an input.
    assert list(loaded.inputs) == ["topic"]
    crew.with_llm(ScriptedLLM()).plan({"topic": "tea"})  # the planner accepts the graph


def test_without_declared_inputs_map_names_and_loop_bodies_are_read_right(tmp_path):
    text = FLOW.split("    agents:")[1].replace("Draft,", '"Draft for {audience}",')
    loaded = load_crew_yaml(write(tmp_path, "    agents:" + text))
    assert list(loaded.inputs) == ["topic", "audience"]  # {audience} is inside the loop


def test_a_yaml_crew_routes_maps_and_loops_when_run(tmp_path):
    loaded = load_crew_yaml(write(tmp_path, FLOW))
    llm = ScriptedLLM(
        {
            "triage": {"route": "question"},
            "ideas": {"items": ["green", "black"]},
            "critique": [{"approved": False}, {"approved": True}],
        }
    )
    result = loaded.crew.with_llm(llm).run(loaded.resolve_inputs({}))

    assert result.status == "succeeded", result.to_dict()
    statuses = {t: r.status for t, r in result.tasks.items()}
    assert [statuses[t] for t in ("fix", "log", "answer")] == ["skipped", "skipped", "succeeded"]
    expands = [c.prompt for c in llm.calls_for("expand")]
    assert len(expands) == 2 and any("Expand black (1) on tea" in p for p in expands)
    assert [c.task_id for c in llm.calls][-4:] == ["draft", "critique", "draft", "critique"]


def test_an_expression_reading_an_unknown_task_names_the_file_and_line(tmp_path):
    path = write(tmp_path, FLOW.replace("triage.data.reason", "triag.data.reason"))
    with pytest.raises(ConfigError) as caught:
        load_crew_yaml(path)
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if "triag." in row)
    assert caught.value.problems == [
        f"{path}:{line} tasks.fix.when: `triag.data.reason == 'crash'` reads 'triag', no task of"
        " the crew. Did you mean 'triage'?"
    ]


def test_expressions_the_planner_rejects_name_the_task_and_field(tmp_path):
    path = write(tmp_path, FLOW.replace("triage.data.reason", "triage.data.raeson"))
    crew = load_crew_yaml(path).crew.with_llm(ScriptedLLM())  # the names are tasks of the file
    with pytest.raises(PlanError) as caught:
        crew.plan({"topic": "tea"})  # the fields it reads are the planner's to check
    assert len(caught.value.problems) == 1
    assert "Task 'fix' when: `triage.data.raeson == 'crash'`" in caught.value.problems[0]


def subcrew(folder: Path, text: str = "") -> Path:
    folder.mkdir()
    return write(
        folder,
        text
        or """\
        description: Research a topic.
        inputs:
          topic: {description: The topic}
          depth: {description: How deep, type: integer, default: 2}
        agents:
          researcher: {role: Researcher}
        tasks:
          search: {description: "Search {topic}, {depth} levels deep", agent: researcher}
        """,
    )


PARENT = """\
    agents:
      writer: {role: Writer}
    tasks:
      pick: {description: Pick a topic, agent: writer}
      research:
        crew: research
        inputs: {topic: pick.text}
      write: {description: Write, agent: writer, depends_on: [research]}
    """


def test_a_subcrew_is_loaded_from_its_file_with_its_defaults_as_inputs(tmp_path):
    subcrew(tmp_path / "research")
    loaded = load_crew_yaml(write(tmp_path, PARENT))
    research = loaded.crew.tasks[1]
    assert research.kind == "crew" and research.crew is not None
    assert research.crew.name == "research" and research.description == "Research a topic."
    assert research.inputs["topic"] == "pick.text" and callable(research.inputs["depth"])
    assert loaded.inputs == {}  # the subcrew's inputs are mapped, not the parent's

    llm = ScriptedLLM({"pick": "octopuses"})
    result = loaded.crew.with_llm(llm).run()
    assert result.status == "succeeded", result.to_dict()
    assert "Search octopuses, 2 levels deep" in llm.calls_for("search")[0].prompt


def test_subcrew_problems_name_their_own_file(tmp_path):
    sub = subcrew(
        tmp_path / "research",
        """\
        agents:
          researcher: {role: Researcher}
        tasks:
          search: {description: Search, agent: reseacher}
        """,
    )
    parent = write(tmp_path, PARENT.replace("agent: writer, depends", "agent: writr, depends"))
    assert problems(parent) == [
        f"{sub}:4 tasks.search.agent: unknown agent 'reseacher' (did you mean 'researcher'?).",
        f"{parent}:8 tasks.write.agent: unknown agent 'writr' (did you mean 'writer'?).",
    ]


def test_subcrew_inputs_are_checked_against_its_declared_inputs(tmp_path):
    subcrew(tmp_path / "research")
    path = write(tmp_path, PARENT.replace("{topic: pick.text}", "{topik: pick.text}"))
    assert problems(path) == [
        f"{path}:7 tasks.research.inputs.topik: the subcrew has no input 'topik' (did you mean"
        " 'topic'?); its inputs: topic, depth.",
        f"{path}:7 tasks.research.inputs: the subcrew needs topic (no default); map from the"
        " board or this crew's inputs: inputs: {topic: inputs.topic}.",
    ]


def test_crew_files_that_run_each_other_are_a_cycle(tmp_path):
    sub = subcrew(
        tmp_path / "research",
        """\
        agents:
          researcher: {role: Researcher}
        tasks:
          search: {description: Search, agent: researcher}
          again: {crew: ../crew.yaml}
        """,
    )
    parent = write(tmp_path, PARENT.replace("{topic: pick.text}", "{}"))
    assert problems(parent) == [
        f"{sub}:5 tasks.again.crew: crew files run each other in a cycle: {parent} -> {sub} ->"
        f" {parent} (each runs the next as a subcrew); remove one of these `crew:` tasks."
    ]
    itself = write(tmp_path, MINIMAL.rstrip(" ") + "      again: {crew: crew.yaml}\n")
    assert problems(itself) == [
        f"{itself}:5 tasks.again.crew: crew files run each other in a cycle: {itself} -> {itself}"
        " (each runs the next as a subcrew); remove one of these `crew:` tasks."
    ]


def test_a_hierarchical_crew_has_a_manager_a_goal_and_no_tasks(tmp_path):
    path = write(
        tmp_path,
        """\
        process: hierarchical
        manager: lead
        goal: Write a report on {topic}
        agents:
          lead: {role: Lead}
          researcher: {role: Researcher}
          writer: {role: Writer}
        """,
    )
    loaded = load_crew_yaml(path)
    crew = loaded.crew
    assert (crew.process, crew.goal) == ("hierarchical", "Write a report on {topic}")
    assert crew.manager is not None and crew.manager.role == "Lead"
    assert [t.id for t in crew.tasks] == ["plan", "work"]  # the manager plans the rest
    assert "Researcher" in crew.tasks[0].description and "- Lead:" not in crew.tasks[0].description
    assert list(loaded.inputs) == ["topic"] and loaded.warnings == ()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("join: any", "join: frist"),
            "11 tasks.fix.join: unknown join 'frist'; use all, any, best_effort or quorum(n),"
            " e.g. quorum(2).",
        ),
        (
            ("join: quorum(2)", "join: quorum 2"),
            "12 tasks.log.join: unknown join 'quorum 2' (did you mean 'quorum(n)'?); use all,"
            " any, best_effort or quorum(n), e.g. quorum(2).",
        ),
        (
            ("\"triage.data.reason == 'crash'\"", "true"),
            "11 tasks.fix.when: True is not an expression: write it as text, such as"
            ' "triage.data.approved" (in quotes in YAML).',
        ),
        (
            ("triage.data.reason == 'crash'", "triage.data.reason = 'crash'"),
            "11 tasks.fix.when: `triage.data.reason = 'crash'` is not a valid expression"
            " (col 20): use == to compare.",
        ),
        (
            ("for_each: ideas.data.items", "for_each: [ideas]"),
            "21 tasks.expand.for_each: ['ideas'] is not an expression: write it as text, such as"
            ' "triage.data.approved" (in quotes in YAML).',
        ),
        (
            ("[fix, log]", "[fix, lgo]"),
            "10 tasks.triage.routes.bug: unknown task 'lgo' (did you mean 'log'?).",
        ),
        (
            ("question: answer", "question: 3"),
            "10 tasks.triage.routes.question: should be a valid list, got 3.",
        ),
        (
            ("tasks: [draft, critique]", "tasks: [draft, critiqe]"),
            "29 tasks.refine.loop.tasks.1: unknown task 'critiqe' (did you mean 'critique'?).",
        ),
        (
            (", max_rounds: 3", ""),
            "29 tasks.refine.loop.max_rounds: a loop needs a bound: add `max_rounds:` (e.g."
            " max_rounds: 3); it ends sooner when `until` holds.",
        ),
        (
            ("until: critique.data.approved", "until: critique.data.(approved"),
            "29 tasks.refine.loop.until: `critique.data.(approved` is not a valid expression"
            " (col 15): invalid syntax.",
        ),
        (
            ("[draft, critique]", "[draft, critique, refine]"),
            "29 tasks.refine.loop.tasks.2: a loop cannot contain itself.",
        ),
        (
            ("join: best_effort", "agent: writer"),
            "31 tasks.refine.agent: does not apply to a loop; set it on the tasks of its body.",
        ),
        (
            ("description: Answer}", "description: Answer, inputs: {x: triage.text}}"),
            "13 tasks.answer.inputs: maps a subcrew's inputs; add `crew:`.",
        ),
        (
            ("answer: {agent: writer, ", "answer: {"),
            "13 tasks.answer: no agent: add `agent:` (agents: analyst, writer).",
        ),
        (
            ("answer: {agent: writer, description: Answer}", "answer: {crew: nowhere}"),
            "13 tasks.answer.crew: no crew file 'nowhere' next to this file; name a crew.yaml"
            " or its folder.",
        ),
        (
            ("inputs:", "manager: analyst\n    inputs:"),
            "1 manager: only a hierarchical crew has one; add `process: hierarchical`.",
        ),
        (
            ("inputs:", "process: sequential\n    inputs:"),
            "1 process: should be 'graph' or 'hierarchical', got 'sequential'.",
        ),
    ],
)
def test_control_flow_problems(tmp_path, change, expected):
    assert change[0] in FLOW
    path = write(tmp_path, FLOW.replace(*change))
    assert problems(path) == [f"{path}:{expected}"]


def test_a_task_is_in_one_loop_and_loops_are_not_inside_each_other(tmp_path):
    more = """\
      polish: {loop: {tasks: [draft, again], max_rounds: 2}}
      again: {loop: {tasks: [polish], max_rounds: 2}}
    """
    path = write(tmp_path, FLOW.rstrip(" ") + more)
    assert problems(path) == [
        f"{path}:33 tasks.polish.loop.tasks.0: already in loop 'refine'; a task is in one loop at"
        " most.",
        f"{path}:33 tasks.polish.loop.tasks: loops contain each other in a cycle: polish -> again"
        " -> polish (each contains the next); take one out of the other's tasks.",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "process: hierarchical\nmanager: leed\ngoal: G\nagents:\n  lead: {role: L}\n"
            "  w: {role: W}\n",
            ["2 manager: unknown agent 'leed' (did you mean 'lead'?)."],
        ),
        (
            "process: hierarchical\nagents:\n  w: {role: W}\n",
            [
                "1 process: needs `manager:`, the key of the agent that plans.",
                "1 process: needs `goal:`, what the crew is to achieve.",
            ],
        ),
        (
            "process: hierarchical\nmanager: w\ngoal: G\nagents:\n  w: {role: W}\n"
            "tasks:\n  draft: {description: D, agent: w}\n",
            [
                "4 agents: the manager needs other agents to plan the tasks for.",
                "6 tasks: a hierarchical crew's manager plans the tasks; remove `tasks:` (or use"
                " `process: graph`).",
            ],
        ),
    ],
)
def test_hierarchical_problems(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:{e}" for e in expected]


# --- safe loading --------------------------------------------------------------------------------


def test_python_tags_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = write(
        tmp_path,
        f"""\
        agents:
          writer: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]
        tasks:
          draft: {{description: D, agent: writer}}
        """,
    )
    with pytest.raises(ConfigError):
        load_crew_yaml(path)
    assert not marker.exists()


def test_a_python_tag_on_a_value_is_a_config_error(tmp_path):
    path = write(tmp_path, MINIMAL + "name: !!python/name:os.system\n")
    with pytest.raises(ConfigError, match="python/name"):
        load_crew_yaml(path)


# --- inputs --------------------------------------------------------------------------------------


def crew_file(**inputs: InputSpec) -> CrewFile:
    agent = Agent(role="A")
    return CrewFile(
        crew=Crew([Task(id="t", description="d", agent=agent)]),
        source=Path("crew.yaml"),
        inputs=inputs,
    )


TYPED = crew_file(
    city=InputSpec("city"),
    days=InputSpec("days", type="integer", default=3, required=False),
    budget=InputSpec("budget", type="number", default=10.5, required=False),
    cheap=InputSpec("cheap", type="boolean", default=False, required=False),
    tags=InputSpec("tags", type="list", default=[], required=False),
    prefs=InputSpec("prefs", type="object", default={}, required=False),
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {"city": "Lisbon"},
            {"city": "Lisbon", "days": 3, "budget": 10.5, "cheap": False, "tags": [], "prefs": {}},
        ),
        ({"city": "Lisbon", "days": "5"}, {"days": 5}),
        ({"city": "Lisbon", "days": " -2 "}, {"days": -2}),
        ({"city": "Lisbon", "days": 7}, {"days": 7}),
        ({"city": "Lisbon", "budget": "99.5"}, {"budget": 99.5}),
        ({"city": "Lisbon", "budget": 12}, {"budget": 12}),
        ({"city": "Lisbon", "cheap": "true"}, {"cheap": True}),
        ({"city": "Lisbon", "cheap": "No"}, {"cheap": False}),
        ({"city": "Lisbon", "cheap": True}, {"cheap": True}),
        ({"city": "Lisbon", "tags": '["a", "b"]'}, {"tags": ["a", "b"]}),
        ({"city": "Lisbon", "tags": ["x"]}, {"tags": ["x"]}),
        ({"city": "Lisbon", "prefs": '{"pace": "slow"}'}, {"prefs": {"pace": "slow"}}),
        ({"city": "3"}, {"city": "3"}),
    ],
)
def test_resolve_inputs_fills_defaults_and_converts(given, expected):
    resolved = TYPED.resolve_inputs(given)
    assert {name: resolved[name] for name in expected} == expected
    assert set(resolved) == {"city", "days", "budget", "cheap", "tags", "prefs"}
    assert type(resolved.get("days")) is int


def test_resolve_inputs_reports_every_problem_naming_the_file_and_input():
    with pytest.raises(ConfigError) as caught:
        TYPED.resolve_inputs(
            {
                "days": "three",
                "budget": "cheap",
                "cheap": "maybe",
                "tags": "a,b",
                "prefs": "[1]",
                "cty": "Lisbon",
            }
        )
    assert caught.value.problems == [
        "crew.yaml inputs.days: expected an integer, got 'three'.",
        "crew.yaml inputs.budget: expected a number, got 'cheap'.",
        "crew.yaml inputs.cheap: expected true or false, got 'maybe'.",
        "crew.yaml inputs.tags: expected a list in JSON such as '[\"a\", \"b\"]', got 'a,b'.",
        'crew.yaml inputs.prefs: expected an object in JSON such as \'{"key": "value"}\','
        " got '[1]'.",
        "crew.yaml inputs.cty: unknown input (did you mean 'city'?); inputs: city, days, budget,"
        " cheap, tags, prefs.",
        "crew.yaml inputs.city: missing required input; pass --input city=...",
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("city", 3, "expected a string, got 3"),
        ("days", True, "expected an integer, got True"),
        ("days", 2.5, "expected an integer, got 2.5"),
        ("cheap", 1, "expected true or false, got 1"),
        ("tags", {"a": 1}, "expected a list, got {'a': 1}"),
    ],
)
def test_typed_values_must_match(name, value, message):
    with pytest.raises(ConfigError, match=f"crew.yaml inputs.{name}: {message}"):
        TYPED.resolve_inputs({"city": "Lisbon", name: value})


def test_resolve_inputs_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match="inputs must be a mapping"):
        TYPED.resolve_inputs(["city"])  # type: ignore[arg-type]


# --- Python crews --------------------------------------------------------------------------------


def test_a_python_crew_variable():
    loaded = load_python_crew(FIXTURES / "py_crew.py", {})
    assert loaded.crew.name == "python-crew"
    assert loaded.description == "A one-task crew defined in Python, as a module-level `crew`."
    assert loaded.inputs == {"topic": InputSpec("topic"), "audience": InputSpec("audience")}
    llm = ScriptedLLM({"draft": "Tea, for all."})
    inputs = loaded.resolve_inputs({"topic": "tea", "audience": "kids"})
    result = loaded.crew.with_llm(llm).run(inputs)
    assert result.outputs["draft"].text == "Tea, for all."
    assert "Write about tea for kids" in llm.calls[0].prompt


def test_build_crew_gets_resolved_declared_inputs():
    loaded = load_python_crew(FIXTURES / "py_build.py", {"topic": "tea", "parts": "3"})
    assert [t.id for t in loaded.crew.tasks] == ["part1", "part2", "part3"]
    assert loaded.crew.tasks[2].description == "Write part 3 of 3 on {topic}"
    assert loaded.inputs["parts"] == InputSpec(
        "parts", description="How many parts", type="integer", default=2, required=False
    )
    assert len(load_python_crew(FIXTURES / "py_build.py", {"topic": "tea"}).crew.tasks) == 2
    with pytest.raises(ConfigError, match=r"py_build\.py inputs\.parts: expected an integer"):
        load_python_crew(FIXTURES / "py_build.py", {"topic": "tea", "parts": "many"})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "no crew found. Define a module-level `crew = Crew(...)` or a function"),
        ("crew = 'not a crew'\n", "`crew` is a str, not a crew.Crew."),
        ("def build_crew(inputs):\n    return None\n", "build_crew(inputs) returned a NoneType"),
        ("x = 1\n\nraise ValueError('bad')\n", ":3: running the file raised ValueError: bad"),
        ("def f(:\n", ":1: running the file raised SyntaxError"),
        (
            "def build_crew(inputs):\n    return inputs['topic']\n",
            ":2: build_crew(inputs) raised KeyError: 'topic'",
        ),
        ("INPUTS = ['topic']\n", "INPUTS: must be a dict of name -> {description, type, default}"),
        ("INPUTS = {'n': {'type': 'int'}}\n", "INPUTS.n.type: should be 'string', 'integer',"),
    ],
)
def test_python_crew_problems(tmp_path, source, message):
    path = write(tmp_path, source, name="mycrew.py")
    with pytest.raises(ConfigError) as caught:
        load_python_crew(path, {})
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_a_python_crew_may_import_its_neighbours(tmp_path):
    (tmp_path / "spec_neighbour.py").write_text("ROLE = 'Neighbour'\n")
    path = write(
        tmp_path,
        """\
        from spec_neighbour import ROLE

        from crew import Agent, Crew, Task

        crew = Crew([Task(id="t", description="d", agent=Agent(role=ROLE))])
        """,
        name="crew.py",  # named like the package: it must not shadow it
    )
    loaded = load_python_crew(path, {})
    assert loaded.crew.tasks[0].agent.role == "Neighbour"  # type: ignore[union-attr]
    assert str(tmp_path) not in sys.path


def test_a_missing_python_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_python_crew(tmp_path / "nope.py", {})
