"""Ciklek → warehouse connector built on dlt.

The public face: `ciklek_source` (the dlt source), `run_sync` with `SyncOptions`/`SyncResult`
(one checkpointed, quota-aware sync run) and `keep_exit_code` (signals after its decision),
`CiklekClient` (the HTTP client) and the error tree.

Importing this package changes nothing global but one thing: it registers a finder that answers
only for the module paths of earlier releases (`connector.client`, `connector.sync`, ...), so
`from connector.client import CiklekClient` keeps working now that the modules live in layers
(`connector.api.client`). No `os.environ` defaults, no logging setup: a host process such as
Dagster keeps its own dlt settings. The exports are resolved lazily, on first attribute access,
so `import connector.sandbox` (the local server) loads none of dlt, httpx or tenacity, and
`import connector` alone stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_ERRORS = (
    "ApiError",
    "BadRequest",
    "BrokenPagination",
    "BudgetSpent",
    "CiklekError",
    "CiklekUnavailable",
    "ConfigError",
    "ContractViolation",
    "DestinationCredentialsRefused",
    "DestinationNeedsPerson",
    "DestinationUnavailable",
    "LockHeld",
    "MissingScope",
    "NotFound",
    "QuotaExhausted",
    "RejectsFound",
    "StopRequested",
    "SyncFailed",
    "TryLater",
    "Unauthorized",
    "ValidationFailed",
)

# export name -> the module that defines it (imported on first access only)
_EXPORTS: dict[str, str] = {
    "ciklek_source": "connector.runs.source",
    "run_sync": "connector.runs.sync",
    "keep_exit_code": "connector.runs.signals",
    "SyncOptions": "connector.runs.options",
    "SyncResult": "connector.runs.result",
    "CiklekClient": "connector.api.client",
    # The settings a run gets from dlt's providers, with overrides from Python
    # (`run_sync(options, settings=load_settings(history=["orders"]))`).
    "load_settings": "connector.config.settings",
    "Settings": "connector.config.settings",
    **dict.fromkeys(_ERRORS, "connector.errors"),
}

# The module paths of releases before the layers, and where their contents live now.
_MOVED: dict[str, str] = {
    "connector.client": "connector.api.client",
    "connector.sync": "connector.runs.sync",
    "connector.source": "connector.runs.source",
    "connector.outcome": "connector.runs.result",
    "connector.settings": "connector.config.settings",
}

__all__ = [
    "ApiError",
    "BadRequest",
    "BrokenPagination",
    "BudgetSpent",
    "CiklekClient",
    "CiklekError",
    "CiklekUnavailable",
    "ConfigError",
    "ContractViolation",
    "DestinationCredentialsRefused",
    "DestinationNeedsPerson",
    "DestinationUnavailable",
    "LockHeld",
    "MissingScope",
    "NotFound",
    "QuotaExhausted",
    "RejectsFound",
    "Settings",
    "StopRequested",
    "SyncFailed",
    "SyncOptions",
    "SyncResult",
    "TryLater",
    "Unauthorized",
    "ValidationFailed",
    "__version__",
    "ciklek_source",
    "keep_exit_code",
    "load_settings",
    "run_sync",
]

if TYPE_CHECKING:  # what mypy and editors see; at run time `__getattr__` below does the work
    from connector.api.client import CiklekClient
    from connector.config.settings import Settings, load_settings
    from connector.errors import (
        ApiError,
        BadRequest,
        BrokenPagination,
        BudgetSpent,
        CiklekError,
        CiklekUnavailable,
        ConfigError,
        ContractViolation,
        DestinationCredentialsRefused,
        DestinationNeedsPerson,
        DestinationUnavailable,
        LockHeld,
        MissingScope,
        NotFound,
        QuotaExhausted,
        RejectsFound,
        StopRequested,
        SyncFailed,
        TryLater,
        Unauthorized,
        ValidationFailed,
    )
    from connector.runs.options import SyncOptions
    from connector.runs.result import SyncResult
    from connector.runs.signals import keep_exit_code
    from connector.runs.source import ciklek_source
    from connector.runs.sync import run_sync


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


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import connector.client` (an old path) gives the module that lives there now."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the one at its new path, already imported."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
