"""Signed webhook deliveries of the provider simulators, received by a real loopback HTTP receiver.

The receiver is a tiny FastAPI app served by ``SimulatorServer``: it records the raw bytes and
headers of every POST, verifies the signature on those exact bytes with
``appt_pipeline.domain.signatures`` (401 when it does not verify) and answers scripted statuses.
Retry delays are shrunk through ``webhook_settings`` to keep the file fast (the real numbers:
docs/providers.md §1.5, §2.6).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from appt_pipeline.domain.signatures import (
    CALENDLY_SIGNATURE_HEADER,
    GHL_FRESH,
    GHL_LEGACY_SIGNATURE_HEADER,
    GHL_SIGNATURE_HEADER,
    GhlKeys,
    SignatureError,
    ghl_replay_verdict,
    load_public_key,
    verify_calendly,
    verify_ghl,
)
from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlySeed,
    CalendlySimulator,
    CalendlyUser,
    GhlSeed,
    GhlSimulator,
    SimulatorServer,
    sample_ghl_seed,
)
from appt_pipeline.sandbox.calendly import API
from appt_pipeline.sandbox.webhooks import EventFeed
from appt_pipeline_tests.helpers import PROVIDER_FIXTURES, working_day

FIXTURES = PROVIDER_FIXTURES
NY = ZoneInfo("America/New_York")
OWNER_TOKEN, MEMBER_TOKEN = "wh-owner-token", "wh-member-token"
OWNER = f"{API}/users/11111111-1111-4111-8111-111111111111"
MEMBER = f"{API}/users/22222222-2222-4222-8222-222222222222"
ORG = f"{API}/organizations/org-wh"
OWNER_TYPE = f"{API}/event_types/aaaaaaaa-0000-4000-8000-0000000000a1"
MEMBER_TYPE = f"{API}/event_types/aaaaaaaa-0000-4000-8000-0000000000b1"
FAST_CALENDLY = {"retry_delay": 0.05, "backoff": 2.0, "max_delay": 0.2, "retry_budget": 3.0, "timeout": 2.0}
FAST_GHL = {"retry_delay": 0.05, "retry_jitter": 0.01, "timeout": 2.0}


# ------------------------------------------------------------------------------------------- receiver


@dataclass
class Hit:
    provider: str
    workspace: str
    body: bytes
    headers: dict[str, str]
    status: int
    error: str | None  # SignatureError reason when the signature did not verify

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records raw deliveries, verifies signatures (401 on failure), answers scripted statuses."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: list[Hit] = []
        self.calendly_keys: dict[str, str] = {}
        self.ghl_keys: dict[str, GhlKeys] = {}
        self.script: deque[int] = deque()  # statuses answered to the next verified deliveries
        self.default_status = 200
        self.delay = 0.0
        self.app = FastAPI()

        @self.app.post("/webhooks/{provider}/{workspace}")
        async def receive(provider: str, workspace: str, request: Request) -> JSONResponse:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            error = None
            try:
                if provider == "calendly":
                    verify_calendly(
                        headers.get(CALENDLY_SIGNATURE_HEADER.lower()),
                        body,
                        self.calendly_keys.get(workspace),
                        now=time.time(),
                    )
                else:
                    verify_ghl(
                        body,
                        signature=headers.get(GHL_SIGNATURE_HEADER.lower()),
                        legacy_signature=headers.get(GHL_LEGACY_SIGNATURE_HEADER),
                        keys=self.ghl_keys.get(workspace, GhlKeys(None)),
                    )
            except SignatureError as exc:
                error = exc.reason
            with self.lock:
                status = 401 if error else (self.script.popleft() if self.script else self.default_status)
                self.hits.append(Hit(provider, workspace, body, headers, status, error))
                delay = self.delay
            if delay:
                await asyncio.sleep(delay)
            return JSONResponse({"ok": status < 300}, status_code=status)

    def received(self, provider: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if provider is None or h.provider == provider]

    def url(self, server: SimulatorServer, provider: str, workspace: str) -> str:
        return f"{server.base_url}/webhooks/{provider}/{workspace}"


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[tuple[Receiver, SimulatorServer]]:
    receiver = Receiver()
    with SimulatorServer(receiver.app) as server:
        yield receiver, server


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, SimulatorServer]) -> Receiver:
    rec = receiver_server[0]
    with rec.lock:
        rec.hits.clear()
        rec.script.clear()
        rec.calendly_keys.clear()
        rec.ghl_keys.clear()
        rec.default_status, rec.delay = 200, 0.0
    return rec


@pytest.fixture
def rserver(receiver_server: tuple[Receiver, SimulatorServer]) -> SimulatorServer:
    return receiver_server[1]


# ------------------------------------------------------------------------------------------- helpers


def workday(days_ahead: int, hour: int, minute: int = 0) -> datetime:
    return working_day(days_ahead, hour, minute, tz=NY)


def calendly_seed() -> CalendlySeed:
    def user(token: str, uri: str, role: str, type_uri: str) -> CalendlyUser:
        return CalendlyUser(
            token=token,
            email=f"{role}@acme.example",
            name=role.title(),
            uuid=uri.rsplit("/", 1)[1],
            organization="org-wh",
            role=role,
            event_types=[CalendlyEventType(name="Intro", slug=f"intro-{role}", uuid=type_uri.rsplit("/", 1)[1])],
        )

    return CalendlySeed(
        users=[user(OWNER_TOKEN, OWNER, "owner", OWNER_TYPE), user(MEMBER_TOKEN, MEMBER, "user", MEMBER_TYPE)]
    )


def calendly_sim(**settings: Any) -> CalendlySimulator:
    return CalendlySimulator(calendly_seed(), webhook_settings={**FAST_CALENDLY, **settings})


def ghl_sim(**settings: Any) -> GhlSimulator:
    seed = GhlSeed(
        locations=[
            *sample_ghl_seed(3, booked_share=0.0).locations,
            *sample_ghl_seed(3, seed=1, location_id="loc_demo_2", token="pit-demo-2", booked_share=0.0).locations,
        ]
    )
    return GhlSimulator(seed, webhook_settings={**FAST_GHL, **settings})


def ghl_keys(sim: GhlSimulator, *, legacy: bool = False) -> GhlKeys:
    keys = sim.webhook_public_keys()
    return GhlKeys(
        load_public_key(keys["ghl_webhook_public_key"]),  # type: ignore[arg-type]
        load_public_key(keys["ghl_webhook_legacy_public_key"]) if legacy else None,  # type: ignore[arg-type]
    )


def ghl_calendar(sim: GhlSimulator, location: str = "loc_demo_1") -> str:
    loc = next(x for x in sim.snapshot()["locations"] if x["id"] == location)
    return loc["calendars"][0]["id"]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# ------------------------------------------------------------------------------------------- Calendly


def test_calendly_webhook_subscription_api() -> None:
    """CAL-SPEC create/list/get/delete shapes, 409 on a duplicate URL, 400/403 rules."""
    sim = calendly_sim()
    with SimulatorServer(sim) as server, httpx.Client(base_url=server.base_url) as client:
        owner = {"Authorization": f"Bearer {OWNER_TOKEN}"}
        member = {"Authorization": f"Bearer {MEMBER_TOKEN}"}
        body = {
            "url": "http://127.0.0.1:9/webhooks/calendly/ws-1",
            "events": ["invitee.created", "invitee.canceled"],
            "organization": ORG,
            "scope": "organization",
            "signing_key": "my-key",
        }
        created = client.post("/webhook_subscriptions", json=body, headers=owner)
        assert created.status_code == 201, created.text
        resource = created.json()["resource"]
        assert set(fixture("calendly.webhook_subscription_create.response.json")["resource"]) <= set(resource)
        assert resource["signing_key"] == "my-key" and resource["state"] == "active"
        assert resource["retry_started_at"] is None and resource["creator"] == OWNER and resource["user"] is None
        uuid = resource["uri"].rsplit("/", 1)[1]

        dup = client.post("/webhook_subscriptions", json=body, headers=owner)
        assert dup.status_code == 409 and dup.json()["title"] == "Already Exists"
        second = client.post(
            "/webhook_subscriptions",
            json={**body, "url": "http://127.0.0.1:9/other", "signing_key": None},
            headers=owner,
        )
        assert second.status_code == 201 and len(second.json()["resource"]["signing_key"]) >= 32

        bad = client.post("/webhook_subscriptions", json={"url": "ftp://x", "events": []}, headers=owner)
        assert bad.status_code == 400
        assert {d["parameter"] for d in bad.json()["details"]} >= {"url", "events", "organization", "scope"}
        denied = client.post("/webhook_subscriptions", json={**body, "url": "http://127.0.0.1:9/m"}, headers=member)
        assert denied.status_code == 403
        own = client.post(
            "/webhook_subscriptions",
            json={**body, "url": "http://127.0.0.1:9/m", "scope": "user", "user": MEMBER},
            headers=member,
        )
        assert own.status_code == 201 and own.json()["resource"]["user"] == MEMBER

        page = client.get(
            "/webhook_subscriptions", params={"organization": ORG, "scope": "organization", "count": 1}, headers=owner
        ).json()
        assert len(page["collection"]) == 1 and page["pagination"]["next_page_token"]
        assert "signing_key" not in page["collection"][0]
        rest = client.get(
            "/webhook_subscriptions",
            params={"organization": ORG, "scope": "organization", "page_token": page["pagination"]["next_page_token"]},
            headers=owner,
        ).json()
        assert len(rest["collection"]) == 1 and rest["pagination"]["next_page_token"] is None
        users = client.get(
            "/webhook_subscriptions", params={"organization": ORG, "scope": "user", "user": MEMBER}, headers=member
        ).json()
        assert [s["user"] for s in users["collection"]] == [MEMBER]
        assert client.get("/webhook_subscriptions", params={"scope": "user"}, headers=owner).status_code == 400

        got = client.get(f"/webhook_subscriptions/{uuid}", headers=owner).json()["resource"]
        assert got["uri"] == resource["uri"] and "signing_key" not in got
        assert client.get(f"/webhook_subscriptions/{uuid}", headers=member).status_code == 403
        assert client.delete(f"/webhook_subscriptions/{uuid}", headers=owner).status_code == 204
        assert client.get(f"/webhook_subscriptions/{uuid}", headers=owner).status_code == 404
        admin = client.get("/_admin/webhooks/subscriptions").json()["subscriptions"]
        assert len(admin) == 2 and all(s["signing_key"] for s in admin)


def test_calendly_every_admin_action_is_delivered_signed(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim()
    url = receiver.url(rserver, "calendly", "ws-cal")
    sub = sim.create_webhook_subscription(url, organization=ORG)
    receiver.calendly_keys["ws-cal"] = sub["signing_key"]
    member_only = sim.create_webhook_subscription(receiver.url(rserver, "calendly", "ws-member"), user=MEMBER)
    receiver.calendly_keys["ws-member"] = member_only["signing_key"]

    first = sim.book(OWNER_TYPE, sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))[0], "a@x.example")
    new = sim.reschedule(first["uri"], sim.available_times(OWNER_TYPE, workday(3, 9), workday(3, 17))[0])
    sim.mark_no_show(new["uri"])
    sim.unmark_no_show(new["uri"])
    sim.cancel_invitee(new["uri"], reason="changed mind")
    assert sim.flush_webhooks(10)

    hits = receiver.received("calendly")
    assert all(h.error is None and h.status == 200 for h in hits)
    org_hits = [h for h in hits if h.workspace == "ws-cal"]
    assert [h.json()["event"] for h in org_hits] == [
        "invitee.created",
        "invitee.canceled",
        "invitee.created",
        "invitee_no_show.created",
        "invitee_no_show.deleted",
        "invitee.canceled",
    ]
    assert [h for h in hits if h.workspace == "ws-member"] == []  # user scope: another host's events
    envelope = org_hits[1].json()
    assert list(envelope) == ["event", "created_at", "created_by", "payload"]
    assert envelope["created_by"] == sub["creator"] == OWNER
    assert envelope["payload"]["uri"] == first["uri"] and envelope["payload"]["rescheduled"] is True
    assert envelope["payload"]["scheduled_event"]["uri"] == first["event"]
    assert org_hits[0].headers["content-type"] == "application/json"
    # the signature covers the exact bytes: one flipped byte no longer verifies
    hit = org_hits[0]
    with pytest.raises(SignatureError):
        verify_calendly(
            hit.headers[CALENDLY_SIGNATURE_HEADER.lower()],
            hit.body.replace(b"{", b" {", 1),
            sub["signing_key"],
            now=time.time(),
        )
    counts = sim.webhooks.counts()
    assert counts["delivered"] == 6 and counts["failed"] == 0 and counts["pending"] == 0
    assert len(sim.emitted.list()) == 6  # the event log is untouched by delivery

    # the member's own booking reaches both the org-wide and the member's user-scope subscription
    sim.book(MEMBER_TYPE, sim.available_times(MEMBER_TYPE, workday(2, 9), workday(2, 17))[0], "b@x.example")
    assert sim.flush_webhooks(10)
    assert sorted(h.workspace for h in receiver.received("calendly")[6:]) == ["ws-cal", "ws-member"]


def test_calendly_retries_any_failure_in_order_then_succeeds(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim()
    sub = sim.create_webhook_subscription(receiver.url(rserver, "calendly", "ws-r"), organization=ORG)
    receiver.calendly_keys["ws-r"] = sub["signing_key"]
    receiver.script.extend([500, 503, 404])
    slots = sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))
    booked = [sim.book(OWNER_TYPE, slot, f"r{i}@x.example")["uri"] for i, slot in enumerate(slots[:3])]
    assert sim.flush_webhooks(10)

    first = sim.webhooks.deliveries()[0]
    assert first.state == "delivered" and first.statuses == [500, 503, 404, 200] and first.attempts == 4
    assert [d.state for d in sim.webhooks.deliveries()] == ["delivered"] * 3
    delivered = [h.json()["payload"]["uri"] for h in receiver.received() if h.status == 200]
    assert delivered == booked  # ordered: the later events waited behind the retried one
    assert len({h.body for h in receiver.received()[:4]}) == 1  # retries resend the same bytes
    state = sim.webhook_subscription(sub["uri"])
    assert state["state"] == "active" and state["retry_started_at"] is None


def test_calendly_timeout_is_retried(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim(timeout=0.3)
    sub = sim.create_webhook_subscription(receiver.url(rserver, "calendly", "ws-t"), organization=ORG)
    receiver.calendly_keys["ws-t"] = sub["signing_key"]
    receiver.delay = 0.6
    sim.book(OWNER_TYPE, sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))[0], "t@x.example")
    deadline = time.monotonic() + 5
    while sim.webhooks.deliveries()[0].attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    receiver.delay = 0.0
    assert sim.flush_webhooks(10)
    (record,) = sim.webhooks.deliveries()
    assert record.statuses[0] is None and record.errors[0] == "timeout"
    assert record.state == "delivered" and record.statuses[-1] == 200


def test_calendly_subscription_disabled_after_retry_budget(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim(retry_budget=0.5)
    sub = sim.create_webhook_subscription(receiver.url(rserver, "calendly", "ws-d"), organization=ORG)
    receiver.calendly_keys["ws-d"] = sub["signing_key"]
    receiver.default_status = 500
    slots = sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))
    sim.book(OWNER_TYPE, slots[0], "d1@x.example")
    sim.book(OWNER_TYPE, slots[1], "d2@x.example")
    assert sim.flush_webhooks(10)

    first, second = sim.webhooks.deliveries()
    assert first.state == "failed" and first.reason == "retry_budget_exhausted" and first.attempts >= 3
    assert set(first.statuses) == {500}
    assert second.state == "failed" and second.reason == "subscription_disabled" and second.attempts == 0
    state = sim.webhook_subscription(sub["uri"])
    assert state["state"] == "disabled" and state["retry_started_at"] is not None

    receiver.default_status = 200
    attempts = len(receiver.received())
    sim.book(OWNER_TYPE, slots[2], "d3@x.example")
    assert sim.flush_webhooks(5)
    assert len(receiver.received()) == attempts and len(sim.webhooks.deliveries()) == 2  # disabled: not sent


def test_calendly_wrong_key_is_rejected_and_retried(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim(retry_budget=0.3)
    sim.create_webhook_subscription(receiver.url(rserver, "calendly", "ws-k"), organization=ORG)
    receiver.calendly_keys["ws-k"] = "not-the-key"
    sim.book(OWNER_TYPE, sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))[0], "k@x.example")
    assert sim.flush_webhooks(10)
    assert {h.error for h in receiver.received()} == {"bad_signature"}
    assert set(sim.webhooks.deliveries()[0].statuses) == {401}


# ------------------------------------------------------------------------------------------- GHL


def test_ghl_every_action_is_delivered_signed(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = ghl_sim()
    with SimulatorServer(sim) as server, httpx.Client(base_url=server.base_url) as client:
        sim_admin = f"{server.base_url}/_admin"
        config = client.put(
            f"{sim_admin}/webhooks",
            json={"url_template": receiver.url(rserver, "ghl", "ws-{locationId}"), "legacy_rsa": True},
        ).json()
        assert config["legacy_rsa"] is True and config["url_template"].endswith("ws-{locationId}")
        keys = client.get(f"{sim_admin}/webhooks/public_keys").json()
        assert keys["ghl_webhook_public_key"].startswith("MCowBQYDK2VwAyEA")  # Ed25519 SPKI
        for loc in ("loc_demo_1", "loc_demo_2"):
            receiver.ghl_keys[f"ws-{loc}"] = GhlKeys(
                load_public_key(keys["ghl_webhook_public_key"]),  # type: ignore[arg-type]
                load_public_key(keys["ghl_webhook_legacy_public_key"]),  # type: ignore[arg-type]
            )

        cal = ghl_calendar(sim)
        slots = sim.free_slots(cal)
        appt = sim.book(cal, slots[0], email="g@x.example")
        sim.reschedule(appt["id"], slots[3])
        sim.set_status(appt["id"], "noshow")
        api = {"Authorization": "Bearer pit-demo-location-1", "Version": "2021-04-15"}
        put = client.put(
            f"/calendars/events/appointments/{appt['id']}", json={"appointmentStatus": "cancelled"}, headers=api
        )
        assert put.status_code == 200
        sim.delete(appt["id"])
        sim.book(ghl_calendar(sim, "loc_demo_2"), sim.free_slots(ghl_calendar(sim, "loc_demo_2"))[0], email="h@x.ex")
        flushed = client.post(f"{sim_admin}/webhooks/flush", json={"timeout": 10}).json()
        assert flushed["flushed"] is True and flushed["counts"]["delivered"] == 6

        hits = receiver.received("ghl")
        assert all(h.error is None and h.status == 200 for h in hits)
        # ordered per target (location); the two locations' deliveries may interleave
        assert [h.json()["type"] for h in hits if h.workspace == "ws-loc_demo_1"] == [
            "AppointmentCreate",
            "AppointmentUpdate",
            "AppointmentUpdate",
            "AppointmentUpdate",
            "AppointmentDelete",
        ]
        assert [h.json()["type"] for h in hits if h.workspace == "ws-loc_demo_2"] == ["AppointmentCreate"]
        hits = [h for h in hits if h.workspace == "ws-loc_demo_1"] + [h for h in hits if h.workspace != "ws-loc_demo_1"]
        body = hits[2].json()
        assert list(body) == ["type", "locationId", "appointment", "webhookId", "timestamp"]
        assert body["appointment"]["id"] == appt["id"] and body["appointment"]["appointmentStatus"] == "noshow"
        assert len({h.json()["webhookId"] for h in hits}) == 6
        assert ghl_replay_verdict(datetime.fromisoformat(body["timestamp"]), now=datetime.now(UTC)) == GHL_FRESH
        # both schemes verify on their own, over the exact bytes
        legacy_only = GhlKeys(None, receiver.ghl_keys["ws-loc_demo_1"].legacy_rsa)
        for hit in hits:
            assert (
                verify_ghl(hit.body, signature=None, legacy_signature=hit.headers["x-wh-signature"], keys=legacy_only)
                == "rsa"
            )
            with pytest.raises(SignatureError):
                verify_ghl(
                    hit.body + b" ",
                    signature=hit.headers["x-ghl-signature"],
                    legacy_signature=None,
                    keys=receiver.ghl_keys["ws-loc_demo_1"],
                )

        view = client.get(f"{sim_admin}/webhooks/deliveries").json()
        assert view["counts"]["delivered"] == 6 and len(view["deliveries"]) == 6
        text = json.dumps(view["deliveries"])
        assert "g@x.example" not in text and '"appointment"' not in text  # ids, names, statuses only
        assert view["deliveries"][0]["resource"] == appt["id"] and view["deliveries"][0]["statuses"] == [200]


def test_ghl_no_legacy_header_unless_enabled(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = ghl_sim()
    sim.set_webhooks(urls={"loc_demo_1": receiver.url(rserver, "ghl", "ws-one")})
    receiver.ghl_keys["ws-one"] = ghl_keys(sim)
    sim.book(ghl_calendar(sim), sim.free_slots(ghl_calendar(sim))[0], email="l@x.example")
    sim.book(ghl_calendar(sim, "loc_demo_2"), sim.free_slots(ghl_calendar(sim, "loc_demo_2"))[0], email="m@x.ex")
    assert sim.flush_webhooks(10)
    (hit,) = receiver.received()  # loc_demo_2 has no URL
    assert hit.error is None and "x-wh-signature" not in hit.headers and "x-ghl-signature" in hit.headers


def test_ghl_retries_only_on_429(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = ghl_sim()
    sim.set_webhooks(receiver.url(rserver, "ghl", "ws-429"))
    receiver.ghl_keys["ws-429"] = ghl_keys(sim)
    cal = ghl_calendar(sim)
    slots = sim.free_slots(cal)

    receiver.script.extend([500])
    sim.book(cal, slots[0], email="a@x.example")
    assert sim.flush_webhooks(10)
    (failed,) = sim.webhooks.deliveries()
    assert failed.state == "failed" and failed.reason == "final_status" and failed.statuses == [500]

    receiver.script.extend([429, 429])
    sim.book(cal, slots[1], email="b@x.example")
    assert sim.flush_webhooks(10)
    retried = sim.webhooks.deliveries()[1]
    assert retried.state == "delivered" and retried.statuses == [429, 429, 200]
    bodies = [h.json() for h in receiver.received()[1:]]
    assert {b["webhookId"] for b in bodies} == {retried.webhook_id}  # same webhookId on every retry

    receiver.default_status = 429
    sim.book(cal, slots[2], email="c@x.example")
    assert sim.flush_webhooks(10)
    exhausted = sim.webhooks.deliveries()[2]
    assert exhausted.state == "failed" and exhausted.reason == "retries_exhausted"
    assert exhausted.statuses == [429] * 7  # the first attempt + 6 retries


def test_ghl_connection_error_is_final() -> None:
    sim = ghl_sim()
    sim.set_webhooks("http://127.0.0.1:9/webhooks/ghl/nobody")  # discard port: connection refused
    sim.book(ghl_calendar(sim), sim.free_slots(ghl_calendar(sim))[0], email="e@x.example")
    assert sim.flush_webhooks(10)
    (record,) = sim.webhooks.deliveries()
    assert record.state == "failed" and record.statuses == [None] and record.reason == "final_status"


# ------------------------------------------------------------------------------------------- common


def test_no_subscription_means_no_delivery(receiver: Receiver) -> None:
    cal_sim, ghl = calendly_sim(), ghl_sim()
    cal_sim.book(OWNER_TYPE, cal_sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))[0], "n@x.example")
    ghl.book(ghl_calendar(ghl), ghl.free_slots(ghl_calendar(ghl))[0], email="n@x.example")
    for sim in (cal_sim, ghl):
        assert isinstance(sim.emitted, EventFeed) and len(sim.emitted.list()) == 1
        assert sim.flush_webhooks(0.01) and not sim.webhooks.running
        assert sim.webhooks.counts()["emitted"] == 0 and sim.webhooks.deliveries() == []
    assert receiver.received() == []


def test_flush_waits_and_drain_does_not_interfere(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = ghl_sim()
    sim.set_webhooks(receiver.url(rserver, "ghl", "ws-f"))
    receiver.ghl_keys["ws-f"] = ghl_keys(sim)
    receiver.delay = 0.4
    cal = ghl_calendar(sim)
    for i, slot in enumerate(sim.free_slots(cal)[:2]):
        sim.book(cal, slot, email=f"f{i}@x.example")
    assert [e.name for e in sim.emitted.drain()] == ["AppointmentCreate"] * 2
    assert sim.flush_webhooks(0.05) is False and sim.webhooks.pending() == 2
    assert sim.flush_webhooks(10) is True and sim.webhooks.pending() == 0
    assert len(receiver.received()) == 2 and sim.emitted.list() == []


def test_unordered_delivery_still_delivers_everything(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim(ordered=False, start_jitter=0.2, seed=3)
    sub = sim.create_webhook_subscription(receiver.url(rserver, "calendly", "ws-u"), organization=ORG)
    receiver.calendly_keys["ws-u"] = sub["signing_key"]
    slots = sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))
    booked = {sim.book(OWNER_TYPE, slot, f"u{i}@x.example")["uri"] for i, slot in enumerate(slots[:6])}
    assert sim.flush_webhooks(10)
    assert {h.json()["payload"]["uri"] for h in receiver.received()} == booked
    assert sim.webhooks.counts()["delivered"] == 6


def test_admin_http_for_calendly_and_reset(receiver: Receiver, rserver: SimulatorServer) -> None:
    sim = calendly_sim()
    with SimulatorServer(sim) as server, httpx.Client(base_url=f"{server.base_url}/_admin") as admin:
        created = admin.post(
            "/webhooks/subscriptions", json={"url": receiver.url(rserver, "calendly", "ws-a"), "user": OWNER}
        ).json()
        assert created["scope"] == "user" and created["user"] == OWNER and created["signing_key"]
        receiver.calendly_keys["ws-a"] = admin.get("/webhooks/subscriptions").json()["subscriptions"][0]["signing_key"]
        assert admin.put("/webhooks/delivery", json={"retry_delay": 0.01}).json()["retry_delay"] == 0.01
        assert admin.put("/webhooks/delivery", json={"nope": 1}).status_code == 400
        slot = sim.available_times(OWNER_TYPE, workday(2, 9), workday(2, 17))[0]
        booked = admin.post("/book", json={"event_type": OWNER_TYPE, "start_time": slot.isoformat(), "email": "z@x.ex"})
        assert booked.status_code == 200
        assert admin.post("/webhooks/flush", json={"timeout": 10}).json()["flushed"] is True
        view = admin.get("/webhooks/deliveries", params={"state": "delivered"}).json()
        assert [d["event"] for d in view["deliveries"]] == ["invitee.created"]
        assert view["deliveries"][0]["target"] == created["uri"]
        assert receiver.received()[0].error is None

        assert admin.post("/reset").json() == {"ok": True}
        assert admin.get("/webhooks/subscriptions").json()["subscriptions"] == []
        assert admin.get("/webhooks/deliveries").json()["counts"]["emitted"] == 0
