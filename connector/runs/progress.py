"""Live progress of a sync: a rich progress bar on a terminal, periodic log lines otherwise.

Why both: people watch a backfill in a terminal; schedulers and CI capture stderr, where a
redrawn bar is noise and a line every `interval` seconds per resource is what an operator
greps for. Quota left comes from our ledger: the X-RateLimit headers describe only the
minute window.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, TypedDict

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from connector.api.ledger import QuotaLedger, RequestLog
from connector.runs.events import EventLog, describe, num
from connector.traversal.run_report import ResourceOutcome


class Facts(TypedDict):
    """One resource's progress, as shown on the bar and in a progress line."""

    resource: str
    pages: int
    pages_total: int | None
    rows: int
    req_per_min: float
    quota_left: int | None
    eta: float | None


class ProgressReporter:
    """Receives `on_page` calls from the resources and renders them."""

    def __init__(
        self,
        resources: list[str],
        *,
        page_size: int,
        log: RequestLog,
        quota: QuotaLedger | None,
        tty: bool | None = None,
        interval: float = 10.0,
        stream: IO[str] | None = None,
        events: EventLog | None = None,
    ) -> None:
        # The events' stream when the caller gave one (Dagster's log): every line goes one way.
        self.stream = stream or (events.stream if events is not None else None) or sys.stderr
        self.events = events or EventLog("text", stream=self.stream)
        # JSON logs are for machines: never a redrawn bar among them.
        self.tty = False if self.events.json else self.stream.isatty() if tty is None else tty
        self.page_size = page_size
        self.log = log
        self.quota = quota
        self.interval = interval
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last_line: dict[str, float] = {}
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if self.tty:
            self._progress = Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            for name in resources:
                self._tasks[name] = self._progress.add_task(name, total=None, detail="waiting")
            self._progress.start()

    def rate_per_minute(self) -> float:
        """Requests sent in the last 60 seconds: the figure to compare with the 120/min limit."""
        return float(self.log.in_last(60.0))

    def pages_total(self, outcome: ResourceOutcome) -> int | None:
        """This run's pages, estimated: the traversal's pages (`meta.total` counts the records
        since the watermark) less those before this run's first page (`meta.page` says where a
        cursor continues; else the pages an earlier run of the same traversal fetched)."""
        if outcome.total is None:
            return None
        if outcome.first_page is not None:
            before = max(0, outcome.first_page - 1)
        else:
            before = max(0, outcome.traversal_pages - outcome.pages)
        return max(1, outcome.pages, math.ceil(outcome.total / self.page_size) - before)

    def eta_seconds(self, outcome: ResourceOutcome) -> float | None:
        total = self.pages_total(outcome)
        if total is None or outcome.pages == 0:
            return None
        left = max(0, total - outcome.pages)
        per_page = (time.monotonic() - self.started) / max(1, outcome.pages)
        return left * per_page

    def describe(self, resource: str, outcome: ResourceOutcome) -> Facts:
        return {
            "resource": resource,
            "pages": outcome.pages,
            "pages_total": self.pages_total(outcome),
            "rows": outcome.new_records,
            "req_per_min": self.rate_per_minute(),
            "quota_left": self.quota.left_today if self.quota else None,
            "eta": self.eta_seconds(outcome),
        }

    def on_page(self, resource: str, outcome: ResourceOutcome) -> None:
        with self._lock:
            facts = self.describe(resource, outcome)
            if self._progress is not None:
                self._progress.update(
                    self._tasks[resource],
                    total=facts["pages_total"],
                    completed=facts["pages"],
                    detail=self._detail(facts),
                )
                return
            now = time.monotonic()
            last = self._last_line.get(resource)
            done = facts["pages_total"] is not None and facts["pages"] >= facts["pages_total"]
            if last is None or now - last >= self.interval or done:
                self._last_line[resource] = now
                if self.events.json:
                    self.events.emit("progress", dict(facts))
                else:
                    print(f"progress {resource}: {self._line(facts)}", file=self.stream, flush=True)

    def event(self, name: str, fields: Mapping[str, object]) -> None:
        """A wait or a retry, told when it starts: a line (above the bar on a terminal)."""
        if self._progress is not None:
            with self._lock:
                if self._progress is not None:
                    self._progress.console.print(describe(name, fields), highlight=False)
                    return
        self.events.emit(name, fields)

    @staticmethod
    def _detail(facts: Facts) -> str:
        quota = "" if facts["quota_left"] is None else f", quota left {facts['quota_left']:,}"
        return f"{num(facts['rows'])} rows, {facts['req_per_min']:.0f} req/min{quota}"

    def _line(self, facts: Facts) -> str:
        total = facts["pages_total"]
        pages = f"page {facts['pages']}/{total}" if total else f"page {facts['pages']}"
        eta = facts["eta"]
        eta_text = "" if eta is None else f", ETA {duration(eta)}"
        return f"{pages}, {self._detail(facts)}{eta_text}"

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
