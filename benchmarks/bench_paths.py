"""The two model paths side by side: directly over HTTP (``crew.openai_http``) and through litellm.

    python benchmarks/bench_paths.py           # prints one table; takes about 30 s

The fake OpenAI-compatible server answers at once (0 ms) in this process; each path is measured
in a fresh child process, so litellm's import never weighs on the direct path. Per path: the
time to import what the first call needs, then the CPU and wall time per call of 300 bare
``LLM.complete`` calls and per task of a 50-task chain run by ``Crew``, the child's peak RSS,
and whether litellm was imported. Last, the time from starting ``crew run FILE`` to the first
request reaching the server, per path.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS = 300
CHAIN = 50


def child(path: str, url: str) -> None:
    """Measure one path in this (fresh) process and print the numbers as JSON."""
    started = time.perf_counter()
    from crew import LLM, Agent, Crew, Task
    from crew.chat import ChatRequest
    from crew.llm import prepare
    from crew.store.memory import MemoryStore

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

    agent = Agent(role="Worker", llm=llm, board_tools=False)
    tasks = [
        Task(id=f"t{i}", description="Say hi.", agent=agent, depends_on=[f"t{i - 1}"] if i else [])
        for i in range(CHAIN)
    ]
    crew = Crew(tasks, store=MemoryStore())
    cpu, wall = time.process_time(), time.perf_counter()
    result = crew.run()
    assert result.status == "succeeded", result.tasks
    per_task = ((time.process_time() - cpu) / CHAIN, (time.perf_counter() - wall) / CHAIN)
    print(
        json.dumps(
            {
                "ready_s": ready_s,
                "call_cpu_ms": per_call[0] * 1000,
                "call_wall_ms": per_call[1] * 1000,
                "task_cpu_ms": per_task[0] * 1000,
                "task_wall_ms": per_task[1] * 1000,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "litellm": "litellm" in sys.modules,
            }
        )
    )


CREW_FILE = """\
name: bench
agents:
  worker: {role: Worker, goal: Answer}
tasks:
  hello: {description: Say hi., agent: worker}
"""


def first_request_s(path: str, url: str, server: object) -> float:
    """Seconds from starting ``crew run FILE`` to its first request reaching the server."""
    server.reset()  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as folder:
        crew_file = Path(folder) / "crew.yaml"
        crew_file.write_text(CREW_FILE)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CREW_MODEL": "openai/fake",
            "CREW_API_BASE": url,
            "OPENAI_API_KEY": "sk-bench",
            "CREW_LLM_CLIENT": "auto" if path == "direct" else "litellm",
            "CREW_STORE": "memory",
        }
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "crew.cli", "run", str(crew_file), "--quiet"],
            env=env,
            cwd=folder,
            capture_output=True,
            timeout=120,
            check=True,
        )
    calls = server.calls  # type: ignore[attr-defined]
    return calls[0].started - started


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
            rows[path]["first_request_s"] = min(
                first_request_s(path, server.url, server) for _ in range(3)
            )
    print("| | direct (aiohttp) | litellm |")
    print("|---|---|---|")
    for key, label, unit in [
        ("ready_s", "import + prepare before the first call", "s"),
        ("call_cpu_ms", f"CPU per call ({CALLS} bare calls)", "ms"),
        ("call_wall_ms", "wall per call", "ms"),
        ("task_cpu_ms", f"CPU per task ({CHAIN}-task chain, 0 ms server)", "ms"),
        ("task_wall_ms", "wall per task", "ms"),
        ("peak_rss_mb", "peak RSS of the process", "MB"),
        ("first_request_s", "`crew run FILE` start -> first request (best of 3)", "s"),
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
