"""Distinct ids seen by one traversal, kept across chunks and restarts.

Why a side file and not dlt state: a backfill of a large account sees millions of ids; dlt's
state travels with every load, so it must stay small. The file is append-only, written when a
chunk ends; ids of a chunk that never committed are simply fetched (and added) again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class IdTracker:
    """The set of ids one traversal has received, persisted as one id per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: set[str] = set()
        if path.exists():
            self.ids.update(line for line in path.read_text().splitlines() if line)

    def add(self, ids: Iterable[str]) -> None:
        new = [i for i in ids if i not in self.ids]
        if not new:
            return
        self.ids.update(new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write("\n".join(new) + "\n")

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.ids.clear()


@dataclass(frozen=True)
class Reconciliation:
    """A complete traversal compared with `meta.total` at its start."""

    expected: int
    distinct: int
    received: int
    # The traversal's `updated_since` (None: the whole list): `expected` counts only the records
    # updated since then, so an incremental traversal says nothing of the table's size.
    since: str | None = None

    @property
    def reappeared(self) -> int:
        """Records received more than once: they changed while the traversal ran."""
        return self.received - self.distinct

    @property
    def difference(self) -> int:
        """Distinct ids minus the total announced at the start (created mid-traversal if > 0)."""
        return self.distinct - self.expected

    def describe(self) -> str:
        text = f"{self.distinct} distinct of {self.expected} expected"
        if self.difference:
            text += f" ({self.difference:+d}"
            text += ": created during the sync)" if self.difference > 0 else ": missing)"
        if self.reappeared:
            text += f", {self.reappeared} reappeared after changing mid-sync"
        return text
