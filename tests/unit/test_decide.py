"""The exit decision names a stop the same way however the walks were scheduled."""

from __future__ import annotations

import datetime as dt

from connector.api.ledger import RequestLog
from connector.config.settings import load_settings
from connector.errors import EXIT_TEMPFAIL, QuotaExhausted
from connector.runs.decide import decide
from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.traversal.run_report import RunReport

RESET = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def _decided(stopped_first: list[str]) -> SyncResult:
    """A run whose resources hit the spent daily quota in the order given."""
    report = RunReport()
    for name in stopped_first:
        report.outcome(name).stop = QuotaExhausted(
            f"daily quota exhausted on /{name}", resume_at=RESET
        )
    result = SyncResult(
        exit_code=0,
        settings=load_settings(),
        report=report,
        log=RequestLog(),
        quota=None,  # type: ignore[arg-type]  # not read by the decision
        elapsed=0.0,
    )
    decide(result, SyncOptions())
    return result


def test_a_spent_quota_is_named_by_the_first_resource_in_run_order() -> None:
    # Three walks at once ran into the one quota; under load products' 429 came first.
    for order in (["products", "customers", "orders"], ["orders", "products", "customers"]):
        result = _decided(order)
        assert result.exit_code == EXIT_TEMPFAIL
        stops = [m for m in result.messages if m.startswith("stopped early")]
        assert stops == ["stopped early: daily quota exhausted on /orders"], (order, stops)
        assert "resume after 2026-12-06T00:00:00Z" in result.messages
