"""The exit decision of a run: which code, and the messages that explain it.

Why one place: every resource reports its own error, stop, rejects and sweep verdict; the run's
one exit code is the first of them in the contract's precedence (1 > 3 > 7 > 75 > 6 > 4 > 0),
and each line a person reads comes from `connector.errors.explain`, the same map the CLI uses.
"""

from __future__ import annotations

from connector.errors import (
    EXIT_OK,
    EXIT_PRECEDENCE,
    EXIT_STRICT,
    EXIT_SWEEP_REFUSED,
    EXIT_TEMPFAIL,
    BudgetSpent,
    MissingScope,
    QuotaExhausted,
    TryLater,
    explain,
)
from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult, error_for
from connector.timefmt import stamp
from connector.warehouse.faults import destination_exit_code

KEPT = "progress is kept: the next run continues where this one stopped"


def decide(result: SyncResult, options: SyncOptions) -> None:
    """Set `result.exit_code`, its messages, `resume_at` and the typed error behind the code."""
    settings, report = result.settings, result.report
    codes: list[int] = []
    for name in settings.resources:
        outcome = report.outcome(name)
        error = outcome.error
        if isinstance(error, MissingScope) and not settings.resources_named:
            result.skipped[name] = (
                f"key lacks scope {error.scope or settings.catalogue[name].scope}"
            )
            continue
        if error is not None:
            explained = explain(error, resource=name)
            codes.append(explained.code)
            result.messages.append(explained.line)
        if outcome.stop is not None:
            codes.append(EXIT_TEMPFAIL)
            if isinstance(outcome.stop, QuotaExhausted | BudgetSpent) and outcome.stop.resume_at:
                result.resume_at = outcome.stop.resume_at
        if outcome.rejects and options.strict:
            codes.append(EXIT_STRICT)
        if outcome.sweep_refused is not None:
            codes.append(EXIT_SWEEP_REFUSED)
            result.messages.append(f"{name}: {outcome.sweep_refused}")
    # In the run's resource order, not the order the walks (running at once) happened to stop
    # in: the same stop is named the same way however the threads were scheduled.
    stops = [report.outcome(name).stop for name in settings.resources]
    stops += report.stops()
    for text in stop_texts([stop for stop in stops if stop is not None]):
        result.messages.append(f"stopped early: {text}")
    if result.resume_at is not None:
        result.messages.append(f"resume after {stamp(result.resume_at)}")
    if EXIT_TEMPFAIL in codes and not any("progress is kept" in m for m in result.messages):
        result.messages.append(KEPT)
    # the warehouse failed mid-run
    if (fault_code := destination_exit_code(result.error)) is not None:
        codes.append(fault_code)
    result.exit_code = next((c for c in EXIT_PRECEDENCE if c in codes), EXIT_OK)
    result.error = error_for(result)


def stop_texts(stops: list[TryLater]) -> list[str]:
    """Each stop once: a spent quota or budget once, however many resources walking at once
    ran into it (each on its own endpoint)."""
    texts: dict[object, str] = {}
    for stop in stops:
        key = type(stop) if isinstance(stop, QuotaExhausted | BudgetSpent) else str(stop)
        texts.setdefault(key, str(stop))
    return sorted(set(texts.values()))
