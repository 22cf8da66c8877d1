"""`ciklek sweep`: a full traversal that finds the records deleted upstream, and marks them.

The API has no delete feed, so the only way to learn that a record is gone is to list every
record and notice the ones that did not come. A sweep is a traversal of kind "sweep" (its own
slot in the resource state, see `connector.traversal`), chunked and resumable like a sync; this
module keeps what marking needs and does the marking once the traversal is complete.

Why "seen" is `_dlt_load_id >= threshold`: the threshold is the load id of the sweep's first
chunk, and dlt's load ids are increasing timestamps. Every record the sweep fetches is merged
(no last-page skipping), which rewrites its row with the chunk's load id; a sync between two
sweep runs rewrites the rows it loads with a later load id too. So "seen since the sweep
started" is a property of the warehouse rows themselves and survives a fresh container; only
the records that were fetched but quarantined (no row was written) are kept apart, in the
resource's dlt state. A record updated or created while the sweep runs moves to the end of the
list (lists are ordered by `updated_at`), which the sweep has not reached yet, or is loaded by a
sync after the threshold: either way it is seen, never marked.

Why marking waits for the commit and is idempotent: a completed traversal is kept as *pending*
in the dlt state of the chunk that completed it; the marks are SQL run after that chunk is
committed. Marking again changes nothing (rows loaded later have later load ids), so a run
killed between marking and recording it simply marks again on the next sweep.

Why the guard: a list endpoint that silently leaves out records (a bug, a truncated response)
looks exactly like mass deletion. Marking more than `sweep_max_delete_share` of a resource's
live rows, or having seen fewer distinct ids than the list's last `meta.total`, is refused: the
result is kept (pending, with the reason) for 24 hours, so `ciklek sweep --force` applies it
without another traversal; after that the next sweep starts over.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dlt
import pyarrow as pa

from connector.errors import BudgetSpent
from connector.ledger import QuotaLedger
from connector.normalize import DELETED_AT_COLUMN
from connector.run import RunReport
from connector.traversal import ResourceState, Traversal, instant, iso

if TYPE_CHECKING:
    from dlt.destinations.sql_client import SqlClientBase

    from connector.catalogue import ResourceSpec
    from connector.settings import Settings

PENDING_HOURS = 24  # a refused result can be forced this long; then the next sweep starts over
MAX_QUARANTINED = 10_000  # ids kept in dlt state; a sweep quarantining more refuses to mark
# dlt's load ids are `str(unix time)` ("1764438000.123456"): until the year 2286 the integer part
# has ten digits, so comparing them as text (which every SQL dialect does alike) is comparing
# the instants.
LOAD_ID = "_dlt_load_id"
JSON = dict[str, object]


# --- the budget a sweep run may spend ------------------------------------------------------


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


# --- what a sweep keeps in dlt state ---------------------------------------------------------


@dataclass
class Book:
    """`ResourceState.sweeps`: the sweep in progress, a completed one not yet applied, the last
    one applied."""

    current: JSON | None = None  # id, threshold, started_at, quarantined, unkeyed
    pending: JSON | None = None  # current + completed_at, last_total, received, refused
    last: JSON | None = None  # completed_at, applied_at, marked, mode

    @classmethod
    def load(cls, raw: Mapping[str, object] | None) -> Book:
        raw = raw or {}

        def part(key: str) -> JSON | None:
            value = raw.get(key)
            return dict(value) if isinstance(value, dict) else None

        return cls(part("current"), part("pending"), part("last"))

    def dump(self) -> JSON:
        return {"current": self.current, "pending": self.pending, "last": self.last}


def current_load_id() -> str:
    """The load id of the chunk being extracted: the sweep's threshold when it is the first."""
    try:
        return str(dlt.current.load_package_state()["load_id"])
    except Exception:  # outside an extract (unit tests): "now" in dlt's load-id form
        return f"{dt.datetime.now(dt.UTC).timestamp():.6f}"


def with_load_id(table: pa.Table) -> pa.Table:
    """The rows with the load that writes them (`_dlt_load_id`, which dlt leaves out of Arrow
    tables unless asked, and replaces when asked): a sweep's "seen" is a load id comparison."""
    column = pa.repeat(pa.scalar(current_load_id(), pa.string()), table.num_rows)
    index = table.schema.get_field_index(LOAD_ID)
    if index >= 0:
        return table.set_column(index, LOAD_ID, column)
    return table.append_column(LOAD_ID, column)


def on_chunk(
    state: ResourceState, trav: Traversal, rejects: Sequence[Mapping[str, object]], complete: bool
) -> None:
    """A chunk of a sweep traversal ends: note its quarantined ids; keep a completed sweep as
    pending (marking happens once this chunk is committed)."""
    book = Book.load(state.sweeps)
    current = book.current
    if current is None or current.get("id") != trav.id:
        current = {
            "id": trav.id, "threshold": current_load_id(), "started_at": trav.started_at,
            "quarantined": [], "unkeyed": 0,
        }  # fmt: skip
        book.pending = None  # a new sweep replaces a result nobody applied in time
    quarantined = _strings(current.get("quarantined"))
    known = set(quarantined)
    for reject in rejects:
        rid = reject.get("record_id")
        if rid is None:
            current["unkeyed"] = _count(current.get("unkeyed")) + 1
        elif str(rid) in known:
            continue
        elif len(quarantined) < MAX_QUARANTINED:
            known.add(str(rid))
            quarantined.append(str(rid))
        else:  # their rows would look unseen: settle refuses rather than mark them
            current["overflow"] = True
    current["quarantined"] = quarantined
    book.current = current
    if complete:
        book.pending = {
            **current,
            "completed_at": iso(dt.datetime.now(dt.UTC)),
            "last_total": trav.last_total,
            "received": trav.received,
            "pages": trav.pages,
            "refused": None,
        }
        book.current = None
    state.sweeps = book.dump()


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --- settling a completed sweep: the guard, then the marks --------------------------------


@dataclass(frozen=True)
class Verdict:
    """What marking a completed sweep would do to one resource's table."""

    live: int  # rows not marked deleted
    unseen: int  # of those, rows the sweep did not see: what it would mark
    seen: int  # distinct records seen (rows loaded since the threshold, plus quarantined)
    expected: int | None  # meta.total of the traversal's last page

    def refusal(self, max_share: float) -> str | None:
        """Why marking would be unsafe, or None."""
        if self.expected is not None and self.seen < self.expected:
            return (
                f"the sweep saw {self.seen:,} distinct records but the list announced "
                f"{self.expected:,} (meta.total): the list left records out"
            )
        if self.unseen > max_share * self.live:
            share = self.unseen / self.live if self.live else 1.0
            return (
                f"{share:.0%} of its {self.live:,} live rows, more than sweep_max_delete_share "
                f"{max_share:.0%}"
            )
        return None


def settle(
    pipeline: dlt.Pipeline,
    settings: Settings,
    report: RunReport,
    names: Sequence[str],
    *,
    force: bool,
) -> None:
    """Apply (or refuse) the completed sweeps of `names` in the committed state.

    Called before a sweep run's chunks (a result kept from an earlier run: `--force`, or a run
    killed before it marked) and after them (sweeps completed by this run). A settled resource
    is done for this run; what changed in its state goes out with the run row.
    """
    states = _committed(pipeline, names)
    for name in names:
        if name in report.state_updates:
            continue
        book = Book.load(states[name].sweeps)
        pending = book.pending
        if pending is None or _expired(pending):
            continue  # nothing to settle; an expired result is replaced by the next sweep
        spec = settings.catalogue[name]
        out = report.outcome(name)
        out.done = True
        with pipeline.sql_client() as client:
            verdict = _verdict(client, spec, pending)
            reason = verdict.refusal(settings.sweep_max_delete_share)
            if pending.get("overflow"):
                reason = f"more than {MAX_QUARANTINED:,} fetched records were quarantined"
            if reason is not None and not force:
                out.sweep_refused = (
                    f"sweep refused to mark {verdict.unseen:,} row(s) deleted: {reason}; nothing "
                    "was marked: check, then run `ciklek sweep --force` within "
                    f"{PENDING_HOURS} h to apply this result"
                )
                pending["refused"] = {"reason": reason, "would_mark": verdict.unseen}
            else:
                _mark(client, spec, pending, hard=settings.deletes == "hard")
                out.marked_deleted = verdict.unseen
                verb = "removed" if settings.deletes == "hard" else "marked deleted"
                out.notes.append(f"sweep complete: {verdict.unseen:,} row(s) {verb}")
                book.last = {
                    "completed_at": pending.get("completed_at"),
                    "applied_at": iso(dt.datetime.now(dt.UTC)),
                    "marked": verdict.unseen,
                    "mode": settings.deletes,
                    "forced": reason is not None,
                }
                book.pending = None
        report.state_updates[name] = {"sweeps": book.dump()}


def _committed(pipeline: dlt.Pipeline, names: Sequence[str]) -> dict[str, ResourceState]:
    resources = pipeline.state.get("sources", {}).get("ciklek", {}).get("resources", {})
    return {n: ResourceState.load(resources.get(n, {})) for n in names}


def _expired(pending: Mapping[str, object]) -> bool:
    completed = instant(str(pending.get("completed_at") or "")) or dt.datetime.min.replace(
        tzinfo=dt.UTC
    )
    return dt.datetime.now(dt.UTC) - completed > dt.timedelta(hours=PENDING_HOURS)


class _Sql:
    """Names and the "not seen" condition of one table, quoted for the destination."""

    def __init__(self, client: SqlClientBase[object], table: str, pending: Mapping[str, object]):
        self.table = client.make_qualified_table_name(table)
        self.deleted = client.escape_column_name(DELETED_AT_COLUMN)
        self.load = client.escape_column_name(LOAD_ID)
        self.id = client.escape_column_name("id")
        quarantined = _strings(pending.get("quarantined"))
        self.params: list[object] = [str(pending.get("threshold")), *quarantined]
        keep = f" AND CAST({self.id} AS VARCHAR) NOT IN ({', '.join(['%s'] * len(quarantined))})"
        # Rows loaded before load ids were written (an older connector) have none: not seen.
        self.unseen = f"({self.load} IS NULL OR {self.load} < %s)" + (keep if quarantined else "")


def _scalar(client: SqlClientBase[object], sql: str, *params: object) -> int:
    rows = client.execute_sql(sql, *params)
    return int(rows[0][0]) if rows else 0


def _has_table(client: SqlClientBase[object], table: str) -> bool:
    """Does the table exist, with the marker column? (A resource with no rows has no table.)"""
    rows = client.execute_sql(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        client.dataset_name,
        table,
        DELETED_AT_COLUMN,
    )
    return bool(rows and rows[0][0])


def _verdict(
    client: SqlClientBase[object], spec: ResourceSpec, pending: Mapping[str, object]
) -> Verdict:
    expected = pending.get("last_total")
    extra = len(_strings(pending.get("quarantined"))) + _count(pending.get("unkeyed"))
    if not _has_table(client, spec.name):
        return Verdict(0, 0, extra, expected if isinstance(expected, int) else None)
    q = _Sql(client, spec.name, pending)
    live_rows = f"SELECT count(*) FROM {q.table} WHERE {q.deleted} IS NULL"
    return Verdict(
        live=_scalar(client, live_rows),
        unseen=_scalar(client, f"{live_rows} AND {q.unseen}", *q.params),
        seen=_scalar(client, f"SELECT count(*) FROM {q.table} WHERE {q.load} >= %s", q.params[0])
        + extra,
        expected=expected if isinstance(expected, int) else None,
    )


def _mark(
    client: SqlClientBase[object], spec: ResourceSpec, pending: Mapping[str, object], *, hard: bool
) -> None:
    """Mark (or remove) the rows not seen, and the line items of the orders among them."""
    if not _has_table(client, spec.name):
        return
    q = _Sql(client, spec.name, pending)
    child = spec.child
    items = client.make_qualified_table_name(child.table) if child else None
    has_items = child is not None and _has_table(client, child.table)
    at = instant(str(pending.get("completed_at"))) or dt.datetime.now(dt.UTC)
    with client.begin_transaction():
        if hard:
            if has_items and child is not None:
                link = client.escape_column_name(child.parent_key)
                client.execute_sql(
                    f"DELETE FROM {items} WHERE {link} IN "
                    f"(SELECT {q.id} FROM {q.table} WHERE {q.unseen})",
                    *q.params,
                )
            client.execute_sql(f"DELETE FROM {q.table} WHERE {q.unseen}", *q.params)
            return
        client.execute_sql(
            f"UPDATE {q.table} SET {q.deleted} = %s WHERE {q.deleted} IS NULL AND {q.unseen}",
            at,
            *q.params,
        )
        if has_items and child is not None:
            link = client.escape_column_name(child.parent_key)
            client.execute_sql(
                f"UPDATE {items} SET {q.deleted} = %s WHERE {q.deleted} IS NULL AND {link} IN "
                f"(SELECT {q.id} FROM {q.table} WHERE {q.deleted} IS NOT NULL)",
                at,
            )


# --- what `status` and `plan` show -----------------------------------------------------------


def sweep_status(state: ResourceState) -> JSON:
    """The sweep part of a resource in `status.json`."""
    book, trav = Book.load(state.sweeps), state.sweep
    return {
        "sweep": None
        if trav is None
        else {
            "pages": trav.pages,
            "received": trav.received,
            "total": trav.total,
            "started_at": trav.started_at,
        },
        "sweep_pending": None
        if book.pending is None
        else {k: v for k, v in book.pending.items() if k != "quarantined"},
        "last_sweep": book.last,
    }


def status_lines(resources: Mapping[str, Mapping[str, object]]) -> list[str]:
    """`ciklek status`: a sweep in progress, a refused result, the last completed sweep."""
    lines: list[str] = []
    for name, res in resources.items():
        trav, pending, last = res.get("sweep"), res.get("sweep_pending"), res.get("last_sweep")
        if isinstance(trav, dict):
            total = trav.get("total")
            of = f" of ~{total:,} records" if isinstance(total, int) else ""
            lines.append(
                f"sweep {name}: in progress since {trav.get('started_at')}, "
                f"{trav.get('pages', 0)} pages, {trav.get('received', 0):,} records{of}"
            )
        if isinstance(pending, dict):
            refused = pending.get("refused")
            why = f"refused ({refused.get('reason')})" if isinstance(refused, dict) else "to mark"
            lines.append(
                f"sweep {name}: completed {pending.get('completed_at')}, {why}; "
                "`ciklek sweep --force` applies it"
            )
        if isinstance(last, dict):
            verb = "removed" if last.get("mode") == "hard" else "marked deleted"
            lines.append(
                f"last sweep {name}: completed {last.get('completed_at')}, "
                f"{last.get('marked', 0)} row(s) {verb}"
            )
    return lines


def plan_lines(totals: Mapping[str, int], settings: Settings) -> list[str]:
    """`ciklek plan`: what a sweep of each resource costs (N records -> ceil(N / page) requests)
    and how many days it takes with the share of the budget a sweep may use."""
    per_day = max(1, settings.daily_request_budget - settings.sweep_reserve)
    lines = []
    for name, total in totals.items():
        requests = max(1, math.ceil(total / settings.page_size))
        runs = math.ceil(requests / settings.sweep_run_requests)
        lines.append(
            f"sweep {name}: {requests:,} requests, {math.ceil(requests / per_day)} day(s) at "
            f"{per_day:,} requests/day (budget less sweep_reserve), {runs} run(s) of "
            f"sweep_run_requests {settings.sweep_run_requests:,}"
        )
    return lines
