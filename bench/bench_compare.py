"""The connector against the peer users would pick instead, on the same sandbox.

The peer is dlt's generic ``rest_api`` source configured for the same API
(``bench/peer_rest_api.py``). Both run as the user runs them, in a subprocess each, with a fresh
state directory / pipelines dir / DuckDB file per run; the connector through the real
``ciklek sync`` CLI. Requests and 429s are what the sandbox saw (``/_sandbox/stats``), not what
either tool says about itself.

Sections (numbered as in the issue):

1. Throughput on unthrottled data: wall time, rows/s (orders + line items + customers + products
   rows in DuckDB afterwards), peak RSS of the child (``os.wait4``), connector/peer ratio.
2. Rate-limit use under a scaled window (20 requests per 5 s): requests per full window vs the
   allowance, 429s, time from first to last request vs the window-bound ideal.
3. Quota efficiency: requests for a full sync and for a no-change incremental sync vs the
   minimum, ceil(rows / page_size) per resource.
4. Resume cost: SIGKILL mid-sync (the sandbox adds latency so the run is slow), rerun, count the
   requests spent beyond a clean run.

Run: ``python bench/bench_compare.py [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.sandbox_proc import SandboxProcess  # noqa: E402

PAGE_SIZE = 100
TOOLS = ("connector", "peer")
LABELS = {"connector": "connector (`ciklek sync`)", "peer": "peer (dlt `rest_api`)"}
# Tables each tool loads; the peer nests line items as dlt does by default.
TABLES = {
    "connector": ("orders", "order_line_items", "customers", "products"),
    "peer": ("orders", "orders__line_items", "customers", "products"),
}
RESOURCES = ("orders", "customers", "products")
# Section 1 also runs the connector without its write-ahead request ledger (patched in that
# process only): reservations neither fsynced nor taken ahead (a write every 25 requests, as
# before the ledger was written ahead) and no `_ciklek_request_ledger` row (no allowance load
# before the first request, no row in each chunk's load). Its cost, as a ratio in the same run.
NO_WAL = "connector-no-write-ahead"
TABLES[NO_WAL] = TABLES["connector"]
_NO_WAL_MAIN = """
import sys
import connector.api.ledger as ledger
import connector.runs.compose as compose
import connector.runs.sync as sync
ledger.QuotaLedger.__init__.__kwdefaults__.update(durable=False, block=25)
def without_request_ledger(*args, **kwargs):
    kwargs["run_id"] = None
    return compose.compose_sync(*args, **kwargs)
sync.compose_sync = without_request_ledger
from connector.cli import console
sys.exit(console())
"""

THROUGHPUT_DATA = {"orders": 20_000, "customers": 2_000, "products": 500}
RATE_DATA = {"orders": 5_000, "customers": 800, "products": 200}  # 60 pages
RATE_WINDOW_SECONDS = 5.0
RATE_WINDOW_LIMIT = 20
RESUME_LATENCY_MS = 30.0
RUN_TIMEOUT = 600.0

TARGET_SPEEDUP = 3.0
TARGET_RATE_SHARE = 0.95


# ---- running one tool ----------------------------------------------------------------------


@dataclass
class Run:
    tool: str
    exit_code: int
    wall: float
    max_rss_mb: float
    ok: int  # 2xx responses the sandbox sent
    r429: int
    requests: int  # every status, as the sandbox counted them
    rows: dict[str, int] = field(default_factory=dict)
    killed: bool = False
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass
class Workspace:
    """Everything one tool's successive runs share (state, DuckDB file): fresh per scenario."""

    tool: str
    root: Path

    @property
    def duckdb_file(self) -> Path:
        return self.root / "warehouse.duckdb"


def _connector_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ciklek"
    if script.exists():
        return [str(script), "sync"]
    return [sys.executable, "-c", "import sys; from connector.cli import main; sys.exit(main())"]


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SOURCES__", "DESTINATION__", "CIKLEK_", "RUNTIME__"))
    }
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _command(ws: Workspace, sb: SandboxProcess, extra_env: dict[str, str]) -> tuple[list, dict]:
    env = _clean_env()
    if ws.tool in ("connector", NO_WAL):
        env.update(
            SOURCES__CIKLEK__BASE_URL=sb.url,
            SOURCES__CIKLEK__API_KEY=sb.key,
            SOURCES__CIKLEK__PAGE_SIZE=str(PAGE_SIZE),
            CIKLEK_HOME=str(ws.root / "home"),
            DESTINATION__DUCKDB__CREDENTIALS=str(ws.duckdb_file),
        )
        cmd = _connector_cmd()
        if ws.tool == NO_WAL:
            cmd = [sys.executable, "-c", _NO_WAL_MAIN, "sync"]
    else:
        cmd = [
            sys.executable,
            str(BENCH_DIR / "peer_rest_api.py"),
            "--base-url",
            sb.url,
            "--api-key",
            sb.key,
            "--pipelines-dir",
            str(ws.root / "pipelines"),
            "--duckdb",
            str(ws.duckdb_file),
        ]
    env.update(extra_env)
    return cmd, env


def _counts(stats: dict[str, Any]) -> tuple[int, int, int]:
    by_status: dict[str, int] = stats.get("by_status", {})
    ok = sum(n for s, n in by_status.items() if s.startswith("2"))
    return ok, by_status.get("429", 0), sum(by_status.values())


def table_rows(ws: Workspace) -> dict[str, int]:
    if not ws.duckdb_file.exists():
        return {}
    con = duckdb.connect(str(ws.duckdb_file), read_only=True)
    try:
        rows = {}
        for table in TABLES[ws.tool]:
            try:
                rows[table] = int(con.execute(f"select count(*) from ciklek.{table}").fetchone()[0])
            except duckdb.Error:
                rows[table] = 0
        return rows
    finally:
        con.close()


def run_tool(
    ws: Workspace,
    sb: SandboxProcess,
    *,
    extra_env: dict[str, str] | None = None,
    kill_at_ok: int | None = None,
    sample: bool = False,
) -> Run:
    """One run as a subprocess; requests counted by the sandbox (stats reset first)."""
    ws.root.mkdir(parents=True, exist_ok=True)
    sb.control_post("reset_stats")
    cmd, env = _command(ws, sb, extra_env or {})
    out_path, err_path = ws.root / "stdout.txt", ws.root / "stderr.txt"
    samples: list[tuple[float, int, int]] = []
    killed = False
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(ws.root), stdout=out, stderr=err, start_new_session=True
        )
        done = threading.Event()
        poller = None
        if sample or kill_at_ok is not None:

            def poll() -> None:
                nonlocal killed
                with httpx.Client(timeout=5) as http:
                    while not done.is_set():
                        stats = http.get(f"{sb.control}/stats", headers=sb.control_headers())
                        ok, r429, _ = _counts(stats.json())
                        samples.append((time.time(), ok, r429))
                        if kill_at_ok is not None and ok >= kill_at_ok and not killed:
                            os.killpg(proc.pid, signal.SIGKILL)
                            killed = True
                        done.wait(0.02 if kill_at_ok is not None else 0.05)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
        timer = threading.Timer(RUN_TIMEOUT, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        if poller is not None:
            poller.join()
    ok, r429, total = _counts(sb.stats())
    return Run(
        tool=ws.tool,
        exit_code=proc.returncode,
        wall=wall,
        max_rss_mb=usage.ru_maxrss / 1024,
        ok=ok,
        r429=r429,
        requests=total,
        rows=table_rows(ws),
        killed=killed,
        samples=samples,
        stderr_tail=err_path.read_text()[-2000:],
    )


def _check(run: Run, expect_rows: int | None = None) -> None:
    if run.exit_code != 0 and not run.killed:
        raise RuntimeError(f"{run.tool} exited {run.exit_code}:\n{run.stderr_tail}")
    if expect_rows is not None and run.rows.get("orders") != expect_rows:
        raise RuntimeError(f"{run.tool} loaded {run.rows} rather than {expect_rows} orders")


def minimum_requests(data: dict[str, int]) -> int:
    return sum(math.ceil(data[r] / PAGE_SIZE) for r in RESOURCES)


def data_flags(data: dict[str, int]) -> list[str]:
    return [str(x) for r in RESOURCES for x in (f"--{r}", data[r])]


# ---- sections ------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def throughput_and_quota(repeats: int, scratch: Path) -> dict[str, Any]:
    """Sections 1 and 3 (full syncs are section 1's runs; then one no-change sync each)."""
    flags = [*data_flags(THROUGHPUT_DATA), "--window-limit", "100000000"]
    flags += ["--daily-quota", "1000000000"]
    runs: dict[str, list[Run]] = {t: [] for t in (*TOOLS, NO_WAL)}
    incremental: dict[str, list[Run]] = {t: [] for t in TOOLS}
    with SandboxProcess(*flags) as sb:
        for n in range(repeats):
            for tool in (*TOOLS, NO_WAL):  # interleaved: drift on the machine hits all alike
                ws = Workspace(tool, scratch / f"s1-{tool}-{n}")
                full = run_tool(ws, sb)
                _check(full, THROUGHPUT_DATA["orders"])
                runs[tool].append(full)
                if tool in TOOLS:
                    again = run_tool(ws, sb)
                    _check(again)
                    incremental[tool].append(again)
                shutil.rmtree(ws.root, ignore_errors=True)
    result: dict[str, Any] = {"data": THROUGHPUT_DATA, "repeats": repeats, "tools": {}}
    for tool in TOOLS:
        rs = runs[tool]
        result["tools"][tool] = {
            "wall_s": _median([r.wall for r in rs]),
            "rows": rs[0].total_rows,
            "rows_by_table": rs[0].rows,
            "rows_per_s": _median([r.total_rows / r.wall for r in rs]),
            "peak_rss_mb": _median([r.max_rss_mb for r in rs]),
            "all_wall_s": [round(r.wall, 2) for r in rs],
            "full_requests": _median([r.requests for r in rs]),
            "full_429": max(r.r429 for r in rs),
            "incremental_requests": _median([r.requests for r in incremental[tool]]),
            "incremental_wall_s": _median([r.wall for r in incremental[tool]]),
        }
    plain = runs[NO_WAL]
    result["no_write_ahead"] = {
        "rows_per_s": _median([r.total_rows / r.wall for r in plain]),
        "all_wall_s": [round(r.wall, 2) for r in plain],
    }
    c, p = result["tools"]["connector"], result["tools"]["peer"]
    # rows/s with the write-ahead ledger over rows/s without it (1.0: free)
    result["ledger_cost_ratio"] = c["rows_per_s"] / result["no_write_ahead"]["rows_per_s"]
    result["speedup_rows_per_s"] = c["rows_per_s"] / p["rows_per_s"]
    result["memory_ratio"] = c["peak_rss_mb"] / p["peak_rss_mb"]
    result["minimum_full"] = minimum_requests(THROUGHPUT_DATA)
    result["minimum_incremental"] = 0
    result["allowance"] = len(RESOURCES)  # "minimum plus at most one per resource"
    return result


def _window_analysis(run: Run, offset: float) -> dict[str, Any]:
    """Per sandbox window (epoch-aligned on the sandbox clock): 2xx requests admitted."""
    w = RATE_WINDOW_SECONDS
    samples = [(t + offset, ok, r429) for t, ok, r429 in run.samples]
    active = [s for s in samples if s[1] > 0]
    if not active:
        return {}
    # First sample where each count was reached: bounds on when requests happened.
    first_t = active[0][0]
    last_t = next(t for t, ok, _ in samples if ok >= run.ok)
    per_window: dict[int, int] = {}
    prev_ok = 0
    for t, ok, _ in samples:
        if ok > prev_ok:
            per_window[int(t // w)] = per_window.get(int(t // w), 0) + ok - prev_ok
            prev_ok = ok
    indices = sorted(per_window)
    full = [per_window.get(i, 0) for i in range(indices[0] + 1, indices[-1])]
    windows_needed = math.ceil(run.ok / RATE_WINDOW_LIMIT)
    first_window = int(first_t // w)
    ideal_last = first_t if windows_needed <= 1 else (first_window + windows_needed - 1) * w
    return {
        "per_window": [per_window.get(i, 0) for i in range(indices[0], indices[-1] + 1)],
        "full_windows": full,
        "share_of_allowance": (statistics.mean(full) / RATE_WINDOW_LIMIT) if full else None,
        "span_s": last_t - first_t,
        "ideal_span_s": ideal_last - first_t,
        "extra_s": (last_t - first_t) - (ideal_last - first_t),
    }


def _wait_for_next_window(offset: float) -> None:
    now = time.time() + offset
    time.sleep(RATE_WINDOW_SECONDS - (now % RATE_WINDOW_SECONDS) + 0.05)


def rate_limit(repeats: int, scratch: Path) -> dict[str, Any]:
    """Section 2: the same 60 pages under 20 requests per 5 s."""
    flags = [*data_flags(RATE_DATA), "--window-seconds", str(RATE_WINDOW_SECONDS)]
    flags += ["--window-limit", str(RATE_WINDOW_LIMIT), "--daily-quota", "1000000000"]
    runs: dict[str, list[tuple[Run, dict[str, Any]]]] = {t: [] for t in TOOLS}
    with SandboxProcess(*flags) as sb:
        before = time.time()
        now = dt.datetime.fromisoformat(sb.stats()["now"].replace("Z", "+00:00")).timestamp()
        offset = now - (before + time.time()) / 2
        for n in range(repeats):
            for tool in TOOLS:
                _wait_for_next_window(offset)  # the previous run's window must not count
                ws = Workspace(tool, scratch / f"s2-{tool}-{n}")
                run = run_tool(ws, sb, sample=True)
                _check(run, RATE_DATA["orders"])
                runs[tool].append((run, _window_analysis(run, offset)))
                shutil.rmtree(ws.root, ignore_errors=True)
    result: dict[str, Any] = {
        "data": RATE_DATA,
        "window": f"{RATE_WINDOW_LIMIT} requests / {RATE_WINDOW_SECONDS:g} s",
        "repeats": repeats,
        "minimum_requests": minimum_requests(RATE_DATA),
        "tools": {},
    }
    for tool in TOOLS:
        pairs = runs[tool]
        shares = [a["share_of_allowance"] for _, a in pairs if a.get("share_of_allowance")]
        result["tools"][tool] = {
            "wall_s": _median([r.wall for r, _ in pairs]),
            "ok_requests": _median([r.ok for r, _ in pairs]),
            "r429": _median([r.r429 for r, _ in pairs]),
            "share_of_allowance": _median(shares) if shares else None,
            "span_s": _median([a["span_s"] for _, a in pairs]),
            "ideal_span_s": _median([a["ideal_span_s"] for _, a in pairs]),
            "extra_s": _median([a["extra_s"] for _, a in pairs]),
            "per_window": [a["per_window"] for _, a in pairs],
        }
    return result


def resume(scratch: Path, clean_requests: dict[str, float]) -> dict[str, Any]:
    """Section 4: SIGKILL after about half the pages, rerun, requests beyond a clean run."""
    flags = [*data_flags(THROUGHPUT_DATA), "--window-limit", "100000000"]
    flags += ["--daily-quota", "1000000000", "--latency-ms", str(RESUME_LATENCY_MS)]
    minimum = minimum_requests(THROUGHPUT_DATA)
    kill_at = minimum // 2
    result: dict[str, Any] = {
        "latency_ms": RESUME_LATENCY_MS,
        "kill_after_requests": kill_at,
        "chunk_pages": 100,
        "tools": {},
    }
    with SandboxProcess(*flags) as sb:
        for tool in TOOLS:
            ws = Workspace(tool, scratch / f"s4-{tool}")
            first = run_tool(ws, sb, kill_at_ok=kill_at)
            if not first.killed:
                raise RuntimeError(f"{tool} finished before it could be killed: {first}")
            second = run_tool(ws, sb)
            _check(second, THROUGHPUT_DATA["orders"])
            clean = clean_requests.get(tool, minimum)
            result["tools"][tool] = {
                "killed_run_requests": first.requests,
                "rerun_requests": second.requests,
                "clean_requests": clean,
                "respent": first.requests + second.requests - clean,
                "rerun_wall_s": second.wall,
                "rows_after": second.rows,
            }
            shutil.rmtree(ws.root, ignore_errors=True)
    return result


def run_all(repeats: int = 3, *, scratch: Path | None = None) -> dict[str, Any]:
    own = scratch is None
    root = scratch or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        s13 = throughput_and_quota(repeats, root)
        s2 = rate_limit(repeats, root)
        clean = {t: s13["tools"][t]["full_requests"] for t in TOOLS}
        s4 = resume(root, clean)
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return {"throughput_quota": s13, "rate_limit": s2, "resume": s4}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = run_all(args.repeats)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
