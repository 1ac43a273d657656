"""The terminal: a live view of a run, reports of runs (finished, or browsed from the store),
and plans (a tree, or Mermaid). With ``crew/cli/``, the only place that imports rich;
``import crew`` never loads it.

- ``crew.console.live``: ``ConsoleView``, the live view (an event subscriber).
- ``crew.console.reports``: a run's result, its JSON, and the store's runs, reviews and logs.
- ``crew.console.plan``: a plan as a tree, and as a Mermaid flowchart.

Each name loads its own module on first use: ``crew run`` starts its first request sooner
when the live view does not wait for the report's tables and markdown (see
``benchmarks/bench_coldstart.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crew.console.live import ConsoleView
    from crew.console.plan import plan_mermaid, render_estimate, render_plan
    from crew.console.reports import render_result, result_json

_HOMES = {
    "ConsoleView": "crew.console.live",
    "plan_mermaid": "crew.console.plan",
    "render_estimate": "crew.console.plan",
    "render_plan": "crew.console.plan",
    "render_result": "crew.console.reports",
    "result_json": "crew.console.reports",
}

__all__ = [
    "ConsoleView",
    "plan_mermaid",
    "render_estimate",
    "render_plan",
    "render_result",
    "result_json",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'crew.console' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
