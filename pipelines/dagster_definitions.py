"""Dagster: the Ciklek tables as assets, materialised by `run_sync` (the engine of `ciklek sync`).

    dagster dev -f pipelines/dagster_definitions.py
    dagster asset materialize -f pipelines/dagster_definitions.py --select '*'

Why `run_sync` rather than a one-shot `pipeline.run`: a materialisation then commits in chunks
(an interrupted one resumes), obeys `daily_request_budget`, counts in the quota ledger, and holds
the pipeline's lock, exactly as a cron `ciklek sync` does. Settings and the key are resolved when
an asset materialises, never when the code location loads (only `accounts` is read at load: it
decides the partitions).

One multi-asset (`can_subset=True`): `ciklek/orders`, `ciklek/order_line_items`,
`ciklek/customers`, `ciklek/products`, each with a MaterializeResult carrying rows, requests,
429s, quota left, watermark and `complete`. How a run ends, and why:

- bad config, refused key, a 403 on a selected table, a bug, a signal, a destination that needs
  a person → `Failure(allow_retries=False)` with the one-line message: retrying cannot help.
- a stop with progress kept that clears within `retry_cap_seconds` (a per-minute limit, the API
  unavailable, another run holding the lock: 60 s) → `RetryRequested`; the retry continues from
  the last committed chunk.
- a stop that clears later (the daily quota, at 00:00 UTC) → the tables materialise what was
  loaded with `complete: false` and `resume_at`, and the `sync_complete` check fails with WARN:
  a worker is not held for hours, and nobody mistakes the partial sync for a full one.

With `accounts` (setting or `make_definitions(accounts=[...])`) the asset is partitioned, one
static partition per account: pipeline = the account, dataset `ciklek_<account>`, key
`[<account>.sources.ciklek] api_key` (`<ACCOUNT>__SOURCES__CIKLEK__API_KEY`), never the unscoped
one. docs/scheduling.md has the run-concurrency snippet.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at runtime.
import datetime as dt
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Definitions,
    Failure,
    MaterializeResult,
    RetryRequested,
    StaticPartitionsDefinition,
    multi_asset,
)

from connector.config.accounts import account_dataset, configured_accounts, require_scoped_key
from connector.config.redaction import scrub
from connector.config.settings import load_settings
from connector.errors import (
    EXIT_BUG,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_TEMPFAIL,
    BudgetSpent,
    QuotaExhausted,
    StopRequested,
    explain,
)
from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.runs.sync import run_sync

PIPELINE_NAME = "ciklek_dagster"
DATASET = "ciklek"
# asset table -> the resource that loads it (line items come with orders)
TABLES: dict[str, str] = {
    "orders": "orders",
    "order_line_items": "orders",
    "customers": "customers",
    "products": "products",
}
CHECK_COMPLETE, CHECK_REJECTS, CHECK_RECONCILED = "sync_complete", "no_rejects", "reconciled"
RETRY_SECONDS = 60.0  # API unavailable, lock held, destination unavailable


@dataclass(frozen=True)
class AssetsConfig:
    """The factory's arguments (what is not a `[sources.ciklek]` setting)."""

    pipeline: str = PIPELINE_NAME
    dataset: str | None = None  # default: ciklek, or ciklek_<account>
    destination: str | None = None  # a dlt destination name; default duckdb
    duckdb_file: str | None = None
    strict: bool = False
    retry_cap_seconds: float = 600.0
    max_retries: int = 10


def asset_key(table: str) -> AssetKey:
    return AssetKey(["ciklek", table])


def _check_specs() -> list[AssetCheckSpec]:
    specs = [AssetCheckSpec(CHECK_COMPLETE, asset=asset_key(t)) for t in TABLES]
    for table, resource in TABLES.items():
        if table == resource:
            specs.append(AssetCheckSpec(CHECK_REJECTS, asset=asset_key(table)))
            specs.append(AssetCheckSpec(CHECK_RECONCILED, asset=asset_key(table)))
    return specs


def make_assets(
    accounts: Sequence[str] | None = None,
    *,
    pipeline: str = PIPELINE_NAME,
    dataset: str | None = None,
    destination: str | None = None,
    duckdb_file: str | None = None,
    strict: bool = False,
    retry_cap_seconds: float = 600.0,
    max_retries: int = 10,
) -> AssetsDefinition:
    """The multi-asset; `accounts` (default: the `accounts` setting) partitions it."""
    config = AssetsConfig(
        pipeline, dataset, destination, duckdb_file, strict, retry_cap_seconds, max_retries
    )
    names = tuple(accounts) if accounts is not None else configured_accounts()
    partitions = StaticPartitionsDefinition(list(names)) if names else None
    kinds = {"dlt", (destination or "duckdb").split(".")[-1]}
    specs = [
        AssetSpec(asset_key(t), group_name="ciklek", kinds=kinds, skippable=True) for t in TABLES
    ]

    @multi_asset(
        name="ciklek",
        specs=specs,
        check_specs=_check_specs(),
        can_subset=True,
        partitions_def=partitions,
        pool=None if partitions else f"ciklek_{pipeline}",
    )
    def ciklek_assets(context: AssetExecutionContext) -> Iterator[MaterializeResult[None]]:
        account = context.partition_key if partitions is not None else None
        yield from materialise(context, config, account)

    return ciklek_assets


def make_definitions(accounts: Sequence[str] | None = None, **options: object) -> Definitions:
    """The assets and, for one account, the sweep job on the same pipeline and dataset (a
    partitioned deployment runs `ciklek sweep --pipeline <account>` per account instead)."""
    assets = make_assets(accounts, **options)  # type: ignore[arg-type]
    if assets.partitions_def is not None:
        return Definitions(assets=[assets])
    sweep = _sibling("dagster_sweep").make_sweep_job(
        pipeline=options.get("pipeline", PIPELINE_NAME),
        dataset=options.get("dataset") or DATASET,
        destination=options.get("destination"),
        duckdb_file=options.get("duckdb_file"),
    )
    return Definitions(assets=[assets], jobs=[sweep])


def _sibling(name: str) -> ModuleType:
    """A module beside this file: Dagster loads this one by path (`-f`), not as a package."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"ciklek_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def materialise(
    context: AssetExecutionContext, config: AssetsConfig, account: str | None
) -> Iterator[MaterializeResult[None]]:
    """One sync for the selected tables; its outcome as results, a retry or a failure."""
    selected = {k.path[-1] for k in context.selected_asset_keys}
    result = _sync(config, account, sorted({TABLES[t] for t in selected}), len(selected))
    _raise_for_outcome(result, config)
    checks = set(context.selected_asset_check_keys)
    for table in TABLES:
        resource = TABLES[table]
        if table not in selected or resource not in result.settings.resources:
            continue
        if resource in result.skipped:
            context.log.warning(f"ciklek/{table} skipped: {result.skipped[resource]}")
            continue
        yield table_result(table, result, config, checks)


def _sync(
    config: AssetsConfig, account: str | None, resources: list[str], tables: int
) -> SyncResult:
    pipeline = account or config.pipeline
    dataset = config.dataset or (account_dataset(account) if account else DATASET)
    try:
        if account is not None:
            require_scoped_key(account)
        # Every table selected: the settings' resources (a 403 on an unnamed one is skipped);
        # a subset: those resources, named (a 403 on them fails).
        named = ",".join(resources) if tables < len(TABLES) else None
        settings = load_settings(resources=named, pipeline=pipeline)
        options = SyncOptions(
            destination=config.destination,
            dataset=dataset,
            pipeline=pipeline,
            strict=config.strict,
            progress=False,
            duckdb_file=config.duckdb_file,
        )
        return run_sync(options, settings=settings)
    except Exception as exc:  # raised before the run's result: the one map says what it means
        explained = explain(exc)
        if explained.code == EXIT_TEMPFAIL:  # the lock held, the destination locked
            raise RetryRequested(config.max_retries, seconds_to_wait=RETRY_SECONDS) from exc
        bug = explained.code == EXIT_BUG
        raise Failure(scrub(f"ciklek: {explained.line}"), allow_retries=False) from (
            exc if bug else None
        )


def _raise_for_outcome(result: SyncResult, config: AssetsConfig) -> None:
    """Failure for what a person must fix, RetryRequested for a short stop; else return."""
    code = result.exit_code
    if code in (EXIT_OK, EXIT_STRICT):
        return
    lines = "; ".join(dict.fromkeys(result.messages))  # one line per distinct problem
    message = scrub("ciklek: " + (lines or f"exit code {code}"))
    if code != EXIT_TEMPFAIL or isinstance(result.error, StopRequested):
        raise Failure(message, allow_retries=False)
    wait = retry_wait(result, config.retry_cap_seconds)
    if wait is not None:
        raise RetryRequested(config.max_retries, seconds_to_wait=wait)


def retry_wait(result: SyncResult, cap_seconds: float) -> float | None:
    """Seconds until a retry can continue, if within the cap; None: materialise the partial."""
    stop = result.error
    if isinstance(stop, QuotaExhausted | BudgetSpent):
        if result.resume_at is None:
            return None  # a run budget: the next scheduled run continues
        wait = (result.resume_at - dt.datetime.now(dt.UTC)).total_seconds()
        return max(1.0, wait) if wait <= cap_seconds else None
    return RETRY_SECONDS if cap_seconds >= RETRY_SECONDS else None


def table_result(
    table: str, result: SyncResult, config: AssetsConfig, checks: set[AssetCheckKey]
) -> MaterializeResult[None]:
    """Metadata and checks of one table after the sync."""
    resource = TABLES[table]
    out = result.report.outcome(resource)
    complete = out.done and out.error is None and out.stop is None
    resume = f"{result.resume_at:%Y-%m-%dT%H:%M:%SZ}" if result.resume_at else None
    metadata: dict[str, object] = {
        "rows": out.child_rows if table != resource else out.rows,
        "requests": result.log.requests,
        "429s": result.log.rate_limited,
        "quota_left": result.quota.left_today,
        "watermark": result.watermarks.get(resource) or "",
        "complete": complete,
    }
    if not complete:
        metadata["resume_at"] = resume or "next run"
    key = asset_key(table)
    results = [
        AssetCheckResult(
            asset_key=key,
            check_name=CHECK_COMPLETE,
            passed=complete,
            severity=AssetCheckSeverity.WARN,
            metadata={"resume_at": resume or "next run"} if not complete else {},
        )
    ]
    if table == resource:
        severity = AssetCheckSeverity.ERROR if config.strict else AssetCheckSeverity.WARN
        results.append(
            AssetCheckResult(
                asset_key=key,
                check_name=CHECK_REJECTS,
                passed=out.rejects == 0,
                severity=severity,
                metadata={"rejects": out.rejects},
            )
        )
        if out.reconciliation is not None:  # a full traversal completed
            rec = out.reconciliation
            results.append(
                AssetCheckResult(
                    asset_key=key,
                    check_name=CHECK_RECONCILED,
                    passed=rec.difference >= 0,
                    severity=AssetCheckSeverity.WARN,
                    metadata={"expected": rec.expected, "distinct": rec.distinct},
                )
            )
    wanted = [r for r in results if AssetCheckKey(key, r.check_name or "") in checks]
    return MaterializeResult(asset_key=key, metadata=metadata, check_results=wanted)  # type: ignore[arg-type]


defs = make_definitions()
