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
            return for_one_run(
                dlt.destinations.duckdb(credentials=str(Path(duckdb_path).absolute()))
            )
        configured = configured_duckdb_path()
        path = duckdb_file(configured) if configured else Path.cwd() / DEFAULT_DUCKDB_FILE
        if path is not None:
            check_duckdb_collision(path, dataset)
        if configured:  # dlt reads its own credentials; code must not override them
            return for_one_run(dlt.destinations.duckdb())
        return for_one_run(dlt.destinations.duckdb(credentials=str(path)))
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
    return for_one_run(destination)


def for_one_run(destination: Destination[Any, Any]) -> Destination[Any, Any]:
    """The destination object a run uses, answering what cannot change during the run from
    its first answer: its configuration and its capabilities (bench/RESULTS.md section 7)."""
    return remembering_capabilities(remembering_configuration(destination))


def remembering_configuration(destination: Destination[Any, Any]) -> Destination[Any, Any]:
    """The destination, resolving its configuration once per kind of request and run.

    Why: every job client dlt or we make (`sql_client()`, `destination_client()`, each step's
    clients) resolves the destination's whole configuration from every provider again: ~6 ms
    each, nine or ten times a sync. dlt's own loader already resolves it once per load and
    shares that one object between all its jobs and threads; this does the same across the run.
    A request is what dlt puts in the initial configuration (dataset and schema binding,
    staging or not) plus `accept_partial`; an equal request gets the object resolved first.
    The settings behind it are read once per run and this object lives for one run. A
    resolution that fails (credentials missing) is not kept: the next call raises again.
    """
    resolve = destination.configuration
    kept: list[tuple[dict[str, Any] | None, bool, Any]] = []

    def configuration(initial_config: Any = None, accept_partial: bool = False) -> Any:
        request = None if initial_config is None else dict(initial_config)
        for seen, partial, resolved in kept:
            if partial == accept_partial and seen == request:
                return resolved
        resolved = resolve(initial_config, accept_partial=accept_partial)
        kept.append((request, accept_partial, resolved))
        return resolved

    remember: Callable[..., Any] = configuration
    destination.configuration = remember  # type: ignore[method-assign]
    return destination


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
