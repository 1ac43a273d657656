"""Safe YAML loading that remembers where each value came from, for errors like
``examples/trip/crew.yaml:14 tasks.itinerary.depends_on: unknown task 'sight'``.

The only module that imports PyYAML. Only plain data is built (``yaml.SafeLoader``): nothing in a
YAML file is ever executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crew.errors import ConfigError

_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
)
Location = tuple[str | int, ...]
"""A path into the document: ("tasks", "itinerary", "depends_on", 0)."""


@dataclass(frozen=True)
class YamlFile:
    """A loaded YAML document and the line of every value in it."""

    path: Path
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line(self, location: Location) -> int:
        """The line (1-based) of ``location``, or of its nearest enclosing value that has one."""
        while location and location not in self.lines:
            location = location[:-1]
        return self.lines.get(location, 1)

    def where(self, location: Location) -> str:
        """``path:line dotted.location``, the prefix of every error about this file."""
        dotted = ".".join(str(part) for part in location)
        return f"{self.path}:{self.line(location)} {dotted}".rstrip()


def load_yaml(path: str | Path) -> YamlFile:
    """Read ``path`` safely; a syntax error becomes a ConfigError naming the file and line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}.") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        hint = "Check the indentation and quotes."
        rows = text.splitlines()
        if mark is not None and rows and "{" in rows[min(mark.line, len(rows) - 1)]:
            hint += ' A {placeholder} inside {...} or [...] must be quoted: "Work on {topic}".'
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}. {hint}") from exc
    lines: dict[Location, int] = {}
    data = _build(node, (), lines, path) if node is not None else None
    return YamlFile(path=path, data=data, lines=lines)


def _build(node: Any, location: Location, lines: dict[Location, int], path: Path) -> Any:
    import yaml

    lines.setdefault(location, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        dotted = ".".join(map(str, location)) or "(document)"
        raise ConfigError(
            f"{path}:{node.start_mark.line + 1} {dotted}: the tag {node.tag} is not allowed;"
            " crew files hold plain data only (remove the tag)."
        )
    if isinstance(node, yaml.MappingNode):
        yaml.SafeLoader("").flatten_mapping(node)  # resolve `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            here = (*location, key)
            if key in result:
                line = key_node.start_mark.line + 1
                dotted = ".".join(map(str, here))
                raise ConfigError(f"{path}:{line} {dotted}: the key appears twice; keep one.")
            lines[here] = key_node.start_mark.line + 1  # errors point at the key's line
            result[key] = _build(value_node, here, lines, path)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*location, i), lines, path) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: Any) -> Any:
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
