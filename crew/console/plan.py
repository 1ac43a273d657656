"""A plan shown before any model call: a tree of its levels in the terminal, or a Mermaid
flowchart (``crew plan --mermaid``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from crew.budget import TaskEstimate
from crew.console.text import count
from crew.plan import Plan
from crew.prompts import interpolate

if TYPE_CHECKING:
    from crew.task import Task


def render_plan(plan: Plan, console: Console, *, inputs: Mapping[str, Any] | None = None) -> None:
    """Print the task graph by levels, each task with its control flow and a loop with its
    body; then the critical path and how parallel the graph can run. ``inputs`` fill in the
    roles shown (``{topic} Researcher``)."""
    critical = set(plan.critical_path)
    tree = Tree(Text(f"Plan: {count(len(plan.tasks), 'task')}", style="bold"))
    for number, level in enumerate(plan.levels):
        branch = tree.add(Text(f"level {number} ({count(len(level), 'task')})", style="cyan"))
        for task_id in level:
            _plan_node(branch, plan, task_id, critical=critical, inputs=inputs or {})
    console.print(tree)
    path = " -> ".join(plan.critical_path)
    console.print(f"Critical path: {path} ({plan.critical_path_s:g} s estimated)", markup=False)
    console.print(
        f"Max parallelism: {plan.max_parallelism}, levels: {len(plan.levels)}", markup=False
    )


def _plan_node(
    branch: Tree, plan: Plan, task_id: str, *, critical: set[str], inputs: Mapping[str, Any]
) -> None:
    """``id  who  after deps  flow``, and under a loop its body's tasks in order."""
    task = plan.tasks[task_id]
    label = Text(task_id, style="bold red" if task_id in critical else "bold")
    label.append(f"  {_doer(task, inputs)}", style="green")
    deps = plan.dependencies(task_id)
    if deps:
        label.append(f"  after {', '.join(deps)}", style="dim")
    routes = "; ".join(f"{name} -> {', '.join(ids)}" for name, ids in task.route_targets.items())
    for part in [*_flow(task), *([f"routes {routes}"] if routes else [])]:
        label.append(f"  {part}", style="magenta")
    node = branch.add(label)
    body = plan.groups.get(task_id)
    if body is not None:
        for inner in body.order:
            _plan_node(node, body, inner, critical=set(), inputs=inputs)
    elif task.kind == "loop":
        node.add(Text("tasks made at run time", style="dim"))


def _doer(task: Task, inputs: Mapping[str, Any], missing: str = "?") -> str:
    """What does the task: its agent (else ``missing``), a subcrew (and the inputs mapped to
    it) or a loop."""
    if task.crew is not None:
        names = f" ({', '.join(task.inputs)})" if task.inputs else ""
        return f"subcrew {task.crew.name}{names}"
    if task.kind == "loop":
        until = f"until {_expression(task.until)}, " if task.until is not None else ""
        return f"loop: {until}max {count(task.max_rounds or 1, 'round')}"
    return interpolate(task.agent.role, inputs) if task.agent is not None else missing


def _flow(task: Task) -> list[str]:
    """The task's condition, join policy (unless all) and items, compactly."""
    parts = [f"when {_expression(task.when)}"] if task.when is not None else []
    parts += [f"join {task.join}"] if task.join != "all" else []
    return parts + ([f"for each {_expression(task.for_each)}"] if task.for_each is not None else [])


def _expression(value: object) -> str:
    """An expression as written, or a callable's name."""
    return value if isinstance(value, str) else getattr(value, "__name__", type(value).__name__)


_MERMAID_WORDS = {"end", "graph", "flowchart", "subgraph", "class", "classdef", "click", "style"}
_MERMAID_ESCAPES = str.maketrans({"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;"})


def plan_mermaid(plan: Plan, *, inputs: Mapping[str, Any] | None = None) -> str:
    """The task graph as a Mermaid flowchart, critical path highlighted. A loop is a subgraph
    of its body, a router's edges are labelled with their routes; a conditional task is a
    hexagon, a router a rhombus, a map a subroutine box, a subcrew a stadium."""
    ids: dict[str, str] = {}
    for task_id in plan.all_tasks:
        node = re.sub(r"\W", "_", task_id, flags=re.ASCII)
        if node.lower() in _MERMAID_WORDS:
            node += "_"
        while node in ids.values():
            node += "_"
        ids[task_id] = node
    lines = ["flowchart TD", *_mermaid_graph(plan, ids, "    ", inputs or {})]
    lines.append("    classDef critical stroke:#e5484d,stroke-width:3px")
    lines.append(f"    class {','.join(ids[t] for t in plan.critical_path)} critical")
    return "\n".join(lines)


def _mermaid_graph(
    plan: Plan, ids: Mapping[str, str], indent: str, inputs: Mapping[str, Any]
) -> list[str]:
    """The nodes (a loop's as a subgraph of its body), then the edges, of one plan."""
    lines = []
    for task_id, task in plan.tasks.items():
        parts = [task_id, _doer(task, inputs, missing=""), *_flow(task)]
        if task.kind == "loop" and task_id not in plan.groups:
            parts.append("tasks made at run time")
        label = "<br/>".join(p.translate(_MERMAID_ESCAPES) for p in parts if p)
        if task_id in plan.groups:
            lines.append(f'{indent}subgraph {ids[task_id]} ["{label}"]')
            lines += _mermaid_graph(plan.groups[task_id], ids, indent + "    ", inputs)
            lines.append(f"{indent}end")
            continue
        shape = (
            "{}" if task.routes else "{{}}" if task.when is not None
            else "[[]]" if task.kind == "map" else "([])" if task.kind == "crew" else "[]"
        )  # fmt: skip
        half = len(shape) // 2
        lines.append(f'{indent}{ids[task_id]}{shape[:half]}"{label}"{shape[half:]}')
    for task_id in plan.order:
        for dep in plan.dependencies(task_id):
            routes = [n for n, ts in plan.tasks[dep].route_targets.items() if task_id in ts]
            arrow = f'-- "{", ".join(routes)}" -->' if routes else "-->"
            lines.append(f"{indent}{ids[dep]} {arrow} {ids[task_id]}")
    return lines


def render_estimate(estimates: list[TaskEstimate], console: Console) -> None:
    """Each task's worst case before a run (``crew plan --estimate``): one call's tokens and
    cost, the calls it may make at most, and their product; then the totals, and what the
    figures do not know (models without a price, maps' items, subcrews)."""
    table = Table("task", "model", "one call", "calls at most", "worst case", title="Estimate")
    for e in estimates:
        one, worst = e.per_call, e.worst
        table.add_row(
            e.task_id, e.model, f"{one.tokens:,} tok ${one.cost_usd:.4f}", str(e.calls),
            f"{worst.tokens:,} tok ${worst.cost_usd:.4f}" + (f" ({e.note})" if e.note else ""),
        )  # fmt: skip
    console.print(table)
    once = sum(e.per_call.cost_usd for e in estimates)
    total_usd = sum(e.worst.cost_usd for e in estimates)
    tokens = sum(e.worst.tokens for e in estimates)
    console.print(
        f"Worst case in total: ${total_usd:.4f}, {tokens:,} tokens"
        f" (${once:.4f} if each task makes one call).",
        markup=False,
    )
    console.print(
        "One call: the prompt counted at about 4 characters a token, each dependency's output"
        " as long as its model may answer, and the model's max_tokens of answer. Calls at most:"
        " the tool loop's (max_iterations + 1 with tools) times the task's attempts (retries + 1)"
        " times a loop's rounds. Tool results and delegated work add tokens not counted here.",
        markup=False,
    )
    unpriced = sorted({e.model for e in estimates if not e.priced and e.model})
    if unpriced:
        console.print(
            f"No price known for {', '.join(unpriced)}: counted at $0 (only a max_tokens"
            " budget limits them).",
            markup=False,
        )
    for e in estimates:
        if e.note:
            console.print(f"{e.task_id}: {e.note}.", markup=False)
