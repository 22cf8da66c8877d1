"""The seeded dataset: customers, products and orders shaped like the contract, warts included.

Real API data is messier than its docs, so the generator deliberately produces what a connector
must survive: one instant rendered with several UTC offsets, fractional seconds of 0/3/6
digits, blocks of 150-300 records sharing one ``updated_at`` (larger than a 100-record page),
amounts beyond 2**53 cents, negative credit-order totals and undocumented extra fields.
Everything is a pure function of the seed, so a failing run can be replayed exactly.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from .timefmt import US_PER_DAY, US_PER_SECOND, format_date, format_ts

DATA_START_US = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * US_PER_SECOND
DATA_END_US = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) * US_PER_SECOND
"""Every generated instant lies in [DATA_START_US, DATA_END_US); the clock starts later."""

STATUSES = ("pending", "confirmed", "shipped", "delivered", "cancelled")
_CURRENCIES = ("USD",) * 16 + ("EUR", "EUR", "GBP", "JPY")
_TAX_PERCENT = 8

# (offset minutes, fractional digits, render UTC as "Z") with weights: the mix the API shows.
_STYLES: tuple[tuple[int, int, bool], ...] = (
    (0, 0, True),
    (0, 3, True),
    (0, 6, True),
    (0, 0, False),
    (330, 0, True),
    (330, 3, True),
    (-480, 0, True),
    (-480, 6, True),
    (540, 3, True),
    (-210, 0, True),
)
_STYLE_CUMULATIVE = (0.30, 0.42, 0.50, 0.55, 0.65, 0.70, 0.80, 0.85, 0.95, 1.0)
_STATUS_CUMULATIVE = (0.10, 0.25, 0.45, 0.90, 1.0)
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)

_FIRST = ("Ada", "Bo", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jules", "Kemal")
_LAST = ("Novak", "Okafor", "Park", "Quinn", "Rossi", "Sato", "Tran", "Uribe", "Varga", "Weiss")
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne")
_PRODUCT_WORDS = ("Widget", "Gadget", "Sprocket", "Bracket", "Valve", "Flange", "Gasket", "Hinge")
_CHANNELS = ("web", "pos", "api", "phone")

BAD_TIMESTAMP = "2026-13-45T99:00:00Z"

T = TypeVar("T")


@dataclass
class BadRecord:
    """A record deliberately broken for data-contract tests, listed by the stats endpoint."""

    resource: str
    id: str
    kind: str
    field: str

    def as_dict(self) -> dict[str, str]:
        return {"resource": self.resource, "id": self.id, "kind": self.kind, "field": self.field}


@dataclass
class Dataset:
    """Generated records per resource as ``(internal id, updated_at_us, record)``."""

    records: dict[str, list[tuple[str, int, dict[str, Any]]]] = field(default_factory=dict)
    bad: list[BadRecord] = field(default_factory=list)


class RecordFactory:
    """Makes single records; used for the initial dataset and for later mutations.

    It remembers the generated customers and products so orders reference real ones, and the
    next order number so created orders continue the ``ORD-`` sequence.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.customer_ids: list[str] = []
        self.products: list[tuple[str, str, int]] = []  # (id, sku, price)
        self.next_number = 1
        self.next_sku = 1

    def below(self, n: int) -> int:
        """Uniform int in [0, n); ``random()`` based because ``randrange`` is 3x slower."""
        return int(self.rng.random() * n)

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.rng.random() * len(seq))]

    def uuid(self) -> str:
        """A random version-4 UUID string, same bits as ``uuid.UUID(int=..., version=4)``."""
        h = "%032x" % ((self.rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def style(self) -> tuple[int, int, bool]:
        return _STYLES[bisect_right(_STYLE_CUMULATIVE, self.rng.random())]

    def instant(self, lo: int, hi: int, digits: int) -> int:
        """A random instant in [lo, hi) rounded down to ``digits`` fractional digits."""
        us = lo + self.below(max(1, hi - lo))
        step: int = 10 ** (6 - digits)
        return us - us % step

    def ts(self, us: int) -> str:
        offset, digits, zulu = self.style()
        return format_ts(us, offset, digits, zulu)

    def created_before(self, updated_us: int) -> int:
        back = self.below(90 * US_PER_DAY)
        return max(DATA_START_US, updated_us - back) // US_PER_SECOND * US_PER_SECOND

    def product(self, rid: str, created_us: int, updated_us: int) -> dict[str, Any]:
        rng = self.rng
        sku = f"SKU-{self.next_sku:05d}"
        self.next_sku += 1
        price = 99 + self.below(100_000 - 99)
        self.products.append((rid, sku, price))
        return {
            "id": rid,
            "sku": sku,
            "name": f"{self.pick(_PRODUCT_WORDS)} {self.pick(_PRODUCT_WORDS)} {sku[-3:]}",
            "price": price,
            "currency": "USD" if rng.random() < 0.9 else "EUR",
            "active": rng.random() < 0.85,
            "created_at": self.ts(created_us),
            "updated_at": self.ts(updated_us),
        }

    def customer(self, rid: str, created_us: int, updated_us: int) -> dict[str, Any]:
        rng = self.rng
        first, last = self.pick(_FIRST), self.pick(_LAST)
        self.customer_ids.append(rid)
        record: dict[str, Any] = {
            "id": rid,
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{self.below(1000)}@example.com",
            "company": self.pick(_COMPANIES) if rng.random() < 0.6 else None,
            "credit_limit": self.below(50_000) * 100 if rng.random() < 0.7 else None,
            "created_at": self.ts(created_us),
            "updated_at": self.ts(updated_us),
        }
        if rng.random() < 0.1:
            record["tier"] = self.pick(("gold", "silver"))
        return record

    def line_items(self, count: int, credit: bool, huge: bool) -> list[dict[str, Any]]:
        rng = self.rng
        items: list[dict[str, Any]] = []
        for n in range(count):
            if self.products:
                pid, sku, price = self.pick(self.products)
            else:
                pid, sku, price = self.uuid(), "SKU-00000", 99 + self.below(99_901)
            quantity = 1 + self.below(10)
            if huge and n == 0:
                price = rng.randrange(2**53, 10**17)
                quantity = 1
            unit_price = -price if credit else price
            items.append(
                {
                    "id": self.uuid(),
                    "product_id": pid,
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price": unit_price,
                    "amount": unit_price * quantity,
                }
            )
        return items

    def order(
        self,
        rid: str,
        created_us: int,
        updated_us: int,
        *,
        credit: bool = False,
        huge: bool = False,
    ) -> dict[str, Any]:
        rng = self.rng
        number = f"ORD-{self.next_number:06d}"
        self.next_number += 1
        status = STATUSES[bisect_right(_STATUS_CUMULATIVE, rng.random())]
        count = 1 + self.below(5) if huge or rng.random() < 0.95 else 0
        items = self.line_items(count, credit, huge)
        if items:
            subtotal = sum(item["amount"] for item in items)
        else:
            subtotal = (100 + self.below(49_900)) * (-1 if credit else 1)
        tax = subtotal * _TAX_PERCENT // 100
        shipped: str | None = None
        if status in ("shipped", "delivered"):
            shipped = self.ts(created_us + (updated_us - created_us) // 2)
        delivery: str | None = None
        if rng.random() < 0.7:
            delivery = format_date(created_us + (2 + self.below(13)) * US_PER_DAY)
        record: dict[str, Any] = {
            "id": rid,
            "number": number,
            "customer_id": self.pick(self.customer_ids) if self.customer_ids else self.uuid(),
            "status": status,
            "currency": self.pick(_CURRENCIES),
            "subtotal": subtotal,
            "tax": tax,
            "total": subtotal + tax,
            "line_items": items,
            "delivery_date": delivery,
            "shipped_at": shipped,
            "created_at": self.ts(created_us),
            "updated_at": self.ts(updated_us),
        }
        roll = rng.random()
        if roll < 0.10:
            record["channel"] = self.pick(_CHANNELS)
        elif roll < 0.15:
            record["meta"] = {"source": "edi"}
        if rng.random() < 0.08:
            # An undocumented field whose type drifts between records, as real APIs do.
            value = 1 + self.below(10**6 - 1)
            record["ext_ref"] = value if rng.random() < 0.5 else f"X{value}"
        return record

    def touch(self, resource: str, record: dict[str, Any]) -> None:
        """A plausible business change to an existing record (the caller bumps updated_at)."""
        if resource == "orders":
            record["status"] = self.pick(STATUSES)
        elif resource == "customers":
            record["credit_limit"] = self.below(50_000) * 100
        else:
            record["price"] = 99 + self.below(99_901)


def _updated_instants(rng: random.Random, factory: RecordFactory, n: int) -> list[int]:
    """Sort instants for ``n`` records, with equal-instant blocks and a sprinkle of ties."""
    instants: list[int] = []
    for _ in range(n):
        digits = factory.style()[1]
        instants.append(factory.instant(DATA_START_US, DATA_END_US, digits))
    if n >= 300:
        # ~5% of records in blocks of 150-300 sharing one instant: bigger than any page, so a
        # connector that pages by timestamp alone loops or skips; at least one block always.
        remaining = max(n // 20, 150)
        while remaining >= 150:
            size = min(rng.randrange(150, 301), n // 2, remaining)
            block_us = factory.instant(DATA_START_US, DATA_END_US, 0)
            for idx in rng.sample(range(n), size):
                instants[idx] = block_us
            remaining -= size
    for _ in range(n // 50):
        # Small ties, so the id tie-breaker matters on ordinary pages too.
        instants[rng.randrange(n)] = instants[rng.randrange(n)]
    return instants


def _corrupt(rng: random.Random, resource: str, record: dict[str, Any]) -> tuple[str, str]:
    """Break one record in one of the ways a data contract must catch; returns (kind, field)."""
    money = {"orders": "total", "customers": "credit_limit", "products": "price"}[resource]
    kinds = ["money_string", "money_float", "bad_timestamp", "missing_id"]
    if resource == "orders" and record["line_items"]:
        kinds.append("line_item_price_string")
    kind = rng.choice(kinds)
    if kind in ("money_string", "money_float"):
        cents = record.get(money)
        cents = 1250 if cents is None else cents
        record[money] = f"{cents / 100:.2f}" if kind == "money_string" else cents / 100
        return kind, money
    if kind == "bad_timestamp":
        record["created_at"] = BAD_TIMESTAMP
        return kind, "created_at"
    if kind == "missing_id":
        del record["id"]
        return kind, "id"
    item = record["line_items"][0]
    item["unit_price"] = f"{item['unit_price'] / 100:.2f}"
    return kind, "line_items.unit_price"


def generate(
    seed: int,
    orders: int,
    customers: int,
    products: int,
    bad_rate: float = 0.0,
    *,
    extreme: bool = True,
) -> tuple[Dataset, RecordFactory]:
    """Build the whole dataset; returns the factory too so mutations continue its sequences.

    `extreme`: about 1 order in 500 carries an amount beyond 2**53 cents and 1 in 33 is a
    credit (negative totals). Without it every amount is an ordinary shop's."""
    rng = random.Random(seed)
    factory = RecordFactory(rng)
    dataset = Dataset()
    makers = (
        ("products", products, factory.product),
        ("customers", customers, factory.customer),
        ("orders", orders, None),
    )
    special = random.Random(seed ^ 0x5EED)
    huge = set(special.sample(range(orders), min(orders, max(1, orders // 500))))
    credit = set(special.sample(range(orders), min(orders, max(1, orders // 33)))) - huge
    if not extreme:
        huge, credit = set(), set()
    for resource, count, maker in makers:
        rows: list[tuple[str, int, dict[str, Any]]] = []
        for idx, updated_us in enumerate(_updated_instants(rng, factory, count)):
            rid = factory.uuid()
            created_us = factory.created_before(updated_us)
            if maker is None:
                record = factory.order(
                    rid, created_us, updated_us, credit=idx in credit, huge=idx in huge
                )
            else:
                record = maker(rid, created_us, updated_us)
            rows.append((rid, updated_us, record))
        dataset.records[resource] = rows
    if bad_rate > 0:
        # A separate stream, so asking for bad records leaves every good record unchanged.
        bad_rng = random.Random(seed ^ 0xBAD)
        for resource, rows in dataset.records.items():
            for rid, _, record in rows:
                if bad_rng.random() < bad_rate:
                    kind, where = _corrupt(bad_rng, resource, record)
                    dataset.bad.append(BadRecord(resource, rid, kind, where))
    return dataset, factory
