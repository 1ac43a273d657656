"""The README's three commands, as written: install, run the main example, run the tests.

The main command runs verbatim on the real bundled model, with no key and, where this process may
make one (root with ``unshare``), in a network namespace that has only loopback. The install
command is checked for what makes it portable; CI runs it for real in a fresh virtual
environment (``.ci/run``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crew import local

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
IN_CI = os.environ.get("CI", "").lower() == "true"


def readme_commands() -> dict[str, str]:
    """The first bash block's commands, by what their comment says they do."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block is not None, "README.md has no bash block"
    commands = {}
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("#")
        comment = comment.strip()
        what = "test" if "the tests" in comment else comment.split(" ", 1)[0]
        if what in ("install", "run", "test"):
            commands.setdefault(what, command.strip())
    assert set(commands) == {"install", "run", "test"}, commands
    return commands


def test_the_install_command_builds_a_portable_llama_cpp():
    install = readme_commands()["install"]
    files = re.findall(r"-r\s+(\S+)", install)
    assert files, f"the install command installs no requirements file: {install}"
    text = "\n".join((ROOT / f).read_text(encoding="utf-8") for f in files)
    [llama] = [line for line in text.splitlines() if line.startswith("llama-cpp-python")]

    for setting in ("GGML_NATIVE=OFF", "GGML_AVX512=OFF", "GGML_AMX_TILE=OFF", "GGML_AMX_INT8=OFF"):
        assert f"cmake.define.{setting}" in llama
    assert re.search(r"^-e \.\[.*local.*\]", text, re.M)


def test_the_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    assert readme_commands()["test"] in ci
    assert "unshare -n" in ci  # the tests run with loopback only


@pytest.fixture
def installed_model() -> None:
    if local.available():
        return
    reason = "the local model is not installed: pip install -r requirements.txt"
    if IN_CI:
        pytest.fail(f"{reason} (CI installs it, so it must be there)")
    pytest.skip(reason)


def _loopback_only(command: list[str]) -> list[str]:
    """``command`` in a network namespace with only loopback, when this process can make one."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return command
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return command
    return ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


@pytest.mark.usefixtures("installed_model")
def test_the_main_command_runs_verbatim_on_the_bundled_model_with_no_key(tmp_path):
    command = readme_commands()["run"]
    # A copy, so that nothing the run writes lands in the repository; the store goes to
    # tmp_path/.crew, the working folder's, as examples/research is no project of its own.
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {
        k: v
        for k, v in os.environ.items()
        if not re.search(r"_API_KEY$|^CREW_|^MODEL$|^OPENAI_|^ANTHROPIC_", k)
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    done = subprocess.run(
        _loopback_only(["sh", "-c", command]),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "using the bundled local model" in done.stderr
    assert "succeeded" in done.stdout + done.stderr
    assert '"title"' in done.stdout or "title" in done.stdout  # the article, the final output
    assert (tmp_path / ".crew").is_dir()
    assert not (tmp_path / "examples" / "research" / ".crew").exists()


def _llama_cpu_library() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    folders = spec.submodule_search_locations if spec else None
    for folder in folders or []:
        found = sorted((Path(folder) / "lib").glob("libggml-cpu*.so*"))
        if found:
            return found[0]
    return None


@pytest.mark.usefixtures("installed_model")
def test_the_installed_llama_cpp_has_no_avx512_or_amx_code():
    """What makes a build crash on some hosts, checked in the library itself: a build tuned to a
    CPU with AVX-512 and AMX holds thousands of zmm and hundreds of tile instructions."""
    if not shutil.which("objdump"):
        pytest.skip("objdump (binutils) is not installed")
    library = _llama_cpu_library()
    assert library is not None, "llama_cpp is installed without its libggml-cpu library"

    code = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert code.count("\n") > 10_000  # it is the real compute library
    assert code.count("%zmm") == 0
    assert code.count("tileloadd") == 0 and code.count("tdpbssd") == 0
