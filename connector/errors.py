"""The connector's exception tree, in one place.

Why a tree: the CLI maps each branch to one exit code, the client's retry policy decides
retriable vs fatal by type, and the sync loop decides "stop cleanly and keep progress" vs "abort"
by type. Messages never contain the API key: every error is built from server fields or our own
words, never from request headers.

    CiklekError                      base of everything we raise on purpose
    ├── ConfigError                  bad input or configuration found before any request (exit 2)
    │   └── CertificateNotTrusted    TLS verification failed: a CA bundle or proxy to fix (exit 2)
    ├── ApiError                     an error envelope from the server (fatal, never retried)
    │   ├── BadRequest               400
    │   ├── Unauthorized             401 (exit 3)
    │   ├── MissingScope             403 (exit 3 when the user named the resource)
    │   ├── NotFound                 404
    │   ├── ValidationFailed         422, carries `details`
    │   └── ContractViolation        a 2xx answer that breaks the contract (fatal, exit 1)
    ├── TryLater                     stop cleanly, progress kept (exit 75)
    │   ├── QuotaExhausted           daily quota spent / reset too far away; carries `resume_at`
    │   ├── BudgetSpent              our own daily budget or --max-requests reached
    │   ├── CiklekUnavailable        transient failures outlived the retry budget
    │   ├── LockHeld                 another run of the same pipeline is running
    │   └── StopRequested            SIGTERM / SIGINT

ContractViolation is an ApiError (status 200) so that every caller which stops a resource on an
API error stops it on a broken contract too, and the exit code stays 1 ("a bug or an API
change: report it"); catch it before ApiError to treat it differently.

The exit-code table of the `ciklek` command lives here, once (`EXIT_CODES`); README's
"Exit codes" section is checked against it by tests/unit/test_exit_codes.py.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import dataclass


class CiklekError(Exception):
    """Base class: anything the connector raises on purpose."""


class ConfigError(CiklekError):
    """Bad input or configuration, detected before a single request was sent."""


class CertificateNotTrusted(ConfigError):
    """The server's TLS certificate failed verification: never an outage to retry (75).

    A failed check may be an interception; a person must look at the CA bundle or the proxy.
    """


class WrongBaseUrl(ConfigError):
    """A list endpoint answered 404, or a 2xx that is a web page, not the API: the base URL is
    wrong (most often `/v1` is missing). Exit 2: retrying cannot help, the configuration can."""


class ApiError(CiklekError):
    """An error envelope from the API. Fatal: retrying the same request cannot help."""

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: object = None,
        endpoint: str | None = None,
    ) -> None:
        self.status = status if status is not None else type(self).status
        self.code = code
        self.server_message = message
        self.details = details
        self.endpoint = endpoint
        where = f" on {endpoint}" if endpoint else ""
        code_part = f" {code}" if code else ""
        super().__init__(f"HTTP {self.status}{code_part}{where}: {message}")


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class MissingScope(ApiError):
    """403: the key is valid but lacks the scope a resource needs."""

    status = 403

    def __init__(
        self,
        message: str,
        *,
        scope: str | None = None,
        resource: str | None = None,
        status: int | None = None,
        code: str | None = None,
        details: object = None,
        endpoint: str | None = None,
    ) -> None:
        self.scope = scope
        self.resource = resource
        super().__init__(message, status=status, code=code, details=details, endpoint=endpoint)


class NotFound(ApiError):
    status = 404


class ValidationFailed(ApiError):
    """422: `details` is the server's list of {"field", "message"}."""

    status = 422


class TryLater(CiklekError):
    """Stop cleanly, keep what was fetched, let the scheduler retry later (exit 75)."""


class QuotaExhausted(TryLater):
    """The daily quota is spent, or the server asks us to wait longer than we are willing to."""

    def __init__(self, message: str, *, resume_at: dt.datetime | None = None) -> None:
        self.resume_at = resume_at
        super().__init__(message)


class BudgetSpent(TryLater):
    """Our own limit (daily request budget or --max-requests) would be exceeded by one more."""

    def __init__(self, message: str, *, resume_at: dt.datetime | None = None) -> None:
        self.resume_at = resume_at  # the next 00:00 UTC for the daily budget; None: run again
        super().__init__(message)


class CiklekUnavailable(TryLater):
    """Transient failures (5xx, timeouts, drops, garbled bodies) outlived the retry budget."""

    def __init__(self, message: str, *, endpoint: str, last_status: int | None) -> None:
        self.endpoint = endpoint
        self.last_status = last_status
        super().__init__(message)


class LockHeld(TryLater):
    """Another run of the same pipeline holds the lock."""


class StopRequested(TryLater):
    """SIGTERM or SIGINT arrived: finish the current chunk and stop."""


class ContractViolation(ApiError):
    """A 2xx answer that breaks the API contract in a way quarantine cannot absorb.

    `data` that is not a list, more records than `limit`, a body beyond the size cap, an
    encoding we did not ask for: retrying the same request would get the same answer.
    """

    status = 200


# ---- exit codes of the `ciklek` command: the one table (README "Exit codes" must match) ----

EXIT_OK, EXIT_BUG, EXIT_CONFIG, EXIT_AUTH, EXIT_STRICT, EXIT_TEMPFAIL = 0, 1, 2, 3, 4, 75
EXIT_STALE, EXIT_SWEEP_REFUSED, EXIT_DESTINATION = 5, 6, 7


@dataclass(frozen=True)
class ExitCode:
    """One row of the exit-code table: what the code means and what a scheduler should do."""

    code: int
    meaning: str
    action: str


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(
        EXIT_OK,
        "completed (resources skipped because the key lacks their scope, and you did not name "
        "them, are listed in the summary)",
        "nothing",
    ),
    ExitCode(
        EXIT_BUG,
        "unexpected failure (a bug): the message says where to report it; `--debug` shows the "
        "traceback",
        "alert a human",
    ),
    ExitCode(
        EXIT_CONFIG,
        "bad input or configuration, found before any request was sent (a TLS certificate "
        "that is not trusted included)",
        "fix the config",
    ),
    ExitCode(
        EXIT_AUTH,
        "credentials refused: 401, or 403 on a resource named in `--resources`, or the "
        "destination refused its credentials",
        "fix the key (or the destination's credentials)",
    ),
    ExitCode(
        EXIT_STRICT,
        "completed, but `--strict` and records were rejected (see `_ciklek_rejects`)",
        "look at the rejects",
    ),
    ExitCode(
        EXIT_STALE,
        "`status --max-age`: the last completed sync is older than the age, or there is none",
        "alert: the data is stale",
    ),
    ExitCode(
        EXIT_SWEEP_REFUSED,
        "`sweep` refused to mark more than `sweep_max_delete_share` of a resource's rows; "
        "nothing was marked",
        "check, then `ciklek sweep --force`",
    ),
    ExitCode(
        EXIT_DESTINATION,
        "the destination needs a person (out of space, permission denied, read-only, a table "
        "changed under us); progress kept up to the last committed chunk",
        "fix the warehouse, then run again",
    ),
    ExitCode(
        EXIT_TEMPFAIL,
        "try again later, progress kept: daily quota or run budget spent, API still unavailable "
        "after retries, another run of the same pipeline holds the lock, stopped by "
        "SIGTERM/SIGINT, or the destination unreachable or locked",
        "retry later (EX_TEMPFAIL)",
    ),
)

# When several apply, the first of these wins (code 2 stands alone: nothing was sent).
EXIT_PRECEDENCE: tuple[int, ...] = (
    EXIT_BUG,
    EXIT_AUTH,
    EXIT_DESTINATION,
    EXIT_TEMPFAIL,
    EXIT_SWEEP_REFUSED,
    EXIT_STRICT,
    EXIT_OK,
)


def exit_codes_markdown() -> str:
    """The table and its precedence line exactly as README's "Exit codes" section shows them."""
    rows = [
        "| code | meaning | what a scheduler should do |",
        "|---|---|---|",
        *(f"| {e.code} | {e.meaning} | {e.action} |" for e in EXIT_CODES),
        "",
        f"When several apply, the first of {', '.join(map(str, EXIT_PRECEDENCE))} wins. "
        "Code 2 stands alone: nothing was sent. Code 5 is only ever `status`'s.",
    ]
    return "\n".join(rows)


def exit_codes_text(width: int = 88) -> str:
    """The table for `ciklek --help`: one wrapped entry per code."""
    lines = ["exit codes:"]
    for e in EXIT_CODES:
        lines += textwrap.wrap(
            e.meaning, width, initial_indent=f"  {e.code:>3}  ", subsequent_indent=" " * 7
        )
    precedence = ", ".join(map(str, EXIT_PRECEDENCE))
    return "\n".join([*lines, f"  when several apply, the first of {precedence} wins"])
