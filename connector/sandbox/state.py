"""All mutable sandbox state in one object, shared by the API and the control endpoints.

The server is a single asyncio process, so plain dicts suffice: no handler awaits between
reading and writing state, hence no locks.
"""

from __future__ import annotations

import gc
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from .config import SandboxConfig, key_fingerprint
from .cursor import CursorCodec
from .data import DATA_END_US, generate
from .faults import FaultInjector
from .idempotency import IdempotencyStore
from .ratelimit import RateLimiter
from .store import Entry, ResourceStore, dump
from .timefmt import US_PER_DAY, SandboxClock, format_ts, parse_ts

RESOURCES: tuple[str, ...] = ("orders", "customers", "products")


class Stats:
    """Request counters for ``/_sandbox/stats``: what the connector actually sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.by_path: dict[str, int] = {}

    def record(self, path: str, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.by_path[path] = self.by_path.get(path, 0) + 1

    def reset(self) -> None:
        self.requests = 0
        self.by_status.clear()
        self.by_path.clear()


@dataclass(frozen=True)
class FieldChange:
    """Fields added to (with their value) or dropped from every record of one resource."""

    add: dict[str, Any] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()


class SandboxState:
    """Dataset, clock, limiter, faults, idempotency records and counters of one sandbox."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.keys: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in config.keys.items()}
        # Millions of fresh containers would trigger the cyclic GC over and over (a third of
        # start-up time); none of them is garbage, so pause it and freeze the survivors.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            dataset, self.factory = generate(
                config.seed,
                config.orders,
                config.customers,
                config.products,
                config.bad_records,
                extreme=config.extreme_values,
            )
            self.bad_records = [bad.as_dict() for bad in dataset.bad]
            self.stores: dict[str, ResourceStore] = {}
            for name in RESOURCES:
                store = ResourceStore(name)
                store.load(dataset.records.get(name, []))
                self.stores[name] = store
        finally:
            if gc_was_enabled:
                gc.enable()
        gc.freeze()
        # Every generated updated_at must lie strictly before the clock's start.
        real_now_us = time.time_ns() // 1000
        self.clock = SandboxClock(max(0, DATA_END_US + US_PER_DAY - real_now_us))
        self.codec = CursorCodec(config.seed)
        self.limiter = RateLimiter(config.limits, self.clock)
        self.faults = FaultInjector(config.faults, config.seed)
        self.idempotency = IdempotencyStore(self.clock)
        self.stats = Stats()
        # Deleted records by resource and id, so a test can re-create one with the same id
        # (``POST /_sandbox/records/{resource}/{id}/recreate``): a sweep must see it live again.
        self.graveyard: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in RESOURCES}
        # Share of each resource's records its list endpoint silently leaves out (meta.total
        # still counts them): a broken list, which must never look like mass deletion.
        self.hidden: dict[str, float] = {}
        # Fields the API starts sending (`add`: name -> value) or stops sending (`drop`), per
        # resource, from now on (``POST /_sandbox/fields``): how a schema changes upstream.
        self.fields: dict[str, FieldChange] = {}

    def stamp(self, store: ResourceStore) -> tuple[int, str]:
        """A fresh updated_at for ``store``: now, but after every instant it holds."""
        us = store.next_us(self.clock.now_us())
        offset, digits, zulu = self.factory.style()
        return us, format_ts(us, offset, digits, zulu)

    def stamp_late(self, late_us: int) -> tuple[int, str]:
        """An updated_at ``late_us`` before now: a change whose commit reached the API late
        (replication lag, a long transaction, a clock behind), so its position in the list
        may lie behind a cursor or a watermark a client already passed."""
        us = max(0, self.clock.now_us() - late_us)
        offset, digits, zulu = self.factory.style()
        return us, format_ts(us, offset, digits, zulu)

    def mutate(
        self, resource: str, update: int, create: int, late_seconds: float = 0.0
    ) -> dict[str, list[str]]:
        """Update ``update`` random records and create ``create`` new ones, all "now", or
        ``late_seconds`` before now (made visible late: see ``stamp_late``)."""
        store = self.stores[resource]
        rng = self.factory.rng
        late_us = round(late_seconds * 1_000_000)

        def stamp() -> tuple[int, str]:
            return self.stamp_late(late_us) if late_us > 0 else self.stamp(store)

        updated = rng.sample(sorted(store.entries), min(max(0, update), len(store)))
        for rid in updated:
            obj = dict(store.entries[rid].obj)
            self.factory.touch(resource, obj)
            us, obj["updated_at"] = stamp()
            store.put(rid, us, obj)
        created: list[str] = []
        for _ in range(max(0, create)):
            rid = self.factory.uuid()
            us, _text = stamp()
            if resource == "orders":
                obj = self.factory.order(rid, us, us)
            elif resource == "customers":
                obj = self.factory.customer(rid, us, us)
            else:
                obj = self.factory.product(rid, us, us)
            store.put(rid, us, obj)
            created.append(rid)
        return {"updated": updated, "created": created}

    def patch(self, resource: str, rid: str, changes: dict[str, Any]) -> Entry | None:
        """Merge top-level keys into a record; bump updated_at unless the patch sets it."""
        store = self.stores[resource]
        entry = store.get(rid)
        if entry is None:
            return None
        obj = dict(entry.obj)
        obj.update(changes)
        if "updated_at" in changes:
            given = changes["updated_at"]
            parsed = parse_ts(given) if isinstance(given, str) else None
            us = entry.us if parsed is None else parsed
        else:
            us, obj["updated_at"] = self.stamp(store)
        return store.put(rid, us, obj)

    def delete(self, resource: str, rid: str) -> bool:
        """Delete a record, keeping it so it can be re-created with the same id."""
        entry = self.stores[resource].get(rid)
        if entry is None:
            return False
        self.graveyard[resource][rid] = entry.obj
        return self.stores[resource].delete(rid)

    def recreate(self, resource: str, rid: str) -> Entry | None:
        """A deleted record comes back under its old id, updated "now"."""
        obj = self.graveyard[resource].pop(rid, None)
        if obj is None:
            return None
        store = self.stores[resource]
        obj = dict(obj)
        us, obj["updated_at"] = self.stamp(store)
        return store.put(rid, us, obj)

    def served(self, resource: str, entry: Entry) -> bytes:
        """A record's JSON as the API sends it now (with the field changes, if any)."""
        change = self.fields.get(resource)
        if change is None:
            return entry.body
        obj = {k: v for k, v in entry.obj.items() if k not in change.drop}
        obj.update(change.add)
        return dump(obj)

    def is_hidden(self, resource: str, rid: str) -> bool:
        """Is this record left out of its list (a stable draw per id)?"""
        share = self.hidden.get(resource, 0.0)
        if share <= 0:
            return False
        draw = int.from_bytes(hashlib.sha256(rid.encode()).digest()[:4], "big") / 2**32
        return draw < share

    def snapshot(self) -> dict[str, Any]:
        """The ``/_sandbox/stats`` document."""
        return {
            "requests": self.stats.requests,
            "by_status": dict(self.stats.by_status),
            "by_path": dict(self.stats.by_path),
            # keys by fingerprint only: the stats document is for logs and dashboards
            "counted_today": {
                key_fingerprint(key): n for key, n in self.limiter.counted_today().items()
            },
            "bad_records": list(self.bad_records),
            "counts": {name: len(store) for name, store in self.stores.items()},
            "faults_injected": dict(self.faults.injected),
            "hidden": dict(self.hidden),
            "now": format_ts(self.clock.now_us(), 0, 6),
        }
