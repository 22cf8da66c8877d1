"""The run log in the warehouse (`_ciklek_sync_runs`) read back: freshness and the daily count.

Why the warehouse: on a runner that starts from an empty home directory (a CI job, a fresh
container) the local status and quota ledger are gone, but dlt restores the watermarks from the
destination and so can we restore what the run log says: when the last complete sync ran (for
`status --max-age`) and how many requests today's runs sent (so `daily_request_budget` holds).
A run killed with SIGKILL wrote no run row, but it recorded its requests ahead in
`_ciklek_request_ledger` (`connector/runs/request_ledger.py`): the count rebuilt here takes,
per run and UTC day, what a closed row used or what an open one reserved, and the run rows'
requests only for runs older than that table.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlt.destinations.exceptions import DatabaseUndefinedRelation

from connector.api.ledger import read_ledger, update_ledger, utc_today
from connector.catalogue import LEDGER_TABLE, RUNS_TABLE

COMPLETED = ("completed", "completed_with_rejects")


@dataclass(frozen=True)
class RunRecord:
    """One row of `_ciklek_sync_runs`, as much of it as freshness and budgets need."""

    started_at: dt.datetime
    outcome: str
    resources: tuple[str, ...]
    requests: int
    kind: str = "sync"  # rows written before run kinds existed were syncs or windows
    run_id: str = ""

    def is_complete_sync(self, resources: Iterable[str]) -> bool:
        """Completed (rejects allowed), every configured resource, and not a window."""
        return (
            self.outcome in COMPLETED
            and self.kind in ("sync", "refresh")
            and set(resources) <= set(self.resources)
        )


def last_complete_sync(runs: Iterable[RunRecord], resources: Sequence[str]) -> RunRecord | None:
    complete = [r for r in runs if r.is_complete_sync(resources)]
    return max(complete, key=lambda r: r.started_at, default=None)


# (run_id, UTC day, requests counted): one row of `_ciklek_request_ledger`
LedgerEntry = tuple[str, dt.date, int]


def requests_on(runs: Iterable[RunRecord], day: dt.date, ledger: Iterable[LedgerEntry] = ()) -> int:
    """Requests of `day` (UTC): what the request ledger counts for that day (killed runs
    included), and the requests of the runs that started that day and have no ledger row (runs
    from before the request ledger existed)."""
    entries = list(ledger)
    recorded = {run_id for run_id, _, _ in entries}
    legacy = sum(
        r.requests
        for r in runs
        if r.started_at.astimezone(dt.UTC).date() == day and r.run_id not in recorded
    )
    return legacy + sum(n for _, on, n in entries if on == day)


def _as_utc(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def record_from_row(row: Sequence[object], has_kind: bool) -> RunRecord | None:
    """(started_at, outcome, resources, requests[, kind]) → RunRecord; junk rows are skipped."""
    started = _as_utc(row[0])
    if started is None:
        return None
    resources = tuple(p for p in str(row[2] or "").split(",") if p)
    requests = row[3] if isinstance(row[3], int) else 0
    kind = str(row[4]) if has_kind and row[4] else "sync"
    at = 5 if has_kind else 4  # run_id, when the query asked for it
    run_id = str(row[at] or "") if len(row) > at else ""
    return RunRecord(started, str(row[1] or ""), resources, requests, kind, run_id)


def read_runs(pipeline: object, pipeline_name: str) -> list[RunRecord]:
    """The pipeline's rows of `_ciklek_sync_runs` in its destination ([] when there are none).

    `pipeline` is a dlt pipeline whose destination and dataset are set; no Ciklek request.
    """
    with pipeline.sql_client() as client:  # type: ignore[attr-defined]
        return _runs(client, pipeline_name)


def _runs(client: Any, pipeline_name: str) -> list[RunRecord]:
    table = client.make_qualified_table_name(RUNS_TABLE)
    try:
        with client.execute_query(f"SELECT * FROM {table} LIMIT 0") as cursor:
            has_kind = "kind" in {str(d[0]) for d in cursor.description or []}
    except DatabaseUndefinedRelation:
        return []
    select = "started_at, outcome, resources, requests" + (", kind" if has_kind else "")
    select += ", run_id"
    rows = client.execute_sql(f"SELECT {select} FROM {table} WHERE pipeline = %s", pipeline_name)
    records = (record_from_row(row, has_kind) for row in rows or [])
    return [r for r in records if r is not None]


def read_request_ledger(pipeline: object, pipeline_name: str) -> list[LedgerEntry]:
    """The pipeline's rows of `_ciklek_request_ledger` ([] when there are none): per run and
    UTC day, `used` of a closed row, `reserved` of an open one (a run killed mid-way)."""
    with pipeline.sql_client() as client:  # type: ignore[attr-defined]
        return _ledger_entries(client, pipeline_name)


def _ledger_entries(client: Any, pipeline_name: str) -> list[LedgerEntry]:
    table = client.make_qualified_table_name(LEDGER_TABLE)
    try:
        rows = client.execute_sql(
            f"SELECT run_id, day, reserved, used, closed FROM {table} WHERE pipeline = %s",
            pipeline_name,
        )
    except DatabaseUndefinedRelation:
        return []
    entries = []
    for run_id, day, reserved, used, closed in rows or []:
        counted = used if closed else reserved
        if isinstance(day, str):
            day = dt.date.fromisoformat(day[:10])
        if isinstance(day, dt.datetime):
            day = day.date()
        if isinstance(day, dt.date) and isinstance(counted, int):
            entries.append((str(run_id), day, counted))
    return entries


def write_ledger_row(pipeline: object, row: Mapping[str, object]) -> None:
    """One `_ciklek_request_ledger` row written straight into the existing table, in one
    statement (a dlt load costs a second or so on DuckDB; this, a few milliseconds): the first
    allowance of a run, before its first request. The run's next load replaces the row (merge
    on `run_id`, `day`)."""
    with pipeline.sql_client() as client, client.begin_transaction():  # type: ignore[attr-defined]
        _insert(client, LEDGER_TABLE, row)


def write_run_rows(
    pipeline: object, run_row: Mapping[str, object], ledger_row: Mapping[str, object] | None
) -> None:
    """The run's `_ciklek_sync_runs` row and its closed `_ciklek_request_ledger` row, straight
    into the existing tables in one transaction: what a dlt load of these two rows writes (the
    ledger row replaces the run's open row of that day, as the merge on `run_id`, `day` does),
    at a few milliseconds instead of half a second. Used only when nothing else waits for a
    load (no rejects, versions, schema changes or resource state; see runs/sync.py)."""
    with pipeline.sql_client() as client, client.begin_transaction():  # type: ignore[attr-defined]
        _insert(client, RUNS_TABLE, run_row)
        if ledger_row is not None:
            table = client.make_qualified_table_name(LEDGER_TABLE)
            run_id, day = (client.escape_column_name(c) for c in ("run_id", "day"))
            client.execute_sql(
                f"DELETE FROM {table} WHERE {run_id} = %s AND {day} = %s",
                ledger_row["run_id"],
                ledger_row["day"],
            )
            _insert(client, LEDGER_TABLE, ledger_row)


def _insert(client: Any, table_name: str, row: Mapping[str, object]) -> None:
    """One row into one of our tables; dlt's own columns get a load id of its form and a fresh
    row id (the columns are NOT NULL)."""
    columns = [*row, "_dlt_load_id", "_dlt_id"]
    values = [*row.values(), f"{time.time():.6f}", uuid.uuid4().hex[:14]]
    table = client.make_qualified_table_name(table_name)
    names = ", ".join(client.escape_column_name(c) for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    client.execute_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", *values)


def restore_ledger(pipeline: object, pipeline_name: str, ledger_path: Path, key: str) -> int:
    """On a fresh runner, rebuild today's request count of `pipeline_name` from the run log.

    Only when the local ledger has no entry for today (a kept ledger is more accurate: it also
    counts a killed run's requests); best-effort: a destination that cannot be read (first run,
    no dataset yet) leaves the ledger as it is. Returns the requests added.
    """
    today = utc_today()
    if pipeline_name in read_ledger(ledger_path).get(key, {}).get(today, {}):
        return 0
    try:  # one connection for both tables (each opening resolves the destination again)
        with pipeline.sql_client() as client:  # type: ignore[attr-defined]
            runs = _runs(client, pipeline_name)
            ledger = _ledger_entries(client, pipeline_name)
    except Exception:  # no dataset yet, an unreachable warehouse: the sync itself will say so
        return 0
    used = requests_on(runs, dt.date.fromisoformat(today), ledger)
    if used:
        update_ledger(ledger_path, key, today, pipeline_name, used)
    return used
