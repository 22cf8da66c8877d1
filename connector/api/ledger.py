"""Counting requests: per run (for the summary) and per UTC day per key (the quota ledger).

Why persisted: the server's headers describe only the minute window, yet the daily quota of
50,000 is shared by every run and every other user of the key. The ledger lives in the state
dir as JSON, keyed by a hash of the key (never the key), then by UTC day, then by pipeline, so
several pipelines on one key add up and a budget check sees all of them. Like every file in the
state dir it is private (0600, replaced through `mkstemp`, see `connector/config/statedir.py`).

Why written ahead: a count kept in memory and written later is lost with a process killed by
SIGKILL (an OOM kill, a CI timeout), and the budget is then overshot by what it sent. A request
is counted on disk before it is sent (a reservation, see `QuotaLedger`), so a kill at any
instant leaves nothing sent and uncounted.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from connector.config.settings import Settings
from connector.config.statedir import check_dir, open_private, private_dir, replace_file
from connector.errors import AllowanceSpent, BudgetSpent


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


# Requests reserved per durable ledger write. One fsynced write per request would cost as much
# as the request itself against a fast server (bench/run.py measures it); a block of 10 makes the
# write one tenth of that, and a run killed at any instant leaves at most 9 reserved requests it
# never sent, counted (once) as if sent: never a request sent and not counted.
RESERVATION_BLOCK = 10


class QuotaLedger:
    """Requests used per UTC day per key, persisted ahead; enforces the daily and per-run budgets.

    `charge()` is called once before every request is sent (retries included: the server
    counts them too). Before a request goes, it is counted on disk: the ledger holds a
    reservation of up to `block` requests taken under the file lock (re-reading what every other
    process on the key reserved, so the daily budget holds across processes and threads),
    written and fsynced before `charge()` returns. The part of a reservation not used is given
    back by `flush()` (at each commit and at the end of a run); a killed process gives nothing
    back, so its unused reservation stays counted: a kill can over-count by less than a block,
    never under-count.

    `allow()`: the run's requests recorded ahead in the warehouse (`_ciklek_request_ledger`,
    for a runner that rebuilds the count from there). Beyond them `charge()` raises
    AllowanceSpent, which ends the chunk; its load records the next allowance.
    """

    def __init__(
        self,
        path: Path,
        key_fingerprint: str,
        pipeline: str,
        *,
        daily_budget: int,
        max_requests: int | None = None,
        block: int = RESERVATION_BLOCK,
        durable: bool = True,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.path = path
        self.key = key_fingerprint
        self.pipeline = pipeline
        self.daily_budget = daily_budget
        self.max_requests = max_requests
        self.block = max(1, block)
        self.durable = durable
        self._now = now
        self._lock = threading.Lock()
        self.run_requests = 0
        self._day_start = 0  # run_requests when this run's current UTC day began
        self._unused = 0  # reserved on disk, not sent yet
        self.reservations = 0  # durable ledger writes taken (what the bench counts)
        self.allowance: tuple[str, int] | None = None  # (day, requests today) the warehouse knows
        self._day = utc_today(now())
        check_dir(path.parent)  # an unsafe state dir is refused before any request is sent
        self._total = self._read_total()  # today's count on disk, every pipeline on the key

    def _read_total(self) -> int:
        return sum(read_ledger(self.path).get(self.key, {}).get(self._day, {}).values())

    @property
    def day(self) -> str:
        """The UTC day this run counts its requests on now."""
        with self._lock:
            return self._day

    @property
    def requests_today(self) -> int:
        """This run's requests on its current UTC day."""
        with self._lock:
            return self.run_requests - self._day_start

    @property
    def used_today(self) -> int:
        """Requests counted today on the key (as last read), this run's unused reservation not
        included."""
        with self._lock:
            return self._total - self._unused

    @property
    def left_today(self) -> int:
        return max(0, self.daily_budget - self.used_today)

    def headroom(self) -> int:
        """Requests this run may still send today: the budget, --max-requests, a run cap."""
        with self._lock:
            room = self._day_limit() - (self._total - self._unused)
            for cap in self._run_caps():
                room = min(room, cap - self.run_requests)
            return max(0, room)

    def allow(self, day: str, requests_today: int) -> None:
        """The warehouse now records that this run may send `requests_today` requests on `day`."""
        with self._lock:
            self.allowance = (day, requests_today)

    def charge(self) -> None:
        """Count one request about to be sent, or raise BudgetSpent if it would exceed a budget
        (AllowanceSpent if it would exceed what the warehouse records)."""
        with self._lock:
            today = utc_today(self._now())
            if today != self._day:
                self._give_back_locked()
                self._day, self._day_start = today, self.run_requests
                self._total = self._read_total()
            self._check_run_limits()
            if self.allowance is not None:
                day, allowed = self.allowance
                if day != self._day or self.run_requests - self._day_start >= allowed:
                    raise AllowanceSpent("the requests recorded ahead in the warehouse are used")
            if not self._unused:
                self._reserve_locked()
            self._unused -= 1
            self.run_requests += 1

    def _check_run_limits(self) -> None:
        if self.max_requests is not None and self.run_requests >= self.max_requests:
            raise BudgetSpent(f"--max-requests {self.max_requests} reached; run again to continue")

    def _run_caps(self) -> list[int]:
        """Requests this run may send in all (--max-requests; a sweep's cap)."""
        return [] if self.max_requests is None else [self.max_requests]

    def _day_limit(self) -> int:
        """The day's count this run may take the key's total to."""
        return self.daily_budget

    def _day_spent(self, used: int) -> BudgetSpent:
        midnight = dt.datetime.fromisoformat(self._day).replace(tzinfo=dt.UTC)
        return BudgetSpent(
            f"daily request budget {self.daily_budget:,} reached ({used:,} used today, UTC); "
            "try again after 00:00 UTC",
            resume_at=midnight + dt.timedelta(days=1),
        )

    def _reserve_locked(self) -> None:
        """Reserve the next block on disk (fsynced), within every limit; BudgetSpent if the day
        has nothing left for this run."""
        want = self.block
        for cap in self._run_caps():
            want = min(want, cap - self.run_requests)
        if self.allowance is not None:
            want = min(want, self.allowance[1] - (self.run_requests - self._day_start))
        granted, total = reserve(
            self.path,
            self.key,
            self._day,
            self.pipeline,
            want=max(1, want),
            limit=self._day_limit(),
            durable=self.durable,
        )
        self._total = total
        if not granted:
            raise self._day_spent(total)
        self._unused = granted
        self.reservations += 1

    def flush(self) -> None:
        """Give back the reservation not used (at a commit, at the end of a run)."""
        with self._lock:
            self._give_back_locked()

    def _give_back_locked(self) -> None:
        if not self._unused:
            return
        unused, self._unused = self._unused, 0
        update_ledger(self.path, self.key, self._day, self.pipeline, -unused)
        self._total -= unused


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
    """Add `add` requests (negative: give back) under an exclusive file lock."""
    with _locked(path):
        _write(path, key, day, pipeline, add, durable=False)


def reserve(
    path: Path, key: str, day: str, pipeline: str, *, want: int, limit: int, durable: bool = True
) -> tuple[int, int]:
    """Reserve up to `want` requests of `day` for `pipeline`, leaving the key's day total at
    most `limit`: (requests granted, the day's total after). Under the exclusive file lock, so
    every process and thread on the key sees every other's reservations; `durable`: on disk
    (fsynced) before it returns."""
    with _locked(path):
        total = sum(read_ledger(path).get(key, {}).get(day, {}).values())
        granted = max(0, min(want, limit - total))
        if granted:
            _write(path, key, day, pipeline, granted, durable=durable)
        return granted, total + granted


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    private_dir(path.parent)
    with os.fdopen(open_private(path.with_suffix(".lock")), "r+") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        yield


def _write(path: Path, key: str, day: str, pipeline: str, add: int, *, durable: bool) -> None:
    """Add `add` to one count (the file lock held); keeps only the last 7 days."""
    data = read_ledger(path)
    days = data.setdefault(key, {})
    entry = days.setdefault(day, {})
    entry[pipeline] = max(0, entry.get(pipeline, 0) + add)
    for old in sorted(days)[:-7]:
        del days[old]
    replace_file(path, json.dumps(data, indent=1, sort_keys=True), durable=durable)


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
    `sweep_reserve` (so syncs always have quota). Both are limits of the reservation, so they
    are checked and counted in one step, whatever the threads."""

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

    def _check_run_limits(self) -> None:
        if self.run_requests >= self.run_cap:
            raise BudgetSpent(
                f"sweep_run_requests {self.run_cap:,} reached: a sweep run stops here so syncs "
                "get their turn; the next `ciklek sweep` continues"
            )
        super()._check_run_limits()

    def _run_caps(self) -> list[int]:
        return [*super()._run_caps(), self.run_cap]

    def _day_limit(self) -> int:
        return self.daily_budget - self.reserve

    def _day_spent(self, used: int) -> BudgetSpent:
        midnight = dt.datetime.fromisoformat(self._day).replace(tzinfo=dt.UTC)
        return BudgetSpent(
            f"the sweep leaves the last {self.reserve:,} requests of today's budget to syncs "
            f"(sweep_reserve; {used:,} of {self.daily_budget:,} used today, UTC); "
            "the sweep continues after 00:00 UTC",
            resume_at=midnight + dt.timedelta(days=1),
        )


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
