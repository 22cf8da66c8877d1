"""Dagster: `ciklek sweep` as a job beside the sync assets (see dagster_definitions.py).

`make_sweep_job()` builds a job of one op that runs one sweep run through `run_sync(...,
sweep=True)`: the same lock, quota ledger, budget, checkpoints and exit codes as the `ciklek
sweep` command. It works on the assets' pipeline (`ciklek_dagster`, same dataset and DuckDB
file), so the rows it marks are the rows the assets load; its traversal state is its own, so the
assets' incremental syncs go on between sweep runs. Do not schedule it to overlap a
materialisation of the assets (they share the pipeline's working directory).

What an outcome means for the Dagster run:
- exit 0: the sweep (or this run of it) completed; rows marked are in the op's metadata.
- exit 75: a sweep run stops by design after `sweep_run_requests` requests, before the day's
  `sweep_reserve`, on a quota stop or a signal; progress is kept and the op succeeds (schedule
  the job hourly or daily and it continues until the sweep completes).
- exit 6: the delete guard refused to mark; the op fails with the reason. Check, then launch the
  job with `{"ops": {"ciklek_sweep": {"config": {"force": true}}}}` within 24 hours.
- anything else fails the op with the summary's messages.

Example: `defs = Definitions(assets=[...], jobs=[make_sweep_job()], schedules=[
ScheduleDefinition(job=make_sweep_job(), cron_schedule="17 3 * * *")])`.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at runtime.
from collections.abc import Sequence

from dagster import Config, Failure, JobDefinition, OpExecutionContext, job, op

from connector.errors import EXIT_OK, EXIT_TEMPFAIL
from connector.runs.options import SyncOptions
from connector.runs.sync import run_sync

PIPELINE_NAME = "ciklek_dagster"  # the assets' pipeline (dagster_definitions.PIPELINE_NAME)
DATASET = "ciklek"


class SweepConfig(Config):
    """Run configuration of the sweep op."""

    force: bool = False  # apply a result the guard refused (exit 6), within 24 hours
    max_requests: int | None = None


def make_sweep_job(
    *,
    pipeline: str = PIPELINE_NAME,
    dataset: str = DATASET,
    destination: str | None = None,
    duckdb_file: str | None = None,
    resources: Sequence[str] | None = None,
    name: str = "ciklek_sweep_job",
) -> JobDefinition:
    """A job that runs one sweep run of `pipeline` (see the module docstring)."""

    @op(name="ciklek_sweep")
    def ciklek_sweep(context: OpExecutionContext, config: SweepConfig) -> None:
        result = run_sync(
            SyncOptions(
                resources=list(resources) if resources else None,
                destination=destination,
                dataset=dataset,
                pipeline=pipeline,
                duckdb_file=duckdb_file,
                max_requests=config.max_requests,
                progress=False,
                sweep=True,
                force=config.force,
            )
        )
        outcomes = result.report.outcomes
        metadata: dict[str, int | str] = {
            "exit_code": result.exit_code,
            "requests": result.log.requests,
            "rows_marked_deleted": sum(o.marked_deleted for o in outcomes.values()),
            "complete": ",".join(sorted(n for n, o in outcomes.items() if o.done)),
        }
        context.log.info(f"ciklek sweep: {metadata}; {'; '.join(result.messages)}")
        if result.exit_code not in (EXIT_OK, EXIT_TEMPFAIL):
            raise Failure(
                description=f"ciklek sweep exited {result.exit_code}: "
                + ("; ".join(result.messages) or "see the log"),
                metadata=metadata,
            )

    @job(name=name)
    def ciklek_sweep_job() -> None:
        ciklek_sweep()

    return ciklek_sweep_job
