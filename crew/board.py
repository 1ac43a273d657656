"""The state board: the shared store every agent of a run reads and writes.

Each finished task posts its output under its own id; agents post notes under other keys. Every
post is a new version of its key, never an overwrite, so concurrent writers cannot lose updates.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

EntryKind = Literal["output", "note", "delegation"]


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """One version of one key."""

    key: str
    text: str
    data: Any
    """The validated object of a structured output (a pydantic model), or None."""
    author: str
    """The agent role that posted it."""
    kind: EntryKind
    """output (a task's result), note (posted by an agent) or delegation (a coworker's answer)."""
    version: int
    """1 for the first post of the key, then 2, 3, ..."""
    created_at: float
    """Wall-clock time of the first version of the key."""
    updated_at: float
    """Wall-clock time of this version."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "text": self.text,
            "data": plain(self.data),
            "author": self.author,
            "kind": self.kind,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def render(self) -> str:
        """The entry as a prompt shows it: the text, or the data as JSON when there is data."""
        if self.data is None:
            return self.text
        return json.dumps(self.to_dict()["data"], ensure_ascii=False, indent=2)


def plain(data: Any) -> Any:
    """Structured data as JSON data: a pydantic model dumped, a map's list item by item."""
    if isinstance(data, list):
        return [plain(item) for item in data]
    return data.model_dump(mode="json") if hasattr(data, "model_dump") else data


class Board:
    """Versioned key -> entry store shared by the agents of one run. Safe across threads.

    Args:
        clock: returns wall-clock seconds; a parameter so tests can fix time.
        on_post: called with each new entry, after it is visible to readers.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        on_post: Callable[[BoardEntry], None] | None = None,
    ) -> None:
        self._versions: dict[str, list[BoardEntry]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._on_post = on_post

    def post(
        self, key: str, text: str, *, author: str, data: Any = None, kind: EntryKind = "output"
    ) -> BoardEntry:
        """Add a new version of ``key`` and return it."""
        with self._lock:  # the clock is read inside: a later version never has an earlier time
            now = self._clock()
            versions = self._versions.setdefault(key, [])
            created_at = versions[0].created_at if versions else now
            entry = BoardEntry(key, text, data, author, kind, len(versions) + 1, created_at, now)
            versions.append(entry)
        if self._on_post is not None:
            self._on_post(entry)
        return entry

    def restore(self, entries: Iterable[BoardEntry]) -> None:
        """Put back entries an earlier run posted (a resume), in order, without announcing them."""
        with self._lock:
            for entry in entries:
                self._versions.setdefault(entry.key, []).append(entry)

    def get(self, key: str) -> BoardEntry | None:
        """The latest version of ``key``, or None."""
        with self._lock:
            versions = self._versions.get(key)
            return versions[-1] if versions else None

    def __getitem__(self, key: str) -> BoardEntry:
        entry = self.get(key)
        if entry is None:
            raise KeyError(key)
        return entry

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._versions

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._versions)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._versions)

    def history(self, key: str) -> list[BoardEntry]:
        """Every version of ``key``, oldest first."""
        with self._lock:
            return list(self._versions.get(key, ()))

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every version of every key as plain JSON-serialisable data."""
        with self._lock:
            items = [(k, list(v)) for k, v in self._versions.items()]
        return {key: [entry.to_dict() for entry in versions] for key, versions in items}

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, list[dict[str, Any]]], **kwargs: Any) -> Board:
        """Rebuild a board from ``snapshot()``; structured data comes back as plain JSON values."""
        board = cls(**kwargs)
        for key, versions in snapshot.items():
            board._versions[key] = [BoardEntry(**entry) for entry in versions]
        return board
