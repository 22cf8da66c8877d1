"""The chunk's shared page count and the `max_concurrency` setting."""

from __future__ import annotations

import threading

import pytest

from connector.concurrency import ChunkGate
from connector.errors import ConfigError
from connector.settings import load_settings


def test_many_threads_never_reserve_more_pages_than_the_chunk_allows() -> None:
    gate = ChunkGate()
    gate.start(walks=8, workers=8)
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
