"""The sweep as a job beside the assets: one sweep run through `run_sync(..., sweep=True)`.

The same lock, quota ledger, budget, checkpoints and exit codes as `ciklek sweep`, on the assets'
pipeline (per account when partitioned: the same partitions), in the assets' pool. What it did
is recorded on each table it swept (an observation with `rows_marked_deleted`) and once on the
API asset (requests, quota). What an outcome means for the Dagster run:

- completed, or stopped by design (`sweep_run_requests`, `sweep_reserve`, the daily quota):
  the op succeeds, progress kept; schedule it and each run continues where the last stopped.
- another run holding the lock (a materialisation), the API unavailable, the warehouse locked:
  a retry that says why (the pool, when limited to 1, makes it wait instead).
- the delete guard refused to mark (exit 6): the op fails with the reason; check, then launch
  the job with `{"ops": {"ciklek_sweep": {"config": {"force": true}}}}` within 24 hours.
- anything else fails the op with the run's messages.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at runtime.
from collections.abc import Callable, Iterator, Sequence

from dagster import (
    AssetObservation,
    Config,
    JobDefinition,
    OpExecutionContext,
    Output,
    job,
    op,
)

from ciklek_dagster.assets import CiklekAssets
from ciklek_dagster.config import Target
from ciklek_dagster.facts import Metadata, run_metadata, summary_line
from ciklek_dagster.outcome import judge, op_ending
from ciklek_dagster.runner import account_of, run
from ciklek_dagster.tables import TABLES
from ciklek_dagster.warehouse import Warehouse
from connector import keep_exit_code
from connector.errors import DestinationBusy
from connector.runs.result import SyncResult


class SweepConfig(Config):
    """Run configuration of the sweep op."""

    force: bool = False  # apply a result the guard refused (exit 6), within 24 hours
    max_requests: int | None = None


def build_sweep_job(
    bundle: CiklekAssets,
    *,
    resources: Sequence[str] | None = None,
    name: str = "ciklek_sweep_job",
) -> JobDefinition:
    """The sweep job of the assets' pipeline (partitioned like them: one run per account)."""

    @op(
        name="ciklek_sweep",
        pool=bundle.config.pool,
        description="One run of `ciklek sweep` on the assets' pipeline: marks rows deleted "
        "upstream (`_ciklek_deleted_at`); the counts go on each swept table.",
    )
    def ciklek_sweep(
        context: OpExecutionContext, config: SweepConfig
    ) -> Iterator[AssetObservation | Output[None]]:
        # From the sweep's decision until its events are built, a signal no longer turns the
        # outcome into another: they are built first, then yielded (see assets.materialise).
        with keep_exit_code():
            events, ending = _swept(context, bundle, config, resources)
        yield from events
        if ending is not None:
            raise ending

    @job(
        name=name,
        partitions_def=bundle.partitions,
        description="`ciklek sweep` for the Ciklek assets (see pipelines/ciklek_dagster/sweep.py)",
    )
    def ciklek_sweep_job() -> None:
        ciklek_sweep()

    return ciklek_sweep_job


def observations(
    bundle: CiklekAssets, target: Target, result: SyncResult, warn: Callable[[str], None]
) -> Iterator[AssetObservation]:
    """What the sweep did to each table it swept: rows loaded and marked deleted, the table."""
    try:
        stats = Warehouse(target, result.settings.state_dir).stats(TABLES)
    except DestinationBusy as exc:
        warn(f"ciklek sweep: row counts left out: {exc}")
        stats = {}
    for table, resource in TABLES.items():
        if resource not in result.report.outcomes or resource in result.skipped:
            continue
        out = result.report.outcome(resource)
        metadata: Metadata = {
            "dagster/table_name": target.table_name(table),
            "sweep_complete": out.done,
            "ciklek_run_id": result.run_id,
        }
        if table == resource:
            metadata["rows_loaded"] = out.rows
            metadata["rows_marked_deleted"] = out.marked_deleted
        else:  # line items are marked with their orders
            metadata["rows_loaded"] = out.child_rows
            metadata["orders_marked_deleted"] = out.marked_deleted
        if out.sweep_refused:
            metadata["sweep_refused"] = out.sweep_refused
        found = stats.get(table)
        if found is not None:
            metadata["dagster/row_count"] = found.rows
            if found.deleted is not None:
                metadata["table_rows_marked_deleted"] = found.deleted
        yield AssetObservation(
            bundle.names.key(table),
            description=f"ciklek sweep ({result.run_id})",
            metadata=metadata,
            partition=target.account,
        )


def _swept(
    context: OpExecutionContext,
    bundle: CiklekAssets,
    config: SweepConfig,
    resources: Sequence[str] | None,
) -> tuple[list[AssetObservation | Output[None]], Exception | None]:
    """One sweep run, and its events (observations, the output) and ending (a retry or a
    failure to raise once they are out; None: done, or progress kept for the next run)."""
    account = account_of(context, bundle.partitions)
    target = bundle.config.target(account)
    result = run(
        context.log,
        bundle.config,
        target,
        list(resources) if resources else None,
        sweep=True,
        force=config.force,
        max_requests=config.max_requests,
    )
    # Yielded, not logged: an op's logged events are lost when it then fails or retries.
    source = bundle.names.source.key
    events: list[AssetObservation | Output[None]] = [
        AssetObservation(source, metadata=run_metadata(result), partition=account)
    ]
    context.log.info(summary_line(result))
    events += observations(bundle, target, result, context.log.warning)
    verdict = judge(result, bundle.config)
    stop = op_ending(verdict, result, context.log.warning, bundle.config)
    if stop is not None:
        return events, stop
    if verdict.kind == "partial":
        context.log.info(f"ciklek sweep: progress kept, the next run continues: {verdict.reason}")
    outcomes = result.report.outcomes
    events.append(
        Output(
            None,
            metadata={
                "exit_code": result.exit_code,
                "rows_marked_deleted": sum(o.marked_deleted for o in outcomes.values()),
                "complete": ",".join(sorted(n for n, o in outcomes.items() if o.done)),
            },
        )
    )
    return events, None
