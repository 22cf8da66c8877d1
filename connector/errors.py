"""Every public exception of the connector, the exit-code table, and the one map between them.

Why a tree: the client's retry policy decides retriable vs fatal by type, and the sync loop
decides "stop cleanly and keep progress" vs "abort" by type. Why one map (`explain`): the CLI,
`run_sync`, the cron script and the Dagster assets all turn an exception into an exit code and
one line for a person; written once, they can never disagree. Messages never contain the API
key: every error is built from server fields or our own words, never from request headers.

    CiklekError                        base of everything we raise on purpose
    ├── ConfigError                    bad input or configuration found before any request (2)
    │   ├── CertificateNotTrusted      TLS verification failed: a CA bundle or proxy to fix
    │   └── WrongBaseUrl               a list answered 404 or a web page: `/v1` missing
    ├── ApiError                       an error envelope from the server (fatal, never retried)
    │   ├── BadRequest                 400
    │   ├── Unauthorized               401 (3)
    │   ├── MissingScope               403 (3 when the user named the resource)
    │   ├── NotFound                   404
    │   ├── ValidationFailed           422, carries `details`
    │   └── ContractViolation          a 2xx answer that breaks the contract (fatal, 1)
    │       └── BrokenPagination       cursors that would make us loop
    ├── TryLater                       stop cleanly, progress kept (75)
    │   ├── QuotaExhausted             daily quota spent / reset too far away; `resume_at`
    │   ├── BudgetSpent                our own daily budget or --max-requests reached
    │   ├── CiklekUnavailable          transient failures outlived the retry budget
    │   ├── LockHeld                   another run of the same pipeline is running
    │   ├── StopRequested              SIGTERM / SIGINT
    │   ├── DestinationUnavailable     the warehouse unreachable, restarting or locked
    │   └── DestinationBusy            the run log could not be read without waiting
    ├── DestinationCredentialsRefused  the warehouse refused its credentials (3)
    ├── DestinationNeedsPerson         out of space, permissions, read-only, a changed table (7)
    ├── RejectsFound                   completed, `--strict`, records were rejected (4)
    ├── AllowanceSpent                 the requests recorded ahead in the warehouse are used:
    │                                  the chunk ends and commits the next (never leaves a run)
    └── SyncFailed                     a non-zero exit code without a more specific error

ContractViolation is an ApiError (status 200) so that every caller which stops a resource on an
API error stops it on a broken contract too, and the exit code stays 1 ("a bug or an API
change: report it"); catch it before ApiError to treat it differently.

The exit-code table of the `ciklek` command lives here, once (`EXIT_CODES`); the "Exit codes"
section of docs/commands.md is checked against it by tests/unit/test_exit_codes.py.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator
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


class AllowanceSpent(CiklekError):
    """The requests this run recorded in the warehouse ahead (`_ciklek_request_ledger`) are
    used up: the chunk ends as if full, and its load records the next allowance. Never leaves a
    run: the page loop ends the chunk on it."""


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


class BrokenPagination(ContractViolation):
    """The API's cursors would make us loop: stop before the quota is gone."""

    def __init__(self, code: str, message: str, endpoint: str) -> None:
        # The text `ciklek sync` has always printed for a cursor that does not advance:
        # "HTTP 200 <code> on <endpoint>: <message>; stopped to protect the quota".
        super().__init__(f"{message}; stopped to protect the quota", code=code, endpoint=endpoint)
        self.endpoint = endpoint


class DestinationUnavailable(TryLater):
    """The warehouse is unreachable, restarting or locked by another process (exit 75)."""

    def __init__(self, message: str, *, locked: bool = False) -> None:
        self.locked = locked  # another process holds the DuckDB file: worth waiting for
        super().__init__(message)


class DestinationBusy(TryLater):
    """The warehouse's run log could not be read without waiting (`status --max-age`, 75)."""


class DestinationCredentialsRefused(CiklekError):
    """The warehouse refused the connector's destination credentials (exit 3)."""


class DestinationNeedsPerson(CiklekError):
    """The warehouse needs a person, but it is not the connector's bug (exit 7)."""


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


# ---- exit codes of the `ciklek` command: the one table (docs/commands.md must match) ----

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
    """The table and its precedence line exactly as docs/commands.md's "Exit codes" shows them."""
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


# ---- the one map: an exception -> its exit code and the line a person reads ----------------

UNAUTHORIZED = (
    "the API key was refused (401 unauthorized): check SOURCES__CIKLEK__API_KEY or api_key "
    "under [sources.ciklek] in .dlt/secrets.toml"
)
REPORT_A_BUG = (
    "please report it (docs/troubleshooting.md, 'Reporting a bug') with the output of the same "
    "command run with --debug"
)


@dataclass(frozen=True)
class Explained:
    """What an exception means for whoever ran the connector: the exit code and one line.

    `line` carries no "ciklek: " prefix: the CLI and the cron script print it after one, a run's
    summary lists it among its messages, Dagster puts it in the failure's description.
    """

    code: int
    line: str


def explain(exc: BaseException, *, resource: str | None = None) -> Explained:
    """The exit code and the one line for `exc`.

    `resource`: the resource whose walk met the error (inside a run); the line then names it,
    and an API answer nobody expected reads as "a bug or an API change". Outside a run (a bad
    flag, the lock held, a refused key during `plan`) the error is the whole story. Wrappers
    (dlt's `PipelineStepFailed`, a `__cause__` chain) are looked through to our own error.
    """
    if isinstance(exc, ConfigError):
        return Explained(EXIT_CONFIG, f"error: {exc}")
    if isinstance(exc, Unauthorized):
        return Explained(EXIT_AUTH, UNAUTHORIZED)
    if isinstance(exc, MissingScope):
        if resource is None:
            return Explained(EXIT_AUTH, f"the key lacks a scope (403): {exc.server_message}")
        return Explained(
            EXIT_AUTH,
            f"{resource}: the key lacks scope {exc.scope} (403); add it in Portal -> Settings "
            "-> API Keys, or leave the resource out of --resources",
        )
    if isinstance(exc, ApiError) and resource is not None:
        # A broken contract (a cursor that loops) reads like any unexpected answer from the API.
        return Explained(
            EXIT_BUG,
            f"{resource}: unexpected API error: {exc} -- a bug or an API change: {REPORT_A_BUG}",
        )
    if isinstance(exc, DestinationCredentialsRefused):  # the warehouse's, not the API key
        return Explained(EXIT_AUTH, str(exc))
    if isinstance(exc, DestinationNeedsPerson):
        return Explained(EXIT_DESTINATION, str(exc))
    if isinstance(exc, TryLater):
        return Explained(EXIT_TEMPFAIL, str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return Explained(EXIT_TEMPFAIL, "interrupted")
    if isinstance(exc, RejectsFound):
        return Explained(EXIT_STRICT, str(exc))
    if isinstance(exc, SyncFailed):
        return Explained(exc.exit_code, str(exc))
    root = root_cause(exc)
    if isinstance(root, CiklekError) and root is not exc:
        return explain(root, resource=resource)
    first = str(root).splitlines()[0] if str(root) else ""
    return Explained(
        EXIT_BUG, f"unexpected error (a bug): {type(root).__name__}: {first} -- {REPORT_A_BUG}"
    )


def exit_code_for(exc: BaseException) -> int:
    """`explain(exc).code`: for callers that only need the number."""
    return explain(exc).code


def causes(exc: BaseException, *, context: bool = True) -> Iterator[BaseException]:
    """`exc` and what it wraps, each link once: dlt's `.exception` (PipelineStepFailed),
    `.inner_exception`, `.client_exception` (load jobs), then `__cause__` (and `__context__`:
    a driver's error is often only the context of dlt's own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nxt = (
            getattr(current, "exception", None)
            or getattr(current, "inner_exception", None)
            or getattr(current, "client_exception", None)
            or current.__cause__
            or (current.__context__ if context else None)
        )
        current = nxt if isinstance(nxt, BaseException) else None


def root_cause(exc: BaseException) -> BaseException:
    """The first error of ours that `exc` wraps (else the innermost link). Only explicit links
    count: an error raised while another was being handled is a bug of its own."""
    last = exc
    for link in causes(exc, context=False):
        if isinstance(link, CiklekError):
            return link
        last = link
    return last
