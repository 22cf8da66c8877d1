"""What one run did: `SyncResult`, and the typed error behind its exit code.

Why the error lives on the result: a Python caller of `run_sync` (like httpx's
`raise_for_status()`), a plain `pipeline.run(ciklek_source())` and the Dagster assets all turn
"what happened" into "raise or not"; they must agree on which typed error stands for a run, so
the choice is made once: the error behind the run's exit code, never a re-worded copy (callers
`except` by type).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from connector.api.ledger import QuotaLedger, RequestLog
from connector.api.limiter import RateLimitHeaders
from connector.config.settings import Settings
from connector.errors import (
    EXIT_AUTH,
    EXIT_BUG,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_TEMPFAIL,
    CiklekError,
    MissingScope,
    RejectsFound,
    SyncFailed,
    Unauthorized,
)
from connector.traversal.run_report import RunReport


@dataclass
class SyncResult:
    exit_code: int
    settings: Settings
    report: RunReport
    log: RequestLog
    quota: QuotaLedger
    elapsed: float
    watermarks: dict[str, str | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    resume_at: dt.datetime | None = None
    run_id: str = ""
    # The typed error behind a non-zero exit code, for `raise_for_outcome()` and schedulers;
    # set by whatever decides that exit code (an API refusal, a quota stop, a destination fault).
    error: CiklekError | None = None
    # Where and what, for the summary: destination, dataset, the DuckDB file (absolute) when the
    # destination is DuckDB, the run's kind, and the tables a full refresh dropped.
    destination: str = "duckdb"
    dataset: str = "ciklek"
    duckdb_path: str | None = None
    kind: str = "sync"
    dropped: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)  # reloads built beside and swapped in
    # What the API's last response said of the key's allowance (X-RateLimit-*), beside `quota`,
    # which is the connector's own daily budget: a scheduler shows both, each named so.
    api_rate_limit: RateLimitHeaders | None = None

    def raise_for_outcome(self) -> None:
        """Raise the typed error for anything but a clean completion (exit 0), like httpx's
        `raise_for_status()`: Unauthorized, MissingScope, QuotaExhausted, RejectsFound..."""
        error = error_for(self)
        if error is not None:
            raise error


def error_for(result: SyncResult) -> CiklekError | None:
    """The typed error behind `result.exit_code` (None for a clean completion)."""
    if result.exit_code == EXIT_OK:
        return None
    if result.error is not None:
        return result.error
    outcomes = [result.report.outcome(n) for n in result.settings.resources]
    named = result.settings.resources_named
    found: CiklekError | None = None
    if result.exit_code == EXIT_BUG:
        found = _first(o.error for o in outcomes if not isinstance(o.error, Unauthorized))
    elif result.exit_code == EXIT_AUTH:
        found = _first(
            o.error
            for o in outcomes
            if isinstance(o.error, Unauthorized) or (isinstance(o.error, MissingScope) and named)
        )
    elif result.exit_code == EXIT_TEMPFAIL:
        found = _first(o.stop for o in outcomes)
    elif result.exit_code == EXIT_STRICT:
        found = RejectsFound(sum(o.rejects for o in outcomes))
    message = "; ".join(result.messages) or f"sync ended with exit code {result.exit_code}"
    return found or SyncFailed(message, result.exit_code)


def raise_for_outcome(result: SyncResult) -> None:
    """Raise the typed error unless the run completed cleanly (exit 0)."""
    result.raise_for_outcome()


def _first(errors: Iterable[CiklekError | None]) -> CiklekError | None:
    return next((e for e in errors if e is not None), None)
