"""What a sync costs beside its pages (issue 20): the shortcuts measured against themselves.

A sync's own work beside fetching pages is mostly dlt's: resolving configuration, one load per
chunk, the run row's load, opening the DuckDB file for each. Four shortcuts cut it: destinations
keep their `capabilities()` and `configuration()` answers for the run
(connector/warehouse/destinations.py `for_one_run`; dlt asks for capabilities ~190 times a sync
and every job client resolved the configuration again, each a full resolution), the checks
before the first request resolve the destination's credentials once per run instead of five
times (connector/warehouse/checks.py `destination_credentials`), and a run
that loaded nothing else writes its run row and its closed ledger row by two INSERTs
(connector/runs/sync.py `_run_rows_alone`; on a fresh warehouse too, since the first allowance's
load creates `_ciklek_sync_runs` empty), and the run holds its DuckDB file open from its first
check to its end, so no load or write reopens it (connector/warehouse/held_open.py). Here a
no-change sync and a fresh sync of a small dataset run alternately with the shortcuts and
without them (patched off in this process only), against one sandbox with no latency and no
rate limit, so the time is the connector's and dlt's.
Reported: medians and the ratio with/without, from this one run.

Run: ``python bench/bench_sync_overhead.py [--repeats N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import connector.runs.sync as sync  # noqa: E402
import connector.warehouse.checks as checks  # noqa: E402
import connector.warehouse.destinations as destinations  # noqa: E402
from connector.runs.options import SyncOptions  # noqa: E402
from tests.sandbox_proc import SandboxProcess  # noqa: E402

DATA = ("--orders", "200", "--customers", "20", "--products", "20")  # 2 + 1 + 1 pages of 100
WITH, WITHOUT = "with the shortcuts", "without them"


def _resolved_each_time(pipeline: Any) -> object:
    return pipeline.destination_client().config.credentials


@contextmanager
def _not_held(pipeline: Any) -> Iterator[None]:
    yield


@contextmanager
def shortcuts(on: bool) -> Iterator[None]:
    """The shortcuts as shipped, or all patched off (the code paths they replace)."""
    kept = (
        destinations.for_one_run,
        sync._run_rows_alone,
        checks.destination_credentials,
        sync.held_open,
        sync.checkpoint,
    )
    if not on:
        destinations.for_one_run = lambda destination: destination  # type: ignore[assignment]
        sync._run_rows_alone = lambda pipeline, setup: False  # type: ignore[assignment]
        checks.destination_credentials = _resolved_each_time  # type: ignore[assignment]
        sync.held_open = _not_held  # type: ignore[assignment]
        sync.checkpoint = lambda pipeline: None  # type: ignore[assignment]
    try:
        yield
    finally:
        (
            destinations.for_one_run,
            sync._run_rows_alone,
            checks.destination_credentials,
            sync.held_open,
            sync.checkpoint,
        ) = kept


def _sync(workdir: Path, name: str) -> float:
    started = time.perf_counter()
    result = sync.run_sync(
        SyncOptions(pipeline=name, duckdb_file=str(workdir / f"{name}.duckdb"), progress=False)
    )
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise RuntimeError(f"sync {name} exited {result.exit_code}: {result.messages}")
    return elapsed


def _measure(
    workdir: Path, sb: SandboxProcess, repeats: int, times: dict[str, dict[str, list[float]]]
) -> None:
    os.environ.update(
        SOURCES__CIKLEK__BASE_URL=sb.url,
        SOURCES__CIKLEK__API_KEY=sb.key,
        SOURCES__CIKLEK__REQUESTS_PER_MINUTE="1000000",
        RUNTIME__DLTHUB_TELEMETRY="false",
        CIKLEK_HOME=str(workdir / "home"),
    )
    os.chdir(workdir)
    _sync(workdir, "warm_up")  # imports and first-use caches out of the measurement
    for i in range(repeats):  # alternating which goes first
        order = ((WITH, True), (WITHOUT, False)) if i % 2 else ((WITHOUT, False), (WITH, True))
        for label, on in order:
            with shortcuts(on):
                name = f"p{i}_{int(on)}"
                times["fresh"][label].append(_sync(workdir, name))
                times["no change"][label].append(_sync(workdir, name))


def run_all(repeats: int = 5) -> dict[str, Any]:
    """Fresh and no-change syncs, alternating with and without the shortcuts; seconds each."""
    times: dict[str, dict[str, list[float]]] = {
        kind: {WITH: [], WITHOUT: []} for kind in ("fresh", "no change")
    }
    env, cwd = dict(os.environ), Path.cwd()
    try:
        with tempfile.TemporaryDirectory() as scratch, SandboxProcess(*DATA) as sb:
            _measure(Path(scratch), sb, repeats, times)
    finally:  # `make bench` runs this in its own process, after the other sections
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
    medians = {k: {lab: statistics.median(v) for lab, v in t.items()} for k, t in times.items()}
    return {
        "repeats": repeats,
        "seconds": times,
        "median_s": medians,
        "ratio": {k: m[WITH] / m[WITHOUT] for k, m in medians.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    """Section 7 of RESULTS.md."""
    lines = [
        "## 7. What a sync costs beside its pages",
        "",
        "A fresh sync of 200 orders, 20 customers and 20 products (4 pages) and a no-change "
        "sync after it, against a "
        "sandbox with no latency and no rate limit, alternating with the four shortcuts and "
        f"without them (patched off in this process), {result['repeats']} times each "
        "(bench/bench_sync_overhead.py).",
        "",
        f"| sync | median {WITH} | median {WITHOUT} | ratio |",
        "|---|---:|---:|---:|",
    ]
    for kind, m in result["median_s"].items():
        lines.append(
            f"| {kind} | {m[WITH]:.2f} s | {m[WITHOUT]:.2f} s | {result['ratio'][kind]:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run_all(args.repeats)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
