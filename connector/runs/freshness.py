"""`ciklek status --max-age`: is the pipeline's data fresh enough, for an alert (exit 5)?

Why the last *complete* sync, timed from its start: a run that stopped early (quota, signal) or
a `--since/--until` window leaves some records older than its end, so only a run that went
through every configured resource says "the data is as fresh as when I started". The local
status doc remembers that run; a fresh runner without it reads the run log in the warehouse.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dlt

from connector.errors import EXIT_OK, EXIT_STALE, ConfigError, DestinationBusy, explain
from connector.warehouse.destinations import (
    DEFAULT_DUCKDB_FILE,
    configured_duckdb_path,
    duckdb_file,
    resolve_destination,
)
from connector.warehouse.run_log import RunRecord, last_complete_sync, read_runs, record_from_row

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> dt.timedelta:
    """`90s`, `30m`, `6h`, `2d` → a timedelta; anything else is a bad flag (exit 2)."""
    match = _AGE.match(text or "")
    if match is None or float(match[1]) <= 0:
        raise ConfigError(f"--max-age {text!r}: use a positive number and a unit: 90s, 30m, 6h, 2d")
    return dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def complete_entry(run_row: Mapping[str, object]) -> dict[str, object] | None:
    """What the status doc keeps of a run row that was a complete sync (else None)."""
    row = [run_row.get(k) for k in ("started_at", "outcome", "resources", "requests", "kind")]
    record = record_from_row(row, has_kind=True)
    if record is None or not record.is_complete_sync(record.resources):
        return None
    return {"started_at": record.started_at.isoformat(), "resources": list(record.resources)}


def local_last_complete(doc: Mapping[str, object] | None) -> RunRecord | None:
    """The last complete sync the local status doc remembers."""
    entry = doc.get("last_complete_sync") if doc else None
    if not isinstance(entry, Mapping):
        return None
    resources = entry.get("resources")
    row = [
        entry.get("started_at"),
        "completed",
        ",".join(map(str, resources)) if isinstance(resources, list) else "",
        0,
        "sync",
    ]
    return record_from_row(row, has_kind=True)


def remote_runs(destination: str, dataset: str, pipeline_name: str) -> list[RunRecord]:
    """`_ciklek_sync_runs` read from the warehouse; no Ciklek request, no local state touched.

    A DuckDB file another process holds is reported (DestinationBusy), never waited for.
    """
    if destination == "duckdb" and not _duckdb_exists():
        return []  # nothing synced here; opening the file would create an empty one
    reference = resolve_destination(destination, dataset)
    with tempfile.TemporaryDirectory(prefix="ciklek-status-") as scratch:
        pipeline = dlt.pipeline(
            pipeline_name=pipeline_name,
            destination=reference,
            dataset_name=dataset,
            pipelines_dir=scratch,
        )
        try:
            return read_runs(pipeline, pipeline_name)
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise DestinationBusy(
                    f"the {destination} file is locked by another process (a sync running?); "
                    "try again when it has finished"
                ) from None
            raise


def _duckdb_exists() -> bool:
    configured = configured_duckdb_path()
    path = duckdb_file(configured) if configured else Path.cwd() / DEFAULT_DUCKDB_FILE
    return path is None or path.exists()  # None: in memory or MotherDuck, ask dlt


@dataclass(frozen=True)
class Freshness:
    fresh: bool
    message: str


def judge(
    last: RunRecord | None,
    resources: Sequence[str],
    max_age: dt.timedelta,
    now: dt.datetime | None = None,
) -> Freshness:
    """Fresh when the last complete sync of every configured resource started within max_age."""
    if last is None or not last.is_complete_sync(resources):
        return Freshness(False, f"no complete sync of {', '.join(resources)} recorded: stale")
    age = (now or dt.datetime.now(dt.UTC)) - last.started_at
    text = f"last complete sync started {_age_text(age)} ago ({last.started_at:%Y-%m-%dT%H:%MZ})"
    if age > max_age:
        return Freshness(False, f"{text}: older than {_age_text(max_age)}, stale")
    return Freshness(True, f"{text}: fresh (max age {_age_text(max_age)})")


def pick_last(runs: Sequence[RunRecord], resources: Sequence[str]) -> RunRecord | None:
    return last_complete_sync(runs, resources)


def _age_text(age: dt.timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def status_max_age(
    *,
    doc: Mapping[str, object] | None,
    resources: Sequence[str],
    pipeline_name: str,
    max_age_text: str,
    destination: str | None,
    dataset: str | None,
) -> tuple[int, str]:
    """`status --max-age`: (exit code, the line to print). 5 when stale, 0 when fresh, 75 when
    the warehouse could not be read without waiting."""
    max_age = parse_age(max_age_text)
    last = local_last_complete(doc)
    source = "local status"
    if last is None and (destination or dataset):
        try:
            runs = remote_runs(destination or "duckdb", dataset or "ciklek", pipeline_name)
        except DestinationBusy as exc:
            return explain(exc).code, f"{pipeline_name}: could not read the run log: {exc}"
        last, source = pick_last(runs, resources), "the run log in the warehouse"
    verdict = judge(last, resources, max_age)
    code = EXIT_OK if verdict.fresh else EXIT_STALE
    return code, f"{pipeline_name}: {verdict.message} (from {source})"
