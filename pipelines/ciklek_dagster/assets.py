"""The multi-asset: the four tables, materialised by one `run_sync`, with their checks.

How a run ends, and why (docs/scheduling.md, "What Dagster sees"):

- bad config, refused key, a 403 on a selected table, a bug, a signal, a destination that needs
  a person → `Failure(allow_retries=False)` with the one-line message: retrying cannot help.
- a stop with progress kept that clears within `retry_cap_seconds` (a per-minute limit, the API
  unavailable, another run holding the lock: `retry_seconds`) → a retry whose cause is logged
  and carried by the retry event; it continues from the last committed chunk.
- a stop that clears later (the daily quota, at 00:00 UTC) → the tables materialise what was
  loaded with `complete: false`, and `sync_complete` fails (WARN) naming the limit and when it
  resumes: a worker is not held for hours, and nobody mistakes a partial sync for a full one.

Whatever the ending, rows a run loaded are recorded in a materialisation. A selection of checks
only (no table) syncs nothing: the checks are evaluated from the warehouse and the run log.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at runtime.
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetExecutionContext,
    AssetMaterialization,
    AssetObservation,
    AssetsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    PartitionsDefinition,
    PreviewWarning,
    multi_asset,
)

from ciklek_dagster.checks import (
    NO_REJECTS,
    RECONCILED,
    SCHEMA_UNCHANGED,
    SYNC_COMPLETE,
    check_specs,
    complete_from_record,
    complete_from_run,
    last_sync,
    no_rejects,
    reconciled,
    schema_unchanged,
)
from ciklek_dagster.config import CiklekConfig, Target
from ciklek_dagster.docs_tables import TablesDoc, read_tables_doc
from ciklek_dagster.facts import Metadata, endpoint_label, run_metadata, summary_line
from ciklek_dagster.outcome import judge, op_ending, raise_for_exception, stopped_by
from ciklek_dagster.runner import account_of, run, settings_for
from ciklek_dagster.tables import TABLES, AssetNames, CiklekTranslator, build_names
from ciklek_dagster.warehouse import RunRow, TableStats, Warehouse
from connector import keep_exit_code
from connector.errors import DestinationBusy, explain
from connector.runs.result import SyncResult

Event = MaterializeResult[None] | AssetCheckResult | AssetObservation | AssetMaterialization
NOT_RUN = (
    "a check launched on its own sends no request; the API's total is compared when a sync "
    "completes a traversal"
)
NO_TRAVERSAL = "this run completed no traversal from the list's beginning"


@dataclass(frozen=True)
class CiklekAssets:
    """The multi-asset and what the rest of the definitions need to know of it."""

    assets: AssetsDefinition
    names: AssetNames
    config: CiklekConfig
    partitions: PartitionsDefinition | None
    docs: TablesDoc


def build_assets(
    config: CiklekConfig,
    partitions: PartitionsDefinition | None,
    *,
    translator: CiklekTranslator | None = None,
    freshness: FreshnessPolicy | None = None,
) -> CiklekAssets:
    """The multi-asset over the four tables (subsettable), in pool `ciklek_<pipeline>`."""
    docs = read_tables_doc()
    kinds = {"dlt", (config.destination or "duckdb").split(".")[-1]}
    names = build_names(
        translator or CiklekTranslator(),
        docs,
        kinds=kinds,
        partitions=partitions,
        freshness=freshness,
    )
    with warnings.catch_warnings():  # partitioned checks are a preview; they name their partition
        warnings.simplefilter("ignore", PreviewWarning)
        specs = check_specs(names, partitions)

    @multi_asset(
        name="ciklek",
        specs=list(names.specs.values()),
        check_specs=specs,
        can_subset=True,
        pool=config.pool,
    )
    def ciklek_assets(context: AssetExecutionContext) -> Iterator[Event]:
        yield from materialise(context, bundle)

    bundle = CiklekAssets(ciklek_assets, names, config, partitions, docs)
    return bundle


def materialise(context: AssetExecutionContext, bundle: CiklekAssets) -> Iterator[Event]:
    """One sync for the selected tables and their checks; or, with no table selected, the
    selected checks from the warehouse and the last run's record (no request to Ciklek)."""
    account = account_of(context, bundle.partitions)
    target = bundle.config.target(account)
    keys = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
    tables = [bundle.names.table(k) for k in keys]
    checks = set(context.selected_asset_check_keys)
    if not tables:
        yield from checks_only(context, bundle, target, checks)
        return
    # From the run's decision until its events are built, a SIGTERM/SIGINT (a run worker told
    # to stop) no longer turns the outcome into another: they are built first, then yielded
    # (Dagster installs its own interrupt handler around each event it takes in).
    with keep_exit_code():
        events, ending = _synced(context, bundle, account, target, tables, checks)
    yield from events
    if ending is not None:
        raise ending


def _synced(
    context: AssetExecutionContext,
    bundle: CiklekAssets,
    account: str | None,
    target: Target,
    tables: list[str],
    checks: set[AssetCheckKey],
) -> tuple[list[Event], Exception | None]:
    """One sync of the selected tables, and its events (materialisations, checks) and ending (a
    retry or a failure to raise once they are out; None: success)."""
    named = len(tables) < len(TABLES)
    resources = sorted({TABLES[t] for t in tables}) if named else None
    result = run(context.log, bundle.config, target, resources)
    # Yielded, not logged: an op's logged events are lost when it then fails or retries.
    events: list[Event] = [
        AssetObservation(bundle.names.source.key, metadata=run_metadata(result), partition=account)
    ]
    context.log.info(summary_line(result))
    verdict = judge(result, bundle.config)
    warehouse = Warehouse(target, result.settings.state_dir)
    report = Report(bundle, target, result, warehouse, context.log.warning)
    synced = [t for t in tables if report.synced(t)]
    # A table loaded with a selected one (orders with their line items) is recorded too.
    events += report.loaded_unselected(tables)
    if verdict.kind in ("retry", "fail"):  # record what was loaded, then retry or fail
        events += report.results([t for t in synced if report.rows_loaded(t)], set())
        return events, op_ending(verdict, result, context.log.warning, bundle.config)
    events += report.results(synced, checks)
    done = {bundle.names.key(t) for t in synced}
    try:
        events += report.checks_elsewhere({c for c in checks if c.asset_key not in done})
    except DestinationBusy as exc:
        try:
            raise_for_exception(exc, context.log.warning, bundle.config)
        except Exception as ending:
            return events, ending
    return events, None


def checks_only(
    context: AssetExecutionContext,
    bundle: CiklekAssets,
    target: Target,
    checks: set[AssetCheckKey],
) -> Iterator[AssetCheckResult]:
    """Checks without a sync: the warehouse and the run log; the warehouse held by another
    process is a retry, with its reason."""
    try:
        warehouse = Warehouse(target, settings_for(target, key=False).state_dir)
        tables = sorted({bundle.names.table(c.asset_key) for c in checks})
        stats, runs = warehouse.stats(tables), warehouse.runs()
        found = [
            from_record(c, bundle, warehouse, stats, runs)
            for c in sorted(checks, key=lambda c: (c.asset_key.to_user_string(), c.name))
        ]
    except Exception as exc:
        raise_for_exception(exc, context.log.warning, bundle.config)
    context.log.info(f"ciklek: {len(found)} check(s) evaluated from the warehouse, no request sent")
    yield from found


def from_record(
    check: AssetCheckKey,
    bundle: CiklekAssets,
    warehouse: Warehouse,
    stats: dict[str, TableStats],
    runs: list[RunRow],
) -> AssetCheckResult:
    """One check from what is recorded: the run log, `_ciklek_rejects`, the table."""
    table = bundle.names.table(check.asset_key)
    if check.name == SYNC_COMPLETE:
        return complete_from_record(check.asset_key, table, runs)
    if check.name == NO_REJECTS:
        last = last_sync(runs, TABLES[table])
        count = warehouse.rejects(TABLES[table], last) if last else 0
        scope = f"the last sync (run {last.run_id})" if last else "no sync recorded yet"
        return no_rejects(check.asset_key, count, scope, strict=bundle.config.strict)
    if check.name == SCHEMA_UNCHANGED:
        last = last_sync(runs, TABLES[table])
        changes = warehouse.schema_changes(table, last) if last else []
        scope = f"the last sync (run {last.run_id})" if last else "no sync recorded yet"
        return schema_unchanged(check.asset_key, changes, scope)
    return reconciled(check.asset_key, stats.get(table), None, NOT_RUN)


class Report:
    """One finished run, table by table: the materialisations and the checks."""

    def __init__(
        self,
        bundle: CiklekAssets,
        target: Target,
        result: SyncResult,
        warehouse: Warehouse,
        warn: Callable[[str], None],
    ) -> None:
        self.bundle, self.target, self.result, self.warehouse = bundle, target, result, warehouse
        self.warn = warn
        self._stats: dict[str, TableStats] | None = None

    def synced(self, table: str) -> bool:
        resource = TABLES[table]
        return resource in self.result.settings.resources and resource not in self.result.skipped

    def rows_loaded(self, table: str) -> int:
        out = self.result.report.outcome(TABLES[table])
        return out.child_rows if TABLES[table] != table else out.rows

    def stats(self) -> dict[str, TableStats]:
        """The tables after the run (once); a warehouse another process grabbed meanwhile is
        told, and the row counts left out."""
        if self._stats is None:
            try:
                self._stats = self.warehouse.stats(TABLES)
            except Exception as exc:  # the data is in; the counts are secondary
                self._stats = {}
                self.warn(f"ciklek: row counts left out: {explain(exc).line}")
        return self._stats

    def results(
        self, tables: Iterable[str], checks: set[AssetCheckKey]
    ) -> Iterator[MaterializeResult[None]]:
        for table in tables:
            key = self.bundle.names.key(table)
            wanted = [c for c in checks if c.asset_key == key]
            yield MaterializeResult(
                asset_key=key,
                metadata=self.metadata(table),
                check_results=[self.check(c, table) for c in wanted],
            )

    def loaded_unselected(self, selected: Sequence[str]) -> Iterator[AssetMaterialization]:
        """Tables not selected whose rows this run loaded anyway (a resource fills both
        `orders` and `order_line_items`): a materialisation each, without checks."""
        for table in TABLES:
            if table not in selected and self.synced(table) and self.rows_loaded(table):
                yield AssetMaterialization(
                    asset_key=self.bundle.names.key(table),
                    metadata=self.metadata(table),
                    partition=self.target.account,
                )

    def metadata(self, table: str) -> Metadata:
        """Table metadata: rows loaded and in the table, its name and columns, how far it got."""
        resource = TABLES[table]
        out = self.result.report.outcome(resource)
        complete = out.done and out.error is None and out.stop is None
        metadata: Metadata = {
            "rows_loaded": self.rows_loaded(table),
            "dagster/table_name": self.target.table_name(table),
            "watermark": self.result.watermarks.get(resource) or "",
            "complete": complete,
            "ciklek_run_id": self.result.run_id,
        }
        stats = self.stats().get(table)
        if stats is not None:
            metadata["dagster/row_count"] = stats.rows
            if self.target.account is not None:
                metadata["dagster/partition_row_count"] = stats.rows
        schema = self.warehouse.column_schema(table, self.bundle.docs)
        if schema is not None:
            metadata["dagster/column_schema"] = schema
        if table == resource:
            endpoint = "/" + self.result.settings.catalogue[resource].path.strip("/")
            metadata["rejects"] = out.rejects
            metadata["endpoint"] = endpoint_label(self.result, endpoint)
            metadata["endpoint_requests"] = self.result.log.for_endpoint(endpoint).requests
        if not complete:
            stamp_at = self.result.resume_at
            metadata["resume_at"] = f"{stamp_at:%Y-%m-%dT%H:%M:%SZ}" if stamp_at else "next run"
            if out.stop is not None:
                metadata["stopped_by"] = stopped_by(out.stop)[0]
        return metadata

    def check(self, check: AssetCheckKey, table: str) -> AssetCheckResult:
        """A check of a table this run synced."""
        out = self.result.report.outcome(TABLES[table])
        if check.name == SYNC_COMPLETE:
            return complete_from_run(check.asset_key, table, self.result)
        if check.name == NO_REJECTS:
            return no_rejects(
                check.asset_key, out.rejects, "this run", strict=self.bundle.config.strict
            )
        if check.name == SCHEMA_UNCHANGED:
            recorded = self.result.report.recorded_changes
            changes = [c for c in recorded if c.get("table_name") == table]
            return schema_unchanged(check.asset_key, changes, "this run")
        assert check.name == RECONCILED
        return reconciled(
            check.asset_key, self.stats().get(table), out.reconciliation, NO_TRAVERSAL
        )

    def checks_elsewhere(self, checks: set[AssetCheckKey]) -> Iterator[AssetCheckResult]:
        """Checks of tables this run did not materialise (not selected, or skipped for a scope):
        `sync_complete` says why; the others come from the warehouse."""
        if not checks:
            return
        runs = self.warehouse.runs()
        for check in sorted(checks, key=lambda c: (c.asset_key.to_user_string(), c.name)):
            table = self.bundle.names.table(check.asset_key)
            if check.name == SYNC_COMPLETE and TABLES[table] in self.result.skipped:
                yield complete_from_run(check.asset_key, table, self.result)
            else:
                yield from_record(check, self.bundle, self.warehouse, self.stats(), runs)
