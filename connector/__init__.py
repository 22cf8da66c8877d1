"""Ciklek → warehouse connector built on dlt.

The public face: `ciklek_source` (the dlt source), `run_sync` with `SyncOptions`/`SyncResult`
(one checkpointed, quota-aware sync run), `CiklekClient` (the HTTP client) and the error tree.

Importing this package changes nothing global (no `os.environ` defaults, no logging setup): a
host process such as Dagster keeps its own dlt settings. The exports are resolved lazily, on
first attribute access, so `import connector.sandbox` (the local server) loads none of dlt,
httpx or tenacity, and `import connector` alone stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_ERRORS = (
    "ApiError",
    "BadRequest",
    "BudgetSpent",
    "CiklekError",
    "CiklekUnavailable",
    "ConfigError",
    "ContractViolation",
    "LockHeld",
    "MissingScope",
    "NotFound",
    "QuotaExhausted",
    "StopRequested",
    "TryLater",
    "Unauthorized",
    "ValidationFailed",
)

# export name -> the module that defines it (imported on first access only)
_EXPORTS: dict[str, str] = {
    "ciklek_source": "connector.source",
    "run_sync": "connector.sync",
    "SyncOptions": "connector.sync",
    "SyncResult": "connector.sync",
    "CiklekClient": "connector.client",
    **dict.fromkeys(_ERRORS, "connector.errors"),
    "RejectsFound": "connector.outcome",
    "SyncFailed": "connector.outcome",
}

__all__ = [
    "ApiError",
    "BadRequest",
    "BudgetSpent",
    "CiklekClient",
    "CiklekError",
    "CiklekUnavailable",
    "ConfigError",
    "ContractViolation",
    "LockHeld",
    "MissingScope",
    "NotFound",
    "QuotaExhausted",
    "RejectsFound",
    "StopRequested",
    "SyncFailed",
    "SyncOptions",
    "SyncResult",
    "TryLater",
    "Unauthorized",
    "ValidationFailed",
    "__version__",
    "ciklek_source",
    "run_sync",
]

if TYPE_CHECKING:  # what mypy and editors see; at run time `__getattr__` below does the work
    from connector.client import CiklekClient
    from connector.errors import (
        ApiError,
        BadRequest,
        BudgetSpent,
        CiklekError,
        CiklekUnavailable,
        ConfigError,
        ContractViolation,
        LockHeld,
        MissingScope,
        NotFound,
        QuotaExhausted,
        StopRequested,
        TryLater,
        Unauthorized,
        ValidationFailed,
    )
    from connector.outcome import RejectsFound, SyncFailed
    from connector.source import ciklek_source
    from connector.sync import SyncOptions, SyncResult, run_sync


def __getattr__(name: str) -> object:
    """Import an export's module on first use and cache the value in this module."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'connector' has no attribute {name!r}")
    value: object = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
