"""`daily_request_budget` holds under SIGKILL (issue 21, item 1).

Syncs of every resource are killed at random instants (after a random number of requests, then
a random few milliseconds: in a walk, a load, the first allowance's load), with one, two or four
workers (ranges split: pages are slower than the allowance's spacing), some on a runner that
lost its local ledger (an ephemeral one: the count is rebuilt from the warehouse). After each
kill, the count the next run starts from, kept locally or rebuilt from the warehouse, is at least
what the sandbox received; then runs go on until the budget stops them, and the sandbox never
received more than the budget that day. Real processes: SIGKILL is the point. The RNG is seeded
and the seed printed (`CIKLEK_KILL_SEED=<seed>` replays a run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import dlt

from connector.api.ledger import utc_today
from connector.warehouse.run_log import restore_ledger
from tests.e2e.test_concurrency import set_latency
from tests.helpers import DEFAULT_DB
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    SANDBOX_FLAGS,
    env_home,
    fast_env,
    requests_sent,
    run_sync_main,
    start_sync,
    wait_for,
)

BUDGET = 40  # a whole sync of the data is 23 pages: kills and the budget stop it first
KILLS = 4


def _counted_locally(home: Path, key: str) -> int:
    try:
        ledger = json.loads((home / "ledger.json").read_text())
    except FileNotFoundError:
        return 0
    return sum(ledger.get(key, {}).get(utc_today(), {}).values())


def _rebuilt_from_warehouse(db: Path, key: str, scratch: Path) -> int:
    """What a runner without a local ledger starts from: `restore_ledger` on the warehouse."""
    if not db.exists():
        return 0
    scratch.mkdir(mode=0o700, exist_ok=True)
    pipeline = dlt.pipeline(
        pipeline_name="ciklek",
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name="ciklek",
        pipelines_dir=str(scratch / "pipelines"),
    )
    ledger = scratch / "ledger.json"
    ledger.unlink(missing_ok=True)
    return restore_ledger(pipeline, "ciklek", ledger, key)


def test_sigkill_at_random_instants_never_lets_the_budget_be_overshot(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CIKLEK_KILL_SEED") or random.randrange(2**32))
    print(f"CIKLEK_KILL_SEED={seed}")
    rng = random.Random(seed)
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 60)
    env = fast_env(sb, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET=str(BUDGET))
    home, key, db = env_home(env), sb.fingerprint(sb.key), clean_env / DEFAULT_DB
    kills, spent = 0, False
    for round_ in range(KILLS):
        workers = rng.choice((1, 2, 4))
        ephemeral = rng.random() < 0.5
        if ephemeral:  # a fresh runner: only the warehouse knows today's count
            (home / "ledger.json").unlink(missing_ok=True)
        before, after = requests_sent(sb), rng.randint(1, 6)
        log = tmp_path / f"round-{round_}.log"
        run_env = dict(env, SOURCES__CIKLEK__MAX_CONCURRENCY=str(workers))
        proc = start_sync(run_env, cwd=clean_env, log=log)
        wait_for(
            lambda n=before + after, p=proc: requests_sent(sb) >= n or p.poll() is not None,
            timeout=60,
            what=f"request {before + after}",
        )
        time.sleep(rng.uniform(0.0, 0.08))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        code = proc.wait(timeout=30)
        sent = requests_sent(sb)
        where = (
            f"seed {seed}, round {round_} ({workers} workers, ephemeral {ephemeral}, exit {code})"
        )
        assert sent <= BUDGET, where
        # The next run starts from at least what was sent, whichever runner it is on.
        assert _counted_locally(home, key) >= sent, where
        assert _rebuilt_from_warehouse(db, key, tmp_path / "scratch") >= sent, where
        spent = code == 75 and "daily request budget" in log.read_text()
        if spent:
            break
    assert kills >= KILLS // 2, f"seed {seed}: the runs ended before they could be killed"

    set_latency(sb, 0)  # slow pages were for the kills: the runs below need none
    for _ in range(0 if spent else 6):  # until the budget stops a run (or nothing is left)
        done = run_sync_main(env, cwd=clean_env)
        assert requests_sent(sb) <= BUDGET, f"seed {seed}: " + done.stdout
        if done.returncode == 75 and "daily request budget" in done.stdout:
            break
        assert done.returncode == 0, done.stdout + done.stderr
    assert requests_sent(sb) <= BUDGET
    counted = sb.stats()["counted_today"].get(key, 0)
    assert counted <= BUDGET  # the API's own count of the day, by key
