"""``crew run`` starts at once: on the direct path it imports only what its first request needs.

Each run is the real entry point (``python -m crew.cli``) in a fresh process under
``python -X importtime``, whose report on stderr names every module the process imported.
``benchmarks/bench_coldstart.py`` measures the time itself.
"""

from __future__ import annotations

import gc
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from crew.board import Board
from crew.console import render_result
from crew.results import CrewResult, TaskOutput, TaskResult
from crew.testserver import FakeOpenAIServer, ServerReply
from crew.usage import RunUsage

ROOT = Path(__file__).resolve().parent.parent
CREW_FILE = """\
name: coldstart
agents:
  worker: {role: Worker, goal: Answer}
tasks:
  hello: {description: Say hi., agent: worker}
"""
MARKDOWN = "# Greeting\n\n**Hello** from a _crew_, in a line longer than eighty columns " + (
    "so that a renderer would wrap it."
)
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)


def run_crew(
    folder: Path, server: FakeOpenAIServer, *flags: str, store: str = "memory"
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``crew run crew.yaml FLAGS`` in ``folder``; the process and the modules it imported."""
    (folder / "crew.yaml").write_text(CREW_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        "CREW_MODEL": "openai/fake",
        "CREW_API_BASE": server.url,
        "OPENAI_API_KEY": "sk-test",
        "HOME": str(folder),  # no user config file
    }
    if store != "default":
        env["CREW_STORE"] = store
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "crew.cli", "run", "crew.yaml", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done, set(_IMPORTED.findall(done.stderr))


@pytest.mark.parametrize("store", ["memory", "default"])
def test_a_run_on_the_direct_path_never_imports_litellm(tmp_path, server, store):
    _, imported = run_crew(tmp_path, server, "--quiet", store=store)
    assert len(server.calls) == 1 and server.calls[0].model == "fake"
    assert "aiohttp" in imported and "crew.openai_http" in imported  # the direct path ran
    assert "litellm" not in imported
    if store == "default":  # the SQLite store a user gets, in the folder's .crew/
        assert "sqlite3" in imported and (tmp_path / ".crew" / "crew.db").is_file()


def test_quiet_prints_the_output_as_written_without_loading_markdown(tmp_path, server):
    server.default = ServerReply(text=MARKDOWN)
    done, imported = run_crew(tmp_path, server, "--quiet")
    assert MARKDOWN in done.stdout  # the text as the model wrote it: unrendered, unwrapped
    for name in ("markdown_it", "pygments", "rich.markdown", "rich.live"):
        assert name not in imported, name


def test_json_loads_no_markdown_either(tmp_path, server):
    server.default = ServerReply(text=MARKDOWN)
    done, imported = run_crew(tmp_path, server, "--json")
    assert '"text": "# Greeting' in done.stdout
    assert "markdown_it" not in imported and "pygments" not in imported


def test_the_live_view_renders_the_output_as_markdown(tmp_path, server):
    server.default = ServerReply(text=MARKDOWN)
    done, imported = run_crew(tmp_path, server)
    assert "markdown_it" in imported and "rich.markdown" in imported
    assert "Hello" in done.stdout and "**Hello**" not in done.stdout  # rendered


def test_a_crew_file_does_not_load_crewai_nor_an_http_command_line_client(tmp_path, server):
    _, imported = run_crew(tmp_path, server, "--quiet")
    assert "crew.spec.loader" in imported
    assert "crew.crewai" not in imported
    assert "aiohttp" in imported and "click" not in imported  # no HTTP client's CLI


def test_render_result_as_written_prints_the_text_unwrapped():
    output = TaskOutput(task_id="hello", agent="Worker", text=MARKDOWN)
    result = CrewResult(
        run_id="r1", crew="coldstart", status="succeeded",
        tasks={"hello": TaskResult(task_id="hello", status="succeeded", output=output)},
        board=Board(), usage=RunUsage(), inputs={}, started_at=0.0, finished_at=1.0,
    )  # fmt: skip
    stream = io.StringIO()
    render_result(result, Console(file=stream, width=40), usage=False, as_written=True)
    assert MARKDOWN in stream.getvalue()
    rendered = io.StringIO()
    render_result(result, Console(file=rendered, width=40), usage=False)
    assert MARKDOWN not in rendered.getvalue() and "Greeting" in rendered.getvalue()


def test_crew_on_a_crew_file_is_still_refused_before_any_request(tmp_path, server):
    (tmp_path / "crew.yaml").write_text(CREW_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    env |= {"PYTHONPATH": str(ROOT), "CREW_MODEL": "openai/fake", "CREW_API_BASE": server.url}
    env["HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "crew.cli", "run", "crew.yaml", "--crew", "Research"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--crew Research: crew.yaml is not a CrewAI project; remove --crew." in done.stderr
    assert server.calls == []


def test_import_crew_loads_each_public_name_on_first_use():
    code = (
        "import sys, crew\n"
        "print(sorted(m for m in sys.modules if m.startswith(('crew', 'pydantic', 'asyncio'))))\n"
        "import crew.cli\n"
        "print('asyncio' in sys.modules, 'pydantic' in sys.modules, 'crew.crew' in sys.modules)\n"
        "from crew import Crew, tool\n"
        "print(Crew.__module__, tool.__module__, 'Crew' in dir(crew))\n"
        "print(all(getattr(crew, name) is not None for name in crew.__all__))\n"
        "try:\n    crew.Nope\nexcept AttributeError as exc:\n    print(exc)\n"
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['crew']",
        "False False False",  # the command line loads them in main(), with the collector off
        "crew.crew crew.tools True",
        "True",
        "module 'crew' has no attribute 'Nope'",
    ]


GC_CREW = """\
import gc

from crew import Agent, Crew, Task
from crew.testing import ScriptedLLM

seen = {"loading": gc.isenabled()}


def answer(call):
    seen["running"] = gc.isenabled()
    return repr(seen)


crew = Crew(
    [Task(id="hello", description="Say hi.", agent=Agent(role="Worker", goal="Answer"))],
    llm=ScriptedLLM(answer),
)
"""


def test_the_collector_is_off_while_a_crew_loads_and_on_while_it_runs(tmp_path):
    (tmp_path / "gc_crew.py").write_text(GC_CREW)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    done = subprocess.run(
        [sys.executable, "-m", "crew.cli", "run", "gc_crew.py", "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=env | {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "CREW_STORE": "memory"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "{'loading': False, 'running': True}" in done.stdout


@pytest.mark.parametrize("collecting", [True, False])
def test_the_command_line_gives_the_collector_back_as_it_found_it(tmp_path, collecting):
    from crew.cli import main

    was = gc.isenabled()
    try:
        (gc.enable if collecting else gc.disable)()
        assert main(["templates"]) == 0
        assert gc.isenabled() is collecting
    finally:
        (gc.enable if was else gc.disable)()


def test_template_and_input_validators_are_built_only_for_a_crew_file_that_uses_them(tmp_path):
    (tmp_path / "plain.yaml").write_text(CREW_FILE)
    (tmp_path / "rich.yaml").write_text(
        CREW_FILE.replace("agents:", "inputs:\n  topic: {description: The topic}\nagents:")
        .replace("{role: Worker, goal: Answer}", "{use: researcher}")
    )  # fmt: skip
    code = (
        "import sys\n"
        "from crew import spec, templates, inputs\n"
        "spec.load_crew_yaml(sys.argv[1])\n"
        "role, given = templates._RoleFile, inputs.InputModel\n"
        "print(role.__pydantic_complete__, given.__pydantic_complete__)\n"
    )
    built = []
    for name in ("plain.yaml", "rich.yaml"):
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / name)], capture_output=True, text=True,
            timeout=60, env=os.environ | {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        built.append(done.stdout.strip())
    assert built == ["False False", "True True"]


def test_a_second_command_in_the_same_process_leaves_the_collector_on(tmp_path, server):
    (tmp_path / "crew.yaml").write_text(CREW_FILE)
    code = (
        "import gc\n"
        "from crew.cli import main, running\n"
        "loading, read = [], running.read_settings\n"
        "running.read_settings = lambda args: loading.append(gc.isenabled()) or read(args)\n"
        "for _ in range(2):\n"
        "    assert main(['run', 'crew.yaml', '--quiet']) == 0\n"
        "print('collecting while loading:', loading, 'frozen:', gc.get_freeze_count() > 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    env |= {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "CREW_STORE": "memory"}
    env |= {"CREW_MODEL": "openai/fake", "CREW_API_BASE": server.url, "OPENAI_API_KEY": "sk-t"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "collecting while loading: [False, True] frozen: True" in done.stdout
