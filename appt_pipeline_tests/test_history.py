"""A lead's history and booking status in one statement each (SPEC §10), on the real database, with a fixed ``now``.

Order by ``coalesce(start_at, created_at)`` descending, predecessor / successor, status and time changes,
sources, attribution; the filters ``include_canceled``, ``active_only``, ``limit`` — the SQL and the pure rule
(``domain.history.passes_filters``) agree on random rows —; the rollup fallback; the booking status (primary of
SPEC §3, rollup, counts); the ``history`` command.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appt_pipeline.domain.history import (
    ITEM_KEYS,
    HistoryFilters,
    display_zone,
    format_move,
    passes_filters,
    rollup_item,
)
from appt_pipeline.domain.primary import select_primary
from appt_pipeline.domain.vocab import Status
from appt_pipeline.store.history import read_booking_status, read_history
from appt_pipeline_tests.helpers import REF, ApptRow, seed
from appt_pipeline_tests.helpers.cli import cli_env, one_json, run_cli
from appt_pipeline_tests.helpers.history import LEAD_ZONE, Timeline, insert_appointment, insert_change, seed_timeline

WS = "hist"
LEAD = "hist_lead0"
EMPTY_LEAD = "hist_lead1"
LEGACY_LEAD = "hist_lead2"


@pytest.fixture()
def timeline(db: sa.Engine) -> Timeline:
    seed(db, WS, 3, timezone="America/Chicago")
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET timezone = :tz WHERE id = :id"), {"tz": LEAD_ZONE, "id": LEAD})
        conn.execute(sa.text(
            "UPDATE leads SET ghl_appointment_id = 'legacy-1', appointment_status = 'booked', "
            "booked_slot = '2026-03-05T15:00:00.000Z', appointment_booked_at = '2026-02-20T10:00:00Z', "
            "appointment_provider = 'GHL', appointment_source = 'manual' WHERE id = :id"), {"id": LEGACY_LEAD})
    return seed_timeline(db, WS, LEAD, REF)


def history(engine: sa.Engine, lead: str = LEAD, now: datetime = REF, **filters: Any) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = read_history(conn, WS, lead, HistoryFilters(**filters), now)
    return found.as_dict() if found is not None else None


def ids(answer: dict[str, Any]) -> list[str]:
    return [a["id"] for a in answer["appointments"]]


# ------------------------------------------------------------------------------------------- order, shape


def test_rows_come_newest_first_with_chains_changes_sources_and_attribution(timeline: Timeline, db: sa.Engine) -> None:
    answer = history(db)
    assert answer is not None
    assert (answer["workspace_id"], answer["lead_id"], answer["from_rollup"]) == (WS, LEAD, False)
    assert ids(answer) == timeline.ordered_ids()
    items = {a["id"]: a for a in answer["appointments"]}
    for item in items.values():
        assert tuple(item) == ITEM_KEYS  # exactly SPEC §10's keys, in its order
    new, old = items[str(timeline.ids["cal_new"])], items[str(timeline.ids["cal_old"])]
    assert new["rescheduled_from_id"] == str(timeline.ids["cal_old"]) and new["rescheduled_to_id"] is None
    assert old["rescheduled_to_id"] == str(timeline.ids["cal_new"]) and old["rescheduled_from_id"] is None
    assert new["calendly_event_type_uri"] == "https://api.calendly.com/event_types/ET-1"
    assert new["timezone"] == "America/New_York" and new["provider"] == "CALENDLY"
    moved = items[str(timeline.ids["ghl_moved"])]
    assert (moved["source"], moved["last_source"], moved["ghl_calendar_id"]) == ("WEBHOOK", "RECONCILE_CRON", "cal-A")
    assert moved["start_at"] == timeline.times["ghl_moved"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert [(c["from_status"], c["to_status"]) for c in moved["changes"]] == [(None, "CONFIRMED"),
                                                                            ("CONFIRMED", "CONFIRMED")]
    move = moved["changes"][1]
    assert datetime.fromisoformat(move["from_start_at"]) == timeline.times["ghl_moved_from"]
    assert datetime.fromisoformat(move["to_start_at"]) == timeline.times["ghl_moved"]
    assert move["source"] == "RECONCILE_CRON" and move["observed_at"].endswith("Z")
    canceled = items[str(timeline.ids["canceled"])]
    assert canceled["cancel_reason"] == "lead asked to cancel" and canceled["canceled_at"].endswith("Z")
    assert items[str(timeline.ids["no_start"])]["start_at"] is None
    assert items[str(timeline.ids["showed"])]["changes"] == []


def test_the_read_is_one_statement_whatever_the_number_of_rows(timeline: Timeline, db: sa.Engine) -> None:
    statements: list[str] = []
    with db.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
        read_history(conn, WS, LEAD, HistoryFilters(), REF)
        read_booking_status(conn, WS, LEAD, REF)
    assert len(statements) == 2  # one each: no query per row


def test_a_successor_in_another_lead_is_still_named(timeline: Timeline, db: sa.Engine) -> None:
    """SPEC §4.2 can move a row to another lead: the chain ids stay what the table says."""
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE appointments SET lead_id = :other WHERE id = :id"),
                     {"other": EMPTY_LEAD, "id": timeline.ids["cal_new"]})
    answer = history(db)
    assert answer is not None
    old = next(a for a in answer["appointments"] if a["id"] == str(timeline.ids["cal_old"]))
    assert old["rescheduled_to_id"] == str(timeline.ids["cal_new"])
    assert str(timeline.ids["cal_new"]) not in ids(answer)


# ---------------------------------------------------------------------------------------------- filters


def test_filters_keep_the_rows_spec_10_names(timeline: Timeline, db: sa.Engine) -> None:
    no_canceled = history(db, include_canceled=False)
    assert no_canceled is not None
    assert ids(no_canceled) == timeline.ordered_ids(tuple(n for n in Timeline.ORDER if n != "canceled"))
    active = history(db, active_only=True)
    assert active is not None and ids(active) == timeline.ordered_ids(Timeline.ACTIVE)
    both = history(db, active_only=True, include_canceled=False)
    assert both is not None and ids(both) == timeline.ordered_ids(Timeline.ACTIVE)
    limited = history(db, limit=2)
    assert limited is not None and ids(limited) == timeline.ordered_ids()[:2]
    # active_only is relative to now: a week later only the row without a start is still upcoming
    later = history(db, now=REF + timedelta(days=8), active_only=True)
    assert later is not None and ids(later) == [str(timeline.ids["no_start"])]


def test_limit_is_between_1_and_500() -> None:
    for bad in (0, 501, -1):
        with pytest.raises(ValueError, match="between 1 and 500"):
            HistoryFilters(limit=bad)
    assert HistoryFilters().limit == 50


_ROW = st.tuples(st.sampled_from(list(Status)), st.one_of(st.none(), st.integers(-72, 72)))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(rows=st.lists(_ROW, min_size=0, max_size=8), include_canceled=st.booleans(), active_only=st.booleans(),
       limit=st.integers(1, 6))
def test_sql_filters_and_order_agree_with_the_pure_rule(engine: sa.Engine, rows: list[tuple[Status, int | None]],
                                                         include_canceled: bool, active_only: bool,
                                                         limit: int) -> None:
    """Random rows (statuses, starts within ±3 days of now, some without start): the statement returns exactly the
    rows ``passes_filters`` keeps, ordered by coalesce(start_at, created_at) desc, cut at ``limit``."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM workspaces WHERE id = 'prop'")
        conn.exec_driver_sql("INSERT INTO workspaces (id) VALUES ('prop')")
        conn.exec_driver_sql("INSERT INTO leads (id, workspace_id) VALUES ('prop_l', 'prop')")
        made = []
        for i, (status, hours) in enumerate(rows):
            start = REF + timedelta(hours=hours) if hours is not None else None
            created = REF - timedelta(days=5) + timedelta(minutes=i)
            made.append((insert_appointment(conn, ws="prop", lead="prop_l", status=status.value, start=start,
                                            created=created), status, start, created))
    filters = HistoryFilters(include_canceled=include_canceled, active_only=active_only, limit=limit)
    try:
        with engine.connect() as conn:
            found = read_history(conn, "prop", "prop_l", filters, REF)
        assert found is not None
        kept = [m for m in made if passes_filters(m[1], m[2], REF, filters)]
        kept.sort(key=lambda m: (m[2] or m[3], m[3], str(m[0])), reverse=True)
        assert [i["id"] for i in found.items] == [str(m[0]) for m in kept[:limit]]
        assert found.from_rollup is (not rows)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM workspaces WHERE id = 'prop'")


# --------------------------------------------------------------------------------------- rollup fallback


def test_a_lead_without_rows_answers_with_its_rollup(timeline: Timeline, db: sa.Engine) -> None:
    legacy = history(db, LEGACY_LEAD)
    assert legacy is not None and legacy["from_rollup"] is True
    (item,) = legacy["appointments"]
    assert tuple(item) == ITEM_KEYS
    assert item["id"] is None and item["status"] == "CONFIRMED"  # 'booked' by SPEC §2
    assert (item["provider"], item["ghl_appointment_id"], item["source"]) == ("GHL", "legacy-1", "MANUAL")
    assert item["start_at"] == "2026-03-05T15:00:00.000Z" and item["changes"] == []
    # the filters apply to it as to a row: the slot lies before REF + 5 days
    assert history(db, LEGACY_LEAD, now=REF + timedelta(days=5), active_only=True)["appointments"] == []  # type: ignore[index]
    empty = history(db, EMPTY_LEAD)
    assert empty == {"workspace_id": WS, "lead_id": EMPTY_LEAD, "from_rollup": True, "appointments": []}


def test_rollup_item_never_guesses_a_status() -> None:
    item = rollup_item({"ghl_appointment_id": "g", "appointment_status": "tentative"})
    assert item is not None and item["status"] is None and item["provider"] == "GHL"
    assert rollup_item({"calendly_scheduled_event_uri": "https://api.calendly.com/scheduled_events/E"})["status"] == (  # type: ignore[index]
        "CONFIRMED")
    assert rollup_item({"appointment_status": None, "booked_slot": None}) is None


def test_unknown_or_foreign_leads_are_not_found(timeline: Timeline, db: sa.Engine) -> None:
    seed(db, "other", ["other_lead"])
    assert history(db, "no-such-lead") is None
    assert history(db, "other_lead") is None  # a lead of another workspace is not in this one
    assert history(db, "bad\x00id") is None
    with db.connect() as conn:
        assert read_booking_status(conn, WS, "other_lead", REF) is None


# ---------------------------------------------------------------------------------------- booking status


def test_booking_status_has_the_primary_its_rollup_and_counts(timeline: Timeline, db: sa.Engine) -> None:
    with db.connect() as conn:
        status = read_booking_status(conn, WS, LEAD, REF)
        rows = [ApptRow.of(r) for r in conn.execute(sa.text("SELECT * FROM appointments WHERE lead_id = :l"),
                                                     {"l": LEAD})]
        legacy = read_booking_status(conn, WS, LEGACY_LEAD, REF)
    assert status is not None
    expected = select_primary(rows, REF)
    assert expected is not None and status["primary"]["id"] == str(expected.id)
    assert status["primary"]["id"] == str(timeline.ids["ghl_moved"])  # the soonest upcoming CONFIRMED (SPEC §3)
    assert tuple(status["primary"]) == ITEM_KEYS
    assert status["counts"] == {"CONFIRMED": 3, "CANCELED": 1, "RESCHEDULED": 1, "SHOWED": 1, "NO_SHOW": 0}
    assert (status["appointment_count"], status["has_history"]) == (6, True)
    assert legacy is not None and legacy["primary"] is None and legacy["has_history"] is False
    assert legacy["has_appointment"] is True and legacy["appointment_id"] == "legacy-1"
    assert legacy["rollup"]["appointment_status"] == "booked"
    assert legacy["rollup"]["appointment_booked_at"] == "2026-02-20T10:00:00.000Z"


# ------------------------------------------------------------------------------------------ for people


def test_time_moves_read_as_weekday_and_time_in_the_zone() -> None:
    zone = ZoneInfo("Europe/Berlin")
    tue = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # Tue 14:00 in Berlin
    assert format_move(tue, tue + timedelta(days=1, hours=2), zone) == "Tue 14:00 → Wed 16:00"
    assert format_move(tue, tue + timedelta(days=15), zone) == "Tue 3 Mar 14:00 → Wed 18 Mar 14:00"
    assert display_zone("Not/AZone", "America/Chicago") == (ZoneInfo("America/Chicago"), "the workspace's time zone")
    assert display_zone(None, None)[0] == ZoneInfo("UTC")


# ------------------------------------------------------------------------------------------------- CLI


def test_history_command_json_and_table(db: sa.Engine, tmp_path: Path, database_url: str) -> None:
    """The command reads at the real clock: the scenario is laid around it."""
    seed(db, WS, 1, lead_tz=LEAD_ZONE)
    timeline = seed_timeline(db, WS, LEAD, datetime.now(UTC))
    env = cli_env(tmp_path / "home", database_url)
    out = run_cli(env, "history", "--workspace", WS, "--lead", LEAD, "--no-canceled", "--limit", "3", "--json")
    assert out.returncode == 0, out.stderr
    answer = one_json(out)
    assert [a["id"] for a in answer["appointments"]] == timeline.ordered_ids(("cal_new", "cal_old", "ghl_moved"))
    table = run_cli(env, "history", "--workspace", WS, "--lead", LEAD, "--active-only")
    assert table.returncode == 0, table.stderr
    assert "times in Europe/Berlin (the lead's time zone)" in table.stderr
    moved = format_move(timeline.times["ghl_moved_from"], timeline.times["ghl_moved"], ZoneInfo(LEAD_ZONE))
    assert f"moved {moved}" in table.stdout and "CANCELED" not in table.stdout
    unknown = run_cli(env, "history", "--workspace", WS, "--lead", "nope")
    assert unknown.returncode == 2 and "lead 'nope' does not exist" in unknown.stderr
    assert run_cli(env, "history", "--workspace", "nope", "--lead", LEAD).returncode == 2
    assert run_cli(env, "history", "--workspace", WS, "--lead", LEAD, "--limit", "501").returncode == 2


def test_changes_of_rows_are_in_observed_order(db: sa.Engine) -> None:
    seed(db, WS, 1)
    with db.begin() as conn:
        appt = insert_appointment(conn, ws=WS, lead=LEAD, status="CANCELED", created=REF - timedelta(days=1))
        insert_change(conn, appt, "CONFIRMED", "CANCELED", REF - timedelta(hours=1))
        insert_change(conn, appt, None, "CONFIRMED", REF - timedelta(hours=5))
    answer = history(db)
    assert answer is not None
    assert [c["to_status"] for c in answer["appointments"][0]["changes"]] == ["CONFIRMED", "CANCELED"]


def test_a_move_written_by_the_write_path_reads_as_a_time_change(db: sa.Engine) -> None:
    """The read side on what the one write path records (SPEC §4.3): a GHL reschedule keeps its id, and its history
    item carries the move from the old start to the new one."""
    from appt_pipeline.domain.vocab import Source
    from appt_pipeline.store.write_path import apply_observations
    from appt_pipeline_tests.helpers import ghl

    seed(db, WS, 1, lead_tz=LEAD_ZONE)
    before, after = REF + timedelta(days=2, hours=1), REF + timedelta(days=3, hours=3)  # 13:00, 15:00 UTC
    with db.begin() as conn:
        apply_observations(conn, [ghl(LEAD, "g-move", ws=WS, start_at=before)], now=REF)
    with db.begin() as conn:
        apply_observations(conn, [ghl(LEAD, "g-move", ws=WS, start_at=after, source=Source.WEBHOOK)],
                           now=REF + timedelta(hours=1))
    answer = history(db)
    assert answer is not None
    (item,) = answer["appointments"]
    move = item["changes"][-1]
    assert (move["from_status"], move["to_status"], move["source"]) == ("CONFIRMED", "CONFIRMED", "WEBHOOK")
    assert (datetime.fromisoformat(move["from_start_at"]), datetime.fromisoformat(move["to_start_at"])) == (before,
                                                                                                          after)
    assert format_move(before, after, ZoneInfo(LEAD_ZONE)) == "Tue 14:00 → Wed 16:00"
