"""Record and replay: every model exchange is stored; a replayed run answers from the store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from pydantic import BaseModel

from crew import LLM, Agent, Crew, Task, events, tool
from crew.errors import ConfigError
from crew.llm import ChatRequest, ChatResponse
from crew.replay import Exchanges, request_hash
from crew.store import Store
from crew.store.memory import MemoryStore
from crew.store.sqlite import SQLiteStore
from crew.testing import ScriptedLLM
from crew.testserver import FakeOpenAIServer, ServerReply
from crew.usage import Usage

WORKER = Agent(role="Worker", goal="Work")


class Summary(BaseModel):
    points: list[str]


def chain(description_of_b: str = "Build on a") -> list[Task]:
    return [
        Task(id="a", description="Start it", agent=WORKER),
        Task(id="b", description=description_of_b, agent=WORKER, depends_on=["a"]),
        Task(id="side", description="Unrelated", agent=WORKER),
    ]


@pytest.fixture
def store(durable_store: Store) -> Store:
    return durable_store


def script(server: FakeOpenAIServer) -> None:
    server.script("a", ServerReply(text="A1", prompt_tokens=10, completion_tokens=2))
    server.script("b", ServerReply(text="B1", prompt_tokens=20, completion_tokens=3))
    server.script("side", ServerReply(text="S1", prompt_tokens=5, completion_tokens=1))


def test_a_replayed_run_calls_no_model_and_gives_the_same_outputs(server, fake_llm, store):
    script(server)
    first = Crew(chain(), llm=fake_llm, store=store).run()
    assert first.status == "succeeded" and len(server.calls) == 3

    server.reset()
    server.default = ServerReply(status=500, error="the provider must not be called")
    crew = Crew(chain(), llm=fake_llm, store=store)
    replayed = crew.run(replay=first.run_id, replay_strict=True)

    assert server.calls == []
    assert replayed.status == "succeeded" and replayed.run_id != first.run_id
    assert {t: o.text for t, o in replayed.outputs.items()} == {"a": "A1", "b": "B1", "side": "S1"}
    assert replayed.usage.total.prompt_tokens == first.usage.total.prompt_tokens == 35
    assert replayed.usage.total.completion_tokens == 6
    # the replay recorded what it was answered, so it can be replayed in turn
    again = crew.run(replay=replayed.run_id, replay_strict=True)
    assert again.status == "succeeded" and server.calls == []


@dataclass
class PricedModel:
    """A model that charges for every answer, and says which call of a task it is."""

    name: str = "priced"
    requests: list[ChatRequest] = field(default_factory=list)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        usage = Usage(calls=1, prompt_tokens=100, completion_tokens=10, cost_usd=0.25)
        return ChatResponse(content=f"{request.task_id}#{len(self.requests)}", usage=usage)


def test_a_replayed_answer_costs_nothing_but_keeps_its_tokens():
    store = MemoryStore()
    model = PricedModel()
    first = Crew(chain(), llm=model, store=store).run()
    assert first.usage.total.cost_usd == pytest.approx(0.75)

    replayed = Crew(chain(), llm=PricedModel(), store=store).run(replay=first.run_id)
    assert replayed.usage.total == Usage(
        calls=3, prompt_tokens=300, completion_tokens=30, cost_usd=0.0
    )
    assert replayed.outputs["b"].text == first.outputs["b"].text


def test_each_exchange_is_stored_under_its_request_hash_and_occurrence():
    store = MemoryStore()
    model = PricedModel()
    result = Crew(chain(), llm=model, store=store).run()
    for number, request in enumerate(model.requests, start=1):
        key = f"{request_hash(model, request)}.0"
        recorded = store.get_exchange(key, result.run_id)
        assert recorded is not None and recorded["content"] == f"{request.task_id}#{number}"
        assert recorded["usage"]["cost_usd"] == 0.25


def test_the_same_request_sent_twice_in_a_run_is_replayed_in_the_same_order():
    # The task's first attempt fails validation twice (answer, then repair); the task is retried
    # with the same first request, which the model now answers well: occurrence 0, then 1.
    task = Task(id="sum", description="Sum up", agent=WORKER, output_model=Summary, retries=1)
    llm = ScriptedLLM({"sum": ["not json", "still not json", {"points": ["x"]}]})
    store = MemoryStore()
    first = Crew([task], llm=llm, store=store).run()
    assert first.status == "succeeded" and len(llm.calls) == 3
    assert llm.calls[0].messages == llm.calls[2].messages  # the same request, twice

    fresh = ScriptedLLM({"sum": "the replay must not ask me"})
    replayed = Crew([task], llm=fresh, store=store).run(replay=first.run_id, replay_strict=True)
    assert fresh.calls == []
    assert replayed.status == "succeeded" and replayed.tasks["sum"].attempts == 2
    assert replayed.outputs["sum"].data == Summary(points=["x"])


def test_strict_replay_fails_a_request_the_run_did_not_record(server, fake_llm):
    script(server)
    store = MemoryStore()
    first = Crew(chain(), llm=fake_llm, store=store).run()
    server.reset()

    changed = Crew(chain("Build on a, briefly"), llm=fake_llm, store=store)
    result = changed.run(replay=first.run_id, replay_strict=True)

    assert server.calls == []
    assert result.status == "failed"
    failed = result.tasks["b"]
    assert (failed.status, failed.error_type, failed.attempts) == (
        "failed",
        "ReplayMissError",
        1,  # not retryable: another try would miss again
    )
    assert "Task 'b' (agent 'Worker')" in (failed.error or "")
    assert f"was not recorded in run '{first.run_id}'" in (failed.error or "")
    assert result.outputs["a"].text == "A1"  # the recorded ones were answered


def test_replay_sends_only_the_requests_the_run_did_not_record(server, fake_llm):
    script(server)
    store = MemoryStore()
    first = Crew(chain(), llm=fake_llm, store=store).run()
    server.reset()
    server.script("b", ServerReply(text="B2"))

    result = Crew(chain("Build on a, briefly"), llm=fake_llm, store=store).run(replay=first.run_id)
    assert [call.key for call in server.calls] == ["b"]
    assert result.outputs["b"].text == "B2" and result.outputs["a"].text == "A1"


def test_tool_calls_are_replayed_with_their_ids_so_the_conversation_matches(server, fake_llm):
    added: list[int] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        added.append(a + b)
        return a + b

    calculator = Agent(role="Calculator", tools=[add], board_tools=False)
    task = Task(id="calc", description="Add 1 and 2", agent=calculator)
    server.script(
        "calc", ServerReply(tool_calls=[("add", {"a": 1, "b": 2})]), ServerReply(text="It is 3.")
    )
    store = MemoryStore()
    first = Crew([task], llm=fake_llm, store=store).run()
    server.reset()

    replayed = Crew([task], llm=fake_llm, store=store).run(replay=first.run_id, replay_strict=True)
    assert server.calls == []
    assert replayed.outputs["calc"].text == "It is 3."
    assert added == [3, 3]  # tools run again: only model answers are replayed


def test_a_replayed_answer_reaches_streaming_consumers(server, fake_llm):
    server.script("a", ServerReply(text="streamed answer"))
    store = MemoryStore()
    first = Crew(chain()[:1], llm=fake_llm, store=store, stream=True).run()
    server.reset()

    seen: list[events.Event] = []
    crew = Crew(chain()[:1], llm=fake_llm, store=store, stream=True)
    result = asyncio.run(crew.arun(replay=first.run_id, replay_strict=True, on_event=seen.append))
    assert server.calls == [] and result.outputs["a"].text == "streamed answer"
    tokens = [e.text for e in seen if isinstance(e, events.TokenDelta) and e.task_id == "a"]
    assert "".join(tokens) == "streamed answer"


def test_a_replay_recorded_in_sqlite_is_answered_by_another_process_store(
    server, fake_llm, tmp_path
):
    script(server)
    with SQLiteStore(tmp_path / "crew.db") as writer:
        first = Crew(chain(), llm=fake_llm, store=writer).run()
    server.reset()
    with SQLiteStore(tmp_path / "crew.db") as reader:
        replayed = Crew(chain(), llm=fake_llm, store=reader).run(
            replay=first.run_id, replay_strict=True
        )
    assert server.calls == [] and replayed.outputs["b"].text == "B1"


def test_replay_setup_mistakes_are_config_errors_before_any_model_call():
    llm = ScriptedLLM()
    crew = Crew(chain(), llm=llm, store=MemoryStore())
    with pytest.raises(ConfigError, match="Cannot replay run 'nope': it is not in the store"):
        crew.run(replay="nope")
    with pytest.raises(ConfigError, match="replay_strict=True needs a run to replay"):
        crew.run(replay_strict=True)
    assert llm.calls == []
    assert crew.store.list_runs() == []


def test_the_hash_covers_what_decides_the_answer_and_nothing_else():
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], task_id="a")
    base = LLM("openai/gpt-4o-mini", temperature=0.2)
    same = [
        LLM("openai/gpt-4o-mini", temperature=0.2, api_key="sk-other", timeout_s=5),
        LLM("openai/gpt-4o-mini", temperature=0.2, api_base="http://127.0.0.1:9/v1"),
        LLM("openai/gpt-4o-mini", temperature=0.2, params={"extra_headers": {"X": "1"}}),
    ]
    different = [
        LLM("openai/gpt-4o", temperature=0.2),
        LLM("openai/gpt-4o-mini", temperature=0.7),
        LLM("openai/gpt-4o-mini", temperature=0.2, params={"seed": 7}),
    ]
    digest = request_hash(base, request)
    assert len(digest) == 64
    assert all(request_hash(model, request) == digest for model in same)
    assert all(request_hash(model, request) != digest for model in different)
    other = ChatRequest(messages=[{"role": "user", "content": "hi!"}], task_id="a")
    assert request_hash(base, other) != digest
    assert request_hash(base, ChatRequest(messages=request.messages, task_id="zz")) == digest


def test_a_recorded_model_is_wrapped_and_still_says_whether_it_enforces_schemas():
    # The agent loop asks the model (not its class) whether the provider enforces output schemas.
    exchanges = Exchanges(MemoryStore(), "r1")
    model = LLM("ollama/llama3.1", temperature=0.3, max_rpm=5)
    wrapped = exchanges.wrap(model)
    assert wrapped.name == "ollama/llama3.1"
    assert getattr(wrapped, "enforces_schema", None) == model.enforces_schema
    assert exchanges.wrap(ScriptedLLM()).name == "scripted"
    assert getattr(exchanges.wrap(ScriptedLLM()), "enforces_schema", None) is False
