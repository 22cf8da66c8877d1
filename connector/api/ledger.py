"""Counting requests: per run (for the summary) and per UTC day per key (the quota ledger).

Why persisted: the server's headers describe only the minute window, yet the daily quota of
50,000 is shared by every run and every other user of the key. The ledger lives in the state
dir as JSON, keyed by a hash of the key (never the key), then by UTC day, then by pipeline, so
several pipelines on one key add up and a budget check sees all of them. Like every file in the
state dir it is private (0600, replaced through `mkstemp`, see `connector/config/statedir.py`).
"""

from __future__ import annotations

import collections
import datetime as dt
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from connector.config.settings import Settings
from connector.config.statedir import check_dir, open_private, private_dir, replace_file
from connector.errors import BudgetSpent


@dataclass
class EndpointStats:
    requests: int = 0
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    waited_seconds: float = 0.0


class RequestLog:
    """Every request of this run: endpoint, status, seconds waited. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.endpoints: dict[str, EndpointStats] = collections.defaultdict(EndpointStats)
        self._times: collections.deque[float] = collections.deque(maxlen=10_000)

    def record(self, endpoint: str, status: int | str) -> None:
        with self._lock:
            stats = self.endpoints[endpoint]
            stats.requests += 1
            stats.by_status[str(status)] += 1
            if status == 429:
                stats.rate_limited += 1
            self._times.append(time.monotonic())

    def in_last(self, seconds: float = 60.0) -> int:
        """Requests sent in the last `seconds` (the live requests-per-minute figure)."""
        cutoff = time.monotonic() - seconds
        with self._lock:
            return sum(1 for t in self._times if t >= cutoff)

    def add_wait(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self.endpoints[endpoint].waited_seconds += seconds

    @property
    def requests(self) -> int:
        with self._lock:  # resources walking at once add endpoints
            return sum(s.requests for s in self.endpoints.values())

    @property
    def rate_limited(self) -> int:
        with self._lock:  # resources walking at once add endpoints
            return sum(s.rate_limited for s in self.endpoints.values())

    @property
    def waited_seconds(self) -> float:
        with self._lock:  # resources walking at once add endpoints
            return sum(s.waited_seconds for s in self.endpoints.values())

    def for_endpoint(self, endpoint: str) -> EndpointStats:
        with self._lock:
            return self.endpoints.get(endpoint) or EndpointStats()


def utc_today(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date().isoformat()


class QuotaLedger:
    """Requests used per UTC day per key, persisted; enforces the daily and per-run budgets.

    `charge()` is called once before every request is sent (retries included: the server
    counts them too). Counts reach disk every `flush_every` requests and on `flush()`; a killed
    process can under-count by at most that many, which the default reserve absorbs.
    """

    def __init__(
        self,
        path: Path,
        key_fingerprint: str,
        pipeline: str,
        *,
        daily_budget: int,
        max_requests: int | None = None,
        flush_every: int = 25,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.path = path
        self.key = key_fingerprint
        self.pipeline = pipeline
        self.daily_budget = daily_budget
        self.max_requests = max_requests
        self.flush_every = flush_every
        self._now = now
        self._lock = threading.Lock()
        self.run_requests = 0
        self._pending = 0
        self._day = utc_today(now())
        check_dir(path.parent)  # an unsafe state dir is refused before any request is sent
        self._others_today, self._mine_today = self._read_today()

    def _read_today(self) -> tuple[int, int]:
        data = read_ledger(self.path)
        day = data.get(self.key, {}).get(self._day, {})
        mine = day.get(self.pipeline, 0)
        return sum(day.values()) - mine, mine

    @property
    def used_today(self) -> int:
        with self._lock:
            return self._others_today + self._mine_today

    @property
    def left_today(self) -> int:
        return max(0, self.daily_budget - self.used_today)

    def charge(self) -> None:
        """Count one request about to be sent, or raise BudgetSpent if it would exceed a budget."""
        with self._lock:
            today = utc_today(self._now())
            if today != self._day:
                self._flush_locked()
                self._day = today
                self._others_today, self._mine_today = self._read_today()
            if self.max_requests is not None and self.run_requests >= self.max_requests:
                raise BudgetSpent(
                    f"--max-requests {self.max_requests} reached; run again to continue"
                )
            if self._others_today + self._mine_today >= self.daily_budget:
                midnight = dt.datetime.fromisoformat(today).replace(tzinfo=dt.UTC)
                raise BudgetSpent(
                    f"daily request budget {self.daily_budget:,} reached "
                    f"({self._others_today + self._mine_today:,} used today, UTC); try again "
                    "after 00:00 UTC",
                    resume_at=midnight + dt.timedelta(days=1),
                )
            self.run_requests += 1
            self._mine_today += 1
            self._pending += 1
            if self._pending >= self.flush_every:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, 0
        update_ledger(self.path, self.key, self._day, self.pipeline, pending)


# key fingerprint -> UTC day (ISO date) -> pipeline -> requests
Ledger = dict[str, dict[str, dict[str, int]]]


def read_ledger(path: Path) -> Ledger:
    """The ledger as written; an entry of the wrong shape is skipped, not trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # missing, or a symlink planted in its place
        return {}
    try:
        with os.fdopen(fd) as fh:
            data: object = json.load(fh)
    except ValueError:
        return {}
    return {
        key: {day: _counts(per_pipeline) for day, per_pipeline in days.items()}
        for key, days in (data.items() if isinstance(data, dict) else ())
        if isinstance(days, dict)
    }


def _counts(per_pipeline: object) -> dict[str, int]:
    """Requests per pipeline; a count that is not an integer (a hand-edited file) is dropped."""
    if not isinstance(per_pipeline, dict):
        return {}
    return {k: n for k, n in per_pipeline.items() if isinstance(n, int) and not isinstance(n, bool)}


def update_ledger(path: Path, key: str, day: str, pipeline: str, add: int) -> None:
    """Add `add` requests under an exclusive file lock; keeps only the last 7 days."""
    private_dir(path.parent)
    with os.fdopen(open_private(path.with_suffix(".lock")), "r+") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        data = read_ledger(path)
        days = data.setdefault(key, {})
        entry = days.setdefault(day, {})
        entry[pipeline] = entry.get(pipeline, 0) + add
        for old in sorted(days)[:-7]:
            del days[old]
        replace_file(path, json.dumps(data, indent=1, sort_keys=True))


def used_on(path: Path, key: str, day: str) -> dict[str, int]:
    """Requests per pipeline for one key and UTC day (for `ciklek status`)."""
    return dict(read_ledger(path).get(key, {}).get(day, {}))


def ledger_for(settings: Settings, pipeline: str, max_requests: int | None = None) -> QuotaLedger:
    """The quota ledger entry of `pipeline` for the settings' key."""
    return QuotaLedger(
        settings.state_dir / "ledger.json",
        settings.require_key().fingerprint,
        pipeline,
        daily_budget=settings.daily_request_budget,
        max_requests=max_requests,
    )


class SweepQuota(QuotaLedger):
    """The quota ledger of a sweep run: it also stops after `sweep_run_requests` requests (so a
    sweep never holds the lock for hours) and before the day's remaining budget falls under
    `sweep_reserve` (so syncs always have quota)."""

    def __init__(
        self,
        path: Path,
        key_fingerprint: str,
        pipeline: str,
        *,
        daily_budget: int,
        reserve: int,
        run_cap: int,
        max_requests: int | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(
            path, key_fingerprint, pipeline,
            daily_budget=daily_budget, max_requests=max_requests, now=now,
        )  # fmt: skip
        self.reserve, self.run_cap = reserve, run_cap
        self._sweep_lock = threading.Lock()

    def charge(self) -> None:
        with self._sweep_lock:  # check and count in one step: resources walk at once
            self._charge_within_limits()

    def _charge_within_limits(self) -> None:
        if self.run_requests >= self.run_cap:
            raise BudgetSpent(
                f"sweep_run_requests {self.run_cap:,} reached: a sweep run stops here so syncs "
                "get their turn; the next `ciklek sweep` continues"
            )
        if self.used_today >= self.daily_budget - self.reserve:
            today = (
                self._now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            )
            raise BudgetSpent(
                f"the sweep leaves the last {self.reserve:,} requests of today's budget to syncs "
                f"(sweep_reserve; {self.used_today:,} of {self.daily_budget:,} used today, UTC); "
                "the sweep continues after 00:00 UTC",
                resume_at=today + dt.timedelta(days=1),
            )
        super().charge()


def sweep_ledger(settings: Settings, pipeline: str, max_requests: int | None) -> SweepQuota:
    """The ledger entry of `pipeline` for the settings' key, with the sweep's limits."""
    return SweepQuota(
        settings.state_dir / "ledger.json",
        settings.require_key().fingerprint,
        pipeline,
        daily_budget=settings.daily_request_budget,
        max_requests=max_requests,
        reserve=settings.sweep_reserve,
        run_cap=settings.sweep_run_requests,
    )
