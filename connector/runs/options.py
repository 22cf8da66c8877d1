"""What one run is asked to do: `SyncOptions` (the flags of `ciklek sync` / `ciklek sweep`), the
checks the flags must pass together, and the run's kind.

Why apart from the driver: the CLI, the cron script, Dagster and any Python caller build the
same options; a bad combination is refused (exit 2) before anything is opened or sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import IO

import pendulum
import pendulum.parsing.exceptions

from connector.errors import ConfigError
from connector.traversal.run_config import Window


@dataclass
class SyncOptions:
    """`ciklek sync` flags; None means "from settings / default"."""

    resources: list[str] | None = None
    destination: str | None = None
    dataset: str = "ciklek"
    pipeline: str = "ciklek"
    since: str | None = None
    until: str | None = None
    full_refresh: bool = False
    drop_first: bool = False  # --drop-first: a reload empties the tables first (no swap)
    max_requests: int | None = None
    strict: bool = False
    page_size: int | None = None
    progress: bool | None = None
    duckdb_file: str | None = None
    log_format: str = "text"  # "json": events as one JSON object per line on stderr
    debug: bool = False  # dlt logs at INFO instead of ERROR (unless the user set a level)
    sweep: bool = False  # `ciklek sweep`: full traversals that mark rows deleted upstream
    force: bool = False  # `ciklek sweep --force`: apply a result the guard refused
    # Where the run's event lines (retries, waits, progress) go instead of stderr: Dagster
    # passes a stream into its own log, so the UI shows them.
    log_stream: IO[str] | None = None


def parse_bound(value: str | None, flag: str) -> dt.datetime | None:
    """`--since` / `--until`: any ISO 8601 form pendulum parses; a bare date is 00:00 UTC.

    pendulum rather than `fromisoformat` because users type week dates and basic formats too,
    and its default zone for offset-less input is UTC, which is the contract's meaning.
    """
    if value is None:
        return None
    try:
        parsed = pendulum.parse(value.strip())
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        parsed = None
    if not isinstance(parsed, dt.datetime):
        raise ConfigError(
            f"{flag} {value!r} is not a date or ISO 8601 timestamp "
            "(e.g. 2026-01-01 or 2026-01-01T09:00:00Z)"
        )
    return parsed.astimezone(dt.UTC)


def check_options(options: SyncOptions) -> Window | None:
    """The flags that must agree with each other; the backfill window, if any."""
    since = parse_bound(options.since, "--since")
    until = parse_bound(options.until, "--until")
    if since and until and until <= since:
        raise ConfigError("--until must be later than --since")
    if options.full_refresh and (since or until):
        raise ConfigError("--full-refresh reloads everything; it cannot be combined with a window")
    if options.drop_first and not options.full_refresh:
        raise ConfigError("--drop-first applies to --full-refresh only")
    if options.sweep and (since or until or options.full_refresh):
        raise ConfigError("a sweep traverses everything: no --since, --until or --full-refresh")
    if options.force and not options.sweep:
        raise ConfigError("--force applies to `ciklek sweep` only")
    if options.max_requests is not None and options.max_requests < 1:
        raise ConfigError("--max-requests must be at least 1")
    return (since, until) if since or until else None


def run_kind(options: SyncOptions) -> str:
    """What kind of run this is, for the run log and the summary: sync, sweep, window, refresh."""
    if options.sweep:
        return "sweep"
    if options.full_refresh:
        return "refresh"
    if options.since or options.until:
        return "window"
    return "sync"
