"""One TLS context per process and CA source (connector/api/tls.py)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest

from connector.api.client import CiklekClient
from connector.api.tls import _built, tls_context


def test_the_context_is_built_once_per_ca_source_and_trusts_what_httpx_would(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = tls_context(True)
    assert tls_context(True) is default
    assert tls_context(False) is tls_context(False)
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    # certifi's bundle, as httpx loads it by default
    assert (
        default.cert_store_stats()["x509_ca"]
        == ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    )

    bundle = tmp_path / "one.pem"
    bundle.write_text(
        Path(certifi.where()).read_text().split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n"
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    own = tls_context(True)
    assert own is not default and own.cert_store_stats()["x509_ca"] == 1
    assert tls_context(False).cert_store_stats()["x509_ca"] > 1  # no environment: certifi's


def test_clients_share_the_context_instead_of_loading_a_bundle_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[str] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(str(kwargs.get("capath")))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    _built.cache_clear()  # every context of this test is made here
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # a CA source no context was made for yet
    clients = [CiklekClient("https://api.example.test/v1", "k") for _ in range(3)]
    for client in clients:
        client.close()
    assert built == [str(tmp_path)]  # one context for three clients
    for _ in range(2):  # plain HTTP on loopback (the sandbox): no environment, certifi's bundle
        CiklekClient("http://127.0.0.1:9/v1", "k").close()
    assert built == [str(tmp_path), "None"]
