"""One run of the connector for a Dagster op: `run_sync`, the engine of `ciklek sync`/`sweep`.

Why `run_sync` rather than a one-shot `pipeline.run`: a materialisation then commits in chunks
(an interrupted one resumes), obeys `daily_request_budget`, counts in the quota ledger and holds
the pipeline's lock, exactly as a cron `ciklek sync` does. Settings and the key are resolved
here, when the op runs, never when the code location loads. The run's event lines (retries,
waits, progress) go to Dagster's log, so the UI shows them.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    DagsterLogManager,
    Failure,
    OpExecutionContext,
    PartitionsDefinition,
)

from ciklek_dagster.config import CiklekConfig, Target
from ciklek_dagster.facts import LogStream
from ciklek_dagster.outcome import raise_for_exception
from connector.config.accounts import require_scoped_key
from connector.config.settings import Settings, load_settings
from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.runs.sync import run_sync


def account_of(
    context: AssetExecutionContext | OpExecutionContext, partitions: PartitionsDefinition | None
) -> str | None:
    """The run's account (its partition); a partitioned run without one is told what to do."""
    if partitions is None:
        return None
    if not context.has_partition_key:
        raise Failure(
            "ciklek: the assets are partitioned by account: launch the run for an account "
            f"(one of {', '.join(partitions.get_partition_keys())})",
            allow_retries=False,
        )
    return str(context.partition_key)


def settings_for(
    target: Target, resources: Sequence[str] | None = None, *, key: bool = True
) -> Settings:
    """The target's settings (the account's own key when partitioned; `resources` named);
    `key=False`: for reading the warehouse only, no key needed."""
    if key and target.account is not None:
        require_scoped_key(target.account)
    named = ",".join(resources) if resources else None
    return load_settings(resources=named, pipeline=target.pipeline)


def run(
    log: DagsterLogManager,
    config: CiklekConfig,
    target: Target,
    resources: Sequence[str] | None,
    *,
    sweep: bool = False,
    force: bool = False,
    max_requests: int | None = None,
) -> SyncResult:
    """One run for `target`; `resources` None: the settings' (a 403 on one is a skip), else
    those, named (a 403 on them fails). An exception before the run's result becomes a retry
    (the lock held, the warehouse locked) or a failure, with its one line."""
    try:
        settings = settings_for(target, resources)
        options = SyncOptions(
            destination=target.destination,
            dataset=target.dataset,
            pipeline=target.pipeline,
            strict=config.strict,
            progress=False,
            duckdb_file=target.duckdb_file,
            sweep=sweep,
            force=force,
            max_requests=max_requests,
            log_stream=LogStream(log.info),
        )
        return run_sync(options, settings=settings)
    except Exception as exc:  # raised before the run's result: the one map says what it means
        raise_for_exception(exc, log.warning, config)
