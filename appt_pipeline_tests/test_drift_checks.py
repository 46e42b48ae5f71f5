"""The SPEC §10 drift checks (store, ``appt-pipeline checks``, the Dagster asset checks): each made to fail on
purpose — only that check fails, with the offending ids as its sample — and to pass after the fix; run-scoped
checks see only the leads a run touched. Fixed clock (``NOW``)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from appt_pipeline.definitions import defs
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.domain.redaction import pii_fields
from appt_pipeline.domain.vocab import Status
from appt_pipeline.store.drift_checks import CHECK_NAMES, run_checks
from appt_pipeline.store.rollups import drift_report, refresh_rollups
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import calendly, ghl, rows, seed
from appt_pipeline_tests.helpers.cli import cli_env, one_json, run_cli
from appt_pipeline_tests.helpers.webhooks import calendly_body, deliver

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
LEADS = ["L0", "L1", "L2", "L3", "L5"]


def baseline(db: sa.Engine, now: datetime = NOW) -> None:
    """A workspace where every check passes at ``now``: booked GHL and Calendly leads, a lead without rows, a lead
    with two cancelled rows, a clean staging row."""
    seed(db, leads=LEADS)
    write_observations(db, [
        ghl("L0", "g0", start_at=now + timedelta(days=2)),
        calendly("L1", "inv1", start_at=now + timedelta(days=3)),
        ghl("L5", "g5a", status=Status.CANCELED, start_at=now - timedelta(days=3)),
        ghl("L5", "g5b", status=Status.CANCELED, start_at=now - timedelta(days=2)),
    ], now=now)
    deliver(db, "ws1", calendly_body("invitee.created", "i9"))


def failing(db: sa.Engine, now: datetime = NOW, since: datetime | None = None) -> dict[str, list[str]]:
    with db.connect() as conn:
        return {o.name: o.sample for o in run_checks(conn, "ws1", now, since=since) if not o.passed}


def sql(db: sa.Engine, statement: str, **params: object) -> None:
    with db.begin() as conn:
        conn.execute(sa.text(statement), params)


def repair(db: sa.Engine) -> None:
    with db.begin() as conn:
        drift_report(conn, "ws1", NOW, repair=True)


def appt_id(db: sa.Engine, key: str) -> str:
    return str(rows(db, "SELECT id FROM appointments WHERE ghl_appointment_id = :k", k=key)[0][0])


def _missing_invitee(db: sa.Engine) -> list[str]:
    sql(db, "INSERT INTO appointments (workspace_id, lead_id, provider, calendly_scheduled_event_uri, status, "
            "status_changed_at, canceled_at, source, last_source, last_observed_at, legacy_lead_key, created_at) "
            "VALUES ('ws1', 'L3', 'CALENDLY', 'https://api.calendly.com/scheduled_events/ev3', 'CANCELED', :t, :t, "
            "'MIGRATION', 'MIGRATION', :t, 'L3', :t)", t=NOW - timedelta(days=2))
    repair(db)  # the lead's rollup follows its new row: only the missing invitee is drift
    return [str(rows(db, "SELECT id FROM appointments WHERE lead_id = 'L3'")[0][0])]


def _fix_missing_invitee(db: sa.Engine) -> None:
    sql(db, "UPDATE appointments SET calendly_invitee_uri = calendly_scheduled_event_uri || '/invitees/i3' "
            "WHERE lead_id = 'L3'")
    repair(db)


def _cycle(db: sa.Engine) -> list[str]:
    a, b = appt_id(db, "g5a"), appt_id(db, "g5b")
    sql(db, "UPDATE appointments SET rescheduled_from_id = CAST(:b AS uuid) WHERE id = CAST(:a AS uuid)", a=a, b=b)
    sql(db, "UPDATE appointments SET rescheduled_from_id = CAST(:a AS uuid) WHERE id = CAST(:b AS uuid)", a=a, b=b)
    return sorted([a, b])


def _stale(db: sa.Engine) -> list[str]:
    # written three hours ago for a meeting one hour ago: it has passed, and no refresh ran for two intervals
    write_observations(db, [ghl("L3", "g3", start_at=NOW - timedelta(hours=1)),
                            ghl("L3", "g3-next", start_at=NOW + timedelta(days=1))], now=NOW - timedelta(hours=3))
    return ["L3"]


def _pii(db: sa.Engine) -> list[str]:
    with db.begin() as conn:
        row_id = conn.execute(sa.text(
            "INSERT INTO webhook_events (workspace_id, provider, event_type, dedupe_key, payload, status) VALUES "
            "('ws1', 'GHL', 'AppointmentCreate', 'k-pii', CAST(:p AS jsonb), 'pending') RETURNING id"),
            {"p": '{"appointment": {"id": "a1", "notes": "call +1 415 555 0199"}}'}).scalar_one()
    return [str(row_id)]


#: check → (break it, returning the expected sample; fix it)
CASES: dict[str, tuple[Callable[[sa.Engine], list[str]], Callable[[sa.Engine], None]]] = {
    "rollup_drift": (lambda db: (sql(db, "UPDATE leads SET booked_slot = 'x' WHERE id = 'L0'"), ["L0"])[1], repair),
    "booked_without_confirmed": (
        lambda db: (sql(db, "UPDATE leads SET status = 'meeting-booked' WHERE id = 'L2'"), ["L2"])[1],
        lambda db: sql(db, "UPDATE leads SET status = 'qualified' WHERE id = 'L2'")),
    "confirmed_not_booked": (
        lambda db: (sql(db, "UPDATE leads SET status = 'qualified' WHERE id = 'L1'"), ["L1"])[1],
        lambda db: sql(db, "UPDATE leads SET status = 'unqualified' WHERE id = 'L1'")),  # excluded status
    "calendly_missing_invitee": (_missing_invitee, _fix_missing_invitee),
    "reschedule_cycles": (_cycle, lambda db: sql(db, "UPDATE appointments SET rescheduled_from_id = NULL")),
    "provider_keys_unique": (
        lambda db: (sql(db, "UPDATE leads SET ghl_appointment_id = 'g0' WHERE id = 'L2'"), ["L2"])[1],
        lambda db: sql(db, "UPDATE leads SET ghl_appointment_id = NULL WHERE id = 'L2'")),
    "staging_pii": (_pii, lambda db: sql(db, "UPDATE webhook_events SET payload = "
                                             "jsonb_set(payload, '{appointment,notes}', '\"[redacted-phone]\"')")),
}


def _refresh(db: sa.Engine) -> None:
    with db.begin() as conn:
        refresh_rollups(conn, "ws1", NOW)


CASES["rollup_freshness"] = (_stale, _refresh)


def test_every_check_has_a_case() -> None:
    assert list(CASES) == list(CHECK_NAMES) and len(CHECK_NAMES) == 8


def test_the_baseline_passes_every_check(db: sa.Engine) -> None:
    baseline(db)
    assert failing(db) == {}
    [payload] = [r[0] for r in rows(db, "SELECT payload FROM webhook_events")]
    assert pii_fields(payload) == []  # staging keeps no PII, and its ids/URIs/times are not taken for phones


@pytest.mark.parametrize("name", list(CASES))
def test_a_check_fails_on_purpose_and_passes_after_the_fix(db: sa.Engine, name: str) -> None:
    baseline(db)
    break_it, fix_it = CASES[name]
    expected = break_it(db)
    assert failing(db) == {name: expected}
    fix_it(db)
    assert failing(db) == {}


def test_run_scoped_checks_see_only_the_leads_the_run_touched(db: sa.Engine) -> None:
    baseline(db)
    sql(db, "UPDATE leads SET booked_slot = 'x' WHERE id = 'L0'")  # drift on a lead no run touches
    run_start = NOW + timedelta(minutes=5)
    assert failing(db, since=run_start) == {}
    assert failing(db) == {"rollup_drift": ["L0"]}
    # a run writes L1 and leaves it inconsistent: its run-scoped checks see L1 (and only L1)
    write_observations(db, [calendly("L1", "inv1b", start_at=NOW + timedelta(days=4))], now=run_start)
    sql(db, "UPDATE leads SET status = 'qualified' WHERE id = 'L1'")
    assert failing(db, since=run_start) == {"confirmed_not_booked": ["L1"]}
    with db.connect() as conn:
        scoped = {o.name: o for o in run_checks(conn, "ws1", NOW, since=run_start)}
    assert {o.scope for o in scoped.values()} == {"run"}


def test_cli_checks_exits_1_with_the_failing_check_and_0_after_the_fix(db: sa.Engine, tmp_path: Path,
                                                                     database_url: str) -> None:
    baseline(db, datetime.now(UTC))  # the command checks at the real clock
    env = cli_env(tmp_path / "home", database_url)
    sql(db, "UPDATE leads SET status = 'meeting-booked' WHERE id = 'L2'")
    proc = run_cli(env, "checks", "--workspace", "ws1", "--json")
    assert proc.returncode == 1, proc.stderr
    out = one_json(proc)
    assert out["workspace_id"] == "ws1" and [c["name"] for c in out["checks"]] == list(CHECK_NAMES)
    [bad] = [c for c in out["checks"] if not c["passed"]]
    assert bad == {"name": "booked_without_confirmed", "passed": False, "count": 1, "sample": ["L2"]}
    sql(db, "UPDATE leads SET status = 'qualified' WHERE id = 'L2'")
    ok = run_cli(env, "checks", "--workspace", "ws1")
    assert ok.returncode == 0 and ok.stdout == "" and "booked_without_confirmed" in ok.stderr
    assert run_cli(env, "checks", "--workspace", "nope", "--json").returncode == 2


def test_drift_check_job_runs_every_check_on_the_partition_and_a_failure_does_not_fail_the_run(
        db: sa.Engine, database_url: str) -> None:
    baseline(db, datetime.now(UTC))  # the job checks at the real clock
    sql(db, "UPDATE leads SET ghl_appointment_id = 'g0' WHERE id = 'L2'")
    job = defs.resolve_job_def("drift_check_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["ws1"])
        result = job.execute_in_process(partition_key="ws1", instance=instance,
                                        resources={"app_db": AppDatabase(url=database_url)})
        assert result.success  # a failing check is reported, never a failed run
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert list(checks) == list(CHECK_NAMES)
        assert [n for n, c in checks.items() if not c.passed] == ["provider_keys_unique"]
        failed = checks["provider_keys_unique"]
        assert failed.asset_key == dg.AssetKey("appointment_history") and failed.partition == "ws1"
        assert {k: v.value for k, v in failed.metadata.items()} == {"count": 1, "sample_ids": ["L2"], "scope": "full"}
