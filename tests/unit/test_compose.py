"""The composition root: a bare `ciklek_source()` closes the client it opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import httpx
import pytest

import connector.runs.compose
from connector.api.client import CiklekClient
from connector.config.redaction import ApiKey
from connector.runs.compose import ClientLease
from connector.runs.source import ciklek_source


class _Client:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_an_owned_client_opens_lazily_and_closes_when_the_last_user_is_done() -> None:
    opened: list[_Client] = []
    released: list[_Client] = []

    def open_client() -> Any:
        opened.append(_Client())
        return opened[-1]

    lease = ClientLease(open_client, release=released.append)
    assert opened == []
    with lease.borrow() as first, lease.borrow() as second:
        assert first is second and released == []
    assert released == opened and len(opened) == 1
    with lease.borrow() as third:
        assert third is not first  # a new one for the next user
    assert len(released) == 2


def test_a_borrowed_client_is_left_to_its_owner() -> None:
    client = _Client()
    with ClientLease.borrowed(client).borrow() as got:  # type: ignore[arg-type]
        assert got is client
    assert not client.closed


def test_the_bare_source_closes_its_client_when_the_extract_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__API_KEY", "bsk_test_bare")
    monkeypatch.setenv("SOURCES__CIKLEK__RESOURCES", "customers,products")
    monkeypatch.setenv("CIKLEK_HOME", str(tmp_path / "home"))
    clients: list[CiklekClient] = []

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        record = {
            "id": f"{name}-1",
            "name": "x",
            "price": 100,
            "updated_at": "2026-01-01T00:00:00Z",
        }
        return httpx.Response(200, json={"data": [record], "meta": {"next_cursor": None}})

    def build_client(settings: Any, **kwargs: Any) -> CiklekClient:
        client = CiklekClient(
            "https://api.test/v1", ApiKey("bsk_test_bare"), transport=httpx.MockTransport(handler)
        )
        clients.append(client)
        return client

    monkeypatch.setattr(connector.runs.compose, "build_client", build_client)
    source = ciklek_source()
    assert clients == []  # building the source (Dagster does at load time) opens nothing
    pipeline = dlt.pipeline(
        pipeline_name="bare",
        destination=dlt.destinations.duckdb(str(tmp_path / "bare.duckdb")),
        dataset_name="ciklek",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    pipeline.run(source)
    assert clients and all(c._http.is_closed for c in clients)
