"""One handler per `ciklek` command: options in, the command's output and exit code out.

Why the imports are inside the handlers: only this package may import lazily, and it does so for
start-up time: `ciklek --version` or a bad flag must not pay for loading dlt, and each command
loads only what it uses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from connector.cli.output import OUTPUT, err, out
from connector.config.redaction import scrub
from connector.errors import EXIT_AUTH, EXIT_OK, ConfigError, MissingScope, Unauthorized, explain

if TYPE_CHECKING:
    from connector.cli.tables import PlanRow
    from connector.config.settings import Settings


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    from connector.config.settings import load_settings

    return load_settings(
        resources=getattr(args, "resources", None),
        pipeline=getattr(args, "pipeline", None),
        **overrides,
    )


def cmd_sync(args: argparse.Namespace) -> int:
    with _debug_logging(args.debug):
        return _sync(args)


def _sync(args: argparse.Namespace) -> int:
    from connector.cli.tables import summary
    from connector.runs.events import emit_outcome, json_log
    from connector.runs.options import SyncOptions
    from connector.runs.sync import run_sync

    events = json_log(args.log_format)
    OUTPUT.events = events  # this command's error lines become JSON too
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
        drop_first=getattr(args, "drop_first", False),
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
        return emit_outcome(events, result)
    refused = [
        o.error for o in result.report.outcomes.values() if isinstance(o.error, Unauthorized)
    ]
    if result.exit_code == EXIT_AUTH and refused:
        # A refused key is one problem, not a table of them: one line, and exit 3.
        explained = explain(refused[0])
        err(f"ciklek: {explained.line}")
        return explained.code
    out(summary(result))
    return result.exit_code


def _check_duckdb_dir(path: str | None) -> None:
    """A typo in --duckdb-file's directory is bad input (exit 2), not a destination failure."""
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ConfigError(
            f"--duckdb-file {path}: directory {os.path.dirname(os.path.abspath(path))} does not "
            "exist; create it or choose another path"
        )


def cmd_query(args: argparse.Namespace) -> int:
    from connector.cli.query import run_query
    from connector.runs.target import query_target

    path, dataset = query_target(args.pipeline, args.duckdb_file)
    text = run_query(path, args.sql, dataset=dataset, fmt=args.format)
    if text:
        out(text)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from connector.cli.config_report import entries, render

    out(render(entries(args.pipeline)))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from connector.api.ledger import used_on, utc_today
    from connector.cli.tables import status_table
    from connector.runs.lock import lock_is_held
    from connector.runs.status_file import read_status

    settings = _settings(args)
    doc = read_status(settings.state_dir, args.pipeline)
    if args.max_age is not None:
        from connector.runs.freshness import status_max_age

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
        out(status_table(doc, running=running, used_today=used, page_size=settings.page_size))
        if args.duckdb_file:
            out(f"DuckDB file (--duckdb-file): {os.path.abspath(args.duckdb_file)}")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from connector.cli.tables import plan_lines, plan_table, reload_lines
    from connector.runs.compose import open_client
    from connector.runs.status_file import read_status

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
            if watermark:  # the next sync re-reads the look-back window behind the watermark
                since = _looked_back(watermark, settings.lookback_seconds)
                new = client.fetch_page(spec.path, limit=1, updated_since=since).total or 0
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
    reloads = reload_lines(doc.get("resources") or {}, settings.page_size)
    if reloads:
        out("\n".join(reloads))
    if args.duckdb_file:
        out(f"DuckDB file: {os.path.abspath(args.duckdb_file)}")
    if skipped:
        out(f"skipped: {', '.join(skipped)}")
    return EXIT_OK


def _looked_back(watermark: str, seconds: float) -> str:
    """The next sync's `updated_since`: the watermark less `lookback_seconds`."""
    import datetime as dt

    from connector.records.normalize import Invalid, parse_instant
    from connector.timefmt import iso

    try:
        at = parse_instant(watermark)
    except Invalid:
        return watermark
    return iso(at - dt.timedelta(seconds=seconds)) if at is not None else watermark


def _left_today(settings: Settings, pipeline: str) -> int:
    """Today's remaining daily budget (all pipelines on the key), after plan's own requests."""
    from connector.api.ledger import ledger_for

    return ledger_for(settings, pipeline).left_today


def cmd_check(args: argparse.Namespace) -> int:
    from connector.runs.compose import open_client

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
    from connector.cli.demo import run_demo

    return run_demo(orders=args.orders, duckdb_file=args.file, printer=out)


class _ScrubbingFormatter(logging.Formatter):
    """--debug logs go through the same secret scrubbing as everything else we print."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


@contextlib.contextmanager
def _debug_logging(debug: bool) -> Iterator[None]:
    """--debug: every logger's DEBUG lines to stderr (scrubbed) while the command runs.

    Why not `logging.basicConfig`: it does nothing once the root logger has a handler, so a
    second command in one process (or a host that configured logging, a test runner) would get
    no debug lines at all; the handler is added for this command and removed after it.
    """
    if not debug:
        yield
        return
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
