"""Which limit stopped a run, in the words `sync_complete` shows, and its label in metadata."""

from __future__ import annotations

import datetime as dt
import importlib.util
from typing import Any

import pytest

from connector.errors import BudgetSpent, CiklekUnavailable, LockHeld, QuotaExhausted
from tests.sandbox_proc import REPO_ROOT

MIDNIGHT = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


def _outcome() -> Any:
    pytest.importorskip("dagster")
    path = REPO_ROOT / "pipelines" / "dagster_definitions.py"
    spec = importlib.util.spec_from_file_location("ciklek_dagster_outcome_unit", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    import ciklek_dagster.outcome as outcome

    return outcome


@pytest.mark.parametrize(
    ("stop", "label", "words"),
    [
        (QuotaExhausted("daily quota exhausted on /orders", resume_at=MIDNIGHT), "api_quota",
         "the API's quota for this key"),
        (BudgetSpent("daily request budget 50,000 reached", resume_at=MIDNIGHT),
         "own_daily_budget", "the connector's own daily_request_budget"),
        (BudgetSpent("--max-requests 3 reached"), "run_budget", "this run's request budget"),
        (CiklekUnavailable("down", endpoint="/orders", last_status=503), "api_unavailable",
         "the API, still failing"),
        (LockHeld("another sync is running"), "lock", "another run of this pipeline"),
    ],
)  # fmt: skip
def test_each_stop_is_named_by_its_limit(stop: Any, label: str, words: str) -> None:
    outcome = _outcome()
    assert outcome.stopped_by(stop)[0] == label
    assert outcome.stop_description(stop, None).startswith(f"Stopped by {words}")


def test_the_resume_time_is_said_once() -> None:
    outcome = _outcome()
    said = QuotaExhausted("daily quota exhausted; resume after 2026-12-05T00:00:00Z")
    text = outcome.stop_description(said, MIDNIGHT)
    assert text.count("2026-12-05T00:00:00Z") == 1
    budget = BudgetSpent("daily request budget 50,000 reached; try again after 00:00 UTC")
    text = outcome.stop_description(budget, MIDNIGHT)
    assert "Resumes at 2026-12-05T00:00:00Z." in text
    assert "Resumes" not in outcome.stop_description(BudgetSpent("--max-requests 3"), None)
