"""Lint, format and type checks, so that the one test command runs every check CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["crew", "tests", "benchmarks", "examples"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint():
    pytest.importorskip("ruff", reason="ruff is not installed: pip install -e '.[dev]'")
    done = run(sys.executable, "-m", "ruff", "check", *PATHS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format():
    pytest.importorskip("ruff", reason="ruff is not installed: pip install -e '.[dev]'")
    done = run(sys.executable, "-m", "ruff", "format", "--check", *PATHS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[dev]'")
    done = run(sys.executable, "-m", "mypy")
    assert done.returncode == 0, done.stdout + done.stderr
