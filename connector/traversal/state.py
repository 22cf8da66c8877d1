"""Where a resource's walk through the API list stands, and the transitions that move it.

Pure: no HTTP, no dlt. The page loop (`page_loop.py`) fetches pages and calls these functions;
everything that decides *what the next request is* lives here, so it can be tested page by page.

Why typed and versioned: the state outlives the code that wrote it (it travels in dlt's pipeline
state, in the warehouse). `ResourceState.load` reads every version ever written (version 0 is the
untyped dict of the first releases: same keys, no `version`), and `dump` writes plain JSON.

Resource state, per resource:
    watermark      ISO UTC instant: max `updated_at` of completed traversals
    resume         where the next incremental traversal continues: since, after, last_page,
                   and the versions seen within the look-back of the watermark (recent)
    traversal      the incremental (or full/refresh) traversal in progress, or None
    windows        backfill windows (--since/--until) in progress, keyed by window
    sweep          the sweep (`ciklek sweep`) in progress: its own slot, so syncs go on beside it
    sweeps         what a sweep needs to mark deletes (`connector/traversal/sweep_state.py`)
    (a traversal walked by several workers holds its `updated_since` ranges in `ranges`;
    see `connector/traversal/ranges.py`)
    rows_loaded    cumulative rows handed to dlt
    last_window    the last completed window; last_traversal: the last completed traversal
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

from connector.errors import BrokenPagination, ConfigError
from connector.records.normalize import Invalid, parse_instant
from connector.timefmt import iso

STATE_VERSION = 1

# A legitimate page always moves the traversal forward: lists are ordered by (updated_at, id)
# and the cursor encodes the last record's position, so a record updated mid-sync reappears
# *later*, with a newer updated_at (a new position), and never counts as "nothing new". A page
# counts as stale only when it brings no id unseen in this traversal AND no position beyond the
# furthest one seen: a server replaying records under fresh cursors. (The source works out a
# page's position only when it has no new id, so the furthest one kept may lag behind: that
# only ever makes a page count as new more easily, never a legitimate one stale.) Five in a
# row leaves room for a few empty pages a server might hand out around a filter, and costs at
# most five requests before the traversal stops.
MAX_STALE_PAGES = 5
# Digests of the last cursors followed, kept in state so a cycle is caught across chunks too;
# a longer cycle replays records and is caught by the stale-page rule.
CURSOR_MEMORY = 128
# Versions a traversal keeps for the look-back (`remember`): the next incremental traversal
# re-reads `lookback_seconds` behind the watermark and skips these, unchanged, so nothing is
# rewritten. Bounded because they travel in dlt's state with every load (about 75 bytes each):
# past this many changes in the window, the oldest are merged again (same values, no duplicate).
MAX_RECENT = 1_000

CursorValue = str | int | float | bool | None
Version = tuple[str, CursorValue]  # (record id, its cursor field): one loaded version
Position = tuple[dt.datetime, str]  # (updated_at, id): where a record sits in the list order
# One fetched page for the look-back: the newest updated_at on it (None: none parsed), its versions.
PageVersions = tuple[dt.datetime | None, list[Version]]
JSON = dict[str, object]


def instant(value: str | None) -> dt.datetime | None:
    """State and flags hold ISO strings; comparisons happen on instants, never on strings."""
    return parse_instant(value) if value else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _versions(value: object) -> list[Version]:
    if not isinstance(value, list):
        return []
    out: list[Version] = []
    for pair in value:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            cursor = pair[1]
            cursor = (
                cursor if cursor is None or isinstance(cursor, str | int | float) else str(cursor)
            )
            out.append((str(pair[0]), cursor))
    return out


def _dict(value: object) -> dict[str, object] | None:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


@dataclass
class Traversal:
    """One walk through a list, from its first request to the page without `next_cursor`."""

    id: str
    kind: str  # "full", "incremental", "refresh" (a --full-refresh reload), "window", "sweep"
    since: str | None = None
    until: str | None = None
    after: str | None = None  # the cursor of the next request
    last_after: str | None = None  # the cursor that fetched the last page
    fresh: bool = True  # started at the list's beginning: meta.total and reconciliation apply
    pages: int = 0
    received: int = 0
    total: int | None = None
    max_seen: str | None = None
    skip: list[Version] = field(default_factory=list)  # versions loaded by the last traversal
    started_at: str = ""
    restarted: bool = False  # restarted after a rejected cursor, and no page fetched since
    restarts: int = 0  # restarts after rejected cursors (see `restart`)
    early_rejections: int = 0  # restarts in a row whose rejected cursor was the first issued
    cursors: list[str] = field(default_factory=list)  # digests of recent cursors (loop guard)
    stale_pages: int = 0
    position: tuple[str, str] | None = None  # the furthest (updated_at, id) seen
    page_ids: list[str] = field(default_factory=list)  # digests of the last page's ids
    last_total: int | None = None  # meta.total of the latest page (a sweep's completeness check)
    # Ranges (`ranges.py`): a traversal split into `updated_since` ranges walks them instead of
    # itself; each range is a Traversal of kind "range" bounded by `until`.
    ranges: list[Traversal] = field(default_factory=list)
    parked: bool = False  # an open last range that reached the end before the others
    at: str | None = None  # updated_at of the last record fetched: where the walk stands
    first_at: str | None = None  # updated_at of the walk's first record
    upto: int | None = None  # records of the filtered list up to the last page (meta.page)
    tail_total: int | None = None  # meta.total of the list from `until` on (the next range)
    # A reload (kind "refresh") written into the live tables (`--drop-first`) rather than into
    # shadow tables swapped in at the end: decided when it starts, kept until it completes.
    in_place: bool = False
    recent: list[Version] = field(default_factory=list)  # seen within the look-back (remember)

    def to_json(self) -> JSON:
        return {
            "id": self.id, "kind": self.kind, "since": self.since, "until": self.until,
            "after": self.after, "last_after": self.last_after, "fresh": self.fresh,
            "pages": self.pages, "received": self.received, "total": self.total,
            "max_seen": self.max_seen, "skip": [list(v) for v in self.skip],
            "started_at": self.started_at, "restarted": self.restarted,
            "restarts": self.restarts, "early_rejections": self.early_rejections,
            "cursors": list(self.cursors), "stale_pages": self.stale_pages,
            "position": list(self.position) if self.position else None,
            "page_ids": list(self.page_ids), "last_total": self.last_total,
            **self._ranges_json(),
            **({"in_place": True} if self.in_place else {}),
            **({"recent": [list(v) for v in self.recent]} if self.recent else {}),
        }  # fmt: skip

    def _ranges_json(self) -> JSON:
        """Written only when used, so a sequential traversal's state stays as it was."""
        if not (self.ranges or self.kind == "range"):
            return {}
        return {
            "ranges": [r.to_json() for r in self.ranges], "parked": self.parked,
            "at": self.at, "first_at": self.first_at, "upto": self.upto,
            "tail_total": self.tail_total,
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> Traversal:
        position = raw.get("position")
        cursors, page_ids = raw.get("cursors"), raw.get("page_ids")
        ranges = raw.get("ranges")
        return cls(
            id=_str(raw.get("id")) or uuid.uuid4().hex[:12],
            kind=_str(raw.get("kind")) or "incremental",
            since=_str(raw.get("since")),
            until=_str(raw.get("until")),
            after=_str(raw.get("after")),
            last_after=_str(raw.get("last_after")),
            fresh=bool(raw.get("fresh", False)),
            pages=_int(raw.get("pages")) or 0,
            received=_int(raw.get("received")) or 0,
            total=_int(raw.get("total")),
            max_seen=_str(raw.get("max_seen")),
            skip=_versions(raw.get("skip")),
            started_at=_str(raw.get("started_at")) or "",
            restarted=bool(raw.get("restarted", False)),
            restarts=_int(raw.get("restarts")) or 0,
            early_rejections=_int(raw.get("early_rejections")) or 0,
            cursors=[c for c in cursors if isinstance(c, str)] if isinstance(cursors, list) else [],
            stale_pages=_int(raw.get("stale_pages")) or 0,
            page_ids=[i for i in page_ids if isinstance(i, str)]
            if isinstance(page_ids, list)
            else [],
            position=(str(position[0]), str(position[1]))
            if isinstance(position, list) and len(position) == 2
            else None,
            last_total=_int(raw.get("last_total")),
            ranges=[cls.from_json(r) for r in ranges if isinstance(r, dict)]
            if isinstance(ranges, list)
            else [],
            parked=bool(raw.get("parked", False)),
            at=_str(raw.get("at")),
            first_at=_str(raw.get("first_at")),
            upto=_int(raw.get("upto")),
            tail_total=_int(raw.get("tail_total")),
            in_place=bool(raw.get("in_place", False)),
            recent=_versions(raw.get("recent")),
        )


@dataclass
class ResumePoint:
    """Where the next incremental traversal starts: the cursor that fetched the last page, and
    the versions seen within the look-back of the watermark (`recent`, see `remember`)."""

    since: str | None
    after: str | None
    last_page: list[Version] = field(default_factory=list)
    recent: list[Version] = field(default_factory=list)


@dataclass
class ResourceState:
    """A resource's part of dlt's resource state, typed. See the module docstring."""

    watermark: str | None = None
    resume: ResumePoint | None = None
    traversal: Traversal | None = None
    windows: dict[str, Traversal] = field(default_factory=dict)
    rows_loaded: int = 0
    last_window: dict[str, object] | None = None
    last_traversal: dict[str, object] | None = None
    sweep: Traversal | None = None
    sweeps: dict[str, object] | None = None
    # A reload (`--full-refresh`) whose traversal completed into the shadow tables, waiting to
    # be swapped in (`connector/runs/reload.py`): kept until the swap is recorded.
    swap: dict[str, object] | None = None

    @classmethod
    def load(cls, raw: Mapping[str, object]) -> ResourceState:
        version = _int(raw.get("version")) or 0
        if version > STATE_VERSION:
            raise ConfigError(
                f"the pipeline state was written by a newer connector (state version {version}); "
                "upgrade the connector, or sync into a new --pipeline"
            )
        resume, trav, windows = raw.get("resume"), raw.get("traversal"), raw.get("windows")
        sweep = raw.get("sweep")
        return cls(
            watermark=_str(raw.get("watermark")),
            resume=ResumePoint(
                _str(resume.get("since")), _str(resume.get("after")),
                _versions(resume.get("last_page")), _versions(resume.get("recent")),
            ) if isinstance(resume, dict) else None,
            traversal=Traversal.from_json(trav) if isinstance(trav, dict) and trav else None,
            windows={
                str(k): Traversal.from_json(v) for k, v in windows.items() if isinstance(v, dict)
            } if isinstance(windows, dict) else {},
            rows_loaded=_int(raw.get("rows_loaded")) or 0,
            last_window=_dict(raw.get("last_window")),
            last_traversal=_dict(raw.get("last_traversal")),
            sweep=Traversal.from_json(sweep) if isinstance(sweep, dict) else None,
            sweeps=_dict(raw.get("sweeps")),
            swap=_dict(raw.get("swap")),
        )  # fmt: skip

    def dump(self) -> JSON:
        resume = self.resume
        return {
            "version": STATE_VERSION,
            "watermark": self.watermark,
            "resume": None if resume is None else {
                "since": resume.since, "after": resume.after,
                "last_page": [list(v) for v in resume.last_page],
                "recent": [list(v) for v in resume.recent],
            },
            "traversal": self.traversal.to_json() if self.traversal else None,
            "windows": {k: v.to_json() for k, v in self.windows.items()},
            "rows_loaded": self.rows_loaded,
            "last_window": self.last_window,
            "last_traversal": self.last_traversal,
            "sweep": self.sweep.to_json() if self.sweep else None,
            "sweeps": self.sweeps,
            "swap": self.swap,
        }  # fmt: skip

    def store(self, into: MutableMapping[str, object]) -> None:
        """Write back into dlt's resource state, a dict dlt owns and persists with the load."""
        into.update(self.dump())


def states_in(
    pipeline_state: Mapping[str, object], names: Iterable[str]
) -> dict[str, ResourceState]:
    """The typed states of `names` in a pipeline's committed state (dlt's `pipeline.state`)."""
    sources = pipeline_state.get("sources")
    ours = sources.get("ciklek") if isinstance(sources, Mapping) else None
    resources = ours.get("resources") if isinstance(ours, Mapping) else None
    found = resources if isinstance(resources, Mapping) else {}
    return {n: ResourceState.load(found.get(n) or {}) for n in names}


# --- transitions ---------------------------------------------------------------------------


def start(kind: str, since: str | None, until: str | None = None) -> Traversal:
    """A traversal from the beginning of the list (filtered by `since`/`until`)."""
    return Traversal(
        id=uuid.uuid4().hex[:12], kind=kind, since=since, until=until,
        started_at=iso(dt.datetime.now(dt.UTC)),
    )  # fmt: skip


def resume(point: ResumePoint) -> Traversal:
    """Continue from the cursor that fetched the last page: one request when nothing changed.

    The versions on that page were loaded already; `skip` keeps them from loading again.
    """
    trav = start("incremental", point.since)
    trav.after, trav.fresh, trav.skip = point.after, point.after is None, list(point.last_page)
    if point.after is not None:
        trav.cursors = [_digest(point.after)]
    return trav


def begin(
    state: ResourceState,
    *,
    window: tuple[dt.datetime | None, dt.datetime | None] | None,
    lookback_seconds: float,
    full_refresh: bool,
    sweep: bool = False,
    in_place: bool = False,
) -> Traversal:
    """The traversal this run works on: the one in progress, else a new one, kept in `state`.
    `in_place`: a reload that starts now writes into the live tables (`--drop-first`)."""
    if sweep:  # the whole list, no updated_since, in its own slot: syncs go on beside it
        if state.sweep is None:
            state.sweep = start("sweep", None)
        return state.sweep
    if window is not None:
        since, until = (iso(b) if b else None for b in window)
        key = f"{since or '-'}|{until or '-'}"
        return state.windows.setdefault(key, start("window", since, until))
    if full_refresh and (state.traversal is None or state.traversal.kind != "refresh"):
        return reload(state, in_place=in_place)
    if state.traversal is None:
        state.traversal = _next_traversal(state, lookback_seconds)
    return state.traversal


def reload(state: ResourceState, *, in_place: bool = False) -> Traversal:
    """A reload begins (`--full-refresh`): the whole list again, from its beginning. The
    watermark and resume point stay (the live table is still current as of them) until the
    reload completes; a sweep in progress is discarded (its "seen" would mix two loads)."""
    state.traversal = start("refresh", None)
    state.traversal.in_place = in_place
    state.sweep = None
    if state.sweeps is not None:
        state.sweeps = {"current": None, "pending": None, "last": state.sweeps.get("last")}
    return state.traversal


def _next_traversal(state: ResourceState, lookback_seconds: float) -> Traversal:
    if state.resume is not None and lookback_seconds <= 0:
        return resume(state.resume)
    since = _since_watermark(state, lookback_seconds)
    if since is None:
        return start("full" if not state.rows_loaded else "incremental", None)
    trav = start("incremental", since)
    if state.resume is not None:
        look_back(trav, state.resume)
    return trav


def look_back(trav: Traversal, point: ResumePoint) -> None:
    """Re-read the look-back window from `updated_since`: the versions the last traversal saw
    in it (and on its last page) were loaded already, so `skip` keeps them from loading again;
    what is not among them (a change that reached the API late) loads. A slice of the list,
    not all of it: no `meta.total` to reconcile."""
    trav.fresh = False
    trav.skip = list(dict.fromkeys([*point.recent, *point.last_page]))


def _since_watermark(state: ResourceState, lookback_seconds: float) -> str | None:
    watermark = instant(state.watermark)
    if watermark is None:
        return None
    return iso(watermark - dt.timedelta(seconds=lookback_seconds))


@dataclass(frozen=True)
class PageFacts:
    """What the traversal needs to know of one fetched page (the resource loop works it out)."""

    next_cursor: str | None
    total: int | None = None
    received: int = 0  # records with an id, inside the window
    reached_until: bool = False  # the page ends past --until: the window is done
    new_ids: bool = True  # at least one id this traversal had not seen
    furthest: Position | None = None
    endpoint: str = ""
    ids: tuple[str, ...] = ()  # the page's ids, so the next chunk knows them (see id_digest)
    first_at: dt.datetime | None = None  # updated_at of the page's first and last records
    last_at: dt.datetime | None = None
    upto: int | None = None  # (meta.page - 1) x limit + records on the page, when meta.page is


def accept_page(trav: Traversal, page: PageFacts) -> bool:
    """Count a fetched page and move to its `next_cursor`; True when the traversal is complete.

    Raises BrokenPagination (the page still counts) when the cursors loop.
    """
    trav.pages += 1
    trav.restarted = False  # a page came back: a cursor rejected from now on may restart again
    if trav.fresh and trav.pages == 1:
        trav.total = page.total
    if page.total is not None:
        trav.last_total = page.total
    trav.received += page.received
    trav.last_after = trav.after
    if page.last_at is not None:
        trav.at = iso(page.last_at)
    if trav.first_at is None and page.first_at is not None:
        trav.first_at = iso(page.first_at)
    trav.upto = page.upto if page.upto is not None else trav.received
    if page.next_cursor is None or page.reached_until:
        return True
    _guard_loops(trav, page, page.next_cursor)
    trav.after = page.next_cursor
    return False


def _guard_loops(trav: Traversal, page: PageFacts, cursor: str) -> None:
    if cursor == trav.after:
        raise BrokenPagination(
            "cursor_not_advancing",
            "next_cursor did not advance (the API returned the cursor it was sent)",
            page.endpoint,
        )
    digest = _digest(cursor)
    if digest in trav.cursors:
        raise BrokenPagination(
            "cursor_cycle",
            "next_cursor repeats a cursor this traversal already followed (a cycle)",
            page.endpoint,
        )
    trav.cursors = [*trav.cursors, digest][-CURSOR_MEMORY:]
    trav.page_ids = [id_digest(i) for i in page.ids]
    advanced = page.furthest is not None and (
        trav.position is None or page.furthest > _position(trav.position)
    )
    if advanced and page.furthest is not None:
        trav.position = (iso(page.furthest[0]), page.furthest[1])
    trav.stale_pages = 0 if advanced or page.new_ids else trav.stale_pages + 1
    if trav.stale_pages >= MAX_STALE_PAGES:
        raise BrokenPagination(
            "no_new_records",
            f"{MAX_STALE_PAGES} pages in a row brought no new record under new cursors",
            page.endpoint,
        )


def _position(stored: tuple[str, str]) -> Position:
    try:
        at = parse_instant(stored[0])
    except Invalid:
        at = None
    return (at or dt.datetime.min.replace(tzinfo=dt.UTC), stored[1])


def _digest(cursor: str) -> str:
    return hashlib.sha256(cursor.encode()).hexdigest()[:16]


def id_digest(record_id: str) -> str:
    """Short and fixed-size: the last page's ids travel in state to the next chunk, so a server
    replaying a page under a new cursor is recognised after a commit too."""
    return hashlib.sha256(record_id.encode()).hexdigest()[:12]


def restart(
    state: ResourceState, trav: Traversal, lookback_seconds: float, within: str | None = None
) -> bool:
    """The server rejected our cursor (stored, or issued a page ago: a rotated cursor secret):
    start this traversal (or range) over from its updated_since. False means "a real 400, give
    up": no cursor was sent, or the traversal restarted and no page came back since (the server
    rejects even a fresh start), or twice in a row the server rejected the first cursor it issued
    after a restart (a server that rejects every cursor would otherwise cost the day's quota).
    `within`: the kind of the traversal a range belongs to.
    """
    if trav.after is None or trav.restarted:
        return False
    early = trav.restarts > 0 and trav.pages <= 1
    if early and trav.early_rejections >= 1:
        return False
    trav.early_rejections = trav.early_rejections + 1 if early else 0
    trav.restarts += 1
    kind = within or trav.kind
    if kind in ("window", "sweep"):  # a sweep has none: it starts over from the top
        since = trav.since
    elif trav.kind == "range":  # from where it begins, or the watermark when that is later
        since = _later(trav.since, _since_watermark(state, lookback_seconds))
    else:
        since = _since_watermark(state, lookback_seconds)
    trav.after, trav.last_after, trav.since, trav.restarted, trav.fresh = (
        None,
        None,
        since,
        True,
        True,
    )
    trav.pages, trav.received, trav.total, trav.skip = 0, 0, None, []
    trav.cursors, trav.stale_pages, trav.position, trav.page_ids = [], 0, None, []
    trav.at, trav.first_at, trav.upto, trav.last_total = None, None, None, None
    return True


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two `updated_since` values (None: the list's beginning)."""
    at, bt = instant(a), instant(b)
    if at is None or bt is None:
        return b if at is None else a
    return a if at >= bt else b


def stop(trav: Traversal, max_cursor: dt.datetime | None) -> None:
    """A chunk ends (the traversal goes on next chunk or next run): keep its newest updated_at."""
    seen = instant(trav.max_seen)
    if max_cursor is not None and (seen is None or max_cursor > seen):
        trav.max_seen = iso(max_cursor)


LOOKBACK_KINDS = frozenset({"full", "incremental", "refresh"})  # traversals that move a watermark


def remember(
    trav: Traversal,
    pages: Iterable[PageVersions],
    lookback_seconds: float,
    watermark: str | None,
) -> None:
    """A chunk ends: keep in `trav.recent` the versions seen within `lookback_seconds` of the
    newest `updated_at` seen so far (the watermark this traversal will leave is at least that),
    the newest `MAX_RECENT` of them. Pages wholly older than that are passed over unparsed, so
    a backfill pays for its last pages only. Ranges fetch pages out of order: all of a chunk's
    pages come here, to the traversal they belong to."""
    if lookback_seconds <= 0 or trav.kind not in LOOKBACK_KINDS:
        return
    pages = list(pages)
    tops = [instant(watermark), instant(trav.max_seen), *(top for top, _ in pages)]
    newest = max((t for t in tops if t is not None), default=None)
    if newest is None:
        return
    floor = newest - dt.timedelta(seconds=lookback_seconds)
    candidates = [*trav.recent]
    for top, versions in pages:
        if top is not None and top >= floor:
            candidates += versions
    kept: dict[Version, dt.datetime] = {}
    for version in candidates:
        at = _cursor_instant(version[1])
        if at is not None and at >= floor:
            kept[version] = at
    newest_first = sorted(kept.items(), key=lambda item: item[1], reverse=True)
    trav.recent = [version for version, _ in newest_first[:MAX_RECENT]]


def _cursor_instant(cursor: CursorValue) -> dt.datetime | None:
    if not isinstance(cursor, str):
        return None
    try:
        return parse_instant(cursor)
    except Invalid:
        return None


def finish(
    state: ResourceState, trav: Traversal, last_page: list[Version], tail: Traversal | None = None
) -> None:
    """The traversal reached its last page: move the watermark (not for windows), keep resume.

    `tail`: the last range of a traversal walked in ranges; the next incremental traversal
    resumes from its last cursor (the cursor belongs to the range's own `updated_since`).
    """
    now = iso(dt.datetime.now(dt.UTC))
    if trav.kind == "sweep":  # no watermark, no resume point: `runs/sweep.py` takes it over
        state.sweep = None
        return
    if trav.kind == "window":
        state.windows = {k: v for k, v in state.windows.items() if v is not trav}
        state.last_window = {"since": trav.since, "until": trav.until, "ended_at": now}
        return
    candidates = [t for t in (instant(state.watermark), instant(trav.max_seen)) if t is not None]
    if candidates:
        state.watermark = iso(max(candidates))
    walk = tail if tail is not None else trav
    if walk.last_after is not None:
        state.resume = ResumePoint(walk.since, walk.last_after, list(last_page), list(trav.recent))
    else:
        state.resume = ResumePoint(state.watermark, None, list(last_page), list(trav.recent))
    state.traversal = None
    state.last_traversal = {"kind": trav.kind, "pages": trav.pages, "ended_at": now}
