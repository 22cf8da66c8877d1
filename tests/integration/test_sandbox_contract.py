"""The sandbox honours every row of the Ciklek API contract, over a real socket.

The connector is tested against the sandbox, so the sandbox itself must be pinned to the
contract: if it drifted, every green connector test would prove nothing. Each test names one
behaviour of /work/shared/ciklek-api.md and asserts real values.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.sandbox_proc import SandboxProcess

FULL = "bsk_test_full"
READER = "bsk_test_reader"
OTHER = "bsk_live_other"
ALL_SCOPES = "orders:read,orders:write,customers:read,products:read"
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
N_ORDERS = 600


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def position(record: dict[str, Any]) -> tuple[datetime, str]:
    return instant(record["updated_at"]), record["id"]


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    for name in RATE_HEADERS:
        assert response.headers[name].isdigit(), name
    return dict(error)


def traverse(
    client: httpx.Client, path: str, limit: int = 100, **params: str
) -> Iterator[dict[str, Any]]:
    """Yield every page body of a traversal, following next_cursor to the end."""
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": limit, **params}
        if cursor is not None:
            query["after"] = cursor
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        yield body
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    flags = ["--orders", str(N_ORDERS), "--customers", "40", "--products", "25"]
    flags += ["--window-limit", "100000", "--daily-quota", "1000000"]
    flags += ["--key", f"{FULL}={ALL_SCOPES}", "--key", f"{READER}=orders:read"]
    flags += ["--key", f"{OTHER}={ALL_SCOPES}"]
    with SandboxProcess(*flags) as sb:
        yield sb


@pytest.fixture(scope="module")
def api(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.client(FULL, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def reader(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.client(READER, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def all_orders(api: httpx.Client) -> list[dict[str, Any]]:
    """The pristine dataset, read before any test mutates it."""
    return [record for page in traverse(api, "/orders") for record in page["data"]]


@pytest.fixture(scope="module")
def customers(api: httpx.Client) -> list[dict[str, Any]]:
    return [record for page in traverse(api, "/customers") for record in page["data"]]


@pytest.fixture(scope="module")
def products(api: httpx.Client) -> list[dict[str, Any]]:
    return [record for page in traverse(api, "/products") for record in page["data"]]


# --- announcement and envelopes ---------------------------------------------------------------


def test_announcement_names_url_control_and_keys(sandbox: SandboxProcess) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:") and sandbox.url.endswith("/v1")
    assert sandbox.control == sandbox.url[: -len("/v1")] + "/_sandbox"
    scopes = ALL_SCOPES.split(",")
    assert sandbox.keys == {FULL: scopes, READER: ["orders:read"], OTHER: scopes}


def test_default_key_has_every_scope() -> None:
    with SandboxProcess("--orders", "5", "--customers", "2", "--products", "2") as sb:
        assert sb.keys == {"bsk_test_sandbox": ALL_SCOPES.split(",")}
        with sb.client() as client:
            for path in ("/orders", "/customers", "/products"):
                assert client.get(path).status_code == 200


def test_list_returns_data_and_meta(api: httpx.Client) -> None:
    response = api.get("/orders", params={"limit": 10})
    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == 10
    meta = body["meta"]
    assert (meta["total"], meta["page"], meta["per_page"]) == (N_ORDERS, 1, 10)
    assert isinstance(meta["next_cursor"], str)


def test_default_page_size_is_25(api: httpx.Client) -> None:
    body = api.get("/customers").json()
    assert len(body["data"]) == 25
    assert body["meta"]["per_page"] == 25
    assert body["meta"]["total"] == 40


def test_rate_headers_on_every_response(api: httpx.Client, sandbox: SandboxProcess) -> None:
    responses = [
        api.get("/orders"),
        api.get("/orders", params={"limit": 0}),
        api.get("/orders/00000000-0000-4000-8000-000000000000"),
        api.post("/orders", json={}),
        httpx.get(f"{sandbox.url}/orders"),
        httpx.get(f"{sandbox.url}/customers", headers={"Authorization": f"Bearer {READER}"}),
    ]
    assert [r.status_code for r in responses] == [200, 400, 404, 422, 401, 403]
    for response in responses:
        limit, remaining, reset = (int(response.headers[name]) for name in RATE_HEADERS)
        assert limit == 100000
        assert 0 <= remaining <= limit
        assert reset > time.time() - 1


def test_401_for_missing_or_unknown_key_reports_full_remaining(sandbox: SandboxProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer bsk_live_nope"}, {"Authorization": FULL}):
        response = httpx.get(f"{sandbox.url}/orders", headers=headers)
        error = assert_envelope(response, 401, "unauthorized")
        assert "details" not in error
        assert response.headers["x-ratelimit-remaining"] == response.headers["x-ratelimit-limit"]


def test_403_names_the_missing_scope(reader: httpx.Client) -> None:
    error = assert_envelope(reader.get("/customers"), 403, "forbidden")
    assert "customers:read" in error["message"]
    error = assert_envelope(reader.get("/products"), 403, "forbidden")
    assert "products:read" in error["message"]
    error = assert_envelope(reader.post("/orders", json={}), 403, "forbidden")
    assert "orders:write" in error["message"]
    assert reader.get("/orders").status_code == 200


def test_404_unknown_order(api: httpx.Client) -> None:
    response = api.get("/orders/00000000-0000-4000-8000-000000000000")
    error = assert_envelope(response, 404, "not_found")
    assert error["message"] == "Order not found"


def test_get_order_returns_the_listed_record(
    api: httpx.Client, all_orders: list[dict[str, Any]]
) -> None:
    record = all_orders[7]
    response = api.get(f"/orders/{record['id']}")
    assert response.status_code == 200
    assert response.json() == {"data": record}


@pytest.mark.parametrize("limit", ["0", "101", "abc", "1.5", "-1", "", " 5"])
def test_limit_outside_1_to_100_is_400(api: httpx.Client, limit: str) -> None:
    assert_envelope(api.get("/orders", params={"limit": limit}), 400, "bad_request")


def test_limit_bounds_are_accepted(api: httpx.Client) -> None:
    assert len(api.get("/orders", params={"limit": 1}).json()["data"]) == 1
    assert len(api.get("/orders", params={"limit": 100}).json()["data"]) == 100


def test_garbled_forged_or_foreign_cursor_is_400(api: httpx.Client) -> None:
    cursor = api.get("/orders", params={"limit": 5}).json()["meta"]["next_cursor"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    foreign = api.get("/customers", params={"limit": 5}).json()["meta"]["next_cursor"]
    for bad in ("garbage", "", "%%%", flipped, cursor + "x", foreign):
        assert_envelope(api.get("/orders", params={"after": bad}), 400, "bad_request")
    assert api.get("/orders", params={"after": cursor}).status_code == 200


@pytest.mark.parametrize("since", ["yesterday", "2026-13-45T99:00:00Z", "", "2026-02-30"])
def test_unparseable_updated_since_is_400(api: httpx.Client, since: str) -> None:
    response = api.get("/orders", params={"updated_since": since})
    assert_envelope(response, 400, "bad_request")


# --- the dataset's warts (read before any mutation) -------------------------------------------


def test_full_traversal_returns_every_id_once_in_order(api: httpx.Client) -> None:
    pages = list(traverse(api, "/orders", limit=100))
    records = [r for page in pages for r in page["data"]]
    ids = [r["id"] for r in records]
    assert len(ids) == N_ORDERS == len(set(ids))
    assert [position(r) for r in records] == sorted(position(r) for r in records)
    assert [p["meta"]["page"] for p in pages] == list(range(1, 7))
    assert {(p["meta"]["total"], p["meta"]["per_page"]) for p in pages} == {(N_ORDERS, 100)}
    assert all(p["meta"]["next_cursor"] for p in pages[:-1])
    assert pages[-1]["meta"]["next_cursor"] is None


def test_last_page_exactly_full_has_null_cursor(api: httpx.Client) -> None:
    pages = list(traverse(api, "/orders", limit=N_ORDERS // 6))
    assert len(pages) == 6
    assert len(pages[-1]["data"]) == 100
    assert pages[-1]["meta"]["next_cursor"] is None


def test_blocks_of_equal_updated_at_larger_than_a_page(all_orders: list[dict[str, Any]]) -> None:
    sizes = Counter(instant(r["updated_at"]) for r in all_orders)
    assert max(sizes.values()) > 100
    biggest = max(sizes, key=lambda at: sizes[at])
    renderings = {r["updated_at"] for r in all_orders if instant(r["updated_at"]) == biggest}
    assert len(renderings) > 1, "one instant should appear with several offsets/precisions"


def test_timestamps_mix_offsets_and_fractional_seconds(all_orders: list[dict[str, Any]]) -> None:
    stamps = [r["updated_at"] for r in all_orders] + [r["created_at"] for r in all_orders]
    offsets = {instant(s).utcoffset() for s in stamps}
    assert {timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8)} <= offsets
    assert any(s.endswith("Z") for s in stamps)
    assert any(s.endswith("+00:00") for s in stamps)
    fractions = {len(s[19:].split("+")[0].split("-")[0].rstrip("Z")) for s in stamps}
    assert {0, 4, 7} <= fractions  # none, ".123", ".123456"
    assert all(2025 <= instant(s).astimezone(UTC).year <= 2026 for s in stamps)


def test_money_is_integer_cents_with_huge_and_negative_totals(
    all_orders: list[dict[str, Any]],
) -> None:
    for r in all_orders:
        assert all(type(r[f]) is int for f in ("subtotal", "tax", "total"))
        assert r["subtotal"] + r["tax"] == r["total"]
        for item in r["line_items"]:
            assert item["amount"] == item["unit_price"] * item["quantity"]
    assert any(r["total"] > 2**53 for r in all_orders)
    assert any(r["total"] < 0 for r in all_orders)


def test_records_carry_undocumented_extra_fields(all_orders: list[dict[str, Any]]) -> None:
    assert any(r.get("channel") in {"web", "pos", "api", "phone"} for r in all_orders)
    assert any(r.get("meta") == {"source": "edi"} for r in all_orders)
    kinds = {type(r["ext_ref"]) for r in all_orders if "ext_ref" in r}
    assert kinds == {int, str}


def test_record_shapes_match_the_contract(
    all_orders: list[dict[str, Any]],
    customers: list[dict[str, Any]],
    products: list[dict[str, Any]],
) -> None:
    statuses = {r["status"] for r in all_orders}
    assert statuses == {"pending", "confirmed", "shipped", "delivered", "cancelled"}
    assert all(r["number"].startswith("ORD-") and len(r["number"]) == 10 for r in all_orders)
    customer_ids = {c["id"] for c in customers}
    assert all(r["customer_id"] in customer_ids for r in all_orders)
    documented = {"id", "name", "email", "company", "credit_limit", "created_at", "updated_at"}
    assert all(documented <= set(c) <= documented | {"tier"} for c in customers)
    assert any(c["company"] is None for c in customers)
    assert any(c["credit_limit"] is None for c in customers)
    assert all(type(p["price"]) is int and type(p["active"]) is bool for p in products)
    dates = [r["delivery_date"] for r in all_orders if r["delivery_date"] is not None]
    assert dates and all(len(d) == 10 and d[4] == "-" for d in dates)


def test_same_seed_gives_the_same_data() -> None:
    from connector.sandbox.data import generate

    first, _ = generate(7, 300, 20, 10, 0.1)
    again, _ = generate(7, 300, 20, 10, 0.1)
    other, _ = generate(8, 300, 20, 10, 0.1)
    assert first.records == again.records and first.bad == again.bad
    assert first.records["orders"] != other.records["orders"]


# --- updated_since ----------------------------------------------------------------------------


def test_updated_since_with_offset_filters_by_instant(
    api: httpx.Client, all_orders: list[dict[str, Any]]
) -> None:
    pivot = instant(all_orders[N_ORDERS // 2]["updated_at"]).astimezone(UTC)
    expected = [r["id"] for r in all_orders if instant(r["updated_at"]) >= pivot]
    for tz in (timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), UTC):
        since = pivot.astimezone(tz).isoformat()
        pages = list(traverse(api, "/orders", updated_since=since))
        got = [r["id"] for page in pages for r in page["data"]]
        assert got == expected
        assert pages[0]["meta"]["total"] == len(expected)


def test_updated_since_bare_date_means_midnight_utc(
    api: httpx.Client, all_orders: list[dict[str, Any]]
) -> None:
    midnight = datetime(2026, 1, 1, tzinfo=UTC)
    expected = sum(1 for r in all_orders if instant(r["updated_at"]) >= midnight)
    body = api.get("/orders", params={"updated_since": "2026-01-01"}).json()
    assert body["meta"]["total"] == expected
    assert all(instant(r["updated_at"]) >= midnight for r in body["data"])


# --- writes -----------------------------------------------------------------------------------


def order_request(customers: list[dict[str, Any]], products: list[dict[str, Any]]) -> dict:
    return {
        "customer_id": customers[0]["id"],
        "currency": "USD",
        "line_items": [
            {"product_id": products[0]["id"], "quantity": 3},
            {"product_id": products[1]["id"], "quantity": 1},
        ],
        "delivery_date": "2027-01-15",
    }


def test_post_creates_a_priced_pending_order(
    api: httpx.Client, customers: list[dict[str, Any]], products: list[dict[str, Any]]
) -> None:
    response = api.post("/orders", json=order_request(customers, products))
    assert response.status_code == 201
    for name in RATE_HEADERS:
        assert response.headers[name].isdigit()
    order = response.json()["data"]
    p0, p1 = products[0]["price"], products[1]["price"]
    assert [i["unit_price"] for i in order["line_items"]] == [p0, p1]
    assert [i["amount"] for i in order["line_items"]] == [3 * p0, p1]
    assert order["subtotal"] == 3 * p0 + p1
    assert order["tax"] == order["subtotal"] * 8 // 100
    assert order["total"] == order["subtotal"] + order["tax"]
    assert order["status"] == "pending"
    assert order["created_at"] == order["updated_at"]
    assert order["delivery_date"] == "2027-01-15"
    assert api.get(f"/orders/{order['id']}").json() == {"data": order}


def test_post_validation_errors_are_422_with_details(
    api: httpx.Client, products: list[dict[str, Any]]
) -> None:
    body = {
        "customer_id": "00000000-0000-4000-8000-000000000000",
        "line_items": [
            {"product_id": products[0]["id"], "quantity": 0},
            {"product_id": "nope", "quantity": 1},
        ],
        "delivery_date": "15/01/2027",
    }
    error = assert_envelope(api.post("/orders", json=body), 422, "validation_failed")
    fields = {d["field"]: d["message"] for d in error["details"]}
    assert set(fields) == {
        "customer_id",
        "currency",
        "line_items[0].quantity",
        "line_items[1].product_id",
        "delivery_date",
    }
    assert all(isinstance(m, str) and m for m in fields.values())


def test_post_with_invalid_json_is_400(api: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    assert_envelope(api.post("/orders", content=b"{not json", headers=headers), 400, "bad_request")
    assert_envelope(api.post("/orders", content=b"[1, 2]", headers=headers), 400, "bad_request")


def test_idempotent_replay_returns_original_and_creates_nothing(
    api: httpx.Client,
    sandbox: SandboxProcess,
    customers: list[dict[str, Any]],
    products: list[dict[str, Any]],
) -> None:
    body = order_request(customers, products)
    headers = {"Idempotency-Key": "replay-1"}
    before = sandbox.stats()["counts"]["orders"]
    first = api.post("/orders", json=body, headers=headers)
    second = api.post("/orders", json=dict(reversed(list(body.items()))), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert sandbox.stats()["counts"]["orders"] == before + 1


def test_idempotency_keys_are_per_api_key(
    sandbox: SandboxProcess, customers: list[dict[str, Any]], products: list[dict[str, Any]]
) -> None:
    body = order_request(customers, products)
    headers = {"Idempotency-Key": "shared-key"}
    with sandbox.client(FULL) as a, sandbox.client(OTHER) as b:
        first = a.post("/orders", json=body, headers=headers)
        second = b.post("/orders", json={**body, "currency": "GBP"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["data"]["id"] != second.json()["data"]["id"]


def test_idempotency_conflict_is_422(
    api: httpx.Client, customers: list[dict[str, Any]], products: list[dict[str, Any]]
) -> None:
    body = order_request(customers, products)
    headers = {"Idempotency-Key": "conflict-1"}
    assert api.post("/orders", json=body, headers=headers).status_code == 201
    changed = {**body, "currency": "EUR"}
    error = assert_envelope(
        api.post("/orders", json=changed, headers=headers), 422, "idempotency_conflict"
    )
    assert error["details"] and error["details"][0]["field"] == "Idempotency-Key"


# --- records changing under a traversal -------------------------------------------------------


def test_record_updated_mid_traversal_reappears_later(
    api: httpx.Client, sandbox: SandboxProcess
) -> None:
    pages = traverse(api, "/orders", limit=50)
    first = next(pages)
    moved = first["data"][3]
    patched = sandbox.control_request(
        "PATCH", f"records/orders/{moved['id']}", json={"status": "cancelled"}
    ).json()
    assert instant(patched["updated_at"]) > instant(moved["updated_at"])
    created = sandbox.control_post("mutate", create=2, update=0, resource="orders")["created"]
    rest = [r for page in pages for r in page["data"]]
    seen = [r["id"] for r in first["data"]] + [r["id"] for r in rest]
    assert seen.count(moved["id"]) == 2
    assert rest[-3]["id"] == moved["id"] and rest[-3]["status"] == "cancelled"
    assert [r["id"] for r in rest[-2:]] == created
    total = sandbox.stats()["counts"]["orders"]
    assert len(set(seen)) == total


def test_mutate_updates_after_every_existing_instant(
    api: httpx.Client, sandbox: SandboxProcess
) -> None:
    newest = list(traverse(api, "/orders"))[-1]["data"][-1]
    result = sandbox.control_post("mutate", update=3, create=1, resource="customers")
    assert len(result["updated"]) == 3 and len(result["created"]) == 1
    since = instant(newest["updated_at"]).isoformat()
    assert api.get("/orders", params={"updated_since": since}).json()["meta"]["total"] == 1
    body = api.get("/customers", params={"limit": 100}).json()
    assert [r["id"] for r in body["data"][-4:]] == result["updated"] + result["created"]


def test_control_records_get_patch_delete(api: httpx.Client, sandbox: SandboxProcess) -> None:
    record = api.get("/orders", params={"limit": 1}).json()["data"][0]
    raw = sandbox.control_request("GET", f"records/orders/{record['id']}").json()
    assert raw == record
    stamp = "2025-06-01T00:00:00+02:00"
    patched = sandbox.control_request(
        "PATCH", f"records/orders/{record['id']}", json={"total": "oops", "updated_at": stamp}
    ).json()
    assert patched["total"] == "oops" and patched["updated_at"] == stamp
    assert api.get(f"/orders/{record['id']}").json()["data"]["total"] == "oops"
    assert sandbox.control_request("DELETE", f"records/orders/{record['id']}").status_code == 200
    assert api.get(f"/orders/{record['id']}").status_code == 404
    assert sandbox.control_request("GET", f"records/orders/{record['id']}").status_code == 404


def test_stats_count_requests_by_status_and_path(sandbox: SandboxProcess) -> None:
    sandbox.control_post("reset_stats")
    with sandbox.client(READER) as client:
        client.get("/orders")
        client.get("/customers")
        client.get("/orders/00000000-0000-4000-8000-000000000000")
    httpx.get(f"{sandbox.url}/orders")
    stats = sandbox.stats()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 1, "403": 1, "404": 1, "401": 1}
    assert stats["by_path"] == {"/v1/orders": 2, "/v1/customers": 1, "/v1/orders/{id}": 1}
    assert stats["counted_today"][sandbox.fingerprint(READER)] >= 3
    assert stats["bad_records"] == []


def test_idempotency_keys_expire_after_24h(
    api: httpx.Client,
    sandbox: SandboxProcess,
    customers: list[dict[str, Any]],
    products: list[dict[str, Any]],
) -> None:
    body = order_request(customers, products)
    headers = {"Idempotency-Key": "expiring"}
    first = api.post("/orders", json=body, headers=headers).json()["data"]
    sandbox.control_post("clock", advance=24 * 3600 + 1)
    second = api.post("/orders", json={**body, "currency": "EUR"}, headers=headers)
    assert second.status_code == 201
    assert second.json()["data"]["id"] != first["id"]


# --- rate limits ------------------------------------------------------------------------------


def test_window_limit_429_until_reset_then_recovers() -> None:
    flags = ["--orders", "10", "--window-seconds", "2", "--window-limit", "5"]
    with SandboxProcess(*flags) as sb, sb.client(timeout=10) as client:
        time.sleep(2 - time.time() % 2 + 0.05)  # start at the top of a 2 s window
        responses = [client.get("/orders", params={"limit": 1}) for _ in range(6)]
        response = responses[-1]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        remaining = [r.headers["x-ratelimit-remaining"] for r in responses]
        assert remaining == ["4", "3", "2", "1", "0", "0"]
        assert_envelope(response, 429, "rate_limited")
        reset = int(response.headers["x-ratelimit-reset"])
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert reset % 2 == 0 and 0 < reset - time.time() <= 2
        counted = sb.stats()["counted_today"][sb.fingerprint(sb.key)]
        assert client.get("/orders").status_code == 429
        assert sb.stats()["counted_today"][sb.fingerprint(sb.key)] == counted  # 429: not counted
        time.sleep(max(0.0, reset - time.time()) + 0.05)
        ok = client.get("/orders", params={"limit": 1})
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-remaining"] == "4"
        assert int(ok.headers["x-ratelimit-reset"]) == reset + 2


def test_daily_quota_then_new_day_restores() -> None:
    with SandboxProcess("--orders", "10", "--daily-quota", "3") as sb, sb.client() as client:
        assert [client.get("/orders").status_code for _ in range(3)] == [200, 200, 200]
        response = client.get("/orders")
        assert_envelope(response, 429, "daily_quota_exceeded")
        now = datetime.now(UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        assert int(response.headers["x-ratelimit-reset"]) == int(midnight.timestamp())
        assert sb.stats()["counted_today"][sb.fingerprint(sb.key)] == 3
        sb.control_post("new_day")
        assert client.get("/orders").status_code == 200


# --- faults -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty() -> Iterator[SandboxProcess]:
    flags = ["--orders", "300", "--customers", "20", "--products", "10"]
    with SandboxProcess(*flags, "--error-rate", "1", "--bad-records", "0.05") as sb:
        yield sb


def test_error_rate_gives_500_envelope(faulty: SandboxProcess) -> None:
    with faulty.client() as client:
        assert_envelope(client.get("/orders"), 500, "internal_error")
    faulty.control_post("faults", json={"error_rate": 0})
    with faulty.client() as client:
        assert client.get("/orders").status_code == 200


def test_drop_fault_is_a_protocol_error_for_the_client(faulty: SandboxProcess) -> None:
    faulty.control_post("faults", json={"drop_rate": 1})
    try:
        with faulty.client() as client, pytest.raises(httpx.RemoteProtocolError):
            client.get("/orders", params={"limit": 50})
    finally:
        faulty.control_post("faults", json={"drop_rate": 0})
    assert faulty.stats()["faults_injected"]["drop"] == 1


def test_truncate_fault_sends_200_with_cut_json(faulty: SandboxProcess) -> None:
    faulty.control_post("faults", json={"truncate_rate": 1})
    try:
        with faulty.client() as client:
            response = client.get("/orders", params={"limit": 20})
    finally:
        faulty.control_post("faults", json={"truncate_rate": 0})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(ValueError):
        response.json()


def test_spurious_429_fault(faulty: SandboxProcess) -> None:
    faulty.control_post("faults", json={"rate429": 1})
    try:
        with faulty.client() as client:
            response = client.get("/orders")
    finally:
        faulty.control_post("faults", json={"rate429": 0})
    assert_envelope(response, 429, "rate_limited")


def test_latency_fault_delays_responses(faulty: SandboxProcess) -> None:
    faulty.control_post("faults", json={"latency_ms": 300})
    try:
        with faulty.client() as client:
            started = time.perf_counter()
            assert client.get("/orders").status_code == 200
            assert time.perf_counter() - started >= 0.3
    finally:
        faulty.control_post("faults", json={"latency_ms": 0})


def test_post_fail_after_write_stores_then_500s(faulty: SandboxProcess) -> None:
    with faulty.client() as client:
        customer = client.get("/customers", params={"limit": 1}).json()["data"][0]
        product = next(p for p in client.get("/products").json()["data"] if "id" in p)
        if type(product["price"]) is not int:
            pytest.skip("first product is a deliberately bad record")
        body = {
            "customer_id": customer["id"],
            "currency": "USD",
            "line_items": [{"product_id": product["id"], "quantity": 2}],
        }
        before = faulty.stats()["counts"]["orders"]
        faulty.control_post("faults", json={"post_fail_after_write": 1})
        headers = {"Idempotency-Key": "lost-201"}
        assert_envelope(client.post("/orders", json=body, headers=headers), 500, "internal_error")
        retry = client.post("/orders", json=body, headers=headers)
        assert retry.status_code == 201
        assert faulty.stats()["counts"]["orders"] == before + 1
        order_id = retry.json()["data"]["id"]
        assert client.get(f"/orders/{order_id}").json()["data"]["id"] == order_id


def test_bad_records_are_listed_and_really_bad(faulty: SandboxProcess) -> None:
    bad = faulty.stats()["bad_records"]
    assert len(bad) >= 10
    assert {b["resource"] for b in bad} >= {"orders"}
    assert {b["kind"] for b in bad} >= {"money_string", "money_float", "missing_id"}
    for entry in bad:
        raw = faulty.control_request("GET", f"records/{entry['resource']}/{entry['id']}").json()
        kind, field = entry["kind"], entry["field"]
        if kind == "missing_id":
            assert "id" not in raw
        elif kind == "money_string":
            assert isinstance(raw[field], str) and "." in raw[field]
        elif kind == "money_float":
            assert isinstance(raw[field], float)
        elif kind == "bad_timestamp":
            assert raw[field] == "2026-13-45T99:00:00Z"
        else:
            assert kind == "line_item_price_string"
            assert isinstance(raw["line_items"][0]["unit_price"], str)


def test_limits_change_at_runtime() -> None:
    with SandboxProcess("--orders", "10") as sb, sb.client() as client:
        assert client.get("/orders").headers["x-ratelimit-limit"] == "120"
        assert sb.control_post("limits", json={"window_limit": 2})["window_limit"] == 2
        statuses = [client.get("/orders").status_code for _ in range(2)]
        assert statuses == [200, 429] or statuses == [200, 200]  # a window may have rolled
        bad = sb.control_request("POST", "limits", json={"window_limit": "many"})
        assert bad.status_code == 400
