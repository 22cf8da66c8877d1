"""`ciklek sweep`: settling a completed sweep (the guard, then the marks), and the load ids that
make "seen" a property of the warehouse rows.

The API has no delete feed, so the only way to learn that a record is gone is to list every
record and notice the ones that did not come. A sweep is a traversal of kind "sweep" (its own
slot in the resource state, see `connector/traversal/state.py`), chunked and resumable like a
sync; `connector/traversal/sweep_state.py` keeps what marking needs, and this module does the
marking once the traversal is complete (the SQL is `connector/warehouse/deletes.py`).

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
from collections.abc import Mapping, Sequence

import dlt
import pyarrow as pa

from connector.config.settings import Settings
from connector.timefmt import iso
from connector.traversal.run_report import RunReport
from connector.traversal.state import instant, states_in
from connector.traversal.sweep_state import MAX_QUARANTINED, SweepRecord, quarantined, unkeyed
from connector.warehouse.deletes import LOAD_ID, Seen, mark, verdict

PENDING_HOURS = 24  # a refused result can be forced this long; then the next sweep starts over


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
    states = states_in(pipeline.state, names)
    for name in names:
        if "sweeps" in report.state_updates.get(name, {}):
            continue  # settled already in this run
        record = SweepRecord.load(states[name].sweeps)
        pending = record.pending
        if pending is None or _expired(pending):
            continue  # nothing to settle; an expired result is replaced by the next sweep
        spec = settings.catalogue[name]
        out = report.outcome(name)
        out.done = True
        _note_reread(out.notes, pending)
        seen = Seen(str(pending.get("threshold")), quarantined(pending))
        expected = pending.get("last_total")
        with pipeline.sql_client() as client:
            found = verdict(
                client,
                spec,
                seen,
                unkeyed=unkeyed(pending),
                expected=expected if isinstance(expected, int) else None,
            )
            reason = found.refusal(settings.sweep_max_delete_share)
            if pending.get("overflow"):
                reason = f"more than {MAX_QUARANTINED:,} fetched records were quarantined"
            if reason is not None and not force:
                out.sweep_refused = (
                    f"sweep refused to mark {found.unseen:,} row(s) deleted: {reason}; nothing "
                    "was marked: check, then run `ciklek sweep --force` within "
                    f"{PENDING_HOURS} h to apply this result"
                )
                pending["refused"] = {"reason": reason, "would_mark": found.unseen}
            else:
                at = instant(str(pending.get("completed_at"))) or dt.datetime.now(dt.UTC)
                mark(client, spec, seen, at=at, hard=settings.deletes == "hard")
                out.marked_deleted = found.unseen
                verb = "removed" if settings.deletes == "hard" else "marked deleted"
                out.notes.append(f"sweep complete: {found.unseen:,} row(s) {verb}")
                record.last = {
                    "completed_at": pending.get("completed_at"),
                    "applied_at": iso(dt.datetime.now(dt.UTC)),
                    "marked": found.unseen,
                    "mode": settings.deletes,
                    "forced": reason is not None,
                }
                record.pending = None
        report.state_updates.setdefault(name, {})["sweeps"] = record.dump()


def _note_reread(notes: list[str], pending: Mapping[str, object]) -> None:
    """What the sweep's re-read of the changes made while it ran cost (see
    `traversal/sweep_state.py` `reread`)."""
    since, pages = pending.get("reread_since"), pending.get("reread_pages")
    if since and isinstance(pages, int):
        notes.append(
            f"sweep re-read the changes since {since} before marking: {pages:,} request(s)"
        )


def _expired(pending: Mapping[str, object]) -> bool:
    completed = instant(str(pending.get("completed_at") or "")) or dt.datetime.min.replace(
        tzinfo=dt.UTC
    )
    return dt.datetime.now(dt.UTC) - completed > dt.timedelta(hours=PENDING_HOURS)
