"""Clean shutdown (docs/operations.md §6.4): ``appt-pipeline serve`` and ``dev`` stop within 15 s on SIGTERM and on
SIGINT sent by a supervisor — not a terminal: the command runs in its own session without a tty, with SIGINT
inherited as ignored (as a background job of a non-interactive shell gets it), and the signal goes to its pid
only. Every child process is gone afterwards, the embedded PostgreSQL is stopped, and a delivery in flight when
the signal came is answered and stored."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appt_pipeline.domain.signatures import ghl_ed25519_signature, public_key_text
from appt_pipeline.store.workspaces import set_secret
from appt_pipeline_tests.helpers import SECRET_KEY, free_port, rows, seed

CLI = str(Path(sys.executable).with_name("appt-pipeline"))
STOP_WITHIN_S = 15.0
KEY = Ed25519PrivateKey.generate()


def _supervised(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start like a supervisor would: own session, no tty, stdin from /dev/null, output to a file, SIGINT ignored."""
    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    out = log.open("wb")
    try:
        return subprocess.Popen([CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=ignore_sigint)
    finally:
        out.close()


def _wait_until(check: Any, proc: subprocess.Popen[bytes], log: Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s:\n" + log.read_text(errors="replace")[-4000:]
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes], signum: int, log: Path) -> tuple[float, list[psutil.Process]]:
    """Send ``signum`` to the process (not its group); return how long it took to exit and what it had running."""
    children = psutil.Process(proc.pid).children(recursive=True)
    started = time.monotonic()
    os.kill(proc.pid, signum)
    try:
        proc.wait(timeout=STOP_WITHIN_S + 30)
    except subprocess.TimeoutExpired:
        for child in children:  # `dagster dev` runs in a session of its own: not in our group
            child.kill()
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("did not stop:\n" + log.read_text(errors="replace")[-4000:]) from None
    return time.monotonic() - started, children


def _alive(processes: list[psutil.Process]) -> list[str]:
    time.sleep(0.5)
    return [" ".join(p.cmdline())[:200] for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _postgres_of(home: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(home) in cmdline and "postgres" in (p.info["name"] or "") + cmdline:
            found.append(cmdline[:200])
    return found


@pytest.fixture(autouse=True)
def _leave_nothing_behind(tmp_path: Path) -> Iterator[None]:
    """After a failed test: end what it started and left running (processes naming its folder), PostgreSQL with a
    fast shutdown."""
    yield
    for p in psutil.process_iter(["name", "cmdline"]):
        if str(tmp_path) in " ".join(p.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGINT) if "postgres" in (p.info["name"] or "") else p.kill()


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("APPT_DATABASE_URL", "APPT_DAGSTER_PG_URL", "DAGSTER_HOME")}
    env.update(APPT_HOME=str(tmp_path / "appt"), APPT_SECRET_KEY=SECRET_KEY)
    return env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_on_the_embedded_postgres_stops_everything(tmp_path: Path, signum: int) -> None:
    env = _embedded_env(tmp_path)
    upgraded = subprocess.run([CLI, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=180)
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    assert _postgres_of(tmp_path) == []  # db upgrade stopped its server at exit
    port, log = free_port(), tmp_path / "serve.log"
    proc = _supervised(["serve", "--port", str(port)], env, log)
    _wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, proc, log, 120,
                "serve did not become healthy")
    assert _postgres_of(tmp_path), "serve runs on the embedded PostgreSQL"
    took, children = _stop(proc, signum, log)
    output = log.read_text(errors="replace")
    assert took < STOP_WITHIN_S, (took, output[-3000:])
    assert proc.returncode == 0, output[-3000:]
    assert "Application shutdown complete" in output
    assert _alive(children) == []
    assert _postgres_of(tmp_path) == [], "the embedded PostgreSQL was left running"


@pytest.fixture()
def ghl_workspace(db: sa.Engine) -> Iterator[str]:
    seed(db, "ghl-s", leads=0)
    set_secret(db, "ghl-s", "ghl_webhook_public_key", public_key_text(KEY.public_key()), SECRET_KEY)
    yield "ghl-s"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_and_stores_the_delivery_in_flight_when_the_signal_comes(
        db: sa.Engine, database_url: str, tmp_path: Path, ghl_workspace: str, signum: int) -> None:
    env = {**os.environ, "APPT_DATABASE_URL": database_url, "APPT_SECRET_KEY": SECRET_KEY,
           "APPT_HOME": str(tmp_path / "appt"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    port, log = free_port(), tmp_path / "serve.log"
    proc = _supervised(["serve", "--port", str(port)], env, log)
    _wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, proc, log, 60,
                "serve did not become healthy")
    body = json.dumps({"type": "AppointmentCreate", "webhookId": f"wh-inflight-{signum}",
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "appointment": {"id": f"a-inflight-{signum}", "contactId": "c1"}}).encode()
    head = (f"POST /webhooks/ghl/{ghl_workspace} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-GHL-Signature: {ghl_ed25519_signature(KEY, body)}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(head + body[:10])  # the delivery is in flight: headers and part of the body sent
        time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        started = time.monotonic()
        os.kill(proc.pid, signum)
        time.sleep(1.0)
        conn.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b'"duplicate":false' in answer
    proc.wait(timeout=STOP_WITHIN_S + 30)
    took = time.monotonic() - started
    output = log.read_text(errors="replace")
    assert took < STOP_WITHIN_S and proc.returncode == 0, (took, proc.returncode, output[-3000:])
    assert _alive(children) == []
    assert [r.dedupe_key.startswith("ghl:") for r in rows(db, "SELECT dedupe_key FROM webhook_events "
                                                              "WHERE workspace_id = 'ghl-s'")] == [True]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_dev_on_the_embedded_postgres_stops_every_child_and_postgres(tmp_path: Path, signum: int) -> None:
    env = _embedded_env(tmp_path)
    ui, service, ghl, calendly = (free_port() for _ in range(4))
    log = tmp_path / "dev.log"
    proc = _supervised(["dev", "--port", str(ui), "--service-port", str(service), "--ghl-port", str(ghl),
                        "--calendly-port", str(calendly)], env, log)
    _wait_until(lambda: httpx.post(f"http://127.0.0.1:{ui}/graphql", json={"query": "{ version }"},
                                   timeout=2).status_code == 200, proc, log, 240, "the Dagster UI did not come up")
    assert httpx.get(f"http://127.0.0.1:{service}/health", timeout=5).status_code == 200
    assert _postgres_of(tmp_path)
    took, children = _stop(proc, signum, log)
    output = log.read_text(errors="replace")
    assert took < STOP_WITHIN_S, (took, output[-4000:])
    assert proc.returncode == 0, output[-4000:]
    assert len(children) >= 2  # dagster dev and its webserver / daemon at least
    assert _alive(children) == [], output[-4000:]
    assert _postgres_of(tmp_path) == [], "the embedded PostgreSQL was left running"
    for port in (ui, service, ghl, calendly):  # nothing listens any more
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
