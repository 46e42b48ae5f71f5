"""SPEC §5 migration (legacy lead rollups → appointment history) through ``migrate_workspace`` on a real
PostgreSQL, plus crash safety of ``appt-pipeline migrate --apply`` killed with SIGKILL mid-run.

Legacy data is loaded the way operators load it — a CSV in the fixture format through
``import_legacy`` (a few cases then write values an import would have normalised straight into
``leads``). Reference bugs of the original (docs/original-system.md §10) are pinned: event-only Calendly
leads duplicated on rerun, the narrower status mapping, ``created_at`` = migration time, a dry-run moving
the resume point.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from appt_pipeline.domain.primary import build_rollup, select_primary
from appt_pipeline.domain.timeparse import parse_timestamp, parse_timestamp_or_none
from appt_pipeline.domain.vocab import STATUS_SYNONYMS, Status
from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sample.generator import generate_legacy
from appt_pipeline.store.legacy_import import import_legacy
from appt_pipeline.store.migration import MigrationReport, UnknownWorkspaceError, migrate_workspace
from appt_pipeline.store.rollups import ROLLUP_COLUMNS, drift_report
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.conftest import APP_TABLES
from appt_pipeline_tests.helpers import ApptRow, calendly, lead, rows, snapshot
from appt_pipeline_tests.helpers.cli import CLI, cli_env, one_json, run_cli
from appt_pipeline_tests.helpers.legacy import lead_row, write_legacy, ws_row

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
C, X, R, S, N = Status.CONFIRMED, Status.CANCELED, Status.RESCHEDULED, Status.SHOWED, Status.NO_SHOW
EVT = "https://api.calendly.com/scheduled_events/"


# ------------------------------------------------------------------------------------------- helpers


def appt_rows(engine: sa.Engine) -> list[ApptRow]:
    return [ApptRow.of(r) for r in rows(engine, "SELECT * FROM appointments")]


def by_key(engine: sa.Engine) -> dict[str, Any]:
    """Appointments by legacy_lead_key."""
    return {r.legacy_lead_key: r for r in rows(engine, "SELECT * FROM appointments")}


def reset(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")


def load(engine: sa.Engine, folder: Path, leads: list[dict[str, Any]],
         workspaces: list[dict[str, Any]] | None = None) -> Path:
    write_legacy(folder, leads=leads,
                 workspaces=workspaces if workspaces is not None else [ws_row("ws_a"), ws_row("ws_b", "CALENDLY")])
    import_legacy(engine, folder)
    return folder


def progress(engine: sa.Engine) -> dict[str, str]:
    return {r[0]: r[1] for r in rows(engine, "SELECT workspace_id, last_lead_id FROM migration_progress")}


def counters(report: MigrationReport) -> tuple[Any, ...]:
    return (report.scanned, report.created, report.exists, report.skipped, report.errors, report.errors_by_kind)


def assert_counters_add_up(report: MigrationReport) -> None:
    assert report.scanned == report.created + report.exists + report.skipped + report.errors
    assert report.errors == sum(report.errors_by_kind.values())


def assert_rollups_follow_spec(engine: sa.Engine, workspace_ids: list[str], ref: datetime = NOW) -> None:
    """Every lead with rows carries rollup(primary) by the Python §3 rule, and SQL drift is 0."""
    per_lead: dict[str, list[ApptRow]] = defaultdict(list)
    for r in appt_rows(engine):
        per_lead[r.lead_id].append(r)
    cols = ", ".join(ROLLUP_COLUMNS)
    leads_now = {r[0]: tuple(r[1:]) for r in rows(engine, f"SELECT id, {cols} FROM leads")}
    for lead_id, lead_rows in per_lead.items():
        expected = build_rollup(select_primary(lead_rows, ref))
        assert leads_now[lead_id] == tuple(getattr(expected, c) for c in ROLLUP_COLUMNS), lead_id
    with engine.connect() as conn:
        for ws in workspace_ids:
            assert drift_report(conn, ws, ref).drifted == 0


def ghl_lead(lead_id: str, appt: str, ws: str = "ws_a", **kw: Any) -> dict[str, Any]:
    return lead_row(lead_id, ws, ghl_appointment_id=appt, appointment_provider="GHL", **kw)


def cal_lead(lead_id: str, event: str, invitee: str | None = None, ws: str = "ws_b", **kw: Any) -> dict[str, Any]:
    return lead_row(lead_id, ws, calendly_scheduled_event_uri=EVT + event,
                    calendly_invitee_uri=f"{EVT}{event}/invitees/{invitee}" if invitee else None,
                    appointment_provider="CALENDLY", **kw)


# ----------------------------------------------------------------------------------- dry-run / apply


def test_dry_run_writes_nothing_and_predicts_apply(db: sa.Engine) -> None:
    import_legacy(db, SAMPLE_DIR)
    before = snapshot(db)
    workspaces = ["ws_7_0", "ws_7_1", "ws_7_2"]
    dry = {ws: migrate_workspace(db, ws, chunk_size=400) for ws in workspaces}
    dry_resume = migrate_workspace(db, "ws_7_0", resume=True)
    assert snapshot(db) == before
    assert progress(db) == {}
    assert rows(db, "SELECT count(*) FROM appointment_status_changes")[0][0] == 0
    assert counters(dry_resume) == counters(dry["ws_7_0"])
    for ws in workspaces:
        report = dry[ws]
        assert not report.apply and report.created > 0 and report.exists == 0
        assert report.scanned == 1000
        assert_counters_add_up(report)
        applied = migrate_workspace(db, ws, apply=True)
        assert counters(applied) == counters(report)
    assert rows(db, "SELECT count(*) FROM appointments")[0][0] == sum(r.created for r in dry.values())


def test_apply_creates_one_row_per_lead_with_a_provider_id(db: sa.Engine) -> None:
    import_legacy(db, SAMPLE_DIR)
    legacy = {r.id: r for r in rows(db, "SELECT * FROM leads")}
    for ws in ("ws_7_0", "ws_7_1", "ws_7_2"):
        migrate_workspace(db, ws, apply=True)
    keyed = {i for i, r in legacy.items()
             if r.ghl_appointment_id or r.calendly_invitee_uri or r.calendly_scheduled_event_uri}
    appts = by_key(db)
    assert set(appts) == keyed
    assert rows(db, "SELECT count(*) FROM appointments")[0][0] == len(keyed)
    for key, a in appts.items():
        old = legacy[key]
        assert (a.lead_id, a.workspace_id) == (key, old.workspace_id)
        assert (a.source, a.last_source) == ("MIGRATION", "MIGRATION")
        if old.ghl_appointment_id:
            assert (a.provider, a.ghl_appointment_id, a.calendly_invitee_uri, a.calendly_scheduled_event_uri) \
                == ("GHL", old.ghl_appointment_id, None, None)
        else:
            assert (a.provider, a.ghl_appointment_id, a.calendly_invitee_uri, a.calendly_scheduled_event_uri) \
                == ("CALENDLY", None, old.calendly_invitee_uri, old.calendly_scheduled_event_uri)
        assert a.end_at == old.appointment_end_at
        if old.appointment_start_at:
            assert a.start_at == old.appointment_start_at
        if old.appointment_booked_at:
            assert a.created_at == old.appointment_booked_at
        if old.appointment_canceled_at and a.status in ("CANCELED", "RESCHEDULED"):
            assert a.canceled_at == old.appointment_canceled_at
    # one status change per row: NULL → status, source MIGRATION
    changes = rows(db, "SELECT from_status, source, count(*) FROM appointment_status_changes GROUP BY 1, 2")
    assert [tuple(r) for r in changes] == [(None, "MIGRATION", len(keyed))]


def test_rerun_creates_nothing(db: sa.Engine) -> None:
    import_legacy(db, SAMPLE_DIR)
    first = migrate_workspace(db, "ws_7_1", apply=True, chunk_size=300)
    after_first = snapshot(db)
    for chunk_size in (300, 50_000):
        again = migrate_workspace(db, "ws_7_1", apply=True, chunk_size=chunk_size)
        assert (again.created, again.exists, again.skipped, again.errors) == (0, first.created, first.skipped, 0)
        assert again.rollups_changed == 0 and again.status_changes == 0
        assert snapshot(db) == after_first


def test_unknown_workspace_raises(db: sa.Engine) -> None:
    import_legacy(db, SAMPLE_DIR)
    before = snapshot(db)
    for apply in (False, True):
        with pytest.raises(UnknownWorkspaceError):
            migrate_workspace(db, "ws_nope", apply=apply)
    assert snapshot(db) == before and progress(db) == {}


def test_chunk_size_must_be_positive(db: sa.Engine) -> None:
    with pytest.raises(ValueError):
        migrate_workspace(db, "ws_7_0", chunk_size=0)


# ------------------------------------------------------------------------------------------ Calendly


def test_event_only_calendly_leads_are_idempotent(db: sa.Engine, tmp_path: Path) -> None:
    # the original inserted another row for these on every --apply rerun (docs/original-system.md §10)
    load(db, tmp_path, [cal_lead("c1", "ev1", appointment_status="confirmed"),
                        cal_lead("c2", "ev2", appointment_status="canceled"), cal_lead("c3", "ev3", "inv3")])
    first = migrate_workspace(db, "ws_b", apply=True)
    assert (first.created, first.errors) == (3, 0)
    state = snapshot(db)
    for _ in range(2):
        again = migrate_workspace(db, "ws_b", apply=True, chunk_size=1)
        assert (again.created, again.exists) == (0, 3)
        assert snapshot(db) == state
    got = {r.lead_id: r for r in rows(db, "SELECT * FROM appointments")}
    assert (got["c1"].calendly_invitee_uri, got["c1"].calendly_scheduled_event_uri) == (None, EVT + "ev1")
    assert got["c1"].legacy_lead_key == "c1"


def test_leads_sharing_one_group_event_get_separate_rows(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [
        cal_lead("g1", "group", "inv1", appointment_status="confirmed", appointment_start_at="2026-04-01T15:00:00Z"),
        cal_lead("g2", "group", "inv2", appointment_status="Canceled", appointment_start_at="2026-04-01T15:00:00Z"),
        cal_lead("g3", "group", appointment_status="confirmed", appointment_start_at="2026-04-01T15:00:00Z"),
        cal_lead("g4", "group", appointment_status="canceled", appointment_start_at="2026-04-01T15:00:00Z"),
    ])
    report = migrate_workspace(db, "ws_b", apply=True, chunk_size=2)
    assert (report.created, report.errors) == (4, 0)
    got = {r.lead_id: r for r in rows(db, "SELECT * FROM appointments")}
    assert set(got) == {"g1", "g2", "g3", "g4"}
    assert {r.calendly_scheduled_event_uri for r in got.values()} == {EVT + "group"}
    assert (got["g1"].status, got["g2"].status) == ("CONFIRMED", "CANCELED")
    assert (got["g3"].status, got["g4"].status) == ("CONFIRMED", "CANCELED")
    assert got["g3"].calendly_invitee_uri is None and got["g4"].calendly_invitee_uri is None
    assert migrate_workspace(db, "ws_b", apply=True).created == 0
    assert_rollups_follow_spec(db, ["ws_b"])


def test_later_invitee_observation_upgrades_the_event_only_row(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [cal_lead("c1", "ev1", appointment_status="confirmed",
                                 appointment_start_at="2026-04-01T15:00:00Z")])
    migrate_workspace(db, "ws_b", apply=True)
    [migrated] = rows(db, "SELECT * FROM appointments")
    write_observations(db, [calendly("c1", "inv1", ws="ws_b", event="ev1",
                                     start_at=datetime(2026, 4, 1, 15, tzinfo=UTC))], now=NOW)
    [upgraded] = rows(db, "SELECT * FROM appointments")
    assert upgraded.id == migrated.id
    assert upgraded.calendly_invitee_uri == EVT + "ev1/invitees/inv1"
    assert (upgraded.source, upgraded.last_source, upgraded.legacy_lead_key) == ("MIGRATION", "WEBHOOK", "c1")
    assert lead(db, "c1").calendly_invitee_uri == EVT + "ev1/invitees/inv1"
    assert migrate_workspace(db, "ws_b", apply=True).created == 0


# ------------------------------------------------------------------------------------ status mapping

STATUS_CASES: list[tuple[str, Status]] = [
    ("confirmed", C), ("Confirmed", C), ("BOOKED", C), ("new", C), ("Active", C), ("", C),
    ("canceled", X), ("Cancelled", X), ("CANCELLED", X), ("invalid", X),
    ("rescheduled", R), ("Rescheduled", R),
    ("showed", S), ("Completed", S),
    ("no_show", N), ("NoShow", N), ("no-show", N), ("No-Show", N),
]


def test_statuses_map_by_spec(db: sa.Engine, tmp_path: Path) -> None:
    # GHL `invalid` is a void appointment (CANCELED), `booked`/`completed`/`no-show` are not CONFIRMED:
    # the original's narrower mapping (docs/original-system.md §2.4) confirmed all three
    leads = [ghl_lead(f"s{i:02d}", f"g{i}", appointment_status=raw) for i, (raw, _) in enumerate(STATUS_CASES)]
    leads.append(cal_lead("cal_upper", "evu", "invu", appointment_status="CANCELED"))
    load(db, tmp_path, leads)
    with db.begin() as conn:  # padding that an import would have trimmed, written straight into the table
        conn.execute(sa.text("UPDATE leads SET appointment_status = '  Showed ' WHERE id = 's13'"))
    report = migrate_workspace(db, "ws_a", apply=True, now=NOW)
    assert (report.created, report.errors) == (len(STATUS_CASES), 0)
    assert migrate_workspace(db, "ws_b", apply=True, now=NOW).created == 1
    got = {r.lead_id: r.status for r in rows(db, "SELECT lead_id, status FROM appointments")}
    for i, (raw, expected) in enumerate(STATUS_CASES):
        assert got[f"s{i:02d}"] == expected.value, raw
    assert got["cal_upper"] == "CANCELED"
    rollups = {r.id: r.appointment_status for r in rows(db, "SELECT id, appointment_status FROM leads")}
    assert rollups["s13"] == "showed" and rollups["s16"] == "no_show" and rollups["s09"] == "canceled"
    assert_rollups_follow_spec(db, ["ws_a", "ws_b"])


def test_status_with_tab_or_newline_padding_maps_like_the_python_mapping(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [ghl_lead("t1", "g1"), ghl_lead("t2", "g2")])
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET appointment_status = E'\\tcanceled\\n' WHERE id = 't1'"))
        conn.execute(sa.text("UPDATE leads SET appointment_status = E'\\u00a0Showed' WHERE id = 't2'"))
    report = migrate_workspace(db, "ws_a", apply=True)
    assert report.errors_by_kind == {}
    got = {r.lead_id: r.status for r in rows(db, "SELECT lead_id, status FROM appointments")}
    assert got == {"t1": "CANCELED", "t2": "SHOWED"}


def test_unknown_status_is_counted_and_the_lead_skipped(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [
        ghl_lead("u1", "g1", appointment_status="confirmed"),
        ghl_lead("u2", "g2", appointment_status="pending review", booked_slot="2026-05-01T10:00:00.000Z"),
        ghl_lead("u3", "g3", appointment_status="Tentative"),
        ghl_lead("u4", "g4", appointment_status="canceled"),
        lead_row("u5", "ws_a", appointment_status="weird but no provider id"),
    ])
    legacy_u2 = lead(db, "u2")
    report = migrate_workspace(db, "ws_a", apply=True, chunk_size=2)
    assert (report.scanned, report.created, report.skipped, report.errors) == (5, 2, 1, 2)
    assert report.errors_by_kind == {"unknown_status": 2}
    samples = {s["lead_id"]: s for s in report.error_samples}
    assert set(samples) == {"u2", "u3"}
    assert samples["u2"]["kind"] == "unknown_status" and "'pending review'" in samples["u2"]["detail"]
    assert "'Tentative'" in samples["u3"]["detail"]
    assert {r.lead_id for r in rows(db, "SELECT lead_id FROM appointments")} == {"u1", "u4"}
    assert lead(db, "u2") == legacy_u2  # untouched legacy rollup
    rerun = migrate_workspace(db, "ws_a", apply=True)
    assert (rerun.created, rerun.exists, rerun.errors_by_kind) == (0, 2, {"unknown_status": 2})
    # a lead migrated before is reported as such, whatever its legacy status says now
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET appointment_status = 'garbled' WHERE id = 'u1'"))
    again = migrate_workspace(db, "ws_a", apply=True)
    assert (again.created, again.exists, again.errors_by_kind) == (0, 2, {"unknown_status": 2})


# --------------------------------------------------------------------------------------------- times


def test_unparseable_booked_slot_gives_null_start_and_a_warning(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [
        ghl_lead("b1", "g1", appointment_status="confirmed", booked_slot="tomorrow 3pm"),
        ghl_lead("b2", "g2", appointment_status="confirmed", booked_slot="TBD"),
        cal_lead("b3", "ev3", "inv3", appointment_status="confirmed", booked_slot="next Tuesday 10:30"),
        ghl_lead("b4", "g4", appointment_status="confirmed", booked_slot="2026-05-01T10:00:00.000Z"),
    ])
    reports = [migrate_workspace(db, ws, apply=True) for ws in ("ws_a", "ws_b")]
    assert sum(r.created for r in reports) == 4
    assert [r.warnings_by_kind for r in reports] == [{"unparseable_booked_slot": 2}, {"unparseable_booked_slot": 1}]
    assert all(r.errors == 0 for r in reports)
    got = {r.lead_id: r for r in rows(db, "SELECT * FROM appointments")}
    assert got["b1"].start_at is None and got["b2"].start_at is None and got["b3"].start_at is None
    assert got["b4"].start_at == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert lead(db, "b1").booked_slot is None  # the rollup follows the row (§3)
    assert lead(db, "b4").booked_slot == "2026-05-01T10:00:00.000Z"
    assert_rollups_follow_spec(db, ["ws_a", "ws_b"])


def test_booked_slot_warning_only_for_rows_created(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [
        ghl_lead("w1", "dup", appointment_status="confirmed", appointment_start_at="2026-05-01T10:00:00Z"),
        ghl_lead("w2", "dup", appointment_status="confirmed", booked_slot="tomorrow 3pm"),
        ghl_lead("w3", "g3", appointment_status="tentative", booked_slot="TBD"),
    ])
    report = migrate_workspace(db, "ws_a", apply=True)
    assert report.errors_by_kind == {"duplicate_provider_id": 1, "unknown_status": 1}
    assert report.created == 1
    assert report.warnings_by_kind == {}


def test_start_at_from_offset_booked_slot(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [
        ghl_lead("o1", "g1", appointment_status="confirmed", booked_slot="2026-07-04T13:00:00-04:00"),
        ghl_lead("o2", "g2", appointment_status="confirmed", booked_slot="2026-01-10T09:30:00+11:00",
                 appointment_end_at="2026-01-09T23:00:00Z"),
        # appointment_start_at wins over booked_slot
        ghl_lead("o3", "g3", appointment_status="confirmed", appointment_start_at="2026-07-04T18:00:00Z",
                 booked_slot="2026-07-04T13:00:00-04:00"),
    ])
    migrate_workspace(db, "ws_a", apply=True, now=NOW)
    got = {r.lead_id: r for r in rows(db, "SELECT * FROM appointments")}
    assert got["o1"].start_at == datetime(2026, 7, 4, 17, tzinfo=UTC) and got["o1"].end_at is None
    assert got["o2"].start_at == datetime(2026, 1, 9, 22, 30, tzinfo=UTC)
    assert got["o2"].end_at == datetime(2026, 1, 9, 23, tzinfo=UTC)
    assert got["o3"].start_at == datetime(2026, 7, 4, 18, tzinfo=UTC)
    assert lead(db, "o1").booked_slot == "2026-07-04T17:00:00.000Z"
    assert lead(db, "o1").appointment_start_at == datetime(2026, 7, 4, 17, tzinfo=UTC)
    assert_rollups_follow_spec(db, ["ws_a"])


def test_cancel_and_booking_times(db: sa.Engine, tmp_path: Path) -> None:
    booked, canceled = "2026-01-05T08:00:00Z", "2026-01-07T09:00:00Z"
    load(db, tmp_path, [
        ghl_lead("t1", "g1", appointment_status="canceled", appointment_booked_at=booked),
        ghl_lead("t2", "g2", appointment_status="Cancelled", appointment_booked_at=booked,
                 appointment_canceled_at=canceled),
        ghl_lead("t3", "g3", appointment_status="confirmed"),
        ghl_lead("t4", "g4", appointment_status="confirmed", appointment_booked_at=booked,
                 appointment_canceled_at=canceled),  # a cancel time on a confirmed lead is not a cancellation
        ghl_lead("t5", "g5", appointment_status="canceled"),
    ])
    migrate_workspace(db, "ws_a", apply=True, now=NOW)
    got = {r.lead_id: r for r in rows(db, "SELECT * FROM appointments")}
    b, c = parse_timestamp(booked), parse_timestamp(canceled)
    assert (got["t1"].canceled_at, got["t1"].created_at, got["t1"].status_changed_at) == (NOW, b, b)
    assert (got["t2"].canceled_at, got["t2"].created_at, got["t2"].status_changed_at) == (c, b, c)
    assert (got["t3"].canceled_at, got["t3"].created_at, got["t3"].status_changed_at) == (None, NOW, NOW)
    assert (got["t4"].status, got["t4"].canceled_at, got["t4"].created_at) == ("CONFIRMED", None, b)
    assert (got["t5"].canceled_at, got["t5"].created_at, got["t5"].status_changed_at) == (NOW, NOW, NOW)
    # the lead rollup: appointment_booked_at = the row's created_at (§3), not the migration time when known
    assert lead(db, "t1").appointment_booked_at == b
    assert lead(db, "t1").appointment_canceled_at == NOW
    assert lead(db, "t3").appointment_booked_at == NOW
    assert_rollups_follow_spec(db, ["ws_a"])


# ------------------------------------------------------------------------------ duplicate provider ids


def _normalised(engine: sa.Engine) -> dict[str, Any]:
    """Domain outcome without ids / write clocks: rows by legacy key, lead rollups, status changes."""
    appts = sorted(
        tuple(r) for r in rows(engine, "SELECT legacy_lead_key, lead_id, provider, ghl_appointment_id, "
                                       "calendly_invitee_uri, calendly_scheduled_event_uri, start_at, end_at, status, "
                                       "canceled_at, status_changed_at, created_at, source FROM appointments"))
    cols = ", ".join(ROLLUP_COLUMNS)
    leads = [tuple(r) for r in rows(engine, f"SELECT id, status, {cols} FROM leads ORDER BY id")]
    changes = sorted(tuple(r) for r in rows(
        engine, "SELECT a.legacy_lead_key, c.from_status, c.to_status, c.source FROM appointment_status_changes c "
                "JOIN appointments a ON a.id = c.appointment_id"))
    return {"appointments": appts, "leads": leads, "changes": changes}


def test_duplicate_ghl_id_smallest_lead_id_wins_whatever_the_chunking(db: sa.Engine, tmp_path: Path) -> None:
    leads = [ghl_lead(f"lead_{i:02d}", f"g{i}", appointment_status="confirmed") for i in range(12)]
    # three claimants of "shared", listed out of id order in the file; the winner is lead_03
    leads += [ghl_lead("lead_07x", "shared", appointment_status="canceled", appointment_booked_at="2026-01-02T00:00Z"),
              ghl_lead("lead_03x", "shared", appointment_status="confirmed", appointment_booked_at="2026-01-01T00:00Z"),
              ghl_lead("lead_10x", "shared", appointment_status="showed")]
    folder = load(db, tmp_path, leads)
    cols = ", ".join(ROLLUP_COLUMNS)
    legacy_losers = {i: rows(db, f"SELECT {cols} FROM leads WHERE id = :id", id=i)[0] for i in ("lead_07x", "lead_10x")}
    outcomes = {}
    for chunk_size in (1, 3, 50_000):
        reset(db)
        import_legacy(db, folder)
        report = migrate_workspace(db, "ws_a", apply=True, chunk_size=chunk_size, now=NOW)
        assert (report.created, report.errors_by_kind) == (13, {"duplicate_provider_id": 2}), chunk_size
        samples = {s["lead_id"]: s for s in report.error_samples}
        assert set(samples) == {"lead_07x", "lead_10x"}
        assert all(s["kind"] == "duplicate_provider_id" and "lead_03x" in s["detail"] for s in samples.values())
        [owner] = rows(db, "SELECT lead_id, legacy_lead_key, status FROM appointments "
                           "WHERE ghl_appointment_id = 'shared'")
        assert tuple(owner) == ("lead_03x", "lead_03x", "CONFIRMED")
        for loser, legacy in legacy_losers.items():
            # the losers keep their legacy rollup
            assert rows(db, f"SELECT {cols} FROM leads WHERE id = :id", id=loser)[0] == legacy
        rerun = migrate_workspace(db, "ws_a", apply=True, chunk_size=chunk_size, now=NOW)
        assert (rerun.created, rerun.exists, rerun.errors_by_kind) == (0, 13, {"duplicate_provider_id": 2})
        outcomes[chunk_size] = _normalised(db)
    first = outcomes[1]
    assert all(outcome == first for outcome in outcomes.values())


def test_provider_id_owned_by_another_workspace_is_a_duplicate(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [ghl_lead("a1", "shared", ws="ws_a"), ghl_lead("b1", "shared", ws="ws_b")])
    assert migrate_workspace(db, "ws_a", apply=True).created == 1
    report = migrate_workspace(db, "ws_b", apply=True)
    assert (report.created, report.errors_by_kind) == (0, {"duplicate_provider_id": 1})
    assert "a1" in report.error_samples[0]["detail"]
    assert [tuple(r) for r in rows(db, "SELECT lead_id, workspace_id FROM appointments")] == [("a1", "ws_a")]


def test_dry_run_predicts_apply_when_duplicates_span_chunks(db: sa.Engine, tmp_path: Path) -> None:
    leads = [ghl_lead(f"lead_{i:02d}", f"g{i}", appointment_status="confirmed") for i in range(10)]
    leads[5]["ghl_appointment_id"] = "g4"  # lead_04 (end of chunk 1) and lead_05 (start of chunk 2)
    load(db, tmp_path, leads)
    dry = migrate_workspace(db, "ws_a", chunk_size=5)
    applied = migrate_workspace(db, "ws_a", apply=True, chunk_size=5)
    assert (applied.created, applied.errors_by_kind) == (9, {"duplicate_provider_id": 1})
    assert counters(dry) == counters(applied)


# ------------------------------------------------------------------------------------- side effects


def test_no_follow_up_tasks_and_no_lead_status_change(db: sa.Engine, tmp_path: Path) -> None:
    load(db, tmp_path, [
        ghl_lead("e1", "g1", status="meeting-booked", appointment_status="canceled"),
        ghl_lead("e2", "g2", status="qualified", appointment_status="confirmed",
                 appointment_start_at="2027-01-01T10:00:00Z"),
        ghl_lead("e3", "g3", status="unqualified", appointment_status="rescheduled"),
        cal_lead("e4", "ev4", "inv4", status="new", appointment_status="confirmed"),
        ghl_lead("e5", "g5", status="meeting-booked", appointment_status="no-show"),
    ])
    statuses = {r.id: r.status for r in rows(db, "SELECT id, status FROM leads")}
    for ws in ("ws_a", "ws_b"):
        migrate_workspace(db, ws, apply=True)
    assert {r.id: r.status for r in rows(db, "SELECT id, status FROM leads")} == statuses
    assert rows(db, "SELECT count(*) FROM follow_up_tasks")[0][0] == 0
    assert rows(db, "SELECT count(*) FROM appointments")[0][0] == 5
    assert rows(db, "SELECT count(*) FROM appointments WHERE rescheduled_from_id IS NOT NULL")[0][0] == 0


# ----------------------------------------------------------------------------------------- rollups


def test_rollups_equal_spec_after_migration(db: sa.Engine, tmp_path: Path) -> None:
    generate_legacy(tmp_path, n_leads=1500, n_workspaces=2, seed=13, messy=True)
    import_legacy(db, tmp_path)
    cols = ", ".join(ROLLUP_COLUMNS)
    before = {r[0]: tuple(r[1:]) for r in rows(db, f"SELECT id, {cols}, appointment_last_checked_at FROM leads")}
    for ws in ("ws_13_0", "ws_13_1"):
        migrate_workspace(db, ws, apply=True)
    assert_rollups_follow_spec(db, ["ws_13_0", "ws_13_1"], ref=datetime.now(UTC))
    # leads that got no row (no provider id, unknown status, duplicate loser) keep their legacy columns
    with_rows = {r[0] for r in rows(db, "SELECT lead_id FROM appointments")}
    after = {r[0]: tuple(r[1:]) for r in rows(db, f"SELECT id, {cols}, appointment_last_checked_at FROM leads")}
    untouched = set(before) - with_rows
    assert len(untouched) > 300
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}
    # the reconciliation watermark is not a rollup column: the migration keeps it for everyone
    assert {i: after[i][-1] for i in after} == {i: before[i][-1] for i in before}


# --------------------------------------------------------------------------------- resume / progress


class Crash(Exception):
    pass


def _crash_after(chunks: int):  # type: ignore[no-untyped-def]
    seen = []

    def on_chunk(report: MigrationReport) -> None:
        seen.append(report.last_lead_id)
        if len(seen) == chunks:
            raise Crash(report.last_lead_id)

    return on_chunk


def _thirty_leads(db: sa.Engine, tmp_path: Path) -> Path:
    leads = []
    for i in range(30):
        if i % 7 == 6:
            leads.append(lead_row(f"lead_{i:02d}"))  # no provider id: skipped
        elif i % 3 == 0:
            leads.append(cal_lead(f"lead_{i:02d}", f"ev{i}", None if i % 2 else f"inv{i}", ws="ws_a",
                                  appointment_status="canceled", appointment_booked_at="2026-01-01T00:00Z",
                                  appointment_canceled_at="2026-01-02T00:00Z"))
        else:
            leads.append(ghl_lead(f"lead_{i:02d}", f"g{i}", appointment_status="confirmed",
                                  appointment_start_at="2026-06-01T10:00:00Z",
                                  appointment_booked_at="2026-01-01T00:00Z"))
    return load(db, tmp_path, leads)


def test_resume_after_a_partial_run_continues_after_the_saved_point(db: sa.Engine, tmp_path: Path) -> None:
    folder = _thirty_leads(db, tmp_path)
    full = migrate_workspace(db, "ws_a", apply=True, chunk_size=10, now=NOW)
    expected = _normalised(db)

    reset(db)
    import_legacy(db, folder)
    with pytest.raises(Crash):
        migrate_workspace(db, "ws_a", apply=True, chunk_size=10, now=NOW, on_chunk=_crash_after(1))
    assert progress(db) == {"ws_a": "lead_09"}
    first_chunk = {r[0] for r in rows(db, "SELECT lead_id FROM appointments")}
    assert first_chunk and max(first_chunk) <= "lead_09"

    resumed = migrate_workspace(db, "ws_a", apply=True, resume=True, chunk_size=10, now=NOW)
    assert resumed.resumed_after == "lead_09"
    assert resumed.scanned == 20 and resumed.exists == 0
    assert resumed.created == full.created - len(first_chunk)
    assert progress(db) == {"ws_a": "lead_29"}
    assert _normalised(db) == expected
    # resuming a finished run scans nothing; a fresh run finds everything there
    assert migrate_workspace(db, "ws_a", apply=True, resume=True).scanned == 0
    again = migrate_workspace(db, "ws_a", apply=True, chunk_size=7)
    assert (again.scanned, again.created, again.exists) == (30, 0, full.created)
    assert _normalised(db) == expected


def test_resume_without_saved_point_starts_at_the_beginning(db: sa.Engine, tmp_path: Path) -> None:
    _thirty_leads(db, tmp_path)
    report = migrate_workspace(db, "ws_a", apply=True, resume=True, chunk_size=8)
    assert report.resumed_after is None and report.scanned == 30
    assert progress(db) == {"ws_a": "lead_29"}


def test_dry_run_never_moves_the_resume_point(db: sa.Engine, tmp_path: Path) -> None:
    folder = _thirty_leads(db, tmp_path)
    # a dry-run alone records nothing
    migrate_workspace(db, "ws_a", resume=True, chunk_size=5)
    migrate_workspace(db, "ws_a", chunk_size=5)
    assert progress(db) == {}

    with pytest.raises(Crash):
        migrate_workspace(db, "ws_a", apply=True, chunk_size=10, on_chunk=_crash_after(1))
    assert progress(db) == {"ws_a": "lead_09"}
    before = snapshot(db)
    dry = migrate_workspace(db, "ws_a", resume=True, chunk_size=5)
    assert dry.resumed_after == "lead_09" and dry.scanned == 20 and dry.created > 0
    migrate_workspace(db, "ws_a", chunk_size=3)
    assert progress(db) == {"ws_a": "lead_09"}
    assert snapshot(db) == before
    # the following --apply --resume still migrates everything the dry-run looked at
    # (the original's dry-run --resume advanced the cursor, so this apply skipped everything)
    applied = migrate_workspace(db, "ws_a", apply=True, resume=True, chunk_size=10)
    assert (applied.created, applied.scanned) == (dry.created, 20)
    reset(db)
    import_legacy(db, folder)
    full = migrate_workspace(db, "ws_a", apply=True)
    assert full.created == applied.created + len(before["appointments"])


# --------------------------------------------------------------------------------- messy end-to-end


def _expected_from_csv(path: Path) -> dict[str, dict[str, Any]]:
    """Independent oracle: per workspace counters computed from the CSV with the §2/§5 rules."""
    with path.open(newline="", encoding="utf-8") as fh:
        records = [{k: v.strip() for k, v in r.items()} for r in csv.DictReader(fh)]
    out: dict[str, dict[str, Any]] = defaultdict(lambda: Counter())
    claims: dict[str, list[str]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["id"]):
        exp = out[r["workspace_id"]]
        exp["scanned"] += 1
        if not (r["ghl_appointment_id"] or r["calendly_invitee_uri"] or r["calendly_scheduled_event_uri"]):
            exp["skipped"] += 1
            continue
        if r["appointment_status"] and r["appointment_status"].lower() not in STATUS_SYNONYMS:
            exp["unknown_status"] += 1
            continue
        key = r["ghl_appointment_id"] or r["calendly_invitee_uri"]
        if key:
            claims[key].append(r["id"])
            if len(claims[key]) > 1:
                exp["duplicate_provider_id"] += 1
                continue
        exp["created"] += 1
        if not r["appointment_start_at"] and r["booked_slot"] and parse_timestamp_or_none(r["booked_slot"]) is None:
            exp["unparseable_booked_slot"] += 1
    return out


def test_messy_export_end_to_end(db: sa.Engine, tmp_path: Path) -> None:
    generated = generate_legacy(tmp_path, n_leads=1500, n_workspaces=2, seed=13, messy=True)
    with generated.leads_path.open(newline="", encoding="utf-8") as fh:
        assert any(r["id"] != r["id"].strip() for r in csv.DictReader(fh))  # padded ids present
    import_legacy(db, tmp_path)
    assert rows(db, "SELECT count(*) FROM leads WHERE id <> btrim(id) OR workspace_id <> btrim(workspace_id)")[0][0] \
        == 0
    expected = _expected_from_csv(generated.leads_path)
    assert sum(e["unknown_status"] for e in expected.values()) >= 2
    assert sum(e["duplicate_provider_id"] for e in expected.values()) >= 2
    assert sum(e["unparseable_booked_slot"] for e in expected.values()) >= 2

    total_created = 0
    for ws, exp in sorted(expected.items()):
        dry = migrate_workspace(db, ws, chunk_size=10_000)
        report = migrate_workspace(db, ws, apply=True, chunk_size=10_000)
        assert counters(dry) == counters(report)
        assert_counters_add_up(report)
        assert report.scanned == exp["scanned"]
        assert (report.created, report.exists, report.skipped) == (exp["created"], 0, exp["skipped"])
        kinds = {k: exp[k] for k in ("unknown_status", "duplicate_provider_id") if exp[k]}
        assert report.errors_by_kind == kinds
        assert report.warnings_by_kind == (
            {"unparseable_booked_slot": exp["unparseable_booked_slot"]} if exp["unparseable_booked_slot"] else {})
        assert rows(db, "SELECT count(*) FROM appointments WHERE workspace_id = :ws", ws=ws)[0][0] == report.created
        rerun = migrate_workspace(db, ws, apply=True, chunk_size=97)
        assert_counters_add_up(rerun)
        assert (rerun.scanned, rerun.created, rerun.exists, rerun.skipped, rerun.errors_by_kind) \
            == (report.scanned, 0, report.created, report.skipped, report.errors_by_kind)
        total_created += report.created
    assert rows(db, "SELECT count(*) FROM appointments")[0][0] == total_created
    assert rows(db, "SELECT count(*) FROM follow_up_tasks")[0][0] == 0
    assert_rollups_follow_spec(db, sorted(expected), ref=datetime.now(UTC))


# ------------------------------------------------------------------------ crash safety (CLI, SIGKILL)

CRASH_WS = "ws_21_0"
CRASH_LEADS = 2000
CHUNK = 50
KILLED_CHUNK = 4


@pytest.fixture(scope="module")
def crash_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash_export")
    generate_legacy(folder, n_leads=CRASH_LEADS, n_workspaces=1, seed=21, messy=True)
    return folder


def _legacy_clock_facts(folder: Path) -> dict[str, tuple[bool, bool]]:
    """lead id → (legacy booked time known, legacy cancel time known)."""
    with (folder / "leads.csv").open(newline="", encoding="utf-8") as fh:
        return {r["id"].strip(): (bool(r["appointment_booked_at"].strip()), bool(r["appointment_canceled_at"].strip()))
                for r in csv.DictReader(fh)}


def _domain_state(engine: sa.Engine, facts: dict[str, tuple[bool, bool]]) -> dict[str, Any]:
    """Appointments, lead rollups and status changes keyed by lead, write clocks masked where they are clocks."""

    def clock(value: Any, known: bool) -> Any:
        return value if known or value is None else "<clock>"

    appts = {}
    for r in rows(engine, "SELECT * FROM appointments"):
        booked, canceled = facts[r.legacy_lead_key]
        appts[r.legacy_lead_key] = (
            r.lead_id, r.workspace_id, r.provider, r.ghl_appointment_id, r.calendly_invitee_uri,
            r.calendly_scheduled_event_uri, r.start_at, r.end_at, r.status, r.source, r.last_source,
            clock(r.canceled_at, canceled), clock(r.created_at, booked),
            clock(r.status_changed_at, booked or canceled), r.rescheduled_from_id is None,
        )
    leads = {}
    for r in rows(engine, "SELECT * FROM leads"):
        booked, canceled = facts[r.id]
        values = [getattr(r, c) for c in ROLLUP_COLUMNS]
        if r.id in appts:
            values[ROLLUP_COLUMNS.index("appointment_booked_at")] = clock(r.appointment_booked_at, booked)
            values[ROLLUP_COLUMNS.index("appointment_canceled_at")] = clock(r.appointment_canceled_at, canceled)
        leads[r.id] = (r.status, r.appointment_last_checked_at, *values)
    changes = Counter(tuple(r) for r in rows(
        engine, "SELECT a.legacy_lead_key, c.from_status, c.to_status, c.source "
                "FROM appointment_status_changes c JOIN appointments a ON a.id = c.appointment_id"))
    return {"appointments": appts, "leads": leads, "changes": changes,
            "tasks": rows(engine, "SELECT count(*) FROM follow_up_tasks")[0][0], "progress": progress(engine)}


def _blocked_by(conn: sa.Connection, blocker_pid: int) -> list[int]:
    pids = [r[0] for r in conn.execute(sa.text(
        "SELECT pid FROM pg_stat_activity WHERE :blocker = ANY(pg_blocking_pids(pid))"), {"blocker": blocker_pid})]
    conn.rollback()  # pg_stat_activity is a per-transaction snapshot
    return pids


def _backend_alive(conn: sa.Connection, pid: int) -> bool:
    alive = conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first() is not None
    conn.rollback()
    return alive


def _wait_for(predicate: Callable[[], Any], what: str, proc: subprocess.Popen[str] | None = None,
              timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"migrate exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_mid_chunk(engine: sa.Engine, env: dict[str, str], chunk_no: int) -> dict[str, Any]:
    """Run ``migrate --apply --chunk-size 50`` and SIGKILL it while chunk ``chunk_no`` has written all its rows
    but not committed (chunks before it committed). Returns what was committed at the time of the kill."""
    lead_ids = [r[0] for r in rows(engine, "SELECT id FROM leads WHERE workspace_id = :ws ORDER BY id", ws=CRASH_WS)]
    chunk_leads = lead_ids[(chunk_no - 1) * CHUNK: chunk_no * CHUNK]
    committed_upto = lead_ids[(chunk_no - 1) * CHUNK - 1]
    gate = engine.connect()  # holds chunk `chunk_no`'s leads: the migration stops before writing that chunk
    hold = engine.connect()  # then holds the progress row: the chunk writes everything and stops at the end
    try:
        gate.begin()
        gate_pid = gate.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        gate.execute(sa.text("SELECT id FROM leads WHERE id = ANY(:ids) FOR UPDATE"), {"ids": chunk_leads})
        proc = subprocess.Popen([str(CLI), "migrate", "--workspace", CRASH_WS, "--apply", "--chunk-size", str(CHUNK),
                                 "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with engine.connect() as probe:
                _wait_for(lambda: _blocked_by(probe, gate_pid), "the migration to reach the held chunk", proc)
                assert progress(engine) == {CRASH_WS: committed_upto}
                hold.begin()
                hold_pid = hold.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                hold.execute(sa.text("SELECT * FROM migration_progress WHERE workspace_id = :ws FOR UPDATE"),
                             {"ws": CRASH_WS})
                gate.rollback()  # let the chunk write its rows ...
                [victim] = _wait_for(lambda: _blocked_by(probe, hold_pid), "the chunk to finish its writes", proc)
                proc.send_signal(signal.SIGKILL)  # ... and die before its commit
                proc.wait(timeout=10)
                assert proc.returncode == -signal.SIGKILL
                committed = {
                    "appointments": rows(engine, "SELECT count(*) FROM appointments")[0][0],
                    "max_lead": rows(engine, "SELECT max(lead_id) FROM appointments")[0][0],
                    "progress": progress(engine),
                }
                hold.rollback()
                # the server notices the dead client and rolls its transaction back
                _wait_for(lambda: not _backend_alive(probe, victim), "the killed backend to go away")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
    finally:
        gate.close()
        hold.close()
    assert committed["progress"] == {CRASH_WS: committed_upto}
    assert committed["max_lead"] <= committed_upto
    return committed


@dataclass(frozen=True)
class Baseline:
    report: dict[str, Any]
    returncode: int
    state: dict[str, Any]
    facts: dict[str, tuple[bool, bool]]


@pytest.fixture(scope="module")
def crash_baseline(engine: sa.Engine, database_url: str, crash_export: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """The uninterrupted ``migrate --apply --chunk-size 50`` run of the crash export, through the CLI."""
    reset(engine)
    import_legacy(engine, crash_export)
    env = cli_env(tmp_path_factory.mktemp("baseline_home"), database_url)
    proc = run_cli(env, "migrate", "--workspace", CRASH_WS, "--apply", "--chunk-size", str(CHUNK), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report = one_json(proc)
    assert report["created"] > 1000 and report["chunks"] == CRASH_LEADS // CHUNK
    facts = _legacy_clock_facts(crash_export)
    baseline = Baseline(report, proc.returncode, _domain_state(engine, facts), facts)
    reset(engine)
    return baseline


@pytest.mark.parametrize("resume", [True, False], ids=["rerun-with-resume", "rerun-without-resume"])
def test_sigkilled_migration_rerun_equals_uninterrupted_run(db: sa.Engine, database_url: str, tmp_path: Path,
                                                            crash_export: Path, crash_baseline: Baseline,
                                                            resume: bool) -> None:
    env = cli_env(tmp_path / "home", database_url)
    baseline, expected, facts = crash_baseline.report, crash_baseline.state, crash_baseline.facts
    import_legacy(db, crash_export)
    committed = _kill_mid_chunk(db, env, chunk_no=KILLED_CHUNK)
    assert 0 < committed["appointments"] < baseline["created"]

    args = ["migrate", "--workspace", CRASH_WS, "--apply", "--chunk-size", str(CHUNK), "--json"]
    rerun_proc = run_cli(env, *args, *(["--resume"] if resume else []))
    assert rerun_proc.returncode in (0, 1), rerun_proc.stderr
    rerun = one_json(rerun_proc)
    if resume:  # only the leads after the committed chunks are scanned again
        assert rerun["resumed_after"] == committed["progress"][CRASH_WS]
        assert rerun["scanned"] == baseline["scanned"] - (KILLED_CHUNK - 1) * CHUNK
        assert rerun["created"] == baseline["created"] - committed["appointments"]
        assert rerun["exists"] == 0
    else:
        assert rerun_proc.returncode == crash_baseline.returncode
        assert rerun["errors_by_kind"] == baseline["errors_by_kind"]
        assert rerun["resumed_after"] is None
        assert (rerun["created"], rerun["exists"]) == (baseline["created"] - committed["appointments"],
                                                       committed["appointments"])
    assert _domain_state(db, facts) == expected
    with db.connect() as conn:
        assert drift_report(conn, CRASH_WS, datetime.now(UTC)).drifted == 0
    # and one more rerun changes nothing
    assert one_json(run_cli(env, *args))["created"] == 0
    assert _domain_state(db, facts) == expected


def test_migration_time_is_not_in_the_future_of_the_run(db: sa.Engine, tmp_path: Path) -> None:
    """Without ``now=`` the write clock is the wall clock of the run (rows without legacy times)."""
    load(db, tmp_path, [ghl_lead("m1", "g1", appointment_status="canceled")])
    start = datetime.now(UTC) - timedelta(seconds=1)
    migrate_workspace(db, "ws_a", apply=True)
    [row] = rows(db, "SELECT created_at, canceled_at, status_changed_at FROM appointments")
    assert all(start <= t <= datetime.now(UTC) + timedelta(seconds=1) for t in row)



def test_concurrent_applies_of_one_workspace_are_serialised(db: sa.Engine, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    leads = [ghl_lead(f"l{i:03d}", f"appt{i:03d}") for i in range(200)]
    load(db, tmp_path, leads)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(migrate_workspace, db, "ws_a", apply=True, chunk_size=20) for _ in range(2)]
        reports = [r.result() for r in runs]
    assert sum(r.created for r in reports) == len(leads)
    assert sorted((r.created, r.exists) for r in reports) == [(0, len(leads)), (len(leads), 0)]
    assert count_rows(db) == len(leads)


def count_rows(engine: sa.Engine) -> int:
    return int(rows(engine, "SELECT count(*) FROM appointments")[0][0])
