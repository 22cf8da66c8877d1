"""Walk one traversal's `updated_since` ranges with several workers, for one chunk (one load).

The rules (what a range is, when it splits, parking) are in `ranges.py`; this module runs them:
the resource's own thread coordinates, worker threads fetch pages (`page_loop.walk`, one range
each).
Every change to the traversal's state (a page accepted, a split, a range completed) happens
under one lock, so a split never races the page that moves the range it cuts.

Why the chunk ends for all ranges at once: a load commits every range's cursor with the pages
it fetched (and their rejects) in one dlt load. The chunk's page gate (`gate.py`) is
shared by every worker of the load, so all ranges together fetch at most `checkpoint_pages`
pages between two commits: a kill re-spends at most that, however many ranges were walking.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from connector.api.client import CiklekClient
from connector.catalogue import ResourceSpec
from connector.errors import AllowanceSpent, ApiError, ContractViolation, TryLater
from connector.traversal.page_loop import Chunk, failed, halted, newest, walk
from connector.traversal.ranges import after_page, complete, pending, pick, split, unpark, wrap
from connector.traversal.reconcile import IdTracker
from connector.traversal.run_config import RunConfig
from connector.traversal.run_report import ResourceOutcome, RunReport
from connector.traversal.state import PageFacts, PageVersions, ResourceState, Traversal, Version

# How long the coordinator sleeps when nothing wakes it (a page, a finished walk): a slot
# another resource gives back is noticed within this.
_POLL_SECONDS = 0.2
# Pages answered faster than this never warrant a split, whatever the allowance: a split costs
# a request, and with an allowance that high the run is bound by its own processing.
_FAST_PAGE_SECONDS = 0.05


class RangeWalk:
    """One resource's walk of one traversal in ranges, for one chunk."""

    def __init__(
        self,
        spec: ResourceSpec,
        state: ResourceState,
        parent: Traversal,
        config: RunConfig,
        report: RunReport,
        tracker: IdTracker | None,
    ) -> None:
        self.spec, self.state, self.parent, self.config = spec, state, parent, config
        self.report, self.tracker = report, tracker
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self.chunks: list[Chunk] = []  # every walk of this chunk, in start order
        self._busy: dict[str, Chunk] = {}  # range id -> the chunk walking it
        self._ended: set[str] = set()  # busy ranges whose last page is in: never split them
        self._extra = 0  # gate slots held beyond the resource's own
        self._closing = False  # the chunk is ending (full, a signal, an error): all walks stop
        self.tail: Traversal | None = None  # the last range, once the traversal completed
        self.last_page: list[Version] = []
        wrap(parent)

    # -- what the walks share (page_loop.Peers) ------------------------------------------------

    def guard(self) -> contextlib.AbstractContextManager[object]:
        return self._lock

    def stopping(self) -> bool:
        return self._closing

    def accepted(self, chunk: Chunk, facts: PageFacts, out: ResourceOutcome) -> None:
        parent = self.parent
        if facts.next_cursor is None or facts.reached_until:
            self._ended.add(chunk.trav.id)  # its walk returns next: it is not cut any more
        after_page(parent, chunk.trav, facts.received, facts.total)
        out.total = parent.total if parent.total is not None else parent.last_total
        out.traversal_pages = parent.pages
        self._wake.notify_all()

    # -- the coordinator ------------------------------------------------------------------

    def run(self, client: CiklekClient) -> bool:
        """Walk until the chunk ends; True when the whole traversal reached its end."""
        workers = max(1, self.config.max_concurrency)
        futures: dict[Future[bool], Chunk] = {}
        error: BaseException | None = None
        prefix = f"ciklek-{self.spec.name}"
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix=prefix) as pool, self._lock:
                try:
                    while True:
                        self._launch(pool, futures, client)
                        if not futures:
                            break
                        self._wake.wait(_POLL_SECONDS)
                        error = self._reap(futures) or error
                except BaseException:
                    self._closing = True  # the workers stop at their next page
                    raise
        finally:
            for _ in range(self._extra):
                self.report.gate.release_extra()
            self._extra = 0
        if error is not None:
            raise error
        if self.tail is not None and not self._counted(client):
            return False
        return self.tail is not None

    def _launch(
        self, pool: ThreadPoolExecutor, futures: dict[Future[bool], Chunk], client: CiklekClient
    ) -> None:
        if self._closing:
            return
        if halted(self.report, self.report.outcome(self.spec.name)):
            self._closing = True  # recorded: the sync does not start another chunk for it
            return
        if not futures and not pending(self.parent):
            unpark(self.parent)
        for rng in pending(self.parent):
            if rng.id not in self._busy and self._capacity(futures):
                self._start(rng, pool, futures, client)
        tried: set[str] = set()
        while self._worth_splitting(client):
            widest = pick(
                self.parent,
                set(self._busy) - self._ended - tried,
                min_pages=2 * max(1, self.config.max_concurrency),
                page_size=self.config.page_size,
            )
            if widest is None or not self._capacity(futures):
                break
            new = split(self.parent, widest, dt.datetime.now(dt.UTC))
            if new is None:
                tried.add(widest.id)  # nothing strictly inside its span: the next candidate
                self._give_back(futures)
                continue
            self.report.outcome(self.spec.name).splits += 1
            if self.report.on_event is not None:
                fields = {"resource": self.spec.name, "at": new.since}
                self.report.on_event("split", {**fields, "ranges": len(self.parent.ranges)})
            self._start(new, pool, futures, client)

    @staticmethod
    def _worth_splitting(client: CiklekClient) -> bool:
        """A second worker uses allowance only when one page takes longer than the allowance's
        spacing between requests (120/min: 0.5 s); faster pages, and one worker keeps up."""
        latency = client.latency
        floor = max(client.limiter.spacing(), _FAST_PAGE_SECONDS)
        return latency is not None and latency > floor

    def _capacity(self, futures: dict[Future[bool], Chunk]) -> bool:
        """A worker for one more walk: the resource's own slot first, then free gate slots."""
        if len(futures) < 1 + self._extra:
            return True
        if len(futures) >= max(1, self.config.max_concurrency):
            return False
        if self.report.gate.try_extra():
            self._extra += 1
            return True
        return False

    def _give_back(self, futures: dict[Future[bool], Chunk]) -> None:
        """An extra slot taken for a walk that did not start: back to the load."""
        if self._extra and len(futures) < self._extra + 1:
            self._extra -= 1
            self.report.gate.release_extra()

    def _start(
        self,
        rng: Traversal,
        pool: ThreadPoolExecutor,
        futures: dict[Future[bool], Chunk],
        client: CiklekClient,
    ) -> None:
        chunk = Chunk(
            self.spec, self.state, rng, self.config, self.tracker, within=self.parent.kind
        )
        self.chunks.append(chunk)
        self._busy[rng.id] = chunk
        self._ended.discard(rng.id)
        future = pool.submit(walk, chunk, client, self.report, self)
        future.add_done_callback(self._notify)  # reap it at once, not at the next poll
        futures[future] = chunk

    def _notify(self, _future: Future[bool]) -> None:
        with self._lock:
            self._wake.notify_all()

    def _reap(self, futures: dict[Future[bool], Chunk]) -> BaseException | None:
        """Walks that ended: a complete range leaves (or parks); any other end closes the chunk."""
        error = None
        for future in [f for f in futures if f.done()]:
            chunk = futures.pop(future)
            self._busy.pop(chunk.trav.id, None)
            self._give_back(futures)  # another resource may be waiting for it
            exc = future.exception()
            if exc is not None:
                error, self._closing = exc, True
                continue
            if future.result():
                tail = complete(self.parent, chunk.trav, chunk.last_page)
                if tail is not None:
                    self.tail, self.last_page = tail, chunk.last_page
                continue
            self._closing = True  # the chunk is full or timed out, a signal, or the range failed
        return error

    def _counted(self, client: CiklekClient) -> bool:
        """A sweep walked in ranges completes with the whole list's `meta.total` as it stands
        at the end (its check that nothing was left out compares with it): one `limit=1`
        request, unless the last range walked the whole list's filter. If it fails, the
        last range parks again and the next run asks once more."""
        tail, parent = self.tail, self.parent
        if tail is None or parent.kind != "sweep" or tail.since == parent.since:
            return True
        if parent.since is not None:  # a sweep's re-read: the count is its whole walk's
            return True
        out = self.report.outcome(self.spec.name)
        try:
            page = client.fetch_page(self.spec.path, limit=1, after=None, updated_since=None)
        except (ApiError, TryLater, ContractViolation, AllowanceSpent) as exc:
            if not isinstance(exc, AllowanceSpent):  # else: the next chunk asks
                failed(self.spec, self.report, out, exc)
            tail.parked, tail.skip = True, list(self.last_page)
            parent.ranges, self.tail = [tail], None
            return False
        parent.last_total = page.total
        return True

    def records(self) -> list[object]:
        """The chunk's records, one version per id (the newest where ranges met one twice)."""
        loose = [record for chunk in self.chunks for record in chunk.loose]
        keyed = ((rid, rec) for chunk in self.chunks for rid, rec in chunk.latest.items())
        return [*loose, *newest(keyed, self.spec).values()]

    def ids(self) -> list[str]:
        return [i for chunk in self.chunks for i in chunk.ids]

    def versions(self) -> list[object]:
        """Every keyed version the ranges load (with history; see `Chunk.versions`)."""
        return [record for chunk in self.chunks for record in chunk.versions()]

    def pages(self) -> list[PageVersions]:
        """Every range's pages, for the look-back (kept at the traversal, `state.remember`)."""
        return [page for chunk in self.chunks for page in chunk.pages]
