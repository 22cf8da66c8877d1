"""How a run's outcome reaches Dagster: a result, a retry that says why, or a failure.

Why one place: the assets and the sweep job map the same exit codes the same way, through the
connector's one map (`connector.errors.explain`) and the run's own messages. A retry is logged
with its cause before Dagster's generic "requested a retry" event, and carries the cause in
that event (its error's message, and a `Failure` cause with metadata that Dagster keeps when
the retries run out).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

from dagster import Failure, RetryRequested

from ciklek_dagster.config import CiklekConfig
from connector.config.redaction import scrub
from connector.errors import (
    EXIT_BUG,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_TEMPFAIL,
    BudgetSpent,
    CiklekUnavailable,
    DestinationBusy,
    DestinationUnavailable,
    LockHeld,
    QuotaExhausted,
    StopRequested,
    TryLater,
    explain,
)
from connector.runs.result import SyncResult
from connector.timefmt import stamp

Log = Callable[[str], None]


class RetryLater(RetryRequested):
    """Dagster's RetryRequested with the reason as its message (Dagster's own has none), so
    the retry event in the UI says why."""

    def __init__(self, reason: str, *, max_retries: int, seconds: float) -> None:
        super().__init__(max_retries=max_retries, seconds_to_wait=seconds)
        self.reason = reason
        self.args = (reason,)


@dataclass(frozen=True)
class Verdict:
    """What Dagster does with a finished run: done (checks decide), partial (materialise what
    was loaded, `sync_complete` fails), retry (within the cap), or fail (a person acts)."""

    kind: Literal["done", "partial", "retry", "fail"]
    reason: str
    seconds: float = 0.0


# (metadata label, the words an operator reads) per kind of stop
_STOPS: tuple[tuple[type[TryLater], str, str], ...] = (
    (QuotaExhausted, "api_quota", "the API's quota for this key (HTTP 429)"),
    (CiklekUnavailable, "api_unavailable", "the API, still failing after retries"),
    (LockHeld, "lock", "another run of this pipeline holding its lock"),
    (DestinationUnavailable, "destination_unavailable", "the warehouse, unreachable or locked"),
    (DestinationBusy, "destination_busy", "the warehouse, locked by another process"),
    (StopRequested, "signal", "a SIGTERM/SIGINT"),
)


def stopped_by(stop: TryLater) -> tuple[str, str]:
    """(label, words) of the limit or event that stopped a run."""
    if isinstance(stop, BudgetSpent):
        if stop.resume_at is not None:
            return "own_daily_budget", "the connector's own daily_request_budget"
        return "run_budget", "this run's request budget (max_requests or sweep_run_requests)"
    for kind, label, words in _STOPS:
        if isinstance(stop, kind):
            return label, words
    return "try_later", "a stop that clears later"


def stop_description(stop: TryLater, resume_at: dt.datetime | None) -> str:
    """One paragraph: which limit stopped the run, what it said, and when it resumes."""
    _, words = stopped_by(stop)
    said = str(stop)
    when = ""  # once: the stop's own words may already say when
    if resume_at is not None and stamp(resume_at) not in said:
        when = f" Resumes at {stamp(resume_at)}."
    return scrub(
        f"Stopped by {words}: {said}.{when} The next run continues from the last committed "
        "chunk (what was loaded is in the table)."
    )


def retry(log: Log, reason: str, *, max_retries: int, seconds: float) -> NoReturn:
    """Log the cause, then ask Dagster for a retry that carries it."""
    line = scrub(reason)
    log(f"ciklek: {line}; retrying in {seconds:g} s")
    cause = Failure(description=line, metadata={"cause": line, "retry_in_seconds": seconds})
    raise RetryLater(line, max_retries=max_retries, seconds=seconds) from cause


def raise_for_exception(exc: Exception, log: Log, config: CiklekConfig) -> NoReturn:
    """An exception before the run had a result (the lock held, bad config, a refused key...)."""
    explained = explain(exc)
    if explained.code == EXIT_TEMPFAIL and not isinstance(exc, StopRequested):
        retry(log, explained.line, max_retries=config.max_retries, seconds=config.retry_seconds)
    line = scrub(f"ciklek: {explained.line}")
    failure = Failure(line, allow_retries=False, metadata={"exit_code": explained.code})
    raise failure from (exc if explained.code == EXIT_BUG else None)


def judge(result: SyncResult, config: CiklekConfig) -> Verdict:
    """The verdict on a finished run, from its exit code and the typed error behind it."""
    code = result.exit_code
    reason = scrub("; ".join(dict.fromkeys(result.messages)) or f"exit code {code}")
    if code in (EXIT_OK, EXIT_STRICT):
        return Verdict("done", reason)
    if code != EXIT_TEMPFAIL or isinstance(result.error, StopRequested):
        return Verdict("fail", reason)
    wait = retry_wait(result, config)
    return Verdict("retry", reason, wait) if wait is not None else Verdict("partial", reason)


def retry_wait(result: SyncResult, config: CiklekConfig) -> float | None:
    """Seconds until a retry can continue, if within the cap; None: materialise the partial."""
    stop = result.error
    if isinstance(stop, QuotaExhausted | BudgetSpent):
        if result.resume_at is None:
            return None  # a run budget: the next scheduled run continues
        wait = (result.resume_at - dt.datetime.now(dt.UTC)).total_seconds()
        return max(1.0, wait) if wait <= config.retry_cap_seconds else None
    seconds = config.retry_seconds
    return seconds if config.retry_cap_seconds >= seconds else None


def fail(verdict: Verdict, result: SyncResult) -> NoReturn:
    """The run needs a person: its messages as the failure's description."""
    line = f"ciklek: {verdict.reason}"
    raise Failure(line, allow_retries=False, metadata={"exit_code": result.exit_code})


def op_ending(
    verdict: Verdict, result: SyncResult, log: Log, config: CiklekConfig
) -> Exception | None:
    """The exception that ends the op for a verdict (a Failure, or a RetryLater carrying its
    cause), returned rather than raised: the caller yields its events first, then raises it."""
    try:
        if verdict.kind == "fail":
            fail(verdict, result)
        if verdict.kind == "retry":
            retry(log, verdict.reason, max_retries=config.max_retries, seconds=verdict.seconds)
    except Exception as stop:  # a Failure or a RetryLater, with its cause
        return stop
    return None
