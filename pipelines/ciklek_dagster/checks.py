"""The checks of each table: `sync_complete`, `no_rejects`, `reconciled`, and how each is
evaluated, from this run's sync or, in a run that materialises nothing (a check launched on its
own), from the warehouse and the last run's record, without a request to Ciklek.

What each compares is said in its result's description, and what it could not compare too:
an incremental traversal's `meta.total` counts only the records updated since its start, so it
says nothing of the table's size; a check launched on its own has no traversal at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    PartitionsDefinition,
)

from ciklek_dagster.facts import Metadata, quota_metadata
from ciklek_dagster.outcome import stop_description, stopped_by
from ciklek_dagster.tables import TABLES, AssetNames
from ciklek_dagster.warehouse import RunRow, TableStats
from connector.cli.tables import change_line
from connector.runs.result import SyncResult
from connector.timefmt import stamp
from connector.traversal.reconcile import Reconciliation
from connector.warehouse.run_log import COMPLETED

SYNC_COMPLETE, NO_REJECTS, RECONCILED = "sync_complete", "no_rejects", "reconciled"
SCHEMA_UNCHANGED = "schema_unchanged"

DESCRIPTIONS = {
    SYNC_COMPLETE: (
        "Passes when the last sync of this table went through every page. Fails (WARN) when it "
        "stopped early, saying which limit stopped it (the API's daily quota, the connector's "
        "own daily budget, a run budget) and when it resumes: what was loaded is in the table "
        "and the next run continues from the last committed chunk. On its own, evaluated from "
        "the run log `_ciklek_sync_runs` (the last run that included the table)."
    ),
    NO_REJECTS: (
        "Passes when the last sync rejected no record of this table (a record that breaks the "
        "data contract goes to `_ciklek_rejects`, the rest loads). WARN; ERROR with "
        "strict=True. On its own, counted in `_ciklek_rejects` during the last run."
    ),
    RECONCILED: (
        "Compares what can be compared: every id once in the table (rows = distinct ids), and, "
        "after a sync that completed a traversal, the distinct ids it received against the "
        "API's `meta.total` (the whole list after a full traversal, the records updated since "
        "the traversal's start after an incremental one). Says what it could not compare."
    ),
    SCHEMA_UNCHANGED: (
        "Passes when the last sync recorded no change in what the API sends for this table. "
        "Fails (WARN) listing each change `_ciklek_schema_changes` recorded: a new column, a "
        "field folded into `_ciklek_extra`, a documented field whose values no longer fit its "
        "type, or one missing from a whole page. On its own, read from that table for the last "
        "sync recorded in `_ciklek_sync_runs`."
    ),
}


def check_specs(names: AssetNames, partitions: PartitionsDefinition | None) -> list[AssetCheckSpec]:
    """`sync_complete` and `schema_unchanged` on every table; `no_rejects` and `reconciled` on
    the resources' own."""
    specs = []
    for table, resource in TABLES.items():
        checks = [SYNC_COMPLETE, SCHEMA_UNCHANGED]
        checks += [NO_REJECTS, RECONCILED] if table == resource else []
        specs += [
            AssetCheckSpec(
                name,
                asset=names.key(table),
                description=DESCRIPTIONS[name],
                partitions_def=partitions,
            )
            for name in checks
        ]
    return specs


def complete_from_run(key: AssetKey, table: str, result: SyncResult) -> AssetCheckResult:
    """This run's verdict on the table's resource: done, stopped (which limit, when it resumes),
    or skipped."""
    resource = TABLES[table]
    out = result.report.outcome(resource)
    if resource in result.skipped:
        return _complete(key, False, f"Not synced: {result.skipped[resource]}.", {})
    if out.done and out.error is None and out.stop is None:
        watermark = result.watermarks.get(resource) or "none yet"
        return _complete(key, True, f"Complete: every page read, up to {watermark}.", {})
    if out.stop is None:
        return _complete(key, False, f"Not complete: {out.error or 'the run ended early'}.", {})
    label, _ = stopped_by(out.stop)
    metadata: Metadata = {"stopped_by": label, **quota_metadata(result)}
    if result.resume_at is not None:
        metadata["resume_at"] = MetadataValue.timestamp(result.resume_at)
    return _complete(key, False, stop_description(out.stop, result.resume_at), metadata)


def complete_from_record(key: AssetKey, table: str, runs: Sequence[RunRow]) -> AssetCheckResult:
    """The last run that included the table, as `_ciklek_sync_runs` recorded it."""
    last = last_sync(runs, TABLES[table])
    if last is None:
        return _complete(key, False, "No sync of this table recorded in _ciklek_sync_runs.", {})
    when = f"The last sync ({last.kind}, started {stamp(last.started_at)}, run {last.run_id})"
    metadata: Metadata = {"ciklek_run_id": last.run_id, "outcome": last.outcome}
    if last.outcome in COMPLETED:
        return _complete(key, True, f"{when} completed.", metadata)
    return _complete(key, False, f"{when} ended {last.outcome}: {last.message}", metadata)


def last_sync(runs: Sequence[RunRow], resource: str) -> RunRow | None:
    """The newest sync (not a sweep or a window) that included `resource`."""
    return next((r for r in runs if r.covers(resource) and r.kind in ("sync", "refresh")), None)


def _complete(
    key: AssetKey, passed: bool, description: str, metadata: Metadata
) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key,
        check_name=SYNC_COMPLETE,
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def no_rejects(key: AssetKey, rejects: int, scope: str, *, strict: bool) -> AssetCheckResult:
    """`scope`: which run's rejects were counted (this run, or the last one recorded)."""
    text = f"{rejects:,} record(s) rejected by {scope}" + (
        ": see `_ciklek_rejects`." if rejects else "."
    )
    return AssetCheckResult(
        asset_key=key,
        check_name=NO_REJECTS,
        passed=rejects == 0,
        severity=AssetCheckSeverity.ERROR if strict else AssetCheckSeverity.WARN,
        description=text[0].upper() + text[1:],
        metadata={"rejects": rejects},
    )


@dataclass(frozen=True)
class Comparison:
    passed: bool
    said: str
    metadata: Metadata


def reconciled(
    key: AssetKey, stats: TableStats | None, rec: Reconciliation | None, why_not: str
) -> AssetCheckResult:
    """The table's ids unique, and the traversal's distinct ids against `meta.total` when there
    was one (`why_not` says why not otherwise)."""
    parts = [_unique(stats), _against_api(rec, why_not)]
    return AssetCheckResult(
        asset_key=key,
        check_name=RECONCILED,
        passed=all(p.passed for p in parts),
        severity=AssetCheckSeverity.WARN,
        description=" ".join(p.said for p in parts),
        metadata={k: v for p in parts for k, v in p.metadata.items()},
    )


def _unique(stats: TableStats | None) -> Comparison:
    if stats is None:
        return Comparison(True, "The table does not exist yet: nothing to compare in it.", {})
    said = f"Table: {stats.rows:,} rows, {stats.distinct_ids:,} distinct ids"
    metadata: Metadata = {
        "table_rows": stats.rows,
        "table_distinct_ids": stats.distinct_ids,
    }
    if stats.deleted is not None:
        metadata["table_rows_marked_deleted"] = stats.deleted
        said += f" ({stats.deleted:,} marked deleted upstream)"
    same = stats.rows == stats.distinct_ids
    return Comparison(same, said + (": every id once." if same else ": ids repeat."), metadata)


def _against_api(rec: Reconciliation | None, why_not: str) -> Comparison:
    if rec is None:
        return Comparison(True, f"Not compared with the API's meta.total: {why_not}.", {})
    scope = "the whole list" if rec.since is None else f"records updated since {rec.since}"
    metadata: Metadata = {
        "api_total": rec.expected,
        "distinct_ids_received": rec.distinct,
        "compared": scope,
    }
    said = f"Traversal of {scope}: {rec.describe()}."
    return Comparison(rec.difference >= 0, said, metadata)


def schema_unchanged(
    key: AssetKey, changes: Sequence[Mapping[str, object]], scope: str
) -> AssetCheckResult:
    """`changes`: the table's rows of `_ciklek_schema_changes` recorded by `scope` (a run)."""
    if not changes:
        said = f"No schema change recorded by {scope}."
    else:
        listed = "; ".join(change_line(c).split(": ", 1)[1] for c in changes)
        said = f"{len(changes)} schema change(s) recorded by {scope}: {listed}."
    return AssetCheckResult(
        asset_key=key,
        check_name=SCHEMA_UNCHANGED,
        passed=not changes,
        severity=AssetCheckSeverity.WARN,
        description=said,
        metadata={
            "schema_changes": len(changes),
            **({"changes": [f"{c['column']}: {c['change']}" for c in changes]} if changes else {}),
        },
    )
