"""Tools: schemas from type hints and docstrings, argument validation, where tools run, how
results become text; and tool calls inside a run (concurrency, errors, the iteration limit)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Optional

import pytest
from pydantic import BaseModel, ValidationError

from crew import Agent, Crew, Task, Tool, tool
from crew.errors import ConfigError
from crew.prompts import FINAL_ANSWER_PROMPT
from crew.testing import Call, Reply, ScriptedLLM


class Weather(BaseModel):
    city: str
    celsius: float


@tool
def search(query: str, limit: int = 5, tags: list[str] | None = None) -> list[str]:
    """Search the archive for documents.

    Longer explanation that the model does not need.

    Args:
        query: the words to look for.
        limit (int): how many results at most.
        tags: only documents with one of these tags.

    Returns:
        titles: the titles found.
    """
    return [f"{query}-{i}" for i in range(limit)]


def parameters_of(t: Tool) -> dict:
    return t.schema()["function"]["parameters"]


# --- schemas -------------------------------------------------------------------------------------


def test_tool_schema_from_hints_and_docstring():
    assert isinstance(search, Tool)
    assert search.schema() == {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the archive for documents.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "the words to look for."},
                    "limit": {
                        "type": "integer",
                        "default": 5,
                        "description": "how many results at most.",
                    },
                    "tags": {
                        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                        "default": None,
                        "description": "only documents with one of these tags.",
                    },
                },
                "required": ["query"],
            },
        },
    }


def test_returns_section_is_not_read_as_arguments():
    assert "titles" not in parameters_of(search)["properties"]


def test_tool_with_name_and_description_overrides():
    @tool(name="lookup", description="Look a word up.")
    def find(word: str) -> str:
        """Ignored docstring."""
        return word.upper()

    schema = find.schema()["function"]

    assert find.name == "lookup"
    assert schema["name"] == "lookup"
    assert schema["description"] == "Look a word up."
    assert repr(find) == "Tool('lookup')"
    assert find("hi") == "HI"  # still callable as the plain function


def test_description_is_the_whole_first_paragraph_on_one_line():
    @tool
    def fetch(url: str) -> str:
        """Fetch a page
        and return its text.

        Second paragraph.
        """
        return url

    assert fetch.description == "Fetch a page and return its text."


def test_description_falls_back_to_the_name():
    @tool
    def fetch_page(url: str) -> str:
        return url

    assert fetch_page.description == "fetch page"
    assert "description" not in parameters_of(fetch_page)["properties"]["url"]


def test_types_map_to_json_schema():
    @tool
    def typed(count: int, name: str, names: list[str], maybe: Optional[int] = None) -> str:  # noqa: UP045
        """Typed."""
        return ""

    properties = parameters_of(typed)["properties"]

    assert properties["count"] == {"type": "integer"}
    assert properties["name"] == {"type": "string"}
    assert properties["names"] == {"type": "array", "items": {"type": "string"}}
    assert properties["maybe"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "default": None,
    }
    assert parameters_of(typed)["required"] == ["count", "name", "names"]


def test_var_args_are_left_out_of_the_schema():
    @tool
    def flexible(first: str, *rest: str, **extra: str) -> str:
        """Flexible."""
        return first

    assert list(parameters_of(flexible)["properties"]) == ["first"]


def test_multi_line_argument_descriptions_are_kept_whole():
    @tool
    def wrapped(query: str) -> str:
        """Wrapped.

        Args:
            query: the words to look for, which may span
                more than one line.
        """
        return query

    description = parameters_of(wrapped)["properties"]["query"]["description"]

    assert "more than one line" in description


def test_a_parameter_named_schema_is_an_ordinary_argument():
    @tool
    def describe(schema: str) -> str:
        """Describe a database schema."""
        return f"schema={schema}"

    assert list(parameters_of(describe)["properties"]) == ["schema"]
    assert asyncio.run(describe.invoke({"schema": "public"})) == "schema=public"


def test_tool_needs_a_callable():
    with pytest.raises(ConfigError, match="@tool needs a function, got int"):
        Tool(42)  # type: ignore[arg-type]


def test_unresolvable_type_hints_are_a_config_error():
    @tool
    def broken(thing: NotDefinedAnywhere) -> str:  # type: ignore[name-defined]  # noqa: F821
        """Broken."""
        return ""

    with pytest.raises(ConfigError, match="Tool 'broken' has type hints that cannot be resolved"):
        broken.schema()


# --- invoke --------------------------------------------------------------------------------------


def test_invoke_validates_and_coerces_arguments():
    result = asyncio.run(search.invoke({"query": "lisbon", "limit": "2"}))

    assert json.loads(result) == ["lisbon-0", "lisbon-1"]


def test_invoke_fills_defaults():
    result = asyncio.run(search.invoke({"query": "q"}))

    assert len(json.loads(result)) == 5


@pytest.mark.parametrize(
    "arguments",
    [{}, {"query": "q", "limit": "many"}, {"query": "q", "tags": "not-a-list"}, {"query": None}],
)
def test_invoke_rejects_invalid_arguments(arguments):
    with pytest.raises(ValidationError):
        asyncio.run(search.invoke(arguments))


def test_sync_tools_run_in_a_worker_thread():
    seen: list[threading.Thread] = []

    @tool
    def where() -> str:
        """Where."""
        seen.append(threading.current_thread())
        return "done"

    assert asyncio.run(where.invoke({})) == "done"
    assert len(seen) == 1
    assert seen[0] is not threading.main_thread()


def test_async_tools_run_on_the_event_loop():
    seen: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []

    @tool
    async def where() -> str:
        """Where."""
        seen.append((asyncio.get_running_loop(), threading.current_thread()))
        return "done"

    async def main() -> asyncio.AbstractEventLoop:
        assert await where.invoke({}) == "done"
        return asyncio.get_running_loop()

    loop = asyncio.run(main())

    assert seen == [(loop, threading.main_thread())]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (3, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (None, "null"),
        ({"a": [1, "é"]}, '{"a": [1, "é"]}'),
        ([1, 2], "[1, 2]"),
    ],
)
def test_non_string_results_become_json_text(value, text):
    @tool
    def give() -> object:
        """Give."""
        return value

    assert asyncio.run(give.invoke({})) == text


def test_pydantic_results_become_json():
    @tool
    def weather(city: str) -> Weather:
        """Weather."""
        return Weather(city=city, celsius=21.5)

    result = asyncio.run(weather.invoke({"city": "Lisbon"}))

    assert json.loads(result) == {"city": "Lisbon", "celsius": 21.5}


def test_invoke_raises_what_the_function_raises():
    @tool
    def fail() -> str:
        """Fail."""
        raise LookupError("nothing there")

    with pytest.raises(LookupError, match="nothing there"):
        asyncio.run(fail.invoke({}))


def test_plain_functions_become_tools_on_an_agent():
    def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    agent = Agent(role="Worker", tools=[shout, search])

    assert set(agent.tool_map) == {"shout", "search"}
    assert isinstance(agent.tool_map["shout"], Tool)
    assert agent.tool_map["search"] is search


# --- tools in a run ------------------------------------------------------------------------------


def one_task_crew(llm: ScriptedLLM, tools: list, **agent_kwargs: object) -> Crew:
    agent = Agent(role="Worker", llm=llm, tools=tools, **agent_kwargs)  # type: ignore[arg-type]
    return Crew([Task(id="t", description="Do it", agent=agent)])


def test_tool_calls_of_one_turn_run_concurrently():
    barrier = threading.Barrier(2, timeout=5)

    @tool
    def left() -> str:
        """Left."""
        barrier.wait()  # passes only if right() is waiting at the same time
        return "left passed"

    @tool
    def right() -> str:
        """Right."""
        barrier.wait()
        return "right passed"

    llm = ScriptedLLM({"t": [Reply(tool_calls=[("left", {}), ("right", {})]), "both done"]})

    result = one_task_crew(llm, [left, right]).run()

    assert result.status == "succeeded"
    assert llm.calls_for("t")[1].tool_results == ["left passed", "right passed"]
    assert result.outputs["t"].text == "both done"


def test_a_tool_error_goes_to_the_model_and_does_not_fail_the_task():
    @tool
    def flaky(n: int) -> str:
        """Flaky."""
        raise RuntimeError(f"disk {n} is full")

    llm = ScriptedLLM({"t": [Reply(tool_calls=[("flaky", {"n": 7})]), "worked around it"]})

    result = one_task_crew(llm, [flaky]).run()

    assert result.status == "succeeded"
    assert result.outputs["t"].text == "worked around it"
    assert llm.calls_for("t")[1].tool_results == [
        "Error: flaky raised RuntimeError: disk 7 is full"
    ]


def test_invalid_tool_arguments_go_to_the_model():
    llm = ScriptedLLM({"t": [Reply(tool_calls=[("search", {"limit": "x"})]), "fine"]})

    result = one_task_crew(llm, [search]).run()

    assert result.status == "succeeded"
    (answer,) = llm.calls_for("t")[1].tool_results
    assert answer.startswith("Error: search raised ValidationError:")
    assert "query" in answer
    assert "limit" in answer


def test_an_unknown_tool_answers_with_the_available_tools():
    llm = ScriptedLLM({"t": [Reply(tool_calls=[("serch", {"query": "q"})]), "fine"]})

    result = one_task_crew(llm, [search]).run()

    assert result.status == "succeeded"
    assert llm.calls_for("t")[1].tool_results == [
        "Error: there is no tool 'serch'. Available tools: search, read_board, post_note."
    ]


def test_tool_schemas_are_sent_to_the_model():
    llm = ScriptedLLM({"t": "done"})

    one_task_crew(llm, [search]).run()

    tools = llm.calls_for("t")[0].tools
    assert tools is not None
    assert [s["function"]["name"] for s in tools] == ["search", "read_board", "post_note"]


def test_without_board_tools_only_the_agents_own_tools_are_sent():
    llm = ScriptedLLM({"t": "done"})

    one_task_crew(llm, [search], board_tools=False).run()

    tools = llm.calls_for("t")[0].tools
    assert tools is not None
    assert [s["function"]["name"] for s in tools] == ["search"]


def test_the_last_allowed_call_has_no_tools_and_asks_for_the_final_answer():
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    def script(call: Call) -> Reply:
        if call.tools:  # keep calling tools for as long as tools are offered
            return Reply(tool_calls=[("echo", {"text": f"round {call.index}"})])
        return Reply(text="final answer")

    llm = ScriptedLLM(script)

    result = one_task_crew(llm, [echo], max_iterations=3).run()

    assert result.status == "succeeded"
    assert result.outputs["t"].text == "final answer"
    calls = llm.calls_for("t")
    assert len(calls) == 3
    assert calls[0].tools is not None
    assert calls[1].tools is not None
    assert calls[2].tools is None
    assert calls[2].messages[-1] == {"role": "user", "content": FINAL_ANSWER_PROMPT}
    assert calls[2].tool_results == ["round 0", "round 1"]
    assert FINAL_ANSWER_PROMPT not in [m["content"] for m in calls[1].messages]


def test_a_model_that_never_answers_fails_with_max_iterations():
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    llm = ScriptedLLM({"t": Reply(tool_calls=[("echo", {"text": "again"})])})

    result = one_task_crew(llm, [echo], max_iterations=2).run()

    assert result.status == "failed"
    assert result.tasks["t"].error_type == "MaxIterationsError"
    assert "max_iterations" in (result.tasks["t"].error or "")
    # max_iterations calls per attempt; the crew's default task retries make it three attempts.
    assert result.tasks["t"].attempts == 3 and len(llm.calls_for("t")) == 2 * 3


# --- delegation: the coworker's calls ------------------------------------------------------------


LEAD = Agent(role="Lead", allow_delegation=True)
RESEARCHER = Agent(role="Researcher")


def delegate_then_answer(call: Call) -> str | Reply:
    """The lead delegates first, then answers; the coworker answers at once."""
    if call.agent == "Researcher":
        return "facts"
    if not call.tool_results:
        return Reply(
            tool_calls=[
                ("delegate_work", {"coworker": "Researcher", "task_description": "Find facts"})
            ]
        )
    return "the draft"


def test_a_coworkers_calls_count_under_the_coworker_and_are_charged_to_the_task():
    task = Task(id="draft", description="Write", agent=LEAD)
    result = Crew([task], agents=[RESEARCHER], llm=ScriptedLLM(delegate_then_answer)).run()

    usage = result.usage
    assert usage.by_agent["Lead"].calls == 2 and usage.by_agent["Researcher"].calls == 1
    assert usage.by_agent["Researcher"].prompt_tokens > 0
    assert usage.by_task["draft"].calls == usage.total.calls == 3
    assert usage.total == usage.by_agent["Lead"] + usage.by_agent["Researcher"]
    assert result.tasks["draft"].usage_by_agent["Researcher"].calls == 1


def test_delegated_calls_in_a_map_and_a_loop_count_under_the_coworker():
    from crew.task import loop

    each = Task(id="each", description="Do {item}", agent=LEAD, for_each=lambda board: [1, 2])
    again = loop("again", [Task(id="step", description="Step", agent=LEAD)], max_rounds=2)
    crew = Crew([each, again], agents=[RESEARCHER], llm=ScriptedLLM(delegate_then_answer))
    usage = crew.run().usage

    assert usage.by_agent["Lead"].calls == 8 and usage.by_agent["Researcher"].calls == 4
    assert usage.total.calls == 12 and usage.by_task["again"].calls == 6
