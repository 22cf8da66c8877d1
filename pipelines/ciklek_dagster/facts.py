"""What a run did, once per run: requests, waits, the API's allowance and the own budget.

Why once: the tables' materialisations carry what belongs to each table (rows, columns,
watermark); the run's own figures would read as per-table numbers there. They go on one
observation of the upstream API asset and in one summary line of the Dagster log. The API's
allowance (its `X-RateLimit-*` headers) and the connector's own daily budget
(`daily_request_budget`, counted in its ledger) are two different numbers, each named so.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dagster import MetadataValue

from connector.runs.result import SyncResult
from connector.runs.run_row import OUTCOMES
from connector.timefmt import stamp

# Metadata as Dagster takes it (values: numbers, text, MetadataValue, TableSchema...).
Metadata = dict[str, Any]


def endpoint_label(result: SyncResult, endpoint: str) -> str:
    """`/orders` as the request log names it → `/v1/orders` as the API documents it."""
    return urlsplit(result.settings.base_url).path.rstrip("/") + endpoint


def quota_metadata(result: SyncResult) -> Metadata:
    """The API's allowance as its last response said, and the connector's own daily budget."""
    seen = result.api_rate_limit
    metadata: Metadata = {
        "own_daily_budget": result.quota.daily_budget,
        "own_budget_used_today": result.quota.used_today,
        "own_budget_left_today": result.quota.left_today,
    }
    if seen is None:
        metadata["api_ratelimit_remaining"] = MetadataValue.text("unknown: no response this run")
        return metadata
    if seen.remaining is not None:
        metadata["api_ratelimit_remaining"] = seen.remaining
    if seen.limit is not None:
        metadata["api_ratelimit_limit"] = seen.limit
    if seen.reset_at is not None:
        metadata["api_ratelimit_reset"] = MetadataValue.timestamp(seen.reset_at)
    metadata["api_last_status"] = seen.status
    return metadata


def run_metadata(result: SyncResult) -> Metadata:
    """The run's figures (the observation of the API asset)."""
    by_endpoint = {
        endpoint_label(result, name): stats.requests
        for name, stats in sorted(result.log.endpoints.items())
    }
    return {
        "ciklek_run_id": result.run_id,
        "kind": result.kind,
        "outcome": OUTCOMES.get(result.exit_code, "failed"),
        "exit_code": result.exit_code,
        "requests": result.log.requests,
        "requests_by_endpoint": MetadataValue.json(by_endpoint),
        "rate_limited_429s": result.log.rate_limited,
        "waited_seconds": round(result.log.waited_seconds, 1),
        "elapsed_seconds": round(result.elapsed, 1),
        **quota_metadata(result),
    }


def summary_line(result: SyncResult) -> str:
    """The run in one line for the Dagster log (the CLI's summary goes to a terminal)."""
    parts = []
    for name, out in result.report.outcomes.items():
        items = f" (+{out.child_rows:,} line items)" if out.child_rows else ""
        marked = f", {out.marked_deleted:,} marked deleted" if out.marked_deleted else ""
        parts.append(f"{name} {out.rows:,} rows{items}{marked}")
    seen = result.api_rate_limit
    api = "API rate limit: no response"
    if seen is not None and seen.remaining is not None:
        reset = f" until {stamp_unix(seen.reset_at)}" if seen.reset_at else ""
        api = f"API rate limit: {seen.remaining:,} of {seen.limit or '?'} left{reset}"
    own = f"own daily budget: {result.quota.left_today:,} of {result.quota.daily_budget:,} left"
    return (
        f"ciklek {result.kind} {OUTCOMES.get(result.exit_code, 'failed')} "
        f"(exit {result.exit_code}): {', '.join(parts) or 'nothing synced'}; "
        f"{result.log.requests:,} requests ({result.log.rate_limited} answered 429, "
        f"{result.log.waited_seconds:.1f} s waiting); {api}; {own}"
    )


def stamp_unix(seconds: float) -> str:
    return stamp(dt.datetime.fromtimestamp(seconds, dt.UTC))


class LogStream(io.StringIO):
    """A text stream whose every line goes to a logger (the run's event lines into Dagster's
    log, where the UI shows them, instead of stderr)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self._emit = emit
        self._pending = ""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line.strip():
                self._emit(line)
        return len(text)
