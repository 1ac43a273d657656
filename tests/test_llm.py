"""The litellm layer, over real HTTP to the fake server: retries, Retry-After, fallbacks, error
translation, usage and cost, structured output, and the tool loop end to end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from crew import LLM, Agent, Crew, RetryPolicy, Task, events, tool
from crew import errors as crew_errors
from crew.llm import ChatRequest
from crew.testserver import ServerReply
from tests.conftest import FAST_RETRY

USER = [{"role": "user", "content": "# Task: t\nSay hi."}]


def complete(llm: LLM, **kwargs: object):
    return asyncio.run(llm.complete(ChatRequest(messages=USER, task_id="t", **kwargs)))  # type: ignore[arg-type]


def test_a_call_returns_text_tokens_and_the_model(server, fake_llm):
    server.script("t", ServerReply(text="hi there", prompt_tokens=12, completion_tokens=3))
    response = complete(fake_llm)
    assert response.content == "hi there"
    assert (
        response.usage.calls,
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
    ) == (1, 12, 3)
    assert response.model == "openai/fake"
    assert server.calls[0].body["messages"] == USER


def test_cost_is_recorded_for_priced_models(server):
    llm = LLM("openai/gpt-4o-mini", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)
    server.script("t", ServerReply(text="hi", prompt_tokens=1000, completion_tokens=1000))
    usage = complete(llm).usage
    assert usage.cost_usd > 0  # priced from litellm's bundled (local) price map


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_statuses_are_retried_then_succeed(server, fake_llm, status):
    server.script("t", ServerReply(status=status), ServerReply(text="ok"))
    retries: list[tuple[str, int]] = []
    response = complete(
        fake_llm, on_retry=lambda model, attempt, error, delay: retries.append((model, attempt))
    )
    assert response.content == "ok"
    assert [c.status for c in server.calls] == [status, 200]
    assert retries == [("openai/fake", 1)]


def test_retry_after_is_honoured(server, fake_llm):
    server.script("t", ServerReply(status=429, retry_after_s=0.3), ServerReply(text="ok"))
    waits: list[float] = []
    complete(fake_llm, on_retry=lambda m, a, e, delay: waits.append(delay))
    first, second = server.calls
    assert waits and waits[0] >= 0.3
    assert second.started - first.finished >= 0.28  # the backoff alone would be 0.01 s


def test_litellm_does_not_retry_on_its_own(server, fake_llm):
    server.script("t", ServerReply(status=500))
    with pytest.raises(crew_errors.ProviderError, match="openai/fake"):
        complete(fake_llm)
    assert len(server.calls) == FAST_RETRY.attempts  # ours only: litellm's num_retries is 0


def test_fallback_model_answers_after_the_primary_is_out_of_retries(server):
    server.script("t", ServerReply(status=429), model="openai/primary")
    server.script("t", ServerReply(text="from backup"), model="openai/backup")
    llm = LLM(
        "openai/primary",
        api_base=server.url,
        api_key="sk-test",
        retry=FAST_RETRY,
        fallbacks=["openai/backup"],
    )
    fallbacks: list[tuple[str, str]] = []
    response = complete(
        llm, on_fallback=lambda failed, following, error: fallbacks.append((failed, following))
    )
    assert response.content == "from backup"
    assert response.model == "openai/backup"
    assert [c.model for c in server.calls] == ["primary"] * 3 + ["backup"]
    assert fallbacks == [("openai/primary", "openai/backup")]


def test_non_retryable_errors_fail_at_once_and_skip_fallbacks(server):
    server.script("t", ServerReply(status=400, error="messages: invalid role"))
    llm = LLM(
        "openai/fake",
        api_base=server.url,
        api_key="sk-test",
        fallbacks=["openai/other"],
        retry=FAST_RETRY,
    )
    with pytest.raises(crew_errors.BadRequestError) as caught:
        complete(llm)
    assert len(server.calls) == 1
    assert "Model 'openai/fake'" in str(caught.value) and "invalid role" in str(caught.value)
    assert not caught.value.retryable


def test_model_not_found(server, fake_llm):
    server.script("t", ServerReply(status=404, error="The model `fake` does not exist"))
    with pytest.raises(crew_errors.ModelNotFoundError, match="check the model name"):
        complete(fake_llm)
    assert len(server.calls) == 1


def test_context_window_exceeded(server, fake_llm):
    server.script(
        "t",
        ServerReply(
            status=400,
            error=(
                "This model's maximum context length is 8192 tokens. However, your messages"
                " resulted in 9000 tokens. Please reduce the length of the messages."
            ),
        ),
    )
    with pytest.raises(crew_errors.ContextWindowError, match="context window"):
        complete(fake_llm)
    assert len(server.calls) == 1


def test_rejected_key_names_the_variable_litellm_read(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    server.script("t", ServerReply(status=401, error="Incorrect API key provided"))
    llm = LLM("openai/fake", api_base=server.url, retry=FAST_RETRY)
    with pytest.raises(crew_errors.AuthenticationError, match="OPENAI_API_KEY") as caught:
        complete(llm)
    assert "Model 'openai/fake'" in str(caught.value)
    assert len(server.calls) == 1


def test_missing_key_names_the_variable_to_set(server):
    llm = LLM("openai/fake", api_base=server.url, retry=FAST_RETRY)  # and no OPENAI_API_KEY
    with pytest.raises(crew_errors.AuthenticationError, match="looked for OPENAI_API_KEY"):
        complete(llm)


def test_timeouts_are_retryable_llm_errors(server):
    server.script("t", ServerReply(hang=True), ServerReply(text="ok"))
    llm = LLM(
        "openai/fake", api_base=server.url, api_key="sk-test", timeout_s=0.3, retry=FAST_RETRY
    )
    assert complete(llm).content == "ok"
    no_retry = LLM(
        "openai/fake",
        api_base=server.url,
        api_key="sk-test",
        timeout_s=0.3,
        retry=RetryPolicy(attempts=1),
    )
    server.script("t", ServerReply(hang=True))
    with pytest.raises(crew_errors.LLMTimeoutError, match=r"no answer within 0\.3 s"):
        complete(no_retry)


def test_connection_refused_is_a_clear_retryable_error():
    llm = LLM(
        "openai/fake",
        api_base="http://127.0.0.1:9/v1",
        api_key="sk-test",
        retry=RetryPolicy(attempts=1),
    )
    with pytest.raises(
        crew_errors.LLMConnectionError, match=r"could not connect to http://127\.0\.0\.1:9"
    ) as caught:
        complete(llm)
    assert caught.value.retryable


class Article(BaseModel):
    title: str
    words: int


def article_crew(llm: LLM) -> Crew:
    writer = Agent(role="Writer", goal="Write", llm=llm)
    return Crew([Task(id="article", description="Write it", agent=writer, output_model=Article)])


def test_structured_output_uses_json_schema_where_the_model_supports_it(server):
    llm = LLM("openai/gpt-4o-mini", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)
    server.script("article", ServerReply(json={"title": "Lisbon", "words": 3}))
    result = article_crew(llm).run()
    assert result.outputs["article"].data == Article(title="Lisbon", words=3)
    response_format = server.calls[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["title", "words"]


def test_structured_output_is_repaired_once_when_the_model_has_no_json_mode(server, fake_llm):
    server.script(
        "article",
        ServerReply(text='Sure! Here it is: {"title": "Lisbon"}'),
        ServerReply(text='```json\n{"title": "Lisbon", "words": 7}\n```'),
    )
    result = article_crew(fake_llm).run()
    assert result.outputs["article"].data == Article(title="Lisbon", words=7)
    assert "response_format" not in server.calls[0].body
    repair = server.calls[1].body["messages"][-1]["content"]
    assert "did not match the required JSON schema" in repair and "words" in repair


def test_structured_output_fails_clearly_after_the_repair_round(server, fake_llm):
    server.script("article", ServerReply(text="no json at all"))
    result = article_crew(fake_llm).run()
    task = result.tasks["article"]
    assert task.status == "failed" and task.error_type == "OutputValidationError"
    assert "does not match Article" in task.error
    # An answer and its repair per attempt; the crew's default task retries try twice more.
    assert task.attempts == 3 and len(server.calls) == 6


def test_tool_loop_over_http_with_a_failing_tool(server, fake_llm):
    @tool
    def word_count(text: str) -> int:
        """Count the words in a text."""
        return len(text.split())

    @tool
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"boom: {reason}")

    server.script(
        "count",
        ServerReply(
            tool_calls=[("word_count", {"text": "one two three"}), ("explode", {"reason": "test"})]
        ),
        ServerReply(text="three words"),
    )
    agent = Agent(role="Counter", llm=fake_llm, tools=[word_count, explode])
    seen: list[events.Event] = []
    result = asyncio.run(
        Crew([Task(id="count", description="Count", agent=agent)]).arun(on_event=seen.append)
    )

    assert result.outputs["count"].text == "three words"
    sent = server.calls[0].body
    assert {t["function"]["name"] for t in sent["tools"]} == {
        "word_count",
        "explode",
        "read_board",
        "post_note",
    }
    tool_messages = [m for m in server.calls[1].body["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [
        "3",
        "Error: explode raised RuntimeError: boom: test",
    ]
    finished = [e for e in seen if isinstance(e, events.ToolFinished)]
    assert sorted((e.tool, e.ok) for e in finished) == [("explode", False), ("word_count", True)]
    assert result.usage.total.calls == 2


def test_import_crew_loads_no_heavy_library_and_litellm_stays_offline(tmp_path, server):
    """In a fresh interpreter: `import crew` imports neither litellm nor networkx nor pydantic, and
    a full run through litellm opens no connection and resolves no name but loopback."""
    script = textwrap.dedent(f"""
        import socket, sys
        attempts = []
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
        def connect(sock, address):
            attempts.append(("connect", address))
            return real_connect(sock, address)
        def getaddrinfo(host, *args, **kwargs):
            attempts.append(("resolve", host))
            return real_getaddrinfo(host, *args, **kwargs)
        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

        import crew
        heavy = [m for m in ("litellm", "networkx", "pydantic", "rich", "tenacity")
                 if m in sys.modules]
        assert heavy == [], heavy
        from crew import Agent, Crew, LLM, Task
        llm = LLM("openai/gpt-4o-mini", api_base="{server.url}", api_key="sk-test",
                  client="litellm")
        crew = Crew([Task(id="t", description="d", agent=Agent(role="A", llm=llm))])
        for _ in range(2):  # a second run starts a second event loop: litellm must stay quiet
            result = crew.run()
            assert result.status == "succeeded", result.tasks
        import os
        assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
        outside = [a for a in attempts if str(a[1][0] if isinstance(a[1], tuple) else a[1])
                   not in ("127.0.0.1", "localhost", "::1")]
        assert outside == [], outside
        print("OK", len(attempts))
    """)
    root = Path(__file__).resolve().parent.parent  # this checkout's crew, not an installed one
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK")
    assert done.stderr == ""  # the core never prints, and litellm's own warnings stay off


def test_litellm_imported_by_the_user_after_crew_stays_offline(tmp_path):
    """A script that imports litellm itself after `import crew` (for a tool of its own, say)
    gets litellm's bundled price map: its import resolves no name and opens no connection."""
    script = textwrap.dedent("""
        import socket
        attempts = []
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
        socket.socket.connect = lambda s, a: attempts.append(a) or real_connect(s, a)
        socket.getaddrinfo = lambda h, *a, **k: attempts.append(h) or real_getaddrinfo(h, *a, **k)
        import crew
        import litellm
        assert litellm.model_cost["gpt-4o-mini"]["input_cost_per_token"] > 0
        assert attempts == [], attempts
        print("OK")
    """)
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "OK\n"


def test_streaming_emits_token_deltas_and_returns_the_whole_answer(server, fake_llm):
    server.script("story", ServerReply(text="Once upon a time in Lisbon, a tram climbed a hill."))
    agent = Agent(role="Teller", llm=fake_llm, board_tools=False)
    seen: list[events.Event] = []
    crew = Crew([Task(id="story", description="Tell it", agent=agent)], stream=True)
    result = asyncio.run(crew.arun(on_event=seen.append))

    deltas = [e.text for e in seen if isinstance(e, events.TokenDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == result.outputs["story"].text
    assert result.outputs["story"].text == "Once upon a time in Lisbon, a tram climbed a hill."
    assert server.calls[0].body["stream"] is True
    assert result.usage.total.calls == 1 and result.usage.total.completion_tokens > 0


def test_streaming_keeps_tool_calls_working(server, fake_llm):
    @tool
    def shout(text: str) -> str:
        """Shout a text."""
        return text.upper()

    server.script(
        "loud", ServerReply(tool_calls=[("shout", {"text": "hi"})]), ServerReply(text="HI done")
    )
    agent = Agent(role="Shouter", llm=fake_llm, tools=[shout], board_tools=False)
    result = Crew([Task(id="loud", description="Shout", agent=agent)], stream=True).run()
    assert result.outputs["loud"].text == "HI done"
    assert [m["content"] for m in server.calls[1].body["messages"] if m["role"] == "tool"] == ["HI"]


def test_a_run_loads_the_clients_on_a_thread_only_while_something_is_left_to_load(
    server, monkeypatch
):
    from crew import crew as crew_module
    from crew import llm as crew_llm

    direct = LLM("openai/fake", api_base=server.url, api_key="sk-test")
    through_litellm = LLM("openai/fake", api_base=server.url, api_key="sk-test", client="litellm")
    crew_llm.prepare([direct])
    assert crew_llm.prepared([direct])  # aiohttp is loaded: nothing left
    assert crew_llm.prepared([through_litellm]) == bool(crew_llm._litellm.cache_info().currsize)
    hops = []
    real = crew_module.asyncio.to_thread

    async def counted(fn, *args):
        hops.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(crew_module.asyncio, "to_thread", counted)
    from crew.store.memory import MemoryStore

    task = Task(id="t", description="d", agent=Agent(role="A", llm=direct))
    assert Crew([task], store=MemoryStore()).run().status == "succeeded"
    assert hops == []  # the second run of a process has nothing to load
    monkeypatch.setenv("CREW_LLM_CLIENT", "nonsense")
    with pytest.raises(crew_errors.ConfigError, match="CREW_LLM_CLIENT"):
        crew_llm.prepared([direct])
