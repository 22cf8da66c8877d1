"""scripts/postgres.sh runs a private cluster: random password, private dir, no open superuser.

Runs where `make test` (and so CI) started the cluster and exported CIKLEK_TEST_PG_DSN.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers import pg_dsn
from tests.sandbox_proc import REPO_ROOT

pytestmark = pytest.mark.postgres

SCRIPT = REPO_ROOT / "scripts" / "postgres.sh"


def _script(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=120
    )


def _cluster_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    pointer = cache / "ciklek" / "postgres.dir"
    assert stat.S_IMODE(pointer.stat().st_mode) == 0o600
    return Path(pointer.read_text().strip())


def test_start_is_idempotent_and_the_password_is_random() -> None:
    dsn = pg_dsn()
    again = _script("start")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == dsn  # the same cluster, the same password
    assert _script("dsn").stdout.strip() == dsn
    password = urlsplit(dsn).password or ""
    assert re.fullmatch(r"[0-9a-f]{48}", password), "not a random password"


def test_cluster_dir_is_private_and_not_a_fixed_path() -> None:
    pg_dsn()
    base = _cluster_dir()
    assert re.fullmatch(r"ciklek-pg\.[A-Za-z0-9]{10}", base.name), base
    assert not base.is_symlink()
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert stat.S_IMODE((base / "password").stat().st_mode) == 0o600
    assert (base / "password").read_text().strip() == urlsplit(pg_dsn()).password


def test_tcp_logins_need_the_password_and_the_superuser_cannot_log_in() -> None:
    import psycopg2

    dsn = pg_dsn()
    parts = urlsplit(dsn)
    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute("select current_user")
        assert cur.fetchone() == ("ciklek",)
    con.close()
    wrong = dsn.replace(f":{parts.password}@", ":wrong@")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong)
    superuser = f"postgresql://postgres:{parts.password}@{parts.hostname}:{parts.port}/postgres"
    with pytest.raises(psycopg2.OperationalError, match="rejects connection"):
        psycopg2.connect(superuser)
