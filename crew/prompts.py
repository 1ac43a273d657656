"""The words crew sends to models: system and task prompts, and the placeholder syntax.

Placeholders follow CrewAI's rule: ``{name}`` with ``name`` matching ``[A-Za-z_][A-Za-z0-9_-]*``;
any other brace (JSON in a description, ``{ "a": 1 }``) is left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crew.agent import Agent
    from crew.board import BoardEntry
    from crew.task import Assignment, Task

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)\}")


def placeholders(text: str) -> list[str]:
    """The input names ``text`` refers to, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text or "")))


def interpolate(text: str, inputs: Mapping[str, Any]) -> str:
    """Replace each ``{name}`` that is in ``inputs``; leave every other brace as it is."""
    if not text or "{" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in inputs:
            return match.group(0)
        found = inputs[name]
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return PLACEHOLDER.sub(value, text)


def system_prompt(agent: Agent, inputs: Mapping[str, Any]) -> str:
    parts = [f"You are {interpolate(agent.role, inputs)}."]
    if agent.backstory:
        parts.append(interpolate(agent.backstory, inputs))
    if agent.goal:
        parts.append(f"Your goal: {interpolate(agent.goal, inputs)}")
    return "\n".join(parts)


def task_prompt(
    task: Task | Assignment,
    inputs: Mapping[str, Any],
    context: Iterable[BoardEntry],
    output_schema: dict[str, Any] | None,
    *,
    schema_enforced: bool = False,
    feedback: tuple[str, str] | None = None,
) -> str:
    """The user message of a task. Its first line names the task (``# Task: id``)."""
    lines = [f"# Task: {task.id}", interpolate(task.description, inputs)]
    if task.expected_output:
        lines += ["", "## Expected output", interpolate(task.expected_output, inputs)]
    entries = list(context)
    if entries:
        lines += ["", "## Context from earlier tasks"]
        for entry in entries:
            author = interpolate(entry.author, inputs)  # a role may hold {placeholders}
            lines += ["", f"### {entry.key} (by {author})", entry.render()]
    if feedback is not None:
        previous, said = feedback
        lines += ["", "## A reviewer rejected your previous answer", f"Their feedback: {said}"]
        if previous:
            lines += ["Your previous answer:", previous]
        lines += ["Answer again, taking the feedback into account."]
    if output_schema is not None and schema_enforced:
        # The provider holds the model to the schema; naming the fields is enough, and small
        # models copy a schema's descriptions into their answer when they see it whole.
        lines += [
            "",
            "## Answer format",
            f"Answer with one JSON object with {_fields(output_schema)}.",
        ]
    elif output_schema is not None:
        schema = json.dumps(output_schema, ensure_ascii=False)
        lines += [
            "",
            "## Answer format",
            f"Answer with one JSON object, and nothing else, following this JSON schema: {schema}",
        ]
    return "\n".join(lines)


def _fields(schema: dict[str, Any]) -> str:
    """``the fields: title (the headline), days (a list)`` from a JSON schema's properties."""
    described = []
    for name, prop in schema.get("properties", {}).items():
        about = prop.get("description") or ("a list" if prop.get("type") == "array" else "")
        described.append(f"{name} ({about[:1].lower() + about[1:]})" if about else name)
    return "the fields: " + ", ".join(described) if described else "the required fields"


def repair_prompt(error: str) -> str:
    return (
        "Your answer did not match the required JSON schema:\n"
        f"{error}\n"
        "Answer again with only the corrected JSON object."
    )


FINAL_ANSWER_PROMPT = (
    "You have used every tool call this task allows. Give your final answer now, without tools."
)
