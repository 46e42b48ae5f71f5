"""Rollups over time (SPEC §3): the reference stamp, the drift check at each lead's reference, the refresh
(store, ``appt-pipeline rollups --refresh``, ``rollup_refresh_job`` and its schedule) and the freshness check.

Times are close to now: a CONFIRMED meeting a few seconds ahead and a later one, so the first passes during
the test (explicit clocks a few seconds apart for the store, the real clock for the command line).
"""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.definitions import defs
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.rollups import rollup_refresh_schedule
from appt_pipeline.store.rollups import drift_report, due_refresh_counts, refresh_rollups, stale_rollups
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import ghl, lead, rows, seed
from appt_pipeline_tests.helpers.cli import cli_env, one_json, run_cli

HOUR = 3600


def _book_soon_and_later(db: sa.Engine, lead_id: str, now: datetime, soon_s: float) -> None:
    """Two CONFIRMED meetings of ``lead_id`` written at ``now``: one ``soon_s`` seconds ahead, one a day ahead."""
    soon, later = now + timedelta(seconds=soon_s), now + timedelta(days=1)
    write_observations(db, [
        ghl(lead_id, f"{lead_id}-soon", start_at=soon, end_at=soon + timedelta(minutes=30)),
        ghl(lead_id, f"{lead_id}-later", start_at=later, end_at=later + timedelta(minutes=30)),
    ], now=now)


def _counts(db: sa.Engine) -> tuple[int, int]:
    return (rows(db, "SELECT count(*) FROM follow_up_tasks")[0][0],
            rows(db, "SELECT count(*) FROM appointment_status_changes")[0][0])


def test_refresh_moves_the_rollup_to_the_next_meeting_once_the_first_has_passed(db: sa.Engine) -> None:
    [booked, quiet] = seed(db, leads=2)
    t0 = datetime.now(UTC).replace(microsecond=0)
    _book_soon_and_later(db, booked, t0, soon_s=3)
    write_observations(db, [ghl(quiet, "quiet-later", start_at=t0 + timedelta(days=2))], now=t0)
    first = lead(db, booked)
    assert (first.ghl_appointment_id, first.appointment_rollup_at, first.status) == (f"{booked}-soon", t0,
                                                                                     "meeting-booked")
    before = _counts(db)

    t1 = t0 + timedelta(seconds=5)  # the first meeting has started: the primary at t1 is the later one
    with db.begin() as conn:
        # time alone never makes the drift check fail: each lead is compared at its own reference
        assert drift_report(conn, "ws1", t1).drifted == 0
        # not overdue yet (two hourly intervals), overdue with a short interval or two hours later
        assert stale_rollups(conn, "ws1", t1) == (0, [])
        assert stale_rollups(conn, "ws1", t1, interval_s=2) == (1, [booked])
        assert stale_rollups(conn, "ws1", t0 + timedelta(seconds=2 * HOUR + 1)) == (1, [booked])
        assert due_refresh_counts(conn, t1) == {"ws1": 1}
        report = refresh_rollups(conn, "ws1", t1)
    assert (report.due, report.changed, report.sample_lead_ids) == (1, 1, [booked])
    after = lead(db, booked)
    assert (after.ghl_appointment_id, after.appointment_rollup_at) == (f"{booked}-later", t1)
    assert after.appointment_start_at == t0 + timedelta(days=1)
    # no tasks, no lead status change, no status changes recorded; the other lead is left alone
    assert after.status == "meeting-booked" and _counts(db) == before
    assert lead(db, quiet).appointment_rollup_at == t0
    with db.begin() as conn:
        assert drift_report(conn, "ws1", t1).drifted == 0
        assert stale_rollups(conn, "ws1", t1, interval_s=2) == (0, [])
        assert refresh_rollups(conn, "ws1", t1 + timedelta(seconds=1)).due == 0  # nothing moved since


def test_drift_is_still_found_at_the_leads_reference(db: sa.Engine) -> None:
    [victim] = seed(db, leads=1)
    t0 = datetime.now(UTC).replace(microsecond=0)
    _book_soon_and_later(db, victim, t0, soon_s=3)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET ghl_appointment_id = 'wrong' WHERE id = :id"), {"id": victim})
        report = drift_report(conn, "ws1", t0 + timedelta(seconds=5))
        assert (report.drifted, report.sample_lead_ids) == (1, [victim])
        # a refresh recomputes it too (its meeting started after its reference)
        assert refresh_rollups(conn, "ws1", t0 + timedelta(seconds=5)).changed == 1
        assert drift_report(conn, "ws1", t0 + timedelta(seconds=5)).drifted == 0


def test_a_lead_without_reference_is_due_once_a_meeting_started(db: sa.Engine) -> None:
    """Leads whose rollup predates the reference column (NULL) are compared at now and refreshed once."""
    [old] = seed(db, leads=1)
    t0 = datetime.now(UTC).replace(microsecond=0)
    _book_soon_and_later(db, old, t0, soon_s=3)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET appointment_rollup_at = NULL WHERE id = :id"), {"id": old})
        t1 = t0 + timedelta(seconds=5)
        assert drift_report(conn, "ws1", t1).drifted == 1  # compared at now: stale
        assert stale_rollups(conn, "ws1", t1) == (1, [old])
        assert refresh_rollups(conn, "ws1", t1).changed == 1
        assert drift_report(conn, "ws1", t1).drifted == 0


def test_cli_rollups_refresh_with_the_real_clock(db: sa.Engine, tmp_path: Path, database_url: str) -> None:
    [booked] = seed(db, leads=1)
    _book_soon_and_later(db, booked, datetime.now(UTC), soon_s=1.5)
    assert lead(db, booked).ghl_appointment_id == f"{booked}-soon"
    time.sleep(2.0)  # the first meeting starts
    env = cli_env(tmp_path / "home", database_url)
    plain = one_json(run_cli(env, "rollups", "--workspace", "ws1", "--json"))
    assert plain["drifted"] == 0 and "refresh" not in plain
    proc = run_cli(env, "rollups", "--workspace", "ws1", "--refresh", "--json")
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert (out["refresh"]["due"], out["refresh"]["changed"], out["refresh"]["sample_lead_ids"]) == (1, 1, [booked])
    assert out["drifted"] == 0
    assert lead(db, booked).ghl_appointment_id == f"{booked}-later"
    again = one_json(run_cli(env, "rollups", "--workspace", "ws1", "--refresh", "--json"))
    assert again["refresh"]["due"] == 0


def test_rollup_refresh_job_and_hourly_schedule(db: sa.Engine, database_url: str) -> None:
    [booked] = seed(db, leads=1)
    seed(db, "ws2", leads=1)
    t0 = datetime.now(UTC) - timedelta(minutes=30)  # written 30 min ago: the soon meeting has started since
    _book_soon_and_later(db, booked, t0, soon_s=60)
    resources = {"app_db": AppDatabase(url=database_url)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["ws1", "ws2"])
        with dg.build_schedule_context(instance=instance, resources=resources,
                                       scheduled_execution_time=datetime.now(UTC)) as ctx:
            requests = list(rollup_refresh_schedule(ctx))
        assert [r.partition_key for r in requests] == ["ws1"]  # ws2 has nothing due
        job = defs.resolve_job_def("rollup_refresh_job")
        result = job.execute_in_process(partition_key="ws1", instance=instance, resources=resources)
        assert result.success
        [mat] = result.get_asset_materialization_events()
        materialization = mat.step_materialization_data.materialization
        assert materialization.asset_key == dg.AssetKey("lead_rollups") and materialization.partition == "ws1"
        assert {k: materialization.metadata[k].value for k in ("due", "changed")} == {"due": 1, "changed": 1}
        with dg.build_schedule_context(instance=instance, resources=resources,
                                       scheduled_execution_time=datetime.now(UTC)) as ctx:
            assert isinstance(rollup_refresh_schedule(ctx), dg.SkipReason)
    assert lead(db, booked).ghl_appointment_id == f"{booked}-later"
    assert rows(db, "SELECT count(*) FROM follow_up_tasks")[0][0] == 0
