"""Calendly client over real loopback HTTP against the Calendly simulator (no mocked transport).

Covers: users/me, scheduled events by invitee e-mail + organization + window (every page, following the
canonical ``next_page`` links to the simulator), invitees of an event (every page), scheduled event, event
type, available times split at 7 days, POST /invitees (and a taken slot), reschedule links and no-shows
through normalisation, 429 + ``X-RateLimit-Reset``, auth errors without the token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from appt_pipeline.domain.vocab import Source, Status
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.http import ProviderError, RetryPolicy
from appt_pipeline.providers.normalize import CALENDLY_CANONICAL_BASE, calendly_observation
from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
    CalendlySeed,
    CalendlySimulator,
    CalendlyUser,
    SimulatorServer,
)

TOKEN = "calendly-pat-very-secret-0123456789"
LEAD = "lead@example.com"
FAST = RetryPolicy(backoff_initial_s=0.01, backoff_max_s=0.05, backoff_jitter_s=0.01, rate_limit_jitter_s=0.01)
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
LEAD_EVENTS = 130  # more than one page of 100
GROUP_UUID = "0b9c3f6e-1d2a-4c5b-9e8f-7a6b5c4d3e2f"


def seed() -> CalendlySeed:
    events = [
        CalendlyScheduledEvent(event_type="discovery", start=NOW - timedelta(days=40) + timedelta(hours=14 * i),
                               invitees=[CalendlyInvitee(email=LEAD, name="Lead Person",
                                                         status="canceled" if i % 10 == 0 else "active")])
        for i in range(LEAD_EVENTS)
    ]
    events += [  # other people's bookings and one outside the window
        CalendlyScheduledEvent(event_type="discovery", start=NOW + timedelta(days=3, hours=i),
                               invitees=[CalendlyInvitee(email=f"other{i}@example.com")]) for i in range(5)
    ]
    events.append(CalendlyScheduledEvent(event_type="discovery", start=NOW - timedelta(days=120),
                                         invitees=[CalendlyInvitee(email=LEAD)]))
    events.append(CalendlyScheduledEvent(
        event_type="webinar", start=NOW + timedelta(days=20), uuid=GROUP_UUID,
        invitees=[*(CalendlyInvitee(email=f"guest{i:03d}@example.com") for i in range(149)),
                  CalendlyInvitee(email=LEAD)],
    ))
    return CalendlySeed(users=[CalendlyUser(
        token=TOKEN, email="rep@acme.test", name="Rep One", organization="org-1", timezone="America/New_York",
        event_types=[CalendlyEventType(name="Discovery", slug="discovery", duration=30),
                     CalendlyEventType(name="Webinar", slug="webinar", duration=60, kind="group", max_invitees=500)],
        scheduled_events=events,
    )])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[CalendlySimulator, str]]:
    sim = CalendlySimulator(seed())
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


@pytest.fixture
def cal(served: tuple[CalendlySimulator, str]) -> tuple[CalendlySimulator, str]:
    sim, url = served
    sim.reset()
    sim.faults.clear()
    sim.clear_counters()
    return sim, url


def client(sim: CalendlySimulator, url: str, **kw: object) -> CalendlyClient:
    options: dict[str, object] = {"retry": FAST, "timeout_s": 5.0, **kw}
    return CalendlyClient(base_url=url, token=TOKEN, user_uri=sim.user_uri(TOKEN) or "", **options)  # type: ignore[arg-type]


def paths(sim: CalendlySimulator) -> list[str]:
    return [r.path for r in sim.accounting.log]


def test_users_me_and_every_page_of_scheduled_events(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal

    async def run() -> None:
        async with CalendlyClient(base_url=url, token=TOKEN, retry=FAST) as c:
            user = await c.get_current_user()
            assert user.uri.startswith(CALENDLY_CANONICAL_BASE)
            assert user.current_organization == sim.organization_uri(TOKEN)
            assert c.user_uri == user.uri and c.organization_uri == user.current_organization
            window = {"min_start": NOW - timedelta(days=90), "max_start": NOW + timedelta(days=90)}
            events = await c.list_scheduled_events(invitee_email=" Lead@Example.COM ", **window)
            assert len(events) == LEAD_EVENTS + 1  # + the group event; not the one 120 days ago
            assert len({e.uri for e in events}) == len(events)
            assert [e.start_at for e in events] == sorted(e.start_at for e in events)
            assert all(e.uri.startswith(f"{CALENDLY_CANONICAL_BASE}/scheduled_events/") for e in events)
            assert {e.status for e in events} == {"active", "canceled"}

    asyncio.run(run())
    assert paths(sim) == ["/users/me", "/scheduled_events", "/scheduled_events"]  # two pages, followed to the end


def test_every_page_of_invitees_and_observation(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal
    event_uri = f"{CALENDLY_CANONICAL_BASE}/scheduled_events/{GROUP_UUID}"

    async def run() -> None:
        async with client(sim, url) as c:
            event = await c.get_scheduled_event(event_uri)
            invitees = await c.list_event_invitees(event_uri)
            assert len(invitees) == 150 and len({i.uri for i in invitees}) == 150
            lead = [i for i in invitees if i.email == LEAD]
            assert len(lead) == 1 and lead[0].event_uri == event_uri
            obs = calendly_observation(lead[0], event, workspace_id="ws", lead_id="l", source=Source.RECONCILE_CRON)
            assert obs.status is Status.CONFIRMED and obs.calendly_invitee_uri == lead[0].uri
            assert obs.calendly_event_type_uri in sim.event_type_uris(sim.user_uri(TOKEN))
            assert obs.start_at == NOW + timedelta(days=20) and obs.end_at == NOW + timedelta(days=20, hours=1)
            event_type = await c.get_event_type(obs.calendly_event_type_uri)
            assert event_type.uri == obs.calendly_event_type_uri and event_type.duration_minutes == 60
            again = await c.get_invitee(lead[0].uri)
            assert again.uri == lead[0].uri and again.status == "active"

    asyncio.run(run())
    assert paths(sim).count(f"/scheduled_events/{GROUP_UUID}/invitees") == 2


def test_available_times_split_into_7_day_ranges(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal
    et_uri = sim.event_type_uris(sim.user_uri(TOKEN))[0]
    start = datetime.now(UTC) + timedelta(minutes=5)
    end = start + timedelta(days=10)

    async def run() -> list[datetime]:
        async with client(sim, url) as c:
            return [t.start_at for t in await c.get_available_times(et_uri, start, end)]

    slots = asyncio.run(run())
    assert paths(sim) == ["/event_type_available_times"] * 2
    assert slots and slots == sorted(set(slots)) and all(start <= s < end for s in slots)
    assert slots == sim.available_times(et_uri, start, end)


def test_create_invitee_then_slot_taken(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal
    et_uri = sim.event_type_uris(sim.user_uri(TOKEN))[0]
    slot = sim.available_times(et_uri, datetime.now(UTC) + timedelta(days=1))[0]

    async def run() -> None:
        async with client(sim, url) as c:
            created = await c.create_invitee(event_type_uri=et_uri, start_at=slot, email="New.Lead@example.com",
                                             timezone="Europe/Paris", name="New Lead")
            assert created.status == "active" and created.email == "new.lead@example.com"
            event = await c.get_scheduled_event(created.event_uri)
            obs = calendly_observation(created, event, workspace_id="ws", lead_id="l", source=Source.AUTO_BOOK)
            assert obs.status is Status.CONFIRMED and obs.start_at == slot and obs.timezone == "Europe/Paris"
            assert obs.calendly_event_type_uri == et_uri
            with pytest.raises(ProviderError) as info:
                await c.create_invitee(event_type_uri=et_uri, start_at=slot, email="second@example.com",
                                       timezone="UTC", first_name="Second")
            assert info.value.kind == "refused" and info.value.status_code == 400
            assert "already_filled" in str(info.value) and "second@example.com" not in str(info.value)
            assert c.stats.retries == 0

    asyncio.run(run())


def test_reschedule_links_and_no_show_via_normalisation(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal
    lead_invitees = [i for i in sim.invitees_of(LEAD) if i["status"] == "active" and GROUP_UUID not in i["event"]]

    def starts(invitee: dict) -> datetime:
        return datetime.fromisoformat(sim.event(invitee["event"])["start_time"].replace("Z", "+00:00"))

    future = [i for i in lead_invitees if starts(i) > NOW]
    old = future[0]
    et_uri = sim.event(old["event"])["event_type"]
    new_slot = sim.available_times(et_uri, datetime.now(UTC) + timedelta(days=2))[0]
    new = sim.reschedule(old["uri"], new_slot, reason="conflict, call me at +1 555 123 4567")
    past = next(i for i in lead_invitees if starts(i) < NOW)
    sim.mark_no_show(past["uri"])

    async def run() -> None:
        async with client(sim, url) as c:
            ctx = {"workspace_id": "ws", "lead_id": "l", "source": Source.RECONCILE_CRON}
            [old_inv] = await c.list_event_invitees(old["event"])
            [new_inv] = await c.list_event_invitees(new["event"])
            old_obs = calendly_observation(old_inv, await c.get_scheduled_event(old["event"]), **ctx)
            new_obs = calendly_observation(new_inv, await c.get_scheduled_event(new["event"]), **ctx)
            assert old_obs.status is Status.RESCHEDULED and old_obs.rescheduled_to_invitee_uri == new_inv.uri
            assert new_obs.status is Status.CONFIRMED and new_obs.rescheduled_from_invitee_uri == old_inv.uri
            assert old_obs.canceled_at is not None and "555" not in (old_obs.cancel_reason or "")
            assert new_obs.start_at == new_slot
            [ns] = await c.list_event_invitees(past["event"])
            assert calendly_observation(ns, None, **ctx).status is Status.NO_SHOW

    asyncio.run(run())


def test_ratelimit_reset_honoured_after_429_burst(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal
    sim.faults.burst_429(seconds=1.0)

    async def run() -> tuple[float, int]:
        async with client(sim, url) as c:
            started = time.monotonic()
            users = await asyncio.gather(*(c.get_current_user() for _ in range(4)))
            assert len({u.uri for u in users}) == 1 and c.stats.errors == 0
            return time.monotonic() - started, c.stats.rate_limited

    elapsed, limited = asyncio.run(run())
    records = [r for r in sim.accounting.log if r.path == "/users/me"]
    first_429 = min(r.at for r in records if r.status == 429)
    assert limited >= 1 and min(r.at for r in records if r.status == 200) >= first_429 + 0.99
    assert elapsed >= 0.99


def test_auth_error_and_not_found(cal: tuple[CalendlySimulator, str]) -> None:
    sim, url = cal
    bad = "calendly-wrong-token-abcdef"

    async def run() -> None:
        async with CalendlyClient(base_url=url, token=bad, retry=FAST) as c:
            with pytest.raises(ProviderError) as info:
                await c.get_current_user()
            assert info.value.kind == "auth" and info.value.status_code == 401
            assert bad not in str(info.value) and bad not in repr(c)
        async with client(sim, url) as c:
            with pytest.raises(ProviderError) as info:
                await c.get_scheduled_event(f"{CALENDLY_CANONICAL_BASE}/scheduled_events/does-not-exist")
            assert info.value.kind == "not_found" and TOKEN not in str(info.value)

    asyncio.run(run())
