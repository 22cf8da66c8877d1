"""The `_ciklek_sync_runs` row of a run: what analysts and a fresh runner read back.

Why in the warehouse: the local status file and ledger are gone on an ephemeral runner, while
the run log travels with the data (freshness for dbt and `status --max-age`, today's request
count for the daily budget: `connector/warehouse/run_log.py` reads it back).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from connector.config.redaction import scrub
from connector.errors import (
    EXIT_AUTH,
    EXIT_BUG,
    EXIT_DESTINATION,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_SWEEP_REFUSED,
    EXIT_TEMPFAIL,
)
from connector.records.normalize import TIMESTAMP_TYPE
from connector.runs.options import SyncOptions, run_kind
from connector.runs.result import SyncResult
from connector.traversal.run_config import Row

OUTCOMES = {
    EXIT_OK: "completed",
    EXIT_STRICT: "completed_with_rejects",
    EXIT_TEMPFAIL: "stopped_try_later",
    EXIT_AUTH: "credentials_refused",
    EXIT_DESTINATION: "destination_needs_attention",
    EXIT_SWEEP_REFUSED: "sweep_refused",
    EXIT_BUG: "failed",
}

RUN_COLUMNS: list[dict[str, object]] = [
    {"name": "run_id", "data_type": "text"},
    {"name": "pipeline", "data_type": "text"},
    {"name": "kind", "data_type": "text"},
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
    {"name": "rows_marked_deleted", "data_type": "bigint"},
]


_ARROW_TYPES = {"text": pa.string(), "bigint": pa.int64(), "double": pa.float64()}


def empty_runs_table() -> pa.Table:
    """`_ciklek_sync_runs` with no rows, for the load that creates it before any run row exists.

    Why: a fresh warehouse otherwise gets the table from the run row's own dlt load (a third of
    a first sync's CPU); created empty by the run's first allowance load, the run row is two
    INSERTs like any later run's. The columns are those a load of the dict row makes, in its
    order, dlt's two columns included (NOT NULL): the direct INSERT fills them.
    """
    fields = [
        pa.field(
            str(c["name"]),
            TIMESTAMP_TYPE if c["data_type"] == "timestamp" else _ARROW_TYPES[str(c["data_type"])],
        )
        for c in RUN_COLUMNS
    ]
    fields += [pa.field(name, pa.string(), nullable=False) for name in ("_dlt_load_id", "_dlt_id")]
    return pa.Table.from_pylist([], schema=pa.schema(fields))


def run_row(result: SyncResult, options: SyncOptions, started_at: dt.datetime) -> Row:
    """The run's row, once its exit code is decided."""
    outcomes = result.report.outcomes.values()
    return {
        "run_id": result.run_id,
        "pipeline": options.pipeline,
        "kind": run_kind(options),
        "started_at": started_at,
        "ended_at": dt.datetime.now(dt.UTC),
        "outcome": OUTCOMES.get(result.exit_code, "failed"),
        "exit_code": result.exit_code,
        "resources": ",".join(result.settings.resources),
        "rows": sum(o.rows for o in outcomes),
        "line_item_rows": sum(o.child_rows for o in outcomes),
        "rejects": sum(o.rejects for o in outcomes),
        "requests": result.log.requests,
        "rate_limited": result.log.rate_limited,
        "waited_seconds": round(result.log.waited_seconds, 3),
        "message": scrub("; ".join(dict.fromkeys(result.messages))) or None,
        "rows_marked_deleted": sum(o.marked_deleted for o in outcomes),
    }
