"""CrewAI projects run unchanged: layouts, wiring read statically from crew.py, CrewAI's
dependency rules, structured outputs, inputs, warnings and errors."""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from crew import LLM, ConfigError
from crew.crewai import CrewAIProject, is_crewai_project, load_crewai_project
from crew.testing import Call, ScriptedLLM

FIXTURES = Path(__file__).parent / "fixtures" / "crewai"
LATEST = FIXTURES / "latest_ai_development"
TRIP = FIXTURES / "trip_planner"
MARKET = FIXTURES / "market_research"
BROKEN = FIXTURES / "broken"
MARKET_INPUTS = {"as_of": "2025-06-01"}


def load(path: Path) -> CrewAIProject:
    return load_crewai_project(path)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_crewai_project(path)
    return caught.value.problems


def edges(project: CrewAIProject, inputs: dict[str, object] | None = None) -> set[tuple[str, str]]:
    crew_file = project.crew_file
    given = {name: spec.default for name, spec in crew_file.inputs.items()} | (inputs or {})
    plan = crew_file.crew.with_llm(ScriptedLLM()).plan(given)
    return plan.edges()


def write_project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


AGENTS = """
    writer:
      role: Writer
      goal: Write
      backstory: Writes.
"""


# --- layouts ---------------------------------------------------------------------------------


def test_both_layouts_and_only_they_are_crewai_projects(tmp_path):
    assert all(is_crewai_project(p) for p in (LATEST, TRIP, MARKET, BROKEN / "missing_config"))
    assert not is_crewai_project(tmp_path)
    assert not is_crewai_project(FIXTURES)
    assert not is_crewai_project(LATEST / "pyproject.toml")


def test_a_folder_that_is_not_a_project_is_a_config_error(tmp_path):
    assert problems(tmp_path) == [
        f"{tmp_path}: not a CrewAI project: expected config/agents.yaml and config/tasks.yaml"
        " in it or in src/<package>/."
    ]


# --- wiring from crew.py ---------------------------------------------------------------------


def test_src_layout_agents_are_wired_in_crew_py_only():
    resolved: list[str] = []
    project = load_crewai_project(LATEST, resolve_llm=lambda name: resolved.append(name) or None)
    crew = project.crew_file.crew
    assert crew.name == "latest_ai_development"
    assert project.crew_file.source == LATEST
    assert project.crew_file.description == "LatestAiDevelopment crew"
    assert [(t.id, t.agent.role if t.agent else None) for t in crew.tasks] == [
        ("research_task", "{topic} Senior Data Researcher"),
        ("reporting_task", "{topic} Reporting Analyst"),
    ]
    research = crew.tasks[0]
    assert research.description.startswith("Conduct a thorough research about {topic}.")
    assert research.expected_output.endswith("relevant information about {topic}")  # stripped
    assert resolved == ["openai/gpt-4o-mini"]  # reporting_analyst's llm: in agents.yaml
    assert project.output_files == {"reporting_task": Path("report.md")}
    assert project.crew_file.warnings == (
        "tool SerperDevTool (agent researcher) is not available here: it needs credentials"
        " (SERPER_API_KEY) and its package crewai_tools is not installed; the tasks run without"
        " it",
    )


def test_an_llm_string_becomes_an_llm_by_default():
    crew = load_crewai_project(LATEST).crew_file.crew
    analyst = crew.tasks[1].agent
    assert analyst is not None and isinstance(analyst.llm, LLM)
    assert analyst.llm.model == "openai/gpt-4o-mini"
    assert crew.tasks[0].agent is not None and crew.tasks[0].agent.llm is None  # crew default


def test_a_value_in_crew_py_overrides_the_yaml_one():
    resolved: list[str] = []
    project = load_crewai_project(MARKET, resolve_llm=lambda name: resolved.append(name) or None)
    tasks = {t.id: t for t in project.crew_file.crew.tasks}
    competitors = tasks["analyse_competitors"]
    assert competitors.agent is not None and competitors.agent.role == "Market Analyst"
    assert competitors.depends_on == ("collect_sources",)  # YAML says scan_news
    assert project.output_files == {"write_brief": Path("brief.json")}  # YAML says draft.md
    writer = tasks["write_brief"].agent
    assert writer is not None and writer.max_iterations == 3  # YAML says 8
    assert resolved == ["openai/gpt-4o-mini"]  # YAML says anthropic/claude-3-5-haiku-latest


def test_each_agent_is_built_once_and_shared_by_its_tasks():
    tasks = {t.id: t for t in load(MARKET).crew_file.crew.tasks}
    assert tasks["collect_sources"].agent is tasks["scan_news"].agent
    assert tasks["analyse_market"].agent is tasks["analyse_competitors"].agent


def test_crew_py_task_methods_set_which_tasks_exist_and_their_order(tmp_path):
    root = write_project(
        tmp_path / "ordered",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": """
                first:
                  description: First.
                  agent: writer
                second:
                  description: Second.
                  agent: writer
                spare:
                  description: Not used.
                  agent: writer
            """,
            "crew.py": """
                @CrewBase
                class Ordered:
                    @agent
                    def writer(self):
                        return Agent(config=self.agents_config["writer"])

                    @task
                    def second(self):
                        return Task(config=self.tasks_config["second"])

                    @task
                    def first(self):
                        return Task(config=self.tasks_config["first"])
            """,
        },
    )
    project = load(root)
    assert [t.id for t in project.crew_file.crew.tasks] == ["second", "first"]
    assert edges(project) == {("second", "first")}
    assert project.crew_file.warnings == (
        f"{root}/config/tasks.yaml:7 spare: not used by any @task method; ignored",
    )


def test_the_tasks_listed_in_the_crew_method_set_the_order(tmp_path):
    root = write_project(
        tmp_path / "listed",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": "a:\n  description: A.\nb:\n  description: B.\n",
            "crew.py": """
                @CrewBase
                class Listed:
                    agents_config = "config/agents.yaml"

                    @agent
                    def writer(self):
                        return Agent(**self.agents_config["writer"])

                    @task
                    def a(self):
                        return Task(config=self.tasks_config["a"], agent=self.writer())

                    @task
                    def b(self):
                        return Task(config=self.tasks_config["b"], agent=self.writer())

                    @crew
                    def crew(self):
                        return Crew(agents=self.agents, tasks=[self.b(), self.a()])
            """,
        },
    )
    assert [t.id for t in load(root).crew_file.crew.tasks] == ["b", "a"]


def test_agent_and_task_settings_may_be_keyword_arguments_in_crew_py(tmp_path):
    root = write_project(
        tmp_path / "inline",
        {
            "config/agents.yaml": "",
            "config/tasks.yaml": "",
            "crew.py": """
                @CrewBase
                class Inline:
                    @agent
                    def poet(self):
                        return Agent(role="Poet", goal="Rhyme about {subject}", backstory="Old.")

                    @task
                    def poem(self):
                        return Task(description="A poem", expected_output="4 lines",
                                    agent=self.poet())
            """,
        },
    )
    task = load(root).crew_file.crew.tasks[0]
    assert (task.id, task.description, task.expected_output) == ("poem", "A poem", "4 lines")
    assert task.agent is not None and task.agent.goal == "Rhyme about {subject}"


# --- dependencies ----------------------------------------------------------------------------


def test_a_task_without_context_depends_on_every_earlier_task():
    assert edges(load(TRIP)) == {
        ("identify_task", "gather_task"),
        ("identify_task", "plan_task"),
        ("gather_task", "plan_task"),
    }


def test_context_lists_the_only_dependencies_and_async_without_context_has_none():
    assert edges(load(MARKET), MARKET_INPUTS) == {
        ("collect_sources", "analyse_market"),
        ("collect_sources", "analyse_competitors"),
        # scan_news is async without context: it depends on nothing ...
        # ... and write_brief, without context, depends on every earlier task, scan_news too.
        ("collect_sources", "write_brief"),
        ("analyse_market", "write_brief"),
        ("analyse_competitors", "write_brief"),
        ("scan_news", "write_brief"),
    }


def test_an_empty_context_means_no_dependencies_and_an_async_task_is_still_earlier(tmp_path):
    root = write_project(
        tmp_path / "flat",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": """
                warmup:
                  description: Warm up.
                  agent: writer
                  async_execution: true
                alone:
                  description: Alone.
                  agent: writer
                  context: []
                last:
                  description: Last.
                  agent: writer
            """,
        },
    )
    assert edges(load(root)) == {("warmup", "last"), ("alone", "last")}


def test_independent_tasks_run_in_parallel():
    started: dict[str, asyncio.Event] = {}

    async def answer(call: Call) -> object:
        started.setdefault(call.task_id, asyncio.Event()).set()
        pairs = {"analyse_market": "analyse_competitors", "collect_sources": "scan_news"}
        pairs |= {b: a for a, b in pairs.items()}
        if call.task_id in pairs:  # each waits until its partner is running too
            other = started.setdefault(pairs[call.task_id], asyncio.Event())
            await asyncio.wait_for(other.wait(), timeout=5)
        if call.task_id == "analyse_competitors":
            return {"competitors": [{"name": "Acme Roasters"}]}
        if call.task_id == "write_brief":
            return {"market": "coffee", "summary": "Growing.", "confidence": 7}
        return f"{call.task_id} done"

    project = load(MARKET)
    llm = ScriptedLLM(answer)
    inputs = {n: s.default for n, s in project.crew_file.inputs.items()} | MARKET_INPUTS
    result = project.crew_file.crew.with_llm(llm).run(inputs).raise_for_status()
    assert llm.max_in_flight >= 2
    ends = {call.task_id: end for call, end in llm.finished}
    brief = llm.calls_for("write_brief")[0]
    assert all(ends[t] <= brief.started for t in ends if t != "write_brief")
    assert "### scan_news" in brief.prompt and "### analyse_market" in brief.prompt
    assert "### collect_sources" in llm.calls_for("analyse_market")[0].prompt
    assert "### scan_news" not in llm.calls_for("analyse_competitors")[0].prompt
    assert "home coffee roasters" in llm.calls_for("collect_sources")[0].prompt
    competitors = result.outputs["analyse_competitors"].data
    assert competitors.competitors[0].name == "Acme Roasters"


# --- structured outputs ----------------------------------------------------------------------


def test_output_pydantic_is_rebuilt_and_validated():
    project = load(MARKET)
    brief = project.crew_file.crew.tasks[-1]
    model = brief.output_model
    assert model is not None and model.__name__ == "MarketBrief"
    assert model.__doc__ == "A one-page market brief."
    schema = model.model_json_schema()
    assert schema["required"] == ["market", "summary", "confidence"]
    assert schema["properties"]["summary"]["description"] == "Two or three sentences."
    llm = ScriptedLLM(
        {
            "analyse_competitors": {"competitors": []},
            "write_brief": {
                "market": "coffee",
                "summary": "Growing fast.",
                "opportunities": [{"title": "Subscriptions", "size_eur": 1.5e6}],
                "confidence": 8,
            },
        }
    )
    inputs = {n: s.default for n, s in project.crew_file.inputs.items()} | MARKET_INPUTS
    result = project.crew_file.crew.with_llm(llm).run(inputs).raise_for_status()
    data = result.outputs["write_brief"].data
    assert isinstance(data, model)
    assert (data.market, data.confidence, data.recommended) == ("coffee", 8, False)
    assert data.opportunities[0].title == "Subscriptions"
    assert data.opportunities[0].size_eur == 1.5e6


def test_output_json_classes_are_found_in_other_modules_of_the_package():
    tasks = {t.id: t for t in load(MARKET).crew_file.crew.tasks}
    table = tasks["analyse_competitors"].output_model
    assert table is not None and table.__doc__ == "Competitors, strongest first."
    row = table.model_validate({"competitors": [{"name": "A"}]}).competitors[0]
    assert (row.name, row.website, row.strengths, row.price_eur) == ("A", None, [], None)
    assert tasks["scan_news"].output_model is None  # dict[str, Any]: plain text, with a warning


def test_unreadable_or_huge_modules_of_the_package_do_not_stop_the_project(tmp_path):
    project = tmp_path / "market"
    shutil.copytree(MARKET, project)
    package = next(p.parent for p in project.rglob("crew.py"))
    (package / "blob.py").write_bytes(b"\xff\xfe\x00binary" * 10)
    (package / "huge.py").write_text("x = 1\n" * 400_000, encoding="utf-8")
    (package / "deep.py").write_text("y = " + "[" * 5_000 + "]" * 5_000 + "\n", encoding="utf-8")
    tasks = {t.id: t for t in load(project).crew_file.crew.tasks}
    assert tasks["analyse_competitors"].output_model is not None


def test_typing_style_annotations_and_inheritance_are_rebuilt(tmp_path):
    root = write_project(
        tmp_path / "typed",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": """
                report:
                  description: Report.
                  agent: writer
                  output_pydantic: Report
                dated:
                  description: Dated.
                  agent: writer
                  output_json: Dated
            """,
            "crew.py": """
                from typing import ClassVar, List, Optional, Union
                from pydantic import BaseModel, Field

                class Base(BaseModel):
                    title: str

                class Report(Base):
                    kind: ClassVar[str] = "report"
                    tags: List[str] = Field(default_factory=list)
                    score: Optional[float] = None
                    value: Union[int, str]
                    parent: "Optional[Base]" = None
                    _secret: int = 0

                class Dated(BaseModel):
                    when: str = Field(default_factory=today)
            """,
        },
    )
    project = load(root)
    report = project.crew_file.crew.tasks[0].output_model
    assert report is not None
    assert set(report.model_fields) == {"title", "tags", "score", "value", "parent"}
    parsed = report.model_validate({"title": "T", "value": 3, "parent": {"title": "P"}})
    assert (parsed.tags, parsed.score, parsed.value, parsed.parent.title) == ([], None, 3, "P")
    assert project.crew_file.crew.tasks[1].output_model is None
    assert project.crew_file.warnings == (
        "output_json Dated (task dated) cannot be rebuilt here: the default of field 'when' is"
        " computed; the task returns plain text",
    )


# --- inputs ----------------------------------------------------------------------------------


def test_main_py_literals_are_defaults_and_computed_values_are_skipped():
    inputs = load(LATEST).crew_file.inputs
    assert list(inputs) == ["topic", "current_year"]
    assert (inputs["topic"].default, inputs["topic"].required) == ("AI LLMs", True)
    # str(datetime.now().year) is computed: no default, so it must be given; train()'s
    # inputs = {...} is not the one run() uses.
    assert (inputs["current_year"].default, inputs["current_year"].type) == (None, "text")


def test_inputs_may_be_strings_numbers_booleans_and_lists():
    crew_file = load(MARKET).crew_file
    assert {n: (s.type, s.default) for n, s in crew_file.inputs.items()} == {
        "market": ("text", "home coffee roasters"),
        "region": ("text", "Europe"),
        "channels": ("text", ["online", "retail"]),
        "max_competitors": ("text", 5),
        "include_prices": ("text", True),
        "as_of": ("text", None),
    }
    # CrewAI fills a placeholder with str(value): Python's True and ['a'], not JSON's.
    assert crew_file.resolve_inputs({"as_of": "2025"}) == {
        "as_of": "2025",
        "market": "home coffee roasters",
        "region": "Europe",
        "channels": "['online', 'retail']",
        "max_competitors": "5",
        "include_prices": "True",
    }


def test_given_inputs_of_any_json_type_are_filled_in_as_crewai_does(tmp_path):
    root = write_project(
        tmp_path / "typed",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": """
                t:
                  description: "days={days} ok={ok} none={none} cities={cities} f={f} s={s}"
                  agent: writer
            """,
        },
    )
    crew_file = load(root).crew_file
    # What --inputs-file gives: numbers, booleans, null and lists as well as strings.
    given = {"days": 3, "ok": True, "none": None, "cities": ["Porto", "Lisbon"], "f": 1.5}
    inputs = crew_file.resolve_inputs(given | {"s": "x"})
    llm = ScriptedLLM()
    crew_file.crew.with_llm(llm).run(inputs).raise_for_status()
    assert "days=3 ok=True none=None cities=['Porto', 'Lisbon'] f=1.5 s=x" in llm.calls[0].prompt


def test_every_placeholder_is_a_required_string_input_and_json_braces_are_not():
    project = load(TRIP)
    assert list(project.crew_file.inputs) == [
        "origin",  # from output_file: itinerary_{origin}.md, and the agent's goal
        "cities",
        "interests",
        "travel-dates",
        "days",
    ]
    assert all(s.required and s.type == "text" for s in project.crew_file.inputs.values())
    assert project.output_files == {"plan_task": Path("itinerary_{origin}.md")}
    assert '{"city": "...", "highlights": ["..."]}' in project.crew_file.crew.tasks[1].description


def test_the_flat_layout_runs_with_inputs_filled_in():
    llm = ScriptedLLM({"plan_task": "Day 1: Lisbon"})
    crew = load(TRIP).crew_file.crew.with_llm(llm)
    inputs = {"origin": "Porto", "cities": "Lisbon, Madrid", "interests": "food"}
    result = crew.run(inputs | {"travel-dates": "May", "days": 3}).raise_for_status()
    assert result.output is not None and result.output.text == "Day 1: Lisbon"
    assert "Compare these cities: Lisbon, Madrid." in llm.calls_for("identify_task")[0].prompt
    assert "full 3-day travel itinerary" in llm.calls_for("plan_task")[0].prompt


# --- warnings --------------------------------------------------------------------------------


def test_what_cannot_run_here_is_one_warning_each():
    warnings = load(MARKET).crew_file.warnings
    tasks_yaml = MARKET / "src/market_research/config/tasks.yaml"
    assert warnings == (
        f"{tasks_yaml}:36 legacy_summary: not used by any @task method; ignored",
        "step_callback (agent researcher) is ignored: callbacks are not run here",
        "llm LLM(model='gpt-4o', temperature=0.2) (agent analyst) is a custom LLM object; the"
        " agent uses the crew's default model",
        "output_pydantic NewsDigest (task scan_news) cannot be rebuilt here: field 'raw' has type"
        " dict[str, Any]; the task returns plain text",
        "callback (task scan_news) is ignored: callbacks are not run here",
        "@before_kickoff prepare_inputs (crew) is ignored: hooks are not run here",
        "process=Process.hierarchical (crew) is ignored: there is no manager; the tasks run as a"
        " dependency graph",
        "memory (crew) is ignored: memory is not supported; tasks share their outputs through"
        " the board",
        "planning (crew) is ignored: planning is not supported; the task graph is the plan",
        "manager_llm (crew) is ignored: there is no manager; the tasks run as a dependency graph",
        "tool SerperDevTool (agent researcher) is not available here: it needs credentials"
        " (SERPER_API_KEY) and its package crewai_tools is not installed; the tasks run without"
        " it",
        "tool ScrapeWebsiteTool (agent researcher) is not available here: its package"
        " crewai_tools is not installed; the tasks run without it",
    )


def test_tools_named_in_yaml_and_on_tasks_are_warned_about(tmp_path):
    root = write_project(
        tmp_path / "tools",
        {
            "config/agents.yaml": textwrap.dedent(AGENTS)
            + "  tools: [search_tool]\n  llm: my_llm\n",
            "config/tasks.yaml": "write:\n  description: Write.\n  agent: writer\n",
            "crew.py": """
                @CrewBase
                class Tools:
                    @llm
                    def my_llm(self):
                        return LLM(model="gpt-4o")

                    @task
                    def write(self):
                        return Task(config=self.tasks_config["write"], tools=[FileReadTool()],
                                    output_file=f"{self.name}.md")
            """,
        },
    )
    project = load(root)
    assert project.output_files == {}
    assert project.crew_file.warnings == (
        "llm my_llm (agent writer) is a custom LLM object; the agent uses the crew's default model",
        "tool search_tool (agent writer) is not available here: it is the project's own code,"
        " which crew never runs; the tasks run without it",
        "tool FileReadTool (task write) is not available here: it is the project's own code,"
        " which crew never runs; the tasks run without it",
        "output_file f'{self.name}.md' (task write) is not a literal path; the output is not"
        " written to a file",
    )


# --- user code is never run ------------------------------------------------------------------


def test_the_projects_code_is_read_and_never_run():
    # market_research's crew.py and main.py import modules that do not exist and then raise
    # SystemExit("executed!") at import time.
    for name in ("crewai", "market_research", "market_research_missing_dependency"):
        sys.modules.pop(name, None)
    project = load(MARKET)
    assert len(project.crew_file.crew.tasks) == 5
    assert not {"crewai", "market_research", "latest_ai_development"} & set(sys.modules)


# --- errors ----------------------------------------------------------------------------------


def test_a_missing_config_file_is_reported_with_its_path():
    assert problems(BROKEN / "missing_config") == [
        f"{BROKEN}/missing_config/config/tasks.yaml: not found; a CrewAI project declares its"
        " tasks there."
    ]


def test_bad_references_in_yaml_are_all_reported_with_file_line_and_field():
    tasks = BROKEN / "bad_references/config/tasks.yaml"
    agents = BROKEN / "bad_references/config/agents.yaml"
    assert problems(BROKEN / "bad_references") == [
        f"{tasks}:8 reporting_task.agent: unknown agent 'reporter' (did you mean"
        " 'reporting_analyst'?)",
        f"{tasks}:11 reporting_task.context.1: unknown task 'reserch_task' (did you mean"
        " 'research_task'?)",
        f"{tasks}:13 summary_task: the task has no agent; add 'agent: <name>' to it in tasks.yaml"
        " or agent=self.<name>() to its @task method.",
        f"{tasks}:17 review_task.description: missing; add it to the entry.",
        f"{agents}:11 editor.role: missing; add it to the entry.",
    ]


def test_bad_references_in_crew_py_are_reported_with_file_line_and_field():
    crew_py = BROKEN / "bad_crew_py/src/bad_crew_py/crew.py"
    assert problems(BROKEN / "bad_crew_py") == [
        f"{crew_py}:18 reporting_task.config: config/tasks.yaml has no 'reporting' (did you"
        " mean 'reporting_task'?)",
        f"{crew_py}:13 research_task.agent: unknown agent 'reporter' (did you mean 'researcher'?)",
        f"{crew_py}:20 reporting_task.context: unknown task 'reserch_task' (did you mean"
        " 'research_task'?)",
        f"{crew_py}:24 orphan_task: the task has no agent; add 'agent: <name>' to it in"
        " tasks.yaml or agent=self.<name>() to its @task method.",
    ]


def test_invalid_yaml_is_reported_by_file_and_line():
    agents = BROKEN / "bad_yaml/config/agents.yaml"
    assert problems(BROKEN / "bad_yaml") == [
        f"{agents}:4: invalid YAML: mapping values are not allowed here. Check the indentation"
        " and quotes."
    ]


def test_syntax_errors_in_crew_py_and_main_py_are_reported_by_file_and_line(tmp_path):
    root = tmp_path / "latest_ai_development"
    shutil.copytree(LATEST, root)
    crew_py, main_py = (
        root / "src/latest_ai_development/crew.py",
        root / "src/latest_ai_development/main.py",
    )
    crew_py.write_text("@CrewBase\nclass Broken:\n    def researcher(self)\n        pass\n")
    main_py.write_text("def run():\n    inputs = {'topic': 'AI'\n")
    assert problems(root) == [
        f"{crew_py}:3: invalid Python: expected ':'. crew reads this file without running it,"
        " but it must parse.",
        f"{main_py}:2: invalid Python: '{{' was never closed. crew reads this file without"
        " running it, but it must parse.",
    ]


def test_an_unknown_crew_py_reference_in_the_crew_method_is_reported(tmp_path):
    root = write_project(
        tmp_path / "listed",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": "a:\n  description: A.\n  agent: writer\n",
            "crew.py": """
                @CrewBase
                class Listed:
                    @task
                    def a(self):
                        return Task(config=self.tasks_config["a"])

                    @crew
                    def crew(self):
                        return Crew(tasks=[self.a(), self.b()])
            """,
        },
    )
    assert problems(root) == [
        f"{root}/crew.py:9 crew.tasks: unknown task 'b' (known tasks: a)",
    ]


def test_allow_delegation_is_carried_over():
    crew = load(MARKET).crew_file.crew
    delegating = {agent.role.split()[0]: agent.allow_delegation for agent in crew.agents}
    assert True in delegating.values() and False in delegating.values()


# --- crews in any module ---------------------------------------------------------------------

FLOW = Path(__file__).parent / "fixtures" / "crewai_flow"
FLOW_CONFIG = FLOW / "src/content_flow/crews/content_crew/config"


def test_a_flow_crew_is_read_from_its_own_module_with_its_models_and_tools():
    assert is_crewai_project(FLOW)
    project = load(FLOW)  # main.py kicks off ContentCrew; EditingCrew sits beside it
    crew = project.crew_file.crew
    assert [t.id for t in crew.tasks] == ["planning_task", "writing_task"]
    assert project.crew_file.description == "Content Crew"
    outline = crew.tasks[0].output_model
    assert outline is not None and outline.__doc__ == "The outline of a post."
    assert project.crew_file.inputs["words"].default == 600  # kickoff(inputs={...}) literals
    # editing_task is EditingCrew's, so only stale_task is unused.
    assert project.crew_file.warnings[0] == (
        f"{FLOW_CONFIG}/tasks.yaml:16 stale_task: not used by any @task method; ignored"
    )


def test_crew_chooses_the_class_to_run():
    project = load_crewai_project(FLOW, crew_class="EditingCrew")
    assert [t.id for t in project.crew_file.crew.tasks] == ["editing_task"]
    assert project.crew_file.description == "Editing Crew: the same config folder, another task."
    with pytest.raises(ConfigError) as caught:
        load_crewai_project(FLOW, crew_class="EditCrew")
    assert caught.value.problems == [
        "--crew EditCrew: the project has no @CrewBase class EditCrew (did you mean"
        " 'EditingCrew'?)."
    ]


def test_several_classes_and_no_main_py_to_tell_them_apart_ask_for_crew(tmp_path):
    root = tmp_path / "two"
    shutil.copytree(FLOW, root)
    (root / "src/content_flow/main.py").write_text("print('no crew here')\n")
    crews = root / "src/content_flow/crews/content_crew"
    assert problems(root) == [
        f"{root}/src/content_flow: the project has 2 @CrewBase classes: ContentCrew"
        f" ({crews}/content_crew.py), EditingCrew ({crews}/editing_crew.py); main.py kicks off"
        " none of them. Choose one with --crew ContentCrew."
    ]


def test_crew_plan_takes_crew_and_shows_the_tool_warnings(capsys, monkeypatch, tmp_path):
    from crew.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREW_MODEL", "openai/fake")  # planning calls no model
    assert main(["plan", str(FLOW), "--crew", "EditingCrew"]) == 0
    out = capsys.readouterr()
    assert "editing_task" in out.out and "planning_task" not in out.out
    assert main(["plan", str(FLOW), "-i", "topic=AI"]) == 0
    out = capsys.readouterr()
    assert "tool SerperDevTool (agent planner) is not available here" in out.err
    assert main(["plan", str(TRIP), "--crew", "X"]) == 2
    assert "--crew X: " in capsys.readouterr().err


# --- tool warnings ---------------------------------------------------------------------------


def test_one_warning_per_tool_naming_its_class_and_why_it_cannot_run():
    warnings = [w for w in load(FLOW).crew_file.warnings if w.startswith("tool ")]
    assert warnings == [
        "tool SerperDevTool (agent planner) is not available here: it needs credentials"
        " (SERPER_API_KEY) and its package crewai_tools is not installed; the tasks run without"
        " it",
        # scrape_tool = ScrapeWebsiteTool(), given to an agent and to a task: one line.
        "tool ScrapeWebsiteTool (agent planner; task writing_task) is not available here: its"
        " package crewai_tools is not installed; the tasks run without it",
        # agents.yaml's tools: [counter] names the @tool method counter(), which makes one.
        "tool WordCountTool (agent writer) is not available here: it is the project's own code,"
        " which crew never runs; the tasks run without it",
    ]


def test_a_tool_shared_by_every_agent_is_one_warning(tmp_path):
    agents = "\n".join(
        f"{name}:\n  role: {name}\n  goal: Help.\n  backstory: Helps.\n" for name in "abc"
    )
    root = write_project(
        tmp_path / "trip",
        {
            "config/agents.yaml": agents,
            "config/tasks.yaml": "".join(
                f"t{n}:\n  description: T.\n  agent: {n}\n" for n in "abc"
            ),
            "crew.py": """
                from crewai_tools import SerperDevTool
                from trip.tools.calculator import CalculatorTool
                search = SerperDevTool()

                @CrewBase
                class Trip:
                    @agent
                    def a(self):
                        return Agent(
                            config=self.agents_config["a"], tools=[search, CalculatorTool()]
                        )
                    @agent
                    def b(self):
                        return Agent(
                            config=self.agents_config["b"], tools=[search, CalculatorTool()]
                        )
                    @agent
                    def c(self):
                        return Agent(config=self.agents_config["c"], tools=[search])
            """,
        },
    )
    warnings = load(root).crew_file.warnings
    assert [w.split(" is not")[0] for w in warnings] == [
        "tool SerperDevTool (agents a, b, c)",
        "tool CalculatorTool (agents a, b)",
    ]
    assert "the project's own code" in warnings[1]


# --- placeholders in roles -------------------------------------------------------------------


def test_a_role_with_a_placeholder_is_filled_in_wherever_it_is_shown():
    import io

    from rich.console import Console

    from crew.console import ConsoleView, plan_mermaid, render_plan, render_result

    crew = load(LATEST).crew_file.crew.with_llm(ScriptedLLM())
    inputs = {"topic": "Rust", "current_year": "2025"}
    console = Console(file=io.StringIO(), record=True, width=160)
    view = ConsoleView(console, live=False, agents={t.id: t.agent.role for t in crew.tasks})
    result = crew.run(inputs, on_event=view).raise_for_status()
    render_result(result, console, show_board=True)
    render_plan(crew.plan(inputs), console, inputs=inputs)
    shown = console.export_text() + plan_mermaid(crew.plan(inputs), inputs=inputs)
    assert "{topic}" not in shown
    assert "started research_task (Rust Senior Data Researcher)" in shown  # progress line
    assert shown.count("Rust Reporting Analyst") >= 4  # progress, board, usage, plan, mermaid
    report = result.tasks["reporting_task"]
    assert report.status == "succeeded"
    prompt = crew.llm.calls_for("reporting_task")[0].prompt  # type: ignore[union-attr]
    assert "### research_task (by Rust Senior Data Researcher)" in prompt


# --- structured outputs that do not parse ----------------------------------------------------


def test_an_answer_that_never_matches_output_json_is_kept_as_text_with_one_warning(tmp_path):
    import io

    from rich.console import Console

    from crew import events
    from crew.console import ConsoleView

    root = write_project(
        tmp_path / "lenient",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": """
                pick:
                  description: Pick a city.
                  agent: writer
                  output_json: City
                write:
                  description: Write about it.
                  agent: writer
            """,
            "crew.py": """
                from pydantic import BaseModel

                class City(BaseModel):
                    name: str
            """,
        },
    )
    crew = load(root).crew_file.crew
    assert crew.tasks[0].output_model is not None
    llm = ScriptedLLM({"pick": "Porto, of course.", "write": "Porto is lovely."})
    seen: list[events.Event] = []
    console = Console(file=io.StringIO(), record=True, width=200)
    view = ConsoleView(console, live=False)
    result = crew.with_llm(llm).run(on_event=lambda e: (seen.append(e), view(e)))
    assert result.status == "succeeded"
    assert len(llm.calls_for("pick")) == 2  # the answer, then the repair turn
    assert (result.outputs["pick"].text, result.outputs["pick"].data) == ("Porto, of course.", None)
    assert "Porto, of course." in llm.calls_for("write")[0].prompt
    kept = [e for e in seen if isinstance(e, events.OutputKeptAsText)]
    assert [(e.task_id, e.model) for e in kept] == [("pick", "City")]
    assert console.export_text().count("warning: pick: the answer does not match City") == 1


def test_crews_own_output_model_stays_strict():
    from pydantic import BaseModel

    from crew import Agent, Crew, Task

    class City(BaseModel):
        name: str

    writer = Agent(role="Writer", goal="Write")
    crew = Crew([Task("pick", "Pick a city.", "", writer, output_model=City)])
    result = crew.with_llm(ScriptedLLM({"pick": "Porto, of course."})).run()
    assert result.status == "failed"


def test_an_async_task_without_context_is_given_no_context_as_in_a_crewai_kickoff(tmp_path):
    root = write_project(
        tmp_path / "async",
        {
            "config/agents.yaml": AGENTS,
            "config/tasks.yaml": """
                first:
                  description: First.
                  agent: writer
                background:
                  description: In the background.
                  agent: writer
                  async_execution: true
                last:
                  description: Last.
                  agent: writer
            """,
        },
    )
    llm = ScriptedLLM({"first": "first done", "background": "background done"})
    load(root).crew_file.crew.with_llm(llm).run().raise_for_status()
    assert "## Context from earlier tasks" not in llm.calls_for("background")[0].prompt
    last = llm.calls_for("last")[0].prompt
    assert "first done" in last and "background done" in last


# --- the project folder's settings and store -------------------------------------------------


def test_the_project_folders_crew_toml_ranks_between_the_working_folders_and_the_environment(
    tmp_path,
):
    from crew.config import Settings

    project = tmp_path / "mycrew"
    project.mkdir()
    (tmp_path / "crew.toml").write_text('[llm]\nmodel = "openai/here"\ntemperature = 0.5\n')
    (project / "crew.toml").write_text('[llm]\nmodel = "openai/project"\n')
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-here\nGROQ_API_KEY=gsk-here\n")
    (project / ".env").write_text("OPENAI_API_KEY=sk-project\n")
    settings = Settings.load(cwd=tmp_path, env={}, project=project)
    assert (settings.llm.model, settings.llm.temperature) == ("openai/project", 0.5)
    assert settings.sources["llm.model"] == f"{project}/crew.toml"
    assert settings.sources["llm.temperature"] == "./crew.toml"
    assert settings.provider_keys["OPENAI_API_KEY"] == ("sk-project", ".env")
    assert settings.provider_keys["GROQ_API_KEY"] == ("gsk-here", ".env")
    from_env = Settings.load(cwd=tmp_path, env={"CREW_MODEL": "openai/env"}, project=project)
    assert from_env.llm.model == "openai/env"
    alone = Settings.load(cwd=tmp_path, env={})  # no project: the working folder only
    assert alone.llm.model == "openai/here"


def test_crew_run_dir_reads_the_projects_settings_and_keeps_its_runs_there(tmp_path, server):
    import os
    import subprocess

    project = tmp_path / "trip"
    shutil.copytree(TRIP, project)
    agents = project / "config/agents.yaml"  # every agent on the project's default model
    agents.write_text(agents.read_text().replace("  llm: openai/gpt-4o-mini\n", ""))
    (project / "crew.toml").write_text(f'[llm]\nmodel = "openai/fake"\napi_base = "{server.url}"\n')
    (project / ".env").write_text("OPENAI_API_KEY=sk-test\nCREW_TEMPERATURE=0.7\n")
    (tmp_path / "inputs.json").write_text(
        '{"origin": "Porto", "cities": ["Lisbon", "Madrid"], "interests": "food",'
        ' "travel-dates": null, "days": 3}'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    command = [str(Path(sys.executable).with_name("crew"))]
    done = subprocess.run(
        [*command, "run", "trip", "--inputs-file", "inputs.json", "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert server.calls[0].body["temperature"] == 0.7  # from the project's .env
    prompts = [call.body["messages"][1]["content"] for call in server.calls]
    assert any("Compare these cities: ['Lisbon', 'Madrid']." in p for p in prompts)
    assert any("travels on None." in p for p in prompts)
    assert (project / "itinerary_Porto.md").is_file()
    assert (project / ".crew/crew.db").is_file() and not (tmp_path / ".crew").exists()
    listed = subprocess.run(
        [*command, "runs"], capture_output=True, text=True, timeout=120, cwd=project, env=env
    )
    assert listed.returncode == 0 and "trip" in listed.stdout, listed.stderr


def test_a_tool_reached_through_its_module_or_given_oddly_is_still_one_clear_warning(tmp_path):
    root = write_project(
        tmp_path / "odd",
        {
            "config/agents.yaml": textwrap.dedent(AGENTS) + "  tools: [3]\n",
            "config/tasks.yaml": "t:\n  description: T.\n  agent: writer\n",
            "crew.py": """
                import crewai_tools

                @CrewBase
                class Odd:
                    @task
                    def t(self):
                        return Task(
                            config=self.tasks_config["t"], tools=[crewai_tools.EXASearchTool()]
                        )
            """,
        },
    )
    assert [w.split(" is not")[0] + w.split("here:")[1] for w in load(root).crew_file.warnings] == [
        "tool 3 (agent writer) it is not a tool (expected a name or a tool object); the tasks run"
        " without it",
        "tool EXASearchTool (task t) it needs credentials (EXA_API_KEY) and its package"
        " crewai_tools is not installed; the tasks run without it",
    ]


def test_config_paths_may_be_annotated_and_are_relative_to_the_classs_module(tmp_path):
    team = "src/annotated/crews/team"
    root = write_project(
        tmp_path / "annotated",
        {
            f"{team}/settings/agents.yaml": AGENTS,
            f"{team}/settings/tasks.yaml": "t:\n  description: T.\n  agent: writer\n",
            f"{team}/team.py": """
                @CrewBase
                class Team:
                    agents_config: str = "settings/agents.yaml"
                    tasks_config: str = "settings/tasks.yaml"

                    @task
                    def t(self):
                        return Task(config=self.tasks_config["t"])
            """,
        },
    )
    assert is_crewai_project(root)
    assert [t.id for t in load(root).crew_file.crew.tasks] == ["t"]
