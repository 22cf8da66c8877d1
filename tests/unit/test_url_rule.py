"""The one URL rule: every request URL is base_url + a relative path (issue 15, item 1)."""

from __future__ import annotations

import json

import pytest

from connector.config.redaction import scrub
from connector.config.settings import load_settings
from connector.config.urls import is_plain_http_loopback, normalize_base_url, relative_path
from connector.errors import ConfigError

PASSWORD = "pw-SENTINEL-9f8e"


@pytest.mark.parametrize("path", ["orders", "/orders", "orders/", "v2/orders", "orders/{id}"])
def test_relative_paths_are_accepted(path: str) -> None:
    assert relative_path(path, "catalogue.orders.path") == path


@pytest.mark.parametrize(
    "path",
    [
        "http://192.0.2.2:47104/steal",
        "https://evil.example/orders",
        "HTTP://EVIL.EXAMPLE/x",
        "//evil.example/orders",
        " //evil.example/orders",
        "\\\\evil.example\\orders",
        "javascript:alert(1)",
        "orders\r\nHost: evil",
    ],
)
def test_paths_with_a_scheme_a_host_or_a_leading_double_slash_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="is not a relative path"):
        relative_path(path, "catalogue.orders.path")


@pytest.mark.parametrize(
    "override", ["http://127.0.0.1:9/steal", "//127.0.0.1:9/steal", "https://evil.example/x"]
)
def test_load_settings_refuses_a_catalogue_path_that_leaves_base_url(
    override: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__CATALOGUE", json.dumps({"orders": {"path": override}}))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("catalogue.orders.path ")


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}@127.0.0.1:8123/v1",
        f"https://user:{PASSWORD}@api.ciklek.com/v1",
        f"https://:{PASSWORD}@api.ciklek.com/v1",
        f"ftp://user:{PASSWORD}@127.0.0.1/v1",
    ],
)
def test_base_url_with_user_info_is_refused_and_the_password_never_shown(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_base_url(url)
    assert PASSWORD not in str(info.value)
    assert "***@" in str(info.value)
    assert PASSWORD not in scrub(f"anything printed that held {url}")


def test_base_url_with_a_bare_user_is_refused() -> None:
    with pytest.raises(ConfigError, match="user info"):
        normalize_base_url("https://someone@api.ciklek.com/v1")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.ciklek.com/v1?x=1",
        "https://api.ciklek.com/v1#frag",
        "https://api.ciklek.com/v1?",
        "http://127.0.0.1:8123/v1?key=1",
    ],
)
def test_base_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="query or fragment"):
        normalize_base_url(url)


def test_load_settings_refuses_base_url_with_user_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__BASE_URL", f"http://u:{PASSWORD}@127.0.0.1:1/v1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8123/v1", True),
        ("http://localhost:8123/v1", True),
        ("http://[::1]:8123/v1", True),
        ("https://127.0.0.1:8123/v1", False),
        ("https://api.ciklek.com/v1", False),
    ],
)
def test_plain_http_loopback_is_recognised(url: str, expected: bool) -> None:
    assert is_plain_http_loopback(url) is expected


def test_request_deadline_setting_defaults_to_120_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().request_deadline_seconds == 120.0
    monkeypatch.setenv("SOURCES__CIKLEK__REQUEST_DEADLINE_SECONDS", "2.5")
    assert load_settings().request_deadline_seconds == 2.5
    monkeypatch.setenv("SOURCES__CIKLEK__REQUEST_DEADLINE_SECONDS", "0")
    with pytest.raises(ConfigError, match="request_deadline_seconds"):
        load_settings()
