"""The schedules that ship: an hourly sync and a weekly sweep, stopped until an operator starts
them (in the UI, or `make_definitions(run_schedules=True)`).

Why off by default: a code location that starts syncing on load would spend a live key's quota
the moment someone runs `dagster dev` to look around. Partitioned (one account each), a tick
asks for one run per account; the `dagster/partition` run-tag limit in docs/scheduling.md keeps
one account from running twice at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from ciklek_dagster.assets import CiklekAssets

if TYPE_CHECKING:  # what `define_asset_job` returns; Dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

SYNC_JOB = "ciklek_sync_job"
SYNC_CRON = "17 * * * *"  # hourly, off the hour (like the cron example)
SWEEP_CRON = "43 3 * * 0"  # weekly, Sunday 03:43 UTC, when syncs are rare
SYNC_SCHEDULE, SWEEP_SCHEDULE = "ciklek_hourly_sync", "ciklek_weekly_sweep"


def sync_job(bundle: CiklekAssets) -> UnresolvedAssetJobDefinition:
    """Every table and its checks (what `--select '*'` materialises)."""
    keys = [spec.key for spec in bundle.names.specs.values()]
    return define_asset_job(
        SYNC_JOB,
        selection=AssetSelection.assets(*keys),
        description="Materialise every Ciklek table (one run_sync) and evaluate its checks.",
    )


def build_schedules(
    bundle: CiklekAssets,
    jobs: Sequence[tuple[str, str, UnresolvedAssetJobDefinition | JobDefinition]],
    *,
    running: bool,
) -> list[ScheduleDefinition]:
    """A schedule per (name, cron, job); one run per account on each tick when partitioned."""
    status = DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED
    partitions = bundle.partitions
    if partitions is None:
        return [
            ScheduleDefinition(
                name=name,
                job=target,
                cron_schedule=cron,
                execution_timezone="UTC",
                default_status=status,
            )
            for name, cron, target in jobs
        ]
    accounts = partitions.get_partition_keys()

    def per_account(
        name: str, cron: str, target: UnresolvedAssetJobDefinition | JobDefinition
    ) -> ScheduleDefinition:
        @schedule(
            name=name,
            job=target,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=status,
        )
        def tick(context: ScheduleEvaluationContext) -> list[RunRequest]:
            stamp = context.scheduled_execution_time
            return [
                RunRequest(run_key=f"{account}-{stamp:%Y%m%dT%H%M}", partition_key=account)
                for account in accounts
            ]

        return tick

    return [per_account(name, cron, target) for name, cron, target in jobs]
