"""The `ciklek` command: parses flags, calls sync/plan/status/check, maps errors to exit codes.

Exit codes: the one table is `connector.errors.EXIT_CODES` (README and `--help` show it).
Every line we print passes through `scrub()`, so the API key can never reach a terminal or a
log, whatever an exception happens to contain.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import connector
from connector.destination_faults import DestinationCredentialsRefused, DestinationNeedsPerson
from connector.errors import (
    EXIT_AUTH,
    EXIT_BUG,
    EXIT_CONFIG,
    EXIT_DESTINATION,
    EXIT_OK,
    EXIT_TEMPFAIL,
    CiklekError,
    ConfigError,
    MissingScope,
    TryLater,
    Unauthorized,
    exit_codes_text,
)

if TYPE_CHECKING:
    from connector.jsonlog import EventLog
    from connector.report import PlanRow
    from connector.settings import Settings
    from connector.sync import SyncResult


def scrub(text: str) -> str:
    """Remove every known secret from a line before it is printed."""
    from connector.settings import scrub as scrub_secrets

    return scrub_secrets(text)


def out(text: str) -> None:
    print(scrub(text), flush=True)


def err(text: str) -> None:
    from connector.jsonlog import active

    events = active()
    if events is not None and events.json:  # --log-format json: every stderr line is JSON
        events.emit("error", {"message": text.removeprefix("ciklek: ")})
        return
    print(scrub(text), file=sys.stderr, flush=True)


def _remember_secret() -> None:
    from connector.settings import register_secret

    register_secret(os.environ.get("SOURCES__CIKLEK__API_KEY"))


_UNAUTHORIZED = (
    "ciklek: the API key was refused (401 unauthorized): check SOURCES__CIKLEK__API_KEY "
    "or api_key under [sources.ciklek] in .dlt/secrets.toml"
)


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default also prints usage)."""

    def error(self, message: str) -> Any:
        err(f"ciklek: error: {message} (see `{self.prog} --help`)")
        raise SystemExit(EXIT_CONFIG)


DUCKDB_FILE_HELP = (
    "the DuckDB file (default: DESTINATION__DUCKDB__CREDENTIALS, else "
    "ciklek_warehouse.duckdb in the working directory)"
)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser = _Parser(
        prog="ciklek",
        description="Sync Ciklek (orders, customers, products) into DuckDB or any dlt warehouse.",
        parents=[common],
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ciklek {connector.__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
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


def _run_commands(
    sub: argparse._SubParsersAction[_Parser], common: _Parser
) -> tuple[_Parser, _Parser]:
    """`sync` and `sweep`: the two commands that run the engine, with their shared flags."""
    sync = sub.add_parser("sync", parents=[common], help="one sync run")
    sync.add_argument("--since", help="backfill window start on updated_at (inclusive)")
    sync.add_argument("--until", help="backfill window end on updated_at (exclusive)")
    sync.add_argument("--full-refresh", action="store_true", help="empty and reload")
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


def _other_commands(sub: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:
        from connector import sandbox  # lazy: only this command needs it

        if (problem := sandbox.missing_extra()) is not None:
            err(f"ciklek: error: {problem}")
            return EXIT_CONFIG
        return int(sandbox.main(argv[1:]) or 0)
    _remember_secret()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.command:
        build_parser().print_help()
        return EXIT_CONFIG
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "sync": cmd_sync,
        "sweep": cmd_sync,
        "plan": cmd_plan,
        "status": cmd_status,
        "check": cmd_check,
        "demo": cmd_demo,
        "query": cmd_query,
        "config": cmd_config,
    }
    return run_guarded(handlers[args.command], args)


def run_guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Map exceptions to exit codes and one-line messages (tracebacks only with --debug)."""
    try:
        _check_pipeline_name(args)
        return handler(args)
    except ConfigError as exc:
        err(f"ciklek: error: {exc}")
        return EXIT_CONFIG
    except Unauthorized:
        err(_UNAUTHORIZED)
        return EXIT_AUTH
    except MissingScope as exc:
        err(f"ciklek: the key lacks a scope (403): {exc.server_message}")
        return EXIT_AUTH
    except TryLater as exc:
        err(f"ciklek: {exc}")
        return EXIT_TEMPFAIL
    except DestinationCredentialsRefused as exc:  # the warehouse's credentials, not the API key
        err(f"ciklek: {exc}")
        return EXIT_AUTH
    except DestinationNeedsPerson as exc:
        err(f"ciklek: {exc}")
        return EXIT_DESTINATION
    except KeyboardInterrupt:
        err("ciklek: interrupted")
        return EXIT_TEMPFAIL
    except Exception as exc:
        if args.debug:
            err(traceback.format_exc())
        root = _root_cause(exc)
        if isinstance(root, CiklekError) and root is not exc:
            return run_guarded(_raiser(root), args)
        err(
            f"ciklek: unexpected error (a bug): {type(root).__name__}: "
            f"{str(root).splitlines()[0] if str(root) else ''} -- please report it to the "
            "connector's issue tracker (README, 'Reporting a bug') with the output of the same "
            "command run with --debug"
        )
        return EXIT_BUG


def _check_pipeline_name(args: argparse.Namespace) -> None:
    """A pipeline name becomes a path: refuse `../x` before anything touches the disk (exit 2)."""
    if getattr(args, "pipeline", None) is not None:
        from connector.statedir import check_pipeline_name

        check_pipeline_name(args.pipeline)


def _raiser(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def handler(_args: argparse.Namespace) -> int:
        raise exc

    return handler


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "exception", None) is not None:
        nxt = seen.__cause__ or getattr(seen, "exception", None)
        if not isinstance(nxt, BaseException) or nxt is seen:
            break
        seen = nxt
    return seen


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    from connector.settings import load_settings

    return load_settings(
        resources=getattr(args, "resources", None),
        pipeline=getattr(args, "pipeline", None),
        **overrides,
    )


def cmd_sync(args: argparse.Namespace) -> int:
    from connector.report import summary
    from connector.sync import SyncOptions, run_sync

    _debug_logging(args.debug)
    events = json_events(args)
    _check_duckdb_dir(args.duckdb_file)
    settings = _settings(args, page_size=args.page_size)
    options = SyncOptions(
        resources=None,
        destination=args.destination,
        dataset=args.dataset,
        pipeline=args.pipeline,
        since=getattr(args, "since", None),  # `sweep` has no window, refresh or --strict
        until=getattr(args, "until", None),
        full_refresh=getattr(args, "full_refresh", False),
        max_requests=args.max_requests,
        strict=getattr(args, "strict", False),
        sweep=args.command == "sweep",
        force=getattr(args, "force", False),
        progress={"auto": None, "bar": True, "lines": False}[args.progress],
        duckdb_file=args.duckdb_file,
        log_format=args.log_format,
        debug=args.debug,
    )
    result = run_sync(options, settings=settings)
    if events is not None:
        events.run_id = result.run_id
        return json_outcome(events, result)
    if result.exit_code == EXIT_AUTH and any(
        isinstance(o.error, Unauthorized) for o in result.report.outcomes.values()
    ):
        # A refused key is one problem, not a table of them: one line, and exit 3.
        err(_UNAUTHORIZED)
        return EXIT_AUTH
    out(summary(result))
    return result.exit_code


def _check_duckdb_dir(path: str | None) -> None:
    """A typo in --duckdb-file's directory is bad input (exit 2), not a destination failure."""
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ConfigError(
            f"--duckdb-file {path}: directory {os.path.dirname(os.path.abspath(path))} does not "
            "exist; create it or choose another path"
        )


def json_events(args: argparse.Namespace) -> EventLog | None:
    """--log-format json: this process's errors become JSON lines too."""
    from connector.jsonlog import json_log

    return json_log(getattr(args, "log_format", "text"))


def json_outcome(events: EventLog, result: SyncResult) -> int:
    from connector.jsonlog import emit_outcome

    return emit_outcome(events, result)


def cmd_query(args: argparse.Namespace) -> int:
    from connector.query import run_query
    from connector.where import query_target

    path, dataset = query_target(args.pipeline, args.duckdb_file)
    text = run_query(path, args.sql, dataset=dataset, fmt=args.format)
    if text:
        out(text)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from connector.config_report import entries, render

    out(render(entries(args.pipeline)))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from connector.ledger import used_on, utc_today
    from connector.report import status_table
    from connector.runstate import lock_is_held, read_status

    settings = _settings(args)
    doc = read_status(settings.state_dir, args.pipeline)
    if args.max_age is not None:
        from connector.freshness import status_max_age

        code, line = status_max_age(
            doc=doc,
            resources=settings.resources,
            pipeline_name=args.pipeline,
            max_age_text=args.max_age,
            destination=args.destination,
            dataset=args.dataset,
        )
        (out if code == EXIT_OK else err)(line)
        return code
    running = lock_is_held(settings.state_dir, args.pipeline)
    if doc is None:
        out(f"pipeline {args.pipeline!r} has not run yet (state dir {settings.state_dir})")
        return EXIT_OK
    key = doc.get("key_fingerprint") or (settings.api_key.fingerprint if settings.api_key else None)
    used = (
        sum(used_on(settings.state_dir / "ledger.json", key, utc_today()).values()) if key else None
    )
    if args.json:
        out(json.dumps({**doc, "running": running, "requests_used_today": used}, default=str))
    else:
        out(status_table(doc, running=running, used_today=used))
        if args.duckdb_file:
            out(f"DuckDB file (--duckdb-file): {os.path.abspath(args.duckdb_file)}")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from connector.compose import open_client
    from connector.report import plan_table
    from connector.runstate import read_status
    from connector.sweep import plan_lines

    settings = _settings(args)
    doc = read_status(settings.state_dir, args.pipeline) or {}
    rows: list[PlanRow] = []
    skipped: list[str] = []
    with open_client(settings, args.pipeline) as client:
        for name in settings.resources:
            spec = settings.catalogue[name]
            try:
                total = client.fetch_page(spec.path, limit=1).total or 0
            except MissingScope:
                if settings.resources_named:
                    raise
                skipped.append(f"{name} (key lacks {spec.scope})")
                continue
            watermark = (doc.get("resources") or {}).get(name, {}).get("watermark")
            if watermark:
                new = client.fetch_page(spec.path, limit=1, updated_since=watermark).total or 0
            else:
                new = total
            rows.append(
                {
                    "resource": name,
                    "total": total,
                    "next_records": new,
                    "next_requests": max(1, math.ceil(new / settings.page_size)),
                    "full_requests": max(1, math.ceil(total / settings.page_size)),
                }
            )
    out(
        plan_table(
            rows,
            per_minute=settings.requests_per_minute,
            budget=settings.daily_request_budget,
            left_today=_left_today(settings, args.pipeline),
        )
    )
    out("\n".join(plan_lines({row["resource"]: row["total"] for row in rows}, settings)))
    if args.duckdb_file:
        out(f"DuckDB file: {os.path.abspath(args.duckdb_file)}")
    if skipped:
        out(f"skipped: {', '.join(skipped)}")
    return EXIT_OK


def _left_today(settings: Settings, pipeline: str) -> int:
    """Today's remaining daily budget (all pipelines on the key), after plan's own requests."""
    from connector.client import ledger_for

    return ledger_for(settings, pipeline).left_today


def cmd_check(args: argparse.Namespace) -> int:
    from connector.compose import open_client

    settings = _settings(args)
    missing: list[str] = []
    with open_client(settings, "check") as client:
        for name in settings.resources:
            spec = settings.catalogue[name]
            try:
                client.fetch_page(spec.path, limit=1)
                out(f"{name:<10} ok       scope {spec.scope}")
            except MissingScope:
                missing.append(name)
                out(f"{name:<10} missing  scope {spec.scope} (403)")
    if missing and settings.resources_named:
        err(f"ciklek: the key lacks the scope for {', '.join(missing)}")
        return EXIT_AUTH
    out(
        "key valid"
        + (f"; no access to {', '.join(missing)}" if missing else "; all scopes present")
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from connector.sandbox import missing_extra

    if (problem := missing_extra()) is not None:
        raise ConfigError(problem)
    from connector.demo import run_demo

    return run_demo(orders=args.orders, duckdb_file=args.file, printer=out)


class _ScrubbingFormatter(logging.Formatter):
    """--debug logs go through the same secret scrubbing as everything else we print."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def _debug_logging(debug: bool) -> None:
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
