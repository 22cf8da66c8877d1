"""Settings of the warehouse side, sweeps and accounts: defaults and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config.settings import load_settings
from connector.errors import ConfigError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__DAILY_REQUEST_BUDGET", "1000")
    s = load_settings()
    assert s.destination_lock_wait_seconds == 30.0
    assert s.duckdb_read_copy is None
    assert s.deletes == "soft"
    assert s.sweep_max_delete_share == 0.10
    assert s.sweep_reserve == 200  # a fifth of the daily budget
    assert s.sweep_run_requests == 1800
    assert s.accounts == ()


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__DELETES", "HARD")
    monkeypatch.setenv("SOURCES__CIKLEK__ACCOUNTS", "acme, beta_2,acme")
    monkeypatch.setenv("SOURCES__CIKLEK__DUCKDB_READ_COPY", "copy.duckdb")
    monkeypatch.setenv("SOURCES__CIKLEK__SWEEP_RESERVE", "0")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.deletes == "hard"
    assert s.accounts == ("acme", "beta_2")
    assert s.duckdb_read_copy == tmp_path / "copy.duckdb"
    assert s.sweep_reserve == 0


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("DELETES", "purge", "deletes must be"),
        ("SWEEP_MAX_DELETE_SHARE", "1.5", "sweep_max_delete_share"),
        ("SWEEP_RESERVE", "999999999", "sweep_reserve"),
        ("SWEEP_RUN_REQUESTS", "0", "sweep_run_requests"),
        ("DESTINATION_LOCK_WAIT_SECONDS", "-1", "destination_lock_wait_seconds"),
        ("ACCOUNTS", "Acme,ok", "'Acme'"),
        ("ACCOUNTS", "1st", "[a-z][a-z0-9_]*"),
    ],
)
def test_bad_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(f"SOURCES__CIKLEK__{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert words in str(info.value) and "\n" not in str(info.value)
