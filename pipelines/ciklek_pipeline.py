"""Cron-friendly Ciklek sync: one checkpointed run, a summary on stdout, the run's exit code.

Run it from the directory holding `.dlt/` (dlt reads `config.toml` / `secrets.toml` only from
the working directory), or set everything in the environment:

    SOURCES__CIKLEK__API_KEY=bsk_live_...   (or api_key under [sources.ciklek] in secrets.toml)
    DESTINATION__POSTGRES__CREDENTIALS=postgresql://...   (with --destination postgres)

    python pipelines/ciklek_pipeline.py [--resources orders,customers] [--destination postgres]
                                        [--dataset ciklek] [--pipeline ciklek]
                                        [--max-requests N] [--strict]

A crontab line (hourly; `flock` is not needed, a run already holds its own lock and an
overlapping run exits 75 without touching anything):

    17 * * * *  cd /srv/ciklek && .venv/bin/python pipelines/ciklek_pipeline.py >> sync.log 2>&1

Exit codes (the same as `ciklek sync`; docs/commands.md, `connector.errors.EXIT_CODES`):

    0   completed (resources skipped for a scope you did not name are listed, not fatal)
    75  try again later, progress kept: daily quota or run budget spent, the API still failing
        after retries, another run of the same pipeline holds the lock, SIGTERM/SIGINT, or the
        warehouse unreachable or locked. Alert only when it repeats for a day.
    2   bad input or configuration, found before any request was sent: fix the configuration
    3   credentials refused: 401, a 403 on a resource named in --resources, or the warehouse
        refused its credentials
    7   the warehouse needs a person (out of space, permission denied, read-only)
    4   completed, but --strict and records were rejected (see _ciklek_rejects)
    1   unexpected failure (a bug): rerun with --debug and report it

`--log-format json` writes one JSON object per line on stderr (ts, run_id, event), nothing on
stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from connector import CiklekError, SyncOptions, SyncResult, run_sync
from connector.cli.tables import summary
from connector.config.redaction import scrub
from connector.errors import explain
from connector.runs.events import EventLog, emit_outcome, json_log
from connector.runs.signals import keep_exit_code

LOG = logging.getLogger("ciklek_pipeline")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One Ciklek sync run, for cron.")
    parser.add_argument("--resources", help="comma-separated: orders,customers,products")
    parser.add_argument("--destination", help="a dlt destination name (default duckdb)")
    parser.add_argument("--dataset", default="ciklek")
    parser.add_argument("--pipeline", default="ciklek")
    parser.add_argument("--max-requests", type=int, help="stop cleanly (exit 75) before N")
    parser.add_argument("--strict", action="store_true", help="exit 4 when records were rejected")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line (ts, run_id, event) on stderr, no table on stdout",
    )
    parser.add_argument("--duckdb-file", help="the DuckDB file (default ciklek_warehouse.duckdb)")
    parser.add_argument("--debug", action="store_true", help="tracebacks on unexpected errors")
    return parser.parse_args(argv)


def sync_once(args: argparse.Namespace) -> SyncResult:
    """One run through the public API: what any Python caller of the connector would write."""
    options = SyncOptions(
        resources=args.resources.split(",") if args.resources else None,
        destination=args.destination,
        dataset=args.dataset,
        pipeline=args.pipeline,
        max_requests=args.max_requests,
        strict=args.strict,
        progress=False,  # log lines, never a redrawn bar, in a cron mail or log file
        duckdb_file=args.duckdb_file,
        log_format=args.log_format,
        debug=args.debug,
    )
    return run_sync(options)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    events = json_log(args.log_format)  # before the run: a config error is a JSON line too
    # Once the run has decided its exit code, a SIGTERM (a timeout, a deploy) changes nothing
    # while the summary is printed: cron reads the code the run decided.
    with keep_exit_code() as signals:
        try:
            result = sync_once(args)
        except Exception as exc:  # found before any request (bad config, the lock held), or a bug
            if args.debug and not isinstance(exc, CiklekError):
                raise  # a bug: the traceback says where
            signals.decide()  # this error's code is the run's: a signal changes nothing now
            explained = explain(exc)  # the same map as `ciklek sync`
            report_error(events, f"ciklek: {explained.line}")
            return explained.code
        if events is not None:
            return emit_outcome(events, result)
        print(scrub(summary(result)))
        return result.exit_code


def report_error(events: EventLog | None, message: str) -> None:
    """One line on stderr: a JSON `error` event with --log-format json, else the text."""
    if events is not None:
        events.emit("error", {"message": scrub(message)})
    else:
        print(scrub(message), file=sys.stderr)


if __name__ == "__main__":
    with keep_exit_code(at_exit=True):  # and through interpreter shutdown, until the exit
        code = main()
    sys.exit(code)
