"""Examples are tests: each runs as a user would run it (the real `crew` command in a
subprocess), its model answered by the fake server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crew.testserver import FakeOpenAIServer, ServerReply

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CREW = Path(sys.executable).with_name("crew")
_SCHEMA = re.compile(r"following this JSON schema: (\{.*\})\s*$", re.DOTALL)


def instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A small value that validates against ``schema`` (what a well-behaved model would send)."""
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        return instance(defs[schema["$ref"].split("/")[-1]], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return instance(schema["anyOf"][0], defs)
    kind = schema.get("type", "string")
    if kind == "object":
        return {k: instance(v, defs) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance(schema.get("items", {}), defs)] * max(1, schema.get("minItems", 1))
    if kind == "string":
        return "text".ljust(schema.get("minLength", 0), ".")
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}[kind]


def answer(body: dict[str, Any]) -> ServerReply:
    """ServerReply to any task: JSON that fits the task's schema when it asks for one, else text."""
    format_ = body.get("response_format") or {}
    schema = format_.get("json_schema", {}).get("schema")
    if schema is None:
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        found = _SCHEMA.search(prompt)
        schema = json.loads(found.group(1)) if found else None
    if schema is not None:
        return ServerReply(json=instance(schema), latency_ms=30)
    return ServerReply(text="- a finding\n- another finding", latency_ms=30)


def run_crew(server: FakeOpenAIServer, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    env |= {"CREW_MODEL": "openai/fake", "CREW_API_BASE": server.url, "OPENAI_API_KEY": "sk-test"}
    # Runs of `crew run DIR` are kept in DIR: here, not in the repository's examples/.
    env["CREW_STORE"] = f"sqlite:///{cwd / '.crew' / 'crew.db'}"
    return subprocess.run(
        [str(CREW), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.mark.parametrize("name", ["research", "trip", "code_review", "newsroom"])
def test_example_crew_runs_from_the_command_line(server, tmp_path, name):
    server.default = answer
    if name == "newsroom":
        question = {"coworker": "Fact checker", "question": "Is the new tram line opening in May?"}
        server.script(
            "edition",
            ServerReply(tool_calls=[("ask_question", question)]),
            ServerReply(text="EDITION: both stories, one claim checked"),
        )
    done = run_crew(server, "run", str(EXAMPLES / name), "--json", cwd=tmp_path)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    tasks = result["tasks"]
    assert all(t["status"] == "succeeded" for t in tasks.values())
    final = list(tasks.values())[-1]
    if name == "newsroom":
        assert final["text"] == "EDITION: both stories, one claim checked"
        [checked] = [k for k in result["board"] if "/question-" in k]
        assert result["board"][checked][0]["author"] == "Fact checker"
    else:
        assert isinstance(final["data"], dict)  # the structured output validated
    keys = {call.key for call in server.calls}
    assert set(tasks) <= keys


def prompt(call: Any) -> str:
    return next(m["content"] for m in call.body["messages"] if m["role"] == "user")


def test_the_support_example_routes_maps_and_loops(server, tmp_path):
    """The router picks `question` and skips the bug route, the map answers each question, and
    the reviewer rejects the first draft, so the loop runs two rounds; `send` joins the routes."""
    questions = ["Can we add a second admin?", "Is there a yearly plan?"]
    server.default = answer
    server.script("triage", ServerReply(json={"route": "question", "reason": "two questions"}))
    server.script("questions", ServerReply(json={"items": questions}))
    server.script(
        "review",
        ServerReply(json={"approved": False, "notes": "Mention the yearly discount."}),
        ServerReply(json={"approved": True}),
    )
    done = run_crew(server, "run", str(EXAMPLES / "support"), "--json", cwd=tmp_path)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    statuses = {task_id: task["status"] for task_id, task in result["tasks"].items()}
    assert statuses.pop("reproduce") == "skipped"
    assert set(statuses.values()) == {"succeeded"}
    assert result["tasks"]["reproduce"]["reason"] == "router 'triage' chose 'question'"
    keys = [call.key for call in server.calls]
    assert "reproduce" not in keys
    answers = [prompt(c) for c in server.calls if c.key == "answer_each"]
    assert len(answers) == 2  # one instance per item, each with its own question
    assert [sum(q in p for p in answers) for q in questions] == [1, 1]
    assert keys.count("draft_reply") == keys.count("review") == 2  # two rounds
    second_draft = [prompt(c) for c in server.calls if c.key == "draft_reply"][1]
    assert "Mention the yearly discount." in second_draft
    assert keys[-1] == "send" and set(result["tasks"]["send"]["data"]) == {"subject", "body"}


def test_the_support_plan_checks_out_without_a_model_call(tmp_path, server):
    done = run_crew(server, "plan", str(EXAMPLES / "support"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for task_id in ("triage", "answer_each", "polish", "draft_reply", "send"):
        assert task_id in done.stdout
    assert not server.calls


def test_example_plans_show_the_parallel_tasks(tmp_path, server):
    done = run_crew(server, "plan", str(EXAMPLES / "trip"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "critical path" in done.stdout.lower()
    for task_id in ("sights", "food", "transport", "itinerary"):
        assert task_id in done.stdout
    assert not server.calls  # planning calls no model


def test_quickstart_runs_offline_and_prints_the_article(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No CREW_MODEL set: answering from crew's local fake server" in done.stdout
    assert "# Lisbon, City of Seven Hills" in done.stdout
    for task_id in ("facts", "history", "article"):
        assert f"{task_id:<8} succeeded" in done.stdout
    assert ": succeeded in" in done.stdout


def test_quickstart_runs_from_the_command_line_with_its_declared_input(server, tmp_path):
    server.default = answer
    done = run_crew(server, "run", str(EXAMPLES / "quickstart.py"), "--json", cwd=tmp_path)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert set(result["tasks"]["article"]["data"]) == {"title", "body"}
    assert "Lisbon" in prompt(server.calls[0])  # the declared default of `topic`
