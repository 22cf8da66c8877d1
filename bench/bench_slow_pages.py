"""Slow pages: how much of the rate allowance a sync uses when a page takes longer than the
allowance's spacing (issue 13, "Full speed when pages are slow").

Two settings, each with windows aligned to the clock (the sandbox's windows start at multiples
of their length since the epoch): 0.5 s pages under 4 requests/s (20 per 5 s) and 1 s pages under
2 requests/s (10 per 5 s, the real ratio: 120/min and ~1 s for a page of 100 orders with line
items). The data keeps section 2's proportions (orders dominate), at 402 pages of 100.

Tools: the connector at `max_concurrency` 1 and 4, and the peer (dlt `rest_api`). Each run has
its own sandbox, so all six run at once (they spend their time waiting on the server's latency,
not on the CPU). Requests, 429s and the per-window counts are what the sandbox saw.

Run: ``python bench/bench_slow_pages.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench_compare as bc  # noqa: E402

from tests.sandbox_proc import SandboxProcess  # noqa: E402

DATA = {"orders": 33_400, "customers": 5_400, "products": 1_400}  # 334 + 54 + 14 = 402 pages
WINDOW_SECONDS = 5.0
SETTINGS = {  # name: (latency ms, requests per window)
    "0.5 s pages, 4/s": (500.0, 20),
    "1 s pages, 2/s": (1000.0, 10),
}
VARIANTS = {  # label: (tool, extra environment)
    "connector, max_concurrency 1": ("connector", {"SOURCES__CIKLEK__MAX_CONCURRENCY": "1"}),
    "connector, max_concurrency 4": ("connector", {"SOURCES__CIKLEK__MAX_CONCURRENCY": "4"}),
    "peer (dlt `rest_api`)": ("peer", {}),
}


def windows(run: bc.Run, offset: float, limit: int, latency_s: float) -> dict[str, Any]:
    """Per clock-aligned window: 2xx requests; used vs the least possible; share of the
    allowance (mean of the full windows, i.e. all but the first and the last, over the limit).

    The sandbox counts a request when its answer is sent, `latency_s` after it admitted it
    into a window: each count is put back into the window it was admitted in."""
    per: dict[int, int] = {}
    prev = 0
    for t, ok, _ in run.samples:
        if ok > prev:
            index = int((t + offset - latency_s) // WINDOW_SECONDS)
            per[index] = per.get(index, 0) + ok - prev
            prev = ok
    if not per:
        return {}
    first, last = min(per), max(per)
    counts = [per.get(i, 0) for i in range(first, last + 1)]
    full = counts[1:-1]
    return {
        "windows_used": len(counts),
        "windows_least": math.ceil(run.ok / limit),
        "share": statistics.mean(full) / limit if full else None,
        "per_window": counts,
    }


def one(setting: str, label: str, scratch: Path, out: dict[str, Any]) -> None:
    latency, limit = SETTINGS[setting]
    tool, env = VARIANTS[label]
    flags = [*bc.data_flags(DATA), "--window-seconds", str(WINDOW_SECONDS)]
    flags += ["--window-limit", str(limit), "--daily-quota", "1000000000"]
    flags += ["--latency-ms", str(latency)]
    with SandboxProcess(*flags) as sb:
        before = time.time()
        now = dt.datetime.fromisoformat(sb.stats()["now"].replace("Z", "+00:00")).timestamp()
        offset = now - (before + time.time()) / 2
        # Start just after a window begins, like section 2.
        time.sleep(WINDOW_SECONDS - ((time.time() + offset) % WINDOW_SECONDS) + 0.05)
        ws = bc.Workspace(tool, scratch / f"{len(out)}-{tool}-{int(latency)}-{label[-1]}")
        run = bc.run_tool(ws, sb, extra_env=env, sample=True)
        bc._check(run, DATA["orders"])
    stdout = ws.root / "stdout.txt"
    out[f"{setting} | {label}"] = {
        "setting": setting,
        "tool": label,
        "wall_s": run.wall,
        "requests": run.requests,
        "ok": run.ok,
        "r429": run.r429,
        "minimum_requests": bc.minimum_requests(DATA),
        "splits": splits(stdout.read_text()) if tool == "connector" else None,
        **windows(run, offset, limit, latency / 1000),
    }


def splits(summary: str) -> int:
    """Splits into `updated_since` ranges, from the summary's `ranges NAME: split N time(s)`."""
    found = re.findall(r"^ranges \S+: split (\d+) time", summary, re.M)
    return sum(int(n) for n in found)


def run_all(scratch: Path | None = None) -> dict[str, Any]:
    bc.RUN_TIMEOUT = 1_200.0  # a sequential 1 s-page sync of 402 pages takes ~7 minutes
    root = scratch or Path(tempfile.mkdtemp(prefix="bench-slow-"))
    results: dict[str, Any] = {}
    errors: list[str] = []

    def job(setting: str, label: str) -> None:
        try:
            one(setting, label, root, results)
        except Exception as exc:  # reported in RESULTS.md rather than losing the other runs
            errors.append(f"{setting} / {label}: {exc}")

    threads = [threading.Thread(target=job, args=(s, v)) for s in SETTINGS for v in VARIANTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "data": DATA,
        "window_seconds": WINDOW_SECONDS,
        "settings": {k: {"latency_ms": v[0], "limit": v[1]} for k, v in SETTINGS.items()},
        "runs": [
            results[f"{s} | {v}"] for s in SETTINGS for v in VARIANTS if f"{s} | {v}" in results
        ],
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = run_all()
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


TARGET_SHARE = 0.95


def markdown(result: dict[str, Any]) -> tuple[str, list[str]]:
    """The "Slow pages" section of RESULTS.md and its target lines."""
    data = result["data"]
    out = [
        "## 6. Slow pages (windows aligned to the clock)",
        "",
        f"{sum(math.ceil(n / 100) for n in data.values())} pages of 100 ({data['orders']:,} "
        f"orders, {data['customers']:,} customers, {data['products']:,} products: section 2's "
        f"proportions) under windows of {result['window_seconds']:g} s that start at multiples "
        "of 5 s since the epoch; one run each. *Windows used* counts every window with a "
        "request (the first and last are partial), *least* is ceil(requests / allowance); "
        "*share* is the mean of the full windows over the allowance (as section 2).",
        "",
        "| setting | tool | 429s | share of allowance | windows used (least) | requests "
        "(minimum) | splits | wall s | per window |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    targets = []
    for run in result["runs"]:
        share = run.get("share")
        split = run.get("splits")
        out.append(
            f"| {run['setting']} | {run['tool']} | {run['r429']} | "
            f"{'-' if share is None else f'{share:.0%}'} | {run.get('windows_used')} "
            f"({run.get('windows_least')}) | {run['requests']} ({run['minimum_requests']}) | "
            f"{'-' if split is None else split} | {run['wall_s']:.1f} | {run.get('per_window')} |"
        )
        if run["tool"].endswith("max_concurrency 4") and share is not None:
            targets.append(_target(run, len(data)))
    out += [
        "",
        "- `max_concurrency` 4: the three resources walk at once, and `orders` (83 % of the "
        "pages) splits itself into `updated_since` ranges whenever a worker is free "
        "(*splits*), so four requests are in flight until the last pages; the shared limiter "
        "keeps every window at its allowance with zero 429s.",
        "- `max_concurrency` 1 and the peer fetch one page at a time: one page per latency, "
        "about half the allowance when a page takes as long as two requests' spacing.",
        "- Requests above the minimum: one per resource (the open last range asks once more "
        "when the others are done, as a no-change sync would) and at most one per split (a "
        "range's last page is partial).",
    ]
    out += [f"- Failed: {e}" for e in result.get("errors", [])]
    return "\n".join(out), targets


def _target(run: dict[str, Any], resources: int) -> str:
    """The issue's bar: >= 95 % of the allowance in full windows, at most one window more than
    the least, zero 429s, requests <= minimum + one per resource + one per split."""
    share, least, used = run["share"], run.get("windows_least"), run.get("windows_used")
    bound = run["minimum_requests"] + resources + (run.get("splits") or 0)
    met = (
        share >= TARGET_SHARE
        and least is not None
        and used is not None
        and used <= least + 1
        and run["r429"] == 0
        and run["requests"] <= bound
    )
    return (
        f"Slow pages, {run['setting']}: max_concurrency 4 uses {share:.0%} of the allowance "
        f"(target >= {TARGET_SHARE:.0%}), {used} windows (least {least}, target <= "
        f"{(least or 0) + 1}), {run['r429']} 429s (target 0), {run['requests']} requests "
        f"(target <= {bound}: minimum + {resources} + {run.get('splits') or 0} splits) "
        f"{_mark(met)}"
    )


def _mark(met: bool) -> str:
    return "**met**" if met else "**MISSED**"
