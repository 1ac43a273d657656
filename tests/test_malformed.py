"""Hostile and broken crew files: ``crew plan`` on each exits 2 with one short message naming
the file (and the line, when there is one), never a traceback, however odd the bytes.

The corpus: ``fixtures/malformed/crews/*.yaml`` (each ends with ``# expect: ...`` lines, the
fragments its message must hold), ``fixtures/malformed/crewai/*/`` (CrewAI projects, with an
``expect.txt``), and the files below that are made at test time (encodings, binary, huge)."""

from __future__ import annotations

import codecs
import gzip
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crew.cli import main
from crew.errors import ConfigError
from crew.yamlfile import MAX_BYTES, load_yaml

ROOT = Path(__file__).resolve().parent.parent
MALFORMED = Path(__file__).parent / "fixtures" / "malformed"
MAX_OUTPUT = 8_000
CREW = "agents:\n  writer: {role: Writer}\ntasks:\n  a: {description: d, agent: writr}\n"
"""A crew whose line 4 names an unknown agent: decoded right, it fails there."""
LINE_4 = ["tasks.a.agent", "did you mean 'writer'?"]


def _expected(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [
        line.removeprefix("# expect: ")
        for line in text.splitlines()
        if line.startswith("# expect: ")
    ]


def _many_tasks(count: int, agent: str) -> str:
    rows = [f"  t{i}: {{description: d, agent: {agent}}}" for i in range(count)]
    return "agents:\n  writer: {role: Writer}\ntasks:\n" + "\n".join(rows) + "\n"


def _many_dependencies(count: int) -> str:
    rows = [f"  t{i}: {{description: d, agent: writer, depends_on: [x{i}]}}" for i in range(count)]
    return "agents:\n  writer: {role: Writer}\ntasks:\n" + "\n".join(rows) + "\n"


def _deep_block(levels: int) -> str:
    return "".join(f"{'  ' * i}a:\n" for i in range(levels)) + "  " * levels + "b: 1\n"


def _huge() -> bytes:
    line = b"# " + b"x" * 1000 + b"\n"
    return CREW.encode() + line * (MAX_BYTES // len(line) + 1)


# name -> (the bytes of crew.yaml, the fragments of the message)
GENERATED: dict[str, tuple[bytes, list[str]]] = {
    "empty": (b"", ["empty.yaml:1", "got an empty file"]),
    "latin1": (
        CREW.replace("d, agent", "café, agent").encode("latin-1"),
        ["latin1.yaml:4", "0xe9", "save it as UTF-8"],
    ),
    "cp1252_quotes": (
        "description: “quoted”\n".encode("cp1252"),
        ["cp1252_quotes.yaml:1", "save it as UTF-8"],
    ),
    "utf8_bad_byte_on_line_5": (
        CREW.encode() + b"name: \xff\xfe\n",
        ["utf8_bad_byte_on_line_5.yaml:5", "byte 0xff"],
    ),
    "utf16_without_bom": (
        CREW.encode("utf-16-le"),
        ["utf16_without_bom.yaml:1", "NUL byte", "save it as UTF-8"],
    ),
    "utf16_with_bom": (CREW.encode("utf-16"), ["utf16_with_bom.yaml:4", *LINE_4]),
    "utf16_be_with_bom": (
        codecs.BOM_UTF16_BE + CREW.encode("utf-16-be"),
        ["utf16_be_with_bom.yaml:4", *LINE_4],
    ),
    "utf32_with_bom": (CREW.encode("utf-32"), ["utf32_with_bom.yaml:4", *LINE_4]),
    "utf8_with_bom": (codecs.BOM_UTF8 + CREW.encode(), ["utf8_with_bom.yaml:4", *LINE_4]),
    "utf16_bom_broken": (
        codecs.BOM_UTF16_LE + b"a\x00b\x00\x00\xdc",
        ["utf16_bom_broken.yaml:1", "not UTF-16 text"],
    ),
    "binary_random": (
        random.Random(7).randbytes(4096),
        ["binary_random.yaml:", "save it as UTF-8"],
    ),
    "binary_png": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        ["binary_png.yaml:3", "NUL byte"],
    ),
    "binary_gzip": (
        gzip.compress(CREW.encode() * 20, mtime=0),
        ["binary_gzip.yaml:1", "save it as UTF-8"],
    ),
    "nul_on_line_3": (
        CREW.replace("tasks:", "tasks:\x00").encode(),
        ["nul_on_line_3.yaml:3", "NUL byte"],
    ),
    "control_char_on_line_2": (
        CREW.replace("Writer", "Wri\x07ter").encode(),
        ["control_char_on_line_2.yaml:2", "#x07"],
    ),
    "huge": (_huge(), ["huge.yaml", "larger than 2 MB"]),
    "escape_sequences": (
        CREW.replace("writr", '"\\e]0;owned\\a\\e[2J"').encode(),
        ["escape_sequences.yaml:4", "'\\x1b]0;owned\\x07\\x1b[2J'"],
    ),
    "three_thousand_unknown_agents": (
        _many_tasks(3000, "nobody"),
        [
            "3,000 problems",
            "... and 2,980 more",
            "three_thousand_unknown_agents.yaml:4 tasks.t0.agent",
        ],
    ),
    "two_thousand_unknown_dependencies": (
        _many_dependencies(2000),
        ["2,000 problems", "... and 1,980 more", ".yaml:4 tasks.t0.depends_on"],
    ),
    "long_agent_name": (
        _many_tasks(1, "x" * 1_000_000),
        ["long_agent_name.yaml:4 tasks.t0.agent", "characters ..."],
    ),
    "deep_block_mapping": (_deep_block(300), ["deep_block_mapping.yaml:", "more than 64 levels"]),
}
for _name, (_data, _fragments) in list(GENERATED.items()):
    GENERATED[_name] = (_data.encode() if isinstance(_data, str) else _data, _fragments)


def _crewai(folder: Path, broken: dict[str, bytes]) -> Path:
    """A CrewAI project in ``folder``: one agent and one task, with ``broken`` written over
    its files."""
    agents = "researcher:\n  role: Researcher\n  goal: Find facts about {topic}\n  backstory: B\n"
    tasks = (
        "research_task:\n  description: Research {topic}\n  expected_output: N\n"
        "  agent: researcher\n"
    )
    files = {"config/agents.yaml": agents.encode(), "config/tasks.yaml": tasks.encode(), **broken}
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


GENERATED_CREWAI: dict[str, tuple[dict[str, bytes], list[str]]] = {
    "agents_latin1": (
        {"config/agents.yaml": "researcher:\n  role: Researcher\n  goal: Café\n".encode("latin-1")},
        ["agents.yaml:3", "save it as UTF-8"],
    ),
    "tasks_utf16_without_bom": (
        {"config/tasks.yaml": "research_task: {}\n".encode("utf-16-le")},
        ["tasks.yaml:1", "NUL byte"],
    ),
    "tasks_huge": ({"config/tasks.yaml": _huge()}, ["tasks.yaml", "larger than 2 MB"]),
    "crew_py_too_deep": (
        {
            "crew.py": b"from crewai.project import CrewBase\n\n@CrewBase\nclass C:\n    x = "
            + b"-" * 100_000
            + b"1\n"
        },
        ["crew.py", "nested too deeply"],
    ),
    "crew_py_syntax_error": (
        {"crew.py": b"@CrewBase\nclass Broken:\n    def research_task(self)\n        return 1\n"},
        ["crew.py:3", "invalid Python"],
    ),
    "crew_py_binary": (
        {"crew.py": b"CrewBase\n" + random.Random(3).randbytes(512)},
        ["crew.py:", "save it as UTF-8"],
    ),
}

CASES: list[tuple[str, Callable[[Path], tuple[Path, list[str]]]]] = []


def _fixture_file(path: Path) -> Callable[[Path], tuple[Path, list[str]]]:
    return lambda _tmp: (path, [*_expected(path), f"{path.name}:"])


def _fixture_project(path: Path) -> Callable[[Path], tuple[Path, list[str]]]:
    return lambda _tmp: (path, (path / "expect.txt").read_text(encoding="utf-8").splitlines())


def _generated_file(name: str) -> Callable[[Path], tuple[Path, list[str]]]:
    def make(tmp: Path) -> tuple[Path, list[str]]:
        data, fragments = GENERATED[name]
        path = tmp / f"{name}.yaml"
        path.write_bytes(data)
        return path, [*fragments, path.name]

    return make


def _generated_project(name: str) -> Callable[[Path], tuple[Path, list[str]]]:
    def make(tmp: Path) -> tuple[Path, list[str]]:
        broken, fragments = GENERATED_CREWAI[name]
        return _crewai(tmp / name, broken), fragments

    return make


def _subcrew_chain(tmp: Path) -> tuple[Path, list[str]]:
    """300 crew files, each running the next as a subcrew."""
    for i in range(300):
        task = f"{{crew: c{i + 1}.yaml}}" if i < 299 else "{description: d, agent: w}"
        (tmp / f"c{i}.yaml").write_text(f"agents:\n  w: {{role: W}}\ntasks:\n  t: {task}\n")
    return tmp / "c0.yaml", ["c15.yaml:4 tasks.t.crew", "more than 16 files deep"]


def _broken_subcrew(tmp: Path) -> tuple[Path, list[str]]:
    """A crew whose subcrew is Latin-1 text: the message names the subcrew's file and line."""
    (tmp / "child").mkdir()
    (tmp / "child" / "crew.yaml").write_bytes(GENERATED["latin1"][0])
    parent = "agents:\n  w: {role: W}\ntasks:\n  t: {crew: child}\n"
    (tmp / "crew.yaml").write_text(parent, encoding="utf-8")
    return tmp / "crew.yaml", [f"{Path('child', 'crew.yaml')}:4", "save it as UTF-8"]


CASES += [
    ("generated/subcrew_chain", _subcrew_chain),
    ("generated/broken_subcrew", _broken_subcrew),
]
CASES += [
    (f"crews/{p.name}", _fixture_file(p)) for p in sorted((MALFORMED / "crews").glob("*.yaml"))
]
CASES += [
    (f"crewai/{p.name}", _fixture_project(p)) for p in sorted((MALFORMED / "crewai").iterdir())
]
CASES += [(f"generated/{name}", _generated_file(name)) for name in GENERATED]
CASES += [(f"generated/crewai/{name}", _generated_project(name)) for name in GENERATED_CREWAI]


def test_the_corpus_is_large():
    assert len(CASES) >= 60


@pytest.fixture
def plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[Path], tuple[int, str]]:
    """``crew plan TARGET`` in-process: its exit code and everything it printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREW_MODEL", "openai/fake")  # a valid crew would plan; these must not

    def run(target: Path) -> tuple[int, str]:
        code = main(["plan", str(target)])
        out, err = capsys.readouterr()
        return code, out + err

    return run


@pytest.mark.parametrize("make", [make for _, make in CASES], ids=[name for name, _ in CASES])
def test_crew_plan_refuses_a_malformed_crew_in_one_short_message(make, tmp_path, plan):
    target, fragments = make(tmp_path)
    code, output = plan(target)
    assert code == 2, output
    assert "Traceback" not in output
    assert "\x1b" not in output  # no escape sequence from the file reaches the terminal
    assert output.startswith("error: ")
    assert len(output) < MAX_OUTPUT, output[:2000]
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in {output!r}"


def test_the_real_entry_point_refuses_a_yaml_bomb_and_a_latin1_file(tmp_path):
    """The same through a new process: exit status 2, no traceback, a bounded message."""
    bomb = MALFORMED / "crews" / "syntax_alias_bomb.yaml"
    latin1 = tmp_path / "crew.yaml"
    latin1.write_bytes(GENERATED["latin1"][0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREW_")}
    for target, fragment in ((bomb, "syntax_alias_bomb.yaml:1"), (latin1, "crew.yaml:4")):
        done = subprocess.run(
            [sys.executable, "-m", "crew.cli", "plan", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env | {"PYTHONPATH": str(ROOT), "CREW_STORE": "memory"},
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert fragment in done.stderr
        assert len(done.stdout + done.stderr) < MAX_OUTPUT


def test_a_config_error_lists_twenty_problems_and_counts_the_rest():
    error = ConfigError([f"problem {i}" for i in range(3000)])
    message = str(error)
    assert message.splitlines()[0] == "3,000 problems in the crew:"
    assert "  - problem 19" in message and "problem 20\n" not in message
    assert message.endswith("... and 2,980 more (fix these, then check again)")
    assert len(error.problems) == 3000  # all kept for callers


def test_long_problems_are_listed_until_the_message_is_a_page():
    message = str(ConfigError([f"crew.yaml:{i} " + "x" * 2_000 for i in range(20)]))
    assert len(message) < MAX_OUTPUT
    assert "crew.yaml:0 " in message and "... and " in message


def test_a_long_problem_keeps_its_start_and_its_end():
    problem = "crew.yaml:4 tasks.a.agent: unknown agent '" + "x" * 50_000 + "'. Add it."
    message = str(ConfigError(problem))
    assert message.startswith("crew.yaml:4 tasks.a.agent: unknown agent 'xxx")
    assert message.endswith("'. Add it.") and len(message) < 1_000


# What the limits must not refuse.


def write(tmp_path: Path, text: str | bytes, name: str = "crew.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_anchors_merge_keys_and_overrides_load_with_their_lines(tmp_path):
    path = write(
        tmp_path,
        "defaults: &defaults\n"
        "  goal: Help\n"
        "  backstory: Kind\n"
        "agents:\n"
        "  writer:\n"
        "    <<: *defaults\n"
        "    goal: Write\n"
        "  editor: {<<: *defaults, role: Editor}\n",
    )
    yf = load_yaml(path)
    assert yf.data["agents"]["writer"] == {"goal": "Write", "backstory": "Kind"}
    assert yf.data["agents"]["editor"] == {"goal": "Help", "backstory": "Kind", "role": "Editor"}
    assert yf.line(("agents", "writer", "goal")) == 7  # the override's line
    assert yf.line(("agents", "writer", "backstory")) == 3  # the anchor's line


def test_a_merge_list_takes_the_first_mapping_that_has_a_key(tmp_path):
    text = "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc: {<<: [*a, *b], z: 3}\n"
    assert load_yaml(write(tmp_path, text)).data["c"] == {"x": 1, "y": 1, "z": 3}


def test_many_uses_of_one_alias_are_fine_within_the_limit(tmp_path):
    rows = "".join(f"  t{i}: *task\n" for i in range(2000))
    text = "base: &task {description: d, agent: writer}\ntasks:\n" + rows
    data = load_yaml(write(tmp_path, text)).data
    assert len(data["tasks"]) == 2000 and data["tasks"]["t1999"]["agent"] == "writer"


def test_nesting_up_to_the_limit_loads(tmp_path):
    data = load_yaml(write(tmp_path, "a: " + "[" * 60 + "]" * 60 + "\n")).data
    depth = 0
    value = data["a"]
    while value:
        value, depth = value[0], depth + 1
    assert depth == 59


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_text_with_a_byte_order_mark_loads(tmp_path, encoding):
    path = write(tmp_path, "name: Café\nitems: [1, 2]\n".encode(encoding))
    yf = load_yaml(path)
    assert yf.data == {"name": "Café", "items": [1, 2]}
    assert yf.line(("items",)) == 2


# Fuzzing: whatever the input, the loader returns data or raises ConfigError, nothing else.

YAMLISH = st.lists(
    st.sampled_from([*"ab1:-[]{}&*!|>'\"#?,.%@`<=~ \n\t\\", "<<", "\ufeff", "\x00", "é", "  "]),
    max_size=60,
).map("".join)
KEYS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "crew.yaml"


def _load_or_config_error(path: Path) -> object:
    try:
        return load_yaml(path).data
    except ConfigError as exc:
        assert str(path) in str(exc)
        return exc


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=YAMLISH)
def test_yaml_like_text_loads_or_is_a_config_error(fuzz_file, text):
    fuzz_file.write_text(text, encoding="utf-8")
    _load_or_config_error(fuzz_file)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=200))
def test_any_bytes_load_or_are_a_config_error(fuzz_file, data):
    fuzz_file.write_bytes(data)
    _load_or_config_error(fuzz_file)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=VALUES, style=st.sampled_from([None, True, False]))
def test_structures_dumped_as_yaml_load_back_unchanged(fuzz_file, value, style):
    fuzz_file.write_text(yaml.safe_dump(value, default_flow_style=style), encoding="utf-8")
    loaded = _load_or_config_error(fuzz_file)
    if isinstance(loaded, ConfigError):  # only a key twice (as 1 and 1.0), or a NUL in text
        assert re.search(r"appears twice|NUL|control character", str(loaded)), str(loaded)
    else:
        assert loaded == value


NAMES = ["a", "b", "w", "{x}", "a.text", "a.data.x == 1", "quorum(2)", "x:y", "", "crew.yaml"]
FIELDS = [
    *("name", "description", "inputs", "llm", "process", "manager", "goal", "templates"),
    *("max_concurrency", "role", "tools", "use", "with", "agent", "depends_on", "when", "join"),
    *("routes", "for_each", "crew", "loop", "until", "max_rounds", "output_model", "type"),
    *("default", "properties", "delegates", "allow_delegation", "retries", "human_review"),
]
LEAVES = st.none() | st.booleans() | st.integers(-3, 5) | st.sampled_from(NAMES)
FIELD_VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*FIELDS, "a", "b"]) | st.integers(0, 2), inner, max_size=4
        )
    ),
    max_leaves=20,
)
CREW_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "agents": st.dictionaries(st.sampled_from(["a", "w", "1"]), FIELD_VALUES, max_size=3),
        "tasks": st.dictionaries(st.sampled_from(["a", "b", "w"]), FIELD_VALUES, max_size=3),
        "inputs": FIELD_VALUES,
        "process": LEAVES,
        "manager": LEAVES,
    },
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(document=CREW_SHAPED)
def test_crew_shaped_documents_plan_or_exit_2(fuzz_file, plan, document):
    fuzz_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    code, output = plan(fuzz_file)
    assert code in (0, 2), output
    assert code == 0 or (output.startswith("error: ") and str(fuzz_file) in output), output
