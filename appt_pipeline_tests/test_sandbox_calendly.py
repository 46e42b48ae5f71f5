"""Calendly simulator over real loopback HTTP (plain httpx, no mocked transport).

Shapes are checked against the published fixtures (``appt_pipeline_tests/fixtures/providers``);
limits are shrunk via ``configure`` to keep the file fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
    CalendlySeed,
    CalendlySimulator,
    CalendlyUser,
    SimulatorError,
    SimulatorServer,
)
from appt_pipeline.sandbox.calendly import API
from appt_pipeline_tests.helpers import PROVIDER_FIXTURES, working_day

FIXTURES = PROVIDER_FIXTURES
NY = ZoneInfo("America/New_York")
OWNER_TOKEN, MEMBER_TOKEN, FREE_TOKEN = "cal-owner-token", "cal-member-token", "cal-free-token"
OWNER_UUID, MEMBER_UUID, FREE_UUID = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
)
OWNER, MEMBER, FREE = (f"{API}/users/{u}" for u in (OWNER_UUID, MEMBER_UUID, FREE_UUID))
ORG = f"{API}/organizations/org-acme"
DISCOVERY = f"{API}/event_types/aaaaaaaa-0000-4000-8000-000000000001"
GROUP = f"{API}/event_types/aaaaaaaa-0000-4000-8000-000000000002"
INVITEE_2_UUID = "iiiiiiii-0000-4000-8000-000000000002"
PAGER = "pager@example.com"
PAGER_EVENTS = 45


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def workday(days_ahead: int, hour: int, minute: int = 0) -> datetime:
    return working_day(days_ahead, hour, minute, tz=NY)


def z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def make_seed() -> CalendlySeed:
    past = datetime.now(UTC) - timedelta(days=80)
    pager_events = [
        CalendlyScheduledEvent(
            event_type="discovery",
            start=(past + timedelta(days=i * 1.5)).replace(minute=0, second=0, microsecond=0),
            invitees=[CalendlyInvitee(email=PAGER, name="Page Er", status="canceled" if i % 9 == 0 else "active")],
        )
        for i in range(PAGER_EVENTS)
    ]
    return CalendlySeed(
        users=[
            CalendlyUser(
                token=OWNER_TOKEN, email="owner@acme.test", name="Olivia Owner", uuid=OWNER_UUID,
                organization="org-acme", role="owner", timezone="America/New_York",
                event_types=[
                    CalendlyEventType(name="Discovery Call", slug="discovery", uuid=DISCOVERY.rsplit("/", 1)[1]),
                    CalendlyEventType(name="Group Demo", slug="group-demo", uuid=GROUP.rsplit("/", 1)[1],
                                      kind="group", max_invitees=3, duration=60),
                ],
                scheduled_events=[
                    CalendlyScheduledEvent(
                        event_type="discovery", start=workday(3, 10), uuid="eeeeeeee-0000-4000-8000-000000000001",
                        invitees=[CalendlyInvitee(email="Ann@Example.com", name="Ann Lee",
                                                  uuid="iiiiiiii-0000-4000-8000-000000000001")],
                    ),
                    CalendlyScheduledEvent(
                        event_type="discovery", start=workday(-10, 11), uuid="eeeeeeee-0000-4000-8000-000000000002",
                        invitees=[CalendlyInvitee(email="gone@example.com", name="Gone Guy", status="canceled",
                                                  cancel_reason="Conflict", uuid=INVITEE_2_UUID)],
                    ),
                    *pager_events,
                ],
            ),
            CalendlyUser(
                token=MEMBER_TOKEN, email="member@acme.test", name="Max Member", uuid=MEMBER_UUID,
                organization="org-acme", role="user",
                event_types=[CalendlyEventType(name="Member Intro", slug="member-intro")],
                scheduled_events=[CalendlyScheduledEvent(event_type="member-intro", start=workday(4, 9),
                                                         invitees=[CalendlyInvitee(email="ann@example.com")])],
            ),
            CalendlyUser(token=FREE_TOKEN, email="free@solo.test", name="Fran Free", uuid=FREE_UUID, plan="free",
                         event_types=[CalendlyEventType(name="Chat", slug="chat")]),
        ]
    )  # fmt: skip


EVENT_1 = f"{API}/scheduled_events/eeeeeeee-0000-4000-8000-000000000001"
INVITEE_1 = f"{EVENT_1}/invitees/iiiiiiii-0000-4000-8000-000000000001"
EVENT_2 = f"{API}/scheduled_events/eeeeeeee-0000-4000-8000-000000000002"
INVITEE_2 = f"{EVENT_2}/invitees/{INVITEE_2_UUID}"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(CalendlySimulator(make_seed(), id_seed=9)) as srv:
        yield srv


@pytest.fixture()
def sim(server: SimulatorServer) -> CalendlySimulator:
    simulator = server.simulator
    assert isinstance(simulator, CalendlySimulator)
    simulator.configure(rate_limit=500, free_rate_limit=50, rate_window_seconds=60, invitee_limits=None)
    simulator.reset()
    return simulator


class Api:
    """Routes canonical ``https://api.calendly.com`` URIs to the simulator, as our clients do."""

    def __init__(self, base_url: str, token: str = OWNER_TOKEN):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=5)

    def _url(self, url: str) -> str:
        return url.removeprefix(API)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.http.get(self._url(url), **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.http.post(self._url(url), **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.http.delete(self._url(url), **kw)


@pytest.fixture()
def api(server: SimulatorServer, sim: CalendlySimulator) -> Iterator[Api]:
    client = Api(server.base_url)
    yield client
    client.http.close()


# ----------------------------------------------------------------------------- shapes


def test_users_me(api: Api) -> None:
    r = api.get("/users/me")
    assert r.status_code == 200
    me = r.json()["resource"]
    assert me["uri"] == OWNER and me["current_organization"] == ORG
    assert {"uri", "name", "email", "slug", "timezone", "current_organization", "scheduling_url"} <= set(me)
    assert r.headers["x-ratelimit-limit"] == "500" and r.headers["x-ratelimit-reset"] == "60"


def test_scheduled_event_and_invitee_shapes_match_the_fixtures(api: Api) -> None:
    event = api.get(EVENT_1).json()["resource"]
    assert set(event) >= set(fixture("calendly.scheduled_event.json")["resource"])
    assert event["uri"] == EVENT_1 and event["event_type"] == DISCOVERY and event["status"] == "active"
    assert parse(event["start_time"]) == workday(3, 10) and event["start_time"].endswith("Z")
    assert event["invitees_counter"] == {"total": 1, "active": 1, "limit": 1}
    assert event["event_memberships"][0]["user"] == OWNER
    invitee = api.get(INVITEE_1).json()["resource"]
    assert set(invitee) >= set(fixture("calendly.invitee_get.json")["resource"])
    assert invitee["uri"] == INVITEE_1 and invitee["event"] == EVENT_1 and invitee["status"] == "active"
    assert invitee["rescheduled"] is False and invitee["old_invitee"] is None and invitee["no_show"] is None
    canceled = api.get(INVITEE_2).json()["resource"]
    assert set(canceled) >= set(fixture("calendly.invitee_get.canceled.json")["resource"])
    assert set(canceled["cancellation"]) == {"canceled_by", "reason", "canceler_type", "created_at"}
    assert canceled["cancellation"]["reason"] == "Conflict" and canceled["canceled"] is True
    old_event = api.get(EVENT_2).json()["resource"]
    assert old_event["status"] == "canceled" and old_event["cancellation"]["canceler_type"] == "invitee"
    listed = api.get(f"{EVENT_1}/invitees").json()
    assert set(listed) == {"collection", "pagination"}
    assert set(listed["collection"][0]) >= set(fixture("calendly.invitees_list.json")["collection"][0])
    assert set(listed["pagination"]) == set(fixture("calendly.invitees_list.json")["pagination"])
    events = api.get("/scheduled_events", params={"user": OWNER, "count": 1}).json()
    spec = fixture("calendly.scheduled_events_list.spec_example.json")
    assert set(events["collection"][0]) >= set(spec["collection"][0])
    assert set(events["pagination"]) == set(spec["pagination"])
    assert api.get(f"{API}/scheduled_events/nope").json() == {
        "title": "Resource Not Found",
        "message": "The server could not find the requested resource.",
    }


def test_event_types(api: Api) -> None:
    et = api.get(DISCOVERY).json()["resource"]
    assert set(et) >= set(fixture("calendly.event_type.json")["resource"])
    assert et["uri"] == DISCOVERY and et["profile"]["owner"] == OWNER and et["duration"] == 30
    listed = api.get("/event_types", params={"user": OWNER}).json()
    assert [t["uri"] for t in listed["collection"]] == [DISCOVERY, GROUP]
    assert set(listed["collection"][0]) >= set(fixture("calendly.event_types_list.spec_example.json")["collection"][0])
    org_wide = api.get("/event_types", params={"organization": ORG, "count": 2}).json()
    assert org_wide["pagination"]["count"] == 2 and org_wide["pagination"]["next_page_token"]
    rest = api.get(org_wide["pagination"]["next_page"]).json()
    assert [t["name"] for t in rest["collection"]] == ["Member Intro"] and rest["pagination"]["next_page"] is None
    assert api.get("/event_types").status_code == 400


def test_webhook_payloads_have_the_documented_shape(sim: CalendlySimulator) -> None:
    sim.cancel_invitee(INVITEE_1, reason="Busy")
    (event,) = sim.emitted.drain()
    expected = fixture("calendly.invitee_canceled.docs_with_scheduled_event.json")["payload"]
    assert event.name == "invitee.canceled" and event.account == OWNER
    assert set(event.payload) >= set(expected)
    assert set(event.payload["scheduled_event"]) >= set(expected["scheduled_event"])
    assert event.payload["cancellation"]["reason"] == "Busy"


# ----------------------------------------------------------------------------- auth, scope, validation


def test_auth_errors(server: SimulatorServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": OWNER_TOKEN}):
        r = httpx.get(f"{server.base_url}/users/me", headers=headers)
        assert r.status_code == 401
        assert r.json() == {"title": "Unauthenticated", "message": "The access token is invalid"}
        assert "x-ratelimit-limit" not in r.headers


def test_list_scope_and_parameter_errors(server: SimulatorServer, api: Api) -> None:
    r = api.get("/scheduled_events")
    assert r.status_code == 400
    body = r.json()
    assert body["title"] == "Invalid Argument" and {d["parameter"] for d in body["details"]} == {"user", "organization"}
    for params in ({"count": 0}, {"count": 101}, {"status": "done"}, {"sort": "name:asc"},
                   {"min_start_time": "yesterday"}, {"page_token": "garbage!"}):  # fmt: skip
        assert api.get("/scheduled_events", params={"user": OWNER, **params}).status_code == 400, params
    member = Api(server.base_url, MEMBER_TOKEN)
    assert member.get("/scheduled_events", params={"organization": ORG}).status_code == 403  # not an admin
    assert member.get("/scheduled_events", params={"user": OWNER}).status_code == 403
    assert member.get(EVENT_1).status_code == 403
    assert member.get("/scheduled_events", params={"user": MEMBER}).json()["pagination"]["count"] == 1
    outsider = Api(server.base_url, FREE_TOKEN)
    assert outsider.get("/scheduled_events", params={"organization": ORG}).status_code == 403
    # the owner (admin) sees the member's events, alone or within the organization
    assert api.get("/scheduled_events", params={"user": MEMBER, "organization": ORG}).status_code == 200


def test_filters_and_start_time_window(api: Api) -> None:
    base = {"organization": ORG, "count": 100}
    ann = api.get("/scheduled_events", params={**base, "invitee_email": "ann@example.com"}).json()["collection"]
    assert len(ann) == 2  # case-insensitive, across the organization's users
    start = workday(3, 10)
    window = {**base, "min_start_time": z(start), "max_start_time": z(start + timedelta(minutes=1))}
    assert [e["uri"] for e in api.get("/scheduled_events", params=window).json()["collection"]] == [EVENT_1]
    exclusive = {**base, "min_start_time": z(start - timedelta(hours=1)), "max_start_time": z(start)}
    assert EVENT_1 not in [e["uri"] for e in api.get("/scheduled_events", params=exclusive).json()["collection"]]
    canceled = api.get("/scheduled_events", params={**base, "status": "canceled"}).json()["collection"]
    assert canceled and all(e["status"] == "canceled" for e in canceled)
    asc = api.get("/scheduled_events", params={**base, "invitee_email": PAGER}).json()["collection"]
    desc = api.get("/scheduled_events", params={**base, "invitee_email": PAGER, "sort": "start_time:desc"}).json()
    assert [e["uri"] for e in desc["collection"]] == [e["uri"] for e in reversed(asc)]
    assert [e["start_time"] for e in asc] == sorted(e["start_time"] for e in asc)


def test_pagination_to_the_end_with_inserts_between_pages(api: Api, sim: CalendlySimulator) -> None:
    params = {"organization": ORG, "invitee_email": PAGER, "count": 10}
    first = api.get("/scheduled_events", params=params).json()
    seen = [e["uri"] for e in first["collection"]]
    nxt = first["pagination"]["next_page"]
    query = parse_qs(urlsplit(nxt).query)
    assert nxt.startswith(f"{API}/scheduled_events?")
    assert query["invitee_email"] == [PAGER] and query["organization"] == [ORG] and query["count"] == ["10"]
    assert query["page_token"] == [first["pagination"]["next_page_token"]]
    assert first["pagination"]["previous_page"] is None
    # a booking for the same e-mail appears before the unseen pages are read (starts later than all)
    added = sim.book(DISCOVERY, workday(12, 14), PAGER)
    pages = 1
    while nxt:
        page = api.get(nxt).json()
        pages += 1
        assert page["pagination"]["previous_page_token"]
        seen += [e["uri"] for e in page["collection"]]
        nxt = page["pagination"]["next_page"]
    assert pages == 5 and len(seen) == len(set(seen)) == PAGER_EVENTS + 1
    assert seen[-1] == added["event"]
    # previous_page walks back
    second = api.get("/scheduled_events", params={**params, "page_token": first["pagination"]["next_page_token"]})
    back = api.get(second.json()["pagination"]["previous_page"]).json()
    assert [e["uri"] for e in back["collection"]] == [e["uri"] for e in first["collection"]]
    empty = api.get("/scheduled_events", params={**params, "invitee_email": "nobody@example.com"}).json()
    assert empty == {"collection": [], "pagination": dict.fromkeys(first["pagination"], None) | {"count": 0}}


# ----------------------------------------------------------------------------- availability and booking


def test_available_times(api: Api, sim: CalendlySimulator) -> None:
    start = workday(3, 0)
    params = {"event_type": DISCOVERY, "start_time": z(start), "end_time": z(start + timedelta(days=1))}
    r = api.get("/event_type_available_times", params=params)
    assert r.status_code == 200 and set(r.json()) == {"collection"}
    items = r.json()["collection"]
    assert set(items[0]) == set(fixture("calendly.event_type_available_times.json")["collection"][0])
    starts = [parse(i["start_time"]) for i in items]
    assert workday(3, 10) not in starts  # booked
    assert workday(3, 9) in starts and workday(3, 10, 30) in starts and workday(3, 16, 30) in starts
    assert workday(3, 17) not in starts and all(i["invitees_remaining"] == 1 for i in items)
    seven = {**params, "end_time": z(start + timedelta(days=7))}
    assert api.get("/event_type_available_times", params=seven).status_code == 200
    eight = {**params, "end_time": z(start + timedelta(days=7, seconds=1))}
    too_long = api.get("/event_type_available_times", params=eight)
    assert too_long.status_code == 400 and too_long.json()["details"][0]["parameter"] == "end_time"
    past = {**params, "start_time": z(datetime.now(UTC) - timedelta(hours=1))}
    assert api.get("/event_type_available_times", params=past).status_code == 400
    # group event types keep a slot open until it is full
    group = {"event_type": GROUP, "start_time": z(start), "end_time": z(start + timedelta(days=1))}
    slot = workday(3, 13)
    for n in range(3):
        remaining = {parse(i["start_time"]): i["invitees_remaining"]
                     for i in api.get("/event_type_available_times", params=group).json()["collection"]}  # fmt: skip
        assert remaining[slot] == 3 - n
        sim.book(GROUP, slot, f"g{n}@example.com")
    times = [parse(i["start_time"]) for i in api.get("/event_type_available_times", params=group).json()["collection"]]
    assert slot not in times
    group_event = api.get(sim.invitees_of("g2@example.com")[0]["event"]).json()["resource"]
    assert group_event["invitees_counter"] == {"total": 3, "active": 3, "limit": 3}


def test_create_invitee_and_already_filled(api: Api, sim: CalendlySimulator) -> None:
    request = fixture("calendly.create_event_invitee.request.json")
    slot = workday(5, 11)
    body = {**request, "event_type": DISCOVERY, "start_time": z(slot), "event_guests": ["guest@example.com"]}
    r = api.post("/invitees", json=body)
    assert r.status_code == 201, r.text
    invitee = r.json()["resource"]
    assert set(invitee) >= set(fixture("calendly.invitee_get.json")["resource"])
    assert invitee["scheduling_method"] == "instant_book" and invitee["invitee_scheduled_by"] == OWNER
    assert invitee["email"] == request["invitee"]["email"] and invitee["first_name"] == "John"
    assert invitee["questions_and_answers"] == request["questions_and_answers"]
    event = api.get(invitee["event"]).json()["resource"]
    assert parse(event["start_time"]) == slot and event["location"] == {"type": "physical", "location": "123 Main St"}
    assert event["event_guests"][0]["email"] == "guest@example.com"
    taken = api.post("/invitees", json={**body, "invitee": {**request["invitee"], "email": "other@example.com"}})
    assert taken.status_code == 400
    assert [d.get("code") for d in taken.json()["details"]] == ["already_filled"]
    off_grid = api.post("/invitees", json={**body, "start_time": z(slot + timedelta(minutes=5))})
    assert off_grid.status_code == 400 and "code" not in off_grid.json()["details"][0]
    invalid = api.post("/invitees", json={"event_type": DISCOVERY, "start_time": z(slot), "invitee": {"name": "X"}})
    assert invalid.status_code == 400
    assert {d["parameter"] for d in invalid.json()["details"]} == {"invitee.email", "invitee.timezone"}
    assert api.post("/invitees", json={**body, "event_type": f"{API}/event_types/unknown"}).status_code == 404
    assert [e.name for e in sim.emitted.list()] == ["invitee.created"]


def test_invitee_create_has_its_own_limit(api: Api, sim: CalendlySimulator) -> None:
    sim.configure(invitee_limits={"standard": [[2, 60]]})
    slots = [workday(6, h) for h in (9, 10, 11)]
    body = {"event_type": DISCOVERY, "invitee": {"name": "A", "email": "a@example.com", "timezone": "UTC"}}
    answers = [api.post("/invitees", json={**body, "start_time": z(s)}) for s in slots]
    assert [r.status_code for r in answers] == [201, 201, 429]
    assert answers[2].headers["x-ratelimit-limit"] == "2" and answers[2].headers["x-ratelimit-remaining"] == "0"
    assert api.get("/users/me").status_code == 200  # the general budget is untouched


# ----------------------------------------------------------------------------- admin changes


def test_reschedule_chain_links(api: Api, sim: CalendlySimulator) -> None:
    new = sim.reschedule(INVITEE_1, workday(6, 14), reason="Moved")
    old = api.get(INVITEE_1).json()["resource"]
    assert old["status"] == "canceled" and old["rescheduled"] is True and old["new_invitee"] == new["uri"]
    assert set(old["cancellation"]) == {"canceled_by", "reason", "canceler_type", "created_at"}
    assert old["cancellation"]["canceler_type"] == "invitee" and old["cancellation"]["reason"] == "Moved"
    fetched = api.get(new["uri"]).json()["resource"]
    assert fetched["old_invitee"] == INVITEE_1 and fetched["status"] == "active" and fetched["rescheduled"] is False
    assert new["event"] != EVENT_1 and new["uri"].startswith(f"{new['event']}/invitees/")
    assert api.get(EVENT_1).json()["resource"]["status"] == "canceled"
    assert parse(api.get(new["event"]).json()["resource"]["start_time"]) == workday(6, 14)
    assert parse(old["updated_at"]) > parse(old["created_at"])
    assert [e.name for e in sim.emitted.list()] == ["invitee.canceled", "invitee.created"]
    # the old slot is open again, the new one is taken
    times = sim.available_times(DISCOVERY, workday(3, 0), workday(3, 23))
    assert workday(3, 10) in times
    with pytest.raises(SimulatorError):
        sim.book(DISCOVERY, workday(6, 14), "x@example.com")
    with pytest.raises(SimulatorError):
        sim.reschedule(INVITEE_1, workday(7, 9))  # already canceled


def test_cancel_and_no_show(server: SimulatorServer, api: Api, sim: CalendlySimulator) -> None:
    r = api.post(f"{EVENT_1}/cancellation", json={"reason": "Host sick"})
    assert r.status_code == 201
    assert r.json()["resource"] == {
        "canceled_by": "Olivia Owner", "reason": "Host sick", "canceler_type": "host",
        "created_at": r.json()["resource"]["created_at"],
    }  # fmt: skip
    invitee = api.get(INVITEE_1).json()["resource"]
    assert invitee["status"] == "canceled" and invitee["cancellation"]["canceler_type"] == "host"
    again = api.post(f"{EVENT_1}/cancellation", json={})
    assert again.status_code == 403 and again.json()["title"] == "Permission Denied"
    past = next(e for e in sim.snapshot()["users"][0]["scheduled_events"] if e["status"] == "active"
                and parse(e["end_time"]) < datetime.now(UTC))  # fmt: skip
    assert api.post(f"{past['uri']}/cancellation", json={}).json()["message"] == "Event in the past"
    # no-show via admin HTTP, then via the API
    past_invitee = past["invitees"][0]["uri"]
    admin = httpx.Client(base_url=f"{server.base_url}/_admin", timeout=5)
    marked = admin.post("/invitees/no_show", json={"invitee": past_invitee}).json()
    assert set(marked["no_show"]) == {"uri", "created_at"} and marked["no_show"]["uri"].startswith(API)
    fetched = api.get(past_invitee).json()["resource"]
    assert fetched["no_show"] == marked["no_show"]
    no_show_uuid = marked["no_show"]["uri"].rsplit("/", 1)[1]
    assert api.get(f"/invitee_no_shows/{no_show_uuid}").json()["resource"]["invitee"] == past_invitee
    assert api.delete(f"/invitee_no_shows/{no_show_uuid}").status_code == 204
    assert api.get(past_invitee).json()["resource"]["no_show"] is None
    created = api.post("/invitee_no_shows", json={"invitee": past_invitee})
    assert created.status_code == 201 and created.json()["resource"]["invitee"] == past_invitee
    names = [e.name for e in sim.emitted.list()]
    assert names == ["invitee.canceled", "invitee_no_show.created", "invitee_no_show.deleted",
                     "invitee_no_show.created"]  # fmt: skip
    admin.close()


def test_admin_http_interface(server: SimulatorServer, api: Api, sim: CalendlySimulator) -> None:
    with httpx.Client(base_url=f"{server.base_url}/_admin", timeout=5) as admin:
        slot = workday(8, 15)
        r = admin.post("/book", json={"event_type": "discovery", "start_time": z(slot),
                                      "email": "walk@example.com", "name": "Walk In"})  # fmt: skip
        assert r.status_code == 200 and r.json()["scheduling_method"] is None
        assert admin.post("/book", json={"event_type": DISCOVERY, "start_time": z(slot),
                                         "email": "b@example.com"}).status_code == 400  # fmt: skip
        new = admin.post("/invitees/reschedule", json={"invitee": r.json()["uri"], "start_time": z(workday(8, 16))})
        assert new.json()["old_invitee"] == r.json()["uri"]
        canceled = admin.post("/invitees/cancel", json={"invitee": new.json()["uri"], "reason": "No longer needed",
                                                       "canceler_type": "invitee"})  # fmt: skip
        assert canceled.json()["cancellation"]["reason"] == "No longer needed"
        assert len(admin.get("/invitees", params={"email": "walk@example.com"}).json()["invitees"]) == 2
        assert [e["name"] for e in admin.get("/emitted").json()["events"]] == [
            "invitee.created", "invitee.canceled", "invitee.created", "invitee.canceled",
        ]  # fmt: skip
        assert admin.post("/events/cancel", json={"event": EVENT_1}).json()["status"] == "canceled"
        assert admin.get("/available_times", params={"event_type": DISCOVERY}).json()["slots"]
        assert admin.post("/reset").json() == {"ok": True}
        assert api.get(EVENT_1).json()["resource"]["status"] == "active"


# ----------------------------------------------------------------------------- rate limits, faults


def test_rate_limit_headers_and_429_exactly_at_the_limit(server: SimulatorServer, api: Api,
                                                         sim: CalendlySimulator) -> None:  # fmt: skip
    sim.configure(rate_limit=5, free_rate_limit=2, rate_window_seconds=1)
    answers = [api.get("/users/me") for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["4", "3", "2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit"] == "5" for r in answers)
    assert answers[5].headers["x-ratelimit-reset"] == "1" and "retry-after" not in answers[5].headers
    assert answers[5].json()["title"] == "Too Many Requests"
    assert len(sim.accounting.accepted(OWNER)) == 5 and len(sim.accounting.rate_limited(OWNER)) == 1
    assert sim.max_requests_in_window(OWNER, 1.0) == 5
    free = Api(server.base_url, FREE_TOKEN)
    assert [free.get("/users/me").status_code for _ in range(3)] == [200, 200, 429]  # free plan: lower limit
    assert free.get("/users/me").headers["x-ratelimit-tier"] == "free"
    time.sleep(1.0)
    assert api.get("/users/me").status_code == 200


def test_faults(server: SimulatorServer, api: Api, sim: CalendlySimulator) -> None:
    def run() -> list[int]:
        sim.reset()
        sim.faults.configure(error_rate=0.3, seed=5)
        return [api.get("/users/me").status_code for _ in range(20)]

    first = run()
    assert first == run() and any(s >= 500 for s in first) and 200 in first
    sim.faults.configure(error_rate=1.0, error_statuses=[500])
    r = api.get("/users/me")
    assert r.status_code == 500 and set(r.json()) == {"title", "message"} and "x-ratelimit-limit" in r.headers
    sim.faults.clear()
    sim.faults.burst_429(count=1, account=OWNER)
    limited = api.get("/users/me")
    assert limited.status_code == 429 and limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-ratelimit-reset"] == "1"
    httpx.put(f"{server.base_url}/_admin/faults", json={"timeout_rate": 1.0, "timeout_seconds": 2}).raise_for_status()
    with pytest.raises(httpx.ReadTimeout):
        api.get("/users/me", timeout=0.25)
    httpx.delete(f"{server.base_url}/_admin/faults").raise_for_status()
    assert api.get("/users/me").status_code == 200
    summary = httpx.get(f"{server.base_url}/_admin/accounting", params={"account": OWNER, "window": 1}).json()
    assert summary["accounts"][OWNER]["rate_limited"] == 1 and summary["accounts"][OWNER]["max_in_window"] >= 1


def test_ids_are_deterministic() -> None:
    a, b = CalendlySimulator(make_seed(), id_seed=3), CalendlySimulator(make_seed(), id_seed=3)
    assert a.snapshot() == b.snapshot()
    slot = workday(9, 10)
    assert a.book(DISCOVERY, slot, "x@example.com")["uri"] == b.book(DISCOVERY, slot, "x@example.com")["uri"]
