"""The cost per call of the two model paths: directly over HTTP and through litellm.

    python benchmarks/bench_paths.py           # prints one table; takes about 15 s

The fake OpenAI-compatible server answers at once (0 ms) in this process; each path is measured
in a fresh child process, so litellm's import never weighs on the direct path. Per path: the
time to import what the first call needs, then the CPU and wall time per call of 300 bare
``LLM.complete`` calls (no crew around them), and whether litellm was imported.
``bench_peers.py`` runs whole crews on both paths (per task, cold run, peak RSS), and
``bench_coldstart.py`` times ``crew run`` to its first request.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS = 300


def child(path: str, url: str) -> None:
    """Measure one path in this (fresh) process and print the numbers as JSON."""
    started = time.perf_counter()
    from crew import LLM
    from crew.chat import ChatRequest
    from crew.llm import prepare

    client = "auto" if path == "direct" else "litellm"
    llm = LLM("openai/gpt-4o-mini", api_base=url, api_key="sk-bench", client=client)
    prepare([llm])
    ready_s = time.perf_counter() - started
    request = ChatRequest(messages=[{"role": "user", "content": "# Task: t\nSay hi."}])

    async def calls(n: int) -> None:
        for _ in range(n):
            await llm.complete(request)

    asyncio.run(calls(20))  # warm up: connections, caches
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(calls(CALLS))
    per_call = ((time.process_time() - cpu) / CALLS, (time.perf_counter() - wall) / CALLS)

    print(
        json.dumps(
            {
                "ready_s": ready_s,
                "call_cpu_ms": per_call[0] * 1000,
                "call_wall_ms": per_call[1] * 1000,
                "litellm": "litellm" in sys.modules,
            }
        )
    )


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from crew.testserver import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        rows = {}
        for path in ("direct", "litellm"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", path, server.url],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            rows[path] = json.loads(done.stdout.strip().splitlines()[-1])
    print("| | direct (aiohttp) | litellm |")
    print("|---|---|---|")
    for key, label, unit in [
        ("ready_s", "import + prepare before the first call", "s"),
        ("call_cpu_ms", f"CPU per call ({CALLS} bare calls)", "ms"),
        ("call_wall_ms", "wall per call", "ms"),
        ("litellm", "litellm imported", ""),
    ]:
        shown = [_shown(rows[path][key], unit) for path in ("direct", "litellm")]
        print(f"| {label} | {shown[0]} | {shown[1]} |")


def _shown(value: object, unit: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    assert isinstance(value, float | int)
    return f"{value:.3f} {unit}" if unit in ("s", "ms") else f"{value:.0f} {unit}"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
