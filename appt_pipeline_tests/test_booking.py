"""Booking (SPEC §8) against the provider simulators over loopback and the real database.

The pipeline tests run on a fixed clock (``NOW``, a Monday in 2031, also the simulators' clock), so free slots
never depend on the wall-clock date. Provider calls are counted at the simulator (its request log).
"""

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from appt_pipeline.domain.booking import BookingInputError, BookingState, parse_slot, request_fingerprint
from appt_pipeline.domain.calendars import CalendarRef, booking_calendar
from appt_pipeline.domain.vocab import AvailabilitySource, Provider, Source
from appt_pipeline.pipelines.accounts import load_provider_account
from appt_pipeline.pipelines.availability import refresh_workspace_availability
from appt_pipeline.pipelines.booking import BookingResult, book
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlySeed,
    CalendlySimulator,
    CalendlyUser,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
    GhlSimulator,
    SimulatorServer,
)
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.store.tokens import create_token
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import QUICK_RETRY, SECRET_KEY, ghl, rows, working_day_slot
from appt_pipeline_tests.helpers.cli import cli_env, one_json, run_cli

NOW = datetime(2031, 3, 3, 6, 0, tzinfo=UTC)  # a Monday, 06:00 UTC (before working hours)
SLOT = NOW.replace(hour=15)  # Monday 15:00 UTC: a free slot of every calendar below
SLOT2 = SLOT + timedelta(days=1)
OPTIONS = ClientOptions(retry=QUICK_RETRY, timeout_s=5.0)
WS = "ws_bk"
API = "https://api.calendly.com"
INTRO = f"{API}/event_types/11111111-1111-1111-1111-1111111111c1"
DIRECT = f"{API}/event_types/22222222-2222-2222-2222-2222222222c2"
ORG_ID = "0000aaaa-0000-0000-0000-0000000000c1"
USER = f"{API}/users/33333333-3333-3333-3333-3333333333c3"
GHL_POST = "/calendars/events/appointments"


def _clock() -> datetime:
    return NOW


@pytest.fixture()
def ghl_sim() -> Iterator[tuple[GhlSimulator, str]]:
    seed = GhlSeed(locations=[GhlLocation(
        id="loc1", token="tok-ghl-1", timezone="UTC",
        calendars=[GhlCalendar(id="cal_a"), GhlCalendar(id="cal_b", name="Direct")],
        contacts=[GhlContact(email="a@example.com", id="c_a"), GhlContact(email="b@example.com", id="c_b"),
                  GhlContact(email="other@example.com", id="c_o")],
    )])
    sim = GhlSimulator(seed, clock=_clock)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


@pytest.fixture()
def calendly_sim() -> Iterator[tuple[CalendlySimulator, str]]:
    user = CalendlyUser(token="tok-cal-1", email="rep@example.com", uuid=USER.rsplit("/", 1)[1],
                        organization=ORG_ID, timezone="UTC", event_types=[
                            CalendlyEventType(name="Intro", slug="intro", uuid=INTRO.rsplit("/", 1)[1]),
                            CalendlyEventType(name="Direct", slug="direct", uuid=DIRECT.rsplit("/", 1)[1]),
                        ])
    sim = CalendlySimulator(CalendlySeed(users=[user]), clock=_clock)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _ghl_ws(engine: sa.Engine, url: str, *, auto: bool = True, direct: str | None = "cal_b") -> None:
    set_workspace(engine, WS, {"meeting_booking_provider": "GHL", "timezone": "UTC", "ghl_location_id": "loc1",
                               "ghl_api_base_url": url, "ghl_default_calendar_id": "cal_a",
                               "ghl_direct_book_calendar_id": direct, "auto_book_meetings": auto})
    set_secret(engine, WS, "ghl_private_token", "tok-ghl-1", SECRET_KEY)


def _calendly_ws(engine: sa.Engine, url: str) -> None:
    set_workspace(engine, WS, {"meeting_booking_provider": "CALENDLY", "timezone": "UTC",
                               "calendly_organization_uri": f"{API}/organizations/{ORG_ID}",
                               "calendly_user_uri": USER, "calendly_api_base_url": url,
                               "calendly_event_type_uri": INTRO, "calendly_direct_book_event_type_uri": DIRECT,
                               "auto_book_meetings": True, "meeting_duration_minutes": 30})
    set_secret(engine, WS, "calendly_access_token", "tok-cal-1", SECRET_KEY)


def _lead(engine: sa.Engine, lead_id: str, *, email: str | None = None, contact: str | None = None,
          auto: bool = True) -> str:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id, email, ghl_contact_id, status, "
                             "auto_book_meetings_enabled) VALUES (:id, :ws, :email, :cid, 'qualified', :auto)"),
                     {"id": lead_id, "ws": WS, "email": email, "cid": contact, "auto": auto})
    return lead_id


async def _book_async(engine: sa.Engine, lead: str, slot: Any = SLOT, *, options: ClientOptions = OPTIONS,
                      **kw: Any) -> BookingResult:
    async with httpx.AsyncClient() as http:
        return await book(engine, ClientFactory(http, options), kw.pop("ws", WS), lead, slot,
                          idempotency_key=kw.pop("key", "k1"), now=kw.pop("now", NOW), secret_key=SECRET_KEY, **kw)


def _book(engine: sa.Engine, lead: str, slot: Any = SLOT, **kw: Any) -> BookingResult:
    return asyncio.run(_book_async(engine, lead, slot, **kw))


def _posts(sim: GhlSimulator | CalendlySimulator, path: str = GHL_POST) -> int:
    return sum(1 for r in sim.accounting.log if r.method == "POST" and r.path == path)


def _requests(engine: sa.Engine) -> list[Any]:
    return rows(engine, "SELECT * FROM booking_requests ORDER BY created_at, idempotency_key")


def _appointments(engine: sa.Engine) -> list[Any]:
    return rows(engine, "SELECT * FROM appointments ORDER BY created_at, id")


# ------------------------------------------------------------------------------------------------- happy paths


def test_ghl_booking_goes_through_the_write_path_with_source_and_attribution(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", email="a@example.com", contact="c_a")
    result = _book(db, "la")
    assert (result.state, result.replay, result.reason) == (BookingState.BOOKED, False, None)
    (appt,) = _appointments(db)
    assert appt.id == result.appointment_id
    assert (appt.provider, appt.source, appt.last_source, appt.status, appt.ghl_calendar_id) == (
        "GHL", "AUTO_BOOK", "AUTO_BOOK", "CONFIRMED", "cal_a")
    assert (appt.start_at, appt.end_at) == (SLOT, SLOT + timedelta(minutes=30))
    (req,) = _requests(db)
    assert (req.state, req.appointment_id, req.ghl_appointment_id, req.ghl_calendar_id, req.provider_attempts) == (
        "booked", appt.id, appt.ghl_appointment_id, "cal_a", 1)
    lead = rows(db, "SELECT * FROM leads WHERE id = 'la'")[0]
    assert (lead.status, lead.appointment_source, lead.ghl_appointment_id) == (
        "meeting-booked", "auto_book", appt.ghl_appointment_id)
    (at_provider,) = sim.appointments("loc1")
    assert (at_provider["id"], at_provider["contactId"], at_provider["calendarId"]) == (
        appt.ghl_appointment_id, "c_a", "cal_a")
    assert _posts(sim) == 1
    # the same key again: the first answer, no second provider call
    again = _book(db, "la")
    assert (again.state, again.replay, again.appointment_id) == (BookingState.BOOKED, True, result.appointment_id)
    assert _posts(sim) == 1 and len(_appointments(db)) == 1


def test_direct_book_manual_uses_the_direct_calendar_and_manual_source(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _sim, url = ghl_sim
    _ghl_ws(db, url, auto=False)  # MANUAL ignores the auto-book switch
    _lead(db, "lb", email="b@example.com")  # no contact id: resolved by e-mail and kept
    result = _book(db, "lb", availability_source=AvailabilitySource.DIRECT_BOOK, source=Source.MANUAL)
    assert result.state is BookingState.BOOKED, result
    (appt,) = _appointments(db)
    assert (appt.source, appt.ghl_calendar_id) == ("MANUAL", "cal_b")
    assert rows(db, "SELECT ghl_contact_id FROM leads WHERE id = 'lb'")[0].ghl_contact_id == "c_b"
    assert rows(db, "SELECT appointment_source FROM leads WHERE id = 'lb'")[0].appointment_source == "manual"


def test_calendar_choice_rule() -> None:
    ws = {"meeting_booking_provider": "GHL", "ghl_default_calendar_id": "d", "ghl_direct_book_calendar_id": "x"}
    assert booking_calendar(ws, AvailabilitySource.DIRECT_BOOK) == CalendarRef(
        Provider.GHL, "x", AvailabilitySource.DIRECT_BOOK)
    assert booking_calendar(ws, AvailabilitySource.DEFAULT).calendar_key == "d"  # type: ignore[union-attr]
    no_direct = {**ws, "ghl_direct_book_calendar_id": None}
    assert booking_calendar(no_direct, AvailabilitySource.DIRECT_BOOK) == CalendarRef(
        Provider.GHL, "d", AvailabilitySource.DEFAULT)  # the default one, and its DEFAULT slots
    assert booking_calendar({"meeting_booking_provider": "CALENDLY", "calendly_event_type_uri": INTRO},
                            AvailabilitySource.DEFAULT) == CalendarRef(Provider.CALENDLY, INTRO,
                                                                       AvailabilitySource.DEFAULT)
    assert booking_calendar({"meeting_booking_provider": "GHL"}, AvailabilitySource.DEFAULT) is None


def test_calendly_booking_creates_an_invitee_with_attribution_and_no_name_stored(
        db: sa.Engine, calendly_sim: tuple[CalendlySimulator, str]) -> None:
    sim, url = calendly_sim
    _calendly_ws(db, url)
    _lead(db, "lc", email="Carol@Example.com")
    result = _book(db, "lc", invitee_name="Carol Secretname", invitee_timezone="Europe/Berlin")
    assert result.state is BookingState.BOOKED, result
    (appt,) = _appointments(db)
    assert (appt.provider, appt.source, appt.calendly_event_type_uri, appt.status) == (
        "CALENDLY", "AUTO_BOOK", INTRO, "CONFIRMED")
    assert appt.calendly_invitee_uri.startswith(f"{API}/scheduled_events/") and appt.start_at == SLOT
    (invitee,) = sim.invitees_of("carol@example.com")
    assert (invitee["uri"], invitee["name"], invitee["timezone"]) == (
        appt.calendly_invitee_uri, "Carol Secretname", "Europe/Berlin")
    assert _posts(sim, "/invitees") == 1
    (req,) = _requests(db)
    assert req.calendly_invitee_uri == appt.calendly_invitee_uri and req.state == "booked"
    with db.connect() as conn:  # the name is nowhere in the database
        dump = conn.execute(sa.text("SELECT row_to_json(b)::text FROM booking_requests b")).scalar_one()
        assert "Secretname" not in dump and "carol" not in dump.lower()
        assert conn.execute(sa.text("SELECT count(*) FROM appointments a WHERE row_to_json(a)::text "
                                    "ILIKE '%secretname%'")).scalar_one() == 0


# -------------------------------------------------------------------------------------------------- refusals


def test_already_booked_is_refused_without_a_provider_call(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    write_observations(db, [ghl("la", "g_up", start_at=SLOT2, ws=WS)], now=NOW)
    result = _book(db, "la")
    assert (result.state, result.reason) == (BookingState.REFUSED, "already_booked")
    assert _posts(sim) == 0 and not [r for r in sim.accounting.log if "free-slots" in r.path]
    assert _requests(db)[0].state == "refused"
    # a past booking does not count
    _lead(db, "lp", contact="c_b")
    write_observations(db, [ghl("lp", "g_past", start_at=NOW - timedelta(days=3), ws=WS)], now=NOW)
    assert _book(db, "lp", key="k2").state is BookingState.BOOKED


@pytest.mark.parametrize(("workspace_on", "lead_on"), [(False, True), (True, False)])
def test_auto_book_disabled(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str], workspace_on: bool,
                            lead_on: bool) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url, auto=workspace_on)
    _lead(db, "la", contact="c_a", auto=lead_on)
    result = _book(db, "la")
    assert (result.state, result.reason) == (BookingState.REFUSED, "auto_book_disabled")
    assert _posts(sim) == 0 and _appointments(db) == []
    # a MANUAL booking (another key) is not subject to the switch
    assert _book(db, "la", key="k-manual", source=Source.MANUAL).state is BookingState.BOOKED


def test_slot_unavailable_after_one_refresh_of_that_calendar(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    sim.book("cal_a", SLOT, contact_id="c_o")  # someone else takes the slot
    result = _book(db, "la")
    assert (result.state, result.reason) == (BookingState.REFUSED, "slot_unavailable")
    refreshes = [r for r in sim.accounting.log if r.path.endswith("/free-slots")]
    assert {r.path for r in refreshes} == {"/calendars/cal_a/free-slots"}  # that calendar only, one refresh
    assert _posts(sim) == 0
    # a slot that is not on the grid at all, and a stored, fresh free slot needs no refresh
    before = len(refreshes)
    assert _book(db, "la", SLOT + timedelta(minutes=7), key="k2").reason == "slot_unavailable"
    assert _book(db, "la", SLOT2, key="k3").state is BookingState.BOOKED
    assert len([r for r in sim.accounting.log if r.path.endswith("/free-slots")]) == before + 1


def test_provider_refused_with_its_message_masked(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")

    async def refresh() -> None:
        async with httpx.AsyncClient() as http:
            await refresh_workspace_availability(db, ClientFactory(http, OPTIONS), WS, now=NOW, secret_key=SECRET_KEY)

    asyncio.run(refresh())  # the stored slots say SLOT is free …
    sim.book("cal_a", SLOT, contact_id="c_o")  # … but it is taken meanwhile: the provider refuses
    result = _book(db, "la")
    assert (result.state, result.reason) == (BookingState.REFUSED, "provider_refused")
    assert result.message and "400" in result.message and "@" not in result.message
    assert _posts(sim) == 1 and _appointments(db) == []
    assert _book(db, "la").replay and _posts(sim) == 1  # the refusal is the key's answer


def test_calendly_refuses_a_taken_slot_and_a_free_one_is_booked_on_the_direct_event_type(
        db: sa.Engine, calendly_sim: tuple[CalendlySimulator, str]) -> None:
    sim, url = calendly_sim
    _calendly_ws(db, url)
    _lead(db, "lc", email="carol@example.com")

    async def refresh() -> None:
        async with httpx.AsyncClient() as http:
            await refresh_workspace_availability(db, ClientFactory(http, OPTIONS), WS, now=NOW, secret_key=SECRET_KEY)

    asyncio.run(refresh())
    sim.book(INTRO, SLOT, "someone@example.com", name="Someone", timezone="UTC")  # taken after the refresh
    taken = _book(db, "lc")
    assert (taken.state, taken.reason) == (BookingState.REFUSED, "provider_refused")
    assert "no longer available" in (taken.message or "") and "@" not in (taken.message or "")
    direct = _book(db, "lc", SLOT2, key="k2", availability_source=AvailabilitySource.DIRECT_BOOK)
    assert direct.state is BookingState.BOOKED
    (appt,) = _appointments(db)
    assert appt.calendly_event_type_uri == DIRECT and _posts(sim, "/invitees") == 2


def test_same_key_with_another_request_is_refused_and_the_first_answer_kept(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    first = _book(db, "la")
    other = _book(db, "la", SLOT2)
    assert (other.state, other.reason, other.replay) == (BookingState.REFUSED, "idempotency_key_reused", False)
    assert _book(db, "la", source=Source.MANUAL).reason == "idempotency_key_reused"
    assert _posts(sim) == 1 and len(_appointments(db)) == 1
    (req,) = _requests(db)
    assert (req.state, req.appointment_id) == ("booked", first.appointment_id)
    # the same instant written with another offset is the same request
    same = _book(db, "la", "2031-03-03T16:00:00+01:00")
    assert same.replay and same.appointment_id == first.appointment_id


# ----------------------------------------------------------------------------------------------- concurrency


def test_twenty_concurrent_requests_with_one_key_make_one_provider_call(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")

    async def many() -> list[BookingResult]:
        async with httpx.AsyncClient() as http:
            factory = ClientFactory(http, OPTIONS)
            return await asyncio.gather(*[
                book(db, factory, WS, "la", SLOT, idempotency_key="same", now=NOW, secret_key=SECRET_KEY)
                for _ in range(20)])

    results = asyncio.run(many())
    assert {r.state for r in results} == {BookingState.BOOKED}
    assert len({r.appointment_id for r in results}) == 1
    assert sorted(r.replay for r in results) == [False] + [True] * 19
    assert _posts(sim) == 1 and len(_appointments(db)) == 1 and len(_requests(db)) == 1


# ------------------------------------------------------------------------------------ timeouts, provider down


def test_timeout_after_the_post_is_unknown_and_resolved_by_reconciling_the_lead(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    sim.faults.configure(timeout_rate=1.0, timeout_seconds=3.0, timeout_phase="after", only_paths=(GHL_POST,))
    result = _book(db, "la", options=ClientOptions(retry=QUICK_RETRY, timeout_s=0.5))
    assert (result.state, result.reason) == (BookingState.UNKNOWN, "provider_timeout")
    assert _posts(sim) == 1 and _appointments(db) == []  # the provider booked; we do not know it yet
    assert [a["startTime"][:16] for a in sim.appointments("loc1")] == [SLOT.isoformat()[:16]]
    (req,) = _requests(db)
    assert req.state == "unknown" and req.provider_sent_at == NOW
    sim.faults.clear()
    later = NOW + timedelta(minutes=2)
    resolved = _book(db, "la", now=later)
    assert (resolved.state, resolved.replay) == (BookingState.BOOKED, True)
    assert _posts(sim) == 1  # never sent again
    (appt,) = _appointments(db)
    assert (appt.id, appt.source, appt.ghl_calendar_id, appt.start_at) == (
        resolved.appointment_id, "AUTO_BOOK", "cal_a", SLOT)
    lead = rows(db, "SELECT appointment_last_checked_at FROM leads WHERE id = 'la'")[0]
    assert lead.appointment_last_checked_at == later  # it was a reconciliation of that lead
    assert _book(db, "la", now=later).appointment_id == appt.id


def test_unknown_without_a_booking_at_the_provider_ends_not_booked(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    sim.faults.configure(error_rate=1.0, error_statuses=(500,), only_paths=(GHL_POST,))  # before the handler
    assert _book(db, "la").state is BookingState.UNKNOWN
    sim.faults.clear()
    result = _book(db, "la")
    assert (result.state, result.reason) == (BookingState.REFUSED, "not_booked")
    assert _posts(sim) == 1 and _appointments(db) == []


def test_provider_down_leaves_the_request_pending_and_a_retry_finishes_it(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    sim.faults.configure(error_rate=1.0, error_statuses=(503,))  # availability refresh fails
    down = _book(db, "la")
    assert (down.state, down.reason) == (BookingState.PENDING, "provider_unavailable")
    assert _appointments(db) == [] and _posts(sim) == 0
    sim.faults.configure(only_paths=(GHL_POST,))  # the refresh works, the POST answers 503
    down = _book(db, "la")
    assert (down.state, down.reason) == (BookingState.PENDING, "provider_unavailable")
    (req,) = _requests(db)
    assert (req.state, req.provider_sent_at, req.provider_attempts) == ("pending", None, 1)
    assert _appointments(db) == [] and rows(db, "SELECT count(*) AS n FROM follow_up_tasks")[0].n == 0
    sim.faults.clear()
    done = _book(db, "la")
    assert (done.state, done.replay) == (BookingState.BOOKED, False)
    assert len(_appointments(db)) == 1 and _requests(db)[0].provider_attempts == 2


def test_unreachable_provider_is_pending(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _sim, url = ghl_sim
    _ghl_ws(db, "http://127.0.0.1:9")  # nothing listens there
    _lead(db, "la", contact="c_a")
    result = _book(db, "la")
    assert (result.state, result.reason) == (BookingState.PENDING, "provider_unavailable")
    _ghl_ws(db, url)
    assert _book(db, "la").state is BookingState.BOOKED


# ------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("slot", "reason"), [
    ("tomorrow 3pm", "invalid_slot"), ("2031-03-03", "invalid_slot"), ("2031-03-03T15:00:00", "invalid_slot"),
    ("2031-02-30T15:00:00Z", "invalid_slot"), ("", "invalid_slot"), ("2031-03-03T05:00:00Z", "slot_in_past"),
])
def test_bad_slots_are_refused_before_anything_is_stored(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str],
                                                         slot: str, reason: str) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    with pytest.raises(BookingInputError) as caught:
        _book(db, "la", slot)
    assert caught.value.reason == reason
    assert _requests(db) == [] and not sim.accounting.log


def test_unknown_workspace_lead_and_missing_contact_details(
        db: sa.Engine, ghl_sim: tuple[GhlSimulator, str], calendly_sim: tuple[CalendlySimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "nobody")  # no contact id, no e-mail
    cases = [({"ws": "nope"}, "la", "unknown_workspace"), ({}, "missing", "unknown_lead"),
             ({}, "nobody", "lead_without_contact"), ({"source": "WEBHOOK"}, "nobody", "invalid_source"),
             ({"key": ""}, "nobody", "invalid_idempotency_key"),
             ({"invitee_timezone": "Mars/Olympus"}, "nobody", "invalid_timezone")]
    for kw, lead, reason in cases:
        with pytest.raises(BookingInputError) as caught:
            _book(db, lead, **kw)
        assert caught.value.reason == reason, (kw, lead)
    _calendly_ws(db, calendly_sim[1])
    with pytest.raises(BookingInputError) as caught:
        _book(db, "nobody")
    assert caught.value.reason == "lead_without_email"
    assert _requests(db) == [] and not sim.accounting.log and not calendly_sim[0].accounting.log


def test_slot_parsing_and_fingerprint() -> None:
    assert parse_slot("2031-03-03T16:00:00+01:00") == SLOT == parse_slot("2031-03-03t15:00Z")
    from appt_pipeline.domain.booking import BookingRequest

    a = BookingRequest(WS, "la", SLOT, AvailabilitySource.DEFAULT, Source.AUTO_BOOK)
    assert request_fingerprint(a) == request_fingerprint(BookingRequest(WS, "la", parse_slot(
        "2031-03-03T16:00:00+01:00"), AvailabilitySource.DEFAULT, Source.AUTO_BOOK))
    assert len(request_fingerprint(a)) == 32
    assert request_fingerprint(a) != request_fingerprint(BookingRequest(WS, "la", SLOT, AvailabilitySource.DEFAULT,
                                                                        Source.MANUAL))


def test_requests_expire_after_30_days(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    _lead(db, "lb", contact="c_b")
    assert _book(db, "la", key="old").state is BookingState.BOOKED
    later = NOW + timedelta(days=31)
    # 31 days on, the key is free again (its row is purged before the claim)
    result = _book(db, "lb", later.replace(hour=15), key="old", now=later)
    assert result.state is BookingState.BOOKED and not result.replay
    assert [r.lead_id for r in _requests(db)] == ["lb"]


def test_account_can_be_given(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _sim, url = ghl_sim
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    account = load_provider_account(db, WS, SECRET_KEY)
    assert _book(db, "la", account=account).state is BookingState.BOOKED


# ----------------------------------------------------------------------------------- the HTTP route and the CLI
# The service and the command run on the real clock, so these tests use a simulator on the real clock too and an
# explicit free slot: 15:00 UTC on the third working day from today (inside the calendar's hours, any date).


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[SimulatorServer]:
    with SimulatorServer(create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY))) as srv:
        yield srv


@pytest.fixture()
def live_ghl() -> Iterator[tuple[GhlSimulator, str]]:
    seed = GhlSeed(locations=[GhlLocation(
        id="loc1", token="tok-ghl-1", timezone="UTC", calendars=[GhlCalendar(id="cal_a"), GhlCalendar(id="cal_b")],
        contacts=[GhlContact(email="a@example.com", id="c_a"), GhlContact(email="b@example.com", id="c_b")])])
    sim = GhlSimulator(seed)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _api(service: SimulatorServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{service.base_url}/api/v1/workspaces/{WS}/leads", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def test_http_route_answers(db: sa.Engine, service: SimulatorServer, live_ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = live_ghl
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    _lead(db, "lb", contact="c_b", auto=False)
    slot = working_day_slot(3)
    token = create_token(db, WS, "read,book").token
    with _api(service, token) as api:
        first = api.post("/la/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "h1"})
        assert first.status_code == 201, first.text
        body = first.json()
        assert (body["state"], body["idempotency_key"]) == ("booked", "h1")
        item = body["appointment"]
        assert (item["source"], item["ghl_calendar_id"], item["status"], item["provider"]) == (
            "AUTO_BOOK", "cal_a", "CONFIRMED", "GHL")
        assert parse_slot(item["start_at"]) == parse_slot(slot) and first.headers["cache-control"] == "no-store"
        replay = api.post("/la/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "h1"})
        assert (replay.status_code, replay.json()) == (200, body)
        other = api.post("/la/bookings", json={"slot_start": slot, "source": "MANUAL"},
                         headers={"Idempotency-Key": "h1"})
        assert (other.status_code, other.json()["reason"]) == (409, "idempotency_key_reused")
        again = api.post("/la/bookings", json={"slot_start": working_day_slot(4)}, headers={"Idempotency-Key": "h2"})
        assert (again.status_code, again.json()["reason"], again.json()["state"]) == (409, "already_booked", "refused")
        off = api.post("/lb/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "h3"})
        assert (off.status_code, off.json()["reason"]) == (409, "auto_book_disabled")
        # malformed: no key, a body field too many, no slot, a slot that is not ISO-8601, one in the past
        assert api.post("/lb/bookings", json={"slot_start": slot}).status_code == 422
        assert api.post("/lb/bookings", json={"slot_start": slot, "email": "x@example.com"},
                        headers={"Idempotency-Key": "h4"}).status_code == 422
        assert api.post("/lb/bookings", json={}, headers={"Idempotency-Key": "h4"}).status_code == 422
        bad = api.post("/lb/bookings", json={"slot_start": "next tuesday"}, headers={"Idempotency-Key": "h4"})
        assert (bad.status_code, bad.json()) == (422, {"error": "invalid_slot"})
        past = api.post("/lb/bookings", json={"slot_start": "2020-01-06T15:00:00Z", "source": "MANUAL"},
                        headers={"Idempotency-Key": "h4"})
        assert (past.status_code, past.json()) == (422, {"error": "slot_in_past"})
        unknown = api.post("/nobody/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "h5"})
        assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown_lead"})
    read_only = create_token(db, WS, "read").token
    with _api(service, read_only) as api:
        denied = api.post("/la/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "h1"})
        assert (denied.status_code, denied.json()) == (403, {"error": "missing_scope"})
    assert _posts(sim) == 1
    assert {(r.idempotency_key, r.state) for r in _requests(db)} == {
        ("h1", "booked"), ("h2", "refused"), ("h3", "refused")}


def test_http_twenty_concurrent_requests_and_provider_down(
        db: sa.Engine, service: SimulatorServer, live_ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = live_ghl
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    _lead(db, "lb", contact="c_b")
    slot = working_day_slot(3)
    token = create_token(db, WS, "read,book").token

    def post(_: int) -> httpx.Response:
        with _api(service, token) as api:
            return api.post("/la/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "c20"})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 19 + [201]
    assert len({a.json()["appointment"]["id"] for a in answers}) == 1
    assert _posts(sim) == 1
    sim.faults.configure(error_rate=1.0, error_statuses=(503,))
    with _api(service, token) as api:
        down = api.post("/lb/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "d1"})
        assert down.status_code == 503 and down.headers["retry-after"]
        assert down.json() == {"error": "provider_unavailable", "state": "pending", "idempotency_key": "d1"}
        sim.faults.clear()
        done = api.post("/lb/bookings", json={"slot_start": working_day_slot(5)}, headers={"Idempotency-Key": "d2"})
        assert done.status_code == 201, done.text
        retried = api.post("/lb/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "d1"})
        assert (retried.status_code, retried.json()["reason"]) == (409, "already_booked")


def test_http_timeout_is_202_unknown_then_200_once_reconciled(
        db: sa.Engine, database_url: str, live_ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = live_ghl
    _ghl_ws(db, url)
    _lead(db, "la", contact="c_a")
    token = create_token(db, WS, "book").token
    slot = working_day_slot(3)
    settings = ServiceSettings(database_url=database_url, secret_key=SECRET_KEY, provider_timeout_s=0.5)
    with SimulatorServer(create_app(settings)) as quick, _api(quick, token) as api:
        sim.faults.configure(timeout_rate=1.0, timeout_seconds=3.0, timeout_phase="after", only_paths=(GHL_POST,))
        first = api.post("/la/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "t1"})
        assert first.status_code == 202, first.text
        assert first.json() == {"state": "unknown", "idempotency_key": "t1", "appointment": None,
                                "reason": "provider_timeout"}
        sim.faults.clear()
        resolved = api.post("/la/bookings", json={"slot_start": slot}, headers={"Idempotency-Key": "t1"})
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["appointment"]["source"] == "AUTO_BOOK"
    assert _posts(sim) == 1 and len(_appointments(db)) == 1


def test_cli_book(db: sa.Engine, database_url: str, tmp_path: Path, live_ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = live_ghl
    _ghl_ws(db, url, auto=False)
    _lead(db, "la", contact="c_a")
    env = cli_env(tmp_path, database_url, APPT_SECRET_KEY=SECRET_KEY)
    slot = working_day_slot(3)
    args = ("book", "--workspace", WS, "--lead", "la", "--slot", slot, "--json")
    refused = run_cli(env, *args, "--idempotency-key", "cli-1")
    assert refused.returncode == 1, refused.stderr
    assert one_json(refused)["reason"] == "auto_book_disabled"
    booked = run_cli(env, *args, "--manual", "--availability-source", "DIRECT_BOOK", "--idempotency-key", "cli-2")
    assert booked.returncode == 0, booked.stderr
    out = one_json(booked)
    assert (out["state"], out["replay"], out["appointment"]["source"], out["appointment"]["ghl_calendar_id"]) == (
        "booked", False, "MANUAL", "cal_b")
    replay = run_cli(env, *args, "--manual", "--availability-source", "DIRECT_BOOK", "--idempotency-key", "cli-2")
    assert replay.returncode == 0 and one_json(replay)["replay"] is True
    assert _posts(sim) == 1
    bad = run_cli(env, "book", "--workspace", WS, "--lead", "la", "--slot", "soon")
    assert bad.returncode == 2 and "invalid_slot" in bad.stderr
    unknown = run_cli(env, "book", "--workspace", WS, "--lead", "ghost", "--slot", slot)
    assert unknown.returncode == 2 and "unknown_lead" in unknown.stderr
    human = run_cli(env, "book", "--workspace", WS, "--lead", "la", "--slot", slot, "--manual")
    assert human.returncode == 1 and "already_booked" in human.stderr and "idempotency key cli-" in human.stderr


def test_two_keys_for_one_lead_at_once_book_it_once(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    """Bookings of one lead are worked one at a time: of two concurrent requests with different keys (and slots)
    one books, the other then sees ``already_booked``; of two leads' concurrent requests with one key, one owns
    the key and the other is ``idempotency_key_reused``."""
    sim, url = ghl_sim
    _ghl_ws(db, url)
    for lead, contact in (("la", "c_a"), ("lb", "c_b"), ("lc", "c_o")):
        _lead(db, lead, contact=contact)

    async def run(*calls: tuple[str, datetime, str]) -> list[BookingResult]:
        async with httpx.AsyncClient() as http:
            factory = ClientFactory(http, OPTIONS)
            return await asyncio.gather(*[book(db, factory, WS, lead, slot, idempotency_key=key, now=NOW,
                                               secret_key=SECRET_KEY) for lead, slot, key in calls])

    same_lead = asyncio.run(run(("la", SLOT, "x1"), ("la", SLOT2, "x2")))
    assert sorted((r.state, r.reason or "") for r in same_lead) == [
        (BookingState.BOOKED, ""), (BookingState.REFUSED, "already_booked")]
    assert _posts(sim) == 1
    same_key = asyncio.run(run(("lb", SLOT2 + timedelta(hours=1), "y"), ("lc", SLOT2 + timedelta(minutes=90), "y")))
    assert sorted((r.state, r.reason or "") for r in same_key) == [
        (BookingState.BOOKED, ""), (BookingState.REFUSED, "idempotency_key_reused")]
    assert _posts(sim) == 2 and len(_appointments(db)) == 2
