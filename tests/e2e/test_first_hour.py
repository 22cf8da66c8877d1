"""The first hour and the daily log (issue 16), through the `ciklek` CLI as a user runs it.

A wrong base URL says how to fix it; the summary says where the data went and what kind of run
it was; progress counts this run; `_ciklek_rejects` exists from the first sync;
`_ciklek_synced_at` moves only for rows a sync loaded; `ciklek query` and `ciklek config` answer
without extra installs or leaking the key; `--log-format json` is JSON on every line; no
message twice.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers import query, run_cli, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

SMALL = ("--orders", 120, "--customers", 30, "--products", 10)
PAGE = "25"  # orders: 5 pages; customers 2; products 1
REPO = Path(__file__).resolve().parents[2]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _env(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    return sync_env(
        sb,
        SOURCES__CIKLEK__PAGE_SIZE=PAGE,
        SOURCES__CIKLEK__PROGRESS_INTERVAL_SECONDS="0",
        **extra,
    )


def _messages(stdout: str) -> list[str]:
    """The summary's lines below the table (table rows repeat their borders legitimately)."""
    return [
        ln for ln in stdout.splitlines() if ln and ln[0] not in "┏┃┡│└━ " and "summary" not in ln
    ]


def _assert_each_once(text: str) -> None:
    counts = Counter(_messages(text))
    assert all(n == 1 for n in counts.values()), [m for m, n in counts.items() if n > 1]


def test_a_base_url_without_v1_exits_2_naming_v1(sandbox_factory: Any, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL)
    env = _env(sb, SOURCES__CIKLEK__BASE_URL=sb.url.removesuffix("/v1"))
    for command in (["check"], ["plan"], ["sync"]):
        run = run_main(*command, env=env)
        assert run.returncode == 2, (command, run.stdout, run.stderr)
        text = run.stdout + run.stderr
        assert "is `base_url` right? it should end in /v1" in text, text
        assert sb.url.removesuffix("/v1") in text
        assert "bug" not in text and "progress is kept" not in text and "Traceback" not in text


def test_an_unreachable_host_is_named_with_a_line_per_retry(clean_env: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    env = {
        **sync_env_like(url),
        "SOURCES__CIKLEK__MAX_ATTEMPTS": "3",
        "SOURCES__CIKLEK__RESOURCES": "orders",
    }
    run = run_main("check", env=env)
    assert run.returncode == 75, run.stdout + run.stderr
    retries = [ln for ln in run.stderr.splitlines() if ln.startswith("retry ")]
    assert len(retries) == 2, run.stderr  # 3 attempts: a line before each of the 2 retries
    assert all(f"{url}/orders" in ln for ln in retries)
    assert f"{url}/orders still failing after 3 attempts" in run.stderr
    assert "progress is kept" not in run.stdout + run.stderr


def sync_env_like(url: str) -> dict[str, str]:
    import os

    return {**os.environ, "SOURCES__CIKLEK__BASE_URL": url, "SOURCES__CIKLEK__API_KEY": "bsk_x"}


def _synced(db: Path, table: str) -> dict[str, dt.datetime]:
    return dict(query(db, f"select id, _ciklek_synced_at from ciklek.{table}"))  # type: ignore[arg-type]


def test_summary_progress_tables_and_query_across_runs(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL)
    env = _env(sb)
    missing_dir = run_main("sync", "--duckdb-file", "data/w.duckdb", env=env, cwd=clean_env)
    assert missing_dir.returncode == 2 and "does not exist" in missing_dir.stderr
    (clean_env / "data").mkdir()
    first = run_main("sync", "--duckdb-file", "data/w.duckdb", env=env, cwd=clean_env)
    assert first.returncode == 0, first.stdout + first.stderr
    db = clean_env / "data" / "w.duckdb"
    assert f"run: sync into duckdb {db}, dataset ciklek" in first.stdout
    _assert_each_once(first.stdout)
    # The empty rejects table exists; every row carries its load time, as TIMESTAMPTZ.
    assert query(db, "select count(*) from ciklek._ciklek_rejects") == [(0,)]
    for table in ("orders", "order_line_items", "customers", "products"):
        kind = query(
            db,
            "select data_type from information_schema.columns where table_schema = 'ciklek' "
            f"and table_name = '{table}' and column_name = '_ciklek_synced_at'",
        )
        assert kind == [("TIMESTAMP WITH TIME ZONE",)], table
        assert query(
            db, f"select count(*) from ciklek.{table} where _ciklek_synced_at is null"
        ) == [(0,)]
    orders_before, items_before = _synced(db, "orders"), _synced(db, "order_line_items")

    changed = sb.control_post("mutate", update=3, create=0, resource="orders")
    changed_ids = {r["id"] if isinstance(r, dict) else r for r in changed.get("updated", [])}
    second = run_main("sync", "--duckdb-file", str(db), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    # Progress of this run: its own pages from 1, and the rows it brings (3 changed orders).
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("progress orders:")]
    assert lines, second.stderr
    match = re.match(r"progress orders: page (\d+)/(\d+), ([\d,]+) rows", lines[-1])
    assert match, lines[-1]
    pages, estimate, rows = (int(g.replace(",", "")) for g in match.groups())
    assert pages == len(lines) and pages <= 2 and estimate <= 2, lines  # not 5 pages of a table
    assert rows == 3
    # `_ciklek_synced_at` moved for the 3 orders (and their items) and nothing else.
    orders_after, items_after = _synced(db, "orders"), _synced(db, "order_line_items")
    moved = {i for i, at in orders_after.items() if at != orders_before.get(i)}
    assert len(moved) == 3 and (not changed_ids or moved == changed_ids)
    assert all(orders_after[i] > orders_before[i] for i in moved)
    moved_orders = {
        o for (o,) in query(db, "select distinct order_id from ciklek.order_line_items")
    } & moved
    still = {i for i, at in items_after.items() if i in items_before and at == items_before[i]}
    item_orders = dict(query(db, "select id, order_id from ciklek.order_line_items"))
    assert all(item_orders[i] not in moved_orders for i in still)

    # `ciklek query` agrees with DuckDB, from another directory too (it finds the last file).
    expected = query(db, "select count(*) from ciklek.orders")[0][0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, extra in ((clean_env, ("--duckdb-file", str(db))), (elsewhere, ())):
        res = run_main(
            "query", "select count(*) as n from orders", "--format", "csv", *extra, env=env, cwd=cwd
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["n", str(expected)]
    as_json = run_main(
        "query",
        "select status, count(*) as n from ciklek.orders group by 1",
        "--format",
        "json",
        env=env,
    )
    assert sum(row["n"] for row in json.loads(as_json.stdout)) == expected

    # The kind of run, and what a full refresh dropped.
    refresh = run_main(
        "sync", "--duckdb-file", str(db), "--resources", "products", "--full-refresh", env=env
    )
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    assert "run: refresh (full refresh) into duckdb" in refresh.stdout
    assert "reload swapped in: products" in refresh.stdout
    window = run_main(
        "sync",
        "--duckdb-file",
        str(db),
        "--since",
        "2020-01-01",
        "--resources",
        "customers",
        env=env,
    )
    assert window.returncode == 0, window.stdout + window.stderr
    assert "run: window" in window.stdout
    kinds = query(db, "select kind from ciklek._ciklek_sync_runs order by started_at")
    assert [k for (k,) in kinds] == ["sync", "sync", "refresh", "window"]


def test_log_format_json_is_json_on_every_line(sandbox_factory: Any, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(
        *SMALL, "--rate429", "0.2", "--window-seconds", "1", "--seed", "3"
    )
    run = run_main("sync", "--log-format", "json", env=_env(sb))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == ""  # the summary is an event too: a cron log holds only JSON
    events = [json.loads(line) for line in run.stderr.splitlines()]  # every line parses
    assert events
    run_ids = {e["run_id"] for e in events}
    assert len(run_ids) == 1 and len(run_ids.pop()) == 32
    assert all(TS.match(e["ts"]) for e in events)
    kinds = Counter(e["event"] for e in events)
    assert kinds["summary"] == 1 and kinds["progress"] >= 8 and kinds["wait"] >= 1, kinds
    summary = events[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 0
    assert summary["duckdb_path"] == str(clean_env / "ciklek_warehouse.duckdb")
    assert summary["rows"] == {"orders": 120, "customers": 30, "products": 10}

    # The cron script takes the same flag: a cron log of JSON lines only.
    cron = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "ciklek_pipeline.py"), "--log-format", "json"],
        env=_env(sb),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert cron.stdout == ""
    lines = [json.loads(line) for line in cron.stderr.splitlines()]
    assert lines[-1]["event"] == "summary" and all(
        {"ts", "run_id", "event"} <= set(e) for e in lines
    )

    missing = run_main(
        "sync", "--log-format", "json", env={**_env(sb), "SOURCES__CIKLEK__API_KEY": ""}
    )
    assert missing.returncode == 2
    (error,) = [json.loads(line) for line in missing.stderr.splitlines()]
    assert error["event"] == "error" and "no API key" in error["message"]


def test_a_spent_quota_is_said_once_with_its_reset(sandbox_factory: Any, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL, "--daily-quota", 2)
    env = _env(sb)
    run = run_main("sync", env=env)
    assert run.returncode == 75, run.stdout + run.stderr
    _assert_each_once(run.stdout)
    # Said once: one message line tells the stop and its reset, and no other line a reset.
    (stop,) = [m for m in _messages(run.stdout) if "resume after" in m]
    # The endpoint named is the one whose request met the 429: the three walks run at once, so
    # under load /customers may send its first request after orders spent the quota.
    said = re.fullmatch(
        r"(stopped early: daily quota exhausted on /(orders|customers|products)); resume after "
        r"\d{4}-\d\d-\d\dT00:00:00Z",
        stop,
    )
    assert said, run.stdout
    assert "server's daily quota for this key is spent, it resets" in run.stdout
    assert "left of the daily budget" not in run.stdout
    status = run_main("status", env=env)
    assert re.search(
        r"server's daily quota for this key: spent, resets \d{4}-\d\d-\d\dT00:00:00Z", status.stdout
    ), status.stdout
    # Once: the last run's reasons name the stop once, and no other line of status does.
    last, reasons = _last_run(status.stdout, "stopped_try_later (exit 75)")
    assert [r for r in reasons if "daily quota exhausted" in r] == [said.group(1)], last
    assert [ln for ln in _status_lines(status.stdout) if "daily quota exhausted" in ln] == [last]


def test_a_refused_key_is_said_once_in_status(sandbox_factory: Any, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL)
    env = _env(sb, SOURCES__CIKLEK__API_KEY="bsk_test_wrong")
    assert run_main("sync", env=env).returncode == 3
    status = run_main("status", env=env)
    # Said once: the last run's reasons are the one refusal, and no other line of status
    # mentions it. (Not a count of "401" in the text: the line's timestamp may hold one.)
    last, reasons = _last_run(status.stdout, "credentials_refused (exit 3)")
    assert len(reasons) == 1 and reasons[0].startswith("the API key was refused (401 "), last
    assert "SOURCES__CIKLEK__API_KEY" in reasons[0]
    assert [ln for ln in _status_lines(status.stdout) if "refused" in ln] == [last]


def _status_lines(status: str) -> list[str]:
    """`status`'s lines but the DuckDB file's path (a test's directory is named after it)."""
    return [ln for ln in status.splitlines() if not ln.startswith("DuckDB file: ")]


LAST_RUN = re.compile(
    r"last run: (?P<outcome>\S+ \(exit \d+\)), kind \w+, ended (?P<ended>\S+), "
    r"[\d,]+ rows, [\d,]+ requests; (?P<reasons>.*)"
)


def _last_run(status: str, outcome: str) -> tuple[str, list[str]]:
    """`status`'s one `last run:` line, checked field by field, and its reasons (`; `-split)."""
    (line,) = [ln for ln in status.splitlines() if ln.startswith("last run: ")]
    match = LAST_RUN.fullmatch(line)
    assert match, line
    assert match["outcome"] == outcome, line
    assert TS.match(match["ended"]), line
    return line, match["reasons"].split("; ")


def test_plan_shows_todays_budget_left_and_its_share(sandbox_factory: Any, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL)
    env = _env(sb, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="100")
    run = run_main("plan", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    # 3 requests of plan itself spent: 97 left; the next sync = a backfill = 5 + 2 + 1 pages.
    assert (
        "today (UTC): 97 requests left of the daily budget; the next sync takes 8 (8% of it)"
        in run.stdout
    ), run.stdout


def test_config_shows_each_source_and_never_the_key(clean_env: Path) -> None:
    key, scoped_key = "bsk_live_SECRETSECRET123", "bsk_live_ACMEACME456"
    dlt_dir = clean_env / ".dlt"
    dlt_dir.mkdir()
    (dlt_dir / "config.toml").write_text("[sources.ciklek]\npage_size = 20\n")
    (dlt_dir / "secrets.toml").write_text(f'[sources.ciklek]\napi_key = "{key}"\n')
    import os

    env = {
        **os.environ,
        "SOURCES__CIKLEK__BASE_URL": "https://example.test/v1",
        "ACME__SOURCES__CIKLEK__API_KEY": scoped_key,
    }
    run = run_main("config", env=env, cwd=clean_env)
    assert run.returncode == 0, run.stderr
    rows = {ln.split()[0]: ln for ln in run.stdout.splitlines()}
    assert rows["api_key"].endswith("<- .dlt/secrets.toml [sources.ciklek.api_key]") or (
        "<- .dlt/secrets.toml" in rows["api_key"]
    ), rows["api_key"]
    assert "page_size" in rows and "20  <- .dlt/config.toml" in rows["page_size"]
    assert "https://example.test/v1  <- environment [SOURCES__CIKLEK__BASE_URL]" in rows["base_url"]
    assert "120  <- default" in rows["requests_per_minute"]
    assert "47500  <- default" in rows["daily_request_budget"]
    scoped = run_main("config", "--pipeline", "acme", env=env, cwd=clean_env)
    assert "environment (pipeline-scoped: acme) [ACME__SOURCES__CIKLEK__API_KEY]" in scoped.stdout
    for text in (run.stdout + run.stderr, scoped.stdout + scoped.stderr):
        assert key not in text and scoped_key not in text
        assert "SECRET" not in text and "ACMEACME" not in text


def test_the_demo_has_realistic_amounts_and_says_what_it_shows(clean_env: Path) -> None:
    run = run_cli("demo", "--orders", "150", "--file", "demo.duckdb", cwd=clean_env)  # a journey
    assert run.returncode == 0, run.stdout + run.stderr
    assert "what this demonstrated:" in run.stdout and "--extreme-values" in run.stdout
    low, high = query(
        clean_env / "demo.duckdb", "select min(total), max(total) from ciklek.orders"
    )[0]
    assert low > 0 and high < 100_000  # no 2**53-cent orders, no credits: a shop's revenue
    # The test suite's sandbox (SandboxProcess) has them: exact money is still tested.
    from connector.sandbox.data import generate

    dataset, _ = generate(42, 500, 10, 10, extreme=True)
    totals = [record["total"] for _, _, record in dataset.records["orders"]]
    assert max(totals) > 2**53 and min(totals) < 0
