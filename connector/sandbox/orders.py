"""``POST /v1/orders``: validation and pricing of a new order.

Validation reports every problem at once as ``{"field", "message"}`` details (the contract's
422 shape), so a client can fix a request in one go. Prices come from the product records, as a
real order system would do, never from the request.
"""

from __future__ import annotations

import re
from typing import Any

from .data import RecordFactory
from .store import ResourceStore
from .timefmt import format_ts, parse_date

TAX_PERCENT = 8
_CURRENCY = re.compile(r"[A-Z]{3}")

Detail = dict[str, str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(
    body: dict[str, Any], customers: ResourceStore, products: ResourceStore
) -> list[Detail]:
    """Every reason the request cannot become an order; empty when it can."""
    details: list[Detail] = []
    customer_id = body.get("customer_id")
    if customer_id is None:
        details.append({"field": "customer_id", "message": "is required"})
    elif not isinstance(customer_id, str) or customers.get(customer_id) is None:
        details.append({"field": "customer_id", "message": "unknown customer"})
    currency = body.get("currency")
    if currency is None:
        details.append({"field": "currency", "message": "is required"})
    elif not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        details.append({"field": "currency", "message": "must be an ISO 4217 code like USD"})
    items = body.get("line_items")
    if items is None:
        details.append({"field": "line_items", "message": "is required"})
    elif not isinstance(items, list) or not items:
        details.append({"field": "line_items", "message": "must be a non-empty list"})
    else:
        for n, item in enumerate(items):
            details.extend(_validate_item(n, item, products))
    delivery = body.get("delivery_date")
    if delivery is not None and (not isinstance(delivery, str) or parse_date(delivery) is None):
        details.append({"field": "delivery_date", "message": "must be YYYY-MM-DD or null"})
    return details


def _validate_item(n: int, item: Any, products: ResourceStore) -> list[Detail]:
    where = f"line_items[{n}]"
    if not isinstance(item, dict):
        return [{"field": where, "message": "must be an object"}]
    details: list[Detail] = []
    product_id = item.get("product_id")
    product = products.get(product_id) if isinstance(product_id, str) else None
    if product_id is None:
        details.append({"field": f"{where}.product_id", "message": "is required"})
    elif product is None:
        details.append({"field": f"{where}.product_id", "message": "unknown product"})
    elif not _is_int(product.obj.get("price")):
        details.append({"field": f"{where}.product_id", "message": "product has no valid price"})
    quantity = item.get("quantity")
    if quantity is None:
        details.append({"field": f"{where}.quantity", "message": "is required"})
    elif not _is_int(quantity) or quantity < 1:
        details.append({"field": f"{where}.quantity", "message": "must be an integer >= 1"})
    return details


def build(
    body: dict[str, Any], factory: RecordFactory, products: ResourceStore, now_us: int
) -> dict[str, Any]:
    """The new order for a validated request, priced from the products, status pending."""
    items: list[dict[str, Any]] = []
    for item in body["line_items"]:
        product = products.entries[item["product_id"]].obj
        unit_price: int = product["price"]
        items.append(
            {
                "id": factory.uuid(),
                "product_id": item["product_id"],
                "sku": product.get("sku"),
                "quantity": item["quantity"],
                "unit_price": unit_price,
                "amount": unit_price * item["quantity"],
            }
        )
    subtotal = sum(item["amount"] for item in items)
    tax = subtotal * TAX_PERCENT // 100
    stamp = format_ts(now_us, 0, 6)
    number = f"ORD-{factory.next_number:06d}"
    factory.next_number += 1
    return {
        "id": factory.uuid(),
        "number": number,
        "customer_id": body["customer_id"],
        "status": "pending",
        "currency": body["currency"],
        "subtotal": subtotal,
        "tax": tax,
        "total": subtotal + tax,
        "line_items": items,
        "delivery_date": body.get("delivery_date"),
        "shipped_at": None,
        "created_at": stamp,
        "updated_at": stamp,
    }
