"""Bad input: one line, exit 2, and not a single request sent. Plus `--version` and `check`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import connector
from tests.helpers import run_cli, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

VALID = "orders, customers, products"


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess("--orders", "40", "--customers", "10", "--products", "5") as sb:
        yield sb


@pytest.fixture
def sb(shared_sandbox: SandboxProcess) -> SandboxProcess:
    shared_sandbox.control_post("reset_stats")
    return shared_sandbox


CASES = [
    # id, extra args, extra env, drop the key?, words the message must contain
    (
        "page-size-zero",
        [],
        {"SOURCES__CIKLEK__PAGE_SIZE": "0"},
        ["page_size", "1 and 100", "got 0"],
    ),
    ("page-size-flag", ["--page-size", "500"], {}, ["page_size", "got 500"]),
    ("page-size-text", [], {"SOURCES__CIKLEK__PAGE_SIZE": "ten"}, ["page_size"]),
    (
        "unknown-resource",
        ["--resources", "orders,invoices"],
        {},
        ["unknown resource", "'invoices'", f"valid resources: {VALID}"],
    ),
    ("since-word", ["--since", "yesterday"], {}, ["--since", "'yesterday'", "ISO 8601"]),
    ("until-garbage", ["--until", "soon"], {}, ["--until", "'soon'"]),
    (
        "until-before-since",
        ["--since", "2026-02-01", "--until", "2026-01-01"],
        {},
        ["--until must be later than --since"],
    ),
    (
        "unknown-destination",
        ["--destination", "nosuchdb"],
        {},
        ["unknown destination", "'nosuchdb'", "postgres", "duckdb"],
    ),
    (
        "filesystem-refused",
        ["--destination", "filesystem"],
        {},
        ["'filesystem'", "cannot merge", "duckdb", "postgres", "bigquery", "snowflake"],
    ),
    (
        "postgres-without-credentials",
        ["--destination", "postgres"],
        {},
        ["'postgres'", "DESTINATION__POSTGRES__CREDENTIALS", ".dlt/secrets.toml"],
    ),
    (
        "missing-key",
        [],
        {"SOURCES__CIKLEK__API_KEY": None},
        ["API key", "SOURCES__CIKLEK__API_KEY"],
    ),
    ("empty-key", [], {"SOURCES__CIKLEK__API_KEY": " "}, ["API key", "SOURCES__CIKLEK__API_KEY"]),
    ("unknown-flag", ["--destinaton", "duckdb"], {}, ["unrecognized arguments", "--destinaton"]),
]


@pytest.mark.parametrize(
    ("args", "env_extra", "words"),
    [pytest.param(a, e, w, id=i) for i, a, e, w in CASES],
)
def test_bad_input_exits_2_with_one_line_and_sends_nothing(
    sb: SandboxProcess,
    clean_env: Path,
    args: list[str],
    env_extra: dict[str, str | None],
    words: list[str],
) -> None:
    env = sync_env(sb)
    for name, value in env_extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = run_main("sync", *args, env=env)
    assert result.returncode == 2, result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ciklek: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.stderr + result.stdout
    assert sb.stats()["requests"] == 0
    assert not (clean_env / "ciklek_warehouse.duckdb").exists()


def test_duckdb_file_named_like_the_dataset_is_refused(sb: SandboxProcess, clean_env: Path) -> None:
    target = clean_env / "wh" / "ciklek.duckdb"
    target.parent.mkdir()
    env = sync_env(sb, DESTINATION__DUCKDB__CREDENTIALS=str(target))
    result = run_main("sync", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "'ciklek.duckdb'" in lines[0] and "dataset 'ciklek'" in lines[0]
    assert "ambiguous" in lines[0] and "--dataset" in lines[0]
    assert sb.stats()["requests"] == 0
    assert not target.exists()
    # The same file with another dataset name is fine.
    ok = run_main("sync", "--dataset", "shop", env=env)
    assert ok.returncode == 0, ok.stderr
    assert target.exists()


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")  # the console script itself
    assert result.returncode == 0
    assert result.stdout.strip() == f"ciklek {connector.__version__}"


def test_check_lists_scopes_and_fails_only_for_named_resources(sandbox_factory) -> None:
    limited: SandboxProcess = sandbox_factory(
        "--orders", "10", "--customers", "5", "--products", "5", "--key", "bsk_test_k=orders:read"
    )
    env = sync_env(limited, key="bsk_test_k")

    result = run_main("check", env=env)
    assert result.returncode == 0, result.stderr
    rows = {ln.split()[0]: ln.split()[1] for ln in result.stdout.splitlines()[:3]}
    assert rows == {"orders": "ok", "customers": "missing", "products": "missing"}
    assert "customers:read" in result.stdout and "products:read" in result.stdout
    assert "no access to customers, products" in result.stdout
    assert limited.stats()["requests"] == 3  # one request per resource
    assert "bsk_test_k" not in result.stdout + result.stderr

    named = run_main("check", "--resources", "customers", env=env)
    assert named.returncode == 3, named.stderr
    assert "customers" in named.stderr and "scope" in named.stderr

    refused = run_main("check", env=sync_env(limited, key="bsk_test_wrong"))
    assert refused.returncode == 3
    assert "401" in refused.stderr
