"""What the HTTP benchmarks share: throw-away databases, service processes, and ``wrk`` as the load generator.

``wrk`` (Debian package, installed with apt when missing) runs in its own process on loopback, closed loop;
each bench gives it a Lua script that ends by printing one ``WRK_JSON {...}`` line (requests, duration,
latency percentiles in microseconds, error counts).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def log(msg: str = "") -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bench_databases(server_url: str, keep: bool, prefix: str) -> Iterator[tuple[str, str]]:
    """Fresh ``<prefix>_<pid>`` and ``…_dagster`` databases on the server of ``server_url`` (app URL with
    psycopg 3, Dagster URL with psycopg2), dropped afterwards unless ``keep``."""
    base = make_url(server_url).set(drivername="postgresql")
    name = f"{prefix}_{os.getpid()}"
    admin = base.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        for db in (name, f"{name}_dagster"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
    app = base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    dagster = base.set(drivername="postgresql+psycopg2", database=f"{name}_dagster").render_as_string(
        hide_password=False)
    try:
        yield app, dagster
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                for db in (name, f"{name}_dagster"):
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@contextmanager
def process(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"service not healthy after {timeout} s:\n{log_path.read_text()[-3000:]}")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found: installing the Debian package (apt-get install -y wrk)")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is required (apt-get install wrk)")
    return found


def run_wrk(wrk: str, url: str, script: Path, args: list[str], *, threads: int, connections: int,
            duration: float) -> dict[str, Any]:
    """One ``wrk`` run of ``script`` (with ``args`` after ``--``); its ``WRK_JSON`` figures."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s",
           "-s", str(script), url, "--", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    return json.loads(line[len("WRK_JSON "):])
