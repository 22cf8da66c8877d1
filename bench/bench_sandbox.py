"""How many 100-order list pages per second the sandbox serves to a client in another process.

The sandbox stands in for Ciklek in every integration test and demo; if it cannot serve pages
much faster than the connector consumes them, benchmarks of the connector would measure the
sandbox instead. Target: >= 500 pages/s on the 2-core reference machine.

Run: ``python bench/bench_sandbox.py [--orders 20000] [--seconds 10] [--clients 1]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sandbox_proc import SandboxProcess

TARGET_PAGES_PER_SECOND = 500


def traverse(client: httpx.Client, deadline: float, counts: list[int], slot: int) -> None:
    """Page through all orders again and again until the deadline, counting pages."""
    cursor: str | None = None
    while time.perf_counter() < deadline:
        params: dict[str, str | int] = {"limit": 100}
        if cursor:
            params["after"] = cursor
        response = client.get("/orders", params=params)
        response.raise_for_status()
        body = response.json()
        assert len(body["data"]) > 0
        cursor = body["meta"]["next_cursor"]
        counts[slot] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=1, help="concurrent keep-alive clients")
    args = parser.parse_args()
    flags = ["--orders", str(args.orders), "--window-limit", "10000000"]
    flags += ["--daily-quota", "100000000"]
    started = time.perf_counter()
    with SandboxProcess(*flags) as sandbox:
        startup = time.perf_counter() - started
        clients = [sandbox.client(timeout=30) for _ in range(args.clients)]
        for client in clients:  # warm up: connect, first pages
            client.get("/orders", params={"limit": 100}).raise_for_status()
        counts = [0] * args.clients
        begin = time.perf_counter()
        deadline = begin + args.seconds
        threads = [
            threading.Thread(target=traverse, args=(client, deadline, counts, n))
            for n, client in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - begin
        for client in clients:
            client.close()
    pages = sum(counts)
    result = {
        "orders": args.orders,
        "clients": args.clients,
        "startup_seconds": round(startup, 2),
        "pages": pages,
        "seconds": round(elapsed, 2),
        "pages_per_second": round(pages / elapsed, 1),
        "target": TARGET_PAGES_PER_SECOND,
    }
    print(json.dumps(result))
    return 0 if result["pages_per_second"] >= TARGET_PAGES_PER_SECOND else 1


if __name__ == "__main__":
    raise SystemExit(main())
