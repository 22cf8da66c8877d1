"""The `ciklek` command line: every command, flag and help text (argparse).

Why argparse with one-line errors: a bad flag is bad input (exit 2) and a scheduler's log should
say what is wrong in one line, not print the whole usage.
"""

from __future__ import annotations

import argparse
from typing import Any

import connector
from connector.cli.output import err
from connector.errors import EXIT_CONFIG, exit_codes_text


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default also prints usage)."""

    def error(self, message: str) -> Any:
        err(f"ciklek: error: {message} (see `{self.prog} --help`)")
        raise SystemExit(EXIT_CONFIG)


DUCKDB_FILE_HELP = (
    "the DuckDB file (default: DESTINATION__DUCKDB__CREDENTIALS, else "
    "ciklek_warehouse.duckdb in the working directory)"
)


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser = Parser(
        prog="ciklek",
        description="Sync Ciklek (orders, customers, products) into DuckDB or any dlt warehouse.",
        parents=[common],
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ciklek {connector.__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sync, sweep = _run_commands(sub, common)
    plan = sub.add_parser("plan", parents=[common], help="estimate requests, time and days")
    plan.add_argument("--resources")
    plan.add_argument("--pipeline", default="ciklek")
    status = sub.add_parser("status", parents=[common], help="watermarks, quota, last run")
    status.add_argument("--pipeline", default="ciklek")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--max-age", help="exit 5 when the last complete sync is older (90s, 30m, 6h, 2d)"
    )
    status.add_argument("--destination", help="without local state: read the warehouse's run log")
    status.add_argument("--dataset", help="the dataset of that run log (default ciklek)")
    for command in (sync, sweep, plan, status):
        command.add_argument("--duckdb-file", metavar="PATH", help=DUCKDB_FILE_HELP)
    _other_commands(sub, common)
    return parser


def _run_commands(sub: argparse._SubParsersAction[Parser], common: Parser) -> tuple[Parser, Parser]:
    """`sync` and `sweep`: the two commands that run the engine, with their shared flags."""
    sync = sub.add_parser("sync", parents=[common], help="one sync run")
    sync.add_argument("--since", help="backfill window start on updated_at (inclusive)")
    sync.add_argument("--until", help="backfill window end on updated_at (exclusive)")
    sync.add_argument(
        "--full-refresh",
        action="store_true",
        help="reload: built beside the live tables, swapped in when complete",
    )
    sync.add_argument(
        "--drop-first",
        action="store_true",
        help="with --full-refresh: empty the tables first and reload in place (no swap)",
    )
    sync.add_argument("--strict", action="store_true", help="exit 4 when records were rejected")
    sweep = sub.add_parser(
        "sweep", parents=[common], help="full traversal: merge every record, mark deletes"
    )
    sweep.add_argument(
        "--force", action="store_true", help="apply a result the delete guard refused (exit 6)"
    )
    for command in (sync, sweep):
        command.add_argument("--resources", help="comma-separated: orders,customers,products")
        command.add_argument("--destination", help="a dlt destination name (default duckdb)")
        command.add_argument(
            "--dataset", default="ciklek", help="dataset/schema name (default ciklek)"
        )
        command.add_argument("--pipeline", default="ciklek", help="pipeline name (default ciklek)")
        command.add_argument("--max-requests", type=int, help="stop cleanly before N requests")
        command.add_argument("--page-size", type=int, help="override page_size (1-100)")
        command.add_argument(
            "--progress", choices=("auto", "bar", "lines"), default="auto", help="progress style"
        )
        command.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="json: one JSON object per line on stderr (ts, run_id, event), no table on stdout",
        )
    return sync, sweep


def _other_commands(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """query, config, check, sandbox, demo."""
    query = sub.add_parser("query", parents=[common], help="read-only SQL on the DuckDB file")
    query.add_argument("sql", help='e.g. "select count(*) from orders"')
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--pipeline", default="ciklek")
    query.add_argument("--duckdb-file", metavar="PATH", help=DUCKDB_FILE_HELP)
    config = sub.add_parser("config", parents=[common], help="settings, values and sources")
    config.add_argument("--pipeline", default="ciklek")
    check = sub.add_parser("check", parents=[common], help="is the key valid, which scopes")
    check.add_argument("--resources")
    sandbox = sub.add_parser(
        "sandbox", parents=[common], help="run the local Ciklek server", add_help=False
    )
    sandbox.add_argument("sandbox_args", nargs=argparse.REMAINDER)
    demo = sub.add_parser("demo", parents=[common], help="sandbox -> sync -> DuckDB -> summary")
    demo.add_argument("--orders", type=int, default=2000, help="orders in the sandbox")
    demo.add_argument("--file", default="ciklek_demo.duckdb", help="the DuckDB file to write")
