"""The chunk's shared page count and the `max_concurrency` setting."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from connector.api.ledger import QuotaLedger, SweepQuota
from connector.config.settings import load_settings
from connector.errors import BudgetSpent, ConfigError
from connector.traversal.gate import ChunkGate


def test_many_threads_never_reserve_more_pages_than_the_chunk_allows() -> None:
    gate = ChunkGate()
    gate.start(walks=8, workers=8)
    gate.answered()  # a page of this run came back: no worker waits for the first answer
    granted: list[int] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()  # all at once: a check-then-count would overshoot here
        mine = 0
        while gate.reserve(100):
            mine += 1
        granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100 and gate.pages == 100
    gate.release()  # a failed request gives its page back
    assert gate.reserve(100) and not gate.reserve(100)
    gate.start(walks=0, workers=1)  # a new load starts from zero
    assert gate.pages == 0 and gate.reserve(None) and gate.pages == 1


def test_until_the_runs_first_answer_one_request_goes_at_a_time() -> None:
    """After a spent quota, one request tells whether it is back: other workers wait for the
    first one's answer (or its failure) before they reserve."""
    gate = ChunkGate()
    gate.start(walks=3, workers=3)
    assert gate.reserve(100)  # this thread's request goes first
    reserved = [threading.Event(), threading.Event()]
    finish = threading.Event()

    def other(n: int) -> None:
        gate.reserve(100)
        reserved[n].set()
        finish.wait(5)  # alive till the end: a thread id is not reused meanwhile

    workers = [threading.Thread(target=other, args=(n,)) for n in (0, 1)]
    workers[0].start()
    assert not reserved[0].wait(0.3)  # held while the first request has no answer
    gate.release()  # it failed (a 429): the next one tries (after checking for a halt)
    assert reserved[0].wait(5)
    workers[1].start()
    assert not reserved[1].wait(0.3)  # now the other worker's request is the one out first
    gate.answered()
    assert reserved[1].wait(5)  # a page came back: everybody goes
    finish.set()
    for t in workers:
        t.join(5)
    assert gate.pages == 2 and gate.reserve(100) and gate.pages == 3


def test_rejects_wait_for_every_walk_of_the_load() -> None:
    gate, stop = ChunkGate(), threading.Event()
    gate.start(walks=2, workers=2)
    done = threading.Event()

    def rejects() -> None:
        gate.wait_walks(stop)
        done.set()

    waiter = threading.Thread(target=rejects)
    waiter.start()
    gate.walk_done()
    assert not done.wait(0.05)  # one walk still running
    gate.walk_done()
    waiter.join(5)
    assert done.is_set()


def test_max_concurrency_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_concurrency == 4
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_CONCURRENCY", "1")
    assert load_settings().max_concurrency == 1
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_CONCURRENCY", "0")
    with pytest.raises(ConfigError, match="max_concurrency must be at least 1, got 0"):
        load_settings()
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_CONCURRENCY", "two")
    with pytest.raises(ConfigError, match="max_concurrency"):
        load_settings()


def _charge_from_threads(ledger: QuotaLedger, threads: int = 8) -> None:
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        with contextlib.suppress(BudgetSpent):
            while True:
                ledger.charge()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


class _SlowCheck(SweepQuota):
    """Reading today's count takes a moment: a check apart from the count would overshoot."""

    @property
    def used_today(self) -> int:
        time.sleep(0.001)
        return super().used_today


def test_budgets_hold_however_many_threads_charge(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    daily = QuotaLedger(state / "ledger.json", "k", "p", daily_budget=37)
    _charge_from_threads(daily)
    assert daily.run_requests == 37 and daily.used_today == 37
    sweep = _SlowCheck(state / "ledger2.json", "k", "s", daily_budget=1000, reserve=10, run_cap=23)
    _charge_from_threads(sweep)
    assert sweep.run_requests == 23  # the sweep's run cap: checked and counted in one step
