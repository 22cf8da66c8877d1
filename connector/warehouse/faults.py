"""Destination failures, classified in one place (as `client.classify` does for API responses).

Why: a warehouse that is busy, restarting or full is not a bug in the connector, and a
scheduler must be told "later" (75), "fix the warehouse credentials" (3) or "a person must act"
(7) instead of "unexpected error, please report it" (1). dlt wraps the drivers' errors
(`PipelineStepFailed` → `LoadClientJobRetry` → `DatabaseTransientException` → the driver's own),
so the chain is walked down to the driver's exception and decided by its type and, where the
driver has a code (PostgreSQL's SQLSTATE), by that code. Only where the driver offers neither
(DuckDB reports a lock conflict and a full disk as the same `IOException`/`TransactionException`
type; psycopg2 reports every failed connection attempt as `OperationalError` without SQLSTATE)
does the message text decide, each such rule commented.

Messages name the destination and never contain credentials: a DSN's password is cut out. The
exception types are in `connector/errors.py`, with the rest of the connector's.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import dlt
from dlt.common.destination.exceptions import DestinationTransientException

from connector.errors import (
    CiklekError,
    DestinationCredentialsRefused,
    DestinationNeedsPerson,
    DestinationUnavailable,
    causes,
    explain,
)


class FaultKind(enum.Enum):
    TRANSIENT = "transient"  # exit 75: try again later, progress kept
    CREDENTIALS = "credentials"  # exit 3: the warehouse refused our credentials
    NEEDS_PERSON = "needs_person"  # exit 7: out of space, permissions, read-only, schema drift


@dataclass(frozen=True)
class DestinationFault:
    kind: FaultKind
    cause: str  # short, secret-free: "the DuckDB file is locked by PID 123"
    advice: str  # what to do
    locked: bool = False  # another process holds the DuckDB file: worth waiting for
    lock_holder: str | None = None  # DuckDB: the process holding the file, when it says


# PostgreSQL SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_CREDENTIALS = {"28000", "28P01"}  # invalid authorization / invalid password
_PG_TRANSIENT_CLASSES = ("08", "40", "57P", "53300", "55P03", "57014")  # connection, rollback,
# operator intervention (shutdown, cannot connect now), too many connections, lock not
# available, query cancelled (a lock or statement timeout)
_PG_NEEDS_PERSON = {
    "53100": "the warehouse is out of disk space",
    "42501": "permission denied in the warehouse",
    "25006": "the warehouse database is read-only",
    "42804": "a table in the warehouse was changed in a way the load cannot fit (type mismatch)",
    "42703": "a column the load expects is missing from the warehouse table",
    "42P01": "a table the load expects is missing from the warehouse",
    "23502": "a warehouse table gained a NOT NULL constraint the data does not meet",
}
_OS_NEEDS_PERSON = {
    errno.ENOSPC: "no space left on the device holding the warehouse",
    errno.EDQUOT: "disk quota exceeded for the warehouse",
    errno.EACCES: "permission denied on the warehouse file or directory",
    errno.EPERM: "permission denied on the warehouse file or directory",
    errno.EROFS: "the warehouse file is on a read-only file system",
}
_DUCKDB_LOCK = re.compile(r"Conflicting lock is held in (?P<holder>.+?) \(PID (?P<pid>\d+)\)")
_PG_ROLE_MISSING = re.compile(r'role ".*" does not exist')
_DSN_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_log = logging.getLogger(__name__)


def scrub_dsn(text: str) -> str:
    """`postgresql://user:secret@host` → `postgresql://user:***@host`."""
    return _DSN_PASSWORD.sub(r"\1***@", text)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return scrub_dsn(text[0])[:300] if text else type(exc).__name__


def classify(exc: BaseException) -> DestinationFault | None:
    """The fault behind `exc`, or None when it is not a recognised destination failure."""
    for link in causes(exc):
        fault = _classify_one(link)
        if fault is not None:
            return fault
    return _classify_dlt(exc)


def _classify_one(exc: BaseException) -> DestinationFault | None:
    if isinstance(exc, OSError) and exc.errno in _OS_NEEDS_PERSON:
        return DestinationFault(FaultKind.NEEDS_PERSON, _OS_NEEDS_PERSON[exc.errno], _FREE_SPACE)
    module = type(exc).__module__.split(".")[0]
    if module in ("duckdb", "_duckdb"):
        return _classify_duckdb(exc)
    if module == "psycopg2":
        return _classify_psycopg2(exc)
    return None


_FREE_SPACE = "free space or fix permissions, then run the same command again: progress is kept"


def _classify_duckdb(exc: BaseException) -> DestinationFault | None:
    text = str(exc)
    # DuckDB raises the same IOException type for a lock conflict and for other I/O failures;
    # only its message tells them apart.
    lock = _DUCKDB_LOCK.search(text)
    if lock or "Could not set lock on file" in text:
        holder = f"{lock['holder']} (PID {lock['pid']})" if lock else None
        return DestinationFault(
            FaultKind.TRANSIENT,
            f"the DuckDB file is locked by another process{f': {holder}' if holder else ''}",
            "close that process (a notebook or `duckdb` shell holds it even read-only) or set "
            "duckdb_read_copy for analysts; then run again",
            locked=True,
            lock_holder=holder,
        )
    # A full disk surfaces as IOException or TransactionException with the OS's text.
    for os_text, code in (
        ("No space left on device", errno.ENOSPC),
        ("Disk quota exceeded", errno.EDQUOT),
        ("Permission denied", errno.EACCES),
        ("Read-only file system", errno.EROFS),
    ):
        if os_text in text:
            return DestinationFault(FaultKind.NEEDS_PERSON, _OS_NEEDS_PERSON[code], _FREE_SPACE)
    if "read-only mode" in text:  # a database attached or opened read-only
        return DestinationFault(
            FaultKind.NEEDS_PERSON,
            "the DuckDB database is open read-only",
            "point the connector at a writable DuckDB file",
        )
    return None


def _classify_psycopg2(exc: BaseException) -> DestinationFault | None:
    code = getattr(exc, "pgcode", None)
    text = str(exc)
    if code in _PG_CREDENTIALS or (
        # A failed connection attempt carries no SQLSTATE in psycopg2: only the server's text
        # tells a refused password or an unknown role from an unreachable server.
        code is None and ("password authentication failed" in text or _PG_ROLE_MISSING.search(text))
    ):
        return DestinationFault(
            FaultKind.CREDENTIALS,
            "the warehouse refused the destination credentials",
            "check the destination's credentials (e.g. DESTINATION__POSTGRES__CREDENTIALS or "
            "[destination.postgres] credentials in .dlt/secrets.toml)",
        )
    if code is not None and code in _PG_NEEDS_PERSON:
        return DestinationFault(
            FaultKind.NEEDS_PERSON,
            _PG_NEEDS_PERSON[code],
            "fix it in the warehouse, then run the same command again: progress is kept",
        )
    if code is not None and code.startswith(_PG_TRANSIENT_CLASSES):
        return _pg_transient(exc)
    if code is None and type(exc).__name__ in ("OperationalError", "InterfaceError"):
        # No SQLSTATE: the connection failed or dropped (refused, reset, server gone).
        return _pg_transient(exc)
    return None


def _pg_transient(exc: BaseException) -> DestinationFault:
    return DestinationFault(
        FaultKind.TRANSIENT,
        f"the warehouse is unreachable or restarting ({first_line(exc)})",
        "run again when the warehouse is back: progress is kept",
    )


def _classify_dlt(exc: BaseException) -> DestinationFault | None:
    """Last resort for other warehouses: dlt's own transient/connection classification."""
    for link in causes(exc):
        # DestinationConnectionError is one of dlt's transient exceptions.
        if isinstance(link, DestinationTransientException):
            return DestinationFault(
                FaultKind.TRANSIENT,
                f"the warehouse failed ({first_line(link)})",
                "run again later: progress is kept",
            )
    return None


def as_error(fault: DestinationFault, destination: str) -> CiklekError:
    """The typed error for a fault, with the one line the CLI prints."""
    message = f"destination {destination}: {fault.cause}; {fault.advice}"
    if fault.kind is FaultKind.CREDENTIALS:
        return DestinationCredentialsRefused(message)
    if fault.kind is FaultKind.NEEDS_PERSON:
        return DestinationNeedsPerson(message)
    return DestinationUnavailable(message, locked=fault.locked)


class RunOutcome(Protocol):
    """What this layer reads and writes of a run's result (`connector.runs.result.SyncResult`)."""

    exit_code: int
    error: CiklekError | None
    messages: list[str]


DESTINATION_ERRORS = (DestinationCredentialsRefused, DestinationNeedsPerson, DestinationUnavailable)


def destination_exit_code(error: CiklekError | None) -> int | None:
    """The exit code of a destination error (through `explain`); None for anything else."""
    return explain(error).code if isinstance(error, DESTINATION_ERRORS) else None


KEPT = "up to the last committed chunk (the next run fetches the chunk that failed again)"


@contextlib.contextmanager
def stop_on_fault(label: str, result: RunOutcome) -> Iterator[None]:
    """Around the chunk loop: a warehouse failure ends the run cleanly, anything else propagates.

    A recognised fault (or one of our destination errors, e.g. a swap the warehouse refused)
    becomes `result.error` and one message (destination, cause, what to do); the chunks
    committed before it stay committed, and the exit decision turns the error into 75/3/7.
    """
    try:
        yield
    except Exception as exc:
        error: CiklekError
        if isinstance(exc, DESTINATION_ERRORS):
            error = exc
        else:
            fault = classify(exc)
            if fault is None:
                raise
            error = as_error(fault, label)
        _log.debug("the warehouse failed", exc_info=True)  # the traceback, with --debug only
        result.error = error
        text = str(error)
        kept = f" {KEPT}" if "progress is kept" in text else f"; progress is kept {KEPT}"
        result.messages.append(text + kept)


def may_record_run(pipeline: dlt.Pipeline, result: RunOutcome) -> bool:
    """Whether the run row can be loaded now (run_sync asks before `_record_run`).

    After a warehouse failure the failed chunk is still pending, and `pipeline.run` would load
    it before anything else: that chunk must be discarded by the next run's recovery instead
    (loading it again could stage rows twice). `ciklek status` still shows this run.
    """
    if destination_exit_code(result.error) is None or not pipeline.has_pending_data:
        return True
    result.messages.append(
        "this run is not in _ciklek_sync_runs (the warehouse failed); `ciklek status` shows it"
    )
    return False
