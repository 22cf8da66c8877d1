"""`make_definitions()`: the assets, the API they come from, the sweep job and the schedules.

With `accounts` (the setting, or `make_definitions(accounts=[...])`) everything is partitioned
one static partition per account: pipeline = the account, dataset `ciklek_<account>`, key
`[<account>.sources.ciklek] api_key` (`<ACCOUNT>__SOURCES__CIKLEK__API_KEY`), never the unscoped
one; the sweep job then runs one sweep per account. Only `accounts` is read when the code
location loads (it decides the partitions); every other setting and the key when a run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetsDefinition,
    Definitions,
    FreshnessPolicy,
    JobDefinition,
    StaticPartitionsDefinition,
)

from ciklek_dagster.assets import CiklekAssets, build_assets
from ciklek_dagster.config import PIPELINE_NAME, CiklekConfig
from ciklek_dagster.schedules import (
    SWEEP_CRON,
    SWEEP_SCHEDULE,
    SYNC_CRON,
    SYNC_SCHEDULE,
    build_schedules,
    sync_job,
)
from ciklek_dagster.sweep import build_sweep_job
from ciklek_dagster.tables import CiklekTranslator, default_freshness
from connector.config.accounts import configured_accounts

FRESHNESS = default_freshness()  # per asset; thresholds in docs/scheduling.md


def bundle_for(
    accounts: Sequence[str] | None,
    *,
    translator: CiklekTranslator | None,
    freshness: FreshnessPolicy | None,
    config: CiklekConfig,
) -> CiklekAssets:
    names = tuple(accounts) if accounts is not None else configured_accounts()
    partitions = StaticPartitionsDefinition(list(names)) if names else None
    return build_assets(config, partitions, translator=translator, freshness=freshness)


def make_definitions(
    accounts: Sequence[str] | None = None,
    *,
    pipeline: str = PIPELINE_NAME,
    dataset: str | None = None,
    destination: str | None = None,
    duckdb_file: str | None = None,
    strict: bool = False,
    retry_cap_seconds: float = 600.0,
    max_retries: int = 10,
    retry_seconds: float = 60.0,
    translator: CiklekTranslator | None = None,
    freshness: FreshnessPolicy | None = FRESHNESS,
    run_schedules: bool = False,
) -> Definitions:
    """Everything a code location needs; `run_schedules=True` starts the shipped schedules."""
    config = CiklekConfig(
        pipeline, dataset, destination, duckdb_file, strict, retry_cap_seconds, max_retries,
        retry_seconds,
    )  # fmt: skip
    bundle = bundle_for(accounts, translator=translator, freshness=freshness, config=config)
    sweep = build_sweep_job(bundle)
    sync = sync_job(bundle)
    schedules = build_schedules(
        bundle,
        [(SYNC_SCHEDULE, SYNC_CRON, sync), (SWEEP_SCHEDULE, SWEEP_CRON, sweep)],
        running=run_schedules,
    )
    return Definitions(
        assets=[bundle.assets, bundle.names.source],
        jobs=[sync, sweep],
        schedules=schedules,
    )


def make_assets(
    accounts: Sequence[str] | None = None,
    *,
    translator: CiklekTranslator | None = None,
    freshness: FreshnessPolicy | None = FRESHNESS,
    **options: Any,
) -> AssetsDefinition:
    """The multi-asset alone (for `materialize([...])` in tests and notebooks)."""
    config = CiklekConfig(**options)
    return bundle_for(accounts, translator=translator, freshness=freshness, config=config).assets


def make_sweep_job(
    accounts: Sequence[str] | None = None,
    *,
    resources: Sequence[str] | None = None,
    name: str = "ciklek_sweep_job",
    **options: Any,
) -> JobDefinition:
    """The sweep job alone, on the same pipeline, dataset, pool and partitions as the assets."""
    config = CiklekConfig(**options)
    bundle = bundle_for(accounts, translator=None, freshness=None, config=config)
    return build_sweep_job(bundle, resources=resources, name=name)
