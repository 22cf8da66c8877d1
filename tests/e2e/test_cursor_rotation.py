"""A cursor the server stops accepting while a sync walks the list (issue 21, item 3).

The sandbox's `rotate_cursor_secret` makes every cursor issued so far answer 400, as a server
that rotates its cursor secret would. Rotated twice while `ciklek sync` walks orders (one worker,
then several over `updated_since` ranges): the run restarts the traversal (or each range) and
completes, the rows equal the API's, and the next run is an ordinary one. A real process: the
rotations land between its requests, timed by the sandbox's request count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DEFAULT_DB
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    ORDER_PAGES,
    SANDBOX_FLAGS,
    assert_orders_match_api,
    fast_env,
    requests_sent,
    run_sync_main,
    start_sync,
    wait_for,
)

ORDERS = ("--resources", "orders")
MID_WALK = "cursor rejected mid-traversal (bad_request); restarted from updated_since"


@pytest.mark.parametrize("workers", [1, 4])
def test_cursor_secret_rotated_twice_during_a_traversal_restarts_it_and_completes(
    sandbox_factory, clean_env: Path, tmp_path: Path, workers: int
) -> None:
    # 80 ms a page: slower than the allowance's spacing, so four workers split into ranges.
    latency = 30 if workers == 1 else 80
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", latency)
    # Chunks of 10 pages: fewer loads, and the rotations still land between two of them or in one.
    env = fast_env(
        sb, SOURCES__CIKLEK__MAX_CONCURRENCY=str(workers), SOURCES__CIKLEK__CHECKPOINT_PAGES="10"
    )
    log = tmp_path / "rotated.log"
    proc = start_sync(env, *ORDERS, cwd=clean_env, log=log)
    for at in (4, 9):  # the second rotation lands after the walk restarted from the first
        wait_for(lambda at=at: requests_sent(sb) >= at, what=f"request {at}")
        sb.control_post("rotate_cursor_secret")
    # Both rotations met (each refused a request): the rest of the walk needs no latency.
    wait_for(lambda: int(sb.stats()["by_status"].get("400", 0)) >= 2, what="both refusals")
    sb.control_post("faults", json={"latency_ms": 0})
    assert proc.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert "restarted from updated_since" in text, text
    if workers == 1:
        assert MID_WALK in text  # (a range's walk that starts with its cursor tells a stored one)
    notes = [line for line in text.splitlines() if line.startswith("note orders:")]
    assert len(notes) == len(set(notes)), notes  # one line each, however many ranges met it
    assert "a bug or an API change" not in text
    rejected = int(sb.stats()["by_status"].get("400", 0))
    # Each rotation cost each walk one refused request (one walk, or up to four ranges).
    assert 2 <= rejected <= (2 if workers == 1 else 2 * workers), text
    assert requests_sent(sb) > ORDER_PAGES  # restarted: pages before a rotation were fetched again
    db = clean_env / DEFAULT_DB
    assert_orders_match_api(db, sb)

    before = requests_sent(sb)
    again = run_sync_main(env, *ORDERS, cwd=clean_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cursor rejected" not in again.stdout
    assert requests_sent(sb) - before == 1  # nothing changed: one request from the resume point
    assert_orders_match_api(db, sb)
