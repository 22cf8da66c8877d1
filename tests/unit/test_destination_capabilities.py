"""The destinations `resolve_destination` hands out answer `capabilities()` and
`configuration()` from their first answer: dlt asks for capabilities ~190 times a sync and for a
configuration about ten times, and each unkept answer resolves the whole configuration again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.common.destination import Destination
from dlt.common.normalizers.naming import sql_ci_v1, sql_cs_v1
from dlt.dataset.utils import get_destination_client_initial_config

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


def test_a_configuration_is_resolved_once_per_request_and_shared_like_dlts_loader_shares_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[str] = []
    real = Destination.configuration

    def counted(self: Any, initial_config: Any = None, accept_partial: bool = False) -> Any:
        resolved.append(getattr(initial_config, "dataset_name", None))
        return real(self, initial_config, accept_partial=accept_partial)

    monkeypatch.setattr(Destination, "configuration", counted)  # under the run's wrapper
    destination = resolve_destination("duckdb", "ciklek", str(tmp_path / "w.duckdb"))
    assert isinstance(destination, Destination)

    def request(dataset: str) -> Any:  # what dlt builds for every client it makes
        return get_destination_client_initial_config(destination, dataset_name=dataset)

    first = destination.configuration(request("ciklek"))
    assert destination.configuration(request("ciklek")) is first  # an equal request: kept
    other = destination.configuration(request("ciklek_staging"))
    assert other is not first and other.dataset_name == "ciklek_staging"
    partial = destination.configuration(request("ciklek"), accept_partial=True)
    assert partial is not first
    assert resolved == ["ciklek", "ciklek_staging", "ciklek"]
    # every client of the run shares the one credentials object, so one DuckDB connection pool
    assert first.credentials.database == str(tmp_path / "w.duckdb")
    assert destination.client(dlt.Schema("s"), request("ciklek")).config is first


def test_a_failed_resolution_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    destination = resolve_destination("postgres", "ciklek")
    assert isinstance(destination, Destination)
    initial = get_destination_client_initial_config(destination, dataset_name="ciklek")
    for _ in range(2):  # raised each time: nothing was kept
        with pytest.raises(Exception, match="credentials"):
            destination.configuration(
                get_destination_client_initial_config(destination, dataset_name="ciklek")
            )
    monkeypatch.setenv(
        "DESTINATION__POSTGRES__CREDENTIALS", "postgresql://u:p@127.0.0.1:5/db"
    )  # the settings fixed: the next request resolves
    assert destination.configuration(initial).credentials.host == "127.0.0.1"
