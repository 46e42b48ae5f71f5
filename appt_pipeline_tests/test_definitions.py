"""The Dagster code location: loads and validates, the registry sensor adds partitions, the migration
job materializes both assets with counters and a passing drift check, and the instance config loads."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from appt_pipeline.definitions import defs
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.sensors import workspace_registry_sensor
from appt_pipeline.settings import PROJECT_ROOT
from appt_pipeline.store.embedded import dagster_url_for, ensure_database
from appt_pipeline_tests.helpers import rows, seed


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"migration_job", "reconciliation_job", "attribution_backfill_job"} <= jobs
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"legacy_lead_rollups", "ghl_api", "calendly_api", "appointment_history", "lead_rollups",
            "calendar_attribution"} <= keys


def test_dagster_definitions_validate_is_clean(database_url: str, tmp_path: Path) -> None:
    dagster_url = dagster_url_for(database_url)
    ensure_database(dagster_url, sa.make_url(dagster_url).database or "")
    env = {**os.environ, "APPT_DATABASE_URL": database_url, "APPT_DAGSTER_PG_URL": dagster_url,
           "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_bytes((PROJECT_ROOT / "dagster.yaml").read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "appt_pipeline.definitions"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "All code locations passed validation" in output
    ours = [line for line in output.splitlines() if "Warning" in line and "appt_pipeline" in line]
    assert not ours, ours


def test_instance_config_loads_with_postgres_storage(database_url: str, tmp_path: Path) -> None:
    dagster_url = dagster_url_for(database_url)
    ensure_database(dagster_url, sa.make_url(dagster_url).database or "")
    (tmp_path / "dagster.yaml").write_bytes((PROJECT_ROOT / "dagster.yaml").read_bytes())
    os.environ["APPT_DAGSTER_PG_URL"] = dagster_url
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        limits = instance.get_concurrency_config().run_queue_config
        assert limits is not None and limits.max_concurrent_runs == 4
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            limits.tag_concurrency_limits
        )


def test_registry_sensor_adds_missing_workspaces(db: sa.Engine, database_url: str) -> None:
    seed(db, "acme", 1)
    seed(db, "globex", 1)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["acme"])
        with dg.build_sensor_context(instance=instance, resources={"app_db": AppDatabase(url=database_url)}) as ctx:
            result = workspace_registry_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["globex"]]
        instance.add_dynamic_partitions(workspace_partitions.name, ["globex"])
        with dg.build_sensor_context(instance=instance, resources={"app_db": AppDatabase(url=database_url)}) as ctx:
            assert isinstance(workspace_registry_sensor(ctx), dg.SkipReason)


@pytest.fixture()
def legacy_workspace(db: sa.Engine) -> str:
    seed(db, "acme", 0)
    with db.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO leads (id, workspace_id, ghl_appointment_id, appointment_status, appointment_start_at) VALUES"
            " ('l1', 'acme', 'g1', 'Cancelled', '2026-01-05T10:00Z'),"
            " ('l2', 'acme', 'g2', 'booked', '2030-01-05T10:00Z'),"
            " ('l3', 'acme', 'g3', 'tentative', NULL),"
            " ('l4', 'acme', NULL, NULL, NULL)"
        ))
    return "acme"


def test_migration_job_materializes_history_and_rollups(legacy_workspace: str, database_url: str) -> None:
    job = defs.resolve_job_def("migration_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, [legacy_workspace])
        result = job.execute_in_process(
            partition_key=legacy_workspace, instance=instance,
            resources={"app_db": AppDatabase(url=database_url)},
        )
        assert result.success
        mats = {
            e.step_materialization_data.materialization.asset_key.to_user_string():
                {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()
        }
        assert mats["appointment_history"]["created"] == 2
        assert mats["appointment_history"]["errors"] == 1
        assert mats["appointment_history"]["errors_by_kind"] == {"unknown_status": 1}
        assert mats["appointment_history"]["skipped"] == 1
        assert mats["lead_rollups"]["rollups_changed"] == 2
        checks = result.get_asset_check_evaluations()
        assert [(c.check_name, c.passed) for c in checks] == [("rollup_drift", True)]
        # materializations are recorded per partition in the instance
        record = instance.get_latest_materialization_event(dg.AssetKey("lead_rollups"))
        assert record is not None and record.dagster_event.partition == legacy_workspace
    statuses = rows(sa.create_engine(database_url), "SELECT id, appointment_status FROM leads ORDER BY id")
    assert [tuple(r) for r in statuses] == [("l1", "canceled"), ("l2", "confirmed"), ("l3", "tentative"),
                                            ("l4", None)]


def test_reconciliation_schedule_requests_one_run_per_workspace_with_due_leads(
    db: sa.Engine, database_url: str
) -> None:
    import datetime as dt

    from cryptography.fernet import Fernet

    from appt_pipeline.defs.schedules import reconciliation_schedule
    from appt_pipeline.store.workspaces import set_secret, set_workspace

    key = Fernet.generate_key().decode()
    for ws in ("busy", "idle", "unregistered", "unconnected"):
        seed(db, ws, 0)
        set_workspace(db, ws, {"meeting_booking_provider": "GHL", "ghl_location_id": f"loc_{ws}"})
        if ws != "unconnected":
            set_secret(db, ws, "ghl_private_token", "tok", key)
    with db.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO leads (id, workspace_id, email, last_inbound_at, appointment_next_check_at) VALUES "
            "('b1', 'busy', 'b1@example.com', now(), NULL), "
            "('i1', 'idle', 'i1@example.com', now(), now() + interval '1 day'), "
            "('u1', 'unregistered', 'u1@example.com', now(), NULL), "
            "('n1', 'unconnected', 'n1@example.com', now(), NULL)"
        ))
    tick = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["busy", "idle", "unconnected"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                       resources={"app_db": AppDatabase(url=database_url)}) as ctx:
            requests = list(reconciliation_schedule(ctx))
    assert [(r.partition_key, r.run_key) for r in requests] == [("busy", f"reconcile:busy:{tick.isoformat()}")]
    assert requests[0].tags["dagster/priority"] == "1"
    job_tags = defs.resolve_job_def("reconciliation_job").tags
    assert int(job_tags["dagster/priority"]) < int(requests[0].tags["dagster/priority"])


def test_reconciliation_job_materializes_with_api_counters(db: sa.Engine, database_url: str) -> None:
    from cryptography.fernet import Fernet

    from appt_pipeline.defs.resources import ProviderClients
    from appt_pipeline.sandbox import (
        GhlAppointment,
        GhlCalendar,
        GhlContact,
        GhlLocation,
        GhlSeed,
        GhlSimulator,
        SimulatorServer,
    )
    from appt_pipeline.store.workspaces import set_secret, set_workspace

    key = Fernet.generate_key().decode()
    sim = GhlSimulator(GhlSeed(locations=[GhlLocation(
        id="loc9", token="tok9", calendars=[GhlCalendar(id="cal9")],
        contacts=[GhlContact(email="x@example.com", id="c9")],
        appointments=[GhlAppointment(id="g9", calendar_id="cal9", contact_id="c9", start="2030-01-07T15:00:00Z")],
    )]))
    with SimulatorServer(sim) as server:
        set_workspace(db, "wsr", {"meeting_booking_provider": "GHL", "ghl_location_id": "loc9",
                                  "ghl_api_base_url": server.base_url})
        set_secret(db, "wsr", "ghl_private_token", "tok9", key)
        with db.begin() as conn:
            conn.execute(sa.text("INSERT INTO leads (id, workspace_id, ghl_contact_id, last_inbound_at) "
                                 "VALUES ('x', 'wsr', 'c9', now())"))
        os.environ["APPT_TEST_KEY"] = key
        job = defs.resolve_job_def("reconciliation_job")
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(workspace_partitions.name, ["wsr"])
            result = job.execute_in_process(
                partition_key="wsr", instance=instance,
                resources={"app_db": AppDatabase(url=database_url),
                           "providers": ProviderClients(secret_key=dg.EnvVar("APPT_TEST_KEY"))},
            )
    assert result.success
    history = next(e.step_materialization_data.materialization.metadata
                   for e in result.get_asset_materialization_events()
                   if e.step_materialization_data.materialization.asset_key.to_user_string() == "appointment_history")
    assert history["evidence"].value == "reconciliation"
    assert history["source"].value == "RECONCILE_CRON"
    assert (history["leads_checked"].value, history["new_bookings"].value) == (1, 1)
    assert history["api_requests"].value >= 1 and history["api_429s"].value == 0
    # no secret in the run's metadata or logs
    assert key not in str(result.all_events) and "tok9" not in str(result.all_events)
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
