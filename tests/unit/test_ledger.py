"""The quota ledger (requests per UTC day per key, across runs) and `--since`/`--until` bounds.

Time is injected: "now" is whatever the test says, so the UTC day boundary is exact.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from connector.api.ledger import QuotaLedger, read_ledger, used_on
from connector.errors import AllowanceSpent, BudgetSpent, ConfigError, TryLater
from connector.runs.options import parse_bound

DAY1 = dt.datetime(2026, 11, 27, 23, 59, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def ledger(
    path: Path, clock: Clock, *, key: str = "k1", pipeline: str = "p", **kw: int
) -> QuotaLedger:
    budget = kw.pop("daily_budget", 100)
    return QuotaLedger(path, key, pipeline, daily_budget=budget, now=clock, **kw)  # type: ignore[arg-type]


def charge(led: QuotaLedger, n: int) -> None:
    for _ in range(n):
        led.charge()


def test_counts_persist_per_utc_day_per_key_across_runs(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    first = ledger(path, clock)
    charge(first, 3)
    first.flush()
    second = ledger(path, clock)  # the next run, same UTC day
    assert second.used_today == 3
    assert second.left_today == 97
    charge(second, 2)
    second.flush()
    assert used_on(path, "k1", "2026-11-27") == {"p": 5}
    assert ledger(path, clock, key="k2").used_today == 0  # another key has its own quota
    assert "k2" not in read_ledger(path)  # nothing written for a key that sent nothing


def test_pipelines_on_one_key_share_the_daily_budget(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    a = ledger(path, clock, pipeline="a", daily_budget=5)
    charge(a, 3)
    a.flush()
    b = ledger(path, clock, pipeline="b", daily_budget=5)
    charge(b, 2)
    with pytest.raises(BudgetSpent, match="daily request budget 5 reached") as caught:
        b.charge()
    assert caught.value.resume_at == dt.datetime(2026, 11, 28, tzinfo=dt.UTC)  # next 00:00 UTC
    b.flush()
    assert used_on(path, "k1", "2026-11-27") == {"a": 3, "b": 2}


def test_max_requests_stops_before_the_next_request(tmp_path: Path) -> None:
    led = ledger(tmp_path / "ledger.json", Clock(DAY1), max_requests=4)
    charge(led, 4)
    with pytest.raises(BudgetSpent, match="--max-requests 4 reached") as caught:
        led.charge()
    assert isinstance(caught.value, TryLater)  # exit 75, progress kept
    assert caught.value.resume_at is None  # nothing to wait for: run again
    assert led.run_requests == 4


def test_a_new_utc_day_starts_from_zero_and_keeps_yesterday(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    led = ledger(path, clock, daily_budget=3)
    charge(led, 3)
    with pytest.raises(BudgetSpent):
        led.charge()
    clock.now = DAY1 + dt.timedelta(minutes=2)  # 00:01 UTC the next day
    charge(led, 2)
    led.flush()
    assert used_on(path, "k1", "2026-11-27") == {"p": 3}
    assert used_on(path, "k1", "2026-11-28") == {"p": 2}


def test_the_day_is_the_utc_day_whatever_the_local_offset(tmp_path: Path) -> None:
    # 03:00 on the 28th at +05:30 is 21:30 UTC on the 27th.
    local = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    path = tmp_path / "ledger.json"
    led = ledger(path, Clock(local))
    led.charge()
    led.flush()
    assert used_on(path, "k1", "2026-11-27") == {"p": 1}


def test_each_request_is_counted_on_disk_before_it_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    led = ledger(path, Clock(DAY1), block=5)
    led.charge()
    assert used_on(path, "k1", "2026-11-27") == {"p": 5}  # a block reserved ahead, on disk
    assert led.used_today == 1 and led.reservations == 1
    charge(led, 4)
    assert used_on(path, "k1", "2026-11-27") == {"p": 5}
    led.charge()  # the sixth: the next block
    assert used_on(path, "k1", "2026-11-27") == {"p": 10} and led.reservations == 2
    led.flush()  # a commit or the end: the unused part is given back
    assert used_on(path, "k1", "2026-11-27") == {"p": 6}


def test_a_killed_runs_reservation_is_counted_once_by_the_next_run(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    killed = ledger(path, clock, block=5)
    charge(killed, 2)  # then SIGKILL: nothing is given back
    nxt = ledger(path, clock, block=5)
    assert nxt.used_today == 5  # what it may have sent, never less
    charge(nxt, 3)
    nxt.flush()
    assert used_on(path, "k1", "2026-11-27") == {"p": 8}


def test_processes_sharing_a_key_never_exceed_the_budget_together(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    a = ledger(path, clock, pipeline="a", daily_budget=12, block=5)
    b = ledger(path, clock, pipeline="b", daily_budget=12, block=5)
    sent = 0
    for led in (a, b, a, b, a, b, a, b, a, b, a, b, a, b):
        try:
            led.charge()
        except BudgetSpent:
            continue
        sent += 1
    assert sent == 12  # each reservation re-reads the other's under the file lock
    a.flush()
    b.flush()
    assert sum(used_on(path, "k1", "2026-11-27").values()) == 12


def test_beyond_the_allowance_the_warehouse_knows_the_chunk_ends(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    led = ledger(path, clock, block=10)
    led.allow("2026-11-27", 3)
    charge(led, 3)
    assert used_on(path, "k1", "2026-11-27") == {"p": 3}  # reserved within the allowance only
    with pytest.raises(AllowanceSpent):
        led.charge()
    led.allow("2026-11-27", 5)  # the chunk's load recorded more
    charge(led, 2)
    clock.now = DAY1 + dt.timedelta(minutes=2)  # a new UTC day: the allowance was for yesterday
    with pytest.raises(AllowanceSpent):
        led.charge()
    led.allow("2026-11-28", 1)
    led.charge()
    assert led.requests_today == 1 and led.run_requests == 6


def test_only_the_last_seven_days_are_kept(tmp_path: Path) -> None:
    path, clock = tmp_path / "ledger.json", Clock(DAY1)
    for day in range(9):
        clock.now = DAY1 + dt.timedelta(days=day)
        led = ledger(path, clock)
        led.charge()
        led.flush()
    days = sorted(json.loads(path.read_text())["k1"])
    assert days == [(DAY1 + dt.timedelta(days=d)).date().isoformat() for d in range(2, 9)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-01-01T09:00:00Z", dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)),
        ("2026-01-01T09:00:00+05:30", dt.datetime(2026, 1, 1, 3, 30, tzinfo=dt.UTC)),
        ("2025-12-31T20:00:00-08:00", dt.datetime(2026, 1, 1, 4, tzinfo=dt.UTC)),
    ],
)
def test_since_until_bounds_are_utc_instants(text: str, expected: dt.datetime) -> None:
    bound = parse_bound(text, "--since")
    assert bound == expected
    assert bound is not None and bound.utcoffset() == dt.timedelta(0)


def test_a_bound_that_is_not_a_time_is_bad_input() -> None:
    with pytest.raises(ConfigError, match="--until 'yesterday'"):
        parse_bound("yesterday", "--until")


# --- private files -------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def test_ledger_files_are_owner_only_and_leave_no_temp_files(tmp_path: Path) -> None:
    home = tmp_path / "home"  # created by the first flush
    led = ledger(home / "ledger.json", Clock(DAY1))
    charge(led, 2)
    assert _mode(home) == 0o700
    assert _mode(home / "ledger.json") == 0o600 and _mode(home / "ledger.lock") == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["ledger.json", "ledger.lock"]


def test_a_symlink_planted_at_the_ledger_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "ledger.json").symlink_to(victim)
    led = ledger(home / "ledger.json", Clock(DAY1))
    charge(led, 1)
    led.flush()
    assert victim.read_text() == "precious"
    assert not (home / "ledger.json").is_symlink()
    assert used_on(home / "ledger.json", "k1", "2026-11-27") == {"p": 1}


def test_a_ledger_in_a_dir_others_can_write_is_refused_before_any_charge(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o777)
    with pytest.raises(ConfigError, match="chmod 700"):
        ledger(home / "ledger.json", Clock(DAY1))


def test_request_log_record_takes_endpoint_and_status_only() -> None:
    from connector.api.ledger import RequestLog

    log = RequestLog()
    log.record("/v1/orders", 429)
    log.add_wait("/v1/orders", 2.5)
    assert (log.requests, log.rate_limited, log.waited_seconds) == (1, 1, 2.5)
    with pytest.raises(TypeError):
        log.record("/v1/orders", 200, waited=1.0)  # type: ignore[call-arg]


def test_a_hand_edited_ledger_of_the_wrong_shape_is_skipped_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(
        json.dumps({"k1": {"2026-11-27": {"p": 4, "q": "x", "r": True}, "bad": 3}, "k2": []})
    )
    assert read_ledger(path) == {"k1": {"2026-11-27": {"p": 4}, "bad": {}}}
    led = ledger(path, Clock(DAY1))
    assert led.used_today == 4
