"""The connector's exception tree, in one place.

Why a tree: the CLI maps each branch to one exit code, the client's retry policy decides
retriable vs fatal by type, and the sync loop decides "stop cleanly and keep progress" vs "abort"
by type. Messages never contain the API key: every error is built from server fields or our own
words, never from request headers.

    CiklekError                      base of everything we raise on purpose
    ├── ConfigError                  bad input or configuration found before any request (exit 2)
    ├── ApiError                     an error envelope from the server (fatal, never retried)
    │   ├── BadRequest               400
    │   ├── Unauthorized             401 (exit 3)
    │   ├── MissingScope             403 (exit 3 when the user named the resource)
    │   ├── NotFound                 404
    │   └── ValidationFailed         422, carries `details`
    ├── TryLater                     stop cleanly, progress kept (exit 75)
    │   ├── QuotaExhausted           daily quota spent / reset too far away; carries `resume_at`
    │   ├── BudgetSpent              our own daily budget or --max-requests reached
    │   ├── CiklekUnavailable        transient failures outlived the retry budget
    │   ├── LockHeld                 another run of the same pipeline is running
    │   └── StopRequested            SIGTERM / SIGINT
    └── ContractViolation            the data broke an assumption we cannot quarantine around
"""

from __future__ import annotations

import datetime as dt
from typing import Any


class CiklekError(Exception):
    """Base class: anything the connector raises on purpose."""


class ConfigError(CiklekError):
    """Bad input or configuration, detected before a single request was sent."""


class ApiError(CiklekError):
    """An error envelope from the API. Fatal: retrying the same request cannot help."""

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Any = None,
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
        **kwargs: Any,
    ) -> None:
        self.scope = scope
        self.resource = resource
        super().__init__(message, **kwargs)


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


class ContractViolation(CiklekError):
    """The API broke an assumption in a way quarantine cannot absorb (e.g. a page without data)."""


# Exit codes of the `ciklek` command (README "Exit codes"); precedence 1 > 3 > 75 > 4 > 0.
EXIT_OK, EXIT_BUG, EXIT_CONFIG, EXIT_AUTH, EXIT_STRICT, EXIT_TEMPFAIL = 0, 1, 2, 3, 4, 75
