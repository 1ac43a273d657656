"""Tests for the fake OpenAI-compatible server, through httpx and through litellm."""

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from crew.testserver import Call, FakeOpenAIServer, Faults, ServerReply

# litellm's own types trip this pydantic warning on first use; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is using the `ReadOnly` qualifier:UserWarning")


def _litellm() -> ModuleType:
    """litellm, imported inside a test: imported at collection time, outside pytest's warning
    filters, it fails every later call in other modules under ``filterwarnings = error``."""
    import litellm

    return litellm


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _post(server: FakeOpenAIServer, text: str, model: str = "fake", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": _user(text), **extra}
    return httpx.post(f"{server.url}/chat/completions", json=body)


def _complete(server: FakeOpenAIServer, text: str, **kwargs: Any) -> Any:
    kwargs = {"model": "openai/fake", "api_key": "sk-test", "num_retries": 0, **kwargs}
    return _litellm().completion(api_base=server.url, messages=_user(text), **kwargs)


def _route_noting(arrived: threading.Event, key: str) -> Callable[[dict[str, Any]], str]:
    """A route by the first message's task line that sets ``arrived`` when ``key`` comes in."""

    def route(body: dict[str, Any]) -> str:
        routed = body["messages"][0]["content"].removeprefix("# Task: ")
        if routed == key:
            arrived.set()
        return routed

    return route


def _max_overlap(calls: list[Call]) -> int:
    return max(sum(c.started <= x.started < c.finished for c in calls) for x in calls)


def test_plain_call_returns_an_openai_completion(server: FakeOpenAIServer) -> None:
    server.script("facts", ServerReply(text="- a\n- b"))
    response = _post(server, "# Task: facts\nlist them", model="gpt-x")
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-x"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "- a\n- b"},
            "finish_reason": "stop",
        }
    ]
    prompt = len("# Task: facts\nlist them") // 4 + 1
    assert data["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 2,
        "total_tokens": prompt + 2,
    }
    [call] = server.calls
    assert (call.key, call.model, call.status, call.tool_results) == ("facts", "gpt-x", 200, 0)
    assert call.body["messages"] == _user("# Task: facts\nlist them")
    assert call.started <= call.finished <= time.perf_counter()


def test_json_content_and_scripted_usage(server: FakeOpenAIServer) -> None:
    server.script("*", ServerReply(json={"a": [1]}, prompt_tokens=7, completion_tokens=3))
    data = _post(server, "no task line").json()
    assert data["choices"][0]["message"]["content"] == '{"a": [1]}'
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_call_through_litellm_returns_the_scripted_text(server: FakeOpenAIServer) -> None:
    server.script("facts", ServerReply(text="- a\n- b"))
    response = _complete(server, "# Task: facts\nhi")
    assert response.choices[0].message.content == "- a\n- b"
    assert response.usage.completion_tokens == 2
    assert [c.key for c in server.calls] == ["facts"]


def test_routing_by_task_key_and_content_parts(server: FakeOpenAIServer) -> None:
    server.script("a", ServerReply(text="A"))
    server.script("b", ServerReply(text="B"))
    parts = [{"type": "text", "text": "intro"}, {"type": "text", "text": "# Task: b\nmore"}]
    body = {"model": "fake", "messages": [{"role": "system", "content": "# Task: a"}]}
    body["messages"] += [
        {"role": "user", "content": parts},
        {"role": "user", "content": "# Task: a"},
    ]
    response = httpx.post(f"{server.url}/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == "B"
    assert _post(server, "# Task: a").json()["choices"][0]["message"]["content"] == "A"
    assert _post(server, "# Task: zzz").json()["choices"][0]["message"]["content"] == "ok"
    assert [c.key for c in server.calls] == ["b", "a", "zzz"]


def test_routing_by_model_falls_back_in_order(server: FakeOpenAIServer) -> None:
    server.script("facts", ServerReply(text="facts, any model"))
    server.script("facts", ServerReply(text="facts, backup"), model="openai/backup")
    server.script("*", ServerReply(text="any task, backup"), model="openai/backup")
    server.default = lambda body: ServerReply(text=f"default for {body['model']}")

    def answer(text: str, model: str) -> str:
        return _complete(server, text, model=model).choices[0].message.content

    assert answer("# Task: facts", "openai/backup") == "facts, backup"
    assert answer("# Task: facts", "openai/main") == "facts, any model"
    assert answer("# Task: other", "openai/backup") == "any task, backup"
    assert answer("# Task: other", "openai/main") == "default for main"
    assert [c.model for c in server.calls] == ["backup", "main", "backup", "main"]


def test_custom_route() -> None:
    with FakeOpenAIServer(route=lambda body: body["model"]) as server:
        server.script("m1", ServerReply(text="one"))
        response = _post(server, "# Task: ignored", model="m1")
        assert response.json()["choices"][0]["message"]["content"] == "one"
        assert server.calls[0].key == "m1"


def test_sequence_is_consumed_and_the_last_reply_repeats(server: FakeOpenAIServer) -> None:
    server.script("seq", ServerReply(text="1"), ServerReply(text="2"), ServerReply(text="3"))
    texts = [_complete(server, "# Task: seq").choices[0].message.content for _ in range(5)]
    assert texts == ["1", "2", "3", "3", "3"]
    server.script("seq", ServerReply(text="new"))
    assert _post(server, "# Task: seq").json()["choices"][0]["message"]["content"] == "new"
    server.reset()
    assert server.calls == []
    assert _post(server, "# Task: seq").json()["choices"][0]["message"]["content"] == "ok"


def test_tool_calls_come_back_through_litellm(server: FakeOpenAIServer) -> None:
    litellm = _litellm()
    server.script(
        "tooly", ServerReply(tool_calls=[("word_count", {"text": "a b"})]), ServerReply(text="done")
    )
    first = _complete(server, "# Task: tooly")
    [tool_call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert tool_call.function.name == "word_count"
    assert json.loads(tool_call.function.arguments) == {"text": "a b"}
    messages = [
        *_user("# Task: tooly"),
        first.choices[0].message.model_dump(),
        {"role": "tool", "tool_call_id": tool_call.id, "content": "2"},
    ]
    second = litellm.completion(
        model="openai/fake",
        api_base=server.url,
        api_key="sk-test",
        messages=messages,
        num_retries=0,
    )
    assert second.choices[0].message.content == "done"
    assert [c.tool_results for c in server.calls] == [0, 1]


def test_errors_carry_status_body_and_retry_after(server: FakeOpenAIServer) -> None:
    litellm = _litellm()
    server.script(
        "flaky",
        ServerReply(status=429, retry_after_s=0.05),
        ServerReply(status=500),
        ServerReply(text="ok!"),
    )
    limited = _post(server, "# Task: flaky")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "0.05"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    failed = _post(server, "# Task: flaky")
    assert failed.status_code == 500
    assert failed.json()["error"]["message"] == "Internal Server Error"
    assert "retry-after" not in failed.headers
    assert _post(server, "# Task: flaky").json()["choices"][0]["message"]["content"] == "ok!"
    assert [c.status for c in server.calls] == [429, 500, 200]
    with pytest.raises(litellm.RateLimitError):
        server.script("limited", ServerReply(status=429, error="slow down"))
        _complete(server, "# Task: limited")


def test_other_endpoints(server: FakeOpenAIServer) -> None:
    models = httpx.get(f"{server.url}/models").json()
    assert [m["id"] for m in models["data"]] == ["fake"]
    missing = httpx.get(f"{server.url}/nothing")
    assert missing.status_code == 404
    assert "error" in missing.json()
    for bad in (b"{not json", b"[1, 2]"):
        response = httpx.post(f"{server.url}/chat/completions", content=bad)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert server.calls == []


def test_hang_times_out_without_blocking_other_calls() -> None:
    litellm = _litellm()
    arrived = threading.Event()
    errors: list[Exception] = []

    def hang() -> None:
        try:
            _complete(server, "# Task: stuck", timeout=0.3)
        except Exception as exc:
            errors.append(exc)

    with FakeOpenAIServer(route=_route_noting(arrived, "stuck")) as server:
        server.script("stuck", ServerReply(hang=True))
        hanging = threading.Thread(target=hang)
        hanging.start()
        assert arrived.wait(5)
        assert _complete(server, "# Task: fine").choices[0].message.content == "ok"
        assert hanging.is_alive()  # the other call finished while the hang was still open
        hanging.join(5)
        deadline = time.perf_counter() + 2
        while len(server.calls) < 2 and time.perf_counter() < deadline:
            time.sleep(0.01)  # the hang gives up once the client disconnects
        calls = server.calls
    assert [type(e) for e in errors] == [litellm.Timeout]
    assert [(c.key, c.status) for c in calls] == [("fine", 200), ("stuck", 0)]
    assert calls[0].finished < calls[1].finished


def test_concurrent_calls_overlap() -> None:
    litellm = _litellm()

    async def four_calls(url: str) -> list[Any]:
        return await asyncio.gather(
            *(
                litellm.acompletion(
                    model="openai/fake",
                    api_base=url,
                    api_key="sk-test",
                    messages=_user(f"# Task: t{i}"),
                    num_retries=0,
                )
                for i in range(4)
            )
        )

    with FakeOpenAIServer(latency_ms=200) as server:
        started = time.perf_counter()
        responses = asyncio.run(four_calls(server.url))
        elapsed = time.perf_counter() - started
        calls = server.calls
    assert [r.choices[0].message.content for r in responses] == ["ok"] * 4
    assert elapsed < 0.6
    assert all(c.finished - c.started >= 0.2 for c in calls)
    assert _max_overlap(calls) == 4


def test_streaming_through_litellm(server: FakeOpenAIServer) -> None:
    server.script("facts", ServerReply(text="alpha beta gamma delta", completion_tokens=4))
    stream = _complete(server, "# Task: facts", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma delta"
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) == 3
    assert chunks[-1].usage.completion_tokens == 4


def test_streaming_tool_calls_through_httpx(server: FakeOpenAIServer) -> None:
    server.script("tooly", ServerReply(tool_calls=[("search", {"q": "x"})]))
    response = _post(server, "# Task: tooly", stream=True)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "search"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stop_is_idempotent_frees_the_port_and_ends_hanging_calls() -> None:
    arrived = threading.Event()
    server = FakeOpenAIServer(route=_route_noting(arrived, "stuck"))
    server.stop()
    server.start()
    server.script("stuck", ServerReply(hang=True))
    client = httpx.Client(timeout=5)  # holds a keep-alive connection open across stop()
    assert client.get(f"{server.url}/models").status_code == 200
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            _post(server, "# Task: stuck")
        except httpx.TransportError as exc:
            errors.append(exc)

    hanging = threading.Thread(target=hang)
    hanging.start()
    assert arrived.wait(5)
    started = time.perf_counter()
    server.stop()
    server.stop()
    assert time.perf_counter() - started < 1
    hanging.join(2)
    assert not hanging.is_alive()
    assert len(errors) == 1  # the server closed the connection instead of answering
    assert [(c.key, c.status) for c in server.calls] == [("stuck", 0)]
    with pytest.raises(httpx.TransportError):
        client.get(f"{server.url}/models")
    client.close()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))


def test_a_held_hang_drops_the_connection_unanswered(server: FakeOpenAIServer) -> None:
    server.script("held", ServerReply(hang=True, hang_s=0.1))
    with pytest.raises(httpx.RemoteProtocolError):
        _post(server, "# Task: held")
    assert [(c.key, c.status) for c in server.calls] == [("held", 0)]
    assert server.calls[0].finished - server.calls[0].started >= 0.1


def test_a_raw_body_is_sent_as_the_whole_answer(server: FakeOpenAIServer) -> None:
    server.script("empty", ServerReply(body={"choices": []}))
    response = _post(server, "# Task: empty")
    assert (response.status_code, response.json()) == (200, {"choices": []})


def test_faults_take_the_place_of_a_share_of_the_answers() -> None:
    faults = Faults(rate_limited=0.2, server_error=0.2, hang=0.1, hang_s=0.01, seed=5)
    with FakeOpenAIServer(faults=faults) as server:
        server.script("x", ServerReply(status=404))  # scripted errors are left as they are
        statuses = []
        for _ in range(60):
            try:
                statuses.append(_post(server, "# Task: ok").status_code)
            except httpx.RemoteProtocolError:
                statuses.append(0)
        assert _post(server, "# Task: x").status_code == 404
    assert statuses.count(429) == faults.injected["429"] > 0
    assert statuses.count(500) == faults.injected["500"] > 0
    assert statuses.count(0) == faults.injected["hang"] > 0
    assert statuses.count(200) == 60 - sum(faults.injected.values()) > 0


def test_a_call_in_flight_at_a_reset_is_not_recorded(server):
    server.default = ServerReply(text="late", latency_ms=400)
    late = threading.Thread(target=_post, args=(server, "from the test before"))
    late.start()
    time.sleep(0.15)  # the request is being answered
    server.reset()
    server.default = ServerReply(text="now")
    assert _post(server, "this test's").json()["choices"][0]["message"]["content"] == "now"
    late.join()
    assert [c.body["messages"][0]["content"] for c in server.calls] == ["this test's"]
