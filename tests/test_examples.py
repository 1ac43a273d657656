"""Examples are tests: each runs as a user would run it, against the local fake server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_runs_offline_and_prints_the_article(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_", "OPENAI_"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No CREW_MODEL set: answering from crew's local fake server" in done.stdout
    assert "# Lisbon, City of Seven Hills" in done.stdout
    for task_id in ("facts", "history", "article"):
        assert f"{task_id:<8} succeeded" in done.stdout
    assert ": succeeded in" in done.stdout
