"""The Dagster code location: loads and validates, the registry sensor adds partitions, the migration
job materializes both assets with counters and a passing drift check, and the instance config loads."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from appt_pipeline.definitions import defs
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.sensors import workspace_registry_sensor
from appt_pipeline.settings import PROJECT_ROOT
from appt_pipeline.store.drift_checks import CHECK_NAMES
from appt_pipeline.store.embedded import dagster_url_for, ensure_database
from appt_pipeline_tests.helpers import rows, seed


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"migration_job", "reconciliation_job", "attribution_backfill_job", "availability_job"} <= jobs
    assert {s.name for s in defs.schedules or []} >= {"reconciliation_schedule", "availability_schedule"}
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"legacy_lead_rollups", "ghl_api", "calendly_api", "appointment_history", "lead_rollups",
            "calendar_attribution", "calendar_availability"} <= keys


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
        assert {"key": "appt/lane", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            limits.tag_concurrency_limits
        )
        # no limit per partition whatever the job any more: a webhook run never waits behind a reconciliation
        assert not [lim for lim in limits.tag_concurrency_limits if lim["key"] == "dagster/partition"]


def test_every_partitioned_job_puts_its_runs_in_a_lane_of_their_workspace_and_kind() -> None:
    """docs/operations.md §5: dagster.yaml limits ``appt/lane``; a job whose partition runs had no lane tag would
    escape the limit. Live work goes before manual runs and backfills (``dagster/priority``)."""
    jobs = [j for j in defs.resolve_all_job_defs() if not j.name.startswith("__") and j.partitions_def is not None]
    assert {j.name for j in jobs} >= {"migration_job", "reconciliation_job", "webhook_ingest_job",
                                      "attribution_backfill_job"}
    for job in jobs:
        kind = job.tags["appt/kind"]
        assert job.get_tags_for_partition_key("ws:1", selected_asset_keys=None)["appt/lane"] == f"ws:1:{kind}", job.name
    priority = {j.name: int(j.tags.get("dagster/priority", "0")) for j in jobs}
    assert priority["webhook_ingest_job"] > max(p for name, p in priority.items() if name != "webhook_ingest_job")


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
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert set(checks) == set(CHECK_NAMES)  # every SPEC §10 check, on the leads the run touched
        assert checks["rollup_drift"].passed
        # the migration changes no lead status (SPEC §5): l2's CONFIRMED primary on a `qualified` lead is drift
        assert not checks["confirmed_not_booked"].passed
        assert checks["confirmed_not_booked"].metadata["sample_ids"].value == ["l2"]
        assert checks["confirmed_not_booked"].metadata["scope"].value == "run"
        assert [n for n, c in checks.items() if not c.passed] == ["confirmed_not_booked"]
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
    assert requests[0].tags["appt/lane"] == "busy:reconciliation"
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
    assert all(c.passed for c in result.get_asset_check_evaluations())


# ------------------------------------------------------------------------------ config, metadata, run launching


def test_materializing_the_history_without_config_refuses_and_writes_nothing(
    legacy_workspace: str, database_url: str
) -> None:
    """The UI's "Materialize" on appointment_history has no config: Dagster refuses before the op runs."""
    from appt_pipeline.defs.assets import appointment_history_and_rollups
    from appt_pipeline.defs.resources import ProviderClients

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, [legacy_workspace])
        with pytest.raises(dg.DagsterInvalidConfigError, match="evidence"):
            dg.materialize([appointment_history_and_rollups], partition_key=legacy_workspace, instance=instance,
                           resources={"app_db": AppDatabase(url=database_url), "providers": ProviderClients()})
        assert instance.get_latest_materialization_event(dg.AssetKey("appointment_history")) is None
    engine = sa.create_engine(database_url)
    assert rows(engine, "SELECT 1 FROM appointments") == []
    statuses = rows(engine, "SELECT appointment_status FROM leads ORDER BY id")
    assert [r[0] for r in statuses] == ["Cancelled", "booked", "tentative", None]


def test_every_evidence_reports_the_same_core_metadata_keys_first(legacy_workspace: str, database_url: str) -> None:
    """migration, reconciliation (workspace not connected: skipped) and webhooks (nothing pending)."""
    from appt_pipeline.defs.history_results import (
        CORE_KEYS,
        MigrationResult,
        ReconciliationResult,
        WebhookResult,
        parse_history,
        parse_rollups,
    )

    expected = {"migration_job": MigrationResult, "reconciliation_job": ReconciliationResult,
                "webhook_ingest_job": WebhookResult}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, [legacy_workspace])
        for job_name, kind in expected.items():
            result = defs.resolve_job_def(job_name).execute_in_process(
                partition_key=legacy_workspace, instance=instance, resources={"app_db": AppDatabase(url=database_url)})
            assert result.success, job_name
            mats = {e.step_materialization_data.materialization.asset_key.to_user_string():
                    e.step_materialization_data.materialization.metadata
                    for e in result.get_asset_materialization_events()}
            history = mats["appointment_history"]
            assert tuple(history)[:len(CORE_KEYS)] == CORE_KEYS, job_name
            typed = parse_history(history)
            assert isinstance(typed, kind) and history["evidence"].value == kind.EVIDENCE
            assert parse_rollups(mats["lead_rollups"]).rollups_changed == typed.core.rollups_changed
            if job_name == "migration_job":
                assert (typed.core.created, typed.core.errors, typed.core.rollups_changed) == (2, 1, 2)
            if isinstance(typed, ReconciliationResult):
                assert typed.skipped_workspace and typed.core.created == 0


def test_jobs_have_a_max_runtime_and_writing_assets_use_the_writer_pool(database_url: str, tmp_path: Path) -> None:
    from appt_pipeline.defs.assets import appointment_history_and_rollups
    from appt_pipeline.defs.attribution import calendar_attribution
    from appt_pipeline.defs.availability import calendar_availability
    from appt_pipeline.defs.runs import MAX_RUNTIME_TAG, WRITER_POOL

    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert int(job.tags[MAX_RUNTIME_TAG]) > 0, job.name
    assert appointment_history_and_rollups.op.pool == calendar_attribution.op.pool == WRITER_POOL
    assert calendar_availability.op.pool == WRITER_POOL
    dagster_url = dagster_url_for(database_url)
    ensure_database(dagster_url, sa.make_url(dagster_url).database or "")
    (tmp_path / "dagster.yaml").write_bytes((PROJECT_ROOT / "dagster.yaml").read_bytes())
    os.environ["APPT_DAGSTER_PG_URL"] = dagster_url
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2


def test_no_private_dagster_imports_anywhere() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+dagster(_\w+)?\._", re.MULTILINE)
    offenders = [str(path.relative_to(PROJECT_ROOT))
                 for folder in ("appt_pipeline", "appt_pipeline_tests", "bench")
                 for path in (PROJECT_ROOT / folder).rglob("*.py") if pattern.search(path.read_text())]
    assert offenders == []


def _instance_with_project_limits() -> Any:
    """An ephemeral test instance with dagster.yaml's run queue and concurrency settings (not its storage)."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    return dg.instance_for_test(overrides={k: v for k, v in config.items() if k != "storage"})


def test_run_in_this_process_is_refused_while_a_run_of_the_workspace_is_in_flight(
    legacy_workspace: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes (docs/operations.md §5): a run in flight blocks a run of the same workspace *and kind* only."""
    from appt_pipeline.cli.launch import RunInProgressError, conflicting_runs, run_partition_job
    from appt_pipeline_tests.helpers import add_run_in_flight

    def tags(job: str, ws: str) -> dict[str, str]:
        resolved = defs.resolve_job_def(job)
        return {**resolved.tags, **resolved.partitioned_config.get_tags_for_partition_key(ws, job)}

    monkeypatch.setenv("APPT_DATABASE_URL", database_url)
    with _instance_with_project_limits() as instance:
        assert conflicting_runs(instance, tags("migration_job", legacy_workspace)) == []
        reconciling = add_run_in_flight(instance, "reconciliation_job", legacy_workspace)
        # another kind of the same workspace (its webhooks, its migration) may start beside the reconciliation
        assert conflicting_runs(instance, tags("webhook_ingest_job", legacy_workspace)) == []
        assert conflicting_runs(instance, tags("migration_job", legacy_workspace)) == []
        # the same kind may not
        [reason] = conflicting_runs(instance, tags("reconciliation_job", legacy_workspace))
        assert reconciling in reason and f"appt/lane={legacy_workspace}:reconciliation" in reason
        busy = add_run_in_flight(instance, "migration_job", legacy_workspace)
        add_run_in_flight(instance, "migration_job", "other_ws")
        [reason] = conflicting_runs(instance, tags("migration_job", legacy_workspace))
        assert busy in reason and f"appt/lane={legacy_workspace}:migration" in reason
        with pytest.raises(RunInProgressError, match=busy):
            run_partition_job(instance, "migration_job", legacy_workspace, queue=False)
        assert len(instance.get_run_records()) == 3  # no run was made
        # max_concurrent_runs (4): one more going run of another workspace fills the slots
        add_run_in_flight(instance, "migration_job", "x1")
        assert any("max_concurrent_runs" in r for r in conflicting_runs(instance, tags("migration_job", "free")))
    assert rows(sa.create_engine(database_url), "SELECT 1 FROM appointments") == []
