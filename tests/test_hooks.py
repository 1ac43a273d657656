"""Review hooks: a webhook or a command is told when an output waits for a review; a failing
hook never fails the run."""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crew import Agent, Crew, Task, events
from crew.config import Settings
from crew.errors import HookError
from crew.hooks import ReviewNotice, describe, run_hook
from crew.store.memory import MemoryStore
from crew.testing import Reply, ScriptedLLM

WORKER = Agent(role="Writer", goal="Write")
TASKS = [
    Task(id="draft", description="Draft it", agent=WORKER, human_review=True),
    Task(id="publish", description="Publish it", agent=WORKER, depends_on=["draft"]),
]


class Webhook:
    """A local HTTP server that records each POST and answers with ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((self.path, json.loads(body)))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN-secret"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def run_waiting(review_hook: Any) -> tuple[Any, list[events.Event]]:
    seen: list[events.Event] = []
    crew = Crew(
        TASKS, llm=ScriptedLLM({"draft": "the draft"}), store=MemoryStore(), review_hook=review_hook
    )
    result = crew.run(on_event=seen.append)
    assert result.status == "waiting"  # whatever the hook did
    return result, seen


def hook_failures(seen: list[events.Event]) -> list[events.ReviewHookFailed]:
    return [e for e in seen if isinstance(e, events.ReviewHookFailed)]


def test_a_webhook_gets_the_notice_as_json(webhook: Webhook):
    result, seen = run_waiting(webhook.url)
    [(path, body)] = webhook.posts
    assert path == "/hooks/T0KEN-secret"
    assert {k: body[k] for k in ("event", "run_id", "crew", "task_id", "agent", "preview")} == {
        "event": "review_pending",
        "run_id": result.run_id,
        "crew": "crew",
        "task_id": "draft",
        "agent": "Writer",
        "preview": "the draft",
    }
    assert body["commands"]["approve"] == f"crew approve {result.run_id} draft --resume-now"
    assert body["commands"]["resume"] == f"crew resume {result.run_id}"
    assert f"crew approve {result.run_id} draft" in body["text"]
    assert hook_failures(seen) == []


def test_a_command_gets_the_notice_on_stdin_and_in_its_environment(tmp_path: Path):
    out = tmp_path / "notice.json"
    script = (
        "import json, os, sys; notice = json.load(sys.stdin); "
        f"notice['env'] = [os.environ['CREW_RUN_ID'], os.environ['CREW_TASK_ID'], "
        f"os.environ['CREW_REVIEW_PREVIEW']]; open({str(out)!r}, 'w').write(json.dumps(notice))"
    )
    result, seen = run_waiting(f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}")
    notice = json.loads(out.read_text())
    assert notice["task_id"] == "draft" and notice["preview"] == "the draft"
    assert notice["env"] == [result.run_id, "draft", "the draft"]
    assert hook_failures(seen) == []


def test_a_function_gets_the_notice():
    notices: list[ReviewNotice] = []
    result, _ = run_waiting(notices.append)
    [notice] = notices
    assert (notice.run_id, notice.task_id, notice.preview) == (result.run_id, "draft", "the draft")


def test_a_failing_webhook_does_not_fail_the_run_and_leaves_a_warning_event(webhook: Webhook):
    webhook.status = 500
    result, seen = run_waiting(webhook.url)
    [failed] = hook_failures(seen)
    assert failed.task_id == "draft"
    assert "answered HTTP 500" in failed.error and "T0KEN" not in failed.error
    assert failed.hook == f"webhook http://127.0.0.1:{webhook.server.server_address[1]}/..."
    assert result.tasks["draft"].status == "waiting"


def test_an_unreachable_webhook_a_failing_command_and_a_raising_function_are_warnings(
    tmp_path: Path,
):
    def broken(notice: ReviewNotice) -> None:
        raise RuntimeError("no chat today")

    with socket.socket() as unused:  # a port that nothing listens on
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}/hook"
    failing = f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(\"no way\")'"
    errors = []
    for hook in (closed, failing, broken):
        _, seen = run_waiting(hook)
        [failed] = hook_failures(seen)
        errors.append(failed.error)
    assert "could not be reached" in errors[0]
    assert "exited with status 1: no way" in errors[1]
    assert "raised RuntimeError('no chat today')" in errors[2]


def test_the_failure_is_kept_in_the_run_log(webhook: Webhook):
    webhook.status = 404
    store = MemoryStore()
    crew = Crew(TASKS, llm=ScriptedLLM(), store=store, review_hook=webhook.url)
    result = crew.run()
    logged = [e for e in store.events(result.run_id) if e.type == "ReviewHookFailed"]
    assert len(logged) == 1 and "HTTP 404" in logged[0].payload["error"]


def test_crew_review_hook_is_the_default_hook(webhook: Webhook, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CREW_REVIEW_HOOK", webhook.url)
    run_waiting(None)
    assert [body["task_id"] for _, body in webhook.posts] == ["draft"]


def test_no_hook_no_notice(webhook: Webhook):
    _, seen = run_waiting(None)
    assert webhook.posts == [] and hook_failures(seen) == []


def test_a_slow_command_is_stopped():
    notice = ReviewNotice(
        run_id="r", crew="c", task_id="t", agent="a", preview="p", commands={"approve": "x"}
    )
    slow = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(5)'"
    with pytest.raises(HookError, match=r"ran past 0.2 s and was stopped"):
        run_hook(slow, notice, timeout_s=0.2)


def test_hooks_are_described_without_their_secrets():
    assert describe("https://user:pw@hooks.example.com/services/T0/B0/SECRET?x=1") == (
        "webhook https://hooks.example.com/..."
    )
    assert describe("notify-send 'review me'") == "command 'notify-send'"
    assert describe(print) == "function print"


def test_the_hook_is_a_setting_from_crew_toml_or_the_environment(tmp_path: Path):
    (tmp_path / "crew.toml").write_text(
        '[run]\nreview_hook = "https://hooks.example.com/T/SECRET"\n'
    )
    settings = Settings.load(cwd=tmp_path, env={}, read_dotenv=False)
    assert settings.review_hook == "https://hooks.example.com/T/SECRET"
    shown = {key: (value, source) for key, value, source in settings.rows()}
    assert shown["run.review_hook"] == ("https://hooks.example.com/...", "./crew.toml")

    from_env = Settings.load(
        cwd=tmp_path, env={"CREW_REVIEW_HOOK": "notify-send review"}, read_dotenv=False
    )
    assert from_env.review_hook == "notify-send review"
    assert from_env.sources["run.review_hook"] == "env CREW_REVIEW_HOOK"


def test_a_slow_hook_does_not_hold_up_the_tasks_running_meanwhile(tmp_path: Path):
    done = tmp_path / "hook-done"
    script = f"import time; time.sleep(1.5); open({str(done)!r}, 'w').write(str(time.time()))"
    hook = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    tasks = [*TASKS, Task(id="other", description="Other work", agent=WORKER)]
    llm = ScriptedLLM({"draft": "the draft", "other": Reply(text="other done", delay_s=0.2)})
    seen: list[events.Event] = []
    result = Crew(tasks, llm=llm, store=MemoryStore(), review_hook=hook).run(on_event=seen.append)

    assert result.status == "waiting" and result.tasks["other"].status == "succeeded"
    assert done.exists()  # the run ended only once the notice was out
    hook_ended = float(done.read_text())
    finished = {e.task_id: e.at for e in seen if isinstance(e, events.TaskFinished)}
    assert finished["draft"] < finished["other"] < hook_ended  # other went on meanwhile
    assert hook_failures(seen) == []
