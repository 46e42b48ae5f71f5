"""Few, focused end-to-end tests of the running system: the README's main command on the embedded
default, and `appt-pipeline dev` serving the Dagster UI over the runs the CLI made and applying a change made in a
simulator through a signed webhook, the intake service, the sensor and a webhook_ingest_job run."""

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

CLI = [sys.executable, "-m", "appt_pipeline.cli"]


def _cli(args: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _postgres_serving(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_demo_on_the_embedded_default_runs_twice_and_creates_nothing_the_second_time(tmp_path: Path) -> None:
    import re

    def tables(stdout: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """The migration and reconciliation rows, by workspace (whitespace-split columns)."""
        head, _, tail = stdout.partition("\nReconciliation (")
        tail = tail.partition("\nWebhooks:")[0]
        found = [{line.split()[0]: line.split() for line in part.splitlines() if line.startswith("ws_")}
                 for part in (head, tail)]
        return found[0], found[1]

    def webhook_table(stdout: str) -> dict[str, list[str]]:
        """The webhook rows: workspace provider stored processed ignored failed new-bookings cancellations
        reschedules no-shows tasks in-history provider-drift rollup-check run status."""
        part = stdout.partition("\nWebhooks:")[2].partition("\nAnalytics and booking")[0]
        return {line.split()[0]: line.split() for line in part.splitlines() if line.startswith("ws_")}

    def bookings(stdout: str) -> dict[str, list[str]]:
        """The booking rows: workspace lead slot HTTP state … appointment timeline."""
        part = stdout.partition("\nBookings through")[2].partition("\nCapacity of")[0]
        return {line.split()[0]: line.split() for line in part.splitlines() if line.startswith("ws_")}

    def capacity_totals(stdout: str) -> dict[str, list[str]]:
        """Per workspace, the total row of its capacity table: booked available total booked% unattributed …"""
        found = {}
        for block in stdout.split("\nCapacity of ")[1:]:
            ws = block.split(",")[0]
            total = next(line for line in block.splitlines() if line.startswith("* (total)"))
            found[ws] = total.split()[2:]
        return found

    def summary_lines(stdout: str) -> dict[str, str]:
        return {line.split(":")[0]: line for line in stdout.splitlines()
                if line.startswith(("Drift applied to the providers", "Drift check"))}

    def numbers(text: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", text)]

    # reconciliation columns: workspace provider checked due changed new-bookings cancellations reschedules
    # unchanged not-found errors api-calls 429s seconds provider-drift rollup-check run status
    checked, changed, new, canceled, rescheduled, unchanged, not_found, errors = 2, 4, 5, 6, 7, 8, 9, 10
    drift, rollups, status = 14, 15, 17
    applied = "Drift applied to the providers (seed 7)"

    env = {k: v for k, v in os.environ.items() if k not in ("APPT_DATABASE_URL", "APPT_DAGSTER_PG_URL",
                                                           "DAGSTER_HOME", "APPT_SECRET_KEY")}
    env["APPT_HOME"] = str(tmp_path / "appt")
    first = _cli(["demo"], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "embedded PostgreSQL" in first.stderr
    lines, rec = tables(first.stdout)
    assert set(lines) == set(rec) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    created_first = {ws: int(cols[2]) for ws, cols in lines.items()}
    assert all(n > 600 for n in created_first.values())
    assert all(cols[6] == "passed" and cols[8] == "ok" for cols in lines.values())

    # reconciliation found exactly what the provider drift did, in every workspace
    assert {ws: cols[1] for ws, cols in rec.items()} == {"ws_7_0": "GHL", "ws_7_1": "CALENDLY", "ws_7_2": "GHL"}
    assert all(cols[status] == "ok" and cols[rollups] == "passed" for cols in rec.values())
    # "found": this pass found exactly the drift of that workspace ("none" would mean no drift there: Calendly
    # drift needs bookings within reconciliation's ±90-day window, and the shipped sample's dates are fixed)
    assert rec["ws_7_0"][drift] == rec["ws_7_2"][drift] == "found" and rec["ws_7_1"][drift] in ("found", "none")
    assert all(int(cols[checked]) > 50 and int(cols[errors]) == 0 for cols in rec.values())
    texts = summary_lines(first.stdout)
    cancels, reschedules, new_bookings, no_shows = numbers(texts[applied])[1:]
    assert min(cancels, reschedules, new_bookings, no_shows) >= 2  # at least one of each per GHL workspace
    expected = numbers(texts["Drift check"])  # new bookings, cancellations, reschedules, changed; found …; n/n
    found = [sum(int(cols[c]) for cols in rec.values()) for c in (new, canceled, rescheduled, changed)]
    assert expected[:4] == found == expected[4:8]
    assert found[1] == cancels and new_bookings <= found[0] <= new_bookings + reschedules
    assert found[3] >= cancels + new_bookings + no_shows  # the leads touched, but GHL reschedules (same id)
    total = cancels + reschedules + new_bookings + no_shows
    assert expected[8:] == [total, total]  # every drift action is in the appointment history

    # webhooks: other bookings changed at the providers reach the history through signed deliveries, the
    # intake service, webhook_events_sensor and webhook_ingest_job — every action, nothing ignored or failed
    hooks = webhook_table(first.stdout)
    assert set(hooks) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    for cols in hooks.values():
        stored, processed, ignored, failed = map(int, cols[2:6])
        done, actions = map(int, cols[11].split("/"))
        assert processed == stored > 0 and ignored == failed == 0
        assert done == actions > 0 and cols[12] == "found"
        assert cols[13] == "passed" and cols[15] == "ok"
    assert sum(int(cols[8]) for cols in hooks.values()) > 0 and sum(int(cols[10]) for cols in hooks.values()) > 0

    # attribution, availability, one AUTO_BOOK booking per workspace through the HTTP API, capacity: all as runs
    assert "FAILED" not in first.stdout.partition("\nAnalytics and booking")[2]
    booked = bookings(first.stdout)
    assert set(booked) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    assert all(cols[3] == "201" and cols[4] == "booked" for cols in booked.values()), booked
    assert all(cols[-1].endswith(f"/workspaces/{ws}/leads/{cols[1]}/timeline") for ws, cols in booked.items())
    totals = capacity_totals(first.stdout)
    assert set(totals) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    for cols in totals.values():
        booked_slots, available, all_slots = map(int, cols[:3])
        assert available > 100 and booked_slots > 0 and all_slots == booked_slots + available

    # the server is stopped cleanly when the command exits, and its data folder is reused next time
    time.sleep(1)
    assert not _postgres_serving(tmp_path / "appt" / "pg")
    second = _cli(["demo"], env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again, rec_again = tables(second.stdout)
    assert {ws: int(cols[2]) for ws, cols in again.items()} == dict.fromkeys(created_first, 0)
    assert {ws: int(cols[3]) for ws, cols in again.items()} == created_first
    # rerun: re-seeded simulators, the same drift, the same leads checked — nothing new, the history has it all
    assert summary_lines(second.stdout)[applied] == texts[applied]
    for ws, cols in rec_again.items():
        assert cols[drift] == {"found": "known", "none": "none"}[rec[ws][drift]]
        assert cols[status] == "ok" and cols[rollups] == "passed"
        assert [int(cols[c]) for c in (changed, new, canceled, rescheduled, errors)] == [0, 0, 0, 0, 0]
        assert cols[checked] == rec[ws][checked] and cols[not_found] == rec[ws][not_found]
        assert int(cols[unchanged]) == int(rec[ws][unchanged]) + int(rec[ws][changed])
    for ws, cols in webhook_table(second.stdout).items():  # redelivered: nothing new, all still in the history
        assert cols[12] == "known" and cols[15] == "ok" and cols[11] == hooks[ws][11]
        assert [int(c) for c in cols[5:10]] == [0, 0, 0, 0, 0]
    # the same Idempotency-Key again: the first answer (a replay), nothing booked twice
    assert {ws: (cols[1], cols[2], cols[3], cols[4], cols[5]) for ws, cols in bookings(second.stdout).items()} == \
        {ws: (cols[1], cols[2], "200", "booked", cols[5]) for ws, cols in booked.items()}
    again_check = numbers(summary_lines(second.stdout)["Drift check"])
    assert again_check[:4] == expected[:4] and again_check[4:8] == [0, 0, 0, 0] and again_check[8:] == [total, total]

    # the demo disconnects the sample workspaces when its simulators stop (tokens deleted, API base URLs back to
    # the providers'), so that the reconciliation schedule skips them instead of calling a stopped simulator
    connections = """
import sqlalchemy as sa
from appt_pipeline.cli.runtime import app_environment
with app_environment() as rt, rt.engine.connect() as conn:
    q = "SELECT count(*) FROM workspace_secrets WHERE workspace_id LIKE 'ws_7_%'"
    print(conn.execute(sa.text(q)).scalar_one())
    for column in ("ghl_api_base_url", "calendly_api_base_url"):
        q = f"SELECT DISTINCT {column} FROM workspaces WHERE id LIKE 'ws_7_%'"
        print(*conn.execute(sa.text(q)).scalars())
"""
    probe = subprocess.run([sys.executable, "-c", connections], env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split() == ["0", "https://services.leadconnectorhq.com", "https://api.calendly.com"]



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
    assert _cli(["import-legacy", str(sample)], cli_env).returncode == 0
    ran = _cli(["run", "migration_job", "--workspace", "ws_7_1"], cli_env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_id = ran.stdout.strip()
    assert len(run_id) == 36

    assert _cli(["run", "migration_job", "--workspace", "ws_7_0"], cli_env).returncode == 0

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
    bad_job = _cli(["run", "nope_job", "--workspace", "x"], cli_env)
    assert bad_job.returncode == 2 and "unknown job" in bad_job.stderr
    bad_ws = _cli(["run", "migration_job", "--workspace", "missing"], cli_env)
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
    assert _cli(["db", "upgrade"], cli_env).returncode == 0  # creates DAGSTER_HOME and the Dagster database
    with _cli_instance(cli_env) as instance:
        busy = add_run_in_flight(instance, "migration_job", "wsc")  # the same lane: wsc:migration
        refused = _cli(["run", "migration_job", "--workspace", "wsc"], cli_env)
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
    assert _cli(["db", "upgrade"], cli_env).returncode == 0
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
            ran = _cli(["run", "migration_job", "--workspace", "wsq"], cli_env)
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
