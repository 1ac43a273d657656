"""Safe YAML loading that remembers where each value came from, for errors like
``examples/trip/crew.yaml:14 tasks.itinerary.depends_on: unknown task 'sight'``.

The only module that imports PyYAML. Only plain data is built (``yaml.SafeLoader``): nothing in a
YAML file is ever executed. Crew files may come from strangers (a CI job plans the crew files of
pull requests), so reading one is bounded: its size (``MAX_BYTES``), how deep its values nest
(``MAX_DEPTH``) and how many values it holds once its aliases are expanded (``MAX_VALUES``, which
stops a "billion laughs" alias bomb). Whatever the bytes, loading returns data or raises one
``ConfigError`` naming the file and line.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crew.errors import ConfigError, shorten

_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KINDS = {"int": "a whole number", "float": "a number", "timestamp": "a date", "bool": "a yes/no"}
MAX_BYTES = 2 * 1024 * 1024
"""The largest crew file read (2 MB); real ones are a few kilobytes."""
MAX_DEPTH = 64
"""How deep values may nest; a crew file needs fewer than ten levels."""
MAX_VALUES = 50_000
"""How many values a file may hold, counting each alias once per use."""
# UTF-32's BOMs come first: UTF-32-LE's starts with UTF-16-LE's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SAVE_AS_UTF8 = "save it as UTF-8 (most editors offer this in 'Save as' or the status bar)"
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


def read_text(path: str | Path) -> str:
    """The text of a crew file (YAML or Python): at most ``MAX_BYTES``, UTF-8 with or without
    a BOM, or UTF-16/UTF-32 with a BOM. Anything else is a ConfigError naming the file, the
    line and the byte, and saying to save it as UTF-8."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}.") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"{path}: the file is larger than {MAX_BYTES // 2**20} MB, the most crew reads;"
            " a crew file is a few kilobytes. Check that this is the right file, or split the"
            " crew into subcrews (`crew:` tasks)."
        )
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    if encoding is None and b"\0" in data:
        offset = data.index(b"\0")
        raise ConfigError(
            f"{path}:{_line_at(data, offset)}: a NUL byte at byte {offset}: this is a binary"
            f" file, or UTF-16 text without a BOM, not a crew file; {_SAVE_AS_UTF8}."
        )
    encoding = encoding or "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = _line_at(data, exc.start, encoding)
        byte = data[exc.start : exc.start + 1].hex()
        named = encoding.upper().removesuffix("-SIG")
        guess = " (Latin-1 or Windows-1252 text, or a binary file?)" if named == "UTF-8" else ""
        raise ConfigError(
            f"{path}:{line}: not {named} text: byte 0x{byte} at byte {exc.start} cannot be"
            f" decoded{guess}; {_SAVE_AS_UTF8}."
        ) from None


def _line_at(data: bytes, offset: int, encoding: str = "utf-8") -> int:
    """The line (1-based) of byte ``offset`` of ``data``."""
    return data[:offset].decode(encoding, errors="replace").count("\n") + 1


def load_yaml(path: str | Path) -> YamlFile:
    """Read ``path`` safely; a syntax error becomes a ConfigError naming the file and line."""
    import yaml

    path = Path(path)
    text = read_text(path)
    try:
        loader = _loader(yaml)(text, path)  # the reader checks every character first
        node = loader.get_single_node()
        loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(path, text, exc) from exc
    lines: dict[Location, int] = {}
    data = _Builder(path, lines).build(node, ()) if node is not None else None
    return YamlFile(path=path, data=data, lines=lines)


def _syntax_error(path: Path, text: str, exc: Any) -> ConfigError:
    """The message for PyYAML's ``exc``: where, what, and how to fix it."""
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):  # a control character: only a position
        row = text.count("\n", 0, exc.position) + 1
        return ConfigError(
            f"{path}:{row}: invalid YAML: the control character #x{exc.character:02x} is not"
            " allowed in a YAML file; remove it (is this a text file?)."
        )
    mark = getattr(exc, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    hint = "Check the indentation and quotes."
    rows = text.splitlines()
    if "'\\t'" in problem:
        hint = "Indent with spaces: YAML does not allow tabs there."
    elif mark is not None and rows and "{" in rows[min(mark.line, len(rows) - 1)]:
        hint += ' A {placeholder} inside {...} or [...] must be quoted: "Work on {topic}".'
    return ConfigError(f"{path}{line}: invalid YAML: {problem}. {hint}")


def _loader(yaml: Any) -> Any:
    """A SafeLoader that stops composing past ``MAX_DEPTH`` levels or ``MAX_VALUES`` nodes,
    before PyYAML's recursion or the file's size can exhaust the stack or the memory."""

    class Loader(yaml.SafeLoader):
        def __init__(self, text: str, path: Path) -> None:
            super().__init__(text)
            self.path, self.depth, self.count = path, 0, 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth, self.count = self.depth + 1, self.count + 1
            if self.depth > MAX_DEPTH or self.count > MAX_VALUES:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(f"{self.path}:{line}: {_too_much(self.depth > MAX_DEPTH)}")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader


def _too_much(deep: bool) -> str:
    if deep:
        return (
            f"values nest more than {MAX_DEPTH} levels deep here, more than crew reads; a crew"
            " file needs a few levels. Check the brackets, or flatten the structure."
        )
    return (
        f"the file holds more than {MAX_VALUES:,} values, counting each use of an alias"
        " (*name) as a copy, more than crew reads. Write repeated values out instead of nesting"
        " aliases, or split the crew into subcrews."
    )


class _Builder:
    """Turns composed nodes into plain data, recording lines, within the limits: an alias is
    built again at each use (so it counts again), and may not contain itself."""

    def __init__(self, path: Path, lines: dict[Location, int]) -> None:
        import yaml

        self.yaml, self.path, self.lines = yaml, path, lines
        self.count = 0
        self.open: set[int] = set()  # the nodes being built, to catch an alias of its own parent
        self.constructor = yaml.SafeLoader("")

    def error(self, node: Any, location: Location, message: str) -> ConfigError:
        dotted = ".".join(map(str, location)) or "(document)"
        return ConfigError(f"{self.path}:{node.start_mark.line + 1} {dotted}: {message}")

    def build(self, node: Any, location: Location) -> Any:
        self.count += 1
        if self.count > MAX_VALUES or len(self.open) >= MAX_DEPTH:
            message = _too_much(len(self.open) >= MAX_DEPTH)
            raise ConfigError(f"{self.path}:{node.start_mark.line + 1}: {message}")
        if id(node) in self.open:
            raise self.error(
                node,
                location,
                "an alias (*name) refers to a value that contains it, which"
                " never ends; copy the value instead.",
            )
        self.lines.setdefault(location, node.start_mark.line + 1)
        if node.tag not in _PLAIN_TAGS:
            raise self.error(
                node,
                location,
                f"the tag {node.tag} is not allowed; crew files hold plain data"
                " only (remove the tag).",
            )
        if isinstance(node, self.yaml.ScalarNode):
            return self.scalar(node, location)
        self.open.add(id(node))
        try:
            if isinstance(node, self.yaml.MappingNode):
                return self.mapping(node, location)
            return [self.build(item, (*location, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def mapping(self, node: Any, location: Location) -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        merged_lines: dict[Location, int] = {}
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.merge(value_node, location, merged, merged_lines)
                continue
            key = self.key(key_node, location)
            here = (*location, key)
            if key in result:
                raise self.error(key_node, here, "the key appears twice; keep one.")
            self.lines[here] = key_node.start_mark.line + 1  # errors point at the key's line
            result[key] = self.build(value_node, here)
        if not merged:
            return result
        kept = merged.keys() - result.keys()  # the mapping's own keys override merged ones
        depth = len(location)
        self.lines.update(
            (where, line) for where, line in merged_lines.items() if where[depth] in kept
        )
        return {**{k: v for k, v in merged.items() if k in kept}, **result}

    def merge(
        self,
        node: Any,
        location: Location,
        merged: dict[Any, Any],
        lines: dict[Location, int],
    ) -> None:
        """``<<: *base`` or ``<<: [*a, *b]``: the keys of each mapping, the first one winning."""
        sources = node.value if isinstance(node, self.yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, self.yaml.MappingNode):
                raise self.error(
                    source,
                    (*location, "<<"),
                    "`<<` merges a mapping (`<<: *defaults`) or a"
                    " list of mappings (`<<: [*a, *b]`) into this one; fix its value.",
                )
            outer, self.lines = self.lines, {}
            try:
                values = self.build(source, location)
            finally:
                built, self.lines = self.lines, outer
            for key, value in values.items():
                if key not in merged:
                    merged[key] = value
                    here = (*location, key)
                    lines.update((w, n) for w, n in built.items() if w[: len(here)] == here)

    def key(self, node: Any, location: Location) -> Any:
        if not isinstance(node, self.yaml.ScalarNode) or node.tag not in _PLAIN_TAGS:
            raise self.error(
                node,
                location,
                "a key must be plain text (a name), not a list, a mapping or a"
                " tagged value; write the key as text.",
            )
        return self.scalar(node, location)

    def scalar(self, node: Any, location: Location) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (self.yaml.YAMLError, ValueError, OverflowError) as exc:
            # A number too long to convert, or a date such as 2024-13-45.
            kind = _KINDS.get(node.tag.rsplit(":", 1)[-1], "value")
            why = str(exc).split(";")[0]
            raise self.error(
                node,
                location,
                f"'{shorten(node.value, 40)}' reads as {kind} but is not a"
                f" valid one ({why}); quote it to keep it as text.",
            ) from None
