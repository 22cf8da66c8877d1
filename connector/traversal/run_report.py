"""What the resources report back during one run: `RunReport`, one `ResourceOutcome` each.

Why apart from `RunConfig` (connector/traversal/run_config.py): the resources read their inputs
and write their outcomes; `run_sync`, the summary and the progress display only read outcomes.
With both in one mutable object, any of them could change the run's inputs half-way, and nobody
could tell which fields were results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from connector.errors import ApiError, CiklekError, ContractViolation, TryLater
from connector.records.history import VersionRows
from connector.records.undocumented import TableColumns
from connector.traversal.gate import ChunkGate
from connector.traversal.reconcile import Reconciliation
from connector.traversal.run_config import Row


@dataclass
class ResourceOutcome:
    """What happened to one resource during this run (the summary and exit code read it)."""

    pages: int = 0
    records: int = 0
    new_records: int = 0  # records of this run not loaded before (what progress counts)
    first_page: int | None = None  # meta.page of this run's first page: where it started
    rows: int = 0
    child_rows: int = 0
    rejects: int = 0
    chunks: int = 0
    done: bool = False
    total: int | None = None
    traversal_pages: int = 0
    stop: TryLater | None = None
    error: ApiError | ContractViolation | None = None
    reconciliation: Reconciliation | None = None
    notes: list[str] = field(default_factory=list)
    marked_deleted: int = 0  # rows a sweep marked deleted (or removed)
    sweep_refused: str | None = None  # why a sweep marked nothing (exit 6)
    splits: int = 0  # `updated_since` ranges this run split off (connector/traversal/ranges.py)

    @property
    def finished(self) -> bool:
        """Nothing more to do for this resource in this run."""
        return self.done or self.stop is not None or self.error is not None


PageListener = Callable[[str, ResourceOutcome], None]
EventListener = Callable[[str, Mapping[str, object]], None]


@dataclass
class RunReport:
    """Where the resources report back, and the two signals every resource obeys.

    `stop_event` is set by SIGTERM/SIGINT; `halt` by the first resource that hits a refused key
    or a spent quota, so the others do not spend more requests.
    """

    on_page: PageListener | None = None
    on_event: EventListener | None = None  # a traversal split into ranges, told as it happens
    stop_event: threading.Event = field(default_factory=threading.Event)
    outcomes: dict[str, ResourceOutcome] = field(default_factory=dict)
    halt: CiklekError | None = None
    pending_rejects: list[Row] = field(default_factory=list)
    # Rows for the `<resource>_versions` tables (`history`), loaded like the rejects: by a
    # resource of their own, so a full refresh of a resource never drops its history.
    pending_versions: list[VersionRows] = field(default_factory=list)
    run_rows: list[Row] = field(default_factory=list)
    # Undocumented columns per table admitted so far: the 200-column cap holds per run; and the
    # schema changes noted on the way (`schema_changes = "freeze"`: `TableColumns(frozen=True)`).
    columns: TableColumns = field(default_factory=TableColumns)
    run_id: str = ""
    # Schema changes this run recorded in `_ciklek_schema_changes` (new ones only).
    recorded_changes: list[Row] = field(default_factory=list)
    # Pages fetched by all resources in the current load: `chunk_pages` bounds a commit, not
    # each resource in it, so a kill loses at most `chunk_pages` requests. Shared by the
    # resources walking at once (see connector/traversal/gate.py).
    gate: ChunkGate = field(default_factory=ChunkGate)
    # Resource state to write with the run row (a sweep's result once it is applied or refused):
    # marking happens after a chunk committed, so it needs a load of its own to be recorded.
    state_updates: dict[str, Row] = field(default_factory=dict)
    # This run's `_ciklek_request_ledger` row for the load under way (connector/runs/
    # request_ledger.py), made when the load's walks are over; None: not recorded (bare source).
    ledger_row: Callable[[], Row] | None = None

    def outcome(self, resource: str) -> ResourceOutcome:
        return self.outcomes.setdefault(resource, ResourceOutcome())

    @property
    def chunk_pages(self) -> int:
        return self.gate.pages

    def start_chunk(self, walks: int = 0, workers: int = 1) -> None:
        """A new load begins (each dlt source instance is one load)."""
        self.gate.start(walks, workers)

    def take_rejects(self) -> list[Row]:
        rows, self.pending_rejects = self.pending_rejects, []
        return rows

    def take_versions(self) -> list[VersionRows]:
        rows, self.pending_versions = self.pending_versions, []
        return rows

    def stops(self) -> list[TryLater]:
        return [o.stop for o in self.outcomes.values() if o.stop is not None]
