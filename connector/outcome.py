"""A run's outcome as an exception: `SyncResult.raise_for_outcome()` and the bare source's raise.

Why here: three callers turn "what happened" into "raise or not" — a Python caller of
`run_sync` (like httpx's `raise_for_status()`), a plain `pipeline.run(ciklek_source())`, and the
Dagster assets. They must agree on which typed error stands for a run, so the choice is made
once: the error behind the run's exit code, never a re-worded copy (callers `except` by type).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from connector.errors import (
    EXIT_AUTH,
    EXIT_BUG,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_TEMPFAIL,
    ApiError,
    CiklekError,
    ContractViolation,
    MissingScope,
    TryLater,
    Unauthorized,
)

if TYPE_CHECKING:
    from connector.run import ResourceOutcome
    from connector.sync import SyncResult

LOG = logging.getLogger("connector")


class RejectsFound(CiklekError):
    """Completed, but records failed the data contract and `strict` was asked for (exit 4)."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"{count} record(s) failed the data contract and were quarantined in _ciklek_rejects"
        )


class SyncFailed(CiklekError):
    """A non-zero exit code without a more specific typed error behind it."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def error_for(result: SyncResult) -> CiklekError | None:
    """The typed error behind `result.exit_code` (None for a clean completion)."""
    if result.exit_code == EXIT_OK:
        return None
    if result.error is not None:
        return result.error
    outcomes = [result.report.outcome(n) for n in result.settings.resources]
    named = result.settings.resources_named
    found: CiklekError | None = None
    if result.exit_code == EXIT_BUG:
        found = _first(o.error for o in outcomes if not isinstance(o.error, Unauthorized))
    elif result.exit_code == EXIT_AUTH:
        found = _first(
            o.error
            for o in outcomes
            if isinstance(o.error, Unauthorized) or (isinstance(o.error, MissingScope) and named)
        )
    elif result.exit_code == EXIT_TEMPFAIL:
        found = _first(o.stop for o in outcomes)
    elif result.exit_code == EXIT_STRICT:
        found = RejectsFound(sum(o.rejects for o in outcomes))
    message = "; ".join(result.messages) or f"sync ended with exit code {result.exit_code}"
    return found or SyncFailed(message, result.exit_code)


def _first(errors: Iterable[CiklekError | None]) -> CiklekError | None:
    return next((e for e in errors if e is not None), None)


def exit_code_for(exc: BaseException) -> int:
    """The exit code `ciklek sync` gives an error raised before or outside a run's result."""
    from connector.destination_faults import DestinationCredentialsRefused, DestinationNeedsPerson
    from connector.errors import EXIT_CONFIG, EXIT_DESTINATION, ConfigError

    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, Unauthorized | MissingScope | DestinationCredentialsRefused):
        return EXIT_AUTH
    if isinstance(exc, DestinationNeedsPerson):
        return EXIT_DESTINATION
    if isinstance(exc, TryLater | KeyboardInterrupt):
        return EXIT_TEMPFAIL
    return EXIT_BUG


def raise_for_outcome(result: SyncResult) -> None:
    """Raise the typed error unless the run completed cleanly (exit 0)."""
    error = error_for(result)
    if error is not None:
        raise error


@dataclass
class LoudSource:
    """What a bare `ciklek_source()` raises on, and its one quota warning.

    Why only a bare source: `run_sync` decides exit codes from the report after committing each
    chunk; a plain `pipeline.run` has no such caller, so a refused key would look like "0 rows,
    fine". Raising discards that extract (dlt's extract is all-or-nothing), which is right for a
    refused key and wrong for a quota stop: the pages paid for must load and the state move, so
    a stop only warns.
    """

    named: bool  # the user named resources (argument or setting): a 403 on them is fatal
    warned: bool = False

    def after_chunk(self, resource: str, out: ResourceOutcome) -> None:
        """Raise the resource's fatal error; warn once about a stop."""
        error = out.error
        if isinstance(error, MissingScope) and not self.named:
            LOG.warning("ciklek: %s skipped: the key lacks scope %s", resource, error.scope)
            return
        if isinstance(error, ApiError | ContractViolation):
            raise error
        stop = out.stop
        if stop is None:
            return
        if not _is_quota_or_signal(stop):
            raise stop  # the API still unavailable after retries: the caller must know
        if not self.warned:
            self.warned = True
            resume = getattr(stop, "resume_at", None)
            when = f"resume after {resume:%Y-%m-%dT%H:%MZ}" if resume else "run again to continue"
            LOG.warning(
                "ciklek: stopped early (%s); the pages fetched so far load and the state moves; %s",
                stop,
                when,
            )


@contextlib.contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT end a run like a quota stop: the pages fetched load and the state moves
    (`ciklek sync` then exits 75; a bare source's extract ends cleanly). A second Ctrl-C
    interrupts at once. The previous handlers are back as soon as the block ends; outside the
    main thread (where Python allows no handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user really wants out
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _is_quota_or_signal(stop: TryLater) -> bool:
    from connector.errors import BudgetSpent, QuotaExhausted, StopRequested

    return isinstance(stop, QuotaExhausted | BudgetSpent | StopRequested)
