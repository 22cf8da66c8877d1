"""Money and instants survive a real sync exactly: sandbox over HTTP → run_sync → DuckDB.

Hypothesis draws values, the sandbox serves them (PATCH /_sandbox/records/orders/{id}), one
sync loads them, and DuckDB must hold exactly `Decimal(cents) / 100` and the same UTC instant.
Many values share one sync per example to keep the runtime low: each of 5 examples patches 20-40
of the 40 orders (a fresh sync costs seconds, a patched record almost nothing), so a handful of
examples covers more drawn values than many examples of a few records each would.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
from collections.abc import Iterator
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.runs.sync import run_sync
from tests.helpers import query
from tests.sandbox_proc import SandboxProcess

ORDERS = 40
FLAGS = ("--orders", ORDERS, "--customers", 3, "--products", 3, "--window-limit", 1_000_000)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Up to 36 integer digits: beyond 64 bits orjson refuses the page and stdlib json takes over.
DECIMAL38 = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
MONEY = st.one_of(st.none(), INT64, INT64, DECIMAL38)
INSTANTS = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
    lambda d: d.replace(tzinfo=dt.UTC)
)
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)
_CTX = Context(prec=40)  # for the expected values: the default 28 digits would round them


def render(utc: dt.datetime, offset: int, digits: int, zulu: bool) -> str:
    local = (utc + dt.timedelta(minutes=offset)).replace(tzinfo=None)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    if zulu and offset == 0:
        return text + "Z"
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@st.composite
def stamp(draw: Any) -> tuple[str, dt.datetime]:
    """An ISO string as the API might write it, and the UTC instant it means."""
    utc = draw(INSTANTS)
    if draw(st.integers(0, 9)) == 0:  # a bare date: 00:00 UTC
        day = utc.date()
        return day.isoformat(), dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    digits = draw(st.integers(0, 6))
    utc = utc.replace(microsecond=utc.microsecond - utc.microsecond % 10 ** (6 - digits))
    zulu = draw(st.booleans())
    offset = 0 if zulu else draw(OFFSETS)
    return render(utc, offset, digits, zulu), utc


CHANGE = st.fixed_dictionaries(
    {
        "subtotal": MONEY,
        "tax": MONEY,
        "total": MONEY,
        "updated_at": stamp(),
        "shipped_at": st.one_of(st.none(), stamp()),
        "delivery_date": st.one_of(st.none(), st.dates(dt.date(1900, 1, 1), dt.date(9999, 12, 31))),
    }
)


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess(*[str(f) for f in FLAGS]) as sb:
        yield sb


def order_ids(sb: SandboxProcess) -> list[str]:
    with sb.client() as http:
        body = http.get("/orders", params={"limit": 100}).json()
    ids = sorted(record["id"] for record in body["data"])
    assert len(ids) == ORDERS
    return ids


def env_for(sb: SandboxProcess, mp: pytest.MonkeyPatch) -> None:
    mp.setenv("SOURCES__CIKLEK__BASE_URL", sb.url)
    mp.setenv("SOURCES__CIKLEK__API_KEY", sb.key)
    mp.setenv("SOURCES__CIKLEK__REQUESTS_PER_MINUTE", "1000000")


def fresh_sync(workdir: Path, name: str) -> tuple[SyncResult, Path]:
    """A first sync into its own pipeline and DuckDB file (every record is loaded)."""
    db = workdir / f"{name}.duckdb"
    result = run_sync(
        SyncOptions(resources=["orders"], pipeline=name, duckdb_file=str(db), progress=False)
    )
    return result, db


def patch(sb: SandboxProcess, rid: str, changes: dict[str, Any]) -> None:
    response = sb.control_request("PATCH", f"records/orders/{rid}", json=changes)
    assert response.status_code == 200, response.text


def test_money_and_instants_round_trip_exactly(shared_sandbox: SandboxProcess) -> None:
    sb = shared_sandbox
    ids = order_ids(sb)
    counter = itertools.count()
    workdir = Path(tempfile.mkdtemp(prefix="roundtrip-"))

    @settings(
        max_examples=5,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(CHANGE, min_size=ORDERS // 2, max_size=ORDERS))
    def check(changes: list[dict[str, Any]]) -> None:
        expected: dict[str, dict[str, Any]] = {}
        for rid, change in zip(ids, changes, strict=False):
            body = {k: v for k, v in change.items() if k not in ("updated_at", "shipped_at")}
            body["delivery_date"] = change["delivery_date"] and change["delivery_date"].isoformat()
            body["updated_at"] = change["updated_at"][0]
            body["shipped_at"] = change["shipped_at"] and change["shipped_at"][0]
            patch(sb, rid, body)
            expected[rid] = {
                **{
                    k: None if change[k] is None else Decimal(change[k]).scaleb(-2, _CTX)
                    for k in ("subtotal", "tax", "total")
                },
                "updated_at": change["updated_at"][1],
                "shipped_at": change["shipped_at"] and change["shipped_at"][1],
                "delivery_date": change["delivery_date"],
            }
        result, db = fresh_sync(workdir, f"rt{next(counter)}")
        assert result.exit_code == 0, result.messages
        assert result.report.outcome("orders").rejects == 0
        assert query(db, "select count(*) from ciklek.orders") == [(ORDERS,)]
        listed = ", ".join(f"'{rid}'" for rid in expected)
        rows = query(
            db,
            "select id, subtotal, tax, total, updated_at, shipped_at, delivery_date "
            f"from ciklek.orders where id in ({listed})",
        )
        got = {
            r[0]: dict(
                zip(
                    ("subtotal", "tax", "total", "updated_at", "shipped_at", "delivery_date"),
                    r[1:],
                    strict=True,
                )
            )
            for r in rows
        }
        assert got == expected
        for row in got.values():  # exact, not merely equal: two decimal places always
            for name in ("subtotal", "tax", "total"):
                if row[name] is not None:
                    assert row[name].as_tuple().exponent == -2

    with pytest.MonkeyPatch.context() as mp:
        env_for(sb, mp)
        check()


def test_oversized_money_rejects_only_its_record(sandbox_factory, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    ids = order_ids(sb)
    too_big, too_small, beyond_64_bits, nested = ids[0], ids[1], ids[2], ids[3]
    patch(sb, too_big, {"total": 10**38})
    patch(sb, too_small, {"tax": -(10**38) - 5})
    patch(sb, beyond_64_bits, {"total": 2**64 + 1, "subtotal": 10**38 - 1})
    raw = sb.control_request("GET", f"records/orders/{nested}").json()
    items = raw["line_items"] or [{"id": "only-item"}]
    items[0] = {**items[0], "amount": 10**40}
    patch(sb, nested, {"line_items": items})

    with pytest.MonkeyPatch.context() as mp:
        env_for(sb, mp)
        result, db = fresh_sync(clean_env, "oversized")
    assert result.exit_code == 0
    assert result.report.outcome("orders").rejects == 3
    # The rest of the page (and of every page) loaded; the bad ones are quarantined.
    loaded = {r[0] for r in query(db, "select id from ciklek.orders")}
    assert loaded == set(ids) - {too_big, too_small, nested}
    assert query(
        db, f"select total, subtotal from ciklek.orders where id = '{beyond_64_bits}'"
    ) == [(Decimal("184467440737095516.17"), Decimal("999999999999999999999999999999999999.99"))]
    assert query(
        db, f"select count(*) from ciklek.order_line_items where order_id = '{nested}'"
    ) == [(0,)]
    rejects = dict(query(db, "select record_id, reason from ciklek._ciklek_rejects"))
    assert set(rejects) == {too_big, too_small, nested}
    assert rejects[too_big].startswith("total: money 1000")
    assert "does not fit DECIMAL(38,2)" in rejects[too_big]
    assert rejects[too_small].startswith("tax: money -1000")
    assert rejects[nested].startswith("line_items[0].amount: money")
    raw_json = query(
        db, f"select raw_json from ciklek._ciklek_rejects where record_id = '{too_big}'"
    )[0][0]
    assert '"total": 1' + "0" * 38 in raw_json  # the raw record, digits intact
