"""Availability refresh (docs/rules.md §9) against the provider simulators over loopback and the real database.

The clock is fixed (``NOW``, a Monday in 2031, also the simulators' clock), so free slots never depend on
the wall-clock date.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from appt_pipeline.domain.calendars import CalendarRef
from appt_pipeline.domain.vocab import AvailabilitySource, Provider
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


def test_ghl_slots_stored_then_replaced(engine: sa.Engine, ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    _ghl_workspace(engine, url)
    report = _refresh(engine)
    assert [c.ok for c in report.calendars] == [True, True] and report.failed == 0
    expected = sim.free_slots("cal_a", NOW, NOW + timedelta(days=30))
    stored = _stored(engine, DEFAULT)
    assert stored.slots == expected and len(expected) > 100 and not stored.stale
    assert stored.fetched_at == NOW and stored.stale_at == NOW + timedelta(hours=2)
    assert NOW.replace(hour=10) not in stored.slots  # booked in the simulator
    assert _stored(engine, DIRECT_BOOK).slots == sim.free_slots("cal_b", NOW, NOW + timedelta(days=30))
    with engine.connect() as conn:
        status = availability_status(conn, WS, DEFAULT)
    assert status is not None and status.slot_count == len(expected) and status.last_error is None

    # a booking at the provider: the next refresh replaces the slots, the booked one is gone
    slot = expected[3]
    sim.book("cal_a", slot, contact_id="c_a")
    later = NOW + timedelta(hours=1)
    assert _refresh(engine, later).refreshed == 2
    again = _stored(engine, DEFAULT, later)
    assert slot not in again.slots and len(again.slots) == len([s for s in expected if s >= later]) - 1
    assert rows(engine, "SELECT count(*) FROM calendar_availability WHERE calendar_key = 'cal_a' "
                "AND slot_start = :s", s=slot)[0][0] == 0
