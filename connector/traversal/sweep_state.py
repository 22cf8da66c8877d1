"""A sweep's bookkeeping in the resource state: the sweep in progress, a completed one waiting to
be applied, the last one applied.

Pure (no dlt, no SQL): `runs/source.py` calls `on_chunk` when a chunk of a sweep traversal ends,
with the load id of that chunk; `runs/sweep.py` settles a completed sweep against the warehouse.
What "seen" means, and why marking waits for the commit, is told in `connector/runs/sweep.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from connector.timefmt import iso
from connector.traversal.state import ResourceState, Traversal, instant, start

MAX_QUARANTINED = 10_000  # ids kept in dlt state; a sweep quarantining more refuses to mark
JSON = dict[str, object]


@dataclass
class SweepRecord:
    """`ResourceState.sweeps`: the sweep in progress, a completed one not yet applied, the last
    one applied."""

    current: JSON | None = None  # id, threshold, started_at, quarantined, unkeyed
    pending: JSON | None = None  # current + completed_at, last_total, received, refused
    last: JSON | None = None  # completed_at, applied_at, marked, mode

    @classmethod
    def load(cls, raw: Mapping[str, object] | None) -> SweepRecord:
        raw = raw or {}

        def part(key: str) -> JSON | None:
            value = raw.get(key)
            return dict(value) if isinstance(value, dict) else None

        return cls(part("current"), part("pending"), part("last"))

    def dump(self) -> JSON:
        return {"current": self.current, "pending": self.pending, "last": self.last}


def on_chunk(
    state: ResourceState,
    trav: Traversal,
    rejects: Sequence[Mapping[str, object]],
    complete: bool,
    load_id: str,
    lookback_seconds: float = 0.0,
) -> bool:
    """A chunk of a sweep traversal ends: note its quarantined ids; keep a completed sweep as
    pending (marking happens once this chunk is committed). `load_id`: this chunk's load, the
    sweep's threshold when the chunk is its first. `complete`: the walk reached the end of the
    list; with a look-back, the re-read (`reread`) starts then, and the sweep completes when
    the re-read does. Returns whether the sweep completed."""
    record = SweepRecord.load(state.sweeps)
    current = record.current
    if current is None or current.get("id") != trav.id:
        current = {
            "id": trav.id, "threshold": load_id, "started_at": trav.started_at,
            "quarantined": [], "unkeyed": 0,
        }  # fmt: skip
        record.pending = None  # a new sweep replaces a result nobody applied in time
    known_ids = quarantined(current)
    known = set(known_ids)
    for reject in rejects:
        rid = reject.get("record_id")
        if rid is None:
            current["unkeyed"] = unkeyed(current) + 1
        elif str(rid) in known:
            continue
        elif len(known_ids) < MAX_QUARANTINED:
            known.add(str(rid))
            known_ids.append(str(rid))
        else:  # their rows would look unseen: settling refuses rather than mark them
            current["overflow"] = True
    current["quarantined"] = known_ids
    record.current = current
    if complete and reread(state, trav, current, lookback_seconds):
        complete = False
    if complete:
        listed = current.pop("listed", trav.last_total)
        walked = current.pop("listed_pages", 0)
        record.pending = {
            **current,
            "completed_at": iso(dt.datetime.now(dt.UTC)),
            "last_total": listed,
            "received": trav.received,
            "pages": _count(walked) + trav.pages,
            "reread_pages": trav.pages if "reread_since" in current else 0,
            "refused": None,
        }
        record.current = None
    state.sweeps = record.dump()
    return complete


def reread(state: ResourceState, trav: Traversal, current: JSON, lookback_seconds: float) -> bool:
    """The sweep walked the whole list: before it marks anything, read once more every record
    changed since it started, less `lookback_seconds` (`updated_since`), and merge them.

    Why: a change that reaches the API late (its `updated_at` already in the past) moves a record
    to a position of the list the sweep may have passed, out of the part still ahead of it: the
    sweep would never see it, and would mark a live record deleted. Every record changed while
    the sweep ran has an `updated_at` after its start less the look-back, so the re-read meets
    it. The re-read is the same traversal (same id, same threshold), walked like any other; the
    list's count the guard compares with stays the one of the whole walk (`listed`).
    Returns True when the re-read starts (False: none wanted, or this was it)."""
    if lookback_seconds <= 0 or trav.kind != "sweep" or trav.since is not None:
        return False
    started = instant(trav.started_at) or dt.datetime.now(dt.UTC)
    since = iso(started - dt.timedelta(seconds=lookback_seconds))
    again = start("sweep", since)
    again.id, again.started_at, again.fresh = trav.id, trav.started_at, False
    current.update(listed=trav.last_total, listed_pages=trav.pages, reread_since=since)
    state.sweep = again
    return True


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def quarantined(sweep: Mapping[str, object]) -> list[str]:
    """Ids the sweep fetched but quarantined (no row was written for them: they count as seen)."""
    value = sweep.get("quarantined")
    return [str(v) for v in value] if isinstance(value, list) else []


def unkeyed(sweep: Mapping[str, object]) -> int:
    """Records the sweep fetched without an id (quarantined: seen, but no row to name)."""
    value = sweep.get("unkeyed")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sweep_status(state: ResourceState) -> JSON:
    """The sweep part of a resource in `status.json`."""
    record, trav = SweepRecord.load(state.sweeps), state.sweep
    return {
        "sweep": None
        if trav is None
        else {
            "pages": trav.pages,
            "received": trav.received,
            "total": trav.total,
            "started_at": trav.started_at,
        },
        "sweep_pending": None
        if record.pending is None
        else {k: v for k, v in record.pending.items() if k != "quarantined"},
        "last_sweep": record.last,
    }
