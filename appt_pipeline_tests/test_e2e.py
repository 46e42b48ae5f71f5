"""Few, focused end-to-end tests of the running system: `appt-pipeline dev` serving the Dagster UI over the runs the
CLI made and applying a change made in a simulator through a signed webhook, the intake service, the sensor and a
webhook_ingest_job run; `run` refusing and queueing. (The README's main command on the embedded default is in
test_e2e_demo.py, so that pytest-xdist runs the two longest tests on different workers.)"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from appt_pipeline.store.embedded import dagster_url_for, ensure_database
from appt_pipeline_tests.helpers import free_port
from appt_pipeline_tests.helpers.e2e import CLI, cli


@pytest.fixture()
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(APPT_DATABASE_URL=database_url, APPT_HOME=str(tmp_path / "appt"))
    env.pop("DAGSTER_HOME", None)
    env.pop("APPT_DAGSTER_PG_URL", None)
    return env


def test_dev_serves_the_ui_over_the_cli_runs_applies_simulator_changes_by_webhook_and_stops_on_sigint(
    db: sa.Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _fresh_dagster_database(cli_env)
    sample = Path(__file__).resolve().parents[1] / "appt_pipeline" / "sample" / "legacy"
    assert cli(["import-legacy", str(sample)], cli_env).returncode == 0
    ran = cli(["run", "migration_job", "--workspace", "ws_7_1"], cli_env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_id = ran.stdout.strip()
    assert len(run_id) == 36

    assert cli(["run", "migration_job", "--workspace", "ws_7_0"], cli_env).returncode == 0

    port, service_port, ghl_port, calendly_port = (free_port() for _ in range(4))
    out_path = tmp_path / "dev.out"
    out = out_path.open("w")
    proc = subprocess.Popen([*CLI, "dev", "--port", str(port), "--service-port", str(service_port), "--ghl-port",
                             str(ghl_port), "--calendly-port", str(calendly_port)], env=cli_env,
                            stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, out_path.read_text()
            try:
                if httpx.post(url, json={"query": "{ version }"}, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Dagster UI did not come up within 90 s"
            time.sleep(0.5)
        query = """{ runsOrError { ... on Runs { results { runId status jobName tags { key value } } } }
                     sensorsOrError: workspaceOrError { __typename } }"""
        data = httpx.post(url, json={"query": query}, timeout=10).json()["data"]
        runs = {r["runId"]: r for r in data["runsOrError"]["results"]}
        assert runs[run_id]["status"] == "SUCCESS"
        assert runs[run_id]["jobName"] == "migration_job"
        assert {"key": "dagster/partition", "value": "ws_7_1"} in runs[run_id]["tags"]
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "Dagster" in page.text

        # a reschedule made in the GHL simulator reaches the history: signed webhook → service → staging row →
        # webhook_events_sensor (daemon) → webhook_ingest_job run
        base = f"http://127.0.0.1:{service_port}"
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        with db.connect() as conn:  # closed at once: an open read would hold its transaction for the whole test
            keys = [r[0] for r in conn.execute(sa.text(
                "SELECT ghl_appointment_id FROM appointments WHERE workspace_id = 'ws_7_0' AND status = 'CONFIRMED' "
                "AND start_at IS NOT NULL ORDER BY ghl_appointment_id LIMIT 20"))]
        new_start = "2031-01-06T15:00:00Z"
        moved = next(k for k in keys if httpx.post(
            f"http://127.0.0.1:{ghl_port}/_admin/appointments/{k}/reschedule",
            json={"startTime": new_start, "force": True}, timeout=10).status_code == 200)
        deadline = time.monotonic() + 60
        while True:
            with db.connect() as conn:
                row = conn.execute(sa.text("SELECT start_at, last_source FROM appointments "
                                           "WHERE ghl_appointment_id = :k"), {"k": moved}).one()
            if row.last_source == "WEBHOOK":
                break
            assert time.monotonic() < deadline, "the simulator's change did not reach the history within 60 s"
            time.sleep(0.5)
        assert row.start_at.isoformat() == "2031-01-06T15:00:00+00:00"
        # dev printed a read+book token per connected workspace with its pages: the moved meeting is on the
        # lead's timeline (as a person would see it after the webhook run), the capacity URL is printed
        printed = out_path.read_text()
        token = re.search(r"^  ws_7_0: token (appt_\S+)$", printed, re.M)
        assert token is not None, printed
        assert f"{base}/workspaces/ws_7_0/capacity" in printed
        assert re.search(rf"timeline: {re.escape(base)}/workspaces/ws_7_0/leads/\S+/timeline$", printed, re.M)
        with db.connect() as conn:
            moved_row = conn.execute(sa.text("SELECT id, lead_id FROM appointments WHERE ghl_appointment_id = :k"),
                                     {"k": moved}).one()
        page = httpx.get(f"{base}/workspaces/ws_7_0/leads/{moved_row.lead_id}/timeline", timeout=10,
                         headers={"Authorization": f"Bearer {token.group(1)}"})
        assert page.status_code == 200 and f'data-appointment-id="{moved_row.id}"' in page.text
        deadline = time.monotonic() + 30  # the rows commit before the run reports its end
        while True:
            runs = httpx.post(url, json={"query": query}, timeout=10).json()["data"]["runsOrError"]["results"]
            if any(r["jobName"] == "webhook_ingest_job" and r["status"] == "SUCCESS" for r in runs):
                break
            assert time.monotonic() < deadline, [(r["jobName"], r["status"]) for r in runs]
            time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:  # dev stops the UI, the daemon and its run workers, the simulators and PostgreSQL: slow on a busy machine
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            out.close()
    assert proc.returncode in (0, 1, -signal.SIGINT, 130), proc.returncode
    # nothing of the stack is left behind
    time.sleep(1)
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if "dagster" in " ".join(p.info["cmdline"] or []) and str(port) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers


def test_run_refuses_an_unknown_job_and_workspace(db: sa.Engine, cli_env: dict[str, str]) -> None:
    bad_job = cli(["run", "nope_job", "--workspace", "x"], cli_env)
    assert bad_job.returncode == 2 and "unknown job" in bad_job.stderr
    bad_ws = cli(["run", "migration_job", "--workspace", "missing"], cli_env)
    assert bad_ws.returncode == 2 and "does not exist" in bad_ws.stderr


def _fresh_dagster_database(cli_env: dict[str, str]) -> None:
    """Drop the Dagster storage database the CLI uses beside the test database (runs and daemon heartbeats
    of earlier tests in this session) and create it empty again, as ``db upgrade`` does."""
    dagster_url = dagster_url_for(cli_env["APPT_DATABASE_URL"])
    dagster_db = sa.make_url(dagster_url).database or ""
    with sa.create_engine(sa.make_url(cli_env["APPT_DATABASE_URL"]).set(database="postgres"),
                          isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{dagster_db}" WITH (FORCE)')
    ensure_database(dagster_url, dagster_db)


def _cli_instance(cli_env: dict[str, str]) -> Any:
    """The Dagster instance the CLI uses with ``cli_env`` (its DAGSTER_HOME and storage database)."""
    import dagster as dg

    os.environ["APPT_DAGSTER_PG_URL"] = dagster_url_for(cli_env["APPT_DATABASE_URL"])
    return dg.DagsterInstance.from_config(str(Path(cli_env["APPT_HOME"]) / "dagster_home"))


def test_run_is_refused_while_a_run_of_the_workspace_is_in_flight(db: sa.Engine, cli_env: dict[str, str]) -> None:
    from appt_pipeline_tests.helpers import add_run_in_flight, rows, seed

    seed(db, "wsc", 1)
    _fresh_dagster_database(cli_env)
    assert cli(["db", "upgrade"], cli_env).returncode == 0  # creates DAGSTER_HOME and the Dagster database
    with _cli_instance(cli_env) as instance:
        busy = add_run_in_flight(instance, "migration_job", "wsc")  # the same lane: wsc:migration
        refused = cli(["run", "migration_job", "--workspace", "wsc"], cli_env)
        assert refused.returncode == 1, refused.stderr[-3000:]
        assert "running in this process" in refused.stderr and busy in refused.stderr
        assert refused.stdout == ""
        assert [r.dagster_run.run_id for r in instance.get_run_records()] == [busy]
    assert rows(db, "SELECT 1 FROM appointments") == []


def test_run_goes_through_the_queue_when_a_daemon_runs(db: sa.Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    import dagster as dg

    from appt_pipeline.cli.launch import daemon_running
    from appt_pipeline.settings import PROJECT_ROOT
    from appt_pipeline_tests.helpers import seed

    seed(db, "wsq", 2)
    _fresh_dagster_database(cli_env)
    assert cli(["db", "upgrade"], cli_env).returncode == 0
    daemon_env = {**cli_env, "DAGSTER_HOME": str(Path(cli_env["APPT_HOME"]) / "dagster_home"),
                  "APPT_DAGSTER_PG_URL": dagster_url_for(cli_env["APPT_DATABASE_URL"])}
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w",
                               str(PROJECT_ROOT / "workspace.yaml")], cwd=PROJECT_ROOT, env=daemon_env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with _cli_instance(cli_env) as instance:
            deadline = time.monotonic() + 90
            while not daemon_running(instance):
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no daemon heartbeat within 90 s"
                time.sleep(0.5)
            ran = cli(["run", "migration_job", "--workspace", "wsq"], cli_env)
            assert ran.returncode == 0, ran.stderr[-3000:]
            assert "submitted to the run queue" in ran.stderr
            run = instance.get_run_by_id(ran.stdout.strip())
            assert run is not None and run.status.value == "SUCCESS"
            # queued through the coordinator: the job's own tags (priority, max runtime) and the partition
            assert run.tags["dagster/partition"] == "wsq" and "dagster/max_runtime" in run.tags
            assert run.tags["appt/lane"] == "wsq:migration"
            assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
