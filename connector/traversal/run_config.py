"""What one run drives the resources with (`RunConfig`, immutable), and the types it speaks in.

Why immutable: every resource, worker and range of the run reads it at once; nothing may change
a run's inputs half-way (what resources report back lives in `RunReport`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from connector.config.redaction import HashKey

Window = tuple[dt.datetime | None, dt.datetime | None]  # a --since/--until window (UTC)
Row = dict[str, object]  # one row for a table of ours, or one JSON object of state


@dataclass(frozen=True)
class RunConfig:
    """How this run drives the resources.

    Without chunk limits a resource traverses to the end in one extract (plain dlt use, e.g.
    Dagster); `ciklek sync` sets `chunk_pages` / `chunk_seconds` so each load commits a bounded
    amount of work.
    """

    page_size: int = 100
    chunk_pages: int | None = None  # pages per load, all resources together
    chunk_seconds: float | None = None
    lookback_seconds: float = 0.0
    window: Window | None = None
    full_refresh: bool = False  # a traversal started now is a reload (kind "refresh")
    # `--drop-first`: the reload writes into the live tables dlt dropped at its start (where no
    # safe swap exists); else into shadow tables swapped in when it completes.
    reload_in_place: bool = False
    tracker_dir: Path | None = None
    # `ciklek sync` loads rejects through their own resource, so the table belongs to no data
    # resource: dlt's refresh drops the tables a resource owns, and a variant table is owned by
    # whichever resource happened to create it first. Plain dlt use (Dagster) emits them inline.
    rejects_inline: bool = True
    sweep: bool = False  # `ciklek sweep`: every resource walks its sweep traversal
    # Resources walked at once in a load (`max_concurrency`; 1: one after the other, in order).
    max_concurrency: int = 1
    # `hash_fields` (the catalogue's `hashed`): replaced by their HMAC as each page is taken.
    hash_key: HashKey | None = None
    # Resources whose every fetched version is kept in `<name>_versions` (`history`): their walks
    # keep every version of a chunk, not only the newest per id.
    history: frozenset[str] = frozenset()
