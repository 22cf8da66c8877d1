"""Ciklek → warehouse connector built on dlt.

The public face: `ciklek_source` (the dlt source), `CiklekClient` (the HTTP client), the error
tree, and `run_sync` (one checkpointed, quota-aware sync run). dlt's anonymous telemetry is off
by default here because nothing in this package may reach the internet unasked; set
RUNTIME__DLTHUB_TELEMETRY=true to opt back in.
"""

from __future__ import annotations

import os

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# dlt warns about hint differences we make on purpose (nullable Arrow ids vs primary keys);
# `ciklek --debug` or RUNTIME__LOG_LEVEL brings its logs back.
os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")

__version__ = "0.1.0"

from connector.client import CiklekClient
from connector.errors import (
    ApiError,
    CiklekError,
    CiklekUnavailable,
    ConfigError,
    MissingScope,
    QuotaExhausted,
    Unauthorized,
)

__all__ = [
    "ApiError",
    "CiklekClient",
    "CiklekError",
    "CiklekUnavailable",
    "ConfigError",
    "MissingScope",
    "QuotaExhausted",
    "Unauthorized",
    "__version__",
]
