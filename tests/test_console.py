from __future__ import annotations

import asyncio
import io
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console

from crew import Agent, Crew, Task, events
from crew.board import Board
from crew.console import ConsoleView, plan_mermaid, render_plan, render_result, result_json
from crew.errors import TaskTimeoutError
from crew.results import CrewResult, TaskOutput, TaskResult
from crew.task import loop
from crew.testing import ScriptedLLM
from crew.usage import RunUsage, Usage

RESEARCHER = Agent(role="Researcher", goal="Find facts", backstory="An analyst.")
WRITER = Agent(role="Writer", goal="Write", backstory="A writer.")


class Article(BaseModel):
    title: str
    body: str


def event(kind: type[events.Event], at: float = 100.0, **fields: Any) -> Any:
    return kind(run_id="r1", at=at, **fields)


def plain_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=100)


def live_console() -> Console:
    return Console(file=io.StringIO(), record=True, force_terminal=True, width=100)


def output_of(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def frame(view: ConsoleView) -> str:
    """The view's current frame as plain text, drawn without any timing."""
    console = Console(file=io.StringIO(), record=True, width=100)
    console.print(view.render())
    return console.export_text()


def diamond() -> Crew:
    a = Task(id="a", description="Start", agent=RESEARCHER)
    b = Task(id="b", description="Left", agent=RESEARCHER, depends_on=[a], estimate_s=2)
    c = Task(id="c", description="Right", agent=WRITER, depends_on=[a])
    d = Task(id="d", description="Join", agent=WRITER, depends_on=[b, c], output_model=Article)
    llm = ScriptedLLM({"a": "# Facts\n\n- one\n- two", "d": {"title": "T", "body": "B"}})
    return Crew(tasks=[a, b, c, d], name="demo", llm=llm, id_factory=lambda: "r1")


def run_events() -> list[events.Event]:
    usage = Usage(calls=1, prompt_tokens=1000, completion_tokens=234, cost_usd=0.0012)
    return [
        event(events.RunStarted, crew="demo", task_ids=("a", "b", "c", "d"), inputs={}),
        event(events.TaskStarted, task_id="a", agent="Researcher", attempt=1),
        event(events.LLMCalled, task_id="a", model="m", usage=usage, latency_ms=5.0),
        event(events.TaskFinished, at=101.5, task_id="a", output=TaskOutput(
            task_id="a", agent="Researcher", text="facts")),
        event(events.TaskStarted, at=102.0, task_id="b", agent="Researcher", attempt=1),
        event(events.LLMRetrying, task_id="b", model="m", attempt=1,
              error="Model 'm': rate limited (429). Provider said: slow down", delay_s=1.0),
        event(events.TaskStarted, at=102.0, task_id="c", agent="Writer", attempt=1),
        event(events.TaskFailed, at=103.0, task_id="c",
              error="Model 'm': bad request.\nTraceback follows", error_type="BadRequestError"),
        event(events.TaskSkipped, task_id="d", reason="depends on 'c', which failed"),
    ]  # fmt: skip


def test_plain_mode_prints_one_line_per_notable_event_without_ansi_codes():
    console = plain_console()
    view = ConsoleView(console)
    assert view.live is False
    with view:
        for item in run_events():
            view(item)
    assert output_of(console).splitlines() == [
        "crew demo: run r1, 4 tasks",
        "[0/4] started a (Researcher)",
        "[1/4] ✓ a (Researcher) done in 1.5s, 1,234 tokens, $0.0012",
        "[1/4] started b (Researcher)",
        "[1/4] b retrying (429, attempt 2)",
        "[1/4] started c (Writer)",
        "[2/4] ✗ c failed: BadRequestError: Model 'm': bad request.",
        "[3/4] - d skipped: depends on 'c', which failed",
    ]
    assert "\x1b" not in output_of(console)


def test_plain_mode_follows_a_real_run():
    console = plain_console()
    view = ConsoleView(console)
    result = asyncio.run(diamond().arun(on_event=view))
    lines = output_of(console).splitlines()
    assert result.status == "succeeded"
    assert lines[0] == "crew demo: run r1, 4 tasks"
    assert [line.split()[2] for line in lines if "started" in line] == ["a", "b", "c", "d"]
    assert sum("✓" in line for line in lines) == 4
    assert lines[-1].startswith("[4/4] ✓ d (Writer) done in ")
    assert view.progress == (4, 4)
    assert "\x1b" not in output_of(console)


def test_the_frame_shows_a_row_per_task_with_state_agent_time_tokens_and_cost():
    view = ConsoleView(live_console(), clock=lambda: 104.0)
    assert view.live is True
    for item in run_events()[:6]:
        view(item)
    text = frame(view)
    lines = text.splitlines()
    assert lines[0].split() == ["crew", "demo", "run", "r1", "1/4", "done"]
    assert lines[2].split() == ["✓", "done", "a", "Researcher", "1.5s", "1,234", "$0.0012"]
    assert lines[3].split()[:5] == ["↻", "retrying", "b", "Researcher", "2.0s"]
    assert lines[3].endswith("retrying (429, attempt 2)")
    assert lines[4].split() == ["·", "waiting", "c"]
    for item in run_events()[6:]:
        view(item)
    text = frame(view)
    failed = next(line for line in text.splitlines() if " c " in line)
    assert failed.split()[:5] == ["✗", "failed", "c", "Writer", "1.0s"]
    assert failed.rstrip().endswith("Model 'm': bad request.")
    assert "Traceback" not in text  # the first line of the error only
    assert "- skipped   d" in text
    assert "3/4 done" in text


def test_a_running_task_shows_a_spinner_then_goes_back_to_running_after_a_retry():
    view = ConsoleView(live_console(), task_ids=["a"], agents={"a": "Researcher"})
    view(event(events.TaskStarted, task_id="a", agent="Researcher", attempt=1))
    assert "running" in frame(view)
    view(event(events.TaskRetrying, task_id="a", attempt=1, error="timed out", delay_s=0.5))
    assert "retrying (timed out, attempt 2)" in frame(view)
    view(event(events.TaskStarted, task_id="a", agent="Researcher", attempt=2))
    assert "running" in frame(view)
    assert "retrying" not in frame(view)


def test_tool_calls_and_fallbacks_are_shown_on_the_row():
    view = ConsoleView(live_console(), task_ids=["a"])
    view(event(events.TaskStarted, task_id="a", agent="Researcher", attempt=1))
    view(event(events.ToolCalled, task_id="a", tool="word_count", arguments={}))
    assert "tool word_count" in frame(view)
    view(event(events.LLMFallback, task_id="a", failed_model="x", next_model="y", error="503"))
    assert "falling back to y (503)" in frame(view)


def test_rows_come_from_task_ids_and_agents_before_the_run_starts():
    view = ConsoleView(live_console(), task_ids=["a", "b"], agents={"a": "Researcher"})
    lines = frame(view).splitlines()
    assert "0/2 done" in lines[0]
    assert lines[2].split() == ["·", "waiting", "a", "Researcher"]
    assert lines[3].split() == ["·", "waiting", "b"]


def test_events_of_unknown_tasks_and_unknown_event_types_are_ignored():
    @dataclass(frozen=True, kw_only=True)
    class Unheard(events.Event):
        task_id: str

    view = ConsoleView(plain_console(), task_ids=["a"])
    view(event(events.LLMCalled, task_id="delegation-1", model="m", usage=Usage(), latency_ms=1))
    view(event(Unheard, task_id="a"))
    assert view.progress == (0, 1)


def test_run_finished_sets_the_status_and_the_whole_usage():
    view = ConsoleView(live_console())
    result = asyncio.run(diamond().arun(on_event=view))
    text = frame(view)
    assert "4/4 done  succeeded" in text
    for task_id, usage in result.usage.by_task.items():
        line = next(line for line in text.splitlines() if f" {task_id} " in line)
        assert f" {usage.total_tokens:,} " in f"{line} "


def test_start_and_stop_draw_live_and_restore_the_terminal():
    console = live_console()
    view = ConsoleView(console, task_ids=["a"])
    view.start()
    view.start()  # a second start does not start a second display
    view(event(events.TaskStarted, task_id="a", agent="Researcher", attempt=1))
    view(event(events.TaskFinished, task_id="a", output=TaskOutput(
        task_id="a", agent="Researcher", text="x")))  # fmt: skip
    view.stop()
    view.stop()
    written = output_of(console)
    assert "✓ done" in written
    assert written.rstrip().endswith("\x1b[?25h")  # the cursor is shown again
    with ConsoleView(live_console(), task_ids=["a"]) as again:
        assert again.live is True


def test_a_failing_run_still_restores_the_terminal():
    console = live_console()
    with pytest.raises(RuntimeError), ConsoleView(console, task_ids=["a"]):
        raise RuntimeError("boom")
    assert "\x1b[?25h" in output_of(console)


def test_live_none_follows_whether_the_console_is_a_terminal():
    assert ConsoleView(live_console()).live is True
    assert ConsoleView(plain_console()).live is False
    assert ConsoleView(plain_console(), live=True).live is True


def test_streamed_tokens_show_their_tail_when_crew_streams(monkeypatch):
    @dataclass(frozen=True, kw_only=True)
    class TokenDelta(events.Event):
        task_id: str
        text: str

    monkeypatch.setattr(events, "TokenDelta", TokenDelta, raising=False)
    view = ConsoleView(live_console(), task_ids=["a"], clock=lambda: 101.0)
    view(event(events.TaskStarted, task_id="a", agent="Researcher", attempt=1))
    for word in ["Lisbon ", "is on\nthe ", "Tagus ", "river, " * 10, "and old."]:
        view(event(TokenDelta, task_id="a", text=word))
    row = next(line for line in frame(view).splitlines() if " a " in line)
    assert row.rstrip().endswith("river, river, river, and old.")
    assert "Lisbon" not in row  # the tail only
    view(event(events.TaskFinished, task_id="a", output=TaskOutput(
        task_id="a", agent="Researcher", text="x")))  # fmt: skip
    assert "river" not in frame(view)


def test_without_token_deltas_the_view_still_works(monkeypatch):
    monkeypatch.delattr(events, "TokenDelta", raising=False)
    view = ConsoleView(plain_console())
    view(event(events.TaskStarted, task_id="a", agent="Researcher", attempt=1))
    assert view.progress == (0, 1)


def printed(render: Any, *args: Any, **kwargs: Any) -> str:
    console = Console(file=io.StringIO(), record=True, width=100)
    render(*args, console, **kwargs)
    return console.export_text()


def test_render_result_shows_markdown_then_the_usage_table():
    crew = diamond()
    result = crew.replace(tasks=crew.tasks[:1]).run()
    text = printed(render_result, result)
    assert text.startswith("a ──")  # the title: the final task's id
    assert "• one" in text  # markdown rendered, not echoed
    assert "failed" not in text
    usage = text[text.index("Usage") :]
    for word in ["Researcher", "total", "calls", "prompt tokens", "completion tokens"]:
        assert word in usage
    assert "$0.0000" in usage


def test_render_result_shows_structured_data_as_json():
    result = diamond().run()
    text = printed(render_result, result)
    assert "d ──" in text
    assert '"title": "T"' in text
    assert json.loads(text[text.index("{") : text.index("}") + 1]) == {"title": "T", "body": "B"}


def test_render_result_says_in_red_which_tasks_failed():
    result = made_result()
    console = Console(file=io.StringIO(), record=True, force_terminal=True, width=100)
    render_result(result, console, show_board=True)
    text = console.export_text(clear=False)
    assert text.startswith("Run r9 failed: 'bad' failed.")
    assert "\x1b[1;31mRun r9 failed" in console.export_text(styles=True)
    assert "bad (failed): Model 'm': rejected." in text
    assert "last (skipped): depends on 'bad', which failed" in text
    assert "Board" in text and "plain text" in text
    usage = text[text.index("Usage") :].splitlines()
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in usage if "│" in line]
    assert cells == [
        ["Researcher", "3", "350", "40", "$0.0200", "1.5s"],  # its tasks' time: failed has none
        ["total", "3", "350", "40", "$0.0200", "3.0s"],  # the run's time
    ]


def test_render_plan_shows_levels_dependencies_critical_path_and_parallelism():
    text = printed(render_plan, diamond().plan())
    assert text.splitlines() == [
        "Plan: 4 tasks",
        "├── level 0 (1 task)",
        "│   └── a  Researcher",
        "├── level 1 (2 tasks)",
        "│   ├── b  Researcher  after a",
        "│   └── c  Writer  after a",
        "└── level 2 (1 task)",
        "    └── d  Writer  after b, c",
        "Critical path: a -> b -> d (4 s estimated)",
        "Max parallelism: 2, levels: 3",
    ]


def test_plan_mermaid_for_a_diamond():
    assert plan_mermaid(diamond().plan()) == (
        "flowchart TD\n"
        '    a["a<br/>Researcher"]\n'
        '    b["b<br/>Researcher"]\n'
        '    c["c<br/>Writer"]\n'
        '    d["d<br/>Writer"]\n'
        "    a --> b\n"
        "    a --> c\n"
        "    b --> d\n"
        "    c --> d\n"
        "    classDef critical stroke:#e5484d,stroke-width:3px\n"
        "    class a,b,d critical"
    )


def test_plan_mermaid_sanitises_ids_and_labels():
    quoted = Agent(role='The "Best" <Writer>', goal="g", backstory="b")
    tasks = [
        Task(id="end", description="d", agent=quoted),
        Task(id="a.b", description="d", agent=quoted, depends_on=["end"]),
        Task(id="a-b", description="d", agent=quoted, depends_on=["a.b"]),
    ]
    text = plan_mermaid(Crew(tasks=tasks, llm=ScriptedLLM()).plan())
    assert text.splitlines()[1:6] == [
        '    end_["end<br/>The #quot;Best#quot; #lt;Writer#gt;"]',
        '    a_b["a.b<br/>The #quot;Best#quot; #lt;Writer#gt;"]',
        '    a_b_["a-b<br/>The #quot;Best#quot; #lt;Writer#gt;"]',
        "    end_ --> a_b",
        "    a_b --> a_b_",
    ]
    assert text.endswith("class end_,a_b,a_b_ critical")


def test_result_json_is_json_for_real_results():
    result = diamond().run()
    data = json.loads(result_json(result))
    assert data["status"] == "succeeded"
    assert data["tasks"]["d"]["data"] == {"title": "T", "body": "B"}
    assert data == json.loads(json.dumps(result.to_dict(), default=str))


def test_result_json_serialises_anything_a_task_returned():
    odd = {1: {"set": {3}}, "nan": float("nan"), "object": object()}
    data = json.loads(result_json(made_result(data=odd)))
    task = data["tasks"]["first"]
    assert task["data"]["1"] == {"set": [3]}
    assert task["data"]["nan"] is None
    assert task["data"]["object"].startswith("<object object")


def made_result(data: Any = None) -> CrewResult:
    """A failed run built by hand, with costs, so that the output is exact."""
    board = Board(clock=lambda: 5.0)
    board.post("first", "plain text", author="Researcher", data=data)
    costly = Usage(calls=2, prompt_tokens=300, completion_tokens=40, cost_usd=0.0123)
    failed = Usage(calls=1, prompt_tokens=50, completion_tokens=0, cost_usd=0.0077)
    output = TaskOutput(task_id="first", agent="Researcher", text="plain text", data=data)
    tasks = {
        "first": TaskResult(task_id="first", status="succeeded", output=output, usage=costly,
                            started_at=1.0, finished_at=2.5, attempts=1),
        "bad": TaskResult(task_id="bad", status="failed", error="Model 'm': rejected.",
                          error_type="BadRequestError", usage=failed, attempts=1),
        "last": TaskResult(task_id="last", status="skipped",
                           reason="depends on 'bad', which failed"),
    }  # fmt: skip
    usage = RunUsage(
        total=costly + failed,
        by_task={"first": costly, "bad": failed},
        by_agent={"Researcher": costly + failed},
    )
    return CrewResult(
        run_id="r9", crew="demo", status="failed", tasks=tasks, board=board, usage=usage,
        inputs={}, started_at=0.0, finished_at=3.0,
    )  # fmt: skip


def test_a_task_retried_in_a_real_run_says_why_in_plain_mode():
    flaky = Task(id="flaky", description="Try", agent=RESEARCHER, retries=1)
    llm = ScriptedLLM({"flaky": [TaskTimeoutError("Task 'flaky' ran past its timeout."), "ok"]})
    console = plain_console()
    view = ConsoleView(console)
    asyncio.run(Crew(tasks=[flaky], llm=llm).arun(on_event=view))
    lines = [line.split("] ", 1)[1] for line in output_of(console).splitlines()[1:]]
    assert lines[:3] == [
        "started flaky (Researcher)",
        "flaky retrying (Task 'flaky' ran past its timeout, attempt 2)",
        "started flaky (Researcher) (attempt 2)",
    ]
    assert lines[3].startswith("✓ flaky (Researcher) done in ")


def test_the_live_view_follows_a_real_run_and_leaves_its_last_frame():
    console = live_console()
    with ConsoleView(console, task_ids=["a", "b", "c", "d"]) as view:
        asyncio.run(diamond().arun(on_event=view))
    last = console.export_text()
    assert "4/4 done  succeeded" in last
    assert sum("✓ done" in line for line in last.splitlines()) >= 4


# Control flow: routers, conditions, joins, maps, subcrews and loops


class Ideas(BaseModel):
    items: list[str]


class Verdict(BaseModel):
    approved: bool


def job(task_id: str, *deps: str, **kwargs: Any) -> Task:
    return Task(id=task_id, description=f"Do {task_id}", agent=WRITER, depends_on=deps, **kwargs)


def approved(board: Any) -> bool:
    return bool(board["critique"].data.approved)


def flow_crew() -> Crew:
    research = Crew([job("search"), job("summary", "search")], name="research")
    body = [job("draft", "expand"), job("critique", "draft", output_model=Verdict)]
    tasks = [
        job("triage", routes={"bug": ["fix"], "feature": ["spec"]}),
        job("fix", "triage"),
        job("spec", "triage"),
        job("ideas", "fix", "spec", join="any", output_model=Ideas),
        job("expand", for_each="ideas.data.items"),
        Task(id="research", description="R", crew=research, inputs={"topic": "ideas.text"}),
        loop("refine", body, until="critique.data.approved", max_rounds=3, depends_on=["research"]),
        job("publish", "refine", when=approved),
    ]
    llm = ScriptedLLM({
        "triage": {"route": "bug", "reason": "a crash"},
        "ideas": {"items": ["tea", "coffee"]},
        "critique": [{"approved": False}, {"approved": True}],
    })  # fmt: skip
    return Crew(tasks, name="flow", llm=llm, id_factory=lambda: "r1")


def test_render_plan_shows_each_tasks_control_flow_and_a_loops_body():
    text = printed(render_plan, flow_crew().plan())
    assert text.splitlines() == [
        "Plan: 8 tasks",
        "├── level 0 (1 task)",
        "│   └── triage  Writer  routes bug -> fix; feature -> spec",
        "├── level 1 (2 tasks)",
        "│   ├── fix  Writer  after triage",
        "│   └── spec  Writer  after triage",
        "├── level 2 (1 task)",
        "│   └── ideas  Writer  after fix, spec  join any",
        "├── level 3 (2 tasks)",
        "│   ├── expand  Writer  after ideas  for each ideas.data.items",
        "│   └── research  subcrew research (topic)  after ideas",
        "├── level 4 (1 task)",
        "│   └── refine  loop: until critique.data.approved, max 3 rounds  after research, expand",
        "│       ├── draft  Writer",
        "│       └── critique  Writer  after draft",
        "└── level 5 (1 task)",
        "    └── publish  Writer  after refine  when approved",
        "Critical path: triage -> fix -> ideas -> expand -> refine -> publish (11 s estimated)",
        "Max parallelism: 2, levels: 6",
    ]


def test_render_plan_says_when_a_loops_body_is_made_at_run_time():
    def body(board: Any) -> list[Task]:
        return [job("step")]

    text = printed(render_plan, Crew([loop("again", body, max_rounds=1)], llm=ScriptedLLM()).plan())
    assert text.splitlines()[1:4] == [
        "└── level 0 (1 task)",
        "    └── again  loop: max 1 round",
        "        └── tasks made at run time",
    ]


def test_plan_mermaid_draws_loops_as_subgraphs_labels_routes_and_marks_conditions_and_maps():
    assert plan_mermaid(flow_crew().plan()).splitlines() == [
        "flowchart TD",
        '    triage{"triage<br/>Writer"}',
        '    fix["fix<br/>Writer"]',
        '    spec["spec<br/>Writer"]',
        '    ideas["ideas<br/>Writer<br/>join any"]',
        '    expand[["expand<br/>Writer<br/>for each ideas.data.items"]]',
        '    research(["research<br/>subcrew research (topic)"])',
        '    subgraph refine ["refine<br/>loop: until critique.data.approved, max 3 rounds"]',
        '        draft["draft<br/>Writer"]',
        '        critique["critique<br/>Writer"]',
        "        draft --> critique",
        "    end",
        '    publish{{"publish<br/>Writer<br/>when approved"}}',
        '    triage -- "bug" --> fix',
        '    triage -- "feature" --> spec',
        "    fix --> ideas",
        "    spec --> ideas",
        "    ideas --> expand",
        "    ideas --> research",
        "    research --> refine",
        "    expand --> refine",
        "    refine --> publish",
        "    classDef critical stroke:#e5484d,stroke-width:3px",
        "    class triage,fix,ideas,expand,refine,publish critical",
    ]


def test_plan_mermaid_escapes_expressions_and_names_a_run_time_body():
    tasks = [
        job("score", output_model=Verdict),
        job("page", when='score.data.approved == "yes"'),
        loop("redo", lambda board: [job("step")], max_rounds=2, until=lambda board: True),
    ]
    lines = plan_mermaid(Crew(tasks, llm=ScriptedLLM()).plan()).splitlines()
    assert lines[2:4] == [
        '    page{{"page<br/>Writer<br/>when score.data.approved == #quot;yes#quot;"}}',
        '    redo["redo<br/>loop: until #lt;lambda#gt;, max 2 rounds<br/>tasks made at run time"]',
    ]


def test_plain_mode_follows_routes_maps_subcrews_and_loops():
    console = plain_console()
    view = ConsoleView(console)
    result = asyncio.run(flow_crew().arun(on_event=view))
    lines = output_of(console).splitlines()
    assert result.status == "succeeded"
    assert lines[0] == "crew flow: run r1, 8 tasks"  # the run's own tasks: nested ones not counted
    expected = [
        "[1/8] triage chose bug: a crash",
        "[2/8] - spec skipped: router 'triage' chose 'bug'",
        "[4/8] expand maps 2 items",
        "[4/8] expand 2/2 items",
        "[5/8] started research/search (Writer)",
        "[6/8] started refine",
        "[6/8] refine round 1/3",
        "[6/8] refine round 2/3",
        "[6/8] refine looped 2 rounds: until held",
    ]
    # research runs beside expand: when its first task starts, and so how many tasks are done
    # by then (the counter), depends on which gets the loop first; the order of the rest does
    # not. It starts once, after the router's choice and before refine.
    racing = "started research/search (Writer)"
    steady = [line for line in expected if _counted(line) != racing]
    assert [line for line in lines if line in steady] == steady
    counted = [_counted(line) for line in lines]
    assert counted.count(racing) == 1
    assert counted.index("triage chose bug: a crash") < counted.index(racing)
    assert counted.index(racing) < counted.index("started refine")
    assert lines[-1].startswith("[8/8] ✓ publish (Writer) done in ")
    assert view.progress == (8, 8)


def test_the_frame_nests_subcrew_and_loop_rows_and_shows_their_control_flow():
    view = ConsoleView(live_console(), clock=lambda: 200.0)
    asyncio.run(flow_crew().arun(on_event=view))
    lines = frame(view).splitlines()
    assert "8/8 done  succeeded" in lines[0]
    cells = {cells[1]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in lines[2:])}
    assert list(cells) == [
        "triage", "fix", "spec", "ideas", "expand", "research", "└ search", "└ summary",
        "refine", "└ draft", "└ critique", "publish",
    ]  # fmt: skip
    assert cells["triage"][-1] == "chose bug"
    assert cells["expand"][-1] == "2/2 items"
    assert cells["refine"][-1] == "2 rounds, until"
    assert cells["└ search"][:3] == ["✓ done", "└ search", "Writer"]


def loop_and_map_events() -> list[events.Event]:
    return [
        event(events.TaskStarted, task_id="refine", agent="", attempt=1),
        event(events.RoundStarted, task_id="refine", round=2, max_rounds=3),
        event(events.TaskStarted, task_id="draft", agent="Writer", attempt=1),
        event(events.TaskStarted, task_id="expand", agent="Writer", attempt=1),
        event(events.MapStarted, task_id="expand", items=5),
        *(event(events.ItemFinished, task_id="expand", item=i, items=5) for i in (3, 0, 4)),
    ]


def test_loop_and_map_rows_show_rounds_and_items_as_they_go():
    view = ConsoleView(live_console(), task_ids=["refine", "expand"], clock=lambda: 101.0)
    for item in loop_and_map_events():
        view(item)
    lines = frame(view).splitlines()
    assert "0/2 done" in lines[0]  # draft, in refine's body, has a row but does not count
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]
    assert [row[1:] for row in cells] == [
        ["refine", "1.0s", "round 2/3"],
        ["└ draft", "Writer", "1.0s"],
        ["expand", "Writer", "1.0s", "3/5 items"],
    ]


def test_plain_mode_says_how_a_loop_ended_and_what_a_map_did():
    console = plain_console()
    view = ConsoleView(console, task_ids=["refine", "expand"])
    for item in loop_and_map_events():
        view(item)
    view(event(events.LoopFinished, task_id="refine", rounds=3, stopped="max_rounds"))
    view(event(events.TaskStarted, task_id="later", agent="Writer", attempt=1))
    assert output_of(console).splitlines() == [
        "[0/2] started refine",
        "[0/2] refine round 2/3",
        "[0/2] started draft (Writer)",
        "[0/2] started expand (Writer)",
        "[0/2] expand maps 5 items",
        "[0/2] expand 1/5 items",
        "[0/2] expand 2/5 items",
        "[0/2] expand 3/5 items",
        "[0/2] refine looped 3 rounds: max rounds reached",
        "[0/3] started later (Writer)",  # refine's rounds are over: not in its body
    ]


def test_crew_show_says_what_the_run_met_on_the_way():
    from crew.console.history import render_run
    from crew.store.memory import MemoryStore

    store = MemoryStore()
    store.create_run("r1", crew="c", inputs={}, task_ids=("a", "b"))
    limited = {"task_id": "a", "model": "openai/m", "limit": "tpm"}
    store.append_events(
        "r1",
        [
            ("RateLimited", {**limited, "waited_s": 1.5}),
            ("RateLimited", {**limited, "waited_s": 2.0}),
            ("CircuitOpened", {"task_id": "a", "model": "openai/m", "reason": "12 calls failed"}),
            ("ToolOutcomeUnknown", {"task_id": "b", "tool": "charge", "key": "r1/b/0/1/0"}),
            ("TaskFinished", {"task_id": "a"}),
        ],
    )
    out = io.StringIO()
    render_run(store, store.get_run("r1"), Console(file=out, width=200))  # type: ignore[arg-type]
    text = out.getvalue()
    assert "rate limit (tpm) of openai/m: 2 calls waited 3.5 s in all" in text
    assert "circuit breaker of openai/m opened: 12 calls failed" in text
    assert "tool charge was interrupted" in text and "r1/b/0/1/0" in text
    assert "TaskFinished" not in text


def _counted(line: str) -> str:
    """A progress line without its "[done/all]" counter."""
    return line.split("] ", 1)[1] if line.startswith("[") else line
