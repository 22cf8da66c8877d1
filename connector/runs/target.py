"""Where a run's data went and what kind of run it was, for the summary and `status`.

Why: a sync from another directory silently writes a second DuckDB file, and a window or a full
refresh looks like any other run unless it says so. The summary names the destination, the
dataset, the DuckDB file as an absolute path and the run's kind; `status` names a spent server
quota and when it resets.
"""

from __future__ import annotations

from pathlib import Path

from connector.config.settings import load_settings
from connector.errors import QuotaExhausted
from connector.runs.options import SyncOptions, run_kind
from connector.runs.result import SyncResult
from connector.runs.status_file import read_status
from connector.timefmt import now, stamp
from connector.warehouse.destinations import (
    DEFAULT_DUCKDB_FILE,
    configured_duckdb_path,
    duckdb_file,
)


def duckdb_path(explicit: str | None) -> Path | None:
    """The DuckDB file a run with `--duckdb-file explicit` writes (absolute), as
    `resolve_destination` chooses it: the flag, else dlt's setting, else the default file."""
    if explicit:
        return Path(explicit).absolute()
    configured = configured_duckdb_path()
    if configured:
        path = duckdb_file(configured)
        return None if path is None else path.absolute()
    return Path.cwd() / DEFAULT_DUCKDB_FILE


def describe_target(result: SyncResult, options: SyncOptions) -> None:
    """Where this run writes and what kind of run it is, on the result (for the summary)."""
    result.destination = (options.destination or "duckdb").strip()
    result.dataset = options.dataset
    result.kind = run_kind(options)
    if result.destination == "duckdb":
        path = duckdb_path(options.duckdb_file)
        result.duckdb_path = None if path is None else str(path)


def quota_spent(result: SyncResult) -> bool:
    """Did the server say its daily quota for the key is spent (not our own budget)?"""
    return any(isinstance(stop, QuotaExhausted) for stop in result.report.stops())


def quota_facts(result: SyncResult) -> dict[str, object]:
    """What `status` needs to say after the run: a spent quota and its reset, the target."""
    return {
        "quota_spent": quota_spent(result),
        "resume_at": stamp(result.resume_at) if result.resume_at else None,
        "kind": result.kind,
        "destination": result.destination,
        "duckdb_path": result.duckdb_path,
    }


def target_line(result: SyncResult) -> str:
    """`run: sync into duckdb /abs/file.duckdb, dataset ciklek`."""
    where = result.destination + (f" {result.duckdb_path}" if result.duckdb_path else "")
    detail = {"refresh": " (full refresh)", "window": " (a --since/--until window)"}
    line = f"run: {result.kind}{detail.get(result.kind, '')} into {where}, dataset {result.dataset}"
    if result.dropped:
        line += f"; full refresh dropped and reloaded: {', '.join(result.dropped)}"
    if result.swapped:
        line += f"; reload swapped in: {', '.join(result.swapped)}"
    # A cron log holds many summaries: which run, and when it ended.
    return line + f"; run_id {result.run_id}, ended {now()}"


def summary_fields(result: SyncResult) -> dict[str, object]:
    """The summary as one event's fields (`--log-format json`)."""
    outcomes = result.report.outcomes
    return {
        "exit_code": result.exit_code,
        "kind": result.kind,
        "destination": result.destination,
        "dataset": result.dataset,
        "duckdb_path": result.duckdb_path,
        "dropped": result.dropped,
        "swapped": result.swapped,
        "rows": {n: o.rows for n, o in outcomes.items()},
        "line_items": sum(o.child_rows for o in outcomes.values()),
        "rejects": sum(o.rejects for o in outcomes.values()),
        "pages": sum(o.pages for o in outcomes.values()),
        "requests": result.log.requests,
        "rate_limited": result.log.rate_limited,
        "waited_seconds": round(result.log.waited_seconds, 1),
        "used_today": result.quota.used_today,
        "left_today": result.quota.left_today,
        "quota_spent": quota_spent(result),
        "resume_at": stamp(result.resume_at) if result.resume_at else None,
        "elapsed_seconds": round(result.elapsed, 1),
        "skipped": result.skipped,
        "schema_changes": result.report.recorded_changes,
        "messages": list(dict.fromkeys(result.messages)),
    }


def query_target(pipeline: str, explicit: str | None) -> tuple[Path, str]:
    """The file `ciklek query` reads, and the dataset to put on the search path.

    `--duckdb-file` wins; else the read copy (`duckdb_read_copy`), so an analyst never holds a
    lock on the file a scheduled sync writes; else the file the pipeline's last run wrote; else
    the file a sync from here would write.
    """
    settings = load_settings()
    doc = read_status(settings.state_dir, pipeline) or {}
    dataset = str(doc.get("dataset") or "ciklek")
    if explicit:
        return Path(explicit).absolute(), dataset
    if settings.duckdb_read_copy is not None:
        return settings.duckdb_read_copy, dataset
    last = doc.get("last_run") or {}
    written = last.get("duckdb_path") if isinstance(last, dict) else None
    if isinstance(written, str) and written:
        return Path(written), dataset
    return duckdb_path(None) or Path.cwd() / DEFAULT_DUCKDB_FILE, dataset
