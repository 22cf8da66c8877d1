"""One resource's records, kept ready to serve a page in microseconds.

Each record's JSON bytes are cached at write time (stdlib ``json`` keeps big integers exact), and
a sorted list of ``(updated_at_us, id)`` keys answers every list query with two bisects and a
slice. A page body is then a join of cached bytes: no per-request serialisation.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Position = tuple[int, str]


def dump(obj: Any) -> bytes:
    """Compact JSON bytes, the one serialisation every response uses."""
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(slots=True)
class Entry:
    """A stored record: its internal id, sort instant, object and cached JSON."""

    id: str
    us: int
    obj: dict[str, Any]
    body: bytes

    @property
    def position(self) -> Position:
        return (self.us, self.id)


@dataclass(slots=True)
class Page:
    """The slice a list query selected, plus what ``meta`` needs."""

    entries: list[Entry]
    total: int
    has_more: bool


class ResourceStore:
    """Records of one resource, indexed by id and by ``(updated_at, id)``.

    The internal id survives even when a deliberately bad record drops its ``id`` field, so a
    broken record is still addressable by the control API and still sorts deterministically.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: dict[str, Entry] = {}
        self.keys: list[Position] = []
        self.max_us = 0

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, items: Iterable[tuple[str, int, dict[str, Any]]]) -> None:
        """Bulk-insert generated records and sort the index once."""
        for rid, us, obj in items:
            self.entries[rid] = Entry(rid, us, obj, dump(obj))
            self.max_us = max(self.max_us, us)
        self.keys = sorted(e.position for e in self.entries.values())

    def get(self, rid: str) -> Entry | None:
        return self.entries.get(rid)

    def next_us(self, now_us: int) -> int:
        """An updated_at that is "now" yet strictly after every instant this store has seen."""
        return max(now_us, self.max_us + 1)

    def put(self, rid: str, us: int, obj: dict[str, Any]) -> Entry:
        """Insert or replace a record, moving it in the index to its new position."""
        old = self.entries.get(rid)
        if old is not None:
            self._unindex(old.position)
        entry = Entry(rid, us, obj, dump(obj))
        self.entries[rid] = entry
        if not self.keys or entry.position > self.keys[-1]:
            self.keys.append(entry.position)
        else:
            insort(self.keys, entry.position)
        self.max_us = max(self.max_us, us)
        return entry

    def delete(self, rid: str) -> bool:
        entry = self.entries.pop(rid, None)
        if entry is None:
            return False
        self._unindex(entry.position)
        return True

    def _unindex(self, position: Position) -> None:
        idx = bisect_left(self.keys, position)
        if idx < len(self.keys) and self.keys[idx] == position:
            del self.keys[idx]

    def page(self, since_us: int | None, after: Position | None, limit: int) -> Page:
        """Records with ``updated_at >= since`` strictly after ``after``, in key order."""
        keys = self.keys
        lo = 0 if since_us is None else bisect_left(keys, (since_us,))
        start = lo if after is None else max(lo, bisect_right(keys, after))
        end = start + limit
        entries = self.entries
        chosen = [entries[rid] for _, rid in keys[start:end]]
        return Page(chosen, len(keys) - lo, end < len(keys))
