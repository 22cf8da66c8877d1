"""A run's requests recorded ahead in the warehouse (`_ciklek_request_ledger`), for runners that
rebuild the daily count from there.

Why: on an ephemeral runner (a CI job, a fresh container) the local quota ledger is gone and the
count is rebuilt from the warehouse (`connector/warehouse/run_log.py`). A run killed with
SIGKILL writes no `_ciklek_sync_runs` row, so its requests would be missing from that count and
the daily budget overshot. So each run keeps one row per UTC day here, merged on (run_id, day):
before its first request a small load records an allowance (`reserved`); every chunk's load
records the requests used so far and the next chunk's allowance; the run row's load closes it
(`closed`, `reserved` = `used`). The quota ledger never lets the run send a request beyond the
allowance its last committed load recorded (a chunk that reaches it ends as if full, see
`AllowanceSpent`), so the rebuilt count, which takes `used` of a closed row and `reserved` of an
open one, is never below what the run sent, whenever it was killed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from connector.api.ledger import QuotaLedger
from connector.traversal.run_config import Row

LEDGER_COLUMNS: list[dict[str, object]] = [
    {"name": "run_id", "data_type": "text", "nullable": False, "primary_key": True},
    {"name": "day", "data_type": "date", "nullable": False, "primary_key": True},
    {"name": "pipeline", "data_type": "text"},
    {"name": "reserved", "data_type": "bigint"},
    {"name": "used", "data_type": "bigint"},
    {"name": "closed", "data_type": "bool"},
    {"name": "updated_at", "data_type": "timestamp", "timezone": True},
]


def chunk_allowance(checkpoint_pages: int) -> int:
    """Requests a chunk may send beyond those already recorded: its pages, and room for the
    retries, splits and refused requests a chunk may also cost (a chunk that needs more ends
    early and the next one goes on; one that uses less leaves the rest counted only if killed)."""
    return checkpoint_pages + max(10, checkpoint_pages // 2)


@dataclass
class WarehouseLedger:
    """This run's row of `_ciklek_request_ledger`, and the allowance its committed loads grant."""

    run_id: str
    pipeline: str
    quota: QuotaLedger
    allowance: int
    written: Row | None = field(default=None)  # the row in the load under way, if any

    def __post_init__(self) -> None:
        self.quota.allow(self.quota.day, 0)  # nothing may be sent before the first load commits

    def next_row(self) -> Row:
        """The row a load records: today's requests so far and the next chunk's allowance
        (within what the day's budget and the run's caps leave, at least one so the run always
        goes on to a request that stops it)."""
        used = self.quota.requests_today
        room = max(1, min(self.allowance, self.quota.headroom()))
        return self._row(reserved=used + room, used=used, closed=False)

    def closing_row(self) -> Row:
        """The row the run row's load records: what the run used, closed."""
        used = self.quota.requests_today
        return self._row(reserved=used, used=used, closed=True)

    def _row(self, *, reserved: int, used: int, closed: bool) -> Row:
        row: Row = {
            "run_id": self.run_id,
            "day": dt.date.fromisoformat(self.quota.day),
            "pipeline": self.pipeline,
            "reserved": reserved,
            "used": used,
            "closed": closed,
            "updated_at": dt.datetime.now(dt.UTC),
        }
        self.written = row
        return row

    def committed(self) -> None:
        """The load that carried `written` completed: the run may send what it records."""
        row, self.written = self.written, None
        if row is not None and not row["closed"]:
            day = row["day"]
            assert isinstance(day, dt.date) and isinstance(row["reserved"], int)
            self.quota.allow(day.isoformat(), row["reserved"])
