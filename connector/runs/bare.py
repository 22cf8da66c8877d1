"""A bare `ciklek_source()` (Dagster's `dagster-dlt`, your own `pipeline.run`): what it raises,
and its one warning.

Why only a bare source: `run_sync` decides exit codes from the report after committing each
chunk; a plain `pipeline.run` has no such caller, so a refused key would look like "0 rows,
fine". Raising discards that extract (dlt's extract is all-or-nothing), which is right for a
refused key and wrong for a quota stop: the pages paid for must load and the state move, so a
stop only warns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connector.errors import (
    ApiError,
    BudgetSpent,
    ContractViolation,
    MissingScope,
    QuotaExhausted,
    StopRequested,
    TryLater,
)
from connector.traversal.run_report import ResourceOutcome

LOG = logging.getLogger("connector")


@dataclass
class LoudSource:
    """What a bare `ciklek_source()` raises on, and its one quota warning."""

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


def _is_quota_or_signal(stop: TryLater) -> bool:
    return isinstance(stop, QuotaExhausted | BudgetSpent | StopRequested)
