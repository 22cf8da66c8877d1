"""Events of a run (progress, wait, retry, split, stop, summary, error) as text or JSON lines.

Why one place: a cron log or a log shipper needs every line of a run in one shape it can parse,
with when (`ts`, ISO 8601 UTC) and which run (`run_id`); people need a readable line. Both are
rendered from the same event, so the two can never tell different stories. Timestamps go
through `connector.timefmt`, numbers through `num()`: one format each.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from typing import IO

from connector.config.redaction import scrub
from connector.runs.result import SyncResult
from connector.runs.target import summary_fields
from connector.timefmt import now

FORMATS = ("text", "json")


def num(value: float) -> str:
    """The one thousands style: 12,345 (and 12,345.6 for fractions)."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def describe(event: str, fields: Mapping[str, object]) -> str:
    """The text line of an event (without `ts`/`run_id`: a terminal reader does not need them)."""
    seconds = fields.get("seconds")
    url = fields.get("url")
    if event == "wait":
        why = "the rate-limit window" if fields.get("reason") != "rate_limited" else "a 429"
        where = f" ({url})" if url else ""
        return f"waiting {seconds} s for {why}{where}"
    if event == "retry":
        return (
            f"retry {fields.get('attempt')}/{fields.get('max_attempts')} of {url} in "
            f"{seconds} s after {fields.get('reason')}"
        )
    rest = ", ".join(f"{k} {v}" for k, v in fields.items() if k not in ("resource", "message"))
    head = f"{event} {fields['resource']}" if "resource" in fields else event
    if "message" in fields:
        rest = f"{fields['message']}" + (f" ({rest})" if rest else "")
    return f"{head}: {rest}" if rest else head


class EventLog:
    """Writes events to a stream (stderr): a JSON object per line, or a readable line."""

    def __init__(self, fmt: str = "text", run_id: str = "", stream: IO[str] | None = None):
        if fmt not in FORMATS:
            raise ValueError(fmt)
        self.fmt, self.run_id = fmt, run_id
        self.stream = stream
        self._lock = threading.Lock()

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def line(self, event: str, fields: Mapping[str, object]) -> str:
        if self.json:
            doc = {"ts": now(), "run_id": self.run_id, "event": event, **fields}
            return json.dumps(doc, default=str, ensure_ascii=False)
        return describe(event, fields)

    def emit(self, event: str, fields: Mapping[str, object] | None = None) -> None:
        text = self.line(event, fields or {})  # a message may quote anything: scrubbed below
        with self._lock:
            print(scrub(text), file=self.stream or sys.stderr, flush=True)


def json_log(log_format: str) -> EventLog | None:
    """`--log-format json`: the event log for the run's lines and the caller's errors (else
    None: text lines)."""
    return EventLog("json") if log_format == "json" else None


def emit_outcome(events: EventLog, result: SyncResult) -> int:
    """The run's stops and summary as events (the table would be the one non-JSON line)."""
    events.run_id = result.run_id
    for name, outcome in result.report.outcomes.items():
        if outcome.stop is not None:
            events.emit("stop", {"resource": name, "message": str(outcome.stop)})
    events.emit("summary", summary_fields(result))
    return result.exit_code
