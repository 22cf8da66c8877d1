"""`status.json`: what `ciklek status` shows while a run goes on and after it.

Why a file: `ciklek status` must work with no network and while a sync runs, and DuckDB allows
one writer, so status cannot open the warehouse. The file is replaced atomically (a reader never
sees half of it) in the pipeline's private directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dlt

from connector.config.settings import Settings
from connector.config.statedir import check_dir, replace_file
from connector.runs.freshness import complete_entry
from connector.runs.lock import make_pipeline_dir, pipeline_dir
from connector.runs.options import SyncOptions
from connector.timefmt import iso
from connector.traversal.run_config import Row
from connector.traversal.run_report import RunReport
from connector.traversal.state import ResourceState, states_in
from connector.traversal.sweep_state import sweep_status


def committed_states(pipeline: dlt.Pipeline, names: list[str]) -> dict[str, ResourceState]:
    """The typed resource states of the pipeline's last committed load ({} when unreadable)."""
    try:
        return states_in(pipeline.state, names)
    except Exception:  # a pipeline without state yet, or state dlt cannot read back
        return {}


def status_path(state_dir: Path, pipeline: str) -> Path:
    return pipeline_dir(state_dir, pipeline) / "status.json"


def write_status(state_dir: Path, pipeline: str, status: Mapping[str, object]) -> None:
    """Atomically replace the status file (a reader never sees half a file)."""
    path = make_pipeline_dir(state_dir, pipeline) / "status.json"
    replace_file(path, json.dumps(status, indent=1, sort_keys=True, default=str))


def read_status(state_dir: Path, pipeline: str) -> dict[str, Any] | None:
    """The last status written, or None; an unsafe state dir is refused (ConfigError)."""
    path = status_path(state_dir, pipeline)
    if not check_dir(state_dir):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # missing, or a symlink planted in its place
        return None
    try:
        with os.fdopen(fd) as handle:
            data = json.load(handle)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class StatusWriter:
    """`status.json`: what `ciklek status` shows while a run goes on and after it."""

    def __init__(self, options: SyncOptions, settings: Settings, report: RunReport) -> None:
        self.options, self.settings, self.report = options, settings, report
        self.started = dt.datetime.now(dt.UTC)
        previous = read_status(settings.state_dir, options.pipeline) or {}
        self.last_complete = previous.get("last_complete_sync")  # for `status --max-age`
        self.earlier_changes = _recent(previous.get("schema_changes"))

    def write(self, pipeline: dlt.Pipeline, *, running: bool, last_run: Row | None = None) -> None:
        states = committed_states(pipeline, list(self.settings.catalogue))
        if last_run is None:  # while running (or after a crash): keep showing the previous run
            previous = read_status(self.settings.state_dir, self.options.pipeline) or {}
            last_run = previous.get("last_run")
        doc = {
            "pipeline": self.options.pipeline,
            "dataset": self.options.dataset,
            "key_fingerprint": self.settings.api_key.fingerprint if self.settings.api_key else None,
            "daily_request_budget": self.settings.daily_request_budget,
            "running": running,
            "run_started_at": iso(self.started),
            "updated_at": iso(dt.datetime.now(dt.UTC)),
            "resources": {name: self._resource(name, st) for name, st in states.items()},
            "last_run": last_run,
            "last_complete_sync": self._last_complete(last_run),
            "schema_changes": _recent(
                [*self.earlier_changes, *(dict(r) for r in self.report.recorded_changes)]
            ),
        }
        write_status(self.settings.state_dir, self.options.pipeline, doc)

    def _last_complete(self, last_run: Row | None) -> object:
        if last_run is not None:
            self.last_complete = complete_entry(last_run) or self.last_complete
        return self.last_complete

    def _resource(self, name: str, st: ResourceState) -> Row:
        trav, outcome = st.traversal, self.report.outcomes.get(name)
        return {
            "watermark": st.watermark,
            "rows_loaded": st.rows_loaded,
            "traversal": None
            if trav is None
            else {
                **{
                    k: getattr(trav, k)
                    for k in ("kind", "since", "pages", "received", "total", "started_at")
                },
                "in_place": trav.in_place,
                "ranges": [
                    {"since": r.since, "until": r.until, "pages": r.pages, "parked": r.parked}
                    for r in trav.ranges
                ],
            },
            "windows_in_progress": [
                {"since": w.since, "until": w.until, "pages": w.pages} for w in st.windows.values()
            ],
            "this_run_pages": outcome.pages if outcome else 0,
            "swap_pending": st.swap,
            **sweep_status(st),
        }


CHANGES_KEPT = dt.timedelta(days=7)


def _recent(changes: object) -> list[dict[str, object]]:
    """Schema changes detected in the last 7 days (what `ciklek status` lists), oldest first."""
    if not isinstance(changes, list):
        return []
    cutoff = dt.datetime.now(dt.UTC) - CHANGES_KEPT
    kept = []
    for change in changes:
        if not isinstance(change, dict):
            continue
        at = change.get("detected_at")
        when = at if isinstance(at, dt.datetime) else _parse(at)
        if when is not None and when >= cutoff:
            kept.append({**change, "detected_at": iso(when)})
    return kept


def _parse(value: object) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
