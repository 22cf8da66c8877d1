"""The sandbox and the demo cannot be abused: a guarded control API, no raw keys in /stats, no
leaked secrets in the child's environment, no server outliving its parent, no file clobbered."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import CIKLEK_BIN
from tests.sandbox_proc import TOKEN_HEADER, SandboxProcess

SECRET_KEY = "bsk_live_sentinel_never_leaves_the_parent_0123456789"
SECRET_DSN = "postgresql://u:sentinel_pw@127.0.0.1:1/db"
FULL = "bsk_test_guard_full"
READER = "bsk_test_guard_reader"


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxProcess]:
    flags = ["--orders", "20", "--customers", "5", "--products", "5"]
    flags += ["--key", f"{FULL}=orders:read,customers:read", "--key", f"{READER}=orders:read"]
    with SandboxProcess(*flags) as sandbox:
        yield sandbox


def clock_offset(sb: SandboxProcess) -> float:
    """How far the sandbox clock has been advanced (advancing it by 0 to read it)."""
    value: float = sb.control_post("clock", advance=0)["offset_seconds"]
    return value


def test_control_token_is_announced_and_differs_per_start(sb: SandboxProcess) -> None:
    assert len(sb.control_token) >= 24
    with SandboxProcess("--orders", "2", "--customers", "1", "--products", "1") as other:
        assert other.control_token and other.control_token != sb.control_token


NO_TOKEN = {TOKEN_HEADER: ""}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (NO_TOKEN, 403),
        ({TOKEN_HEADER: "guessed"}, 403),  # wrong token
        ({"Host": "evil.example"}, 403),  # DNS rebinding: a foreign Host
        ({"Host": "127.0.0.1.evil.example:80"}, 403),
        ({"Origin": "http://evil.example"}, 403),  # a page elsewhere posting to us
        ({"Origin": "null"}, 403),
        ({"Content-Type": "text/plain"}, 415),  # a CORS "simple request"
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),  # an HTML form
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
    ],
)
def test_control_calls_a_browser_could_send_are_refused_and_change_nothing(
    sb: SandboxProcess, headers: dict[str, str], status: int
) -> None:
    before = clock_offset(sb)
    sent = {TOKEN_HEADER: sb.control_token, "Content-Type": "application/json", **headers}
    if not sent[TOKEN_HEADER]:
        del sent[TOKEN_HEADER]
    response = httpx.post(
        f"{sb.control}/clock", params={"advance": 86_400}, content=b"{}", headers=sent
    )
    assert response.status_code == status, response.text
    assert clock_offset(sb) == before  # the clock did not move


def test_post_without_any_content_type_is_refused(sb: SandboxProcess) -> None:
    # fetch(url, {method: "POST", mode: "no-cors"}) sends no Content-Type at all.
    response = httpx.post(f"{sb.control}/new_day", headers={TOKEN_HEADER: sb.control_token})
    assert response.status_code == 415


def test_get_needs_the_token_too(sb: SandboxProcess) -> None:
    assert httpx.get(f"{sb.control}/stats").status_code == 403
    assert httpx.get(f"{sb.control}/stats", headers={"Host": "localhost"}).status_code == 403
    ok = httpx.get(f"{sb.control}/stats", headers={TOKEN_HEADER: sb.control_token})
    assert ok.status_code == 200 and ok.json()["counts"]["orders"] == 20


def test_the_guard_accepts_loopback_names_and_json(sb: SandboxProcess) -> None:
    port = sb.control.split(":")[2].split("/")[0]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        response = httpx.post(
            f"{sb.control}/faults",
            json={"latency_ms": 0},
            headers={TOKEN_HEADER: sb.control_token, "Host": host, "Origin": "http://localhost"},
        )
        assert response.status_code == 200, (host, response.text)


def test_v1_needs_no_control_token(sb: SandboxProcess) -> None:
    with sb.client(FULL) as api:
        assert api.get("/orders", params={"limit": 1}).status_code == 200


def test_stats_show_key_fingerprints_never_raw_keys(sb: SandboxProcess) -> None:
    with sb.client(FULL) as api, sb.client(READER) as reader:
        api.get("/orders", params={"limit": 1})
        reader.get("/orders", params={"limit": 1})
    raw = sb.control_request("GET", "stats").text
    assert FULL not in raw and READER not in raw and "bsk_" not in raw
    counted = json.loads(raw)["counted_today"]
    assert set(counted) == {sb.fingerprint(FULL), sb.fingerprint(READER)}
    assert counted[sb.fingerprint(READER)] >= 1


# --- the demo's child ----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _listening(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


def _wait_closed(url: str, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _listening(url):
            return True
        time.sleep(0.1)
    return False


def _start_demo(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "SOURCES__CIKLEK__API_KEY": SECRET_KEY,
        "DESTINATION__POSTGRES__CREDENTIALS": SECRET_DSN,
        "CIKLEK_TEST_PG_DSN": SECRET_DSN,
    }
    demo = subprocess.Popen(
        [CIKLEK_BIN, "demo", "--orders", "20000", "--file", str(tmp_path / "demo.duckdb")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert demo.stdout is not None
    line = demo.stdout.readline()  # "sandbox running at http://127.0.0.1:PORT/v1 with ..."
    assert line.startswith("sandbox running at "), line
    return demo, line.split()[3]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_demo_sandbox_gets_no_secrets_and_dies_with_the_demo(
    tmp_path: Path, how: signal.Signals
) -> None:
    demo, url = _start_demo(tmp_path)
    children = _children(demo.pid)
    try:
        assert len(children) == 1
        environ = Path(f"/proc/{children[0]}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert not {n for n in names if n.startswith(("SOURCES__", "DESTINATION__"))}
        assert b"sentinel" not in b"\0".join(environ)
        assert "PATH" in names
        assert _listening(url)
        demo.send_signal(how)
        assert demo.wait() == -how
        assert _wait_closed(url), "the demo's sandbox kept listening after the demo died"
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_sandbox_watchdog_stops_it_when_the_parent_dies_without_pdeathsig() -> None:
    """The fallback: a parent that asked the kernel for nothing, killed with SIGKILL."""
    starter = (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-m', 'connector.sandbox', "
        "'--port', '0', '--orders', '5', '--exit-with-parent']).wait()"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    banner = json.loads(parent.stdout.readline())
    children = _children(parent.pid)
    try:
        assert _listening(banner["url"] + "/orders")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_closed(banner["url"] + "/orders"), "the sandbox outlived its parent"
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_demo_refuses_to_replace_a_file_that_is_not_duckdb(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    done = subprocess.run(
        [CIKLEK_BIN, "demo", "--orders", "10", "--file", str(notes)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a DuckDB database" in lines[0], done.stderr
    assert notes.read_text() == "my notes\n"
    assert "sandbox running" not in done.stdout  # refused before anything started
