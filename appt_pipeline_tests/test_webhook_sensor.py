"""The webhook sensor and webhook_ingest_job (SPEC §7): one run per workspace with pending rows, deterministic
run keys, no run while one is in flight, failed runs retried, no row skipped when rows commit out of id order."""

import json
from typing import Any

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.cli.launch import run_partition_job
from appt_pipeline.definitions import defs
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.sensors import webhook_events_sensor
from appt_pipeline.domain.webhook_staging import stage_calendly
from appt_pipeline.store.webhook_events import insert_events
from appt_pipeline_tests.helpers import add_run_in_flight, rows, seed
from appt_pipeline_tests.helpers.webhooks import calendly_body, deliver, with_email


def evaluate(instance: dg.DagsterInstance, database_url: str, cursor: str | None = None) -> Any:
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"app_db": AppDatabase(url=database_url)}) as ctx:
        return webhook_events_sensor(ctx)


def test_no_pending_rows_skips(db: sa.Engine, database_url: str) -> None:
    with dg.instance_for_test() as instance:
        assert isinstance(evaluate(instance, database_url), dg.SkipReason)


def test_one_run_per_workspace_with_deterministic_keys_and_new_partitions(db: sa.Engine, database_url: str) -> None:
    for ws in ("wsA", "wsB"):
        seed(db, ws, leads=0)
    deliver(db, "wsA", calendly_body("invitee.created", "a1"), calendly_body("invitee.created", "a2"))
    deliver(db, "wsB", calendly_body("invitee.created", "b1"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["wsA"])
        result = evaluate(instance, database_url)
        assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
            ("wsA", "webhooks:wsA:2-2:0"), ("wsB", "webhooks:wsB:3-1:0")]
        assert [r.tags["appt/lane"] for r in result.run_requests] == ["wsA:webhooks", "wsB:webhooks"]
        [add] = result.dynamic_partitions_requests
        assert list(add.partition_keys) == ["wsB"]
        # same rows still pending after those runs ended (failed): the next tick retries with a new key
        again = evaluate(instance, database_url, cursor=result.cursor)
        assert [r.run_key for r in again.run_requests] == ["webhooks:wsA:2-2:1", "webhooks:wsB:3-1:1"]
        assert json.loads(again.cursor)["wsA"] == ["2-2", 1]


def test_no_run_while_one_for_the_workspace_is_in_flight(db: sa.Engine, database_url: str) -> None:
    for ws in ("wsA", "wsB"):
        seed(db, ws, leads=0)
        deliver(db, ws, calendly_body("invitee.created", f"{ws}-1"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["wsA", "wsB"])
        add_run_in_flight(instance, "webhook_ingest_job", "wsA")
        result = evaluate(instance, database_url)
        assert [r.partition_key for r in result.run_requests] == ["wsB"]


def test_rows_committing_out_of_id_order_are_never_skipped(db: sa.Engine, database_url: str) -> None:
    [lead] = seed(db, "ws1", leads=1)
    with_email(db, lead)
    # transaction 1 takes id 1 but commits after transaction 2 (id 2) was ingested
    with db.connect() as slow:  # closed (its transaction rolled back) also when an assertion below fails
        slow_tx = slow.begin()
        insert_events(slow, [("ws1", stage_calendly(calendly_body("invitee.created", "late"), workspace_id="ws1"))])
        deliver(db, "ws1", calendly_body("invitee.created", "early"))
        job = defs.resolve_job_def("webhook_ingest_job")
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(workspace_partitions.name, ["ws1"])
            first = evaluate(instance, database_url)
            assert [r.run_key for r in first.run_requests] == ["webhooks:ws1:2-1:0"]
            assert job.execute_in_process(partition_key="ws1", instance=instance,
                                          resources={"app_db": AppDatabase(url=database_url)}).success
            slow_tx.commit()
            second = evaluate(instance, database_url, cursor=first.cursor)
            assert [r.run_key for r in second.run_requests] == ["webhooks:ws1:1-1:0"]
            result = job.execute_in_process(partition_key="ws1", instance=instance,
                                            resources={"app_db": AppDatabase(url=database_url)})
            assert result.success
            mats = {e.step_materialization_data.materialization.asset_key.to_user_string():
                    {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
                    for e in result.get_asset_materialization_events()}
            assert mats["appointment_history"]["evidence"] == "webhooks"
            assert (mats["appointment_history"]["processed"], mats["appointment_history"]["new_bookings"]) == (1, 1)
            checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
            assert len(checks) == 8 and all(checks.values()), checks
            assert isinstance(evaluate(instance, database_url, cursor=second.cursor), dg.SkipReason)
    assert [r[0] for r in rows(db, "SELECT status FROM webhook_events ORDER BY id")] == ["processed", "processed"]
    assert len(rows(db, "SELECT 1 FROM appointments")) == 2


def test_run_partition_job_uses_the_named_jobs_own_config(db: sa.Engine, database_url: str) -> None:
    """``appt-pipeline run`` / the demo launch with the job's partition config (execute_job alone would not)."""
    [lead] = seed(db, "ws1", leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "i1"))
    with dg.instance_for_test() as instance:
        outcome = run_partition_job(instance, "webhook_ingest_job", "ws1")
        assert outcome.success
        assert outcome.metadata["appointment_history"]["evidence"] == "webhooks"
        assert outcome.metadata["appointment_history"]["processed"] == 1
        run = instance.get_run_by_id(outcome.run_id)
        assert run is not None and run.tags["dagster/partition"] == "ws1" and run.tags["appt/lane"] == "ws1:webhooks"
