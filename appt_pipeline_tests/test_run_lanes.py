"""Run lanes (docs/operations.md §5): a live webhook run of a workspace never queues behind its reconciliation.

One end-to-end test on the real run queue: a ``dagster-daemon`` (sensors + the ``QueuedRunCoordinator`` of the
project's dagster.yaml, on a temporary ``DAGSTER_HOME`` and its own Dagster storage database), the intake
service on loopback and the GHL simulator slowed by its latency knob. A signed GHL delivery is POSTed and the
lead's rollup polled, once on an idle system and once while a reconciliation run of the same workspace is going
against the slowed simulator: the webhook run is dequeued, starts and ends while the reconciliation is still
going, and POST → rollup stays within the idle latency plus a margin (with one run per workspace partition, as
before lanes, it waited for the whole reconciliation).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appt_pipeline.cli.launch import RunOutcome, daemon_running, run_partition_job
from appt_pipeline.defs.evidence import ReconciliationEvidence, history_run_config
from appt_pipeline.domain.signatures import ghl_ed25519_signature, public_key_text
from appt_pipeline.sandbox import GhlSimulator, SimulatorServer
from appt_pipeline.sandbox.state import GhlCalendar, GhlContact, GhlLocation, GhlSeed
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.settings import PROJECT_ROOT
from appt_pipeline.store.embedded import ensure_database
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers import SECRET_KEY
from appt_pipeline_tests.helpers.cli import drop_database

WS = "ws_lanes"
LOCATION = "loc_lanes"
TOKEN = "tok-lanes"
#: due leads of the reconciliation: far more than it can check within its time budget at the simulator's latency
DUE_LEADS = 300
#: seconds the slowed simulator adds to every request: 300 leads at 16 at a time take ~55 s
SIM_LATENCY_S = 3.0
#: the reconciliation's own time budget (ReconciliationEvidence.time_budget_s), a backstop: the test cancels it
RECONCILE_BUDGET_S = 120.0
WEBHOOK_KEY = Ed25519PrivateKey.generate()


@pytest.fixture()
def ghl() -> Iterator[tuple[GhlSimulator, str]]:
    contacts = [GhlContact(email=f"due{i}@example.com", id=f"c_due_{i}") for i in range(DUE_LEADS)]
    sim = GhlSimulator(GhlSeed(locations=[GhlLocation(id=LOCATION, token=TOKEN, timezone="UTC",
                                                      calendars=[GhlCalendar(id="cal1")], contacts=contacts)]))
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


@pytest.fixture()
def dagster_home(tmp_path: Path, database_url: str) -> Iterator[tuple[Path, str]]:
    """A temporary DAGSTER_HOME with the project's dagster.yaml, on a Dagster storage database of its own."""
    name = f"appt_lanes_{uuid.uuid4().hex[:8]}_dagster"
    url = sa.make_url(database_url).set(drivername="postgresql+psycopg2", database=name)
    ensure_database(database_url, name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    try:
        yield home, url.render_as_string(hide_password=False)
    finally:
        drop_database(database_url, name)


def _workspace(engine: sa.Engine, base_url: str) -> None:
    set_workspace(engine, WS, {"name": WS, "meeting_booking_provider": "GHL", "ghl_location_id": LOCATION,
                               "ghl_api_base_url": base_url, "timezone": "UTC"})
    set_secret(engine, WS, "ghl_private_token", TOKEN, SECRET_KEY)
    set_secret(engine, WS, "ghl_webhook_public_key", public_key_text(WEBHOOK_KEY.public_key()), SECRET_KEY)
    with engine.begin() as conn:
        # due for reconciliation (recent inbound, never checked), matched by their GHL contact ids
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id, email, ghl_contact_id, status, last_inbound_at) "
                             "VALUES (:id, :ws, :email, :cid, 'qualified', now())"),
                     [{"id": f"due_{i}", "ws": WS, "email": f"due{i}@example.com", "cid": f"c_due_{i}"}
                      for i in range(DUE_LEADS)])
        # the leads the webhooks are for: not due (next check far ahead), so only the webhook runs write them
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id, ghl_contact_id, status, appointment_next_check_at) "
                             "VALUES (:id, :ws, :cid, 'qualified', now() + interval '30 days')"),
                     [{"id": f"hook_{i}", "ws": WS, "cid": f"c_hook_{i}"} for i in range(3)])


def _post_and_wait(client: httpx.Client, engine: sa.Engine, lead: int, daemon: subprocess.Popen[Any],
                   log: Path, timeout_s: float = 90.0) -> tuple[float, float]:
    """POST a signed GHL AppointmentCreate for lead ``hook_<lead>``; poll its rollup until it names the new
    appointment. Returns (time.time() of the POST, seconds POST → rollup)."""
    appt = f"appt-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    start = (now + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    body = {"type": "AppointmentCreate", "locationId": LOCATION, "webhookId": uuid.uuid4().hex,
            "timestamp": now.isoformat(),
            "appointment": {"id": appt, "calendarId": "cal1", "contactId": f"c_hook_{lead}",
                            "appointmentStatus": "confirmed", "startTime": start.isoformat(),
                            "endTime": (start + timedelta(minutes=30)).isoformat(),
                            "dateAdded": now.isoformat(), "dateUpdated": now.isoformat()}}
    raw = httpx.Request("POST", "http://x", json=body).content
    posted = time.time()
    answer = client.post(f"/webhooks/ghl/{WS}", content=raw,
                         headers={"Content-Type": "application/json",
                                  "X-GHL-Signature": ghl_ed25519_signature(WEBHOOK_KEY, raw)})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            got = conn.execute(sa.text("SELECT ghl_appointment_id FROM leads WHERE id = :id"),
                               {"id": f"hook_{lead}"}).scalar_one()
            conn.rollback()
            if got == appt:
                return posted, time.time() - posted
            assert daemon.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
    pytest.fail(f"rollup of hook_{lead} not updated {timeout_s} s after the POST:\n{log.read_text()[-3000:]}")


def _webhook_run_after(instance: dg.DagsterInstance, posted: float, daemon: subprocess.Popen[Any], log: Path,
                       timeout_s: float = 60.0) -> dg.RunRecord:
    """The webhook run created after ``posted`` (time.time()), once it ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter(job_name="webhook_ingest_job"))
        [record] = [r for r in records if r.create_timestamp.timestamp() >= posted]
        if record.end_time is not None:
            return record
        assert daemon.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    pytest.fail(f"the webhook run did not end within {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_a_webhook_run_is_not_queued_behind_a_reconciliation_of_its_workspace(
    db: sa.Engine, database_url: str, ghl: tuple[GhlSimulator, str], dagster_home: tuple[Path, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim, sim_url = ghl
    home, dagster_url = dagster_home
    _workspace(db, sim_url)
    env = {"DAGSTER_HOME": str(home), "APPT_DAGSTER_PG_URL": dagster_url, "APPT_DATABASE_URL": database_url,
           "APPT_SECRET_KEY": SECRET_KEY, "APPT_PROVIDER_HOST_ALLOWLIST": "127.0.0.1:*"}
    for key, value in env.items():  # this process: the instance, and `dagster job launch` started by the launch
        monkeypatch.setenv(key, value)
    log = tmp_path / "daemon.log"
    service = SimulatorServer(create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY)))
    with log.open("w") as out, service, httpx.Client(base_url=service.base_url, timeout=10) as client:
        daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w",
                                   str(PROJECT_ROOT / "workspace.yaml")], cwd=PROJECT_ROOT, env={**os.environ, **env},
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                deadline = time.monotonic() + 90
                while not daemon_running(instance):
                    assert daemon.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "no daemon heartbeat within 90 s"
                    time.sleep(0.5)
                _post_and_wait(client, db, 0, daemon, log)  # warm-up: the sensor's first tick, the first run worker
                _, idle = _post_and_wait(client, db, 1, daemon, log)

                # a reconciliation of the same workspace through the run queue, against the slowed simulator
                sim.faults.configure(latency=SIM_LATENCY_S)
                config = history_run_config(ReconciliationEvidence(time_budget_s=RECONCILE_BUDGET_S)).to_config_dict()
                outcome: dict[str, RunOutcome | BaseException] = {}

                def reconcile() -> None:
                    try:
                        outcome["run"] = run_partition_job(instance, "reconciliation_job", WS, config, queue=True)
                    except BaseException as exc:  # reported by the assertion below
                        outcome["run"] = exc

                thread = threading.Thread(target=reconcile, daemon=True)
                thread.start()
                deadline = time.monotonic() + 60
                while sim.faults.injected["delayed"] == 0:  # until the reconciliation's first provider call
                    assert thread.is_alive(), outcome
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.2)
                posted, busy = _post_and_wait(client, db, 2, daemon, log)
                [recon] = instance.get_run_records(dg.RunsFilter(job_name="reconciliation_job"))
                # the rollup was updated while the reconciliation of its workspace was still going…
                assert recon.dagster_run.status == dg.DagsterRunStatus.STARTED, recon.dagster_run.status
                # …and POST → rollup stayed about as on the idle system (mostly the run worker's start; on a loaded
                # 2-core machine the reconciliation's worker slows it some). Queued behind the reconciliation it
                # would have waited for all of it (~55 s of provider calls), or never ended before the cancel.
                print(f"POST → rollup: idle {idle:.2f} s, beside a reconciliation {busy:.2f} s")
                assert busy <= 2 * idle + 5.0, f"idle {idle:.1f} s, beside a reconciliation {busy:.1f} s"
                webhook_run = _webhook_run_after(instance, posted, daemon, log)
                assert webhook_run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
                assert webhook_run.dagster_run.tags["appt/lane"] == f"{WS}:webhooks"
                assert recon.dagster_run.tags["appt/lane"] == f"{WS}:reconciliation"
                assert recon.start_time is not None and webhook_run.start_time is not None
                assert recon.start_time < webhook_run.start_time

                # the reconciliation is still going: cancel it (through the run coordinator, as the UI does)
                instance.run_coordinator.cancel_run(recon.dagster_run.run_id)
                thread.join(timeout=60)
                result = outcome.get("run")
                assert isinstance(result, RunOutcome), result
                assert result.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS), result
                ended = instance.get_run_record_by_id(result.run_id)
                # the webhook run ended before the reconciliation did: it never waited for it
                assert ended is not None and ended.end_time is not None and webhook_run.end_time is not None
                assert ended.end_time > webhook_run.end_time
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
