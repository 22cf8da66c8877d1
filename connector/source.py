"""The dlt source: one resource per catalogue entry, incremental, chunked, resumable.

Why hand-kept watermarks instead of `dlt.sources.incremental`: the orders resource also emits
`order_line_items` and `_ciklek_rejects`, which dlt's incremental cannot follow
(IncrementalCursorPathMissing), and a resumable traversal needs more than a watermark: the cursor
of the next page, the cursor that fetched the last page (a no-change sync then costs one
request), and the versions on that last page (so they are not loaded again).

Why generators end instead of raising: dlt discards a whole extract, state included, when a
resource raises. A quota stop, a SIGTERM or a fatal API error is recorded in `RunControl` and the
generator returns normally, so every page fetched so far is committed with its state.

Resource state (`dlt.current.resource_state()`), per resource:
    watermark   ISO UTC instant: max `updated_at` of completed traversals
    resume      where the next incremental traversal continues: since, after, last_page
    traversal   the incremental (or full-refresh) traversal in progress, or None
    windows     backfill windows (--since/--until) in progress, keyed by window
    rows_loaded cumulative rows handed to dlt
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.extract.resource import DltResource

from connector.catalogue import REJECTS_TABLE, RUNS_TABLE, ResourceSpec
from connector.client import CiklekClient
from connector.errors import (
    ApiError,
    BadRequest,
    CiklekError,
    CiklekUnavailable,
    MissingScope,
    StopRequested,
    TryLater,
    Unauthorized,
)
from connector.normalize import (
    DELETED_COLUMN,
    Invalid,
    build_batch,
    dlt_columns,
    parse_instant,
    rejects_table,
)
from connector.reconcile import IdTracker, Reconciliation
from connector.undocumented import bounded_json, key_text


def iso(instant: dt.datetime) -> str:
    """The one way instants are written to state and to the API: UTC, microseconds, `Z`."""
    utc = instant.astimezone(dt.UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")  # the reference's own form, for strict servers


def instant(value: str | None) -> dt.datetime | None:
    """State and flags hold ISO strings; comparisons happen on instants, never on strings."""
    return parse_instant(value) if value else None


@dataclass
class ResourceOutcome:
    """What happened to one resource during this run (the summary and exit code read it)."""

    pages: int = 0
    records: int = 0
    rows: int = 0
    child_rows: int = 0
    rejects: int = 0
    chunks: int = 0
    done: bool = False
    total: int | None = None
    traversal_pages: int = 0
    stop: TryLater | None = None
    error: ApiError | None = None
    reconciliation: Reconciliation | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Nothing more to do for this resource in this run."""
        return self.done or self.stop is not None or self.error is not None


@dataclass
class RunControl:
    """How this run drives the resources, and where they report back.

    Without chunk limits a resource traverses to the end in one extract (plain dlt use, e.g.
    Dagster); `ciklek sync` sets `chunk_pages` / `chunk_seconds` so each load commits a bounded
    amount of work.
    """

    client: CiklekClient
    page_size: int = 100
    chunk_pages: int | None = None
    chunk_seconds: float | None = None
    # Pages fetched by all resources in the current load: `chunk_pages` bounds a commit, not
    # each resource in it, so a kill loses at most `chunk_pages` requests (sync resets it).
    chunk_used: int = 0
    lookback_seconds: float = 0.0
    window: tuple[dt.datetime | None, dt.datetime | None] | None = None
    full_refresh: bool = False  # a traversal started now is a reload (kind "refresh")
    tracker_dir: Path | None = None
    on_page: Callable[[str, ResourceOutcome], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    outcomes: dict[str, ResourceOutcome] = field(default_factory=dict)
    # `ciklek sync` loads rejects through their own resource, so the table belongs to no data
    # resource: dlt's refresh drops the tables a resource owns, and a variant table is owned by
    # whichever resource happened to create it first. Plain dlt use (Dagster) emits them inline.
    rejects_inline: bool = True
    pending_rejects: list[dict[str, Any]] = field(default_factory=list)
    halt: CiklekError | None = None  # a key refused or quota spent: every resource stops
    run_rows: list[dict[str, Any]] = field(default_factory=list)

    def outcome(self, resource: str) -> ResourceOutcome:
        return self.outcomes.setdefault(resource, ResourceOutcome())


def _child_hints(spec: ResourceSpec) -> Any:
    assert spec.child is not None
    prefix = spec.child.table + "."
    excluded = frozenset(e[len(prefix) :] for e in spec.excluded if e.startswith(prefix))
    columns = dlt_columns(spec.child.fields, excluded)
    columns += [
        {"name": spec.child.parent_key, "data_type": "text", "nullable": False},
        {"name": DELETED_COLUMN, "data_type": "bool", "hard_delete": True},
    ]
    return dlt.mark.make_hints(
        table_name=spec.child.table,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        # No primary key on purpose: with both keys dlt deletes `WHERE d.id = s.id OR
        # d.order_id = s.order_id`, which DuckDB can only run as a nested loop (destination rows
        # x chunk rows: 5 s for 57k x 29k). The merge key alone replaces each order's item set.
        primary_key=[],
        merge_key=spec.child.parent_key,
        columns=columns,  # type: ignore[arg-type]
    )


REJECT_HINTS = dlt.mark.make_hints(
    table_name=REJECTS_TABLE, write_disposition="append", primary_key=[], merge_key=[]
)


def _new_traversal(
    kind: str, since: str | None, until: str | None = None, after: str | None = None
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:12],
        "kind": kind,
        "since": since,
        "until": until,
        "after": after,
        "last_after": None,
        "fresh": after is None,
        "pages": 0,
        "received": 0,
        "total": None,
        "max_seen": None,
        "skip": [],
        "started_at": iso(dt.datetime.now(dt.UTC)),
    }


def _start_incremental(state: dict[str, Any], control: RunControl) -> dict[str, Any]:
    watermark = instant(state.get("watermark"))
    resume = state.get("resume")
    if resume and control.lookback_seconds <= 0:
        # Continue from the cursor that fetched the last page: one request when nothing changed.
        trav = _new_traversal("incremental", resume.get("since"), after=resume.get("after"))
        trav["skip"] = resume.get("last_page") or []
        return trav
    if watermark is None:
        if control.full_refresh:
            return _new_traversal("refresh", None)  # a later --full-refresh continues it
        return _new_traversal("full" if not state.get("rows_loaded") else "incremental", None)
    since = watermark - dt.timedelta(seconds=control.lookback_seconds)
    return _new_traversal("incremental", iso(since))


def _restart_since(state: dict[str, Any], trav: dict[str, Any], control: RunControl) -> str | None:
    """Where a traversal whose stored cursor the server rejected starts again."""
    if trav["kind"] == "window":
        return str(trav["since"]) if trav["since"] else None
    watermark = instant(state.get("watermark"))
    if watermark is None:
        return None
    return iso(watermark - dt.timedelta(seconds=control.lookback_seconds))


def _traverse(spec: ResourceSpec, control: RunControl) -> Iterator[Any]:
    state = dlt.current.resource_state()
    out = control.outcome(spec.name)
    if control.window is not None:
        since, until = control.window
        key = f"{iso(since) if since else '-'}|{iso(until) if until else '-'}"
        windows = state.setdefault("windows", {})
        trav = windows.setdefault(
            key,
            _new_traversal("window", iso(since) if since else None, iso(until) if until else None),
        )
    else:
        trav = state.get("traversal") or _start_incremental(state, control)
        state["traversal"] = trav
    until_at = instant(trav.get("until"))
    tracker = _tracker(control, spec, trav)
    skip = {tuple(pair) for pair in trav.get("skip") or []}

    latest: dict[str, dict[str, Any]] = {}
    loose: list[Any] = []
    seen_ids: list[str] = []
    last_page: list[tuple[str, Any]] = []
    chunk_pages, started, complete = 0, time.monotonic(), False
    while True:
        if control.stop_event.is_set():
            out.stop = StopRequested("stopped by signal")
            break
        if control.halt is not None:  # another resource hit a 401 or the quota: don't spend more
            if isinstance(control.halt, TryLater):
                out.stop = control.halt
            elif isinstance(control.halt, ApiError):
                out.error = control.halt
            break
        if control.chunk_pages and control.chunk_used >= control.chunk_pages:
            break
        if (
            control.chunk_seconds
            and chunk_pages
            and time.monotonic() - started >= control.chunk_seconds
        ):
            break
        try:
            page = control.client.fetch_page(
                spec.path, limit=control.page_size, after=trav["after"], updated_since=trav["since"]
            )
        except BadRequest as exc:
            if trav["after"] is not None and not trav.get("restarted"):
                # The server no longer accepts our stored cursor: start this traversal over from
                # its updated_since rather than failing every future run.
                out.notes.append(
                    f"stored cursor rejected ({exc.code or 400}); restarted from updated_since"
                )
                trav.update(
                    after=None,
                    last_after=None,
                    since=_restart_since(state, trav, control),
                    restarted=True,
                    fresh=True,
                    pages=0,
                    received=0,
                    total=None,
                    skip=[],
                )
                skip = set()
                tracker = _tracker(control, spec, trav)
                continue
            out.error = exc
            break
        except MissingScope as exc:
            exc.resource, exc.scope = spec.name, spec.scope
            out.error = exc
            break
        except ApiError as exc:
            out.error = exc
            if isinstance(exc, Unauthorized):
                control.halt = exc
            break
        except TryLater as exc:
            out.stop = exc
            if not isinstance(exc, CiklekUnavailable):  # one endpoint down is not all of them
                control.halt = exc
            break
        chunk_pages += 1
        control.chunk_used += 1
        out.pages += 1
        trav["pages"] += 1
        if trav["fresh"] and trav["pages"] == 1:
            trav["total"] = page.total
        out.total = trav["total"] if trav["total"] is not None else page.total
        out.traversal_pages = trav["pages"]
        last_page = []
        accepted = 0
        for record in page.records:
            record_id = record.get(spec.primary_key) if isinstance(record, dict) else None
            if record_id is None:
                # No id: rejected by build_batch. Remember it like any other version on the last
                # page, so a resume that re-reads that page does not quarantine it again.
                version = (_fingerprint(record), _cursor_of(record, spec))
                last_page.append(version)
                if version not in skip:
                    loose.append(record)
                continue
            if until_at is not None and _at_or_after(record.get(spec.cursor_field), until_at):
                continue  # outside the window; the traversal ends with the page that passes it
            cursor_value = _cursor_of(record, spec)
            accepted += 1
            record_id = key_text(record_id)
            seen_ids.append(record_id)
            last_page.append((record_id, cursor_value))
            if (record_id, cursor_value) in skip:
                continue  # the exact version already loaded by the previous traversal
            latest.pop(record_id, None)
            latest[record_id] = record  # a later version in the same chunk wins
        trav["received"] += accepted
        out.records += len(page.records)
        trav["last_after"] = trav["after"]
        if control.on_page is not None:
            control.on_page(spec.name, out)
        # Lists are ordered by updated_at: a page ending past --until ends the window.
        reached_until = until_at is not None and _at_or_after(
            _cursor_of(page.records[-1], spec) if page.records else None, until_at
        )
        if page.next_cursor is None or reached_until:
            complete = True
            break
        if page.next_cursor == trav["after"]:
            # A server handing back the cursor it was given would loop until the quota is gone.
            out.error = ApiError(
                "next_cursor did not advance (the API returned the cursor it was sent); "
                "stopped to protect the quota",
                status=200,
                code="cursor_not_advancing",
                endpoint="/" + spec.path,
            )
            break
        trav["after"] = page.next_cursor

    batch = build_batch(spec, [*loose, *latest.values()])
    if batch.max_cursor is not None:
        seen = instant(trav["max_seen"])
        if seen is None or batch.max_cursor > seen:
            trav["max_seen"] = iso(batch.max_cursor)
    if batch.parent is not None:
        out.rows += batch.parent.num_rows
        state["rows_loaded"] = state.get("rows_loaded", 0) + batch.parent.num_rows
        yield batch.parent
    if batch.child is not None:
        out.child_rows += batch.child_items  # tombstones are not rows
        yield dlt.mark.with_hints(batch.child, _child_hints(spec), create_table_variant=True)
    if batch.rejects:
        out.rejects += len(batch.rejects)
        if control.rejects_inline:
            yield dlt.mark.with_hints(
                rejects_table(batch.rejects), REJECT_HINTS, create_table_variant=True
            )
        else:  # loaded by the `_ciklek_rejects` resource, which runs after this one
            control.pending_rejects.extend(batch.rejects)
    out.chunks += 1
    if tracker is not None:
        tracker.add(seen_ids)
    if complete:
        _finish(state, trav, spec, out, tracker, last_page, control)


def _fingerprint(record: Any) -> str:
    """A stable stand-in id for a record without one, for the last-page versions."""
    text = bounded_json(record, sort_keys=True)  # a poison record must not crash the traversal
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _cursor_of(record: Any, spec: ResourceSpec) -> Any:
    value = record.get(spec.cursor_field) if isinstance(record, dict) else None
    return value if value is None or isinstance(value, (str, int, float, bool)) else key_text(value)


def _at_or_after(value: Any, bound: dt.datetime) -> bool:
    try:
        parsed = parse_instant(value)
    except Invalid:
        return False
    return parsed is not None and parsed >= bound


def _tracker(control: RunControl, spec: ResourceSpec, trav: dict[str, Any]) -> IdTracker | None:
    if control.tracker_dir is None or not trav["fresh"]:
        return None
    return IdTracker(control.tracker_dir / f"{spec.name}-{trav['id']}.ids")


def _finish(
    state: dict[str, Any],
    trav: dict[str, Any],
    spec: ResourceSpec,
    out: ResourceOutcome,
    tracker: IdTracker | None,
    last_page: list[tuple[str, Any]],
    control: RunControl,
) -> None:
    """A traversal reached its last page: move the watermark (not for windows), keep resume."""
    out.done = True
    if tracker is not None and trav["total"] is not None and not trav.get("until"):
        # (a window's meta.total also counts records past --until: nothing to compare with)
        out.reconciliation = Reconciliation(
            expected=int(trav["total"]), distinct=len(tracker.ids), received=int(trav["received"])
        )
    if tracker is not None:
        tracker.discard()
    if trav["kind"] == "window":
        windows = state.get("windows", {})
        for key in [k for k, v in windows.items() if v is trav]:
            del windows[key]
        state["last_window"] = {
            "since": trav["since"],
            "until": trav["until"],
            "ended_at": iso(dt.datetime.now(dt.UTC)),
        }
        return
    old, seen = instant(state.get("watermark")), instant(trav["max_seen"])
    newest = max((t for t in (old, seen) if t is not None), default=None)
    if newest is not None:
        state["watermark"] = iso(newest)
    if trav["last_after"] is not None:
        resume: dict[str, Any] = {"since": trav["since"], "after": trav["last_after"]}
    else:
        resume = {"since": state.get("watermark"), "after": None}
    resume["last_page"] = [list(pair) for pair in last_page]
    state["resume"] = resume
    state["traversal"] = None
    state["last_traversal"] = {
        "kind": trav["kind"],
        "pages": trav["pages"],
        "ended_at": iso(dt.datetime.now(dt.UTC)),
    }


def make_resource(spec: ResourceSpec, control: RunControl) -> DltResource:
    """Column types come from the Arrow schema of every batch (declared in the catalogue).

    No `columns=` hint here on purpose: table variants (line items, rejects) inherit the
    resource's column hints, which would force order columns onto them.
    """
    return dlt.resource(
        _traverse,
        name=spec.name,
        write_disposition="merge",
        primary_key=spec.primary_key,
    )(spec, control)


RUN_COLUMNS: list[dict[str, Any]] = [
    {"name": "run_id", "data_type": "text"},
    {"name": "pipeline", "data_type": "text"},
    {"name": "started_at", "data_type": "timestamp", "timezone": True},
    {"name": "ended_at", "data_type": "timestamp", "timezone": True},
    {"name": "outcome", "data_type": "text"},
    {"name": "exit_code", "data_type": "bigint"},
    {"name": "resources", "data_type": "text"},
    {"name": "rows", "data_type": "bigint"},
    {"name": "line_item_rows", "data_type": "bigint"},
    {"name": "rejects", "data_type": "bigint"},
    {"name": "requests", "data_type": "bigint"},
    {"name": "rate_limited", "data_type": "bigint"},
    {"name": "waited_seconds", "data_type": "double"},
    {"name": "message", "data_type": "text"},
]


def _rejects(control: RunControl) -> Iterator[Any]:
    if control.pending_rejects:
        rows, control.pending_rejects = control.pending_rejects, []
        yield rejects_table(rows)


def _runs(control: RunControl) -> Iterator[list[dict[str, Any]]]:
    if control.run_rows:
        yield control.run_rows


@dlt.source(name="ciklek", max_table_nesting=0)
def ciklek_source(
    # Any, not list[str]: dlt injects `sources.ciklek.resources` here, and the documented
    # comma-separated string ("orders,customers") cannot be coerced to a list.
    resources: Any = None,
    control: Any = None,
    catalogue: Any = None,
) -> list[DltResource]:
    """The Ciklek source: `orders` (with `order_line_items`), `customers`, `products`.

    Called bare (`ciklek_source()`), it reads `[sources.ciklek]` through dlt's providers and
    traverses each resource to the end in one load, which is what orchestrators such as Dagster
    expect. `ciklek sync` passes its own `control` to get chunked, checkpointed loads.
    """
    if control is None or catalogue is None:
        from connector.settings import load_settings

        settings = load_settings(resources=resources)
        if control is None:
            from connector.client import build_client, ledger_for

            # Counted in the quota ledger under the source's name, held to the daily budget.
            ledger = ledger_for(settings, "ciklek_source")
            ledger.flush_every = 1
            client = build_client(settings, quota=ledger)
            control = RunControl(
                client=client,
                page_size=settings.page_size,
                lookback_seconds=settings.lookback_seconds,
            )
        catalogue = settings.catalogue
        names = list(settings.resources)
    else:
        names = list(resources or catalogue)
    selected = [make_resource(catalogue[name], control) for name in names]
    runs = dlt.resource(  # type: ignore[call-overload]
        _runs, name=RUNS_TABLE, write_disposition="append", selected=False, columns=RUN_COLUMNS
    )(control)
    rejects = dlt.resource(
        _rejects, name=REJECTS_TABLE, write_disposition="append", selected=False
    )(control)
    return [*selected, rejects, runs]
