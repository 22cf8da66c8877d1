"""Choosing and checking the destination before any request is sent.

Why checks here: two mistakes cost a user a whole backfill. A destination that cannot merge
(dlt's plain `filesystem`) silently appends, duplicating rows and keeping tombstones; and a
DuckDB file whose stem equals the dataset name makes every `ciklek.orders` ambiguous (DuckDB
names a file's catalog after its stem). Both are refused with exit 2.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.reference import TDestinationReferenceArg

from connector.catalogue import CATALOGUE
from connector.errors import ConfigError
from connector.warehouse.merge_check import check_merge_support

DEFAULT_DUCKDB_FILE = "ciklek_warehouse.duckdb"
MERGE_CAPABLE_HINT = "duckdb, motherduck, postgres, bigquery, snowflake, redshift, mssql"


def configured_duckdb_path() -> str | None:
    """The DuckDB file dlt's own settings name, if any (env var or .dlt/secrets.toml)."""
    value = os.environ.get("DESTINATION__DUCKDB__CREDENTIALS")
    if value:
        return value
    try:
        found: object = dlt.secrets.get("destination.duckdb.credentials")
    except Exception:  # a provider problem means "not configured", not a crash
        return None
    return str(found) if isinstance(found, str) and found else None


def duckdb_file(credentials: str) -> Path | None:
    text = credentials
    if text.startswith("duckdb:///"):
        text = text[len("duckdb:///") :]
    elif text.startswith("duckdb://"):
        text = text[len("duckdb://") :]
    if text in ("", ":memory:") or text.startswith("md:"):
        return None
    return Path(text.split("?", 1)[0])


def check_duckdb_collision(path: Path, dataset: str) -> None:
    if path.stem.lower() == dataset.lower():
        raise ConfigError(
            f"DuckDB file {path.name!r} has the same name as dataset {dataset!r}: DuckDB names "
            f"the file's catalog {path.stem!r}, so `{dataset}.orders` would be ambiguous. "
            f"Rename the file (e.g. {DEFAULT_DUCKDB_FILE}) or pass --dataset with another name"
        )


def resolve_destination(
    name: str | None, dataset: str, duckdb_path: str | None = None
) -> TDestinationReferenceArg:
    """A dlt destination reference for `--destination NAME`, checked; raises ConfigError."""
    name = (name or "duckdb").strip()
    if not dataset or not dataset.replace("_", "").isalnum():
        raise ConfigError(f"dataset {dataset!r} must be letters, digits and underscores")
    if name == "duckdb":
        if duckdb_path:
            check_duckdb_collision(Path(duckdb_path), dataset)
            return remembering_capabilities(
                dlt.destinations.duckdb(credentials=str(Path(duckdb_path).absolute()))
            )
        configured = configured_duckdb_path()
        path = duckdb_file(configured) if configured else Path.cwd() / DEFAULT_DUCKDB_FILE
        if path is not None:
            check_duckdb_collision(path, dataset)
        if configured:  # dlt reads its own credentials; code must not override them
            return remembering_capabilities(dlt.destinations.duckdb())
        return remembering_capabilities(dlt.destinations.duckdb(credentials=str(path)))
    try:
        destination = Destination.from_reference(name)
    except Exception:
        raise ConfigError(
            f"unknown destination {name!r}; use a dlt destination name such as {MERGE_CAPABLE_HINT}"
        ) from None
    if destination is None:
        raise ConfigError(f"unknown destination {name!r}")
    # Asked of dlt per table and table format (athena merges Iceberg tables only).
    check_merge_support(destination, [t for spec in CATALOGUE.values() for t in spec.tables])
    return remembering_capabilities(destination)


def remembering_capabilities(destination: Destination[Any, Any]) -> Destination[Any, Any]:
    """The destination, answering `capabilities()` from the first answer per naming convention.

    Why: dlt asks a destination for its capabilities about 190 times in one sync, and each
    answer resolves the destination's whole configuration from every provider again (3-6 ms;
    bench/RESULTS.md section 7 measures this and the run-row shortcut together). The answer
    cannot change during a run (the settings are read once; this instance lives for one run),
    so the first per kind of naming convention is kept (its class, case sensitivity and length
    limit: all that capabilities read of it; dlt makes a new naming object per schema) and a
    deep copy handed out (dlt assigns to the object it gets). Calls with an explicit `config`
    are dlt's own per-client answers and go through untouched.
    """
    asked = destination.capabilities
    kept: dict[tuple[object, ...], Any] = {}

    def capabilities(config: Any = None, naming: Any = None) -> Any:
        if config is not None:
            return asked(config, naming)
        key = (
            (type(naming), naming.is_case_sensitive, naming.max_length)
            if naming is not None
            else (None,)
        )
        if key not in kept:
            kept[key] = asked(None, naming)
        return copy.deepcopy(kept[key])

    remember: Callable[..., Any] = capabilities
    destination.capabilities = remember  # type: ignore[method-assign]
    return destination
