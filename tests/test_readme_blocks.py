"""Every code block of README.md is a test.

Each fenced block follows an HTML comment that says how it is checked, ``<!-- test: KIND -->``:

- ``python``: run as written. The README's Python blocks run in order in one session (one
  namespace, one working directory), as a reader would type them; later blocks use earlier names.
- ``python scripted``: the same, with every model answered in-process by a ``ScriptedLLM``
  standing in for all of them (``everywhere()``): JSON that fits the call's schema, else text.
- ``crew file``: written to a folder as ``crew.yaml``; ``crew plan`` on it must succeed.
- ``crew file tasks``: a part of a crew file; each of its tasks must be a valid task entry.
- ``crew.toml``: written to ``crew.toml``; ``crew config`` must read it and show its model.
- ``shell``: each line is run in a temporary folder that has a copy of ``examples/`` (``cd``
  moves within it), models answered by the fake server on 127.0.0.1; each must exit 0.
  ``; NAME=VALUE`` fills an upper-case placeholder (``RUN_ID`` is the newest run in the store
  of the folder the commands are in), ``; file NAME=TEXT`` writes a file first.
- ``error of `COMMAND` with "OLD" changed to "NEW" in FILE``: the block is what the command
  prints (on stderr) after that edit of a copy of the repository's file.
- ``tree``: the first word of each line is a file or folder of the repository.
- ``skip REASON``: not run here, for the reason given.

A block without a comment fails the test, so no block goes unchecked.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from crew.results import CrewResult
from crew.spec.models import TaskModel
from crew.testing import Call, ScriptedLLM
from crew.testserver import FakeOpenAIServer
from tests.test_examples import answer, instance

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CREW = Path(sys.executable).with_name("crew")
_BLOCK = re.compile(
    r"(?:^<!--\s*test:\s*(?P<how>[^\n]*?)\s*-->\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    how: str
    code: str

    @property
    def kind(self) -> str:
        return self.how.split(";")[0].strip()

    def options(self) -> list[str]:
        return [part.strip() for part in self.how.split(";")[1:]]

    def __str__(self) -> str:
        return f"README.md:{self.line} {self.lang or 'text'}"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["how"] or "", m["code"])
        for m in _BLOCK.finditer(text)
    ]


BLOCKS = readme_blocks()


def blocks_of(kind: str) -> list[Any]:
    """The blocks whose comment starts with ``kind``, as test parameters named by their line."""
    return [pytest.param(b, id=f"line{b.line}") for b in BLOCKS if b.kind.split(" ")[0] == kind]


def test_every_block_says_how_it_is_tested_and_few_are_skipped():
    unmarked = [str(b) for b in BLOCKS if not b.how]
    assert not unmarked, f"blocks without a <!-- test: ... --> comment: {unmarked}"
    skipped = [b for b in BLOCKS if b.kind.startswith("skip")]
    assert all(len(b.kind.split()) > 2 for b in skipped), "a skip must give its reason"
    assert len(skipped) <= 2
    known = ("python", "crew", "shell", "error", "tree", "skip")
    assert all(b.kind.startswith(known) for b in BLOCKS), [b.kind for b in BLOCKS]


# Python: one session, in order.


@dataclass
class Session:
    folder: Path
    namespace: dict[str, Any]
    done: int = 0
    """Python blocks run so far."""
    broken: str = ""


_SESSION: list[Session] = []


def _schema_answer(call: Call) -> Any:
    if call.output_schema is not None:
        return instance(call.output_schema)
    return "- a finding\n- another finding"


def _run_python(block: Block, session: Session) -> None:
    code = compile(block.code, str(block), "exec")
    session.namespace.pop("result", None)
    with contextlib.chdir(session.folder):
        if block.kind == "python scripted":
            with ScriptedLLM(_schema_answer, strict=False).everywhere():
                exec(code, session.namespace)
        else:
            exec(code, session.namespace)
    result = session.namespace.get("result")
    if isinstance(result, CrewResult):  # a run that failed would not raise: look
        assert result.status == "succeeded", result.tasks


PYTHON = [b for b in BLOCKS if b.kind.startswith("python")]


@pytest.mark.parametrize("block", [pytest.param(b, id=f"line{b.line}") for b in PYTHON])
def test_python_block(block, tmp_path_factory, monkeypatch):
    monkeypatch.delenv("CREW_STORE", raising=False)  # runs go where the README says: ./.crew
    if not _SESSION:
        _SESSION.append(Session(tmp_path_factory.mktemp("readme"), {"__name__": "readme"}))
    session = _SESSION[0]
    for earlier in PYTHON[session.done : PYTHON.index(block)]:
        assert not session.broken, f"an earlier block failed: {session.broken}"
        _run_python(earlier, session)
        session.done += 1
    if PYTHON.index(block) < session.done:
        return  # already run for a later block selected alone
    try:
        _run_python(block, session)
    except BaseException:
        session.broken = str(block)
        raise
    finally:
        session.done += 1


# Crew files and settings.


def crew_command(*args: str, cwd: Path, server: FakeOpenAIServer | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    if server is not None:
        env |= {"CREW_MODEL": "openai/fake", "CREW_API_BASE": server.url, "OPENAI_API_KEY": "sk-x"}
    return subprocess.run(
        [str(CREW), *args], capture_output=True, text=True, timeout=180, cwd=cwd, env=env
    )


@pytest.mark.parametrize("block", blocks_of("crew"))
def test_crew_file_block(block, tmp_path, server):
    if block.kind == "crew file":
        (tmp_path / "crew.yaml").write_text(block.code, encoding="utf-8")
        done = crew_command("plan", ".", cwd=tmp_path, server=server)  # a model, not called
        assert done.returncode == 0, done.stderr
        names = yaml.safe_load(block.code)["tasks"]
        assert all(name in done.stdout for name in names)
    elif block.kind == "crew file tasks":
        tasks = yaml.safe_load(block.code)["tasks"]
        for fields in tasks.values():
            TaskModel.model_validate(fields)  # a misspelt field is refused (extra="forbid")
        assert tasks
    else:
        assert block.kind == "crew.toml", block.kind
        (tmp_path / "crew.toml").write_text(block.code, encoding="utf-8")
        done = crew_command("config", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        model = re.search(r'^model = "(.+?)"', block.code, re.M)
        assert model is not None and model[1] in done.stdout
        assert "crew.toml" in done.stdout  # where the setting came from
    assert not server.calls


# Shell commands, against the fake server.


def _workspace(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # runs may be kept beside a crew
    return tmp_path


def _newest_run(folder: Path) -> str:
    from crew.store import open_store

    store = open_store(f"sqlite:///{folder / '.crew' / 'crew.db'}")
    try:
        runs = store.list_runs()
    finally:
        store.close()
    assert runs, f"no run in {folder}/.crew/crew.db, the store the commands here read"
    return runs[0].run_id


@pytest.mark.parametrize("block", blocks_of("shell"))
def test_shell_block(block, tmp_path, server):
    server.default = answer
    folder = _workspace(tmp_path)
    fills: dict[str, str] = {}
    for option in block.options():
        name, _, value = option.removeprefix("file ").partition("=")
        if option.startswith("file "):
            (folder / name.strip()).write_text(value.strip(), encoding="utf-8")
        else:
            fills[name.strip()] = value.strip()
    ran = 0
    for line in block.code.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if "RUN_ID" in words and "RUN_ID" not in fills:
            fills["RUN_ID"] = _newest_run(folder)
        words = [re.sub(r"\b[A-Z][A-Z_]+\b", lambda m: fills.get(m[0], m[0]), w) for w in words]
        if words[0] == "cd":
            folder = folder / words[1]
            continue
        assert words[0] == "crew", f"{block}: only cd and crew commands are run here: {line}"
        done = crew_command(*words[1:], cwd=folder, server=server)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        ran += 1
    assert ran


# What a command prints.


_ERROR_OF = re.compile(
    r'error of `(?P<command>[^`]+)` with "(?P<old>.+?)" changed to "(?P<new>.+?)" in (?P<file>\S+)'
)


@pytest.mark.parametrize("block", blocks_of("error"))
def test_printed_error_block(block, tmp_path, server):
    how = _ERROR_OF.fullmatch(block.how)
    assert how is not None, (
        f'{block}: {block.how!r} is not: error of `...` with "..." changed to "..." in FILE'
    )
    source = ROOT / how["file"]
    copy = tmp_path / how["file"]
    shutil.copytree(source.parent, copy.parent)
    text = copy.read_text(encoding="utf-8")
    assert text.count(how["old"]) == 1
    copy.write_text(text.replace(how["old"], how["new"]), encoding="utf-8")

    done = crew_command(*shlex.split(how["command"])[1:], cwd=tmp_path)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert " ".join(block.code.split()) == " ".join(done.stderr.split())
    assert not server.calls


@pytest.mark.parametrize("block", blocks_of("tree"))
def test_tree_block(block):
    folders = re.findall(r"(?<!\S)([\w.-]+/)(?!\S)", block.code)
    files = re.findall(r"(?<!\S)([\w-]+\.py)\b", block.code)
    assert folders
    for folder in folders:
        assert (ROOT / folder).is_dir(), f"{block}: no folder {folder} in the repository"
    for name in files:
        assert list(ROOT.glob(f"*/{name}")), f"{block}: no file {name} in the repository"


# Lists in the prose that name things of the code.


def _section(start: str, end: str) -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index(start) : text.index(end, text.index(start))]


def test_the_events_listed_are_the_event_types():
    from crew import events

    listed = set(re.findall(r"`([A-Z]\w+)`", _section("- **Events**", "one more subscriber")))
    defined = {
        name
        for name, value in vars(events).items()
        if isinstance(value, type) and issubclass(value, events.Event) and value is not events.Event
    }
    assert listed == defined


def test_the_templates_listed_are_the_template_files():
    text = _section("- **Templates.**", "- **Python crews.**")
    roles = re.search(r"`roles/` has (\d+) role templates \(([^)]*)\)", text)
    tasks = re.search(r"`tasks/` has (\d+) task templates \(([^)]*)\)", text)
    assert roles is not None and tasks is not None
    for found, folder in ((roles, "roles"), (tasks, "tasks")):
        names = set(found[2].replace(",", " ").split())
        files = {path.stem for path in (ROOT / folder).glob("*.yaml")}
        assert names == files and int(found[1]) == len(files)
