"""One traversal walked in `updated_since` ranges by several workers (issue 13, items 2-4).

Real `ciklek sync` runs against a sandbox with added latency (so ranges overlap) and results
compared with a sequential sync (`max_concurrency` 1) row for row, or with what the API serves.
The data is shaped through the sandbox's control API so the cut a split makes is known.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_concurrency import _sandbox, dump, reference_env, set_latency
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    CHUNK_PAGES,
    api_records,
    fast_env,
    read_status,
    requests_after_kill,
    requests_sent,
    run_sync_cli,
    run_sync_main,
    start_sync,
    wait_for,
)

PAGE = 20
ORDER_TABLES = ("orders", "order_line_items", "_ciklek_rejects")
SPLIT = re.compile(r"^split orders: at ([^,\s]+)", re.M)


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamps(records: list[dict[str, Any]]) -> list[dt.datetime]:
    """The records' updated_at, those the sandbox's bad records garble left out."""
    out = []
    for record in records:
        try:
            out.append(_instant(record["updated_at"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _in_order(sb: SandboxProcess) -> list[dict[str, Any]]:
    """The whole list as the API serves it, in its order (records without an id included)."""
    records, after = [], None
    while True:
        body = _list(sb, **({"after": after} if after else {}))
        records += body["data"]
        after = body["meta"]["next_cursor"]
        if after is None:
            return records


def _list(sb: SandboxProcess, **params: Any) -> dict[str, Any]:
    with sb.client() as http:
        body: dict[str, Any] = http.get("/orders", params={"limit": PAGE, **params}).json()
        return body


def test_a_split_at_a_block_of_equal_updated_at_loads_what_a_sequential_sync_loads(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    # A backfill window [since, until): its first page ends at A, so the first split cuts at
    # M = A + (until - A) / 2. Sixty orders (three pages) are moved to exactly M, among them the
    # ones right after page 1: the page in flight when the split happens reaches into the block.
    # Shaped with no added latency (the listing is 20 pages); the sync gets its 150 ms per page.
    sb = _sandbox(sandbox_factory, "--bad-records", "0.03")
    first, listed = _list(sb)["data"], _in_order(sb)
    since, a = _stamps(first)[0], _stamps(first)[-1]
    until = _stamps(listed)[-1] + dt.timedelta(seconds=1)  # the whole list
    cut = (a + (until - a) / 2).replace(microsecond=0)  # cuts are whole seconds
    ordered = [r["id"] for r in listed[PAGE:] if "id" in r]
    with httpx.Client(base_url=sb.control, headers=sb.control_headers("PATCH")) as control:
        for rid in ordered[:60] + ordered[250:280]:  # right after page 1, and 30 far from it
            response = control.patch(f"/records/orders/{rid}", json={"updated_at": _stamp(cut)})
            assert response.status_code == 200, response.text
    assert _list(sb)["data"] == first  # page 1 unchanged: A, and so the cut, stand
    set_latency(sb, 150)

    # orders alone: no other resource holds a worker, so the first split follows page 1.
    window = ("--since", _stamp(since), "--until", _stamp(until), "--resources", "orders")
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4", SOURCES__CIKLEK__PAGE_SIZE=str(PAGE))
    result = run_sync_main(env, *window, cwd=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    cuts = SPLIT.findall(result.stderr)
    assert cuts and _instant(cuts[0]) == cut, (cuts, cut)  # the first split cut at the block
    assert len(set(_at_cut(clean_env))) == 1 and len(_at_cut(clean_env)) >= 90

    seq_env = reference_env(sb, env, tmp_path / "h")
    (tmp_path / "seq").mkdir()
    seq = run_sync_main(seq_env, *window, cwd=tmp_path / "seq")
    assert seq.returncode == 0, seq.stdout + seq.stderr
    expected = dump(tmp_path / "seq" / DEFAULT_DB, ORDER_TABLES)
    parallel = dump(clean_env / DEFAULT_DB, ORDER_TABLES)
    assert expected["_ciklek_rejects"], "the sandbox's bad records should have been rejected"
    for table in ORDER_TABLES:
        assert parallel[table] == expected[table], table


def _at_cut(cwd: Path) -> list[Any]:
    """updated_at of the orders loaded at the block's instant (the most common one)."""
    rows = query(
        cwd / DEFAULT_DB,
        "select updated_at from ciklek.orders where updated_at = "
        "(select updated_at from ciklek.orders group by 1 order by count(*) desc limit 1)",
    )
    return [r[0] for r in rows]


def test_records_updated_during_a_split_traversal_load_their_newest_version(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb = _sandbox(sandbox_factory, "--latency-ms", 120)
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4", SOURCES__CIKLEK__CHECKPOINT_PAGES="6")
    log = tmp_path / "sync.log"
    proc = start_sync(env, cwd=clean_env, log=log)
    wait_for(lambda: "split orders:" in log.read_text(), what="orders split into ranges")
    # Updated (and created) while ranges walk: each moves to the end of the list.
    changed = sb.control_post("mutate", resource="orders", update=40, create=5)
    assert proc.wait(timeout=120) == 0, log.read_text()
    assert changed

    truth = api_records(sb)
    rows = query(clean_env / DEFAULT_DB, "select id, status, total, updated_at from ciklek.orders")
    loaded = {r[0]: r for r in rows}
    assert set(loaded) == set(truth)  # nothing lost, nothing extra
    for rid, record in truth.items():
        # The newest version of every order: none left stale by a range that met it earlier.
        assert loaded[rid][3] == _instant(record["updated_at"]), rid
        assert loaded[rid][1] == record["status"], rid
    items = query(
        clean_env / DEFAULT_DB,
        "select order_id, count(*) from ciklek.order_line_items group by 1",
    )
    assert {oid: n for oid, n in items} == {
        rid: len(r["line_items"]) for rid, r in truth.items() if r["line_items"]
    }  # line items replaced as a set: each order has exactly its current items


def test_a_quota_stop_in_ranges_spends_nothing_beyond_the_budget_and_resumes_every_range(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb = _sandbox(sandbox_factory, "--latency-ms", 60)
    budget = 9
    env = fast_env(
        sb,
        SOURCES__CIKLEK__MAX_CONCURRENCY="4",
        SOURCES__CIKLEK__DAILY_REQUEST_BUDGET=str(budget),
        SOURCES__CIKLEK__CHECKPOINT_PAGES="100",  # one chunk: every worker races for the budget
    )
    only_orders = ("--resources", "orders")
    spent = run_sync_main(env, *only_orders, cwd=clean_env)
    assert spent.returncode == 75, spent.stdout + spent.stderr
    assert SPLIT.search(spent.stderr), "orders should have been split into ranges"
    assert requests_sent(sb) == budget  # not one request past the budget, four workers or not
    status = query(clean_env / DEFAULT_DB, "select count(*) from ciklek.orders")[0][0]
    assert 0 < status <= budget * PAGE

    again = run_sync_main(env, *only_orders, cwd=clean_env)
    assert again.returncode == 75 and requests_sent(sb) == budget  # nothing left today

    sb.control_post("new_day")
    unlimited = dict(env, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="10000")
    done = run_sync_main(unlimited, *only_orders, cwd=clean_env)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = requests_sent(sb)
    truth = api_records(sb)
    rows = query(clean_env / DEFAULT_DB, "select id, updated_at from ciklek.orders")
    assert {r[0]: r[1] for r in rows} == {
        rid: _instant(r["updated_at"]) for rid, r in truth.items()
    }
    # Every range resumed from its own cursor: the two runs together sent the list's pages, plus
    # one per split (a range's last page is partial) and one for the open range's last look.
    pages = -(-len(truth) // PAGE)
    splits = sum(len(SPLIT.findall(run.stderr)) for run in (spent, again, done))
    assert sent <= pages + splits + 1, (sent, pages, splits)


def test_sigkill_while_in_ranges_then_rerun_loses_duplicates_and_re_spends_nothing_more(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb = _sandbox(sandbox_factory, "--latency-ms", 80, "--bad-records", "0.03")
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4")  # chunks of 3 pages
    home = Path(env["CIKLEK_HOME"])
    log = tmp_path / "killed.log"
    proc = start_sync(env, "--resources", "orders", cwd=clean_env, log=log)

    def ranges_committed() -> bool:
        status = read_status(home) or {}
        trav = (status.get("resources") or {}).get("orders", {}).get("traversal") or {}
        return len(trav.get("ranges") or ()) >= 2

    wait_for(ranges_committed, what="a commit with orders in two ranges or more")
    committed = requests_sent(sb)
    wait_for(lambda: requests_sent(sb) >= committed + 2, what="the next chunk's pages")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    killed = requests_after_kill(sb)

    # The rerun resumes every stored range; how fast its pages come and how it commits is not
    # the point: no latency, one chunk.
    sb.control_post("faults", json={"latency_ms": 0})
    one_chunk = dict(env, SOURCES__CIKLEK__CHECKPOINT_PAGES="100")
    rerun = run_sync_main(one_chunk, "--resources", "orders", cwd=clean_env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    resumed = requests_sent(sb) - killed
    splits = len(SPLIT.findall(log.read_text())) + len(SPLIT.findall(rerun.stderr))

    seq_env = reference_env(sb, env, tmp_path / "h")
    (tmp_path / "seq").mkdir()
    before = requests_sent(sb)
    seq = run_sync_main(seq_env, "--resources", "orders", cwd=tmp_path / "seq")
    assert seq.returncode == 0, seq.stdout + seq.stderr
    clean = requests_sent(sb) - before
    assert killed < clean, "the sync finished before it could be killed"
    # Nothing lost, nothing duplicated: the same rows (and rejects) as one sequential sync.
    expected = dump(tmp_path / "seq" / DEFAULT_DB, ORDER_TABLES)
    assert dump(clean_env / DEFAULT_DB, ORDER_TABLES) == expected
    # All ranges together re-spent at most the one chunk in flight (3 pages), beyond what
    # ranges cost anyway: one request per split and the open range's last look.
    assert killed + resumed <= clean + CHUNK_PAGES + splits + 1, (killed, resumed, clean, splits)


def test_after_a_spent_server_quota_one_request_tells_whether_it_is_back(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = _sandbox(sandbox_factory, "--latency-ms", 40, "--daily-quota", 9)
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4")
    first = run_sync_main(env, "--resources", "orders", cwd=clean_env)
    assert first.returncode == 75, first.stdout + first.stderr
    # When the quota resets: "resume after <instant>", or in the stop's own words when the worker
    # that recorded the stop first was refused by the limiter ("... before <instant>").
    assert re.search(r"(resume after|before) \d{4}-\d\d-\d\dT00:00:00Z", first.stdout), first.stdout
    before = requests_sent(sb)
    again = run_sync_main(env, "--resources", "orders", cwd=clean_env)
    assert again.returncode == 75, again.stdout + again.stderr
    # Four workers, ranges waiting in state: still one request (refused) before they stop.
    assert requests_sent(sb) - before == 1


def test_stored_cursors_of_every_range_rejected_restart_each_range(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = _sandbox(sandbox_factory, "--latency-ms", 80)
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4")
    only_orders = ("--resources", "orders")
    stopped = run_sync_main(env, *only_orders, "--max-requests", "10", cwd=clean_env)
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    status = read_status(Path(env["CIKLEK_HOME"])) or {}
    assert len(status["resources"]["orders"]["traversal"]["ranges"]) >= 2
    sb.control_post("rotate_cursor_secret")  # every stored cursor is answered 400 from now on

    done = run_sync_main(env, *only_orders, cwd=clean_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored cursor rejected (bad_request); restarted from updated_since" in done.stdout
    truth = api_records(sb)
    rows = query(clean_env / DEFAULT_DB, "select id, updated_at from ciklek.orders")
    assert {r[0]: r[1] for r in rows} == {
        rid: _instant(r["updated_at"]) for rid, r in truth.items()
    }


def test_fast_pages_never_split_so_a_backfill_costs_its_pages_only(
    sandbox_factory: Any, clean_env: Path
) -> None:
    # Pages answered in a few ms: one worker keeps up with any allowance, a split would only
    # cost a request (bench sections 1-4 stay at the minimum for this reason).
    sb = _sandbox(sandbox_factory)
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4")
    # A process of its own: "fast" is a page under 50 ms, timed in the process that sends it;
    # run inside a test worker on a loaded machine, a page measured slower and the run split.
    result = run_sync_cli(env, "--resources", "orders", cwd=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not SPLIT.search(result.stderr)
    assert requests_sent(sb) == 20  # 400 orders, pages of 20: the minimum
