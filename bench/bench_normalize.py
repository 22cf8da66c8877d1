"""Normalisation throughput: raw page bytes → DuckDB with merge, three ways, in one run.

(a) dlt's dict path: pages parsed to dicts, dlt infers types and unnests ``line_items`` itself.
(b) our Arrow path: ``responses.parse_json`` + ``normalize.build_batch`` per chunk of pages, loaded
    with the hints of ``connector.runs.source`` (orders merge on ``id``; line items delete-insert
    on ``order_id`` with the tombstone column; rejects appended).
(c) the floor: dlt alone loading the Arrow tables of (b), prebuilt before the clock starts.

Every variant writes to a fresh temporary pipelines dir and DuckDB file, and the figure is the
median of ``repeats`` runs. Target: (b) ≥ 25,000 orders/s with their line items and within
1.35x of (c) measured in the same run.

Run: ``python bench/bench_normalize.py [--orders 20000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt

from connector.api.responses import parse_json
from connector.catalogue import CATALOGUE
from connector.records.history import version_rows
from connector.records.normalize import build_batch, rejects_table
from connector.runs.source import REJECT_HINTS, _child_hints, _version_tables

TARGET_ORDERS_PER_SECOND = 25_000
TARGET_RATIO_TO_FLOOR = 1.35
PAGE_SIZE = 100
CHUNK_PAGES = 100  # connector.config.settings default checkpoint_pages
ITEMS_PER_ORDER = 3
SPEC = CATALOGUE["orders"]
_OFFSETS = ("Z", "+05:30", "-08:00", "+09:00", "-03:30")


def make_pages(n_orders: int, seed: int = 7) -> list[bytes]:
    """Raw JSON list pages as the API sends them: 100 orders, 3 line items each, mixed offsets."""
    pages: list[bytes] = []
    records: list[dict[str, Any]] = []
    for n in range(n_orders):
        oid = f"{seed:02d}{n:010d}-0000-4000-8000-000000000000"
        unit = 199 + (n * 7919) % 50_000
        items = [
            {
                "id": f"{oid}-{k}",
                "product_id": f"p{(n + k) % 500:05d}",
                "sku": f"SKU-{(n + k) % 500:05d}",
                "quantity": 1 + k,
                "unit_price": unit + k,
                "amount": (unit + k) * (1 + k),
            }
            for k in range(ITEMS_PER_ORDER)
        ]
        subtotal = sum(i["amount"] for i in items)
        day, sec = 1 + n % 28, n % 86_400
        frac = ("", ".123", ".123456")[n % 3]
        off = _OFFSETS[n % len(_OFFSETS)]
        stamp = (
            f"2026-03-{day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}{frac}{off}"
        )
        record: dict[str, Any] = {
            "id": oid,
            "number": f"ORD-{n:06d}",
            "customer_id": f"c{n % 5000:05d}",
            "status": ("pending", "shipped", "delivered")[n % 3],
            "currency": "USD",
            "subtotal": subtotal,
            "tax": subtotal * 8 // 100,
            "total": subtotal + subtotal * 8 // 100,
            "line_items": items,
            "delivery_date": f"2026-04-{day:02d}" if n % 10 < 7 else None,
            "shipped_at": stamp if n % 3 else None,
            "created_at": f"2026-02-{day:02d}T08:00:00Z",
            "updated_at": stamp,
        }
        if n % 10 == 0:
            record["channel"] = "web"
        records.append(record)
        if len(records) == PAGE_SIZE or n == n_orders - 1:
            body = {"data": records, "meta": {"next_cursor": None, "total": n_orders}}
            pages.append(json.dumps(body, separators=(",", ":")).encode())
            records = []
    return pages


def _pipeline(workdir: Path, name: str) -> Any:
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(str(workdir / f"{name}.duckdb")),
        dataset_name="bench",
        pipelines_dir=str(workdir / "pipelines"),
    )


def _arrow_tables(pages: list[bytes], history: bool = False) -> Iterator[Any]:
    """What runs.source._traverse yields: per chunk, latest version per id, then batches; with
    `history`, also the rows of `orders_versions` and `order_line_items_versions`."""
    child_hints = _child_hints(SPEC, "order_line_items")
    for start in range(0, len(pages), CHUNK_PAGES):
        latest: dict[str, Any] = {}
        loose: list[Any] = []
        for raw in pages[start : start + CHUNK_PAGES]:
            for record in parse_json(raw)["data"]:
                rid = record.get("id") if isinstance(record, dict) else None
                if rid is None:
                    loose.append(record)
                    continue
                latest.pop(str(rid), None)
                latest[str(rid)] = record
        batch = build_batch(SPEC, [*loose, *latest.values()])
        if batch.parent is not None:
            yield batch.parent
        if batch.child is not None:
            yield dlt.mark.with_hints(batch.child, child_hints, create_table_variant=True)
        if batch.rejects:
            yield dlt.mark.with_hints(
                rejects_table(batch.rejects), REJECT_HINTS, create_table_variant=True
            )
        if history:
            yield from _version_tables(version_rows(SPEC, [batch]))


def _orders_resource(gen: Callable[[], Iterator[Any]]) -> Any:
    # The same resource-level hints as connector.runs.source.make_resource.
    return dlt.resource(gen, name="orders", write_disposition="merge", primary_key="id")


def _check(pipeline: Any, n_orders: int, items_table: str) -> None:
    with pipeline.sql_client() as client:
        orders = client.execute_sql("select count(*) from orders")[0][0]
        items = client.execute_sql(f"select count(*) from {items_table}")[0][0]
    assert orders == n_orders, (orders, n_orders)
    assert items == n_orders * ITEMS_PER_ORDER, (items, n_orders * ITEMS_PER_ORDER)


def run_dict_path(pages: list[bytes], workdir: Path) -> float:
    """(a) dlt infers and unnests: seconds from raw bytes to committed merge."""
    pipeline = _pipeline(workdir, "dicts")

    def gen() -> Iterator[Any]:
        for raw in pages:
            yield parse_json(raw)["data"]

    started = time.perf_counter()
    pipeline.run(_orders_resource(gen))
    elapsed = time.perf_counter() - started
    _check(pipeline, _count(pages), "orders__line_items")
    return elapsed


def run_arrow_path(pages: list[bytes], workdir: Path) -> float:
    """(b) ours: parse + build_batch + dlt load, timed together."""
    pipeline = _pipeline(workdir, "arrow")
    started = time.perf_counter()
    pipeline.run(_orders_resource(lambda: _arrow_tables(pages)))
    elapsed = time.perf_counter() - started
    _check(pipeline, _count(pages), "order_line_items")
    return elapsed


def run_history_path(pages: list[bytes], workdir: Path) -> float:
    """(b) with `history = ["orders"]`: the versions tables built and merged too."""
    pipeline = _pipeline(workdir, "history")
    started = time.perf_counter()
    pipeline.run(_orders_resource(lambda: _arrow_tables(pages, history=True)))
    elapsed = time.perf_counter() - started
    _check(pipeline, _count(pages), "order_line_items_versions")
    return elapsed


def run_history_conversion(pages: list[bytes], workdir: Path) -> float:
    """(b-c) with history: parse_json + build_batch + the versions rows, no dlt."""
    started = time.perf_counter()
    tables = list(_arrow_tables(pages, history=True))
    elapsed = time.perf_counter() - started
    assert tables
    return elapsed


def run_prebuilt(pages: list[bytes], workdir: Path) -> float:
    """(c) the floor: the same tables, built before the clock starts; dlt's own cost."""
    tables = list(_arrow_tables(pages))  # parse + build_batch happen here, off the clock
    pipeline = _pipeline(workdir, "prebuilt")
    started = time.perf_counter()
    pipeline.run(_orders_resource(lambda: iter(tables)))
    elapsed = time.perf_counter() - started
    _check(pipeline, _count(pages), "order_line_items")
    return elapsed


def run_conversion_only(pages: list[bytes], workdir: Path) -> float:
    """(b) without dlt: parse_json + build_batch alone (what (b) adds on top of (c))."""
    started = time.perf_counter()
    tables = list(_arrow_tables(pages))
    elapsed = time.perf_counter() - started
    assert tables
    return elapsed


def _count(pages: list[bytes]) -> int:
    return sum(len(parse_json(raw)["data"]) for raw in pages)


VARIANTS: dict[str, Callable[[list[bytes], Path], float]] = {
    "dict": run_dict_path,
    "arrow": run_arrow_path,
    "floor": run_prebuilt,
    "convert": run_conversion_only,
    "history": run_history_path,
    "convert_history": run_history_conversion,
}
LABELS = {
    "dict": "(a) dlt dict path (dlt infers, unnests line_items)",
    "arrow": "(b) Arrow path from raw pages (parse_json + build_batch + dlt)",
    "floor": "(c) dlt alone, prebuilt Arrow tables (floor)",
    "convert": "(b-c) parse_json + build_batch alone, no dlt",
    "history": "(b) with history: + orders_versions, order_line_items_versions",
    "convert_history": "(b-c) with history: + the versions rows, no dlt",
}


def run(
    n_orders: int = 20_000, repeats: int = 3, variants: tuple[str, ...] = tuple(VARIANTS)
) -> dict[str, Any]:
    """Median orders/s per variant over `repeats` runs, each in a fresh temporary directory."""
    pages = make_pages(n_orders)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:  # interleaved, so drift on the machine hits all alike
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-normalize-{variant}-"))
            try:
                seconds[variant].append(VARIANTS[variant](pages, workdir))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "orders": n_orders,
        "line_items_per_order": ITEMS_PER_ORDER,
        "repeats": repeats,
        "seconds": {v: statistics.median(s) for v, s in seconds.items()},
        "orders_per_second": {v: n_orders / statistics.median(s) for v, s in seconds.items()},
        "all_seconds": seconds,
    }
    ops = result["orders_per_second"]
    if "arrow" in ops and "dict" in ops:
        result["arrow_vs_dict"] = ops["arrow"] / ops["dict"]
    if "arrow" in ops and "history" in ops:
        result["history_cost"] = ops["arrow"] / ops["history"]  # time with / time without
    if "convert" in ops and "convert_history" in ops:
        result["history_conversion_cost"] = ops["convert"] / ops["convert_history"]
    if "arrow" in ops and "floor" in ops:
        # How many times longer the Arrow path takes than dlt's own cost for the same tables.
        result["arrow_cost_vs_floor"] = ops["floor"] / ops["arrow"]
        result["meets_target"] = (
            ops["arrow"] >= TARGET_ORDERS_PER_SECOND
            and result["arrow_cost_vs_floor"] <= TARGET_RATIO_TO_FLOOR
        )
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Normalisation: {result['orders']:,} orders x {result['line_items_per_order']} line "
        f"items, raw pages -> DuckDB (merge); median of {result['repeats']}",
        "",
        "| path | seconds | orders/s |",
        "|---|---:|---:|",
    ]
    for variant, ops in result["orders_per_second"].items():
        lines.append(f"| {LABELS[variant]} | {result['seconds'][variant]:.2f} | {ops:,.0f} |")
    lines.append("")
    if "arrow_vs_dict" in result:
        lines.append(f"- Arrow path vs dict path: {result['arrow_vs_dict']:.1f}x faster")
    if "arrow_cost_vs_floor" in result:
        lines.append(
            f"- Arrow path cost vs floor: {result['arrow_cost_vs_floor']:.2f}x "
            f"(target <= {TARGET_RATIO_TO_FLOOR}x and >= {TARGET_ORDERS_PER_SECOND:,} orders/s: "
            f"{'met' if result['meets_target'] else 'NOT met'})"
        )
    if "history_cost" in result:
        lines.append(
            f"- history on: {result['history_cost']:.2f}x the time of the Arrow path end to end"
        )
    if "history_conversion_cost" in result:
        lines.append(
            f"- history on: {result['history_conversion_cost']:.2f}x the conversion time (no dlt)"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=list(VARIANTS), action="append")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()
    result = run(args.orders, args.repeats, tuple(args.only or VARIANTS))
    print(markdown(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0 if result.get("meets_target", True) else 1


if __name__ == "__main__":
    sys.exit(main())
