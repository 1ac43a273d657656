"""The terminal: a live view of a run, reports of runs (finished, or browsed from the store),
and plans (a tree, or Mermaid). With ``crew/cli.py``, the only place that imports rich;
``import crew`` never loads it.

- ``crew.console.live``: ``ConsoleView``, the live view (an event subscriber).
- ``crew.console.reports``: a run's result, its JSON, and the store's runs, reviews and logs.
- ``crew.console.plan``: a plan as a tree, and as a Mermaid flowchart.
"""

from crew.console.live import ConsoleView
from crew.console.plan import plan_mermaid, render_plan
from crew.console.reports import render_result, result_json

__all__ = ["ConsoleView", "plan_mermaid", "render_plan", "render_result", "result_json"]
