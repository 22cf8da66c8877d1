"""The destinations `resolve_destination` hands out answer `capabilities()` from their first
answer: dlt asks ~190 times a sync and each unkept answer resolves the whole configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.common.destination import Destination
from dlt.common.normalizers.naming import sql_ci_v1, sql_cs_v1

from connector.warehouse.destinations import resolve_destination


def _resolutions(monkeypatch: pytest.MonkeyPatch, destination: Destination[Any, Any]) -> list[int]:
    """Counts the destination's configuration resolutions (the cost being saved)."""
    seen: list[int] = []
    resolve = destination.configuration

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return resolve(*args, **kwargs)

    monkeypatch.setattr(destination, "configuration", counted)
    return seen


def test_the_first_answer_is_kept_per_kind_of_naming_and_equals_dlts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = resolve_destination("duckdb", "ciklek", str(tmp_path / "w.duckdb"))
    assert isinstance(destination, Destination)
    resolutions = _resolutions(monkeypatch, destination)
    plain = dlt.destinations.duckdb(credentials=str(tmp_path / "w.duckdb"))
    for naming in (None, sql_ci_v1.NamingConvention(), sql_cs_v1.NamingConvention()):
        first = destination.capabilities(naming=naming)
        again = destination.capabilities(naming=naming.__class__() if naming else None)
        expected = plain.capabilities(naming=naming)
        for caps in (first, again):
            assert caps.casefold_identifier is expected.casefold_identifier
            assert caps.preferred_loader_file_format == expected.preferred_loader_file_format
            assert caps.max_identifier_length == expected.max_identifier_length
    # one resolution per kind of naming (three kinds), not one per call (six calls)
    assert len(resolutions) == 3
    # a case-sensitive naming folds nothing on DuckDB, a case-insensitive one keeps dlt's fold
    assert destination.capabilities(naming=sql_cs_v1.NamingConvention()).casefold_identifier is str


def test_each_caller_gets_its_own_copy(tmp_path: Path) -> None:
    """dlt assigns to the capabilities it gets (file formats per run): no caller sees another's."""
    destination = resolve_destination("duckdb", "ciklek", str(tmp_path / "w.duckdb"))
    assert isinstance(destination, Destination)
    first = destination.capabilities()
    first.preferred_loader_file_format = "csv"
    first.supported_loader_file_formats.clear()
    second = destination.capabilities()
    assert second.preferred_loader_file_format != "csv"
    assert "jsonl" in second.supported_loader_file_formats


def test_an_explicit_config_is_always_dlts_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = resolve_destination("duckdb", "ciklek", str(tmp_path / "w.duckdb"))
    assert isinstance(destination, Destination)
    config = destination.configuration(destination.spec(), accept_partial=True)
    resolutions = _resolutions(monkeypatch, destination)
    destination.capabilities()
    destination.capabilities(config)
    destination.capabilities(config)
    assert len(resolutions) == 1  # the kept answer once; the explicit config never resolves
