"""Progress while a sync runs and the summary after it, checked against what the sandbox saw."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

from connector.api.ledger import QuotaLedger, RequestLog
from connector.runs.progress import ProgressReporter
from connector.traversal.run_report import ResourceOutcome
from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

PAGE = 20
COUNTS = {"orders": 300, "customers": 120, "products": 50}
BUDGET = 50_000 - 2_500  # the documented daily quota minus the default reserve
LINE = re.compile(
    r"^progress (\w+): page (\d+)/(\d+), ([\d,]+) rows, (\d+) req/min, quota left ([\d,]+)"
    r"(?:, ETA (\d+)m(\d+)s)?$"
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's body rows, keyed by resource (cells stripped)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells and cells[0] in COUNTS:
            rows[cells[0]] = cells
    return rows


def test_non_tty_progress_lines_and_summary_match_the_sandbox(
    sandbox_factory, clean_env: Path
) -> None:
    # Spurious 429s (seeded, so the run replays) make the 429 column worth checking;
    # a 1-second window keeps each back-off short.
    sb: SandboxProcess = sandbox_factory(
        "--orders", COUNTS["orders"], "--customers", COUNTS["customers"],
        "--products", COUNTS["products"], "--rate429", "0.08", "--window-seconds", "1",
        "--seed", "7",
    )  # fmt: skip
    sb.control_post("reset_stats")
    env = sync_env(
        sb,
        SOURCES__CIKLEK__PAGE_SIZE=str(PAGE),
        SOURCES__CIKLEK__PROGRESS_INTERVAL_SECONDS="0",
        # One resource after the other: the last line printed is then the last request sent.
        SOURCES__CIKLEK__MAX_CONCURRENCY="1",
    )
    result = run_main("sync", env=env)  # captured: stderr is not a TTY
    assert result.returncode == 0, result.stderr + result.stdout
    stats = sb.stats()
    sent = stats["requests"]
    rate_limited = stats["by_status"].get("429", 0)
    assert rate_limited > 0, "the seeded faults should have produced at least one 429"

    # Progress: one line per page per resource (interval 0), page x/y from meta.total.
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("progress ")]
    assert "\x1b[" not in result.stderr and "━" not in result.stderr  # no bar redraws
    parsed: dict[str, list[re.Match[str]]] = {name: [] for name in COUNTS}
    for line in lines:
        match = LINE.match(line)
        assert match, line
        parsed[match.group(1)].append(match)
    quota_seen = []
    for name, total in COUNTS.items():
        pages = math.ceil(total / PAGE)
        got = parsed[name]
        assert [int(m.group(2)) for m in got] == list(range(1, pages + 1)), name
        assert {int(m.group(3)) for m in got} == {pages}
        assert [_number(m.group(4)) for m in got] == [
            min(total, PAGE * i) for i in range(1, pages + 1)
        ]
        last = got[-1]
        assert (last.group(7), last.group(8)) == ("0", "00")  # ETA 0m00s on the last page
        quota_seen += [_number(m.group(6)) for m in got]
    # Quota left as the ledger counts it: falls with every request, retries included.
    assert quota_seen == sorted(quota_seen, reverse=True)
    assert quota_seen[-1] == BUDGET - sent

    # Summary: per resource the requests and 429s the sandbox served on its endpoint.
    rows = _summary_rows(result.stdout)
    assert set(rows) == set(COUNTS)
    for name, cells in rows.items():
        # resource, rows, line items, rejects, pages, requests, 429s, wait s, watermark, state
        assert _number(cells[1]) == COUNTS[name]
        assert _number(cells[3]) == 0
        assert _number(cells[4]) == math.ceil(COUNTS[name] / PAGE)
        assert _number(cells[5]) == stats["by_path"][f"/v1/{name}"], name
        assert cells[9] == "complete"
    assert sum(_number(c[5]) for c in rows.values()) == sent
    assert sum(_number(c[6]) for c in rows.values()) == rate_limited
    assert f"requests: {sent:,} this run ({rate_limited} answered 429" in result.stdout
    assert f"{BUDGET - sent:,} left of the daily budget" in result.stdout

    # The same facts in the warehouse, one row for the run.
    runs = query(
        clean_env / DEFAULT_DB,
        "select outcome, exit_code, rows, requests, rate_limited, rejects "
        "from ciklek._ciklek_sync_runs",
    )
    assert runs == [("completed", 0, sum(COUNTS.values()), sent, rate_limited, 0)]


def test_tty_progress_renders_a_bar_per_resource(tmp_path: Path) -> None:
    stream = io.StringIO()
    quota = QuotaLedger(tmp_path / "ledger.json", "f" * 16, "ciklek", daily_budget=1000)
    reporter = ProgressReporter(
        ["orders", "customers"],
        page_size=20,
        log=RequestLog(),
        quota=quota,
        tty=True,
        stream=stream,
    )
    reporter.on_page(
        "orders",
        ResourceOutcome(pages=2, records=40, new_records=40, total=100, traversal_pages=2),
    )
    reporter.close()
    text = stream.getvalue()
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()}
    assert set(lines) == {"orders", "customers"}
    assert "40 rows, 0 req/min, quota left 1,000" in lines["orders"]
    assert "waiting" in lines["customers"]
    assert not any(ln.startswith("progress ") for ln in text.splitlines())  # not the log form
