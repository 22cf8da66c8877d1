"""Resources traversed at once within one load: the chunk's shared page count and the walks.

Why a gate of its own: with `max_concurrency` above 1, `orders`, `customers` and `products` walk
their lists in dlt's worker threads (`parallelized=True` resources) inside one `pipeline.run`.
A commit must still cover at most `checkpoint_pages` pages across all of them, so a page is
*reserved* before its request goes (check and count in one step under a lock), never counted
after it came back: two threads that both saw 99 of 100 would otherwise fetch page 101. The
limiter (`throttle.py`) and the quota ledger (`ledger.py`) are already shared and locked; this
is the one counter that was not.

The `_ciklek_rejects` resource of a `ciklek sync` loads the rejects every data resource of the
same load found, so it waits (`wait_walks`) until every walk of the load has handed its rejects
over. It waits in a worker thread of its own (it is parallelized too): the main thread keeps
handing items to dlt.

A resource whose traversal is split into `updated_since` ranges (`range_workers.py`) walks them with
the slots no other resource of the load is waiting for (`try_extra`): `max_concurrency` bounds
the workers of the whole load, ranges included.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ChunkGate:
    """One load's shared counters: pages fetched, walks still running, and the worker slots."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.pages = 0
        self._walks = 0
        self._waiting = 0  # walks of this load that do not hold their slot yet
        self._answered = False  # a page of this run came back (kept across loads)
        self._prober: int | None = None  # the thread whose request goes first (see reserve)
        self._slots = threading.BoundedSemaphore(1)

    def start(self, walks: int, workers: int) -> None:
        """A new load: `walks` data resources, at most `workers` of them fetching at once."""
        with self._lock:
            self.pages, self._walks, self._waiting = 0, walks, walks
            self._slots = threading.BoundedSemaphore(max(1, workers))
            self._lock.notify_all()

    def reserve(self, limit: int | None) -> bool:
        """Count one more page of this load, or False when the load already has `limit`.

        Until a page of this run has come back, one request goes at a time: after a spent
        quota, one request tells whether it is back (and a wrong key or a down server costs
        one request, not one per worker). The caller checks for a halt after this returns.
        """
        me = threading.get_ident()
        with self._lock:
            while not self._answered and self._prober not in (None, me):
                self._lock.wait(0.1)
            if limit and self.pages >= limit:
                return False
            self.pages += 1
            if not self._answered:
                self._prober = me
            return True

    def release(self) -> None:
        """A reserved page that was not fetched (its request failed)."""
        with self._lock:
            self.pages = max(0, self.pages - 1)
            if self._prober == threading.get_ident():
                self._prober = None
            self._lock.notify_all()

    def drop_probe(self) -> None:
        """This thread's walk ended: if its request was the one going first, others may go."""
        with self._lock:
            if self._prober == threading.get_ident():
                self._prober = None
                self._lock.notify_all()

    def answered(self) -> None:
        """A page of this run came back: the other workers may send too."""
        with self._lock:
            self._answered, self._prober = True, None
            self._lock.notify_all()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Held while a resource walks: at most `max_concurrency` workers fetch at once."""
        with self._slots:
            with self._lock:
                self._waiting = max(0, self._waiting - 1)
            yield

    def try_extra(self) -> bool:
        """One more worker for a walk split into ranges (`range_workers.py`), if a slot is free
        and no resource of this load still waits for its own: ranges never starve a resource.
        Give it back with `release_extra`."""
        with self._lock:
            if self._waiting > 0:
                return False
        return self._slots.acquire(blocking=False)

    def release_extra(self) -> None:
        self._slots.release()

    def walk_done(self) -> None:
        """One data resource of this load has walked and handed over its rejects."""
        with self._lock:
            self._walks = max(0, self._walks - 1)
            self._lock.notify_all()

    def wait_walks(self, stop: threading.Event) -> None:
        """Until every data resource of this load walked (a signal does not end a walk early:
        each walk checks it between pages and then hands over what it has)."""
        with self._lock:
            while self._walks > 0:
                self._lock.wait(0.5 if not stop.is_set() else 0.1)
