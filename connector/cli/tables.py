"""Rendering results for people: the sync summary, `status` and `plan` tables (sweeps included).

Why apart from the handlers: the same summary is printed by `ciklek sync`, `ciklek demo` and the
cron script in `pipelines/`, and tests read it; the handlers only decide what to show.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any, TypedDict

from rich.console import Console
from rich.table import Table

from connector.config.settings import Settings
from connector.runs.progress import duration
from connector.runs.result import SyncResult
from connector.runs.target import quota_spent, target_line
from connector.timefmt import stamp


class PlanRow(TypedDict):
    """One resource in `ciklek plan`."""

    resource: str
    total: int
    next_records: int
    next_requests: int
    full_requests: int


def render(table: Table, width: int = 160) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue().rstrip("\n")


def summary(result: SyncResult) -> str:
    """The end-of-run summary: a table per resource plus totals and messages."""
    settings, report = result.settings, result.report
    command = "sweep" if result.kind == "sweep" else "sync"
    table = Table(title=f"ciklek {command} summary", title_justify="left")
    for column in ("resource", "rows", "line items", "rejects", "pages", "requests", "429s"):
        table.add_column(column, justify="right" if column != "resource" else "left")
    table.add_column("wait s", justify="right")
    table.add_column("watermark")
    table.add_column("state")
    for name in settings.resources:
        outcome = report.outcome(name)
        stats = result.log.for_endpoint("/" + settings.catalogue[name].path.strip("/"))
        if name in result.skipped:
            state = f"skipped: {result.skipped[name]}"
        elif outcome.done:
            state = "complete"
        elif outcome.error is not None:
            state = f"error: {outcome.error}"
        elif outcome.stop is not None:
            state = "stopped (resumes next run)"
        else:
            state = "in progress"
        table.add_row(
            name,
            f"{outcome.rows:,}",
            f"{outcome.child_rows:,}" if settings.catalogue[name].child else "",
            f"{outcome.rejects:,}",
            f"{outcome.pages:,}",
            f"{stats.requests:,}",
            f"{stats.rate_limited:,}",
            f"{stats.waited_seconds:.1f}",
            result.watermarks.get(name) or "-",
            state,
        )
    lines = [render(table), target_line(result)]
    if quota_spent(result):
        # Our budget's "left" is meaningless once the server says the key's quota is spent.
        left = "the server's daily quota for this key is spent" + (
            f", it resets {stamp(result.resume_at)}" if result.resume_at else ""
        )
    else:
        left = f"{result.quota.left_today:,} left of the daily budget"
    lines.append(
        f"requests: {result.log.requests:,} this run ({result.log.rate_limited} answered 429, "
        f"{result.log.waited_seconds:.1f}s waiting); {result.quota.used_today:,} used today, "
        f"{left}; elapsed {result.elapsed:.1f}s"
    )
    for name in settings.resources:
        outcome = report.outcome(name)
        if outcome.reconciliation is not None:
            lines.append(f"reconciliation {name}: {outcome.reconciliation.describe()}")
        if outcome.splits:
            lines.append(
                f"ranges {name}: split {outcome.splits} time(s) into updated_since ranges "
                "walked at once"
            )
        for note in outcome.notes:
            lines.append(f"note {name}: {note}")
        if outcome.rejects:
            lines.append(
                f"rejects {name}: {outcome.rejects} record(s) quarantined in _ciklek_rejects"
            )
    lines += [change_line(row) for row in report.recorded_changes]
    lines.extend(_once(result.messages))
    return "\n".join(lines)


_CHANGE_WORDS = {
    "new_column": "new column",
    "folded_into_extra": "folded into _ciklek_extra:",
    "type_changed": "values no longer fit the type of",
    "documented_field_missing": "documented field missing from a whole page:",
}


def change_line(row: Mapping[str, object]) -> str:
    """`schema orders: new column loyalty_tier (example record 8d60…)`."""
    example = row.get("example_record_id")
    where = f" (example record {example})" if example else ""
    words = _CHANGE_WORDS.get(str(row.get("change")), str(row.get("change")))
    return f"schema {row.get('table_name')}: {words} {row.get('column')}{where}"


def _once(messages: list[str]) -> list[str]:
    """Each message once: identical ones (a 401 per resource) and a `resume after` line whose
    instant a stop message already gave."""
    unique = list(dict.fromkeys(messages))
    said = " ".join(m for m in unique if not m.startswith("resume after"))
    return [m for m in unique if not (m.startswith("resume after") and m[13:] in said)]


def status_table(
    doc: dict[str, Any], *, running: bool, used_today: int | None, page_size: int = 100
) -> str:
    table = Table(title=f"pipeline {doc.get('pipeline')}", title_justify="left")
    for column in ("resource", "watermark", "rows loaded", "traversal in progress", "windows"):
        table.add_column(column)
    for name, res in (doc.get("resources") or {}).items():
        trav = res.get("traversal")
        trav_text = (
            "-"
            if not trav
            else f"{trav.get('kind')} since {trav.get('since') or 'the beginning'}, "
            f"{trav.get('pages', 0)} pages"
            + (f" of ~{trav['total']:,} records" if trav.get("total") is not None else "")
            + (f", {len(trav['ranges'])} ranges" if len(trav.get("ranges") or ()) > 1 else "")
        )
        windows = res.get("windows_in_progress") or []
        table.add_row(
            name,
            res.get("watermark") or "-",
            f"{res.get('rows_loaded', 0):,}",
            trav_text,
            ", ".join(f"{w.get('since')}..{w.get('until')}" for w in windows) or "-",
        )
    resources = doc.get("resources") or {}
    lines = [render(table), *status_lines(resources), *reload_lines(resources, page_size)]
    changes = doc.get("schema_changes") or []
    if changes:
        lines.append("schema changes (last 7 days):")
        lines += [f"  {stamp(str(c.get('detected_at')))} {change_line(c)}" for c in changes]
    lines.append(f"sync running now: {'yes' if running else 'no'}")
    budget = doc.get("daily_request_budget")
    if used_today is not None:
        left = "" if budget is None else f", {max(0, budget - used_today):,} left of {budget:,}"
        lines.append(f"requests used today (UTC): {used_today:,}{left}")
    last = doc.get("last_run")
    if last:
        message = "; ".join(dict.fromkeys(str(last.get("message") or "").split("; ")))
        lines.append(
            f"last run: {last.get('outcome')} (exit {last.get('exit_code')}), kind "
            f"{last.get('kind') or 'sync'}, ended {stamp(last.get('ended_at'))}, "
            f"{last.get('rows', 0):,} rows, {last.get('requests', 0):,} requests"
            + (f"; {message}" if message else "")
        )
        if last.get("quota_spent"):
            lines.append(
                "server's daily quota for this key: spent"
                + (f", resets {last['resume_at']}" if last.get("resume_at") else "")
            )
        if last.get("duckdb_path"):
            lines.append(f"DuckDB file: {last['duckdb_path']}")
    return "\n".join(lines)


def plan_table(
    rows: list[PlanRow], *, per_minute: int, budget: int, left_today: int | None = None
) -> str:
    table = Table(title="ciklek plan", title_justify="left")
    for column in (
        "resource",
        "records",
        "next sync: records",
        "next sync: requests",
        "full backfill: requests",
        "backfill time",
        "backfill days",
    ):
        table.add_column(column, justify="left" if column == "resource" else "right")
    totals = {"next": 0, "full": 0}
    for row in rows:
        totals["next"] += row["next_requests"]
        totals["full"] += row["full_requests"]
        table.add_row(
            row["resource"],
            f"{row['total']:,}",
            f"{row['next_records']:,}",
            f"{row['next_requests']:,}",
            f"{row['full_requests']:,}",
            duration(row["full_requests"] * 60.0 / per_minute),
            f"{math.ceil(row['full_requests'] / budget)}",
        )
    lines = [render(table)]
    lines.append(
        f"next sync: {totals['next']:,} requests, about "
        f"{duration(totals['next'] * 60.0 / per_minute)} at {per_minute}/min; "
        f"full backfill: {totals['full']:,} requests, about "
        f"{duration(totals['full'] * 60.0 / per_minute)}, {math.ceil(totals['full'] / budget)} "
        f"day(s) at a daily budget of {budget:,}"
    )
    if left_today is not None:
        lines.append(_today(totals["next"], totals["full"], left_today))
    return "\n".join(lines)


def _today(next_sync: int, backfill: int, left: int) -> str:
    """Today's remaining budget and what the next sync and a backfill take of it."""

    def share(requests: int) -> str:
        if left <= 0:
            return "none left today"
        if requests <= left:
            return f"{requests / left:.0%} of it"
        return f"all of it and {requests - left:,} more after 00:00 UTC"

    return (
        f"today (UTC): {left:,} requests left of the daily budget; the next sync takes "
        f"{next_sync:,} ({share(next_sync)}), a full backfill {backfill:,} ({share(backfill)})"
    )


def status_lines(resources: Mapping[str, Mapping[str, object]]) -> list[str]:
    """`ciklek status`: a sweep in progress, a refused result, the last completed sweep."""
    lines: list[str] = []
    for name, res in resources.items():
        trav, pending, last = res.get("sweep"), res.get("sweep_pending"), res.get("last_sweep")
        if isinstance(trav, dict):
            total = trav.get("total")
            of = f" of ~{total:,} records" if isinstance(total, int) else ""
            lines.append(
                f"sweep {name}: in progress since {trav.get('started_at')}, "
                f"{trav.get('pages', 0)} pages, {trav.get('received', 0):,} records{of}"
            )
        if isinstance(pending, dict):
            refused = pending.get("refused")
            why = f"refused ({refused.get('reason')})" if isinstance(refused, dict) else "to mark"
            lines.append(
                f"sweep {name}: completed {pending.get('completed_at')}, {why}; "
                "`ciklek sweep --force` applies it"
            )
        if isinstance(last, dict):
            verb = "removed" if last.get("mode") == "hard" else "marked deleted"
            lines.append(
                f"last sweep {name}: completed {last.get('completed_at')}, "
                f"{last.get('marked', 0)} row(s) {verb}"
            )
    return lines


def plan_lines(totals: Mapping[str, int], settings: Settings) -> list[str]:
    """`ciklek plan`: what a sweep of each resource costs (N records -> ceil(N / page) requests)
    and how many days it takes with the share of the budget a sweep may use."""
    per_day = max(1, settings.daily_request_budget - settings.sweep_reserve)
    lines = []
    for name, total in totals.items():
        requests = max(1, math.ceil(total / settings.page_size))
        runs = math.ceil(requests / settings.sweep_run_requests)
        lines.append(
            f"sweep {name}: {requests:,} requests, {math.ceil(requests / per_day)} day(s) at "
            f"{per_day:,} requests/day (budget less sweep_reserve), {runs} run(s) of "
            f"sweep_run_requests {settings.sweep_run_requests:,}"
        )
    if settings.lookback_seconds > 0 and totals:
        lines.append(
            "each sweep then re-reads what changed while it ran (since its start less "
            f"lookback_seconds {settings.lookback_seconds:g}): one request per "
            f"{settings.page_size} records changed meanwhile, at least one per resource"
        )
    return lines


def reload_lines(resources: Mapping[str, Mapping[str, object]], page_size: int) -> list[str]:
    """`status` and `plan`: a reload in progress, what it has left to fetch, and where it is
    built (queries see the live table until it is swapped in)."""
    lines: list[str] = []
    for name, res in resources.items():
        trav = res.get("traversal")
        if isinstance(trav, dict) and trav.get("kind") == "refresh":
            total, received = trav.get("total"), trav.get("received") or 0
            left = ""
            if isinstance(total, int) and isinstance(received, int):
                requests = max(1, math.ceil(max(0, total - received) / page_size))
                left = f", ~{requests:,} request(s) left ({received:,} of ~{total:,} records)"
            where = (
                "into the live tables (--drop-first)"
                if trav.get("in_place")
                else f"beside the live tables (_ciklek_reload_{name}, swapped in when complete)"
            )
            lines.append(
                f"reload {name}: in progress since {stamp(str(trav.get('started_at') or ''))}, "
                f"{trav.get('pages', 0)} pages{left}; built {where}"
            )
        if res.get("swap_pending"):
            lines.append(f"reload {name}: complete, swapped in by the next run")
    return lines
