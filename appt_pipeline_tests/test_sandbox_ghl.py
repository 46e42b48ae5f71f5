"""GoHighLevel simulator over real loopback HTTP (plain httpx, no mocked transport).

Shapes are checked against the published fixtures (``appt_pipeline_tests/fixtures/providers``);
and the observed shapes of docs/providers.md §1.2; limits are shrunk via
``configure`` to keep the file fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from appt_pipeline.sandbox import (
    GhlAppointment,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
    GhlSimulator,
    SimulatorError,
    SimulatorServer,
)
from appt_pipeline.sandbox.ghl import SLOT_TAKEN_MESSAGE
from appt_pipeline_tests.helpers import PROVIDER_FIXTURES, working_day

FIXTURES = PROVIDER_FIXTURES
TZ_NAME = "Europe/Berlin"
TZ = ZoneInfo(TZ_NAME)
LOC, TOKEN = "loc_test_1", "pit-test-location-1"
LOC2, TOKEN2 = "loc_test_2", "pit-test-location-2"
CAL, CAL2 = "cal_sales", "cal_other"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Version": "2021-04-15"}
CONTACTS_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Version": "2021-07-28"}
RATE_HEADERS = (
    "x-ratelimit-max",
    "x-ratelimit-remaining",
    "x-ratelimit-interval-milliseconds",
    "x-ratelimit-limit-daily",
    "x-ratelimit-daily-remaining",
)
#: Observed GET /calendars/events/appointments/{id} object keys (NANGO-GHL-REC, docs/providers.md §1.2).
OBSERVED_APPOINTMENT_KEYS = {
    "id", "title", "calendarId", "locationId", "contactId", "appointmentStatus", "appoinmentStatus", "address",
    "startTime", "endTime", "dateAdded", "dateUpdated", "assignedResources", "isRecurring", "createdBy",
    "appointmentMeta", "deleted",
}  # fmt: skip
OBSERVED_WRITE_KEYS = {
    "id", "calendarId", "locationId", "contactId", "title", "status", "appointmentStatus", "appoinmentStatus",
    "address", "dateAdded", "dateUpdated", "isRecurring", "traceId",
}  # fmt: skip


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def workday(days_ahead: int, hour: int, minute: int = 0) -> datetime:
    return working_day(days_ahead, hour, minute, tz=TZ)


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def make_seed() -> GhlSeed:
    return GhlSeed(
        locations=[
            GhlLocation(
                id=LOC,
                token=TOKEN,
                timezone=TZ_NAME,
                calendars=[GhlCalendar(name="Sales", id=CAL), GhlCalendar(name="Other", id=CAL2)],
                contacts=[
                    GhlContact(email="Ann@Example.com", id="contact_ann", first_name="Ann", last_name="Lee"),
                    GhlContact(email="bob@example.com", id="contact_bob", first_name="Bob"),
                    GhlContact(email="new@example.com", id="contact_new", first_name="Nia"),
                ],
                appointments=[
                    GhlAppointment(id="appt_future", calendar_id=CAL, contact_id="contact_ann", start=workday(3, 10)),
                    GhlAppointment(
                        id="appt_past", calendar_id=CAL, contact_id="contact_ann",
                        start=workday(-20, 11), status="showed",
                    ),
                    GhlAppointment(
                        id="appt_gone", calendar_id=CAL, contact_id="bob@example.com",
                        start=workday(4, 9), deleted=True,
                    ),
                    GhlAppointment(
                        id="appt_other", calendar_id="Other", contact_id="contact_bob",
                        start=workday(5, 14), status="new",
                    ),
                ],
            ),
            {"id": LOC2, "token": TOKEN2, "timezone": "America/New_York",
             "calendars": [{"name": "NY", "id": "cal_ny"}], "contacts": [{"email": "zed@example.com", "id": "c_zed"}]},
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(GhlSimulator(make_seed(), id_seed=42)) as srv:
        yield srv


@pytest.fixture()
def sim(server: SimulatorServer) -> GhlSimulator:
    simulator = server.simulator
    assert isinstance(simulator, GhlSimulator)
    simulator.configure(rate_limit=100, rate_window_seconds=10, daily_limit=200_000)
    simulator.reset()
    return simulator


@pytest.fixture()
def client(server: SimulatorServer, sim: GhlSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=5) as c:
        yield c


# ----------------------------------------------------------------------------- shapes


def test_get_appointment_has_the_observed_wrapper_and_fields(client: httpx.Client) -> None:
    r = client.get("/calendars/events/appointments/appt_future")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"appointment", "traceId"}
    appt = body["appointment"]
    assert set(appt) >= OBSERVED_APPOINTMENT_KEYS
    assert appt["appointmentStatus"] == appt["appoinmentStatus"] == "confirmed"
    assert (appt["calendarId"], appt["contactId"], appt["locationId"]) == (CAL, "contact_ann", LOC)
    assert appt["deleted"] is False
    start = datetime.fromisoformat(appt["startTime"])
    assert start == workday(3, 10) and start.utcoffset() == workday(3, 10).astimezone(TZ).utcoffset()
    assert appt["startTime"].endswith(("+01:00", "+02:00"))
    assert appt["dateAdded"].endswith("Z") and len(appt["dateAdded"]) == len("2026-07-17T09:41:05.921Z")
    for header in RATE_HEADERS:
        assert header in r.headers
    assert r.headers["x-ratelimit-max"] == "100" and r.headers["x-ratelimit-interval-milliseconds"] == "10000"


def test_deleted_appointment_still_answers_with_deleted_true(client: httpx.Client) -> None:
    r = client.get("/calendars/events/appointments/appt_gone")
    assert r.status_code == 200 and r.json()["appointment"]["deleted"] is True
    missing = client.get("/calendars/events/appointments/nope")
    assert missing.status_code == 404 and set(missing.json()) >= {"statusCode", "message", "traceId"}


def test_contact_appointments_match_the_fixture_keys_and_skip_deleted(client: httpx.Client) -> None:
    expected = set(fixture("ghl.contact_appointments.assembled_from_spec_field_examples.json")["events"][0])
    r = client.get("/contacts/contact_ann/appointments", headers=CONTACTS_HEADERS)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"events", "traceId"}
    assert [e["id"] for e in body["events"]] == ["appt_past", "appt_future"]
    for event in body["events"]:
        assert set(event) == expected
        assert event["appointmentStatus"] in {"new", "confirmed", "cancelled", "showed", "noshow", "invalid"}
    bob = client.get("/contacts/contact_bob/appointments", headers=CONTACTS_HEADERS).json()["events"]
    assert [e["id"] for e in bob] == ["appt_other"]  # appt_gone is deleted


def test_webhook_events_have_the_documented_shape(sim: GhlSimulator) -> None:
    expected = fixture("ghl.webhook.appointment_create.json")
    sim.cancel("appt_future")
    (event,) = sim.emitted.drain()
    assert event.name == "AppointmentUpdate" and event.account == LOC
    assert set(event.payload) == set(expected)
    assert set(event.payload["appointment"]) == set(expected["appointment"])
    assert event.payload["type"] == "AppointmentUpdate" and event.payload["appointment"]["appointmentStatus"] == (
        "cancelled"
    )


# ----------------------------------------------------------------------------- auth and Version


def test_auth_and_version_errors(server: SimulatorServer, client: httpx.Client) -> None:
    url = f"{server.base_url}/calendars/events/appointments/appt_future"
    for headers in ({"Version": "2021-04-15"}, {"Authorization": "Bearer wrong", "Version": "2021-04-15"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401
        body = r.json()
        assert {k: body[k] for k in ("statusCode", "message", "error")} == {
            "statusCode": 401,
            "message": "Invalid token: access token is invalid",
            "error": "Unauthorized",
        }
        assert body["traceId"]
    no_version = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert no_version.status_code == 400 and no_version.json()["statusCode"] == 400
    bad_version = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}", "Version": "2020-01-01"})
    assert bad_version.status_code == 400
    for version in ("2021-04-15", "2021-07-28", "2023-02-21"):
        assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}", "Version": version}).status_code == 200
    # another location's token sees neither the appointment nor this location's data
    other = {"Authorization": f"Bearer {TOKEN2}", "Version": "2021-04-15"}
    assert httpx.get(url, headers=other).status_code == 404
    r = client.get("/contacts/search/duplicate", params={"locationId": LOC2, "email": "zed@example.com"})
    assert r.status_code == 403


# ----------------------------------------------------------------------------- reads


def test_calendar_events_filter_by_start_time_only(client: httpx.Client) -> None:
    start = workday(3, 10)
    base = {"locationId": LOC, "calendarId": CAL}

    def ids(lo: datetime, hi: datetime) -> list[str]:
        r = client.get("/calendars/events", params={**base, "startTime": ms(lo), "endTime": ms(hi)})
        assert r.status_code == 200 and set(r.json()) == {"events", "traceId"}
        return [e["id"] for e in r.json()["events"]]

    assert ids(start, start + timedelta(minutes=1)) == ["appt_future"]  # start inclusive
    assert ids(start - timedelta(hours=1), start) == []  # end exclusive
    assert ids(start + timedelta(minutes=10), start + timedelta(hours=2)) == []  # overlapping, started before
    assert ids(workday(-30, 0), workday(30, 0)) == ["appt_past", "appt_future"]  # deleted one absent
    item = client.get("/calendars/events", params={**base, "startTime": ms(start), "endTime": ms(start) + 1}).json()
    assert item["events"][0]["deleted"] is False and "appoinmentStatus" in item["events"][0]
    r = client.get("/calendars/events", params={"locationId": LOC, "startTime": 0, "endTime": 1})
    assert r.status_code == 422 and isinstance(r.json()["message"], list)
    r = client.get("/calendars/events", params={**base, "startTime": "soon", "endTime": 1})
    assert r.status_code == 422


def test_duplicate_contact_search(client: httpx.Client) -> None:
    r = client.get("/contacts/search/duplicate", params={"locationId": LOC, "email": "ann@example.COM"})
    assert r.status_code == 200
    body = r.json()
    assert body["contact"]["id"] == "contact_ann" and body["traceId"]
    assert {"id", "email", "locationId", "firstName", "lastName", "dateAdded"} <= set(body["contact"])
    none = client.get("/contacts/search/duplicate", params={"locationId": LOC, "email": "nobody@example.com"})
    assert none.status_code == 200 and none.json()["contact"] is None and none.json()["traceId"]


def test_free_slots_shape_range_and_booked_slots(client: httpx.Client, sim: GhlSimulator) -> None:
    booked = workday(3, 10)
    lo, hi = booked - timedelta(days=1), booked + timedelta(days=1)
    r = client.get(f"/calendars/{CAL}/free-slots", params={"startDate": ms(lo), "endDate": ms(hi)})
    assert r.status_code == 200
    body = r.json()
    fixture_day = next(iter(fixture("ghl.calendar_free_slots.json").values()))
    days = {k: v for k, v in body.items() if k != "traceId"}
    assert body["traceId"] and days
    slots = []
    for day, value in days.items():
        assert len(day) == 10 and datetime.strptime(day, "%Y-%m-%d")
        assert set(value) == set(fixture_day)
        for slot in value["slots"]:
            assert slot.endswith(("+01:00", "+02:00")) and slot[:10] == day
            slots.append(datetime.fromisoformat(slot))
    assert booked not in slots
    assert booked + timedelta(minutes=30) in slots and booked - timedelta(minutes=30) in slots
    assert all(lo <= s <= hi for s in slots)
    # a cancelled appointment frees its slot
    sim.cancel("appt_future")
    r = client.get(f"/calendars/{CAL}/free-slots", params={"startDate": ms(lo), "endDate": ms(hi)})
    freed = [datetime.fromisoformat(s) for k, v in r.json().items() if k != "traceId" for s in v["slots"]]
    assert booked in freed
    # another zone renders other dates/offsets for the same instants
    ny = client.get(
        f"/calendars/{CAL}/free-slots", params={"startDate": ms(lo), "endDate": ms(hi), "timezone": "America/New_York"}
    ).json()
    assert {datetime.fromisoformat(s) for k, v in ny.items() if k != "traceId" for s in v["slots"]} == set(freed)
    # ≤ 31 days
    start = datetime.now(UTC)
    ok = client.get(
        f"/calendars/{CAL}/free-slots", params={"startDate": ms(start), "endDate": ms(start + timedelta(days=31))}
    )
    assert ok.status_code == 200
    too_long = client.get(
        f"/calendars/{CAL}/free-slots", params={"startDate": ms(start), "endDate": ms(start + timedelta(days=31)) + 1}
    )
    assert too_long.status_code == 422
    assert too_long.json()["statusCode"] == 422 and isinstance(too_long.json()["message"], list)
    past = client.get(
        f"/calendars/{CAL}/free-slots",
        params={"startDate": ms(start - timedelta(days=5)), "endDate": ms(start - timedelta(days=1))},
    )
    assert past.status_code == 200 and set(past.json()) == {"traceId"}


# ----------------------------------------------------------------------------- writes


def test_book_then_the_slot_is_taken(client: httpx.Client, sim: GhlSimulator) -> None:
    slot = workday(6, 13, 30)
    body = {
        "calendarId": CAL, "locationId": LOC, "contactId": "contact_new",
        "startTime": slot.astimezone(TZ).isoformat(), "title": "Intro",
    }  # fmt: skip
    r = client.post("/calendars/events/appointments", json=body)
    assert r.status_code == 200, r.text
    created = r.json()
    assert set(created) >= OBSERVED_WRITE_KEYS
    assert created["status"] == "booked" and created["appointmentStatus"] == "confirmed"
    assert datetime.fromisoformat(created["startTime"]) == slot
    assert datetime.fromisoformat(created["endTime"]) == slot + timedelta(minutes=30)
    taken = client.post("/calendars/events/appointments", json={**body, "contactId": "contact_bob"})
    assert taken.status_code == 400 and taken.json()["message"] == SLOT_TAKEN_MESSAGE
    overlapping = client.post(
        "/calendars/events/appointments",
        json={**body, "contactId": "contact_bob", "startTime": (slot - timedelta(minutes=30)).isoformat(),
              "endTime": (slot + timedelta(minutes=15)).isoformat()},
    )  # fmt: skip
    assert overlapping.status_code == 400
    off_grid = client.post(
        "/calendars/events/appointments", json={**body, "startTime": (slot + timedelta(minutes=7)).isoformat()}
    )
    assert off_grid.status_code == 400
    forced = client.post("/calendars/events/appointments", json={**body, "ignoreFreeSlotValidation": True})
    assert forced.status_code == 200  # GHL lets integrations skip the slot check
    assert slot not in sim.free_slots(CAL, slot - timedelta(hours=1), slot + timedelta(hours=1))
    assert [e.name for e in sim.emitted.list()] == ["AppointmentCreate", "AppointmentCreate"]
    got = client.get(f"/calendars/events/appointments/{created['id']}").json()["appointment"]
    assert got["createdBy"]["source"] == "third_party" and got["title"] == "Intro"
    missing = client.post("/calendars/events/appointments", json={"calendarId": CAL})
    assert missing.status_code == 422 and len(missing.json()["message"]) == 3
    foreign = client.post("/calendars/events/appointments", json={**body, "locationId": LOC2})
    assert foreign.status_code == 403
    bad_status = client.post("/calendars/events/appointments", json={**body, "appointmentStatus": "booked"})
    assert bad_status.status_code == 422


def test_reschedule_cancel_status_and_delete_over_the_api(client: httpx.Client, sim: GhlSimulator) -> None:
    old = client.get("/calendars/events/appointments/appt_future").json()["appointment"]
    new_start = workday(7, 15)
    r = client.put("/calendars/events/appointments/appt_future", json={"startTime": new_start.isoformat()})
    assert r.status_code == 200 and r.json()["id"] == "appt_future"
    moved = client.get("/calendars/events/appointments/appt_future").json()["appointment"]
    assert datetime.fromisoformat(moved["startTime"]) == new_start
    assert datetime.fromisoformat(moved["endTime"]) == new_start + timedelta(minutes=30)
    assert parse(moved["dateUpdated"]) > parse(old["dateUpdated"])
    # moving onto a taken slot is refused
    blocked = client.put("/calendars/events/appointments/appt_other", json={"startTime": new_start.isoformat(),
                                                                           "calendarId": CAL})  # fmt: skip
    assert blocked.status_code == 400 and blocked.json()["message"] == SLOT_TAKEN_MESSAGE
    cancelled = client.put("/calendars/events/appointments/appt_future", json={"appointmentStatus": "cancelled"})
    assert cancelled.status_code == 200 and cancelled.json()["appointmentStatus"] == "cancelled"
    assert new_start in sim.free_slots(CAL, new_start, new_start + timedelta(minutes=1))
    assert client.put("/calendars/events/appointments/appt_past", json={"appointmentStatus": "noshow"}).json()[
        "appoinmentStatus"
    ] == "noshow"
    deleted = client.request("DELETE", "/calendars/events/appt_other", json={})
    assert deleted.status_code == 200 and deleted.json()["succeeded"] is True and deleted.json()["traceId"]
    assert client.get("/calendars/events/appointments/appt_other").json()["appointment"]["deleted"] is True
    bob = client.get("/contacts/contact_bob/appointments", headers=CONTACTS_HEADERS).json()["events"]
    assert bob == []
    assert [e.name for e in sim.emitted.list()] == [
        "AppointmentUpdate", "AppointmentUpdate", "AppointmentUpdate", "AppointmentDelete",
    ]  # fmt: skip


def test_python_admin_changes_update_date_updated(sim: GhlSimulator) -> None:
    before = sim.appointment("appt_future")
    time.sleep(0.002)
    after = sim.reschedule("appt_future", workday(8, 9))
    assert after["id"] == "appt_future" and parse(after["dateUpdated"]) > parse(before["dateUpdated"])
    assert sim.set_status("appt_past", "noshow")["appointmentStatus"] == "noshow"
    booked = sim.book(CAL, workday(8, 11), email="walk-in@example.com", first_name="Walk")
    assert booked["contactId"] == sim.contact_id(LOC, "WALK-IN@example.com")
    assert booked["createdBy"]["source"] == "booking_widget"
    with pytest.raises(SimulatorError):
        sim.book(CAL, workday(8, 11), contact_id="contact_bob")  # taken
    with pytest.raises(SimulatorError):
        sim.book(CAL, workday(8, 11, 10), contact_id="contact_bob")  # not on the grid
    sim.book(CAL, workday(8, 11), contact_id="contact_bob", force=True)
    assert sim.delete("appt_past")["deleted"] is True
    names = [e.name for e in sim.emitted.list()]
    assert names == ["AppointmentUpdate", "AppointmentUpdate", "AppointmentCreate", "AppointmentCreate",
                     "AppointmentDelete"]  # fmt: skip


def test_admin_http_interface(server: SimulatorServer, sim: GhlSimulator) -> None:
    with httpx.Client(base_url=f"{server.base_url}/_admin", timeout=5) as admin:
        slot = workday(9, 10)
        r = admin.post("/book", json={"calendarId": CAL, "startTime": slot.isoformat(), "email": "ann@example.com"})
        assert r.status_code == 200 and r.json()["contactId"] == "contact_ann"
        event_id = r.json()["id"]
        assert admin.post("/book", json={"calendarId": CAL, "startTime": slot.isoformat(),
                                         "email": "x@example.com"}).status_code == 400  # fmt: skip
        assert admin.post(f"/appointments/{event_id}/status", json={"status": "showed"}).json()[
            "appointmentStatus"
        ] == "showed"
        r = admin.post(f"/appointments/{event_id}/reschedule", json={"startTime": workday(9, 12).isoformat()})
        assert datetime.fromisoformat(r.json()["startTime"]) == workday(9, 12)
        assert admin.post(f"/appointments/{event_id}/cancel").json()["appointmentStatus"] == "cancelled"
        assert admin.delete(f"/appointments/{event_id}").json()["deleted"] is True
        emitted = admin.get("/emitted").json()["events"]
        assert [e["name"] for e in emitted] == [
            "AppointmentCreate", "AppointmentUpdate", "AppointmentUpdate", "AppointmentUpdate", "AppointmentDelete",
        ]  # fmt: skip
        assert len(admin.post("/emitted/drain").json()["events"]) == 5 and admin.get("/emitted").json()["events"] == []
        state = admin.get("/state").json()
        assert {loc["id"] for loc in state["locations"]} == {LOC, LOC2}
        assert admin.put("/config", json={"rate_limit": 7}).json()["rate_limit"] == 7
        assert admin.put("/faults", json={"latency": 0.0, "seed": 3}).json()["seed"] == 3
        assert admin.post("/reset").json() == {"ok": True}
        assert sim.appointment("appt_future")["appointmentStatus"] == "confirmed"
        assert admin.get("/appointments/unknown").status_code == 400


def test_ids_are_deterministic_from_the_seed() -> None:
    appointment = {"calendar_id": "C", "contact_id": "a@b.co", "start": workday(3, 10)}
    seed = {"locations": [{"id": "L", "token": "t", "timezone": TZ_NAME, "calendars": [{"name": "C"}],
                           "contacts": [{"email": "a@b.co"}], "appointments": [appointment]}]}  # fmt: skip
    first, second = GhlSimulator(seed, id_seed=5), GhlSimulator(seed, id_seed=5)
    assert first.appointments() == second.appointments()
    cal = first.appointments()[0]["calendarId"]
    one, two = (s.book(cal, workday(3, 11), email="c@d.co") for s in (first, second))
    assert one["id"] == two["id"] and one["contactId"] == two["contactId"]
    assert GhlSimulator(seed, id_seed=6).appointments()[0]["id"] != first.appointments()[0]["id"]


# ----------------------------------------------------------------------------- rate limits and accounting


def test_rate_limit_headers_and_429_exactly_at_the_limit(client: httpx.Client, sim: GhlSimulator) -> None:
    sim.configure(rate_limit=5, rate_window_seconds=1)
    answers = [client.get("/contacts/contact_ann/appointments", headers=CONTACTS_HEADERS) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:5]] == ["4", "3", "2", "1", "0"]
    limited = answers[5]
    assert limited.json()["statusCode"] == 429 and limited.json()["traceId"]
    assert limited.headers["x-ratelimit-remaining"] == "0" and limited.headers["x-ratelimit-max"] == "5"
    for header in RATE_HEADERS:
        assert header in limited.headers
    retry_after = int(limited.headers["retry-after"])
    assert retry_after == 1
    assert len(sim.accounting.accepted(LOC)) == 5 and len(sim.accounting.rate_limited(LOC)) == 1
    assert sim.max_requests_in_window(LOC, 1.0) == 5
    # another location has its own budget
    other = {"Authorization": f"Bearer {TOKEN2}", "Version": "2021-07-28"}
    assert client.get("/contacts/c_zed/appointments", headers=other).status_code == 200
    time.sleep(retry_after)
    assert client.get("/contacts/contact_ann/appointments", headers=CONTACTS_HEADERS).status_code == 200


def test_moving_window_never_exceeds_the_limit_under_a_flood(client: httpx.Client, sim: GhlSimulator) -> None:
    sim.configure(rate_limit=8, rate_window_seconds=1)
    deadline = time.monotonic() + 2.3
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(client.get("/calendars/events/appointments/appt_future").status_code)
    accepted = sim.accounting.accepted(LOC)
    assert statuses.count(200) == len(accepted) and statuses.count(429) == len(sim.accounting.rate_limited(LOC))
    assert sim.max_requests_in_window(LOC, 1.0) == 8
    assert 16 <= len(accepted) <= 8 * 3  # at most one full window per second (+ the first)
    assert sim.accounting.summary(LOC, 1.0)[LOC]["max_in_window"] == 8


def test_daily_limit(client: httpx.Client, sim: GhlSimulator) -> None:
    sim.configure(daily_limit=3)
    answers = [client.get("/calendars/events/appointments/appt_future") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[2].headers["x-ratelimit-daily-remaining"] == "0"
    assert int(answers[3].headers["retry-after"]) > 80_000  # until the day window ends


# ----------------------------------------------------------------------------- faults


def test_error_injection_is_deterministic_and_realistic(client: httpx.Client, sim: GhlSimulator) -> None:
    def run() -> list[int]:
        sim.reset()
        sim.faults.configure(error_rate=0.5, seed=11)
        return [client.get("/calendars/events/appointments/appt_future").status_code for _ in range(30)]

    first = run()
    assert first == run()
    assert 5 <= sum(s >= 500 for s in first) <= 25 and set(first) <= {200, 500, 502, 503}
    assert sim.faults.injected["errors"] == sum(s >= 500 for s in first)
    sim.faults.configure(error_rate=1.0, error_statuses=(500,))
    r = client.get("/calendars/events/appointments/appt_future")
    assert r.status_code == 500 and r.json()["traceId"] and "x-ratelimit-remaining" in r.headers
    sim.faults.configure(error_statuses=(502,))
    r = client.get("/calendars/events/appointments/appt_future")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert len(sim.accounting.accepted(LOC)) == 32  # injected 5xx still spent quota


def test_error_after_commit_applies_the_write(client: httpx.Client, sim: GhlSimulator) -> None:
    sim.faults.configure(error_rate=1.0, error_statuses=(503,), error_phase="after")
    slot = workday(10, 10)
    body = {"calendarId": CAL, "locationId": LOC, "contactId": "contact_new", "startTime": slot.isoformat()}
    assert client.post("/calendars/events/appointments", json=body).status_code == 503
    assert slot not in sim.free_slots(CAL, slot, slot + timedelta(minutes=1))  # it was booked anyway


def test_latency_and_timeouts(server: SimulatorServer, client: httpx.Client, sim: GhlSimulator) -> None:
    sim.faults.configure(latency=0.15)
    started = time.monotonic()
    assert client.get("/calendars/events/appointments/appt_future").status_code == 200
    assert time.monotonic() - started >= 0.15
    sim.faults.configure(latency=0.0, timeout_rate=1.0, timeout_seconds=3.0)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/calendars/events/appointments/appt_future", timeout=0.3)
    assert sim.faults.injected["timeouts"] == 1
    sim.faults.clear()
    assert client.get("/calendars/events/appointments/appt_future").status_code == 200


def test_429_bursts(server: SimulatorServer, client: httpx.Client, sim: GhlSimulator) -> None:
    sim.faults.burst_429(count=2)
    answers = [client.get("/calendars/events/appointments/appt_future") for _ in range(3)]
    assert [r.status_code for r in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "1" and answers[0].headers["x-ratelimit-remaining"] == "0"
    assert len(sim.accounting.rate_limited(LOC)) == 2 and len(sim.accounting.accepted(LOC)) == 1
    httpx.post(f"{server.base_url}/_admin/faults/burst_429", json={"seconds": 0.4, "account": LOC}).raise_for_status()
    limited = client.get("/calendars/events/appointments/appt_future")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    other = {"Authorization": f"Bearer {TOKEN2}", "Version": "2021-07-28"}
    assert client.get("/contacts/c_zed/appointments", headers=other).status_code == 200  # burst is per location
    time.sleep(0.45)
    assert client.get("/calendars/events/appointments/appt_future").status_code == 200


def test_server_starts_fast_and_stops_with_a_stalled_request_in_flight() -> None:
    sim = GhlSimulator(make_seed())
    started = time.monotonic()
    server = SimulatorServer(sim).start()
    assert time.monotonic() - started < 1.0
    sim.faults.configure(timeout_rate=1.0, timeout_seconds=60)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{server.base_url}/calendars/events/appointments/appt_future", headers=HEADERS, timeout=0.2)
    stopping = time.monotonic()
    server.stop()
    assert time.monotonic() - stopping < 3.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/calendars/events/appointments/appt_future", headers=HEADERS, timeout=1)
