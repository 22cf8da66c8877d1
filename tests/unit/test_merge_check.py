"""The merge check asks dlt per table, so athena without Iceberg is refused before any request."""

from __future__ import annotations

import pytest
from dlt.common.destination import Destination

from connector.errors import ConfigError
from connector.warehouse.merge_check import check_merge_support

TABLES = ("orders", "order_line_items", "customers", "products")


def test_athena_without_iceberg_is_refused_naming_force_iceberg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DESTINATION__ATHENA__FORCE_ICEBERG", raising=False)
    with pytest.raises(ConfigError) as info:
        check_merge_support(Destination.from_reference("athena"), TABLES)
    assert "DESTINATION__ATHENA__FORCE_ICEBERG=true" in str(info.value)
    assert "orders" in str(info.value)


def test_athena_with_force_iceberg_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATION__ATHENA__FORCE_ICEBERG", "true")
    check_merge_support(Destination.from_reference("athena"), TABLES)


def test_filesystem_cannot_delete_insert_even_as_iceberg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATION__FILESYSTEM__FORCE_ICEBERG", "true")
    with pytest.raises(ConfigError) as info:
        check_merge_support(Destination.from_reference("filesystem"), TABLES)
    assert "cannot merge" in str(info.value) and "FORCE_ICEBERG" not in str(info.value)


@pytest.mark.parametrize("name", ["duckdb", "postgres", "bigquery", "snowflake"])
def test_merge_capable_destinations_pass(name: str) -> None:
    check_merge_support(Destination.from_reference(name), TABLES)
