"""Prompts: the placeholder rule, interpolation, and what the system and task prompts contain."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from crew import Agent, Board, Crew, Task
from crew.prompts import (
    FINAL_ANSWER_PROMPT,
    interpolate,
    placeholders,
    repair_prompt,
    system_prompt,
    task_prompt,
)
from crew.testing import ScriptedLLM


class Summary(BaseModel):
    title: str
    points: list[str]


# --- placeholders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("About {topic}", ["topic"]),
        ("{a} and {b} and {a} again", ["a", "b"]),
        (
            "{_private} {snake_case} {kebab-case} {CamelCase9}",
            ["_private", "snake_case", "kebab-case", "CamelCase9"],
        ),
        ('JSON like {"a": 1} is not a placeholder', []),
        ("Nor { spaced } nor {} nor {9lives} nor {-dash} nor {a.b} nor {a b}", []),
        ("", []),
        ("no braces at all", []),
    ],
)
def test_placeholders(text, names):
    assert placeholders(text) == names


def test_placeholders_of_none_is_empty():
    assert placeholders(None) == []  # type: ignore[arg-type]


def test_interpolate_replaces_known_names():
    assert interpolate("About {topic} in {year}", {"topic": "Lisbon", "year": "2024"}) == (
        "About Lisbon in 2024"
    )


def test_interpolate_leaves_unknown_names_and_json_braces_alone():
    text = 'Answer {"topic": "{topic}"} for {audience}, not { topic } or {}'

    assert interpolate(text, {"topic": "Lisbon"}) == (
        'Answer {"topic": "Lisbon"} for {audience}, not { topic } or {}'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (None, "null"),
        (["a", "é"], '["a", "é"]'),
        ({"k": [1, 2]}, '{"k": [1, 2]}'),
        ("plain string", "plain string"),
    ],
)
def test_interpolate_encodes_non_strings_as_json(value, text):
    assert interpolate("<{v}>", {"v": value}) == f"<{text}>"


def test_interpolate_is_a_single_pass():
    # A value that itself looks like a placeholder is not expanded again.
    assert interpolate("{a}", {"a": "{b}", "b": "deep"}) == "{b}"


@pytest.mark.parametrize("text", ["", "no braces"])
def test_interpolate_without_braces_returns_the_text(text):
    assert interpolate(text, {"x": 1}) == text


# --- system prompt -------------------------------------------------------------------------------


def test_system_prompt_has_role_backstory_and_goal_interpolated():
    agent = Agent(
        role="{domain} researcher",
        goal="Find facts about {topic}",
        backstory="You worked {years} years at a newspaper.",
    )

    prompt = system_prompt(agent, {"domain": "Travel", "topic": "Lisbon", "years": 12})

    assert prompt.splitlines() == [
        "You are Travel researcher.",
        "You worked 12 years at a newspaper.",
        "Your goal: Find facts about Lisbon",
    ]


def test_system_prompt_of_a_bare_agent_is_one_line():
    assert system_prompt(Agent(role="Writer"), {}) == "You are Writer."


# --- task prompt ---------------------------------------------------------------------------------


def test_task_prompt_minimal():
    task = Task(id="draft", description="Write about {topic}.")

    prompt = task_prompt(task, {"topic": "Lisbon"}, [], None)

    assert prompt == "# Task: draft\nWrite about Lisbon."


def test_task_prompt_sections():
    board = Board()
    facts = board.post("facts", "Lisbon lies on the Tagus.", author="Researcher")
    summary = board.post(
        "summary", "raw", author="Editor", data=Summary(title="Lisbon", points=["river"])
    )
    task = Task(
        id="draft",
        description="Write about {topic}.",
        expected_output="Three paragraphs in {language}.",
    )
    schema = Summary.model_json_schema()

    prompt = task_prompt(task, {"topic": "Lisbon", "language": "English"}, [facts, summary], schema)

    lines = prompt.splitlines()
    assert lines[0] == "# Task: draft"
    assert lines[1] == "Write about Lisbon."
    assert "## Expected output\nThree paragraphs in English." in prompt
    context = prompt.split("## Context from earlier tasks\n", 1)[1].split("## Answer format")[0]
    assert "### facts (by Researcher)\nLisbon lies on the Tagus." in context
    summary_json = context.split("### summary (by Editor)\n", 1)[1].strip()
    assert json.loads(summary_json) == {"title": "Lisbon", "points": ["river"]}
    answer_format = prompt.split("## Answer format\n", 1)[1]
    assert answer_format.startswith("Answer with one JSON object, and nothing else,")
    assert json.dumps(schema, ensure_ascii=False) in answer_format
    # Sections come in a fixed order.
    order = [
        prompt.index(h)
        for h in ("## Expected output", "## Context from earlier tasks", "## Answer format")
    ]
    assert order == sorted(order)


def test_task_prompt_leaves_out_empty_sections():
    prompt = task_prompt(Task(id="t", description="Do it."), {}, [], None)

    assert "## Expected output" not in prompt
    assert "## Context from earlier tasks" not in prompt
    assert "## Answer format" not in prompt


def test_repair_and_final_answer_prompts():
    assert "title: Field required" in repair_prompt("title: Field required")
    assert "only the corrected JSON object" in repair_prompt("x")
    assert "without tools" in FINAL_ANSWER_PROMPT


# --- the prompts of a run ------------------------------------------------------------------------


def test_a_run_sends_the_interpolated_prompts():
    llm = ScriptedLLM({"summary": {"title": "Lisbon", "points": ["river"]}})
    agent = Agent(role="{domain} editor", goal="Summarise {topic}", llm=llm)
    tasks = [
        Task(
            id="summary",
            description="Summarise {topic}.",
            expected_output="A title and points.",
            agent=agent,
            output_model=Summary,
        )
    ]

    result = Crew(tasks).run({"topic": "Lisbon", "domain": "Travel"})

    assert result.status == "succeeded"
    assert result.outputs["summary"].data == Summary(title="Lisbon", points=["river"])
    (call,) = llm.calls
    assert call.messages[0] == {
        "role": "system",
        "content": "You are Travel editor.\nYour goal: Summarise Lisbon",
    }
    assert call.prompt.startswith("# Task: summary\nSummarise Lisbon.\n")
    assert "## Answer format" in call.prompt
    assert call.output_schema == Summary.model_json_schema()
