"""Line items are replaced as a set when their order changes (DuckDB, real sandbox).

A merge on the item's id alone would keep removed items forever, and a delete-insert keyed on
order_id alone misses orders that now have no items: both cases are pinned here.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import run_main


def _items(db: Path, order_id: str) -> list[str]:
    rows = query(
        db, f"select id from ciklek.order_line_items where order_id = '{order_id}' order by id"
    )
    return [r[0] for r in rows]


def test_removed_items_disappear_including_an_orders_last_item(sandbox, clean_env: Path) -> None:
    env = sync_env(sandbox)
    assert run_main("sync", "--resources", "orders", env=env).returncode == 0
    db = clean_env / DEFAULT_DB
    multi = query(
        db,
        "select order_id from ciklek.order_line_items group by order_id "
        "having count(*) >= 3 order by order_id limit 2",
    )
    shrink, empty = multi[0][0], multi[1][0]
    shrink_items = sandbox.control_request("GET", f"records/orders/{shrink}").json()["line_items"]
    before_total = query(db, "select count(*) from ciklek.order_line_items")[0][0]
    assert _items(db, shrink) == sorted(i["id"] for i in shrink_items)

    kept = shrink_items[:1]
    sandbox.control_request("PATCH", f"records/orders/{shrink}", json={"line_items": kept})
    sandbox.control_request("PATCH", f"records/orders/{empty}", json={"line_items": []})
    emptied_count = len(_items(db, empty))

    second = run_main("sync", "--resources", "orders", env=env)
    assert second.returncode == 0, second.stderr
    assert _items(db, shrink) == [kept[0]["id"]]
    assert _items(db, empty) == []
    after_total = query(db, "select count(*) from ciklek.order_line_items")[0][0]
    assert after_total == before_total - (len(shrink_items) - 1) - emptied_count
    # No tombstone ever lands as a row.
    assert query(db, "select count(*) from ciklek.order_line_items where _ciklek_deleted") == [(0,)]

    # Items come back when the order gets new ones.
    new_item = {**shrink_items[1], "id": "00000000-0000-4000-8000-00000000abcd"}
    sandbox.control_request("PATCH", f"records/orders/{empty}", json={"line_items": [new_item]})
    assert run_main("sync", "--resources", "orders", env=env).returncode == 0
    assert _items(db, empty) == [new_item["id"]]
    assert query(
        db, f"select order_id from ciklek.order_line_items where id = '{new_item['id']}'"
    ) == [(empty,)]


def test_sandbox_command_starts_the_server(clean_env: Path) -> None:
    """`ciklek sandbox` is the same server as `python -m connector.sandbox`."""
    import json
    import subprocess

    from tests.helpers import CIKLEK_BIN

    proc = subprocess.Popen(
        [CIKLEK_BIN, "sandbox", "--port", "0", "--orders", "10"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        banner = json.loads(proc.stdout.readline())
        assert banner["url"].startswith("http://127.0.0.1:")
        import httpx

        key = next(iter(banner["keys"]))
        body = httpx.get(
            banner["url"] + "/orders", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert body["meta"]["total"] == 10
    finally:
        proc.terminate()
        proc.wait(timeout=10)
