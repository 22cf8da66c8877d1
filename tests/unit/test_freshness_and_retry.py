"""Pure decisions: which run counts as a complete sync, its age, and how long Dagster waits."""

from __future__ import annotations

import datetime as dt
import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest

from connector.errors import BudgetSpent, CiklekUnavailable, QuotaExhausted
from connector.runs.freshness import complete_entry, judge, local_last_complete
from tests.sandbox_proc import REPO_ROOT

NOW = dt.datetime.now(dt.UTC)
ALL = ("orders", "customers", "products")


def row(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "started_at": NOW - dt.timedelta(hours=1),
        "outcome": "completed",
        "resources": ",".join(ALL),
        "requests": 3,
        "kind": "sync",
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "counts"),
    [
        ({}, True),
        ({"outcome": "completed_with_rejects"}, True),
        ({"kind": "refresh"}, True),
        ({"kind": "window"}, False),
        ({"outcome": "stopped_try_later"}, False),
        ({"outcome": "credentials_refused"}, False),
    ],
)
def test_only_complete_syncs_are_remembered(changes: dict[str, object], counts: bool) -> None:
    assert (complete_entry(row(**changes)) is not None) is counts


def test_age_is_judged_from_the_start_and_against_every_configured_resource() -> None:
    doc = {"last_complete_sync": complete_entry(row())}
    last = local_last_complete(doc)
    assert last is not None
    assert judge(last, ALL, dt.timedelta(hours=2), NOW).fresh
    stale = judge(last, ALL, dt.timedelta(minutes=30), NOW)
    assert not stale.fresh and "60m ago" in stale.message
    partial = {"last_complete_sync": complete_entry(row(resources="orders"))}
    assert not judge(local_last_complete(partial), ALL, dt.timedelta(days=1)).fresh
    assert not judge(None, ALL, dt.timedelta(days=1)).fresh


def _dagster_outcome() -> tuple[Any, Any]:
    """`retry_wait` and `CiklekConfig` of the Dagster package (loaded by path, as Dagster does)."""
    pytest.importorskip("dagster")
    path = REPO_ROOT / "pipelines" / "dagster_definitions.py"
    spec = importlib.util.spec_from_file_location("ciklek_dagster_unit", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    from ciklek_dagster.config import CiklekConfig
    from ciklek_dagster.outcome import retry_wait

    return retry_wait, CiklekConfig


def test_retry_waits_for_a_short_stop_and_not_for_the_daily_quota() -> None:
    retry_wait, config = _dagster_outcome()
    capped = config(retry_cap_seconds=600)
    now = dt.datetime.now(dt.UTC)
    soon = now + dt.timedelta(seconds=40)
    midnight = now + dt.timedelta(hours=5)
    short = SimpleNamespace(error=QuotaExhausted("rate limited", resume_at=soon), resume_at=soon)
    assert 30 < retry_wait(short, capped) <= 40
    daily = SimpleNamespace(error=QuotaExhausted("daily", resume_at=midnight), resume_at=midnight)
    assert retry_wait(daily, capped) is None
    run_budget = SimpleNamespace(error=BudgetSpent("--max-requests"), resume_at=None)
    assert retry_wait(run_budget, capped) is None
    down = SimpleNamespace(
        error=CiklekUnavailable("down", endpoint="/orders", last_status=503), resume_at=None
    )
    assert retry_wait(down, capped) == 60
    # a cap below the back-off: materialise instead
    assert retry_wait(down, config(retry_cap_seconds=30)) is None
    assert retry_wait(down, config(retry_seconds=5, retry_cap_seconds=30)) == 5
