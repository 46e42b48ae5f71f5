"""Calendar capacity (docs/rules.md §9) on the real PostgreSQL, hand-built cases at a fixed NOW.

The store's one statement (:mod:`appt_pipeline.store.capacity`) against the rule: window edges (start
inclusive, end exclusive), free slots de-duplicated and a slot offered by both calendars counted once in the
total, unattributed bookings, a workspace without calendars, ``booked_pct`` null when there is nothing, the
clamped window, stale and failed availability flagged, what is stored equal to what is read, and the original's
total (bookings of every calendar against the sum of the configured calendars' slots) not reproduced.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from appt_pipeline.domain.calendars import configured_calendars
from appt_pipeline.domain.capacity import (
    NEVER_FETCHED,
    booked_pct,
    capacity_window,
    clamp_window_days,
    slot_starts_in_window,
    window_dates,
)
from appt_pipeline.store.capacity import UnknownWorkspaceError, read_capacity, store_capacity
from appt_pipeline.store.workspaces import set_workspace
from appt_pipeline_tests.helpers import rows
from appt_pipeline_tests.helpers.capacity import book, workspace
from appt_pipeline_tests.helpers.capacity import offer as _offer

#: Not a midnight: a 30-day window touches 31 UTC days.
NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
END = NOW + timedelta(days=30)
US = timedelta(microseconds=1)
CAL_A, CAL_B = "cal_a", "cal_b"
EVT = "https://api.calendly.com/event_types/"

def offer(engine: sa.Engine, ws: str, key: str, starts: list[datetime], **kw: Any) -> None:
    """Slots fetched 10 minutes before NOW, fresh for 2 hours unless told otherwise."""
    kw.setdefault("fetched_at", NOW - timedelta(minutes=10))
    kw.setdefault("stale_at", NOW + timedelta(hours=2))
    _offer(engine, ws, key, starts, **kw)


def quarter(day: int, hour: int, minute: int = 0) -> datetime:
    """``hour:minute`` UTC on the ``day``-th day after NOW's date."""
    return datetime(2026, 3, 10, hour, minute, tzinfo=UTC) + timedelta(days=day)


def cal(report: Any, ws: str) -> dict[str, dict[str, Any]]:
    return {c["calendar_key"]: c for c in report.workspace(ws).as_dict()["calendars"]}


# ------------------------------------------------------------------------------------------ pure maths


@pytest.mark.parametrize(("booked", "available", "expected"), [
    (0, 0, None), (5, 15, 0.25), (1, 0, 1.0), (0, 7, 0.0), (-3, 1, None), (3, -1, 1.0)])
def test_booked_pct_clamped_and_null_when_nothing(booked: int, available: int, expected: float | None) -> None:
    assert booked_pct(booked, available) == expected


@pytest.mark.parametrize(("asked", "used"), [(None, 30), (0, 1), (-5, 1), (1, 1), (30, 30), (90, 90), (91, 90),
                                             (10_000, 90)])
def test_window_clamped_to_1_90(asked: int | None, used: int) -> None:
    assert clamp_window_days(asked) == used
    start, end, n = capacity_window(NOW, asked)
    assert (start, end, n) == (NOW, NOW + timedelta(days=used), used)


def test_window_refuses_naive_now_and_non_integers() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        capacity_window(datetime(2026, 3, 10), 30)
    with pytest.raises(TypeError):
        clamp_window_days(True)
    with pytest.raises(TypeError):
        clamp_window_days("30")  # type: ignore[arg-type]


def test_window_dates_touch_every_utc_day() -> None:
    assert len(window_dates(NOW, END)) == 31
    midnight = datetime(2026, 3, 10, tzinfo=UTC)
    assert window_dates(midnight, midnight + timedelta(days=2)) == [date(2026, 3, 10), date(2026, 3, 11)]


def test_slot_lists_drop_unparseable_and_count_duplicates_once() -> None:
    # the original's pinned case (peer test C4), plus duplicates written with another offset and non-strings
    start, end = datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 2, 12, tzinfo=UTC)
    got = slot_starts_in_window(["not-a-date", "2026-02-09T23:00:00Z", "2026-02-10T00:00:00Z",
                                 "2026-02-11T12:00:00Z", "2026-02-12T00:00:00Z", "2026-02-11T13:00:00+01:00",
                                 "2026-02-11T12:00:00.000Z", "", None, 42, {"startTime": "x"},
                                 datetime(2026, 2, 11, 6), datetime(2026, 2, 11, 7, tzinfo=UTC)], start, end)
    assert got == [start, datetime(2026, 2, 11, 7, tzinfo=UTC), datetime(2026, 2, 11, 12, tzinfo=UTC)]


# ------------------------------------------------------------------------------------------ the rule in SQL


def test_window_edges_start_inclusive_end_exclusive(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A)
    for start in (NOW - US, NOW, END - US, END, None):
        book(db, "ws", start, calendar=CAL_A)
    offer(db, "ws", CAL_A, [NOW - timedelta(minutes=15), NOW, END - timedelta(minutes=15), END])
    report = read_capacity(db, ["ws"], days=30, now=NOW)
    assert (report.window_start, report.window_end, report.window_days) == (NOW, END, 30)
    a = cal(report, "ws")[CAL_A]
    assert (a["booked_slots"], a["available_slots"], a["total_slots"], a["booked_pct"]) == (2, 2, 4, 0.5)
    total = report.workspace("ws").total
    assert (total.booked_slots, total.available_slots, total.unattributed_booked_slots) == (2, 2, 0)


def test_per_calendar_counts_only_its_rows_total_counts_every_confirmed_row(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A, direct=CAL_B)
    t = quarter(2, 15)
    for _ in range(2):
        book(db, "ws", t, calendar=CAL_A)
    book(db, "ws", t, calendar=CAL_B)
    book(db, "ws", t, calendar="cal_other")          # another calendar of the location: unattributed
    book(db, "ws", t, calendar=None)                 # not backfilled yet: unattributed
    book(db, "ws", t, provider="CALENDLY", calendar=CAL_A)  # the other provider, same key text: unattributed
    for status in ("CANCELED", "RESCHEDULED", "SHOWED", "NO_SHOW"):
        book(db, "ws", t, status=status, calendar=CAL_A)  # only CONFIRMED counts
    offer(db, "ws", CAL_A, [quarter(3, 9)])
    offer(db, "ws", CAL_B, [quarter(3, 10)], source="DIRECT_BOOK")
    report = read_capacity(db, ["ws"], now=NOW)
    by_key = cal(report, "ws")
    assert list(by_key) == [CAL_A, CAL_B]  # DEFAULT first
    assert [(c["availability_source"], c["provider"]) for c in by_key.values()] == [("DEFAULT", "GHL"),
                                                                                   ("DIRECT_BOOK", "GHL")]
    assert (by_key[CAL_A]["booked_slots"], by_key[CAL_B]["booked_slots"]) == (2, 1)
    total = report.workspace("ws").total.as_dict()
    assert total == {"booked_slots": 6, "available_slots": 2, "total_slots": 8, "booked_pct": 0.75,
                     "unattributed_booked_slots": 3}


def test_slot_offered_by_both_calendars_counts_once_in_the_total(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A, direct=CAL_B)
    s1, s2, s3, s4 = (quarter(1, 9, m) for m in (0, 15, 30, 45))
    offer(db, "ws", CAL_A, [s1, s2, s3])
    offer(db, "ws", CAL_B, [s2, s3, s4], source="DIRECT_BOOK")
    book(db, "ws", quarter(1, 11), calendar=CAL_A)
    report = read_capacity(db, ["ws"], now=NOW)
    by_key = cal(report, "ws")
    assert (by_key[CAL_A]["available_slots"], by_key[CAL_B]["available_slots"]) == (3, 3)
    total = report.workspace("ws").total
    assert (total.available_slots, total.booked_slots, total.booked_pct) == (4, 1, 1 / 5)
    day_total = [d for d in report.workspace("ws").days if d.calendar_key == "*" and d.day == date(2026, 3, 11)]
    assert [(d.booked_slots, d.available_slots) for d in day_total] == [(1, 4)]


def test_the_originals_total_is_not_reproduced(db: sa.Engine) -> None:
    """docs/original-system.md §11.2: the original added both caches' slots (no de-dup) and its invariant was
    combined total = Σ breakdown totals + unattributed; with shared slots ours is smaller, by the shared ones."""
    workspace(db, "ws", default=CAL_A, direct=CAL_B)
    shared = [quarter(4, h) for h in (9, 10, 11)]
    offer(db, "ws", CAL_A, [*shared, quarter(4, 12)])
    offer(db, "ws", CAL_B, [*shared, quarter(4, 13)], source="DIRECT_BOOK")
    book(db, "ws", quarter(4, 14), calendar=CAL_A)
    book(db, "ws", quarter(4, 15), calendar="cal_other")
    ws = read_capacity(db, ["ws"], now=NOW).workspace("ws")
    original_available = sum(c.available_slots for c in ws.calendars)           # 8
    original_total = sum(c.total_slots for c in ws.calendars) + ws.total.unattributed_booked_slots  # 10
    assert original_available == 8 and ws.total.available_slots == 5
    assert ws.total.total_slots == 7 != original_total
    assert ws.total.booked_pct == 2 / 7 != 2 / 10


def test_direct_book_equal_to_default_is_listed_once(db: sa.Engine) -> None:
    workspace(db, "ws", default=" cal_a ", direct="cal_a")
    offer(db, "ws", CAL_A, [quarter(1, 9)])
    book(db, "ws", quarter(1, 10), calendar=CAL_A)
    ws = read_capacity(db, ["ws"], now=NOW).workspace("ws")
    assert [(c.calendar_key, c.availability_source, c.booked_slots, c.available_slots) for c in ws.calendars] == [
        (CAL_A, "DEFAULT", 1, 1)]
    assert ws.total.unattributed_booked_slots == 0


def test_calendly_workspace_uses_event_type_uris(db: sa.Engine) -> None:
    intro, direct = EVT + "intro", EVT + "direct"
    workspace(db, "cw", provider="CALENDLY", default=intro, direct=direct)
    book(db, "cw", quarter(2, 9), provider="CALENDLY", calendar=intro)
    book(db, "cw", quarter(2, 9), provider="CALENDLY", calendar=direct)
    book(db, "cw", quarter(2, 9), provider="GHL", calendar=intro)
    offer(db, "cw", intro, [quarter(2, 10)], provider="CALENDLY")
    ws = read_capacity(db, ["cw"], now=NOW).workspace("cw")
    assert [(c.calendar_key, c.provider, c.booked_slots, c.available_slots) for c in ws.calendars] == [
        (intro, "CALENDLY", 1, 1), (direct, "CALENDLY", 1, 0)]
    assert (ws.total.booked_slots, ws.total.unattributed_booked_slots) == (3, 1)


def test_workspace_without_calendars_is_reported_not_a_crash(db: sa.Engine) -> None:
    workspace(db, "bare")
    book(db, "bare", quarter(1, 9))
    book(db, "bare", quarter(1, 10), calendar="cal_x")
    ws = read_capacity(db, ["bare"], now=NOW).workspace("bare")
    assert ws.calendars == () and not ws.has_calendars
    assert ws.total.as_dict() == {"booked_slots": 2, "available_slots": 0, "total_slots": 2, "booked_pct": 1.0,
                                  "unattributed_booked_slots": 2}
    assert {d.calendar_key for d in ws.days} == {"*"} and len(ws.days) == 31


def test_null_when_nothing_booked_or_free(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A)
    offer(db, "ws", CAL_A, [])
    book(db, "ws", NOW - timedelta(days=1), calendar=CAL_A)  # outside the window
    ws = read_capacity(db, ["ws"], now=NOW).workspace("ws")
    assert ws.calendars[0].as_dict()["booked_pct"] is None
    assert ws.total.as_dict() == {"booked_slots": 0, "available_slots": 0, "total_slots": 0, "booked_pct": None,
                                  "unattributed_booked_slots": 0}
    assert not ws.stale


@pytest.mark.parametrize(("asked", "used"), [(0, 1), (-1, 1), (91, 90), (None, 30), (7, 7)])
def test_clamped_window(db: sa.Engine, asked: int | None, used: int) -> None:
    workspace(db, "ws", default=CAL_A)
    offer(db, "ws", CAL_A, [NOW + timedelta(days=d, minutes=1) for d in (0, 1, 6, 7, 29, 30, 89, 90)])
    report = read_capacity(db, ["ws"], days=asked, now=NOW)
    assert (report.window_days, report.window_end) == (used, NOW + timedelta(days=used))
    assert report.workspace("ws").calendars[0].available_slots == {1: 1, 7: 3, 30: 5, 90: 7}[used]
    assert len({d.day for d in report.workspace("ws").days}) == used + 1


def test_stale_and_failed_availability_flagged(db: sa.Engine) -> None:
    workspace(db, "fresh", default=CAL_A)
    offer(db, "fresh", CAL_A, [quarter(1, 9)])
    workspace(db, "stale", default=CAL_A)
    offer(db, "stale", CAL_A, [quarter(1, 9)], fetched_at=NOW - timedelta(hours=3), stale_at=NOW - timedelta(hours=1))
    workspace(db, "at_edge", default=CAL_A)
    offer(db, "at_edge", CAL_A, [quarter(1, 9)], stale_at=NOW)
    workspace(db, "failed", default=CAL_A, direct=CAL_B)  # the last refresh failed, the previous slots kept
    offer(db, "failed", CAL_A, [quarter(1, 9), quarter(1, 10)], last_error="GHL 503 Service Unavailable")
    offer(db, "failed", CAL_B, [quarter(1, 9)], source="DIRECT_BOOK")
    workspace(db, "never", default=CAL_A)
    workspace(db, "never_ok", default=CAL_A)  # a status row, no success yet
    offer(db, "never_ok", CAL_A, [], last_error="token revoked (401)")
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE calendar_availability_status SET fetched_at = NULL, stale_at = NULL "
                             "WHERE workspace_id = 'never_ok'"))
    workspace(db, "no_status", default=CAL_A)  # slots without a status row: their own stale_at counts
    offer(db, "no_status", CAL_A, [quarter(1, 9)], status=False)
    report = read_capacity(db, ["fresh", "stale", "at_edge", "failed", "never", "never_ok", "no_status"], now=NOW)
    state = {(w.workspace_id, c.calendar_key): (c.stale, c.last_error, c.available_slots)
             for w in report.workspaces for c in w.calendars}
    assert state == {
        ("fresh", CAL_A): (False, None, 1),
        ("stale", CAL_A): (True, None, 1),
        ("at_edge", CAL_A): (True, None, 1),
        ("failed", CAL_A): (False, "GHL 503 Service Unavailable", 2),
        ("failed", CAL_B): (False, None, 1),
        ("never", CAL_A): (True, NEVER_FETCHED, 0),
        ("never_ok", CAL_A): (True, "token revoked (401)", 0),
        ("no_status", CAL_A): (False, None, 1),
    }
    assert [w.workspace_id for w in report.workspaces if w.stale] == ["at_edge", "never", "never_ok", "stale"]
    assert [c.calendar_key for c in report.workspace("failed").failed] == [CAL_A]


def test_slots_of_unconfigured_calendars_and_sources_are_not_counted(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A)
    offer(db, "ws", CAL_A, [quarter(1, 9)])
    offer(db, "ws", CAL_A, [quarter(1, 10)], source="DIRECT_BOOK")   # the key under another source
    offer(db, "ws", "cal_old", [quarter(1, 11)])                      # a calendar no longer configured
    offer(db, "ws", CAL_A, [quarter(1, 12)], provider="CALENDLY")    # another provider
    workspace(db, "other", default=CAL_A)
    offer(db, "other", CAL_A, [quarter(1, 13), quarter(1, 14)])       # another workspace
    ws = read_capacity(db, ["ws"], now=NOW).workspace("ws")
    assert (ws.calendars[0].available_slots, ws.total.available_slots) == (1, 1)


def test_per_day_rows_cover_the_window_and_add_up(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A, direct=CAL_B)
    offer(db, "ws", CAL_A, [quarter(0, 10), quarter(0, 11), quarter(5, 9)])
    offer(db, "ws", CAL_B, [quarter(0, 11), quarter(30, 9)], source="DIRECT_BOOK")  # day 30, 09:00 < END 09:30
    book(db, "ws", quarter(0, 12), calendar=CAL_A)
    book(db, "ws", quarter(5, 12), calendar=None)
    ws = read_capacity(db, ["ws"], now=NOW).workspace("ws")
    assert len(ws.days) == 31 * 3
    assert [d.day for d in ws.days[:3]] == [date(2026, 3, 10)] * 3
    assert [d.calendar_key for d in ws.days[:3]] == [CAL_A, CAL_B, "*"]
    nonzero = {(d.day.isoformat(), d.calendar_key): (d.booked_slots, d.available_slots) for d in ws.days
               if d.booked_slots or d.available_slots}
    assert nonzero == {
        ("2026-03-10", CAL_A): (1, 2), ("2026-03-10", CAL_B): (0, 1), ("2026-03-10", "*"): (1, 2),
        ("2026-03-15", CAL_A): (0, 1), ("2026-03-15", "*"): (1, 1),
        ("2026-04-09", CAL_B): (0, 1), ("2026-04-09", "*"): (0, 1),
    }
    for c in ws.calendars:
        assert sum(d.booked_slots for d in ws.days_of(c.calendar_key)) == c.booked_slots
        assert sum(d.available_slots for d in ws.days_of(c.calendar_key)) == c.available_slots
    assert sum(d.available_slots for d in ws.days_of("*")) == ws.total.available_slots == 4
    assert sum(d.booked_slots for d in ws.days_of("*")) == ws.total.booked_slots == 2


def test_many_workspaces_in_one_statement_equal_one_at_a_time(db: sa.Engine) -> None:
    for i, ws in enumerate(("w1", "w2", "w3")):
        workspace(db, ws, default=CAL_A, direct=CAL_B if i else None)
        offer(db, ws, CAL_A, [quarter(1, 9 + j) for j in range(i + 1)])
        for _ in range(i):
            book(db, ws, quarter(2, 9), calendar=CAL_A)
    together = read_capacity(db, ["w3", "w1", "w2", "w1"], now=NOW)
    assert [w.workspace_id for w in together.workspaces] == ["w1", "w2", "w3"]
    for ws in together.workspaces:
        assert read_capacity(db, [ws.workspace_id], now=NOW).workspaces == (ws,)


def test_unknown_workspace_is_refused_and_nothing_is_written(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A)
    with pytest.raises(UnknownWorkspaceError, match="'nope'") as err:
        store_capacity(db, ["ws", "nope"], now=NOW)
    assert err.value.workspace_ids == ("nope",)
    assert rows(db, "SELECT count(*) FROM calendar_capacity")[0][0] == 0
    with pytest.raises(UnknownWorkspaceError):
        read_capacity(db, ["nul\x00"], now=NOW)


def test_configured_keys_in_sql_match_the_domain_rule(db: sa.Engine) -> None:
    cases = [("GHL", None, None), ("GHL", "a", None), ("GHL", None, "b"), ("GHL", "a", "b"), ("GHL", "a", "a"),
             ("GHL", " a\t", "a"), ("GHL", "  ", "b"), ("GHL", "", ""), ("CALENDLY", EVT + "x", EVT + "y"),
             ("CALENDLY", EVT + "x", f" {EVT}x\n"), ("CALENDLY", None, EVT + "y")]
    for i, (provider, default, direct) in enumerate(cases):
        workspace(db, f"k{i}", provider=provider, default=default, direct=direct)
    report = read_capacity(db, [f"k{i}" for i in range(len(cases))], now=NOW)
    ws_rows = {r.id: r._mapping for r in rows(db, "SELECT * FROM workspaces")}
    for ws in report.workspaces:
        expected = [(r.calendar_key, r.provider.value, r.availability_source.value)
                    for r in configured_calendars(ws_rows[ws.workspace_id])]
        assert [(c.calendar_key, c.provider, c.availability_source) for c in ws.calendars] == expected


# ------------------------------------------------------------------------------------------ what is stored


def _stored(engine: sa.Engine, ws: str, days: int = 30) -> dict[str, tuple[Any, ...]]:
    return {r.calendar_key: (r.provider, r.availability_source, r.booked_slots, r.available_slots, r.total_slots,
                             r.booked_pct, r.unattributed_booked_slots, r.stale, r.last_error, r.window_start,
                             r.window_end)
            for r in rows(engine, "SELECT * FROM calendar_capacity WHERE workspace_id = :ws AND window_days = :d",
                          ws=ws, d=days)}


def test_stored_rows_equal_the_report_and_rerun_is_idempotent(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A, direct=CAL_B)
    offer(db, "ws", CAL_A, [quarter(1, 9), quarter(1, 10)], last_error="Calendly 500")
    offer(db, "ws", CAL_B, [quarter(1, 10)], source="DIRECT_BOOK", stale_at=NOW - US)
    book(db, "ws", quarter(1, 11), calendar=CAL_A)
    book(db, "ws", quarter(1, 12))
    report = store_capacity(db, ["ws"], now=NOW)
    assert report == read_capacity(db, ["ws"], now=NOW)
    ws = report.workspace("ws")
    expected = {c.calendar_key: (c.provider, c.availability_source, c.booked_slots, c.available_slots, c.total_slots,
                                 c.booked_pct, 0, c.stale, c.last_error, NOW, END) for c in ws.calendars}
    expected["*"] = (None, None, ws.total.booked_slots, ws.total.available_slots, ws.total.total_slots,
                     ws.total.booked_pct, ws.total.unattributed_booked_slots, True, None, NOW, END)
    assert _stored(db, "ws") == expected
    assert expected["*"][2:7] == (2, 2, 4, 0.5, 1)
    stored_days = rows(db, "SELECT calendar_key, day, booked_slots, available_slots FROM calendar_capacity_days "
                           "WHERE workspace_id = 'ws' ORDER BY day, calendar_key")
    assert sorted((d.calendar_key, d.day, d.booked_slots, d.available_slots) for d in ws.days) == sorted(
        tuple(r) for r in stored_days)
    before = rows(db, "SELECT count(*), sum(booked_slots) FROM calendar_capacity_days")[0]
    assert store_capacity(db, ["ws"], now=NOW) == report
    assert rows(db, "SELECT count(*), sum(booked_slots) FROM calendar_capacity_days")[0] == before
    assert _stored(db, "ws") == expected


def test_store_drops_keys_and_days_no_longer_in_the_window(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A, direct=CAL_B)
    store_capacity(db, ["ws"], days=7, now=NOW)
    store_capacity(db, ["ws"], days=30, now=NOW)
    assert set(_stored(db, "ws", 7)) == {CAL_A, CAL_B, "*"}
    set_workspace(db, "ws", {"ghl_direct_book_calendar_id": ""})  # direct-book calendar removed
    later = NOW + timedelta(days=2)
    store_capacity(db, ["ws"], days=7, now=later)
    assert set(_stored(db, "ws", 7)) == {CAL_A, "*"}
    assert set(_stored(db, "ws", 30)) == {CAL_A, CAL_B, "*"}  # another window is its own row set
    days = rows(db, "SELECT DISTINCT calendar_key, min(day) OVER (), max(day) OVER (), count(*) OVER () "
                    "FROM calendar_capacity_days WHERE workspace_id = 'ws' AND window_days = 7")
    assert {r[0] for r in days} == {CAL_A, "*"}
    assert (days[0][1], days[0][2], days[0][3]) == (date(2026, 3, 12), date(2026, 3, 19), 16)


def test_store_on_a_connection_joins_the_callers_transaction(db: sa.Engine) -> None:
    workspace(db, "ws", default=CAL_A)
    with db.connect() as conn:
        store_capacity(conn, ["ws"], now=NOW)
        conn.rollback()
    assert rows(db, "SELECT count(*) FROM calendar_capacity")[0][0] == 0


# ------------------------------------------------------------------------------------------ Dagster


def _materialize(database_url: str, job_name: str, partition: str | None, workspaces: list[str]) -> Any:
    import dagster as dg

    from appt_pipeline.defs.capacity import calendar_capacity, capacity_job, capacity_overview, capacity_overview_job
    from appt_pipeline.defs.partitions import workspace_partitions
    from appt_pipeline.defs.resources import AppDatabase

    defs = dg.Definitions(assets=[calendar_capacity, capacity_overview], jobs=[capacity_job, capacity_overview_job],
                          resources={"app_db": AppDatabase(url=database_url)})
    job = defs.resolve_job_def(job_name)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, workspaces)
        result = job.execute_in_process(partition_key=partition, instance=instance)
        assert result.success
        return result


def _live_case(engine: sa.Engine) -> datetime:
    """A workspace whose numbers do not depend on the date: slots and bookings a few hours after now."""
    from appt_pipeline.domain.rules import utc_now

    now = utc_now().replace(microsecond=0)
    soon = [now + timedelta(hours=h) for h in (2, 3, 4, 5)]
    workspace(engine, "live", default=CAL_A, direct=CAL_B)
    offer(engine, "live", CAL_A, soon[:3], fetched_at=now, stale_at=now + timedelta(hours=2))
    offer(engine, "live", CAL_B, soon[1:], source="DIRECT_BOOK", fetched_at=now - timedelta(hours=5),
          stale_at=now - timedelta(hours=3), last_error="GHL 502 Bad Gateway")
    book(engine, "live", now + timedelta(hours=6), calendar=CAL_A)
    book(engine, "live", now + timedelta(hours=6), calendar=None)
    workspace(engine, "bare")
    book(engine, "bare", now + timedelta(hours=6))
    return now


def test_asset_metadata_is_the_reports_numbers_and_the_check_warns(db: sa.Engine, database_url: str) -> None:
    import base64

    import dagster as dg

    _live_case(db)
    result = _materialize(database_url, "capacity_job", "live", ["live", "bare"])
    [event] = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}
    report = meta["report"]
    start = datetime.fromisoformat(report["window_start"])
    assert report == read_capacity(db, ["live"], days=30, now=start).as_dict()  # same numbers as the CLI/API
    ws = report["workspaces"][0]
    assert ws["total"] == {"booked_slots": 2, "available_slots": 4, "total_slots": 6, "booked_pct": 2 / 6,
                           "unattributed_booked_slots": 1}
    assert (meta["booked_pct"], meta["available_slots"], meta["booked_slots"]) == (2 / 6, 4, 2)
    table = meta["capacity"]
    assert [c.name for c in table.schema.columns][:3] == ["calendar_key", "provider", "availability_source"]
    records = [r.data for r in table.records]
    assert [r["calendar_key"] for r in records] == [CAL_A, CAL_B, "*"]
    for record, item in zip(records, [*ws["calendars"], None], strict=True):
        expected = item or {**ws["total"], "calendar_key": "*", "stale": True}
        assert {k: record[k] for k in expected if k in record} == {k: v for k, v in expected.items() if k in record}
    assert records[1]["stale"] is True and records[1]["last_error"] == "GHL 502 Bad Gateway"
    assert records[2]["unattributed_booked_slots"] == 1
    chart = meta["per_day_chart"]
    assert chart.startswith("![") and "](data:image/png;base64," in chart
    png = base64.b64decode(chart.split("base64,", 1)[1].rstrip(")"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == ("capacity_availability_fresh", False,
                                                                dg.AssetCheckSeverity.WARN)
    assert check.metadata["stale_or_failed"].value == 1
    stored = _stored(db, "live")
    assert stored["*"][2:7] == (2, 4, 6, 2 / 6, 1)


def test_asset_check_passes_when_fresh_and_warns_without_calendars(db: sa.Engine, database_url: str) -> None:
    now = _live_case(db)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE calendar_availability_status SET last_error = NULL, stale_at = :t"),
                     {"t": now + timedelta(hours=1)})
    [fresh] = _materialize(database_url, "capacity_job", "live", ["live", "bare"]).get_asset_check_evaluations()
    assert fresh.passed
    result = _materialize(database_url, "capacity_job", "bare", ["live", "bare"])
    [bare] = result.get_asset_check_evaluations()
    assert not bare.passed and bare.metadata["reason"].value == "no configured calendar"
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["report"].value["workspaces"][0]["calendars"] == []
    assert meta["booked_pct"].value == 1.0


def test_capacity_overview_sorts_every_workspace_by_booked_pct(db: sa.Engine, database_url: str) -> None:
    _live_case(db)
    store_capacity(db, ["live", "bare"], days=30, now=NOW)  # NOW is before the live data: only the stored rows count
    for ws in ("live", "bare"):
        _materialize(database_url, "capacity_job", ws, ["live", "bare"])
    result = _materialize(database_url, "capacity_overview_job", None, ["live", "bare"])
    frame = result.output_for_node("capacity_overview")
    assert list(zip(frame["workspace_id"], frame["calendar_key"], strict=True)) == [
        ("bare", "*"), ("live", "*"), ("live", CAL_A), ("live", CAL_B)]
    assert list(frame["booked_pct"]) == [1.0, 2 / 6, 1 / 4, 0.0]
    assert set(frame["window_days"]) == {30} and frame["window_start"].min() > NOW  # the assets' rows won
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["workspaces"].value == 2 and len(meta["overview"].value.records) == 4
    assert meta["overview"].value.records[0].data["calendar_key"] == "*"
