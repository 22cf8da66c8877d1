"""Every command in the docs runs as written; every other block is what its language says.

README.md and each docs/*.md page: the commands of the page's fenced `sh` blocks run in one bash
session per page (variables carry from one command to the next, as in a reader's terminal), each
checked on its own (a marker after each names the one that failed), in a fresh directory and
CIKLEK_HOME, with the virtualenv's `ciklek` first on PATH and a `.venv` link to that virtualenv
in the directory (so `.venv/bin/ciklek`, as the README writes it for a checkout, runs too).

The API behind the commands is a real sandbox:

- a page that starts its own (`ciklek sandbox ...`: the sandbox page) uses that one, as a reader
  would, and the test sets nothing;
- every other page gets a small sandbox started by the test, which also accepts the placeholder
  key the docs write for a real account (`bsk_live_...`), and `SOURCES__CIKLEK__BASE_URL` in the
  session's environment points at it (the step a reader with an account never takes); the
  session's environment holds the key too, unless the page exports one itself.

SUBSTITUTIONS lists every change made to a command's text, each with its reason. NOT_RUN lists
the commands that are checked instead of run, each with its reason. After a page's session, its
entry in CHECKS looks at what the commands left behind (rows, run rows, files), so a command
that exits 0 without doing what the page says still fails.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pytest

from tests.helpers import DEFAULT_DB, pg_dsn
from tests.markdown import ROOT, Block, blocks, commands, pages
from tests.sandbox_proc import SandboxProcess

# The placeholder the docs write for a real account's key: the test's sandbox accepts it.
PLACEHOLDER_KEY = "bsk_live_..."
ALL_SCOPES = "orders:read,orders:write,customers:read,products:read"
SANDBOX_ORDERS = 300
SANDBOX_FLAGS = ("--orders", SANDBOX_ORDERS, "--customers", 120, "--products", 50)
PG_PLACEHOLDER = "postgresql://user:pass@host:5432/db"
PAGE_TIMEOUT = 120.0

# Every change the test makes to a command's text: the literal in the docs -> the value it stands
# for in this run (resolved only for pages whose commands contain the literal).
SUBSTITUTIONS: dict[str, str] = {
    # The sandbox page starts its sandbox on port 8765: a free port instead, so parallel test
    # runs (and a sandbox the developer left running) never collide.
    "8765": "free_port",
    # The placeholder DSN of "Moving to a warehouse": a database of its own on `make test`'s
    # private PostgreSQL cluster (tests.helpers.pg_dsn()), created for this page and dropped.
    PG_PLACEHOLDER: "pg_dsn",
}

# Commands checked instead of run: how a command begins -> why it is not run here.
NOT_RUN: dict[str, str] = {
    "make ": (
        "`make test` is what runs this test, `make demo` installs into the checkout's .venv "
        "and writes its DuckDB file there, `make lint` and `make bench` take minutes: the "
        "target must exist in the Makefile"
    ),
    "pip install ": (
        "installing would change the environment under test (`make install` ran `pip install "
        '-e ".[dev]"`): the package must be this checkout and each extra must exist in '
        "pyproject.toml"
    ),
}

LANGUAGES = {"sh", "toml", "json", "yaml", "cron", "python", "sql"}


def not_run_reason(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def page_commands(page: Path) -> list[str]:
    return [c for b in blocks(page, "sh") for c in commands(b)]


def runnable(page: Path) -> list[str]:
    return [c for c in page_commands(page) if not_run_reason(c) is None]


def all_blocks(lang: str) -> list[Block]:
    return [b for page in pages() for b in blocks(page, lang)]


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A DSN to a new, empty database on the test cluster, dropped afterwards."""
    import psycopg2

    dsn = pg_dsn()
    name = f"ciklek_docs_{uuid.uuid4().hex[:10]}"
    con = psycopg2.connect(dsn)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    finally:
        with con.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.close()


def resolve(names: set[str], stack: contextlib.ExitStack) -> dict[str, str]:
    """The values of the substitutions a page needs."""
    makers: dict[str, Callable[[], str]] = {
        "free_port": _free_port,
        "pg_dsn": lambda: stack.enter_context(fresh_pg_database()),
    }
    return {name: makers[name]() for name in sorted(names)}


def substitute(command: str, values: dict[str, str]) -> str:
    for literal, name in SUBSTITUTIONS.items():
        if literal in command:
            command = command.replace(literal, values[name])
    return command


def run_session(page_commands: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    """Run the commands in one bash session; every one must exit 0 (the marker says which)."""
    script = ["set -uo pipefail"]
    for n, command in enumerate(page_commands):
        script.append(f'{command}\nrc=$?; echo "::step {n} rc=$rc" >&2; [ $rc = 0 ] || exit $rc')
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a sandbox the page starts is in this group: stopped below
    )
    try:
        stdout, stderr = proc.communicate(timeout=PAGE_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    steps = re.findall(r"::step (\d+) rc=(\d+)", stderr)
    failed = [(int(n), rc) for n, rc in steps if rc != "0"]
    where = page_commands[failed[0][0]] if failed else "an unmarked step"
    assert not failed and len(steps) == len(page_commands), (
        f"failed at: {where}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    )
    return stdout, stderr


# ---- what each page's commands leave behind ------------------------------------------------


def _duck(work: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(work / DEFAULT_DB), read_only=True) as con:
        return con.execute(sql).fetchall()


def _run_kinds(work: Path) -> set[object]:
    return {kind for (kind,) in _duck(work, "select kind from ciklek._ciklek_sync_runs")}


def check_readme(work: Path, stdout: str, values: dict[str, str]) -> None:
    assert "key valid; all scopes present" in stdout
    assert _duck(work, "select count(*) from ciklek.orders") == [(SANDBOX_ORDERS,)]


def check_commands(work: Path, stdout: str, values: dict[str, str]) -> None:
    lines = (work / "sync.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert all({"ts", "run_id", "event"} <= set(e) for e in events)
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 0
    assert '"event": "summary"' in stdout  # what `tail -n 1` printed


def check_how_a_sync_works(work: Path, stdout: str, values: dict[str, str]) -> None:
    assert {"sync", "window", "refresh"} <= _run_kinds(work)


def check_sweeps(work: Path, stdout: str, values: dict[str, str]) -> None:
    rows = _duck(work, "select outcome from ciklek._ciklek_sync_runs where kind = 'sweep'")
    assert rows == [("completed",)]


def check_tables(work: Path, stdout: str, values: dict[str, str]) -> None:
    import psycopg2

    # Every ```sql statement of the docs runs on the DuckDB file the page's sync wrote.
    for block in all_blocks("sql"):
        text = re.sub(r"--[^\n]*", "", block.text)
        for statement in filter(None, (s.strip() for s in text.split(";"))):
            try:
                _duck(work, statement)
            except duckdb.Error as exc:
                pytest.fail(f"{block.where}: {statement}\n{exc}")
    with psycopg2.connect(values["pg_dsn"]) as con, con.cursor() as cur:
        cur.execute("select count(*) from ciklek.orders")
        assert cur.fetchall() == [(SANDBOX_ORDERS,)]


def check_sandbox(work: Path, stdout: str, values: dict[str, str]) -> None:
    banner = json.loads((work / "sandbox.json").read_text().splitlines()[0])
    assert banner["url"] == f"http://127.0.0.1:{values['free_port']}/v1"
    assert banner["control_token"]
    # 300 orders + 2 created, one deleted upstream (still in the warehouse: only a sweep marks
    # it); a run row per sync.
    assert _duck(work, "select count(*) from ciklek.orders") == [(302,)]
    assert _duck(work, "select count(*) >= 3 from ciklek._ciklek_sync_runs") == [(True,)]
    assert "run: sync into duckdb" in stdout


CHECKS: dict[str, Callable[[Path, str, dict[str, str]], None]] = {
    "README.md": check_readme,
    "commands.md": check_commands,
    "how-a-sync-works.md": check_how_a_sync_works,
    "sweeps.md": check_sweeps,
    "tables.md": check_tables,
    "sandbox.md": check_sandbox,
}


# ---- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [p for p in pages() if runnable(p)], ids=lambda p: p.name)
def test_the_pages_commands_run_as_written(page: Path, clean_env: Path) -> None:
    cmds = runnable(page)
    text = "\n".join(cmds)
    (clean_env / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with contextlib.ExitStack() as stack:
        if not any(c.startswith("ciklek sandbox") for c in cmds):
            key = f"{PLACEHOLDER_KEY}={ALL_SCOPES}"
            sb = stack.enter_context(SandboxProcess(*map(str, SANDBOX_FLAGS), "--key", key))
            env["SOURCES__CIKLEK__BASE_URL"] = sb.url
            if "export SOURCES__CIKLEK__API_KEY=" not in text:
                env["SOURCES__CIKLEK__API_KEY"] = PLACEHOLDER_KEY
        values = resolve({n for lit, n in SUBSTITUTIONS.items() if lit in text}, stack)
        stdout, _ = run_session([substitute(c, values) for c in cmds], clean_env, env)
        check = CHECKS.get(page.name)
        if check is not None:
            check(clean_env, stdout, values)


def test_every_substitution_and_not_run_entry_is_used() -> None:
    everything = [c for page in pages() for c in page_commands(page)]
    for literal in SUBSTITUTIONS:
        assert any(literal in c for c in everything), f"no command contains {literal!r}"
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in everything), f"no command starts {start!r}"
    assert any(PLACEHOLDER_KEY in c for c in everything)
    assert set(CHECKS) <= {p.name for p in pages() if runnable(p)}


def test_commands_not_run_are_checked_instead() -> None:
    makefile = (ROOT / "Makefile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for page in pages():
        for command in page_commands(page):
            words = command.split("#")[0].split()
            if command.startswith("make "):
                assert len(words) == 2 and re.search(rf"^{words[1]}:", makefile, re.M), command
            elif command.startswith("pip install "):
                assert words[2:4] == ["-e", words[3]] and len(words) == 4, command
                target = words[3].strip("\"'")
                assert target == "." or re.fullmatch(r"\.\[[a-z,]+\]", target), command
                for extra in re.findall(r"[a-z]+", target):
                    assert extra in extras, f"{command}: no extra {extra!r}"


def test_every_fenced_block_names_a_known_language() -> None:
    unknown = [
        f"{b.where}: {b.lang!r}" for p in pages() for b in blocks(p) if b.lang not in LANGUAGES
    ]
    assert unknown == []


def test_toml_blocks_parse() -> None:
    for block in all_blocks("toml"):
        try:
            tomllib.loads(block.text)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{block.where}: {exc}")


def test_json_blocks_parse() -> None:
    for block in all_blocks("json"):
        try:
            json.loads(block.text)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{block.where}: {exc}")


def test_yaml_blocks_parse() -> None:
    yaml = pytest.importorskip("yaml")
    for block in all_blocks("yaml"):
        try:
            yaml.safe_load(block.text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{block.where}: {exc}")


def test_cron_lines_have_five_schedule_fields_and_a_command() -> None:
    field = re.compile(r"^[0-9*/,\-]+$")
    for block in all_blocks("cron"):
        for line in block.text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(None, 5)
            assert len(parts) == 6 and all(field.match(p) for p in parts[:5]), (block.where, line)


def test_python_blocks_compile_and_import_only_what_connector_exports() -> None:
    import connector  # cheap: its exports load lazily, on first use

    for block in all_blocks("python"):
        compile(block.text, block.where, "exec")
        tree = ast.parse(block.text, block.where)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("connector"):
                assert node.module == "connector", f"{block.where}: from {node.module} import"
                missing = {a.name for a in node.names} - set(connector.__all__)
                assert not missing, f"{block.where}: connector does not export {missing}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("connector."), f"{block.where}: {alias.name}"
