"""The board: versioned posts that never overwrite, snapshots, thread and task safety, the board
tools agents get, and the board of a real run."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from crew import Agent, Board, BoardEntry, Crew, Task
from crew.testing import Reply, ScriptedLLM
from crew.tools import board_tools


class Article(BaseModel):
    title: str
    published: dt.date
    tags: list[str]


def ticking_clock(start: float = 100.0, step: float = 1.0):
    """A clock that advances ``step`` seconds on every call."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


# --- posting and reading -------------------------------------------------------------------------


def test_post_returns_the_entry_and_get_returns_the_latest():
    board = Board(clock=ticking_clock())

    first = board.post("facts", "v1 text", author="Researcher")
    second = board.post("facts", "v2 text", author="Editor", kind="note")

    assert first == BoardEntry("facts", "v1 text", None, "Researcher", "output", 1, 100.0, 100.0)
    assert second.version == 2
    assert second.kind == "note"
    assert second.author == "Editor"
    assert board.get("facts") == second
    assert board["facts"] == second
    assert board.get("nothing") is None


def test_getitem_of_a_missing_key_raises_key_error():
    board = Board()

    with pytest.raises(KeyError, match="nothing"):
        board["nothing"]


def test_history_keeps_every_version_oldest_first():
    board = Board(clock=ticking_clock())
    for text in ("one", "two", "three"):
        board.post("k", text, author="A")

    history = board.history("k")

    assert [e.text for e in history] == ["one", "two", "three"]
    assert [e.version for e in history] == [1, 2, 3]
    assert board.history("missing") == []


def test_history_is_a_copy():
    board = Board()
    board.post("k", "one", author="A")

    board.history("k").clear()

    assert len(board.history("k")) == 1


def test_created_at_is_the_first_version_time_and_updated_at_each_version_time():
    now = [10.0]
    board = Board(clock=lambda: now[0])

    board.post("k", "one", author="A")
    now[0] = 25.0
    board.post("k", "two", author="A")
    now[0] = 40.0
    latest = board.post("k", "three", author="A")

    assert [(e.created_at, e.updated_at) for e in board.history("k")] == [
        (10.0, 10.0),
        (10.0, 25.0),
        (10.0, 40.0),
    ]
    assert latest.created_at == 10.0
    assert latest.updated_at == 40.0


def test_keys_len_contains_and_iteration_follow_first_post_order():
    board = Board()
    for key in ("b", "a", "b", "c"):
        board.post(key, key, author="A")

    assert board.keys() == ["b", "a", "c"]
    assert list(board) == ["b", "a", "c"]
    assert len(board) == 3
    assert "a" in board
    assert "z" not in board


def test_on_post_sees_each_entry_after_it_is_visible():
    seen: list[tuple[int, int | None]] = []
    board: Board

    def on_post(entry: BoardEntry) -> None:
        visible = board.get(entry.key)
        seen.append((entry.version, visible.version if visible else None))

    board = Board(on_post=on_post)
    board.post("k", "one", author="A")
    board.post("k", "two", author="A")

    assert seen == [(1, 1), (2, 2)]


def test_render_is_the_text_or_the_data_as_json():
    board = Board()
    plain = board.post("plain", "just text", author="A")
    article = Article(title="Lisbon", published=dt.date(2024, 5, 1), tags=["city"])
    structured = board.post("article", "raw model text", author="A", data=article)

    assert plain.render() == "just text"
    assert json.loads(structured.render()) == {
        "title": "Lisbon",
        "published": "2024-05-01",
        "tags": ["city"],
    }


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshot_is_json_serialisable_with_pydantic_data_dumped_as_a_dict():
    board = Board(clock=ticking_clock())
    article = Article(title="Lisbon", published=dt.date(2024, 5, 1), tags=["city", "port"])
    board.post("article", '{"title": "Lisbon"}', author="Writer", data=article)
    board.post("n", "a note", author="Editor", kind="note")
    board.post("n", "a second note", author="Editor", kind="note")

    snapshot = board.snapshot()
    decoded = json.loads(json.dumps(snapshot))

    assert decoded == snapshot
    assert snapshot["article"] == [
        {
            "key": "article",
            "text": '{"title": "Lisbon"}',
            "data": {"title": "Lisbon", "published": "2024-05-01", "tags": ["city", "port"]},
            "author": "Writer",
            "kind": "output",
            "version": 1,
            "created_at": 100.0,
            "updated_at": 100.0,
        }
    ]
    assert [e["version"] for e in snapshot["n"]] == [1, 2]
    assert [e["created_at"] for e in snapshot["n"]] == [101.0, 101.0]
    assert [e["updated_at"] for e in snapshot["n"]] == [101.0, 102.0]


def test_from_snapshot_round_trips():
    board = Board(clock=ticking_clock())
    board.post("a", "first", author="X")
    board.post("a", "second", author="Y", kind="note")
    board.post(
        "b", "text", author="X", data=Article(title="t", published=dt.date(2024, 1, 2), tags=[])
    )

    copy = Board.from_snapshot(json.loads(json.dumps(board.snapshot())))

    assert copy.snapshot() == board.snapshot()
    assert copy.keys() == ["a", "b"]
    assert copy.history("a") == board.history("a")
    # Structured data comes back as plain JSON values.
    assert copy["b"].data == {"title": "t", "published": "2024-01-02", "tags": []}


def test_a_restored_board_continues_the_version_numbers():
    board = Board(clock=ticking_clock())
    board.post("a", "first", author="X")
    board.post("a", "second", author="X")

    copy = Board.from_snapshot(board.snapshot(), clock=lambda: 500.0)
    third = copy.post("a", "third", author="X")

    assert third.version == 3
    assert third.created_at == 100.0
    assert third.updated_at == 500.0


# --- concurrency ---------------------------------------------------------------------------------

THREADS = 16
POSTS = 200


def _post_from_threads(board: Board, key_of: Callable[[int], str]) -> None:
    start = threading.Barrier(THREADS, timeout=10)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(POSTS):
                board.post(key_of(worker), f"{worker}:{i}", author=f"w{worker}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_concurrent_posts_on_one_key_lose_no_update():
    board = Board()

    _post_from_threads(board, lambda worker: "shared")

    history = board.history("shared")
    assert [e.version for e in history] == list(range(1, THREADS * POSTS + 1))
    assert {e.text for e in history} == {f"{w}:{i}" for w in range(THREADS) for i in range(POSTS)}
    assert board["shared"].version == THREADS * POSTS
    # Each writer's own posts appear in the order it made them.
    for worker in range(THREADS):
        mine = [int(e.text.split(":")[1]) for e in history if e.author == f"w{worker}"]
        assert mine == list(range(POSTS))


def test_concurrent_posts_on_different_keys_lose_no_update():
    board = Board()

    _post_from_threads(board, lambda worker: f"key{worker}")

    assert sorted(board.keys()) == sorted(f"key{w}" for w in range(THREADS))
    for worker in range(THREADS):
        history = board.history(f"key{worker}")
        assert [e.version for e in history] == list(range(1, POSTS + 1))
        assert [e.text for e in history] == [f"{worker}:{i}" for i in range(POSTS)]


def test_concurrent_posts_from_asyncio_tasks_lose_no_update():
    board = Board()
    writers, posts = 50, 40

    async def writer(number: int) -> None:
        for i in range(posts):
            board.post("shared", f"{number}:{i}", author=f"w{number}")
            board.post(f"own{number}", str(i), author=f"w{number}")
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(writer(n) for n in range(writers)))

    asyncio.run(main())

    assert [e.version for e in board.history("shared")] == list(range(1, writers * posts + 1))
    assert len({e.text for e in board.history("shared")}) == writers * posts
    for number in range(writers):
        assert [e.version for e in board.history(f"own{number}")] == list(range(1, posts + 1))


def test_versions_are_never_timestamped_before_earlier_versions():
    first_reader_waiting = threading.Event()
    release = threading.Event()

    def clock() -> float:
        if threading.current_thread().name == "slow":
            # Read the time, then be preempted before the post takes the lock.
            first_reader_waiting.set()
            release.wait(timeout=5)
            return 1.0
        return 2.0

    board = Board(clock=clock)
    slow = threading.Thread(
        target=lambda: board.post("k", "slow", author="A"), name="slow", daemon=True
    )
    slow.start()
    assert first_reader_waiting.wait(timeout=5)
    board.post("k", "fast", author="B")
    release.set()
    slow.join(timeout=5)

    history = board.history("k")
    assert len(history) == 2
    for entry in history:
        assert entry.updated_at >= entry.created_at
    assert history[0].updated_at <= history[1].updated_at


# --- board tools ---------------------------------------------------------------------------------


def tools_of(board: Board, *, author: str = "Writer", reserved: frozenset[str] = frozenset()):
    read_board, post_note = board_tools(board, author=author, reserved=reserved)
    return read_board, post_note


def test_board_tools_are_named_and_have_schemas():
    read_board, post_note = tools_of(Board())

    assert read_board.name == "read_board"
    assert post_note.name == "post_note"
    assert read_board.schema()["function"]["parameters"]["required"] == ["key"]
    assert post_note.schema()["function"]["parameters"]["required"] == ["key", "text"]


def test_read_board_of_a_missing_key_lists_the_keys():
    board = Board()
    read_board, _ = tools_of(board)

    empty = asyncio.run(read_board.invoke({"key": "facts"}))
    board.post("research", "r", author="A")
    board.post("notes", "n", author="A", kind="note")
    listed = asyncio.run(read_board.invoke({"key": "facts"}))

    assert empty == "No board entry 'facts'. Keys on the board: none yet."
    assert listed == "No board entry 'facts'. Keys on the board: research, notes."


def test_read_board_shows_the_latest_version_and_its_author():
    board = Board()
    board.post("facts", "old", author="Researcher")
    board.post("facts", "new", author="Checker")
    read_board, _ = tools_of(board)

    text = asyncio.run(read_board.invoke({"key": "facts"}))

    assert text == "[facts v2 by Checker]\nnew"


def test_post_note_refuses_reserved_keys():
    board = Board()
    _, post_note = tools_of(board, reserved=frozenset({"research", "draft"}))

    answer = asyncio.run(post_note.invoke({"key": "draft", "text": "overwrite!"}))

    assert "'draft' is a task's output and cannot be written by a note" in answer
    assert "draft" not in board


def test_post_note_creates_versions_authored_by_the_agent():
    board = Board()
    _, post_note = tools_of(board, author="Editor", reserved=frozenset({"draft"}))

    answers = [
        asyncio.run(post_note.invoke({"key": "style", "text": text})) for text in ("terse", "warm")
    ]

    assert answers == ["Posted 'style' version 1.", "Posted 'style' version 2."]
    assert [(e.text, e.kind, e.author) for e in board.history("style")] == [
        ("terse", "note", "Editor"),
        ("warm", "note", "Editor"),
    ]


# --- the board of a run --------------------------------------------------------------------------


def test_a_note_posted_in_a_run_lands_on_the_result_board():
    llm = ScriptedLLM(
        {
            "a": [Reply(tool_calls=[("post_note", {"key": "n", "text": "x"})]), "a's findings"],
            "b": "the article",
        }
    )
    researcher = Agent(role="Researcher", llm=llm)
    writer = Agent(role="Writer", llm=llm)
    tasks = [
        Task(id="a", description="Research", agent=researcher),
        Task(id="b", description="Write", agent=writer, depends_on=["a"]),
    ]

    result = Crew(tasks).run()

    assert result.status == "succeeded"
    note = result.board["n"]
    assert (note.text, note.kind, note.author, note.version) == ("x", "note", "Researcher", 1)
    assert llm.calls_for("a")[1].tool_results == ["Posted 'n' version 1."]
    output = result.board["a"]
    assert (output.text, output.kind, output.author) == ("a's findings", "output", "Researcher")
    assert result.board["b"].text == "the article"


def test_a_dependant_task_prompt_holds_its_dependency_output():
    llm = ScriptedLLM({"a": "Lisbon lies on the Tagus.", "b": "the article"})
    researcher = Agent(role="Researcher", llm=llm)
    writer = Agent(role="Writer", llm=llm)
    tasks = [
        Task(id="a", description="Research", agent=researcher),
        Task(id="b", description="Write", agent=writer, depends_on=["a"]),
    ]

    Crew(tasks).run()

    prompt = llm.calls_for("b")[0].prompt
    assert "## Context from earlier tasks" in prompt
    context = prompt.split("## Context from earlier tasks", 1)[1]
    assert "### a (by Researcher)\nLisbon lies on the Tagus." in context
    assert "## Context from earlier tasks" not in llm.calls_for("a")[0].prompt


def test_a_note_cannot_overwrite_a_task_output_in_a_run():
    llm = ScriptedLLM(
        {
            "a": [Reply(tool_calls=[("post_note", {"key": "b", "text": "forged"})]), "done"],
            "b": "real b",
        }
    )
    agent = Agent(role="Worker", llm=llm)
    tasks = [
        Task(id="a", description="A", agent=agent),
        Task(id="b", description="B", agent=agent, depends_on=["a"]),
    ]

    result = Crew(tasks).run()

    assert "cannot be written by a note" in llm.calls_for("a")[1].tool_results[0]
    assert [(e.text, e.kind) for e in result.board.history("b")] == [("real b", "output")]


def test_an_agent_reads_a_note_posted_by_an_earlier_task():
    llm = ScriptedLLM(
        {
            "a": [Reply(tool_calls=[("post_note", {"key": "style", "text": "be brief"})]), "ok"],
            "b": [Reply(tool_calls=[("read_board", {"key": "style"})]), "done"],
        }
    )
    tasks = [
        Task(id="a", description="A", agent=Agent(role="Editor", llm=llm)),
        Task(id="b", description="B", agent=Agent(role="Writer", llm=llm), depends_on=["a"]),
    ]

    Crew(tasks).run().raise_for_status()

    assert llm.calls_for("b")[1].tool_results == ["[style v1 by Editor]\nbe brief"]
