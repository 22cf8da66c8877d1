"""THE PEER, not the connector: dlt's generic ``rest_api`` source configured for the Ciklek API.

This is what a user would build instead of installing the connector, using dlt's public API
only (``dlt.sources.rest_api.rest_api_source``): a cursor paginator on ``meta.next_cursor`` /
``after``, bearer auth, ``data_selector: data``, incremental ``updated_at`` sent as
``updated_since``, merge on ``id``, 100 records a page. Nothing from ``connector`` is imported.
Line items load as dlt's default nested table ``orders__line_items``.

``bench/bench_compare.py`` runs it in a subprocess next to ``ciklek sync`` against the same
sandbox. Run by hand::

    python bench/peer_rest_api.py --base-url http://127.0.0.1:PORT/v1 --api-key KEY \\
        --pipelines-dir /tmp/peer --duckdb /tmp/peer.duckdb

It prints one JSON line: the rows it loaded per table.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt
from dlt.sources.rest_api import rest_api_source

PEER_PIPELINE = "ciklek_peer_rest_api"
RESOURCES = ("orders", "customers", "products")
PAGE_SIZE = 100


def peer_config(base_url: str, api_key: str) -> dict[str, Any]:
    """The peer's whole configuration: plain ``rest_api`` config, as its docs describe it."""

    def resource(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "write_disposition": "merge",
            "primary_key": "id",
            "endpoint": {
                "path": name,
                "data_selector": "data",
                "params": {"limit": PAGE_SIZE},
                "incremental": {
                    "cursor_path": "updated_at",
                    "start_param": "updated_since",
                    "initial_value": "1970-01-01T00:00:00Z",
                },
            },
        }

    return {
        "client": {
            "base_url": base_url.rstrip("/") + "/",
            "auth": {"type": "bearer", "token": api_key},
            "paginator": {
                "type": "cursor",
                "cursor_path": "meta.next_cursor",
                "cursor_param": "after",
            },
        },
        "resources": [resource(name) for name in RESOURCES],
    }


def run_peer(base_url: str, api_key: str, pipelines_dir: str, duckdb_file: str) -> dict[str, Any]:
    """One sync with the peer; returns the rows loaded per table in this run."""
    pipeline = dlt.pipeline(
        pipeline_name=PEER_PIPELINE,
        destination=dlt.destinations.duckdb(credentials=duckdb_file),
        dataset_name="ciklek",
        pipelines_dir=pipelines_dir,
    )
    info = pipeline.run(rest_api_source(peer_config(base_url, api_key)))
    counts = pipeline.last_trace.last_normalize_info.row_counts if pipeline.last_trace else {}
    rows = {table: n for table, n in counts.items() if not table.startswith("_dlt")}
    return {"rows": rows, "loads": len(info.loads_ids)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--duckdb", required=True)
    args = parser.parse_args()
    result = run_peer(args.base_url, args.api_key, args.pipelines_dir, args.duckdb)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
