"""`connector.config.statedir` and the run files: private modes, safe names, no symlink followed."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from connector.cli.demo import check_replaceable, child_env
from connector.config.statedir import check_pipeline_name, open_private, private_dir, replace_file
from connector.errors import ConfigError
from connector.runs.lock import lock_is_held, run_lock
from connector.runs.status_file import read_status, write_status


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


@pytest.mark.parametrize("name", ["ciklek", "acme_2", "a.b-c", "..x", "x..", "A"])
def test_safe_pipeline_names_pass(name: str) -> None:
    assert check_pipeline_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "x\0y", "spa ce", "é", "a\nb"]
)
def test_path_like_pipeline_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        check_pipeline_name(name)


def test_run_files_refuse_a_bad_name_before_touching_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    home = root / "home"
    with pytest.raises(ConfigError), run_lock(home, "../escape"):
        pass
    with pytest.raises(ConfigError):
        write_status(home, "a/b", {})
    with pytest.raises(ConfigError):
        read_status(home, "..")
    assert list(root.iterdir()) == []


def test_run_lock_and_status_are_private(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    with run_lock(home, "p"):
        assert lock_is_held(home, "p")
        write_status(home, "p", {"ok": 1})
    assert read_status(home, "p") == {"ok": 1}
    for directory in (home, home / "runs", home / "runs" / "p"):
        assert mode(directory) == 0o700
    assert mode(home / "runs" / "p" / "lock") == 0o600
    assert mode(home / "runs" / "p" / "status.json") == 0o600
    assert sorted(p.name for p in (home / "runs" / "p").iterdir()) == ["lock", "status.json"]


def test_status_write_replaces_a_planted_symlink_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    home = tmp_path / "home"
    run_dir = home / "runs" / "p"
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "status.json").symlink_to(victim)
    assert read_status(home, "p") is None  # not read through the link either
    write_status(home, "p", {"ok": 2})
    assert victim.read_text() == "precious"
    assert read_status(home, "p") == {"ok": 2}


def test_a_symlinked_lock_file_is_a_config_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "runs" / "p").mkdir(parents=True)
    (home / "runs" / "p" / "lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symbolic link"), run_lock(home, "p"):
        pass
    assert not (tmp_path / "elsewhere").exists()


def test_open_private_narrows_an_old_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "old"
    path.write_text("x")
    path.chmod(0o644)
    os.close(open_private(path))
    assert mode(path) == 0o600


def test_replace_file_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    replace_file(path, "one")
    replace_file(path, "two")
    assert path.read_text() == "two" and mode(path) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_private_dir_leaves_a_foreign_existing_dir_mode_alone(tmp_path: Path) -> None:
    mine = tmp_path / "user-dir"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    mine.chmod(0o755)
    private_dir(mine)  # not ours to tighten: the user pointed us at it
    assert mode(mine) == 0o755
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o755)
    private_dir(empty)
    assert mode(empty) == 0o700


def test_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        private_dir(tmp_path / "home")


# --- the demo's guards ---------------------------------------------------------------------------


def test_demo_replaces_only_duckdb_files_or_empty_ones(tmp_path: Path) -> None:
    db = tmp_path / "real.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t (a int)")
    check_replaceable(db)
    check_replaceable(tmp_path / "missing.duckdb")
    (tmp_path / "empty.duckdb").write_bytes(b"")
    check_replaceable(tmp_path / "empty.duckdb")
    (tmp_path / "notes.txt").write_text("my notes, longer than the DuckDB header\n")
    (tmp_path / "short.txt").write_text("hi")
    (tmp_path / "link.duckdb").symlink_to(db)
    (tmp_path / "dir.duckdb").mkdir()
    for name in ("notes.txt", "short.txt", "link.duckdb", "dir.duckdb"):
        with pytest.raises(ConfigError):
            check_replaceable(tmp_path / name)


def test_demo_child_env_is_an_allow_list() -> None:
    parent = {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C",
        "SOURCES__CIKLEK__API_KEY": "bsk_live_x",
        "DESTINATION__POSTGRES__CREDENTIALS": "postgresql://u:p@h/d",
        "CIKLEK_TEST_PG_DSN": "postgresql://u:p@h/d",
        "DATABASE_URL": "postgresql://u:p@h/d",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    assert child_env(parent) == {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C"}
