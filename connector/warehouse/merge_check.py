"""Can this destination merge *our* tables? Asked of dlt per table, before any client is built.

Why per table: `capabilities().supported_merge_strategies` lists what the destination can do in
general, but some destinations merge only some table formats (athena: Iceberg tables only;
filesystem: `upsert` on delta/iceberg only). dlt decides per table through
`merge_strategies_selector`, and when it finds no strategy it silently appends, which would
duplicate every updated order. So the question goes to the same selector with the table format
the load would use, and a "no" is a configuration error (exit 2) before any request is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.capabilities import DestinationCapabilitiesContext

from connector.errors import ConfigError

STRATEGY = "delete-insert"  # what every table of ours merges with (line items: by order_id)
MERGE_CAPABLE_HINT = "duckdb, motherduck, postgres, bigquery, snowflake, redshift, mssql"


def _forced_table_format(destination_name: str) -> str | None:
    """athena's `force_iceberg` makes every table Iceberg; read it as dlt will (env or TOML)."""
    value: object = dlt.config.get(f"destination.{destination_name}.force_iceberg")
    if isinstance(value, str):
        value = value.strip().lower() in ("1", "true", "yes", "on")
    return "iceberg" if value is True else None


def merge_strategies(
    caps: DestinationCapabilitiesContext, table: str, table_format: str | None
) -> Sequence[str]:
    """The strategies dlt would allow for one merge table of ours."""
    supported: Sequence[str] = caps.supported_merge_strategies or []
    selector = caps.merge_strategies_selector
    if selector is None:
        return supported
    schema = {"name": table, "write_disposition": "merge"}
    if table_format:
        schema["table_format"] = table_format
    return list(selector(supported, table_schema=schema))  # type: ignore[arg-type]


def check_merge_support(destination: Destination, tables: Sequence[str]) -> None:  # type: ignore[type-arg]
    """Raise ConfigError unless dlt would merge each table with delete-insert."""
    name = destination.destination_name
    caps = destination.capabilities()
    table_format = _forced_table_format(name)
    refused = [t for t in tables if STRATEGY not in merge_strategies(caps, t, table_format)]
    if not refused:
        return
    general = caps.supported_merge_strategies or []
    if STRATEGY in general and caps.merge_strategies_selector is not None and not table_format:
        env = f"DESTINATION__{name.upper()}__FORCE_ICEBERG=true"
        raise ConfigError(
            f"destination {name!r} merges only Iceberg tables, and {', '.join(refused)} would "
            f"be appended (duplicating updated records): set {env} (or force_iceberg = true "
            f"under [destination.{name}])"
        )
    raise ConfigError(
        f"destination {name!r} cannot merge {', '.join(refused)} (it would append duplicates "
        f"and keep deleted line items); use one that can: {MERGE_CAPABLE_HINT}"
    )
