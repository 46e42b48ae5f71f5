"""Availability refresh (docs/rules.md §9) against the provider simulators over loopback and the real database.

The clock is fixed (``NOW``, a Monday in 2031, also the simulators' clock), so free slots never depend on
the wall-clock date.
"""

import itertools
import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from appt_pipeline.defs.availability import (
    availability_job,
    availability_schedule,
    calendar_availability,
    refresh_cron,
    refresh_minutes,
)
from appt_pipeline.defs.capacity import capacity_after_availability_sensor
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.domain.calendars import CalendarRef, booking_calendar
from appt_pipeline.domain.vocab import AvailabilitySource, Provider
from appt_pipeline.pipelines.accounts import WorkspaceNotConfigured
from appt_pipeline.pipelines.availability import (
    NOT_ATTEMPTED,
    AvailabilityReport,
    refresh_availability,
)
from appt_pipeline.pipelines.clients import ClientOptions
from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlySeed,
    CalendlySimulator,
    CalendlyUser,
    GhlAppointment,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
    GhlSimulator,
    SimulatorError,
    SimulatorServer,
)
from appt_pipeline.store.availability import (
    availability_status,
    record_refresh_failure,
    replace_calendar_slots,
    stored_free_slots,
)
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers import QUICK_RETRY, SECRET_KEY, rows

NOW = datetime(2031, 3, 3, 6, 0, tzinfo=UTC)  # a Monday, 06:00 UTC (before working hours)
OPTIONS = ClientOptions(retry=QUICK_RETRY, timeout_s=5.0)
WS = "ws_av"
API = "https://api.calendly.com"
INTRO = f"{API}/event_types/11111111-1111-1111-1111-1111111111b1"
DIRECT = f"{API}/event_types/22222222-2222-2222-2222-2222222222b2"
ORG_ID = "0000aaaa-0000-0000-0000-0000000000b1"
DEFAULT = CalendarRef(Provider.GHL, "cal_a", AvailabilitySource.DEFAULT)
DIRECT_BOOK = CalendarRef(Provider.GHL, "cal_b", AvailabilitySource.DIRECT_BOOK)


def _clock() -> datetime:
    return NOW


@pytest.fixture()
def ghl() -> Iterator[tuple[GhlSimulator, str]]:
    seed = GhlSeed(locations=[GhlLocation(
        id="loc1", token="tok-ghl-1", timezone="UTC",
        calendars=[GhlCalendar(id="cal_a"), GhlCalendar(id="cal_b", name="Direct")],
        contacts=[GhlContact(email="a@example.com", id="c_a")],
        appointments=[GhlAppointment(id="g1", calendar_id="cal_a", contact_id="c_a", start=NOW.replace(hour=10))],
    )])
    sim = GhlSimulator(seed, clock=_clock)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


@pytest.fixture()
def calendly() -> Iterator[tuple[CalendlySimulator, str]]:
    user = CalendlyUser(token="tok-cal-1", email="rep@example.com", uuid="33333333-3333-3333-3333-3333333333b3",
                        organization=ORG_ID, timezone="UTC", event_types=[
                            CalendlyEventType(name="Intro", slug="intro", uuid=INTRO.rsplit("/", 1)[1]),
                            CalendlyEventType(name="Direct", slug="direct", uuid=DIRECT.rsplit("/", 1)[1]),
                        ])
    sim = CalendlySimulator(CalendlySeed(users=[user]), clock=_clock)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _ghl_workspace(engine: sa.Engine, url: str, *, ws: str = WS, direct: str | None = "cal_b",
                   token: str = "tok-ghl-1") -> None:
    set_workspace(engine, ws, {"meeting_booking_provider": "GHL", "timezone": "UTC", "ghl_location_id": "loc1",
                               "ghl_api_base_url": url, "ghl_default_calendar_id": "cal_a",
                               "ghl_direct_book_calendar_id": direct})
    set_secret(engine, ws, "ghl_private_token", token, SECRET_KEY)


def _calendly_workspace(engine: sa.Engine, url: str, *, direct: str | None = DIRECT) -> None:
    set_workspace(engine, WS, {"meeting_booking_provider": "CALENDLY", "timezone": "UTC",
                               "calendly_organization_uri": f"{API}/organizations/{ORG_ID}",
                               "calendly_user_uri": f"{API}/users/33333333-3333-3333-3333-3333333333b3",
                               "calendly_api_base_url": url, "calendly_event_type_uri": INTRO,
                               "calendly_direct_book_event_type_uri": direct})
    set_secret(engine, WS, "calendly_access_token", "tok-cal-1", SECRET_KEY)


def _refresh(engine: sa.Engine, now: datetime = NOW, **kw: Any) -> AvailabilityReport:
    return refresh_availability(engine, kw.pop("ws", WS), now=now, secret_key=SECRET_KEY, options=OPTIONS, **kw)


def _stored(engine: sa.Engine, calendar: CalendarRef, now: datetime = NOW) -> Any:
    with engine.connect() as conn:
        return stored_free_slots(conn, WS, calendar, now=now)


def _requests(sim: GhlSimulator | CalendlySimulator, prefix: str) -> list[Any]:
    return [r for r in sim.accounting.log if r.path.startswith(prefix)]


def test_ghl_slots_stored_then_replaced(db: sa.Engine, ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    _ghl_workspace(db, url)
    report = _refresh(db)
    assert [c.ok for c in report.calendars] == [True, True] and report.failed == 0
    expected = sim.free_slots("cal_a", NOW, NOW + timedelta(days=30))
    stored = _stored(db, DEFAULT)
    assert stored.slots == expected and len(expected) > 100 and not stored.stale
    assert stored.fetched_at == NOW and stored.stale_at == NOW + timedelta(hours=2)
    assert NOW.replace(hour=10) not in stored.slots  # booked in the simulator
    assert _stored(db, DIRECT_BOOK).slots == sim.free_slots("cal_b", NOW, NOW + timedelta(days=30))
    with db.connect() as conn:
        status = availability_status(conn, WS, DEFAULT)
    assert status is not None and status.slot_count == len(expected) and status.last_error is None

    # a booking at the provider: the next refresh replaces the slots, the booked one is gone
    slot = expected[3]
    sim.book("cal_a", slot, contact_id="c_a")
    later = NOW + timedelta(hours=1)
    assert _refresh(db, later).refreshed == 2
    again = _stored(db, DEFAULT, later)
    assert slot not in again.slots and len(again.slots) == len([s for s in expected if s >= later]) - 1
    assert rows(db, "SELECT count(*) FROM calendar_availability WHERE calendar_key = 'cal_a' "
                "AND slot_start = :s", s=slot)[0][0] == 0


def _ranges(sim: GhlSimulator | CalendlySimulator, prefix: str, lo: str, hi: str) -> list[tuple[datetime, datetime]]:
    out = []
    for record in _requests(sim, prefix):
        params = dict(urllib.parse.parse_qsl(record.query))
        if lo == "startDate":
            out.append((datetime.fromtimestamp(int(params[lo]) / 1000, UTC),
                        datetime.fromtimestamp(int(params[hi]) / 1000, UTC)))
        else:
            out.append((datetime.fromisoformat(params[lo]), datetime.fromisoformat(params[hi])))
    return sorted(out)


def test_ghl_ranges_of_at_most_31_days_at_the_simulator(db: sa.Engine, ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    _ghl_workspace(db, url, direct=None)
    report = _refresh(db, days=70)
    assert report.calendars[0].ok and report.calendars[0].requests == 3
    ranges = _ranges(sim, "/calendars/cal_a/free-slots", "startDate", "endDate")
    assert len(ranges) == 3 and all(hi - lo <= timedelta(days=31) for lo, hi in ranges)
    assert ranges[0][0] == NOW and ranges[-1][1] == NOW + timedelta(days=70)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous, no gap, no overlap
    assert _stored(db, DEFAULT).slots == sim.free_slots("cal_a", NOW, NOW + timedelta(days=70))


def test_calendly_ranges_of_at_most_7_days_and_bookings_remove_slots(
    db: sa.Engine, calendly: tuple[CalendlySimulator, str]
) -> None:
    sim, url = calendly
    _calendly_workspace(db, url)
    report = _refresh(db)
    assert [c.ok for c in report.calendars] == [True, True]
    assert [c.requests for c in report.calendars] == [5, 5]  # 30 days in ≤ 7-day ranges
    ranges = _ranges(sim, "/event_type_available_times", "start_time", "end_time")
    assert len(ranges) == 10 and all(hi - lo <= timedelta(days=7) for lo, hi in ranges)
    intro = CalendarRef(Provider.CALENDLY, INTRO, AvailabilitySource.DEFAULT)
    slots = _stored(db, intro).slots
    assert slots == sim.available_times(INTRO, NOW, NOW + timedelta(days=30)) and len(slots) > 100

    booked = slots[5]
    sim.book(INTRO, booked, "lead@example.com", name="Lead")
    assert booked not in sim.available_times(INTRO, NOW, NOW + timedelta(days=30))
    later = NOW + timedelta(minutes=30)
    assert _refresh(db, later).refreshed == 2
    assert booked not in _stored(db, intro, later).slots


def test_default_and_direct_book_the_same_calendar_fetched_once(
    db: sa.Engine, ghl: tuple[GhlSimulator, str]
) -> None:
    sim, url = ghl
    _ghl_workspace(db, url, direct="cal_a")
    report = _refresh(db)
    assert [(c.calendar, c.ok) for c in report.calendars] == [(DEFAULT, True)]
    assert len(_requests(sim, "/calendars/")) == 1
    assert rows(db, "SELECT calendar_key, availability_source::text FROM calendar_availability_status") == [
        ("cal_a", "DEFAULT")]


def test_one_calendar_failing_keeps_its_slots_and_the_other_refreshes(
    db: sa.Engine, ghl: tuple[GhlSimulator, str]
) -> None:
    sim, url = ghl
    _ghl_workspace(db, url)
    _refresh(db)
    before_b = _stored(db, DIRECT_BOOK).slots
    sim.fail_free_slots("not_found", "cal_b")
    sim.book("cal_a", before_b[0], contact_id="c_a")  # cal_a changes at the provider
    later = NOW + timedelta(minutes=90)
    report = _refresh(db, later)
    a, b = report.calendars
    assert a.ok and not b.ok and b.error_kind == "not_found" and "404" in (b.error or "")
    assert report.refreshed == 1 and report.failed == 1
    kept = _stored(db, DIRECT_BOOK, later)
    assert kept.slots == [s for s in before_b if s >= later] and kept.last_error == b.error
    assert kept.fetched_at == NOW and not kept.stale  # stale only from NOW + 2 h
    assert _stored(db, DIRECT_BOOK, NOW + timedelta(hours=2)).stale
    fresh = _stored(db, DEFAULT, later)
    assert fresh.fetched_at == later and fresh.last_error is None and before_b[0] not in fresh.slots
    assert rows(db, "SELECT count(*) FROM calendar_availability WHERE calendar_key = 'cal_b' "
                "AND last_error IS NOT NULL")[0][0] == len(before_b)

    # the calendar recovers: the next refresh replaces its slots and clears the error
    sim.faults.clear()
    assert _refresh(db, later + timedelta(minutes=1)).refreshed == 2
    assert _stored(db, DIRECT_BOOK, later).last_error is None


@pytest.mark.parametrize("mode", ["garbage", "unparseable", "error_200"])
def test_ghl_garbage_answer_keeps_previous_slots(db: sa.Engine, ghl: tuple[GhlSimulator, str], mode: str) -> None:
    sim, url = ghl
    _ghl_workspace(db, url, direct=None)
    _refresh(db)
    before = _stored(db, DEFAULT).slots
    sim.fail_free_slots(mode, "cal_a")
    report = _refresh(db, NOW + timedelta(minutes=5))
    result = report.calendars[0]
    assert not result.ok and result.error_kind == "bad_response" and result.requests == 1
    assert {"garbage": "not an object", "unparseable": "2 unparseable slot time",
            "error_200": "error body in a 2xx answer: Calendar is not ready"}[mode] in (result.error or "")
    stored = _stored(db, DEFAULT)
    assert stored.slots == before and stored.fetched_at == NOW and stored.last_error == result.error


@pytest.mark.parametrize("mode", ["garbage", "unparseable", "error_200"])
def test_calendly_garbage_answer_keeps_previous_slots(
    db: sa.Engine, calendly: tuple[CalendlySimulator, str], mode: str
) -> None:
    sim, url = calendly
    _calendly_workspace(db, url, direct=None)
    _refresh(db)
    intro = CalendarRef(Provider.CALENDLY, INTRO, AvailabilitySource.DEFAULT)
    before = _stored(db, intro).slots
    sim.fail_available_times(mode)
    result = _refresh(db, NOW + timedelta(minutes=5)).calendars[0]
    assert not result.ok and result.error_kind == "bad_response"
    assert {"garbage": "has no collection", "unparseable": "1 unparseable start_time",
            "error_200": "error body in a 2xx answer"}[mode] in (result.error or "")
    assert _stored(db, intro).slots == before and _stored(db, intro).last_error == result.error


def test_revoked_token_is_reported_once_not_retried(db: sa.Engine, ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    _ghl_workspace(db, url)
    _refresh(db)
    _ghl_workspace(db, url, token="tok-revoked")
    sim.accounting.reset()
    report = _refresh(db, NOW + timedelta(minutes=10))
    a, b = report.calendars
    assert (a.error_kind, b.error_kind) == ("auth", NOT_ATTEMPTED) and report.refreshed == 0
    assert "401" in (a.error or "") and "tok-revoked" not in (a.error or "") + (b.error or "")
    assert len(sim.accounting.log) == 1 and sim.accounting.log[0].status == 401  # one request, no loop
    assert _stored(db, DEFAULT).slots and _stored(db, DIRECT_BOOK).last_error == b.error

    # a canned 401 on the free-slots endpoint behaves the same
    _ghl_workspace(db, url)
    sim.fail_free_slots("unauthorized", "cal_a", count=1)
    report = _refresh(db, NOW + timedelta(minutes=20))
    assert [c.error_kind for c in report.calendars] == ["auth", NOT_ATTEMPTED]


def test_stale_flagged_and_never_fetched_is_stale(db: sa.Engine, ghl: tuple[GhlSimulator, str]) -> None:
    _, url = ghl
    _ghl_workspace(db, url, direct=None)
    assert _stored(db, DEFAULT).stale and _stored(db, DEFAULT).slots == []
    _refresh(db, refresh_interval_s=600)
    assert not _stored(db, DEFAULT, NOW + timedelta(minutes=19)).stale
    late = _stored(db, DEFAULT, NOW + timedelta(minutes=20))
    assert late.stale and late.stale_at == NOW + timedelta(minutes=20) and late.slots


def test_only_one_calendar_and_unconfigured_calendars(db: sa.Engine, ghl: tuple[GhlSimulator, str]) -> None:
    _, url = ghl
    _ghl_workspace(db, url)
    report = _refresh(db, only=CalendarRef(Provider.GHL, "cal_b", AvailabilitySource.DEFAULT))
    assert [c.calendar for c in report.calendars] == [DIRECT_BOOK]
    assert _stored(db, DEFAULT).stale and not _stored(db, DIRECT_BOOK).stale
    with pytest.raises(ValueError, match="not configured"):
        _refresh(db, only=CalendarRef(Provider.GHL, "cal_x", AvailabilitySource.DEFAULT))
    with pytest.raises(ValueError, match="days"):
        _refresh(db, days=91)

    # direct-book no longer configured: a full refresh drops its slots and status
    _ghl_workspace(db, url, direct=None)
    report = _refresh(db, NOW + timedelta(minutes=1))
    assert report.dropped == 1 and [c.calendar for c in report.calendars] == [DEFAULT]
    assert rows(db, "SELECT count(*) FROM calendar_availability WHERE calendar_key = 'cal_b'")[0][0] == 0


def test_not_connected_and_no_calendar(db: sa.Engine) -> None:
    set_workspace(db, WS, {"meeting_booking_provider": "GHL", "ghl_default_calendar_id": "cal_a"})
    report = _refresh(db)
    assert report.not_configured and [c.error_kind for c in report.calendars] == ["not_connected"]
    assert "ghl_private_token" in (_stored(db, DEFAULT).last_error or "")
    set_workspace(db, "ws_none", {"meeting_booking_provider": "CALENDLY"})
    empty = _refresh(db, ws="ws_none")
    assert empty.calendars == [] and empty.not_configured == "no configured calendar"
    with pytest.raises(WorkspaceNotConfigured):
        _refresh(db, ws="ws_missing")


def test_store_replace_is_one_set_and_older_fetch_never_wins(db: sa.Engine) -> None:
    set_workspace(db, WS, {"meeting_booking_provider": "GHL", "ghl_default_calendar_id": "cal_a"})
    first = [NOW + timedelta(hours=h) for h in (3, 4, 4, 5)]
    with db.begin() as conn:
        assert replace_calendar_slots(conn, WS, DEFAULT, first, slot_minutes=30, fetched_at=NOW,
                                      stale_at=NOW + timedelta(hours=2))
    assert _stored(db, DEFAULT).slots == sorted(set(first))
    newer = NOW + timedelta(minutes=10)
    with db.begin() as conn:
        assert replace_calendar_slots(conn, WS, DEFAULT, [NOW + timedelta(hours=6)], slot_minutes=30,
                                      fetched_at=newer, stale_at=newer + timedelta(hours=2))
        # a slower refresh that fetched earlier commits later: ignored
        assert not replace_calendar_slots(conn, WS, DEFAULT, first, slot_minutes=30, fetched_at=NOW,
                                          stale_at=NOW + timedelta(hours=2))
    assert _stored(db, DEFAULT).slots == [NOW + timedelta(hours=6)]
    with db.begin() as conn:
        text = record_refresh_failure(conn, WS, DEFAULT, "refused for jane.doe@example.com +1 415 555 0100",
                                      attempted_at=newer + timedelta(minutes=1))
    assert "example.com" not in text and "555" not in text
    assert _stored(db, DEFAULT).slots == [NOW + timedelta(hours=6)]
    # a failed write rolls back: the previous slots stay
    with pytest.raises(sa.exc.DBAPIError), db.begin() as conn:
        replace_calendar_slots(conn, WS, DEFAULT, [NOW], slot_minutes=30, fetched_at=newer + timedelta(hours=1),
                               stale_at=newer + timedelta(hours=3))
        conn.execute(sa.text("SELECT 1/0"))
    assert _stored(db, DEFAULT).slots == [NOW + timedelta(hours=6)]


# ------------------------------------------------------------------------------------------- Dagster


@pytest.fixture()
def ghl_live() -> Iterator[tuple[GhlSimulator, str]]:
    """A GHL simulator on the real clock (the asset refreshes from the current time); tests compare counts
    with the database, never dates."""
    seed = GhlSeed(locations=[GhlLocation(id="loc1", token="tok-ghl-1", timezone="UTC", calendars=[
        GhlCalendar(id="cal_a", working_hours={d: [("00:00", "23:59")] for d in
                                               ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}),
        GhlCalendar(id="cal_b", name="Direct"),
    ])])
    sim = GhlSimulator(seed)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _resources(database_url: str) -> dict[str, Any]:
    return {"app_db": AppDatabase(url=database_url), "providers": ProviderClients(secret_key=SECRET_KEY)}


def _job(database_url: str) -> dg.JobDefinition:
    return dg.Definitions(assets=[calendar_availability], jobs=[availability_job],
                          resources=_resources(database_url)).resolve_job_def("availability_job")


def test_asset_materializes_a_partition_with_table_metadata_and_warning_check(
    db: sa.Engine, database_url: str, ghl_live: tuple[GhlSimulator, str]
) -> None:
    sim, url = ghl_live
    _ghl_workspace(db, url)
    sim.fail_free_slots("not_found", "cal_b")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, [WS])
        result = _job(database_url).execute_in_process(partition_key=WS, instance=instance)
        assert result.success
        [mat] = result.get_asset_materialization_events()
        meta = mat.materialization.metadata
        stored = rows(db, "SELECT count(*) FROM calendar_availability WHERE calendar_key = 'cal_a'")[0][0]
        assert stored > 0 and meta["available_slots"].value == stored
        assert (meta["refreshed"].value, meta["failed"].value, meta["calendar_count"].value) == (1, 1, 2)
        table = meta["calendars"].value
        assert [(r.data["calendar_key"], r.data["refreshed"], r.data["slots"]) for r in table.records] == [
            ("cal_a", True, stored), ("cal_b", False, 0)]
        assert "not_found" in meta["errors"].value["cal_b"] and "tok-ghl-1" not in json.dumps(meta["errors"].value)
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "availability_fresh" and not check.passed
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["failed"].value == ["cal_b"]

        # the successful refresh requests the partition's capacity (rules §9: capacity from the new slots)
        run = instance.get_run_by_id(result.run_id)
        success = next(e.dagster_event for e in instance.all_logs(result.run_id)
                       if e.dagster_event is not None and e.dagster_event.event_type_value == "PIPELINE_SUCCESS")
        ctx = dg.build_run_status_sensor_context(sensor_name="capacity_after_availability_sensor",
                                                 dagster_event=success, dagster_instance=instance, dagster_run=run)
        request = capacity_after_availability_sensor(ctx)
        assert isinstance(request, dg.RunRequest)
        assert (request.partition_key, request.run_key) == (WS, f"capacity_after:{result.run_id}")

        sim.faults.clear()
        again = dg.materialize([calendar_availability], partition_key=WS, instance=instance,
                               resources=_resources(database_url))
        assert again.success
        [check] = again.get_asset_check_evaluations()
        assert check.passed and check.metadata["failed"].value == []


def test_asset_fails_clearly_for_an_unknown_workspace(db: sa.Engine, database_url: str) -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["ws_gone"])
        result = _job(database_url).execute_in_process(partition_key="ws_gone", instance=instance,
                                                       raise_on_error=False)
    assert not result.success
    assert "does not exist" in str(result.failure_data_for_node("calendar_availability").error)


def test_schedule_requests_the_due_connected_workspaces(db: sa.Engine, database_url: str) -> None:
    for ws in ("never", "fresh", "outdated", "failing", "unregistered", "unconnected", "nocal"):
        set_workspace(db, ws, {"meeting_booking_provider": "GHL", "ghl_location_id": f"loc_{ws}",
                               "ghl_default_calendar_id": None if ws == "nocal" else "cal_a"})
        if ws != "unconnected":
            set_secret(db, ws, "ghl_private_token", "tok", SECRET_KEY)
    cal = DEFAULT
    with db.begin() as conn:
        for ws, age in (("fresh", 10), ("outdated", 50), ("failing", 5), ("unconnected", 90)):
            at = NOW - timedelta(minutes=age)
            replace_calendar_slots(conn, ws, cal, [NOW + timedelta(hours=3)], slot_minutes=30, fetched_at=at,
                                   stale_at=at + timedelta(hours=2))
        record_refresh_failure(conn, "failing", cal, "server: 500", attempted_at=NOW - timedelta(minutes=1))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name,
                                        ["never", "fresh", "outdated", "failing", "unconnected", "nocal"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW,
                                       resources={"app_db": AppDatabase(url=database_url)}) as ctx:
            requests = list(availability_schedule(ctx))
    assert [(r.partition_key, r.run_key, r.tags["appt/due_reason"]) for r in requests] == [
        ("failing", f"availability:failing:{NOW.isoformat()}", "last_error"),
        ("never", f"availability:never:{NOW.isoformat()}", "never_fetched"),
        ("outdated", f"availability:outdated:{NOW.isoformat()}", "outdated"),
    ]
    assert all(r.tags["dagster/priority"] == "1" for r in requests)
    assert requests[0].run_config == {"ops": {"calendar_availability": {"config": {"refresh_interval_minutes": 60}}}}


def test_refresh_interval_from_the_environment() -> None:
    assert refresh_minutes("15") == 15 and refresh_cron(15) == "*/15 * * * *"
    assert refresh_minutes("") == 60 and refresh_cron(60) == "0 * * * *"
    assert refresh_minutes("180") == 180 and refresh_cron(180) == "0 */3 * * *"
    assert refresh_minutes("7") == 60 and refresh_minutes("often") == 60 and refresh_minutes("0") == 60
    assert availability_schedule.cron_schedule == "0 * * * *"  # the default: hourly


# ------------------------------------------------------------------------------------------- simulators


def test_simulator_canned_free_slot_faults_over_admin_http(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    headers = {"Authorization": "Bearer tok-ghl-1", "Version": "2021-04-15"}
    params = {"startDate": int(NOW.timestamp() * 1000), "endDate": int((NOW + timedelta(days=1)).timestamp() * 1000)}
    with httpx.Client(base_url=url, timeout=5) as http:
        assert http.post("/_admin/faults/canned", json={"path_prefix": "/calendars/cal_a/free-slots",
                                                        "status": 200, "body": {"error": "boom"}, "count": 1}
                         ).status_code == 200
        assert http.get("/calendars/cal_a/free-slots", params=params, headers=headers).json() == {"error": "boom"}
        assert "2031-03-03" in http.get("/calendars/cal_a/free-slots", params=params, headers=headers).json()
        sim.fail_free_slots("not_found")
        assert http.get("/calendars/cal_b/free-slots", params=params, headers=headers).status_code == 404
        assert http.get("/calendars/", params={"locationId": "loc1"}, headers=headers).status_code == 200
        assert http.delete("/_admin/faults").status_code == 200
        assert http.get("/calendars/cal_b/free-slots", params=params, headers=headers).status_code == 200
    with pytest.raises(SimulatorError):
        sim.fail_free_slots("nonsense")


def test_booking_calendar_and_direct_book_reads_of_a_shared_calendar(
    db: sa.Engine, ghl: tuple[GhlSimulator, str]
) -> None:
    ws = {"meeting_booking_provider": "GHL", "ghl_default_calendar_id": "cal_a", "ghl_direct_book_calendar_id": "cal_b"}
    assert booking_calendar(ws, AvailabilitySource.DIRECT_BOOK) == DIRECT_BOOK
    assert booking_calendar(ws, AvailabilitySource.DEFAULT) == DEFAULT
    same = {**ws, "ghl_direct_book_calendar_id": " cal_a "}
    assert booking_calendar(same, AvailabilitySource.DIRECT_BOOK) == DEFAULT
    assert booking_calendar({**ws, "ghl_direct_book_calendar_id": None}, AvailabilitySource.DIRECT_BOOK) == DEFAULT
    assert booking_calendar({"meeting_booking_provider": "CALENDLY"}, AvailabilitySource.DEFAULT) is None

    _, url = ghl
    _ghl_workspace(db, url, direct="cal_a")
    _refresh(db)
    as_direct = _stored(db, CalendarRef(Provider.GHL, "cal_a", AvailabilitySource.DIRECT_BOOK))
    assert as_direct.slots == _stored(db, DEFAULT).slots and as_direct.slots and not as_direct.stale
