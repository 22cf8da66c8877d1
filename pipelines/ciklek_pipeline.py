"""Cron-friendly Ciklek sync: one checkpointed run, a summary on stdout, the run's exit code.

Run it from the directory holding `.dlt/` (dlt reads `config.toml` / `secrets.toml` only from
the working directory), or set everything in the environment:

    SOURCES__CIKLEK__API_KEY=bsk_live_...   (or api_key under [sources.ciklek] in secrets.toml)
    DESTINATION__POSTGRES__CREDENTIALS=postgresql://...   (with --destination postgres)

    python pipelines/ciklek_pipeline.py [--resources orders,customers] [--destination postgres]
                                        [--dataset ciklek] [--pipeline ciklek]
                                        [--max-requests N] [--strict]
                                        [--duckdb-file PATH] [--log-format text|json]

A crontab line (hourly; `flock` is not needed, a run already holds its own lock and an
overlapping run exits 75 without touching anything):

    17 * * * *  cd /srv/ciklek && .venv/bin/python pipelines/ciklek_pipeline.py >> sync.log 2>&1

Exit codes (the same as `ciklek sync`):

    0   completed (resources skipped for a scope you did not name are listed, not fatal)
    75  try again later, progress kept: daily quota or run budget spent, the API still failing
        after retries, another run of the same pipeline holds the lock, or SIGTERM/SIGINT.
        Treat it as "not an error yet"; alert only when it repeats for a day.
    2   bad input or configuration (missing key, bad page_size, unknown resource or
        destination...), found before any request was sent: fix the configuration
    3   credentials refused: 401, or 403 on a resource named in --resources
    4   completed, but --strict and records were rejected (see _ciklek_rejects)
    1   unexpected failure (a bug): rerun with --debug and report it
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from connector.cli import json_events, json_outcome, out, run_guarded
from connector.report import summary
from connector.settings import load_settings
from connector.sync import SyncOptions, run_sync


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


def sync_once(args: argparse.Namespace) -> int:
    events = json_events(args)  # before settings: a config error is a JSON line too
    settings = load_settings(resources=args.resources)
    options = SyncOptions(
        destination=args.destination,
        dataset=args.dataset,
        pipeline=args.pipeline,
        max_requests=args.max_requests,
        strict=args.strict,
        progress=False,  # log lines, never a redrawn bar, in a cron mail or log file
        duckdb_file=args.duckdb_file,
        log_format=args.log_format,
    )
    result = run_sync(options, settings=settings)
    if events is not None:
        events.run_id = result.run_id
        return json_outcome(events, result)
    out(summary(result))
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The same error-to-exit-code mapping and one-line messages as `ciklek sync`.
    return run_guarded(sync_once, args)


if __name__ == "__main__":
    sys.exit(main())
