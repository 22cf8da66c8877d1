"""The page loop: fetch a traversal's pages and keep their records for one chunk (one load).

Why apart from the dlt source: the same loop walks a whole traversal (one worker) and each
`updated_since` range of a traversal walked by several workers (`range_workers.py`); the dlt
glue around it (state, batches, tables) stays in `connector/runs/source.py`. A walk never
raises for what the API did: the outcome records it, so the pages fetched so far are still
committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from connector.api.client import CiklekClient
from connector.api.responses import Page
from connector.catalogue import ResourceSpec
from connector.errors import (
    AllowanceSpent,
    ApiError,
    BadRequest,
    CiklekUnavailable,
    ContractViolation,
    MissingScope,
    StopRequested,
    TryLater,
    Unauthorized,
)
from connector.records.hashing import FieldHasher
from connector.records.normalize import Invalid, missing_fields, parse_instant
from connector.records.undocumented import bounded_json, key_text
from connector.traversal.reconcile import IdTracker, Reconciliation
from connector.traversal.run_config import RunConfig
from connector.traversal.run_report import ResourceOutcome, RunReport
from connector.traversal.state import (
    PageFacts,
    PageVersions,
    Position,
    ResourceState,
    Traversal,
    Version,
    accept_page,
    id_digest,
    instant,
    restart,
)


def tracker_for(config: RunConfig, spec: ResourceSpec, trav: Traversal) -> IdTracker | None:
    """The ids a traversal from the list's beginning received (its reconciliation)."""
    if config.tracker_dir is None or not trav.fresh:
        return None
    return IdTracker(config.tracker_dir / f"{spec.name}-{trav.id}.ids")


class Chunk:
    """One walk's share of one load: its traversal (or range), and the records fetched for it.

    `tracker`: the traversal's id file when several ranges share it (they never write it
    while walking: the dlt source adds the chunk's ids once the walks are over); else the chunk
    opens its own.
    """

    def __init__(
        self,
        spec: ResourceSpec,
        state: ResourceState,
        trav: Traversal,
        config: RunConfig,
        tracker: IdTracker | None = None,
        *,
        within: str | None = None,
    ):
        self.spec, self.state, self.trav, self.config = spec, state, trav, config
        self.within = within  # a range's traversal kind; None: the chunk walks a traversal
        self.latest: dict[str, object] = {}  # by id: a later version in the same chunk wins
        self.loose: list[object] = []  # records without an id: build_batch rejects them
        # With history, every version the chunk loads, in the order fetched (`latest` keeps the
        # newest per id only, which is what the current table wants); None without history.
        self.every: list[object] | None = [] if spec.name in config.history else None
        self.ids: list[str] = []
        self.last_page: list[Version] = []
        self.pages: list[PageVersions] = []  # each page's versions, for the look-back
        self.tracker = tracker
        key = config.hash_key.reveal().encode() if config.hash_key is not None else None
        self.hasher = FieldHasher.for_spec(spec, key)
        self.restarted()

    @property
    def until(self) -> dt.datetime | None:
        """Read at every page: a split moves a range's end while it is being walked."""
        return instant(self.trav.until)

    def restarted(self) -> None:
        """(Re)read what the traversal carries: versions to skip, the id tracker."""
        self.skip = set(self.trav.skip)
        self.known = {version[0] for version in self.skip}
        self.carried = set(self.trav.page_ids)  # the previous chunk's last page
        if self.within is None:
            self.tracker = tracker_for(self.config, self.spec, self.trav)

    def take(self, page: Page) -> PageFacts:
        """Keep the page's records; tell the traversal what the page brought."""
        if self.hasher is not None:  # before anything keeps, converts or quarantines a record
            for record in page.records:
                self.hasher.apply(record)
        spec, until, self.last_page = self.spec, self.until, []
        new_ids, ids, versions, fresh, every = False, [], [], 0, self.every
        for record in page.records:
            record_id = record.get(spec.primary_key) if isinstance(record, dict) else None
            cursor = cursor_of(record, spec)
            if until is not None and _at_or_after(cursor, until):
                # Outside the window or range: the next range holds it, with or without an id
                # (records behind it on the page still count: a page need not be in order).
                # The traversal ends with the page whose last record passes `until`.
                continue
            if record_id is None:
                # No id: rejected by build_batch. Remember it like any other version on the last
                # page, so a resume that re-reads that page does not quarantine it again.
                version = (_fingerprint(record), cursor)
                self.last_page.append(version)
                if version not in self.skip:
                    self.loose.append(record)
                continue
            record_id = key_text(record_id)
            new_ids = new_ids or not self._seen(record_id)
            self.ids.append(record_id)
            ids.append(record_id)
            self.known.add(record_id)
            versions.append((record_id, cursor))
            self.last_page.append((record_id, cursor))
            if (record_id, cursor) not in self.skip:  # else: loaded by the previous traversal
                self.latest.pop(record_id, None)
                self.latest[record_id] = record
                if every is not None:
                    every.append(record)
                fresh += 1
        first_at, last_at = _ends(page.records, spec)
        tops = [at for at in (first_at, last_at) if at is not None]
        self.pages.append((max(tops) if tops else None, self.last_page))
        return PageFacts(
            next_cursor=page.next_cursor,
            total=page.total,
            received=fresh,  # a version loaded already is not received twice (a re-read page)
            # Lists are ordered by updated_at: a page ending past --until ends the window.
            reached_until=until is not None
            and bool(page.records)
            and _at_or_after(cursor_of(page.records[-1], spec), until),
            new_ids=new_ids,
            # Only a page without a new id needs its position (parsing every timestamp costs),
            # and the first one, which sets where the traversal stands.
            furthest=_furthest(versions) if not new_ids or self.trav.position is None else None,
            endpoint="/" + spec.path,
            ids=tuple(ids),
            first_at=first_at,
            last_at=last_at,
            upto=(page.page - 1) * self.config.page_size + len(page.records)
            if isinstance(page.page, int) and page.page >= 1
            else None,
        )

    def _seen(self, record_id: str) -> bool:
        if record_id in self.known or id_digest(record_id) in self.carried:
            return True
        return self.tracker is not None and record_id in self.tracker.ids

    def records(self) -> list[object]:
        return [*self.loose, *self.latest.values()]

    def versions(self) -> list[object]:
        """Every keyed version the chunk loads, in the order fetched (empty without history)."""
        return self.every or []


def reconcile(tracker: IdTracker | None, trav: Traversal) -> Reconciliation | None:
    """A complete traversal compared with meta.total; the id file is no longer needed."""
    if tracker is None:
        return None
    result = None
    if trav.total is not None and not trav.until:
        # (a window's meta.total also counts records past --until: nothing to compare with)
        result = Reconciliation(
            expected=trav.total,
            distinct=len(tracker.ids),
            received=trav.received,
            since=trav.since,
        )
    tracker.discard()
    return result


class Peers(Protocol):
    """What a walk shares with the other walks of the same traversal (`range_workers.py`)."""

    def guard(self) -> contextlib.AbstractContextManager[object]:
        """Held while a page changes the traversal's state (a split may not happen then)."""
        ...

    def stopping(self) -> bool:
        """Another range of the traversal stopped for good (an error): stop too."""
        ...

    def accepted(self, chunk: Chunk, facts: PageFacts, out: ResourceOutcome) -> None:
        """A page was accepted and counted in `out` (called under `guard`)."""
        ...


class NoPeers:
    """A traversal walked by one worker: nothing to share."""

    def guard(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def stopping(self) -> bool:
        return False

    def accepted(self, chunk: Chunk, facts: PageFacts, out: ResourceOutcome) -> None:
        return None


NO_PEERS = NoPeers()


def walk(chunk: Chunk, client: CiklekClient, report: RunReport, peers: Peers = NO_PEERS) -> bool:
    """Fetch pages until something says stop; True when the traversal reached its end."""
    try:
        return _pages(chunk, client, report, peers)
    finally:
        report.gate.drop_probe()  # however the walk ended, the others need not wait for it


def _pages(chunk: Chunk, client: CiklekClient, report: RunReport, peers: Peers) -> bool:
    spec, trav, config = chunk.spec, chunk.trav, chunk.config
    out = report.outcome(spec.name)
    pages, started = 0, time.monotonic()
    while not _pause(report, config, out, pages, started, peers):
        if not report.gate.reserve(config.chunk_pages):  # the load is full (all resources)
            return False
        if halted(report, out):  # while this worker waited for the run's first answer
            report.gate.release()
            return False
        try:
            page = client.fetch_page(
                spec.path, limit=config.page_size, after=trav.after, updated_since=trav.since
            )
            report.gate.answered()
        except AllowanceSpent:  # what the warehouse records for this run is used: commit first
            report.gate.release()
            return False
        except BadRequest as exc:
            report.gate.release()
            with peers.guard():
                again = restart(chunk.state, trav, config.lookback_seconds, chunk.within)
                if not again:
                    out.error = exc
                    return False
                # The server no longer accepts our cursor (stored by an earlier chunk, or one
                # it issued a page ago: a rotated secret): start over from updated_since
                # rather than failing this run and every future one.
                which = "cursor rejected mid-traversal" if pages else "stored cursor rejected"
                note = f"{which} ({exc.code or 400}); restarted from updated_since"
                if note not in out.notes:  # once, however many ranges met the same rotation
                    out.notes.append(note)
                chunk.restarted()
            continue
        except (ApiError, TryLater, ContractViolation) as exc:
            report.gate.release()
            with peers.guard():
                failed(spec, report, out, exc)
            return False
        pages += 1
        with peers.guard():
            done = _accept(chunk, page, report, out, peers)
        if isinstance(done, ContractViolation):
            return False
        if done:
            return True
    return False


def _accept(
    chunk: Chunk, page: Page, report: RunReport, out: ResourceOutcome, peers: Peers
) -> bool | ContractViolation:
    """One fetched page: its records kept, the traversal moved, the outcome counted."""
    trav = chunk.trav
    before = len(chunk.latest) + len(chunk.loose)
    facts = chunk.take(page)
    for change in missing_fields(chunk.spec, page.records):
        report.columns.note(change)
    out.new_records += len(chunk.latest) + len(chunk.loose) - before
    if out.first_page is None:
        out.first_page = page.page
    try:
        done: bool | ContractViolation = accept_page(trav, facts)
    except ContractViolation as exc:
        done = exc  # the page counts and its records load; the traversal stops here
    out.pages += 1
    out.records += len(page.records)
    out.total = trav.total if trav.total is not None else page.total
    out.traversal_pages = trav.pages
    peers.accepted(chunk, facts, out)
    if isinstance(done, ContractViolation):
        out.error = done
    if report.on_page is not None:
        report.on_page(chunk.spec.name, out)
    return done


def _pause(
    report: RunReport,
    config: RunConfig,
    out: ResourceOutcome,
    pages: int,
    started: float,
    peers: Peers,
) -> bool:
    """Stop fetching: a signal, another resource's halt, or the chunk is full."""
    if halted(report, out):
        return True
    if peers.stopping():
        return True
    if config.chunk_pages and report.chunk_pages >= config.chunk_pages:
        return True
    return bool(
        config.chunk_seconds and pages and time.monotonic() - started >= config.chunk_seconds
    )


def halted(report: RunReport, out: ResourceOutcome) -> bool:
    """A signal, or another resource's 401 or spent quota: recorded in `out`, which ends the
    resource's part of the run (the sync stops looping over chunks once every outcome is)."""
    if report.stop_event.is_set():
        out.stop = out.stop or StopRequested("stopped by signal")
        return True
    if report.halt is not None:  # another resource hit a 401 or the quota: don't spend more
        if isinstance(report.halt, TryLater):
            out.stop = out.stop or report.halt
        elif isinstance(report.halt, ApiError):
            out.error = out.error or report.halt
        return True
    return False


def failed(
    spec: ResourceSpec,
    report: RunReport,
    out: ResourceOutcome,
    exc: ApiError | TryLater | ContractViolation,
) -> None:
    if isinstance(exc, TryLater):
        out.stop = out.stop or exc  # the first stop tells why (ranges may meet it more than once)
        if not isinstance(exc, CiklekUnavailable):  # one endpoint down is not all of them
            report.halt = exc
        return
    if isinstance(exc, MissingScope):
        exc.resource, exc.scope = spec.name, spec.scope
    elif isinstance(exc, Unauthorized):
        report.halt = exc
    out.error = exc


def _fingerprint(record: object) -> str:
    """A stable stand-in id for a record without one, for the last-page versions."""
    text = bounded_json(record, sort_keys=True)  # a poison record must not crash the traversal
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:24]


def cursor_of(record: object, spec: ResourceSpec) -> str | int | float | bool | None:
    value = record.get(spec.cursor_field) if isinstance(record, dict) else None
    return (
        value if value is None or isinstance(value, str | int | float | bool) else key_text(value)
    )


def _parsed(value: object) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except Invalid:
        return None


def _ends(
    records: Sequence[object], spec: ResourceSpec
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """updated_at of a page's first and last records (the first and last that have one)."""
    first = next((at for r in records if (at := _parsed(cursor_of(r, spec)))), None)
    last = next((at for r in reversed(records) if (at := _parsed(cursor_of(r, spec)))), None)
    return first, last


def _at_or_after(value: object, bound: dt.datetime) -> bool:
    parsed = _parsed(value)
    return parsed is not None and parsed >= bound


def _furthest(versions: list[Version]) -> Position | None:
    """The page's furthest (updated_at, id): how far peers the list order it reaches."""
    positions = [(at, rid) for rid, cursor in versions if (at := _parsed(cursor)) is not None]
    return max(positions, default=None)


def newest(records: Iterator[tuple[str, object]], spec: ResourceSpec) -> dict[str, object]:
    """One version per id across the ranges of a chunk: the one furthest peers the list.

    Ranges are walked at once, so arrival order is not list order; a record updated during the
    traversal can be met by two ranges, and its later `updated_at` is its newer version.
    """
    kept: dict[str, object] = {}
    for record_id, record in records:
        have = kept.get(record_id)
        if have is None or _later(record, have, spec):
            kept.pop(record_id, None)
            kept[record_id] = record
    return kept


def _later(record: object, than: object, spec: ResourceSpec) -> bool:
    mine, theirs = _parsed(cursor_of(record, spec)), _parsed(cursor_of(than, spec))
    if mine is None or theirs is None:
        return True  # nothing to compare: the later range (they come in list order) wins
    return mine >= theirs
