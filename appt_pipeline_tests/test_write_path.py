"""The one write path (SPEC §3, §4) on a real PostgreSQL: monotonic rules, key moves, reschedule links,
side effects, errors, idempotence; plus properties: SQL ``PRIMARY_ORDER`` ≡ Python ``select_primary``, and
"rollup = rollup(primary)" with a model of §4.1 after random observation sequences.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.primary import EMPTY_ROLLUP, LeadRollup, build_rollup, select_primary
from appt_pipeline.domain.rules import format_meeting_time
from appt_pipeline.domain.vocab import CALENDLY_TERMINAL, Provider, Source, Status
from appt_pipeline.store.rollups import ROLLUP_COLUMNS, drift_report, primary_rows_sql
from appt_pipeline.store.write_path import WriteResult, apply_observations, write_observations
from appt_pipeline_tests.helpers import REF, ApptRow, at, calendly, ghl, lead, rows, seed, snapshot
from appt_pipeline_tests.helpers.primary_vectors import PRIMARY_VECTORS

NOW = REF
C, X, R, S, N = Status.CONFIRMED, Status.CANCELED, Status.RESCHEDULED, Status.SHOWED, Status.NO_SHOW
H = timedelta(hours=1)
D = timedelta(days=1)


# --------------------------------------------------------------------------------------------- helpers


def write(engine: sa.Engine, *obs: Observation, now: datetime = NOW, dry_run: bool = False) -> list[WriteResult]:
    return write_observations(engine, list(obs), now=now, dry_run=dry_run)


def one(results: list[WriteResult]) -> WriteResult:
    assert len(results) == 1
    return results[0]


def appt(engine: sa.Engine, key: str) -> Any:
    """The appointments row of a GHL id or a Calendly invitee id (as given to ``helpers.calendly``)."""
    found = rows(engine, "SELECT * FROM appointments WHERE ghl_appointment_id = :k OR calendly_invitee_uri LIKE :u",
                 k=key, u=f"%/invitees/{key}")
    assert len(found) == 1, f"{key}: {len(found)} rows"
    return found[0]


def inv(invitee: str) -> str:
    """The invitee URI ``helpers.calendly`` builds for ``invitee`` (default event)."""
    return f"https://api.calendly.com/scheduled_events/ev-{invitee}/invitees/{invitee}"


def rollup_of(row: Any) -> LeadRollup:
    return LeadRollup(*(getattr(row, c) for c in ROLLUP_COLUMNS))


def expected_rollup(engine: sa.Engine, lead_id: str, ref: datetime) -> LeadRollup:
    appts = [ApptRow.of(r) for r in rows(engine, "SELECT * FROM appointments WHERE lead_id = :l", l=lead_id)]
    return build_rollup(select_primary(appts, ref))


def drifted(engine: sa.Engine, ref: datetime = NOW, ws: str = "ws1") -> int:
    with engine.connect() as conn:
        return drift_report(conn, ws, ref).drifted


def tasks(engine: sa.Engine, lead_id: str | None = None) -> list[Any]:
    sql = "SELECT * FROM follow_up_tasks" + (" WHERE lead_id = :l" if lead_id else "") + " ORDER BY created_at, type"
    return rows(engine, sql, l=lead_id)


def changes(engine: sa.Engine, appointment_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows(
        engine, "SELECT from_status, to_status, source FROM appointment_status_changes WHERE appointment_id = :a "
        "ORDER BY id", a=appointment_id)]


def insert_row(conn: sa.Connection, **kw: Any) -> None:
    """Insert one ``appointments`` row directly (bypassing the write path)."""
    values = {
        "id": uuid.uuid4(), "workspace_id": "ws1", "provider": "GHL", "ghl_appointment_id": None,
        "calendly_invitee_uri": None, "calendly_scheduled_event_uri": None, "start_at": None, "canceled_at": None,
        "status": "CONFIRMED", "source": "RECONCILE_CRON", "legacy_lead_key": None, "created_at": NOW,
    } | kw
    conn.execute(sa.text("""
        INSERT INTO appointments (id, workspace_id, lead_id, provider, ghl_appointment_id, calendly_invitee_uri,
            calendly_scheduled_event_uri, start_at, canceled_at, status, status_changed_at, source, last_source,
            last_observed_at, legacy_lead_key, created_at)
        VALUES (:id, :workspace_id, :lead_id, :provider, :ghl_appointment_id, :calendly_invitee_uri,
            :calendly_scheduled_event_uri, :start_at, :canceled_at, :status, :created_at, :source, :source,
            :created_at, :legacy_lead_key, :created_at)
    """), values)


# ------------------------------------------------------------------------------- §3 SQL twin = Python rule


@pytest.mark.parametrize(("rows_", "expected"), [(r, e) for _, r, e in PRIMARY_VECTORS],
                         ids=[n for n, _, _ in PRIMARY_VECTORS])
def test_sql_primary_vectors(db: sa.Engine, rows_: list[Any], expected: str) -> None:
    (lead_id,) = seed(db, leads=1)
    with db.begin() as conn:
        for r in rows_:
            insert_row(conn, id=r.id, lead_id=lead_id, ghl_appointment_id=str(r.id), status=r.status.value,
                       created_at=r.created_at, start_at=r.start_at, canceled_at=r.canceled_at)
        got = conn.execute(sa.text(primary_rows_sql("SELECT :l")), {"l": lead_id, "ref": REF}).one()
    assert got.id == uuid.uuid5(uuid.NAMESPACE_URL, expected)


INSTANTS = [REF + timedelta(hours=h) for h in (-72, -24, -1, 0, 1, 24, 72)] + [REF + timedelta(microseconds=1)]
_instants = st.sampled_from(INSTANTS)


@st.composite
def _db_row(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(st.sampled_from(list(Status)))
    return {
        "id": draw(st.uuids()),
        "lead": draw(st.integers(0, 2)),
        "status": status,
        "created_at": draw(_instants),
        "start_at": draw(st.none() | _instants),
        "canceled_at": draw(st.none() | _instants) if status is X else None,
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(_db_row(), min_size=1, max_size=12, unique_by=lambda r: r["id"]), ref=_instants)
def test_sql_primary_order_matches_python(db: sa.Engine, specs: list[dict[str, Any]], ref: datetime) -> None:
    with db.connect() as conn, conn.begin() as tx:
        conn.execute(sa.text("INSERT INTO workspaces (id) VALUES ('wsp') ON CONFLICT DO NOTHING"))
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id) SELECT 'p' || g, 'wsp' FROM generate_series(0, 2) g "
                             "ON CONFLICT DO NOTHING"))
        for s in specs:
            insert_row(conn, id=s["id"], workspace_id="wsp", lead_id=f"p{s['lead']}", ghl_appointment_id=str(s["id"]),
                       status=s["status"].value, created_at=s["created_at"], start_at=s["start_at"],
                       canceled_at=s["canceled_at"])
        sql_primary = {r.lead_id: r.id for r in conn.execute(
            sa.text(primary_rows_sql("SELECT id FROM leads WHERE workspace_id = 'wsp'")), {"ref": ref})}
        stored = [ApptRow.of(r) for r in conn.execute(sa.text("SELECT * FROM appointments WHERE workspace_id = 'wsp'"))]
        tx.rollback()
    by_lead: dict[str, list[ApptRow]] = {}
    for r in stored:
        by_lead.setdefault(r.lead_id, []).append(r)
    py_primary = {lead_id: select_primary(group, ref) for lead_id, group in by_lead.items()}
    assert sql_primary == {lead_id: p.id for lead_id, p in py_primary.items() if p is not None}
    assert set(py_primary) == set(sql_primary)


# ------------------------------------------------------------------------------------------- idempotence


def test_same_batch_twice_is_idempotent(db: sa.Engine) -> None:
    l0, l1, l2 = seed(db)
    t1, t2 = NOW - 3 * H, NOW - 2 * H
    batch = [
        ghl(l0, "g1", start_at=NOW + D, end_at=NOW + D + H / 2, ghl_calendar_id="cal-1", provider_updated_at=t1),
        ghl(l0, "g2", X, start_at=NOW + 2 * D, provider_updated_at=t1),
        calendly(l1, "c1", start_at=NOW + D, calendly_event_type_uri="https://api.calendly.com/event_types/E"),
        calendly(l1, "c2", R, start_at=NOW - D, rescheduled_to_invitee_uri=inv("c1")),
        ghl(l2, "g3", C, start_at=NOW + D, provider_updated_at=t1),
        ghl(l2, "g3", X, start_at=NOW + D, provider_updated_at=t2),  # same key twice: applied in order
        calendly(l2, "c3", X, start_at=NOW - D, canceled_at=NOW - 5 * H),
    ]
    first = write(db, *batch)
    assert all(r.error_kind is None for r in first)
    assert [r.is_new for r in first] == [True, True, True, True, True, False, True]
    before = snapshot(db)
    second = write(db, *batch, now=NOW + timedelta(minutes=1))
    assert snapshot(db) == before
    assert not any(r.is_new or r.status_changed or r.primary_changed for r in second)
    # the replayed first g3 observation is older than the stored one: it changes nothing
    assert [r.status for r in second] == [C, X, C, R, X, X, X]
    assert [r.appointment_id for r in second] == [r.appointment_id for r in first]
    assert drifted(db) == 0


# ----------------------------------------------------------------------------------- §4.1 monotonic rules


def test_calendly_canceled_is_terminal(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, calendly(l0, "c1", start_at=NOW + D))
    write(db, calendly(l0, "c1", X), now=NOW + H)
    canceled = appt(db, "c1")
    assert canceled.status == "CANCELED" and canceled.canceled_at == NOW + H
    # a late / replayed invitee.created must not resurrect it, nor move its times
    late = one(write(db, calendly(l0, "c1", C, start_at=NOW + 3 * D), now=NOW + 2 * H))
    assert (late.status, late.status_changed, late.previous_status, late.is_new) == (X, False, X, False)
    row = appt(db, "c1")
    assert (row.status, row.start_at, row.canceled_at, row.status_changed_at) == ("CANCELED", NOW + D, NOW + H, NOW + H)
    assert row.last_observed_at == NOW + 2 * H
    # CANCELED → RESCHEDULED is a refinement, allowed; canceled_at kept
    refined = one(write(db, calendly(l0, "c1", R), now=NOW + 3 * H))
    assert (refined.status, refined.status_changed, refined.previous_status) == (R, True, X)
    row = appt(db, "c1")
    assert (row.status, row.canceled_at, row.status_changed_at) == ("RESCHEDULED", NOW + H, NOW + 3 * H)
    # RESCHEDULED stays RESCHEDULED
    for status in (C, X):
        assert one(write(db, calendly(l0, "c1", status), now=NOW + 4 * H)).status is R
    assert changes(db, row.id) == [(None, "CONFIRMED", "WEBHOOK"), ("CONFIRMED", "CANCELED", "WEBHOOK"),
                                   ("CANCELED", "RESCHEDULED", "WEBHOOK")]
    assert lead(db, l0).appointment_status == "rescheduled"
    assert drifted(db, NOW + 4 * H) == 0


def test_ghl_cancellation_is_not_terminal(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, ghl(l0, "g1", X, start_at=NOW + D))
    back = one(write(db, ghl(l0, "g1", C), now=NOW + H))
    assert (back.status, back.previous_status, back.status_changed) == (C, X, True)
    assert appt(db, "g1").canceled_at is None
    assert lead(db, l0).appointment_status == "confirmed"


def test_out_of_order_observation_does_not_overwrite_newer_data(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    t1, t2, t3 = NOW - 3 * H, NOW - 2 * H, NOW - H
    write(db, ghl(l0, "g1", X, Source.WEBHOOK, start_at=NOW + 2 * D, provider_updated_at=t2, cancel_reason="busy"))
    stale = one(write(db, ghl(l1, "g1", C, Source.RECONCILE_CRON, start_at=NOW + D, provider_updated_at=t1,
                              ghl_calendar_id="cal-1", cancel_reason="other"), now=NOW + H))
    assert (stale.status, stale.status_changed, stale.previous_status) == (X, False, X)
    row = appt(db, "g1")
    assert (row.status, row.start_at, row.lead_id, row.provider_updated_at) == ("CANCELED", NOW + 2 * D, l0, t2)
    assert (row.canceled_at, row.cancel_reason) == (NOW, "busy")
    assert row.ghl_calendar_id == "cal-1"  # unknown before: filled, never overwritten
    assert (row.source, row.last_source, row.last_observed_at) == ("WEBHOOK", "RECONCILE_CRON", NOW + H)
    assert changes(db, row.id) == [(None, "CANCELED", "WEBHOOK")]
    assert lead(db, l1).appointment_status is None
    # a newer observation applies
    fresh = one(write(db, ghl(l0, "g1", C, start_at=NOW + 3 * D, provider_updated_at=t3), now=NOW + 2 * H))
    assert (fresh.status, fresh.status_changed) == (C, True)
    row = appt(db, "g1")
    assert (row.status, row.start_at, row.canceled_at, row.provider_updated_at) == ("CONFIRMED", NOW + 3 * D, None, t3)
    # an observation without provider time is not "older"
    write(db, ghl(l0, "g1", C, start_at=NOW + 4 * D), now=NOW + 3 * H)
    assert appt(db, "g1").start_at == NOW + 4 * D and appt(db, "g1").provider_updated_at == t3
    assert drifted(db, NOW + 3 * H) == 0


def test_canceled_at_never_restamped(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    write(db, ghl(l0, "g1", start_at=NOW + D))
    write(db, ghl(l0, "g1", X), now=NOW + H)  # first seen
    write(db, ghl(l0, "g1", X), now=NOW + 2 * H)
    write(db, ghl(l0, "g1", X, canceled_at=NOW - D), now=NOW + 3 * H)
    assert appt(db, "g1").canceled_at == NOW + H
    provider_time = NOW - 5 * H
    write(db, calendly(l1, "c1", X, canceled_at=provider_time))  # the provider's time when known
    write(db, calendly(l1, "c1", X, canceled_at=NOW - H), now=NOW + H)
    write(db, calendly(l1, "c1", X), now=NOW + 2 * H)
    assert appt(db, "c1").canceled_at == provider_time
    assert lead(db, l0).appointment_canceled_at == NOW + H
    assert lead(db, l1).appointment_canceled_at == provider_time


def test_status_changed_at_changes_only_with_status(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, ghl(l0, "g1", start_at=NOW + D))
    assert appt(db, "g1").status_changed_at == NOW
    moved = one(write(db, ghl(l0, "g1", start_at=NOW + 2 * D), now=NOW + H))
    assert (moved.status_changed, moved.is_new) == (False, False)
    assert (appt(db, "g1").status_changed_at, appt(db, "g1").start_at) == (NOW, NOW + 2 * D)
    write(db, ghl(l0, "g1", S), now=NOW + 2 * H)
    assert appt(db, "g1").status_changed_at == NOW + 2 * H
    write(db, ghl(l0, "g1", N, status_changed_at=NOW + 150 * timedelta(minutes=1)), now=NOW + 3 * H)
    assert appt(db, "g1").status_changed_at == NOW + 150 * timedelta(minutes=1)
    write(db, ghl(l0, "g1", N, status_changed_at=NOW + 4 * H), now=NOW + 4 * H)
    assert appt(db, "g1").status_changed_at == NOW + 150 * timedelta(minutes=1)


def test_source_is_never_overwritten(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, ghl(l0, "g1", source=Source.AUTO_BOOK, start_at=NOW + D))
    for i, source in enumerate((Source.RECONCILE_CRON, Source.WEBHOOK, Source.MIGRATION), start=1):
        write(db, ghl(l0, "g1", source=source), now=NOW + i * H)
        row = appt(db, "g1")
        assert (row.source, row.last_source, row.last_observed_at) == ("AUTO_BOOK", source.value, NOW + i * H)
    assert lead(db, l0).appointment_source == "auto_book"


# ------------------------------------------------------------------------------------------ §4.2 key moves


def test_provider_key_moving_to_another_lead(db: sa.Engine) -> None:
    l0, l1, l2 = seed(db)
    write(db, ghl(l0, "g1", start_at=NOW + D), ghl(l1, "g2", start_at=NOW + 2 * D),
          ghl(l1, "g3", X, start_at=NOW + 3 * D))
    assert lead(db, l0).ghl_appointment_id == "g1"
    # l0 loses its last row: the all-null rollup
    moved = one(write(db, ghl(l2, "g1", start_at=NOW + D), now=NOW + H))
    assert (moved.is_new, moved.primary_changed) == (False, True)
    assert appt(db, "g1").lead_id == l2
    assert rollup_of(lead(db, l0)) == EMPTY_ROLLUP
    assert lead(db, l2).ghl_appointment_id == "g1"
    # l1 loses its primary: the rollup follows the remaining row
    write(db, calendly(l2, "c1", start_at=NOW + 5 * D), ghl(l2, "g2", start_at=NOW + 2 * D), now=NOW + 2 * H)
    assert lead(db, l1).ghl_appointment_id == "g3" and lead(db, l1).appointment_status == "canceled"
    assert lead(db, l2).ghl_appointment_id == "g1"
    # a Calendly key moves too, and the rows keep one key each
    write(db, calendly(l0, "c1", start_at=NOW + 5 * D), now=NOW + 3 * H)
    assert lead(db, l0).calendly_invitee_uri == inv("c1")
    assert rows(db, "SELECT count(*) AS n FROM appointments")[0].n == 4
    for lead_id in (l0, l1, l2):
        assert rollup_of(lead(db, lead_id)) == expected_rollup(db, lead_id, NOW + 3 * H)
    assert drifted(db, NOW + 3 * H) == 0


# ---------------------------------------------------------------------------------- validation and errors


def test_empty_strings_become_null(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    res = write(
        db,
        ghl(l0, "g1", ghl_calendar_id="", start_at=NOW + D, calendly_invitee_uri="", calendly_scheduled_event_uri=""),
        calendly(l1, "c1", calendly_event_type_uri="", ghl_appointment_id="", cancel_reason="", timezone=""),
    )
    assert [r.error_kind for r in res] == [None, None]
    assert appt(db, "g1").ghl_calendar_id is None and appt(db, "g1").calendly_invitee_uri is None
    assert appt(db, "c1").calendly_event_type_uri is None and appt(db, "c1").timezone is None
    write(db, ghl(l0, "g1", ghl_calendar_id="cal-1"), calendly(l1, "c1", calendly_event_type_uri="et-1"))
    write(db, ghl(l0, "g1", ghl_calendar_id=""), calendly(l1, "c1", calendly_event_type_uri=""))
    assert appt(db, "g1").ghl_calendar_id == "cal-1" and appt(db, "c1").calendly_event_type_uri == "et-1"


def test_invalid_observations_and_unknown_leads_do_not_stop_the_batch(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    (other,) = seed(db, "ws2", leads=1)
    batch = [
        ghl(l0, "g1", start_at=NOW + D),
        Observation("ws1", l0, Provider.GHL, C, Source.WEBHOOK),
        ghl(l0, "g2", calendly_invitee_uri=inv("x")),
        replace(calendly(l0, "c1"), ghl_appointment_id="g9"),
        replace(calendly(l0, "c2"), calendly_invitee_uri=None),
        ghl(l0, "g3", start_at=datetime(2026, 3, 9, 10, 0)),
        ghl("no-such-lead", "g4"),
        ghl(other, "g5"),  # workspace ws1, but the lead is ws2's
        ghl(l1, "g6", X, start_at=NOW + D),
    ]
    res = write(db, *batch)
    assert [r.error_kind for r in res] == [
        None, "missing_provider_key", "mixed_provider_ids", "mixed_provider_ids", "missing_provider_key",
        "naive_datetime", "unknown_lead", "lead_in_other_workspace", None,
    ]
    for r in res:
        if r.error_kind:
            assert (r.appointment_id, r.is_new, r.status_changed, r.status, r.primary_changed) == (
                None, False, False, None, False)
    assert sorted(r.ghl_appointment_id for r in rows(db, "SELECT * FROM appointments")) == ["g1", "g6"]
    assert lead(db, l0).ghl_appointment_id == "g1" and lead(db, l1).ghl_appointment_id == "g6"
    assert lead(db, other).ghl_appointment_id is None


def test_key_owned_by_another_workspace_is_refused(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    (other,) = seed(db, "ws2", leads=1)
    write(db, ghl(l0, "g1", start_at=NOW + D), calendly(l0, "c1", start_at=NOW + 2 * D))
    before = snapshot(db)
    res = write(db, ghl(other, "g1", X, ws="ws2"), calendly(other, "c1", X, ws="ws2"),
                ghl(other, "g2", ws="ws2", start_at=NOW + D), now=NOW + H)
    assert [r.error_kind for r in res] == ["provider_key_in_other_workspace"] * 2 + [None]
    assert res[0].appointment_id is None and res[1].appointment_id is None
    assert (appt(db, "g1").lead_id, appt(db, "g1").status, appt(db, "g1").workspace_id) == (l0, "CONFIRMED", "ws1")
    assert appt(db, "c1").status == "CONFIRMED"
    assert [a for a in snapshot(db)["appointments"] if a[1] == "ws1"] == before["appointments"]
    assert lead(db, other).ghl_appointment_id == "g2"
    assert lead(db, l0).ghl_appointment_id == "g1"


# ------------------------------------------------------------------------------------- §4.3 reschedules


def test_calendly_exact_links_old_first(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, calendly(l0, "old", start_at=NOW + D))
    # invitee.canceled of the old invitee (rescheduled, new_invitee given) arrives before the new one
    write(db, calendly(l0, "old", R, rescheduled_to_invitee_uri=inv("new")), now=NOW + H)
    assert appt(db, "old").rescheduled_from_id is None
    write(db, calendly(l0, "new", start_at=NOW + 2 * D, rescheduled_from_invitee_uri=inv("old")), now=NOW + H)
    assert appt(db, "new").rescheduled_from_id == appt(db, "old").id
    assert appt(db, "old").rescheduled_from_id is None
    assert lead(db, l0).calendly_invitee_uri == inv("new")


def test_calendly_exact_links_new_first(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    # the new invitee arrives first; the old one is not known yet
    write(db, calendly(l0, "new", start_at=NOW + 2 * D, rescheduled_from_invitee_uri=inv("old")))
    assert appt(db, "new").rescheduled_from_id is None
    write(db, calendly(l0, "old", R, start_at=NOW + D, rescheduled_to_invitee_uri=inv("new")), now=NOW + H)
    assert appt(db, "new").rescheduled_from_id == appt(db, "old").id
    # both in one batch, new listed first
    write(db, calendly(l1, "n2", start_at=NOW + 2 * D, rescheduled_from_invitee_uri=inv("o2")),
          calendly(l1, "o2", R, start_at=NOW + D, rescheduled_to_invitee_uri=inv("n2")))
    assert appt(db, "n2").rescheduled_from_id == appt(db, "o2").id
    assert appt(db, "o2").rescheduled_from_id is None


def test_reschedule_hints_never_link_across_workspaces(db: sa.Engine) -> None:
    (mine,) = seed(db, "ws1", leads=1)
    (theirs,) = seed(db, "ws2", leads=1)
    write(db, calendly(theirs, "their_old", ws="ws2", start_at=NOW + D))
    # a hint in ws1 naming ws2's invitee (in either direction) links nothing
    write(db, calendly(mine, "my_new", start_at=NOW + 2 * D, rescheduled_from_invitee_uri=inv("their_old")))
    write(db, calendly(mine, "my_old", R, start_at=NOW + D, rescheduled_to_invitee_uri=inv("their_old")))
    assert appt(db, "my_new").rescheduled_from_id is None
    assert appt(db, "their_old").rescheduled_from_id is None


def test_calendly_without_link_is_not_linked_heuristically(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, calendly(l0, "a", start_at=NOW + D), now=NOW - D)
    write(db, calendly(l0, "a", X), now=NOW)
    write(db, calendly(l0, "b", start_at=NOW + 2 * D), now=NOW + H)
    assert appt(db, "b").rescheduled_from_id is None


def test_contradictory_reschedule_hints_never_form_a_cycle(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    # across batches: the guard refuses the closing link and keeps the first one
    write(db, calendly(l0, "a", rescheduled_from_invitee_uri=inv("b")), calendly(l0, "b", R))
    assert appt(db, "a").rescheduled_from_id == appt(db, "b").id
    write(db, calendly(l0, "b", R, rescheduled_from_invitee_uri=inv("a")),
          calendly(l0, "a", rescheduled_to_invitee_uri=inv("b")), now=NOW + H)
    assert appt(db, "b").rescheduled_from_id is None and appt(db, "a").rescheduled_from_id == appt(db, "b").id
    # within one statement: a 3-cycle of hints is cut at one link
    write(db, calendly(l0, "x", rescheduled_from_invitee_uri=inv("y")),
          calendly(l0, "y", rescheduled_from_invitee_uri=inv("z")),
          calendly(l0, "z", rescheduled_from_invitee_uri=inv("x")), now=NOW + 2 * H)
    write(db, calendly(l0, "x", rescheduled_from_invitee_uri=inv("y")),
          calendly(l0, "y", rescheduled_from_invitee_uri=inv("z")),
          calendly(l0, "z", rescheduled_from_invitee_uri=inv("x")), now=NOW + 3 * H)
    links = [appt(db, k).rescheduled_from_id for k in "xyz"]
    assert links.count(None) == 1


def test_ghl_heuristic_cancel_first(db: sa.Engine) -> None:
    l0, l1, l2, l3 = seed(db, leads=4)
    t = NOW
    for lead_id, key in ((l0, "a1"), (l1, "b1"), (l2, "c1")):
        write(db, ghl(lead_id, key, start_at=t + D), now=t - D)
        write(db, ghl(lead_id, key, X), now=t)
    write(db, ghl(l0, "a2", start_at=t + 2 * D), now=t + 5 * H + 59 * timedelta(minutes=1))
    write(db, ghl(l1, "b2", start_at=t + 2 * D), now=t + 6 * H + timedelta(minutes=1))
    write(db, ghl(l0, "x9", start_at=t + 3 * D), now=t + 2 * H)  # a second booking: the cancellation is taken
    assert appt(db, "a2").rescheduled_from_id == appt(db, "a1").id
    assert appt(db, "b2").rescheduled_from_id is None
    assert appt(db, "x9").rescheduled_from_id is None
    # another lead's booking within the window is not linked; the lead's own is, whenever it arrives
    write(db, ghl(l3, "d1", start_at=t + 2 * D), now=t + H)
    assert appt(db, "d1").rescheduled_from_id is None
    write(db, ghl(l1, "b3", start_at=t + 2 * D, booked_at=t + H), now=t + 8 * H)
    assert appt(db, "b3").rescheduled_from_id == appt(db, "b1").id
    assert appt(db, "c1").rescheduled_from_id is None


def test_ghl_heuristic_new_first(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    t = NOW
    write(db, ghl(l0, "a1", start_at=t + D), ghl(l1, "b1", start_at=t + D), now=t - D)
    write(db, ghl(l0, "a2", start_at=t + 2 * D), now=t - H)
    write(db, ghl(l1, "b2", start_at=t + 2 * D), now=t - 6 * H - timedelta(minutes=1))
    write(db, ghl(l0, "a1", X), ghl(l1, "b1", X), now=t)
    assert appt(db, "a2").rescheduled_from_id == appt(db, "a1").id
    assert appt(db, "b2").rescheduled_from_id is None
    assert appt(db, "a1").rescheduled_from_id is None


# ------------------------------------------------------------------------------ §4.4 tasks and §3 status


def test_meeting_canceled_task_only_when_confirmed_primary_is_canceled(db: sa.Engine) -> None:
    l0, l1, l2 = seed(db, timezone="Europe/Berlin")
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET timezone = 'America/New_York' WHERE id = :l"), {"l": l0})
    start = at("2026-03-02T21:00")
    write(db, ghl(l0, "g1", start_at=start), ghl(l0, "g2", start_at=start + D), ghl(l1, "g3", start_at=start))
    # not the primary: no task
    write(db, ghl(l0, "g2", X), now=NOW + H)
    assert tasks(db) == []
    # a row created canceled was never a confirmed primary: no task
    write(db, ghl(l2, "g4", X, start_at=start), now=NOW + H)
    assert tasks(db) == []
    res = one(write(db, ghl(l0, "g1", X), now=NOW + 2 * H))
    assert (res.status_changed, res.primary_changed) == (True, True)
    (task,) = tasks(db)
    assert (task.lead_id, task.type, task.status, task.is_urgent, task.due_date) == (
        l0, "meeting-canceled", "pending", True, NOW + 2 * H)
    assert task.appointment_id == appt(db, "g1").id
    assert task.suggested_message == (
        "Meeting originally scheduled for Mon, Mar 2, 4:00 PM EST was canceled. Follow up to reschedule.")
    # workspace timezone when the lead has none
    write(db, ghl(l1, "g3", X), now=NOW + 2 * H)
    assert tasks(db, l1)[0].suggested_message == (
        "Meeting originally scheduled for Mon, Mar 2, 10:00 PM CET was canceled. Follow up to reschedule.")


def test_task_message_in_utc_without_timezones(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, ghl(l0, "g1", start_at=at("2026-03-02T21:00")))
    write(db, ghl(l0, "g1", X), now=NOW + H)
    assert tasks(db, l0)[0].suggested_message == (
        "Meeting originally scheduled for Mon, Mar 2, 9:00 PM UTC was canceled. Follow up to reschedule.")


def test_one_pending_task_per_lead_and_type_and_cancellation_by_new_booking(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, ghl(l0, "g1", start_at=NOW + D), ghl(l0, "g2", start_at=NOW + 2 * D))
    write(db, ghl(l0, "g1", X), now=NOW + H)
    write(db, ghl(l0, "g2", X), now=NOW + 2 * H)  # g2 became primary, then canceled: still one pending task
    (task,) = tasks(db, l0)
    assert (task.status, task.appointment_id) == ("pending", appt(db, "g1").id)
    # re-observing does not end it; a new CONFIRMED booking cancels it (booked again before it was done)
    write(db, ghl(l0, "g2", X), ghl(l0, "g1", X), now=NOW + 3 * H)
    assert tasks(db, l0)[0].status == "pending"
    write(db, ghl(l0, "g5", start_at=NOW + 5 * D), now=NOW + 4 * H)
    (task,) = tasks(db, l0)
    assert (task.status, task.completed_at, task.updated_at) == ("cancelled", None, NOW + 4 * H)
    # the next cancellation creates a new task
    write(db, ghl(l0, "g5", X), now=NOW + 5 * H)
    assert [(t.status, t.appointment_id) for t in tasks(db, l0)] == [
        ("cancelled", appt(db, "g1").id), ("pending", appt(db, "g5").id)]


def test_the_new_invitee_of_a_reschedule_keeps_its_task_pending_and_a_later_booking_cancels_it(
        db: sa.Engine) -> None:
    """The new invitee of a Calendly reschedule is the reschedule itself: the meeting-rescheduled task about the
    old invitee stays pending; a booking made after it is "booked again" and cancels it (SPEC §10 tasks)."""
    (l0,) = seed(db, leads=1)
    write(db, calendly(l0, "old", start_at=NOW + D))
    write(db, calendly(l0, "old", R, start_at=NOW + D, rescheduled_to_invitee_uri=inv("new")),
          calendly(l0, "new", start_at=NOW + 2 * D, rescheduled_from_invitee_uri=inv("old")), now=NOW + H)
    assert [(t.type, t.status, t.appointment_id) for t in tasks(db, l0)] == [
        ("meeting-rescheduled", "pending", appt(db, "old").id)]
    write(db, calendly(l0, "other", start_at=NOW + 3 * D), now=NOW + 2 * H)
    assert [(t.type, t.status) for t in tasks(db, l0)] == [("meeting-rescheduled", "cancelled")]


def test_cancel_and_rebook_in_one_batch_as_if_applied_one_by_one(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    write(db, ghl(l0, "a1", start_at=NOW + D), ghl(l1, "b1", start_at=NOW + D))
    # one reconciliation batch sees the old booking canceled and a new one booked (a GHL reschedule):
    # the cancellation's task is cancelled by the booking that follows it, as with two separate writes
    write(db, ghl(l0, "a1", X), ghl(l0, "a2", start_at=NOW + 2 * D), now=NOW + H)
    assert [(t.type, t.status, t.appointment_id) for t in tasks(db, l0)] == [
        ("meeting-canceled", "cancelled", appt(db, "a1").id)]
    assert appt(db, "a2").rescheduled_from_id == appt(db, "a1").id
    assert lead(db, l0).status == "meeting-booked"
    # booking listed before the cancellation: the cancellation comes last and its task stays pending
    write(db, ghl(l1, "b2", start_at=NOW + 2 * D), ghl(l1, "b1", X), now=NOW + H)
    assert [(t.type, t.status) for t in tasks(db, l1)] == [("meeting-canceled", "pending")]


def test_rescheduled_task_and_no_spurious_canceled_task(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    write(db, calendly(l0, "old", start_at=NOW + D), ghl(l1, "g1", start_at=NOW + D))
    # Calendly reschedule: the old invitee becomes RESCHEDULED, the new one is booked
    write(db, calendly(l0, "old", R, rescheduled_to_invitee_uri=inv("new")),
          calendly(l0, "new", start_at=NOW + 2 * D, rescheduled_from_invitee_uri=inv("old")), now=NOW + H)
    (task,) = tasks(db, l0)
    assert (task.type, task.status, task.is_urgent, task.appointment_id) == (
        "meeting-rescheduled", "pending", True, appt(db, "old").id)
    assert "was rescheduled" in task.suggested_message
    # a GHL status RESCHEDULED also gives the rescheduled task, not a canceled one
    write(db, ghl(l1, "g1", R), now=NOW + H)
    assert [t.type for t in tasks(db, l1)] == ["meeting-rescheduled"]
    assert lead(db, l1).status == "qualified"


def test_no_tasks_or_lead_status_from_migration_or_backfill(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    write(db, ghl(l0, "g1", source=Source.MIGRATION, start_at=NOW + D),
          calendly(l1, "c1", source=Source.BACKFILL, start_at=NOW + D))
    assert lead(db, l0).status == "qualified" and lead(db, l0).appointment_source == "migration"
    write(db, ghl(l0, "g1", X, source=Source.BACKFILL), calendly(l1, "c1", R, source=Source.MIGRATION), now=NOW + H)
    assert tasks(db) == []
    assert lead(db, l0).status == "qualified" and lead(db, l1).status == "qualified"
    assert lead(db, l0).appointment_status == "canceled"  # the rollup itself always follows
    # a migration booking does not complete a pending task either
    write(db, ghl(l0, "g1", C, source=Source.WEBHOOK), now=NOW + 2 * H)
    write(db, ghl(l0, "g1", X, source=Source.WEBHOOK), now=NOW + 3 * H)
    assert [t.status for t in tasks(db, l0)] == ["pending"]
    write(db, ghl(l0, "g2", source=Source.MIGRATION, start_at=NOW + 2 * D), now=NOW + 4 * H)
    assert [t.status for t in tasks(db, l0)] == ["pending"]


def test_dry_run_writes_nothing(db: sa.Engine) -> None:
    l0, _ = seed(db, leads=2)
    write(db, ghl(l0, "g1", start_at=NOW + D))
    before = snapshot(db)
    res = write(db, ghl(l0, "g1", X), ghl(l0, "g2", start_at=NOW + 2 * D), calendly(l0, "c1"), now=NOW + H,
                dry_run=True)
    assert [(r.is_new, r.status_changed, r.status) for r in res] == [(False, True, X), (True, False, C),
                                                                      (True, False, C)]
    assert res[0].primary_changed
    assert snapshot(db) == before
    assert appt(db, "g1").last_observed_at == NOW and tasks(db) == []


def test_lead_status_side_effects(db: sa.Engine) -> None:
    leads = seed(db, leads=7)
    q, unq, bl, new, two, cal, shw = leads
    with db.begin() as conn:
        for lead_id, status in ((unq, "unqualified"), (bl, "blacklisted"), (new, "new")):
            conn.execute(sa.text("UPDATE leads SET status = :s WHERE id = :l"), {"s": status, "l": lead_id})
    write(db, *(ghl(lead_id, f"g-{lead_id}", start_at=NOW + D) for lead_id in leads[:5]),
          ghl(two, "g-two-b", start_at=NOW + 2 * D), calendly(cal, "c1", start_at=NOW + D), ghl(shw, "g-shw"))
    assert [lead(db, lead_id).status for lead_id in leads] == [
        "meeting-booked", "unqualified", "blacklisted", "meeting-booked", "meeting-booked", "meeting-booked",
        "meeting-booked"]
    write(db, *(ghl(lead_id, f"g-{lead_id}", X) for lead_id in leads[:5]), calendly(cal, "c1", R), now=NOW + H)
    # back to qualified when no CONFIRMED is left; protected statuses untouched; two still has a booking
    assert [lead(db, lead_id).status for lead_id in leads] == [
        "qualified", "unqualified", "blacklisted", "qualified", "meeting-booked", "qualified", "meeting-booked"]
    # a canceled row never moves a qualified lead, a new confirmed booking does
    write(db, ghl(q, "g-q2", X, start_at=NOW + D), now=NOW + 2 * H)
    assert lead(db, q).status == "qualified"
    write(db, ghl(q, "g-q3", start_at=NOW + 3 * D), now=NOW + 3 * H)
    assert lead(db, q).status == "meeting-booked"
    # SHOWED as the new primary changes nothing
    write(db, ghl(shw, "g-shw", S), now=NOW + 4 * H)
    assert (lead(db, shw).status, lead(db, shw).appointment_status) == ("meeting-booked", "showed")
    # but a SHOWED row loses to an older CANCELED one (§3 rule 4 before 5): the primary becomes CANCELED
    write(db, ghl(q, "g-q3", S), now=NOW + 4 * H)
    assert (lead(db, q).status, lead(db, q).appointment_status) == ("qualified", "canceled")


def test_lead_status_of_the_lead_a_key_moved_away_from(db: sa.Engine) -> None:
    l0, l1, l2 = seed(db)
    write(db, ghl(l0, "g0", X, start_at=NOW + D), ghl(l0, "g1", start_at=NOW + 2 * D),
          ghl(l2, "g2", start_at=NOW + 2 * D), ghl(l2, "g3", X, start_at=NOW + D))
    assert lead(db, l0).status == "meeting-booked"
    # l0's primary becomes its CANCELED row, no CONFIRMED left: back to qualified (§3), like any primary change
    write(db, ghl(l1, "g1", start_at=NOW + 2 * D), now=NOW + H)
    assert (lead(db, l0).status, lead(db, l0).appointment_status) == ("qualified", "canceled")
    assert lead(db, l1).status == "meeting-booked"
    # not from a backfill
    write(db, ghl(l1, "g2", source=Source.BACKFILL), now=NOW + 2 * H)
    assert (lead(db, l2).status, lead(db, l2).ghl_appointment_id) == ("meeting-booked", "g3")


def test_status_change_audit_rows(db: sa.Engine) -> None:
    (l0,) = seed(db, leads=1)
    write(db, ghl(l0, "g1", start_at=NOW + D, webhook_event_id=7))
    write(db, ghl(l0, "g1", start_at=NOW + 2 * D), now=NOW + H)
    write(db, ghl(l0, "g1", X, Source.WEBHOOK, provider_updated_at=NOW + H, webhook_event_id=8), now=NOW + 2 * H)
    got = rows(db, "SELECT from_status, to_status, from_start_at, to_start_at, source, observed_at, provider_event_at,"
                   " webhook_event_id FROM appointment_status_changes ORDER BY id")
    assert [tuple(r) for r in got] == [
        (None, "CONFIRMED", None, NOW + D, "RECONCILE_CRON", NOW, None, 7),  # created: its start
        ("CONFIRMED", "CONFIRMED", NOW + D, NOW + 2 * D, "RECONCILE_CRON", NOW + H, None, None),  # only the time moved
        ("CONFIRMED", "CANCELED", None, None, "WEBHOOK", NOW + 2 * H, NOW + H, 8),  # only the status changed
    ]


def test_time_move_of_an_upcoming_confirmed_row_is_kept_and_creates_the_rescheduled_task(db: sa.Engine) -> None:
    """A GHL reschedule keeps its id and changes times: the move is recorded (from → to) in the same statement as
    status changes, and a move by WEBHOOK or RECONCILE_CRON of an upcoming CONFIRMED row creates the
    ``meeting-rescheduled`` task naming both times (SPEC §4.3)."""
    l0, l1, l2, l3 = seed(db, leads=4)
    for lead_id, key in ((l0, "g0"), (l1, "g1"), (l2, "g2"), (l3, "g3")):
        write(db, ghl(lead_id, key, start_at=NOW + D))
    start_past = NOW - 2 * H
    write(db, ghl(l3, "g3", start_at=start_past, source=Source.BACKFILL), now=NOW - 3 * H)  # g3 lies in the past
    later = NOW + H
    res = write(db, ghl(l0, "g0", start_at=NOW + 2 * D, source=Source.WEBHOOK),
                ghl(l1, "g1", start_at=NOW + 3 * D),  # RECONCILE_CRON
                ghl(l2, "g2", start_at=NOW + 4 * D, source=Source.AUTO_BOOK),  # our own booking path: no task
                ghl(l3, "g3", start_at=NOW + 5 * D, source=Source.WEBHOOK),  # the original time had passed
                now=later)
    assert [r.is_reschedule for r in res] == [True, True, True, True]
    moves = rows(db, "SELECT a.ghl_appointment_id, c.from_status, c.to_status, c.from_start_at, c.to_start_at "
                     "FROM appointment_status_changes c JOIN appointments a ON a.id = c.appointment_id "
                     "WHERE c.observed_at = :t ORDER BY 1", t=later)
    assert [tuple(m) for m in moves] == [
        ("g0", "CONFIRMED", "CONFIRMED", NOW + D, NOW + 2 * D),
        ("g1", "CONFIRMED", "CONFIRMED", NOW + D, NOW + 3 * D),
        ("g2", "CONFIRMED", "CONFIRMED", NOW + D, NOW + 4 * D),
        ("g3", "CONFIRMED", "CONFIRMED", start_past, NOW + 5 * D)]
    made = {t.lead_id: t for t in tasks(db)}
    assert set(made) == {l0, l1}
    for lead_id, new_start in ((l0, NOW + 2 * D), (l1, NOW + 3 * D)):
        task = made[lead_id]
        assert (task.type, task.status, task.is_urgent) == ("meeting-rescheduled", "pending", True)
        old_text, new_text = (format_meeting_time(t, ZoneInfo("UTC")) for t in (NOW + D, new_start))
        assert task.suggested_message == (f"Meeting originally scheduled for {old_text} was moved to {new_text}. "
                                          "Review and confirm the new time with the lead.")
    # the same time again, or a migration / backfill move: nothing new
    write(db, ghl(l0, "g0", start_at=NOW + 2 * D, source=Source.WEBHOOK), now=later + H)
    write(db, ghl(l2, "g2", start_at=NOW + 6 * D, source=Source.BACKFILL), now=later + H)
    assert rows(db, "SELECT count(*) FROM appointment_status_changes WHERE observed_at = :t", t=later + H)[0][0] == 1
    assert len(tasks(db)) == 2


def test_same_key_twice_in_one_batch_applies_in_order(db: sa.Engine) -> None:
    l0, l1, l2 = seed(db)
    res = write(db, ghl(l0, "g1", start_at=NOW + D), ghl(l2, "g2", start_at=NOW + D), ghl(l0, "g1", X),
                ghl(l1, "g1", C, start_at=NOW + 2 * D))
    assert [(r.is_new, r.previous_status, r.status, r.status_changed) for r in res] == [
        (True, None, C, False), (True, None, C, False), (False, C, X, True), (False, X, C, True)]
    assert len({r.appointment_id for r in (res[0], res[2], res[3])}) == 1
    # primary_changed belongs to each observation's own round
    assert [r.primary_changed for r in res] == [True, True, True, True]
    row = appt(db, "g1")
    assert (row.lead_id, row.status, row.start_at, row.canceled_at) == (l1, "CONFIRMED", NOW + 2 * D, None)
    assert [c[:2] for c in changes(db, row.id)] == [(None, "CONFIRMED"), ("CONFIRMED", "CANCELED"),
                                                    ("CANCELED", "CONFIRMED")]
    assert rollup_of(lead(db, l0)) == EMPTY_ROLLUP
    assert lead(db, l1).ghl_appointment_id == "g1" and lead(db, l2).ghl_appointment_id == "g2"
    assert drifted(db) == 0


def test_calendly_invitee_upgrades_event_only_row(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    event = "https://api.calendly.com/scheduled_events/E1"
    legacy_id = uuid.uuid4()
    with db.begin() as conn:
        insert_row(conn, id=legacy_id, lead_id=l0, provider="CALENDLY", calendly_scheduled_event_uri=event,
                   legacy_lead_key=f"ws1:{l0}", source="MIGRATION", start_at=NOW + D, created_at=NOW - D)
    res = write(db, calendly(l0, "I1", event="E1", start_at=NOW + D), calendly(l1, "I2", event="E1", start_at=NOW + D),
                now=NOW + H)
    assert [(r.is_new, r.appointment_id == legacy_id) for r in res] == [(False, True), (True, False)]
    row = appt(db, "I1")
    assert (row.id, row.lead_id, row.source, row.last_source, row.legacy_lead_key, row.created_at) == (
        legacy_id, l0, "MIGRATION", "WEBHOOK", f"ws1:{l0}", NOW - D)
    assert row.calendly_invitee_uri == "https://api.calendly.com/scheduled_events/E1/invitees/I1"
    assert rows(db, "SELECT count(*) AS n FROM appointments WHERE lead_id = :l", l=l0)[0].n == 1
    assert lead(db, l0).calendly_invitee_uri == row.calendly_invitee_uri
    assert lead(db, l0).appointment_booked_at == NOW - D
    assert drifted(db, NOW + H) == 0


def test_empty_batch(db: sa.Engine) -> None:
    seed(db, leads=1)
    assert write_observations(db, [], now=NOW) == []


def test_apply_observations_twice_in_one_transaction(db: sa.Engine) -> None:
    l0, l1 = seed(db, leads=2)
    with db.begin() as conn:
        first = apply_observations(conn, [ghl(l0, "g1", start_at=NOW + D), ghl(l1, "g2", start_at=NOW + D)], now=NOW)
        second = apply_observations(conn, [ghl(l0, "g1", X)], now=NOW)
    assert [(r.index, r.is_new, r.status) for r in first] == [(0, True, C), (1, True, C)]
    assert [(r.index, r.is_new, r.previous_status, r.status, r.status_changed) for r in second] == [
        (0, False, C, X, True)]
    assert [c[:2] for c in changes(db, appt(db, "g1").id)] == [(None, "CONFIRMED"), ("CONFIRMED", "CANCELED")]
    assert len(changes(db, appt(db, "g2").id)) == 1
    assert [t.type for t in tasks(db)] == ["meeting-canceled"]
    assert drifted(db) == 0


# ------------------------------------------------------------- property: rollup = rollup(primary), model of §4.1

LEADS = ["ws1_lead0", "ws1_lead1", "ws1_lead2"]
# instants chosen away from the write clocks (NOW … NOW + a few seconds), so the §3 reference never crosses one
TIMES = [NOW + d for d in (-3 * D, -7 * H, -2 * H, 2 * H, 5 * H, D, 3 * D)]
PROVIDER_TIMES = [NOW - timedelta(minutes=m) for m in (50, 40, 30, 20, 10)]
GHL_KEYS = ["g0", "g1", "g2"]
CAL_KEYS = ["c0", "c1", "c2"]


@st.composite
def observation(draw: st.DrawFn) -> Observation:
    provider = draw(st.sampled_from(list(Provider)))
    common: dict[str, Any] = {
        "status": draw(st.sampled_from(list(Status))),
        "source": draw(st.sampled_from(list(Source))),
        "start_at": draw(st.none() | st.sampled_from(TIMES)),
        "provider_updated_at": draw(st.none() | st.sampled_from(PROVIDER_TIMES)),
        "booked_at": draw(st.none() | st.sampled_from(TIMES[:3])),
        "canceled_at": draw(st.none() | st.sampled_from(TIMES[:4])),
    }
    lead_id = draw(st.sampled_from(LEADS))
    if provider is Provider.GHL:
        return ghl(lead_id, draw(st.sampled_from(GHL_KEYS)), **common)
    key = draw(st.sampled_from(CAL_KEYS))
    others = [inv(k) for k in CAL_KEYS if k != key]
    return replace(
        calendly(lead_id, key, **common),
        provider_links_reschedules=draw(st.booleans()),
        rescheduled_from_invitee_uri=draw(st.none() | st.sampled_from(others)),
        rescheduled_to_invitee_uri=draw(st.none() | st.sampled_from(others)),
    )


@dataclass
class Model:
    """What SPEC §4.1 says a row holds after a sequence of observations (only the fields it pins)."""

    lead_id: str
    status: Status
    source: Source
    start_at: datetime | None
    canceled_at: datetime | None
    status_changed_at: datetime
    provider_updated_at: datetime | None
    created_at: datetime


def _changed_at(obs: Observation, now: datetime) -> datetime:
    ended = obs.status in CALENDLY_TERMINAL
    return obs.status_changed_at or (obs.canceled_at if ended else None) or obs.provider_updated_at or now


def apply_model(model: dict[str, Model], obs: Observation, now: datetime) -> None:
    key = obs.key
    ended = obs.status in CALENDLY_TERMINAL
    m = model.get(key)
    if m is None:
        canceled_at = (obs.canceled_at or now) if ended else None
        model[key] = Model(obs.lead_id, obs.status, obs.source, obs.start_at, canceled_at, _changed_at(obs, now),
                           obs.provider_updated_at, obs.booked_at or now)
        return
    stale = obs.provider_updated_at is not None and m.provider_updated_at is not None and (
        obs.provider_updated_at < m.provider_updated_at)
    frozen = obs.provider is Provider.CALENDLY and m.status in CALENDLY_TERMINAL
    if stale:
        status = m.status
    elif frozen:
        status = R if (m.status is X and obs.status is R) else m.status
    else:
        status = obs.status
    if stale or frozen:
        m.start_at = m.start_at or obs.start_at
    else:
        m.start_at = obs.start_at or m.start_at
    if not stale:
        m.lead_id = obs.lead_id
    if status in CALENDLY_TERMINAL:
        new_cancel = (obs.canceled_at or now) if ended else None
        m.canceled_at = (m.canceled_at or new_cancel) if m.status in CALENDLY_TERMINAL else new_cancel
    else:
        m.canceled_at = None
    if status is not m.status:
        m.status_changed_at = _changed_at(obs, now)
    m.status = status
    if obs.provider_updated_at is not None:
        m.provider_updated_at = max(filter(None, (m.provider_updated_at, obs.provider_updated_at)))


def _reset(engine: sa.Engine) -> None:
    cols = ", ".join(f"{c} = NULL" for c in ROLLUP_COLUMNS)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM appointment_status_changes; DELETE FROM follow_up_tasks; "
                             "DELETE FROM appointments")
        conn.exec_driver_sql(f"UPDATE leads SET status = 'qualified', {cols}")


@pytest.fixture()
def three_leads(db: sa.Engine) -> sa.Engine:
    seed(db, leads=3)
    return db


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(observation(), min_size=1, max_size=8), min_size=1, max_size=4))
def test_rollup_equals_rollup_of_primary_after_random_observations(
    three_leads: sa.Engine, batches: list[list[Observation]]
) -> None:
    engine = three_leads
    _reset(engine)
    model: dict[str, Model] = {}
    seen: set[str] = set()
    now = NOW
    for i, batch in enumerate(batches):
        now = NOW + timedelta(seconds=i)
        results = write_observations(engine, batch, now=now)
        for obs, res in zip(batch, results, strict=True):
            assert res.error_kind is None
            assert res.is_new == (obs.key not in seen)
            seen.add(obs.key)
            previous = model[obs.key].status if obs.key in model else None
            apply_model(model, obs, now)
            assert (res.previous_status, res.status) == (previous, model[obs.key].status)
            assert res.status_changed == (previous is not None and previous is not res.status)

    stored = {(r.ghl_appointment_id and "ghl:" + r.ghl_appointment_id) or "calendly:" + r.calendly_invitee_uri: r
              for r in rows(engine, "SELECT * FROM appointments")}
    assert len(stored) == len(model)
    for key, m in model.items():
        r = stored[key]
        assert (r.lead_id, r.status, r.source, r.start_at, r.canceled_at, r.status_changed_at,
                r.provider_updated_at, r.created_at) == (
            m.lead_id, m.status.value, m.source.value, m.start_at, m.canceled_at, m.status_changed_at,
            m.provider_updated_at, m.created_at), key
    # the invariant, checked by the SQL drift report and independently in Python
    with engine.connect() as conn:
        report = drift_report(conn, "ws1", now)
    assert report.drifted == 0, report.sample_lead_ids
    for lead_id in LEADS:
        assert rollup_of(lead(engine, lead_id)) == expected_rollup(engine, lead_id, now), lead_id
    # the audit trail is a chain ending at the current status
    for r in stored.values():
        chain = changes(engine, r.id)
        assert chain[0][0] is None and chain[-1][1] == r.status
        assert all(a[1] == b[0] for a, b in itertools.pairwise(chain))
    # reschedule links never form a cycle
    links = {r.id: r.rescheduled_from_id for r in stored.values()}
    for start in links:
        hops, node = 0, links[start]
        while node is not None:
            assert node != start and hops < len(links)
            node, hops = links.get(node), hops + 1
    # at most one pending task per lead and type (the unique index), never for a lead only migrated/backfilled
    pending = Counter((t.lead_id, t.type) for t in tasks(engine) if t.status == "pending")
    assert all(n == 1 for n in pending.values())
    side_effect_leads = {o.lead_id for b in batches for o in b if o.source.has_side_effects}
    assert {t.lead_id for t in tasks(engine)} <= side_effect_leads


# ------------------------------------------------------------------ apply_staged's fast paths (same outcome)


def _portable(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """``snapshot`` without the random appointment ids (row references become provider keys)."""
    key = "coalesce(a.ghl_appointment_id, a.calendly_invitee_uri, a.legacy_lead_key)"
    queries = {
        "appointments": f"SELECT {key}, a.lead_id, a.status, a.start_at, a.canceled_at, a.source, "
        "(SELECT coalesce(p.ghl_appointment_id, p.calendly_invitee_uri) FROM appointments p "
        "WHERE p.id = a.rescheduled_from_id) FROM appointments a ORDER BY 1",
        "status_changes": f"SELECT {key}, c.from_status, c.to_status, c.source FROM appointment_status_changes c "
        "JOIN appointments a ON a.id = c.appointment_id ORDER BY c.id",
        "tasks": f"SELECT t.lead_id, {key}, t.type, t.status FROM follow_up_tasks t "
        "JOIN appointments a ON a.id = t.appointment_id ORDER BY 1, 3, 4",
    }
    with engine.connect() as conn:
        out = {name: [tuple(r) for r in conn.execute(sa.text(q))] for name, q in queries.items()}
    out["leads"] = snapshot(engine)["leads"]
    return out


def test_flags_false_writes_the_same(db: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply_staged(flags=False)`` (the migration's mode) leaves the same tables; only ``primary_changed``
    of rounds without side effects is not computed."""
    from appt_pipeline.store import write_path

    l0, l1, l2 = seed(db)
    mig, web = Source.MIGRATION, Source.WEBHOOK
    batches = [
        [ghl(l0, "g1", source=mig, start_at=NOW + D), ghl(l1, "g2", source=mig, start_at=NOW + 2 * D),
         calendly(l2, "c1", source=mig, start_at=NOW + 3 * D), ghl(l0, "g1", X, source=mig)],
        [ghl(l1, "g1", source=mig, start_at=NOW + D), calendly(l2, "c1", X, source=Source.BACKFILL)],
        [ghl(l1, "g2", X, source=web), ghl(l1, "g3", source=web, start_at=NOW + 4 * D),
         calendly(l0, "c2", source=web, start_at=NOW + D)],
    ]

    def run() -> tuple[list[list[WriteResult]], dict[str, list[tuple[Any, ...]]]]:
        results = [write(db, *batch, now=NOW + i * H) for i, batch in enumerate(batches)]
        return results, _portable(db)

    with_flags, tables = run()
    _reset(db)
    original = write_path.apply_staged
    monkeypatch.setattr(write_path.apply, "apply_staged",
                        lambda conn, *, now=None: original(conn, now=now, flags=False))
    without_flags, tables_without = run()
    assert tables_without == tables
    assert drifted(db, NOW + 2 * H) == 0
    for i, (a, b) in enumerate(zip(with_flags, without_flags, strict=True)):
        strip = [(r.index, r.is_new, r.status_changed, r.previous_status, r.status, r.error_kind, r.start_changed)
                 for r in a]
        assert strip == [(r.index, r.is_new, r.status_changed, r.previous_status, r.status, r.error_kind,
                          r.start_changed) for r in b]
        if i == 2:  # side effects: the primary is noted as always
            assert [r.primary_changed for r in b] == [r.primary_changed for r in a]
        else:
            assert not any(r.primary_changed for r in b)


def test_key_inserted_between_noting_and_writing(db: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key that appears after the round noted existing keys (another writer's insert) makes the plain INSERT
    fail; the round falls back to the upserts, which report it as a concurrent insert (retried) as always."""
    from appt_pipeline.store import write_path

    l0, l1, _ = seed(db)
    write(db, ghl(l0, "g1", start_at=NOW + D))
    before = snapshot(db)
    monkeypatch.setattr(write_path.locks, "_LOCK_AND_NOTE_EXISTING", "SELECT 1")  # does not see g1
    with pytest.raises(write_path.ConcurrentKeyInsert), db.connect() as conn, conn.begin():
        apply_observations(conn, [ghl(l1, "g2", start_at=NOW + D), ghl(l1, "g1", X)], now=NOW + H)
    assert snapshot(db) == before


def test_key_moved_while_waiting_for_the_lead_locks(db: sa.Engine) -> None:
    """A writer waits on the lead that owns its key; meanwhile the key moves to a lead outside its lock set. The
    writer notes the moved row, releases its locks, locks the new owner in order and moves the key on: both
    leads the key left end with the all-null rollup, and the writer held the new owner's lock when it wrote."""
    import threading

    l0, l1, l2 = seed(db)
    write(db, ghl(l0, "g1", start_at=NOW + D))
    outcome: list[Any] = []
    restarts: list[str] = []

    def restarted(conn: sa.Connection, name: str, context: Any) -> None:
        restarts.append(name)

    sa.event.listen(db, "rollback_savepoint", restarted)
    # `other` is closed (its transaction rolled back, the writer let go) and the listener removed also when an
    # assertion below fails
    try:
        with db.connect() as other:
            tx = other.begin()
            apply_observations(other, [ghl(l2, "g1", start_at=NOW + D)], now=NOW + H)  # g1: l0 → l2, not committed
            writer = threading.Thread(target=lambda: outcome.append(write(db, ghl(l1, "g1", start_at=NOW + 2 * D),
                                                                          now=NOW + 2 * H)))
            writer.start()
            with db.connect() as watch:  # the writer queues on l0, the owner it read before the other committed
                for _ in range(200):
                    waiting = watch.execute(sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )).scalar_one()
                    if waiting:
                        break
                    threading.Event().wait(0.05)
            assert waiting, "the writer never waited for the other's lead locks"
            tx.commit()
        writer.join(timeout=30)
    finally:
        sa.event.remove(db, "rollback_savepoint", restarted)
    assert not writer.is_alive()
    assert len(restarts) == 1  # noted l2 as the owner, released its locks and locked {l1, l2} in order
    (result,) = outcome[0]
    assert (result.is_new, result.error_kind, result.primary_changed) == (False, None, True)
    assert appt(db, "g1").lead_id == l1
    by_lead = {r.id: r for r in rows(db, "SELECT * FROM leads")}
    assert by_lead[l1].ghl_appointment_id == "g1"
    assert rollup_of(by_lead[l0]) == EMPTY_ROLLUP and rollup_of(by_lead[l2]) == EMPTY_ROLLUP
    assert drifted(db, NOW + 2 * H) == 0
