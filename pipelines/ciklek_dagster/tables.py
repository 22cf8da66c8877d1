"""The assets Dagster shows: one per table, the API upstream of them, and what each one says.

Why a translator: like dagster-dlt's `DagsterDltTranslator`, `CiklekTranslator` is where an
operator changes what the code location shows (keys, group, owners, tags, automation) without
copying the assets; the rest of the code asks `AssetNames` for a table's key, so a renamed key
keeps working everywhere (checks, the sweep's observations, schedules).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import AssetKey, AssetSpec, FreshnessPolicy, PartitionsDefinition

from ciklek_dagster.docs_tables import DATA_TABLES, TablesDoc

# asset table -> the resource that loads it (line items come with orders)
TABLES: dict[str, str] = {
    "orders": "orders",
    "order_line_items": "orders",
    "customers": "customers",
    "products": "products",
}
GROUP = "ciklek"
SOURCE_KEY = AssetKey(["ciklek_api"])
# What each table holds, in a sentence; its key and origin come from docs/tables.md.
HOLDS: Mapping[str, str] = {
    "orders": "One row per Ciklek order: status, money in currency units, dates in UTC.",
    "order_line_items": "One row per line item of an order, replaced as a set when the order "
    "changes.",
    "customers": "One row per Ciklek customer.",
    "products": "One row per Ciklek product.",
}
# The freshness thresholds (docs/scheduling.md): the hourly schedule may miss a run.
WARN_AFTER = dt.timedelta(hours=2)
FAIL_AFTER = dt.timedelta(hours=6)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def plain(markdown: str) -> str:
    """Docs text for the UI: links to other docs pages become their text."""
    return _LINK.sub(r"\1", markdown)


class CiklekTranslator:
    """What the Dagster UI shows for each table and for the API: override to change keys,
    group, owners, tags, freshness or automation (`spec.replace_attributes(...)`)."""

    def get_asset_spec(self, table: str, default: AssetSpec) -> AssetSpec:
        return default

    def get_source_spec(self, default: AssetSpec) -> AssetSpec:
        return default


@dataclass(frozen=True)
class AssetNames:
    """The specs as the translator made them, and the way back from a key to its table."""

    specs: Mapping[str, AssetSpec]  # table -> spec
    source: AssetSpec

    def key(self, table: str) -> AssetKey:
        return self.specs[table].key

    def table(self, key: AssetKey) -> str:
        return next(t for t, spec in self.specs.items() if spec.key == key)


def table_description(table: str, docs: TablesDoc) -> str:
    """What the table holds, its key and where it comes from (docs/tables.md's words)."""
    doc = docs.tables[table]
    return (
        f"{HOLDS[table]} Key: {doc.key}. From: {plain(doc.source)}. Loaded by the connector's "
        "`run_sync` (incremental on `updated_at`, merged on the key, committed in chunks); "
        "every column is described in docs/tables.md."
    )


SOURCE_DESCRIPTION = (
    "The Ciklek REST API (`base_url`: /v1/orders, /v1/customers, /v1/products), read with the "
    "key of `[sources.ciklek]` (or the account's own key). Observed once per run: requests, "
    "429s and waits, what the API's X-RateLimit headers said (`api_ratelimit_*`) and the "
    "connector's own daily budget (`own_budget_*`)."
)


def build_names(
    translator: CiklekTranslator,
    docs: TablesDoc,
    *,
    kinds: set[str],
    partitions: PartitionsDefinition | None,
    freshness: FreshnessPolicy | None,
) -> AssetNames:
    """The four table specs (upstream: the API) and the API's own, through the translator."""
    source = translator.get_source_spec(
        AssetSpec(
            SOURCE_KEY,
            description=SOURCE_DESCRIPTION,
            group_name=GROUP,
            kinds={"api"},
            partitions_def=partitions,
        )
    )
    specs = {
        table: translator.get_asset_spec(
            table,
            AssetSpec(
                AssetKey([GROUP, table]),
                deps=[source.key],
                description=table_description(table, docs),
                group_name=GROUP,
                kinds=kinds,
                skippable=True,
                partitions_def=partitions,
                freshness_policy=freshness,
                tags={"ciklek/resource": TABLES[table]},
            ),
        )
        for table in DATA_TABLES
    }
    return AssetNames(specs, source)


def default_freshness() -> FreshnessPolicy:
    return FreshnessPolicy.time_window(fail_window=FAIL_AFTER, warn_window=WARN_AFTER)
