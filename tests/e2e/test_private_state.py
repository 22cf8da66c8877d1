"""Local state is private: owner-only modes after a real sync, unsafe state dirs refused, and a
pipeline name that is a path creates nothing anywhere."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_DB, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def everything_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxProcess]:
    """Read-only here (syncs and request counts): one sandbox for the module."""
    with SandboxProcess("--orders", "60", "--customers", "10", "--products", "5") as sandbox:
        yield sandbox


@pytest.fixture
def sb(shared_sandbox: SandboxProcess) -> SandboxProcess:
    shared_sandbox.control_post("reset_stats")
    return shared_sandbox


def test_state_dir_and_our_files_are_owner_only_after_a_sync(
    sb: SandboxProcess, clean_env: Path
) -> None:
    home = Path(os.environ["CIKLEK_HOME"])
    done = run_main("sync", env=sync_env(sb))
    assert done.returncode == 0, done.stderr
    run_dir = home / "runs" / "ciklek"
    for directory in (home, home / "runs", run_dir):
        assert mode(directory) == 0o700, directory
    for name in ("lock", "status.json"):
        assert mode(run_dir / name) == 0o600, name
    for name in ("ledger.json", "ledger.lock"):
        assert mode(home / name) == 0o600, name
    # dlt's working files keep dlt's own modes: the 0700 state dir above keeps them out of reach.
    assert not [p for p in everything_under(home) if p.name.endswith(".tmp")]  # no temp leftovers
    # The DuckDB file is the user's to share: it keeps the umask's mode (README says so).
    umask = os.umask(0)
    os.umask(umask)
    assert mode(clean_env / DEFAULT_DB) == 0o666 & ~umask


def test_an_older_readable_state_dir_is_tightened(sb: SandboxProcess) -> None:
    home = Path(os.environ["CIKLEK_HOME"])
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "ledger.json").write_text("{}")
    os.chmod(home / "ledger.json", 0o644)
    done = run_main("sync", "--resources", "customers", env=sync_env(sb))
    assert done.returncode == 0, done.stderr
    assert mode(home) == 0o700
    assert mode(home / "ledger.json") == 0o600


@pytest.mark.parametrize("command", ["sync", "status", "plan"])
def test_state_dir_writable_by_others_is_refused_before_any_request(
    sb: SandboxProcess, command: str
) -> None:
    home = Path(os.environ["CIKLEK_HOME"])
    home.mkdir()
    os.chmod(home, 0o777)
    done = run_main(command, env=sync_env(sb))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"chmod 700 {home}" in lines[0], done.stderr
    assert sb.stats()["requests"] == 0
    assert list(home.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a dir owned by someone else")
def test_state_dir_owned_by_someone_else_is_refused(sb: SandboxProcess) -> None:
    home = Path(os.environ["CIKLEK_HOME"])
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    done = run_main("sync", env=sync_env(sb))
    assert done.returncode == 2, done.stderr
    assert "belongs to uid 65534" in done.stderr and "chown" in done.stderr
    assert sb.stats()["requests"] == 0


@pytest.mark.parametrize("command", ["sync", "status", "plan"])
def test_a_pipeline_name_that_is_a_path_creates_nothing(
    command: str, tmp_path: Path, clean_env: Path
) -> None:
    before = everything_under(tmp_path)
    env = {
        **os.environ,
        "SOURCES__CIKLEK__API_KEY": "bsk_test_x",
        # nothing listens here: the name must be refused before any request is even tried
        "SOURCES__CIKLEK__BASE_URL": "http://127.0.0.1:9/v1",
    }
    done = run_main(command, "--pipeline", "../x", env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pipeline name '../x' is not allowed" in lines[0], done.stderr
    assert everything_under(tmp_path) == before  # no file or directory appeared anywhere
    assert not Path(os.environ["CIKLEK_HOME"]).exists()
