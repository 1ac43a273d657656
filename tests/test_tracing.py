"""OpenTelemetry tracing: the span tree of a run, the GenAI attributes, error spans, content only
when asked, and no span at all unless tracing is on. Spans are caught by the SDK's in-memory
exporter, on a provider given to the crew or set globally for one test and reset after."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install -e '.[dev]'")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from crew import Agent, Crew, Task, tool
from crew.errors import AuthenticationError, ConfigError, TaskTimeoutError
from crew.llm import LLM
from crew.store.memory import MemoryStore
from crew.testing import Reply, ScriptedLLM
from crew.testserver import FakeOpenAIServer, ServerReply
from crew.tracing import Tracing
from tests.conftest import FAST_RETRY

SECRET_TOPIC = "the-purple-lighthouse"
"""In every prompt: no span may carry it unless content is captured."""

CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "crew.task.output",
    "crew.run.inputs",
}


@tool
def search(query: str) -> str:
    """Search the archive.

    Args:
        query: what to look for.
    """
    return f"3 results for {query}"


@tool
def broken(query: str) -> str:
    """A tool that always fails.

    Args:
        query: ignored.
    """
    raise ValueError("the index is gone")


def three_tasks(llm: Any, **crew_args: Any) -> Crew:
    """research (with the search tool) -> draft -> edit."""
    researcher = Agent(role="Researcher", goal="Find facts on {topic}", llm=llm, tools=[search])
    writer = Agent(role="Writer", goal="Write about {topic}", llm=llm)
    research = Task(id="research", description="Research {topic}", agent=researcher)
    draft = Task(id="draft", description="Draft on {topic}", agent=writer, depends_on=[research])
    edit = Task(id="edit", description="Edit the draft", agent=writer, depends_on=[draft])
    return Crew([research, draft, edit], store=MemoryStore(), **crew_args)


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    """An exporter and a provider that sends each span to it as it ends."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


@pytest.fixture
def global_spans(
    spans: tuple[InMemorySpanExporter, TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> InMemorySpanExporter:
    """``spans``' provider as OpenTelemetry's global one, for this test only (the API sets it
    once per process, so its once-guard is replaced for the test and restored after)."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    trace.set_tracer_provider(spans[1])
    return spans[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def priced_llm(server: FakeOpenAIServer) -> LLM:
    """A model litellm's price map knows, answered by the fake server (so calls cost money)."""
    return LLM("openai/gpt-4o-mini", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)


def test_a_run_is_a_tree_of_run_task_model_call_and_tool_call_spans(server, spans):
    exporter, provider = spans
    tokens = {"prompt_tokens": 120, "completion_tokens": 30}
    server.script(
        "research",
        ServerReply(tool_calls=[("search", {"query": "otel"})], latency_ms=60, **tokens),
        ServerReply(text="- a fact", **tokens),
    )
    server.script("draft", ServerReply(text="A draft.", **tokens))
    server.script("edit", ServerReply(text="The edit.", **tokens))
    crew = three_tasks(priced_llm(server), tracing=Tracing(tracer_provider=provider))

    result = crew.run({"topic": SECRET_TOPIC})

    assert result.status == "succeeded"
    finished = exporter.get_finished_spans()
    chats = [s for s in finished if s.name == "chat openai/gpt-4o-mini"]
    others = {s.name: s for s in finished if s not in chats}
    assert set(others) == {
        "crew.run",
        "crew.task research",
        "crew.task draft",
        "crew.task edit",
        "execute_tool search",
    }
    assert len(chats) == 4  # research twice (the tool turn, the answer), draft, edit
    run = others["crew.run"]
    tasks = {t: others[f"crew.task {t}"] for t in ("research", "draft", "edit")}

    # One trace; the run is its root, the tasks its children, calls under their task.
    assert {s.context.trace_id for s in finished if s.context} == {run.context.trace_id}
    assert run.parent is None
    assert {parent_of(t) for t in tasks.values()} == {span_id(run)}
    chats_of = {t: [c for c in chats if parent_of(c) == span_id(s)] for t, s in tasks.items()}
    assert [len(chats_of[t]) for t in ("research", "draft", "edit")] == [2, 1, 1]
    assert parent_of(others["execute_tool search"]) == span_id(tasks["research"])

    # The GenAI semantic conventions on each model call; cost as crew priced it.
    for chat in chats:
        attributes = dict(chat.attributes or {})
        assert chat.kind is SpanKind.CLIENT
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == "openai/gpt-4o-mini"
        assert "gpt-4o-mini" in str(attributes["gen_ai.response.model"])
        assert attributes["gen_ai.usage.input_tokens"] == 120
        assert attributes["gen_ai.usage.output_tokens"] == 30
        assert attributes["crew.cost_usd"] > 0
    total_cost = sum(dict(c.attributes or {})["crew.cost_usd"] for c in chats)
    assert total_cost == pytest.approx(result.usage.total.cost_usd)
    run_attributes = dict(run.attributes or {})
    assert run_attributes["gen_ai.usage.input_tokens"] == 4 * 120
    assert run_attributes["crew.cost_usd"] == pytest.approx(result.usage.total.cost_usd)
    assert run_attributes["crew.run.status"] == "succeeded"
    assert dict(tasks["draft"].attributes or {})["gen_ai.agent.name"] == "Writer"

    tool_span = dict(others["execute_tool search"].attributes or {})
    assert tool_span["gen_ai.operation.name"] == "execute_tool"
    assert tool_span["gen_ai.tool.name"] == "search"
    assert tool_span["gen_ai.tool.call.id"]

    # True durations, from the events' times: the slow call took its 60 ms, and each span
    # lies within its parent's.
    slow = min(chats_of["research"], key=lambda s: s.start_time or 0)
    assert (slow.end_time or 0) - (slow.start_time or 0) >= 50_000_000
    for task in tasks.values():
        assert (run.start_time or 0) <= (task.start_time or 0) <= (task.end_time or 0)
        assert (task.end_time or 0) <= (run.end_time or 0)
    for chat in chats_of["research"]:
        assert (tasks["research"].start_time or 0) <= (chat.start_time or 0)
        assert (chat.end_time or 0) <= (tasks["research"].end_time or 0)
    assert (tasks["research"].end_time or 0) <= (tasks["draft"].start_time or 0)

    # No content: neither the attributes nor any value holds the prompts or answers.
    for span in finished:
        attributes = dict(span.attributes or {})
        assert CONTENT_KEYS.isdisjoint(attributes), span.name
        assert SECRET_TOPIC not in json.dumps(attributes, default=str), span.name
        assert span.status.status_code is not StatusCode.ERROR
    # Nor does the run's event log, ever: the store keeps each exchange once, for replay.
    calls = [e.payload for e in crew.store.events(result.run_id) if e.type == "LLMCalled"]
    assert len(calls) == 4
    assert all("messages" not in c and "answer" not in c for c in calls)
    assert SECRET_TOPIC not in json.dumps(calls)


def test_content_is_on_the_spans_only_when_asked(spans):
    exporter, provider = spans
    llm = ScriptedLLM(
        {
            "research": [Reply(tool_calls=[("search", {"query": "otel"})]), "- a fact"],
            "draft": "A draft.",
            "edit": "The edit.",
        }
    )
    crew = three_tasks(llm, tracing=Tracing(capture_content=True, tracer_provider=provider))

    result = crew.run({"topic": SECRET_TOPIC})
    assert result.status == "succeeded"
    logged = [e.payload for e in crew.store.events(result.run_id) if e.type == "LLMCalled"]
    assert logged and all("messages" not in c for c in logged)  # spans only, not the log

    finished = exporter.get_finished_spans()
    research = [s for s in finished if (s.attributes or {}).get("crew.task.id") == "research"]
    research = [s for s in research if s.name == "chat scripted"]
    assert len(research) == 2
    first = min(research, key=lambda s: s.start_time or 0)
    attributes = dict(first.attributes or {})
    messages = json.loads(str(attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert any(SECRET_TOPIC in part["content"] for m in messages for part in m["parts"])
    answer = json.loads(str(attributes["gen_ai.output.messages"]))
    assert answer[0]["finish_reason"] == "tool_call"
    assert answer[0]["parts"][0]["name"] == "search"
    assert answer[0]["parts"][0]["arguments"] == {"query": "otel"}
    tool_span = next(s for s in finished if s.name == "execute_tool search")
    assert json.loads(str((tool_span.attributes or {})["gen_ai.tool.call.arguments"])) == {
        "query": "otel"
    }
    assert (tool_span.attributes or {})["gen_ai.tool.call.result"] == "3 results for otel"
    edit = next(s for s in finished if s.name == "crew.task edit")
    assert (edit.attributes or {})["crew.task.output"] == "The edit."
    run = next(s for s in finished if s.name == "crew.run")
    assert json.loads(str((run.attributes or {})["crew.run.inputs"])) == {"topic": SECRET_TOPIC}
    # The second research call saw the tool's answer, as the model did.
    second = max(research, key=lambda s: s.start_time or 0)
    shown = json.loads(str((second.attributes or {})["gen_ai.input.messages"]))
    assert shown[-1]["parts"][0] == {
        "type": "tool_call_response",
        "id": answer[0]["parts"][0]["id"],
        "response": "3 results for otel",
    }


def test_a_failed_task_and_a_failed_tool_call_are_error_spans(spans):
    exporter, provider = spans
    researcher = Agent(role="Researcher", goal="Find", tools=[broken])
    writer = Agent(role="Writer", goal="Write")
    llm = ScriptedLLM(
        {
            "research": [Reply(tool_calls=[("broken", {"query": "q"})]), "no index, no facts"],
            "draft": AuthenticationError("invalid key sk-abcdefghijklmnopqrstuvwxyz"),
        }
    )
    research = Task(id="research", description="Research", agent=researcher)
    draft = Task(id="draft", description="Draft", agent=writer, depends_on=[research])
    crew = Crew(
        [research, draft],
        llm=llm,
        store=MemoryStore(),
        task_retries=0,
        tracing=Tracing(tracer_provider=provider),
    )

    result = crew.run()

    assert result.status == "failed"
    finished = exporter.get_finished_spans()
    named = {s.name: s for s in finished}
    failed = named["crew.task draft"]
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "AuthenticationError"
    assert "sk-abcdefghijklmnopqrstuvwxyz" not in (failed.status.description or "")
    exception = next(e for e in failed.events if e.name == "exception")
    assert (exception.attributes or {})["exception.type"] == "AuthenticationError"
    run = named["crew.run"]
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["error.type"] == "AuthenticationError"
    tool_span = named["execute_tool broken"]
    assert tool_span.status.status_code is StatusCode.ERROR
    assert (tool_span.attributes or {})["error.type"] == "ValueError"
    # The tool's failure went to the model; its task still succeeded.
    assert named["crew.task research"].status.status_code is StatusCode.UNSET


def test_a_retried_task_is_one_span_that_counts_its_attempts(spans):
    exporter, provider = spans
    writer = Agent(role="Writer", goal="Write")
    llm = ScriptedLLM({"draft": [TaskTimeoutError("Task 'draft' ran past its timeout."), "ok"]})
    task = Task(id="draft", description="Draft", agent=writer, retries=1)
    crew = Crew([task], llm=llm, store=MemoryStore(), tracing=Tracing(tracer_provider=provider))

    assert crew.run().status == "succeeded"

    draft = next(s for s in exporter.get_finished_spans() if s.name == "crew.task draft")
    assert (draft.attributes or {})["crew.task.attempts"] == 2
    assert [e.name for e in draft.events] == ["crew.task.retry"]
    assert draft.status.status_code is StatusCode.UNSET


def test_no_span_is_exported_unless_tracing_is_on(global_spans, monkeypatch):
    def run(**crew_args: Any) -> None:
        llm = ScriptedLLM({"research": [Reply(tool_calls=[("search", {"query": "q"})]), "facts"]})
        assert three_tasks(llm, **crew_args).run({"topic": "x"}).status == "succeeded"

    run()  # CREW_TRACING is not set
    run(tracing=False)
    monkeypatch.setenv("CREW_TRACING", "0")
    run()
    monkeypatch.setenv("CREW_TRACING", "1")
    run(tracing=False)  # the crew's own setting wins
    assert global_spans.get_finished_spans() == ()

    # The same crew, traced: its spans reach the global provider (so the test could see them).
    run()
    traced = global_spans.get_finished_spans()
    assert [s.name for s in traced].count("crew.run") == 1
    assert len(traced) == 1 + 3 + 4 + 1  # run, tasks, model calls, tool call
    monkeypatch.delenv("CREW_TRACING")
    global_spans.clear()
    run(tracing=True)
    assert len(global_spans.get_finished_spans()) == 9


def test_a_subcrews_tasks_are_spans_under_its_task_in_one_run(spans):
    exporter, provider = spans
    worker = Agent(role="Worker", goal="Work")
    inner = Crew([Task(id="facts", description="Facts", agent=worker)], name="inner")
    outer = Crew(
        [Task(id="research", description="Research", crew=inner)],
        llm=ScriptedLLM(default="done"),
        store=MemoryStore(),
        tracing=Tracing(tracer_provider=provider),
    )

    assert outer.run().status == "succeeded"

    finished = exporter.get_finished_spans()
    assert [s.name for s in finished].count("crew.run") == 1
    named = {s.name: s for s in finished}
    assert parent_of(named["crew.task research/facts"]) == span_id(named["crew.task research"])
    assert parent_of(named["chat scripted"]) == span_id(named["crew.task research/facts"])


def test_a_bad_tracing_setting_is_a_config_error_before_any_model_call(monkeypatch):
    llm = ScriptedLLM()
    crew = three_tasks(llm)
    with pytest.raises(ConfigError, match=r"Crew\(tracing=...\) takes True"):
        three_tasks(llm, tracing="yes")
    monkeypatch.setenv("CREW_TRACING", "maybe")
    with pytest.raises(ConfigError, match="CREW_TRACING='maybe': write CREW_TRACING=1"):
        crew.run({"topic": "x"})
    monkeypatch.setenv("CREW_TRACING", "1")
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'crew\[otel\]'"):
        crew.run({"topic": "x"})
    assert llm.calls == []


def test_crew_toml_and_the_environment_turn_tracing_on(tmp_path):
    from crew.config import Settings

    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "crew.toml").write_text("[tracing]\nenabled = true\ncapture_content = true\n")
    settings = Settings.load(cwd=tmp_path, env={"HOME": str(home)})
    assert settings.tracing.enabled and settings.tracing.capture_content
    assert ("tracing.enabled", "True", "./crew.toml") in settings.rows()
    off = Settings.load(cwd=tmp_path, env={"HOME": str(home), "CREW_TRACING": "0"})
    assert not off.tracing.enabled
    assert off.sources["tracing.enabled"] == "env CREW_TRACING"
    (tmp_path / "crew.toml").write_text("[tracing]\nenable = true\n")
    with pytest.raises(
        ConfigError, match=r"crew.toml: tracing.enable: unknown key \(did you mean 'enabled'\?\)"
    ):
        Settings.load(cwd=tmp_path, env={"HOME": str(home)})


CREW_YAML = """\
name: traced
agents:
  worker: {role: Worker, goal: Work}
tasks:
  notes: {description: Take notes, agent: worker}
"""


def test_crew_run_trace_turns_tracing_on_from_the_command_line(
    tmp_path, server, global_spans, monkeypatch, capsys
):
    from crew.cli import main

    (tmp_path / "crew.yaml").write_text(textwrap.dedent(CREW_YAML))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREW_MODEL", "openai/fake")
    monkeypatch.setenv("CREW_API_BASE", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    assert main(["run", ".", "--quiet"]) == 0
    assert global_spans.get_finished_spans() == ()
    assert main(["run", ".", "--quiet", "--trace"]) == 0
    names = sorted(s.name for s in global_spans.get_finished_spans())
    assert names == ["chat openai/fake", "crew.run", "crew.task notes"]
    global_spans.clear()
    (tmp_path / "crew.toml").write_text("[tracing]\nenabled = true\n")
    assert main(["run", ".", "--quiet"]) == 0
    assert len(global_spans.get_finished_spans()) == 3
    capsys.readouterr()


def test_the_trace_flag_without_opentelemetry_exits_2(tmp_path, monkeypatch, capsys):
    from crew.cli import main

    (tmp_path / "crew.yaml").write_text(textwrap.dedent(CREW_YAML))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREW_MODEL", "openai/fake")
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)

    assert main(["run", ".", "--trace"]) == 2
    assert "pip install 'crew[otel]'" in capsys.readouterr().err


def test_opentelemetry_is_imported_only_for_a_traced_run():
    code = textwrap.dedent(
        """\
        import sys
        from crew import Agent, Crew, Task
        from crew.store.memory import MemoryStore
        from crew.testing import ScriptedLLM

        task = Task(id="t", description="Do it", agent=Agent(role="Worker", goal="Work"))
        crew = Crew([task], llm=ScriptedLLM(), store=MemoryStore())
        assert crew.run().status == "succeeded"
        print("untraced", any(m.startswith("opentelemetry") for m in sys.modules))
        assert crew.replace(tracing=True).run().status == "succeeded"
        print("traced", any(m.startswith("opentelemetry") for m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["untraced", "False", "traced", "True"]
