"""Everything the `ciklek` command prints goes through here: scrubbed, and as JSON when asked.

Why one place: every line passes `scrub()`, so the API key can never reach a terminal or a log,
whatever an exception happens to contain; with `--log-format json` an error line is a JSON
`error` event like the run's other lines. Cheap to import (no dlt): `ciklek --version` and
`ciklek sandbox` start fast.
"""

from __future__ import annotations

import sys
from typing import Protocol

from connector.config.redaction import scrub


class JsonEvents(Protocol):
    """The part of `connector.runs.events.EventLog` an error line needs."""

    def emit(self, event: str, fields: dict[str, object] | None = None) -> None: ...


class _Output:
    """Per command: where error lines go when `--log-format json` is on."""

    events: JsonEvents | None = None


OUTPUT = _Output()


def reset() -> None:
    """A new command begins (`main` may be called many times in one process)."""
    OUTPUT.events = None


def out(text: str) -> None:
    print(scrub(text), flush=True)


def err(text: str) -> None:
    events = OUTPUT.events
    if events is not None:  # --log-format json: every stderr line is JSON
        events.emit("error", {"message": text.removeprefix("ciklek: ")})
        return
    print(scrub(text), file=sys.stderr, flush=True)
