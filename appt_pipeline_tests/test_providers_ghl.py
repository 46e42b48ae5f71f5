"""GHL client over real loopback HTTP against the GHL simulator (no mocked transport).

Covers: every call (contact appointments, get appointment, duplicate search, free slots split at 31 days,
create), the ``Version`` header, normalisation to observations, the shared sliding-window limiter measured
by the simulator's own accounting, 429 + ``Retry-After``, GET 5xx / timeout retries, POST never retried
after it may have reached the provider, auth errors without the token, masked e-mails in errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from appt_pipeline.domain.vocab import Source, Status
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import AccountLimiter, CallStats, ProviderError, ProviderHttp, RetryPolicy
from appt_pipeline.providers.normalize import GHL_DELETED_REASON, ghl_observation
from appt_pipeline.sandbox import (
    GhlAppointment,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
    GhlSimulator,
    SimulatorServer,
)

LOC = "loc_1"
TOKEN = "pit-loc1-very-secret-token-0123456789"
FAST = RetryPolicy(backoff_initial_s=0.01, backoff_max_s=0.05, backoff_jitter_s=0.01, rate_limit_jitter_s=0.01)
NOW = datetime.now(UTC).replace(microsecond=0)


def seed() -> GhlSeed:
    return GhlSeed(locations=[GhlLocation(
        id=LOC, token=TOKEN, timezone="America/Chicago",
        calendars=[GhlCalendar(name="Sales Call", id="cal_1")],
        contacts=[GhlContact(email="ann@example.com", id="c_ann", first_name="Ann"),
                  GhlContact(email="bob@example.com", id="c_bob", first_name="Bob")],
        appointments=[
            GhlAppointment(id="ap_past", calendar_id="cal_1", contact_id="c_ann", start=NOW - timedelta(days=3),
                           status="cancelled"),
            GhlAppointment(id="ap_void", calendar_id="cal_1", contact_id="c_ann", start=NOW - timedelta(days=2),
                           status="invalid"),
            GhlAppointment(id="ap_next", calendar_id="cal_1", contact_id="c_ann", start=NOW + timedelta(days=2),
                           status="confirmed"),
        ],
    )])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[GhlSimulator, str]]:
    sim = GhlSimulator(seed())
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


@pytest.fixture
def ghl(served: tuple[GhlSimulator, str]) -> tuple[GhlSimulator, str]:
    sim, url = served
    sim.reset()
    sim.faults.clear()
    sim.clear_counters()
    return sim, url


def client(url: str, **kw: object) -> GhlClient:
    options: dict[str, object] = {"retry": FAST, "timeout_s": 5.0, **kw}
    return GhlClient(base_url=url, token=TOKEN, location_id=LOC, **options)  # type: ignore[arg-type]


def requests_to(sim: GhlSimulator, prefix: str) -> list:
    return [r for r in sim.accounting.log if r.path.startswith(prefix)]


def test_contact_appointments_normalise_with_version_header(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl

    async def run() -> None:
        async with client(url) as c:
            listed = await c.get_contact_appointments("c_ann")
            assert [a.id for a in listed.items] == ["ap_past", "ap_void", "ap_next"] and listed.dropped == 0
            obs = [ghl_observation(a, workspace_id="ws", lead_id="l", source=Source.RECONCILE_CRON)
                   for a in listed.items]
            assert [o.status for o in obs] == [Status.CANCELED, Status.CANCELED, Status.CONFIRMED]
            assert all(o.ghl_calendar_id == "cal_1" and o.start_at.tzinfo is not None for o in obs)
            assert obs[2].start_at == NOW + timedelta(days=2)  # offset time parsed to the same instant
            assert c.stats.requests == 1 and c.stats.errors == 0

    asyncio.run(run())
    assert [r.status for r in requests_to(sim, "/contacts/")] == [200]  # Version accepted (else 400)


def test_get_appointment_and_deleted(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    sim.delete("ap_next")

    async def run() -> None:
        async with client(url) as c:
            appt = await c.get_appointment("ap_next")
            assert appt.deleted and appt.location_id == LOC
            obs = ghl_observation(appt, workspace_id="ws", lead_id="l", source=Source.RECONCILE_CRON)
            assert obs.status is Status.CANCELED and obs.cancel_reason == GHL_DELETED_REASON
            assert obs.provider_updated_at is not None and obs.booked_at is not None
            with pytest.raises(ProviderError) as info:
                await c.get_appointment("does-not-exist")
            assert info.value.kind == "not_found" and info.value.status_code == 404
            assert c.stats.retries == 0  # a 404 is final

    asyncio.run(run())


def test_contact_search_by_email(ghl: tuple[GhlSimulator, str]) -> None:
    _, url = ghl

    async def run() -> None:
        async with client(url) as c:
            assert await c.find_contact_id_by_email("  ANN@example.com ") == "c_ann"
            assert await c.find_contact_id_by_email("nobody@example.com") is None
            assert await c.find_contact_id_by_email("") is None

    asyncio.run(run())


def test_free_slots_split_into_31_day_ranges(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    start = NOW + timedelta(hours=1)
    end = start + timedelta(days=45)

    async def run() -> list[datetime]:
        async with client(url) as c:
            return await c.get_free_slots("cal_1", start, end)

    slots = asyncio.run(run())
    assert [r.status for r in requests_to(sim, "/calendars/cal_1/free-slots")] == [200, 200]
    assert slots == sorted(set(slots)) and all(start <= s < end for s in slots)
    assert slots == [s for s in sim.free_slots("cal_1", start, end) if s < end]
    assert NOW + timedelta(days=2) not in slots  # booked


def test_create_appointment_then_slot_taken(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    slot = sim.free_slots("cal_1", NOW + timedelta(days=1), NOW + timedelta(days=8))[0]

    async def run() -> None:
        async with client(url) as c:
            appt = await c.create_appointment(calendar_id="cal_1", contact_id="c_bob", start_at=slot,
                                              end_at=slot + timedelta(minutes=30), title="Intro")
            assert appt.start_at == slot and appt.contact_id == "c_bob" and appt.status == "confirmed"
            obs = ghl_observation(appt, workspace_id="ws", lead_id="l", source=Source.AUTO_BOOK)
            assert obs.status is Status.CONFIRMED and obs.ghl_calendar_id == "cal_1"
            with pytest.raises(ProviderError) as info:
                await c.create_appointment(calendar_id="cal_1", contact_id="c_ann", start_at=slot,
                                           end_at=slot + timedelta(minutes=30))
            assert info.value.kind == "refused" and "no longer available" in str(info.value)

    asyncio.run(run())
    assert sim.appointment(sim.appointments(LOC)[-1]["id"])["contactId"] in ("c_bob", "c_ann")


def test_auth_error_without_token_in_message(ghl: tuple[GhlSimulator, str]) -> None:
    _, url = ghl
    bad = "pit-wrong-secret-token-987654321"

    async def run() -> ProviderError:
        async with GhlClient(base_url=url, token=bad, location_id=LOC, retry=FAST) as c:
            with pytest.raises(ProviderError) as info:
                await c.get_contact_appointments("c_ann")
            assert c.stats.requests == 1 and c.stats.errors_by_kind["auth"] == 1
            assert bad not in repr(c) and bad not in repr(c._http)
            return info.value

    error = asyncio.run(run())
    assert error.kind == "auth" and error.status_code == 401
    for text in (str(error), repr(error), repr(error.args), str(error.__cause__), str(error.__context__)):
        assert bad not in text and TOKEN not in text


def test_get_5xx_retried_then_succeeds(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    sim.faults.configure(error_rate=0.5, seed=1)  # seeded draws: at most 2 failures in a row here

    async def run() -> CallStats:
        async with client(url) as c:  # default bound: 4 attempts
            for _ in range(8):
                assert (await c.get_appointment("ap_next")).id == "ap_next"
            return c.stats

    stats = asyncio.run(run())
    injected = sim.faults.injected["errors"]
    assert injected > 0 and stats.retries == injected and stats.errors == 0
    assert stats.requests == 8 + injected


def test_get_timeout_retried_then_succeeds(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    sim.faults.configure(timeout_rate=0.5, timeout_seconds=2.0, seed=3)

    async def run() -> CallStats:
        async with client(url, timeout_s=0.3) as c:
            for _ in range(4):
                assert (await c.get_contact_appointments("c_ann")).items
            return c.stats

    stats = asyncio.run(run())
    assert sim.faults.injected["timeouts"] > 0
    assert stats.retries == sim.faults.injected["timeouts"] and stats.errors == 0


def test_post_not_retried_on_5xx_or_timeout(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    slots = sim.free_slots("cal_1", NOW + timedelta(days=1), NOW + timedelta(days=8))
    sim.faults.configure(error_rate=1.0, error_statuses=[500], error_phase="after",
                         only_paths=["/calendars/events/appointments"])

    async def run() -> None:
        async with client(url, timeout_s=0.3) as c:
            with pytest.raises(ProviderError) as info:
                await c.create_appointment(calendar_id="cal_1", contact_id="c_bob", start_at=slots[0],
                                           end_at=slots[0] + timedelta(minutes=30))
            assert info.value.kind == "server" and c.stats.retries == 0
            sim.faults.clear()
            sim.faults.configure(timeout_rate=1.0, timeout_seconds=2.0, only_paths=["/calendars/events/appointments"])
            with pytest.raises(ProviderError) as info:
                await c.create_appointment(calendar_id="cal_1", contact_id="c_bob", start_at=slots[1],
                                           end_at=slots[1] + timedelta(minutes=30))
            assert info.value.kind == "timeout" and c.stats.retries == 0

    asyncio.run(run())
    # one attempt each (the stalled one is logged by the simulator only at acceptance): a retry could double-book
    assert len(sim.accounting.accepted(LOC)) == 2
    booked = [a for a in sim.appointments(LOC) if a["contactId"] == "c_bob"]
    assert len(booked) >= 1  # the 500 came after the write: the booking exists


def test_retry_after_honoured_after_429_burst(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl
    sim.faults.burst_429(seconds=1.0, account=LOC)

    async def run() -> tuple[float, CallStats]:
        async with client(url) as c:
            started = time.monotonic()
            results = await asyncio.gather(*(c.get_appointment("ap_next") for _ in range(5)))
            assert {a.id for a in results} == {"ap_next"}
            return time.monotonic() - started, c.stats

    elapsed, stats = asyncio.run(run())
    mine = [r for r in sim.accounting.log if r.method == "GET" and r.path.endswith("/ap_next")]
    limited = [r for r in mine if r.outcome == "rate_limited"]
    accepted = [r for r in mine if r.outcome == "accepted"]
    assert limited and stats.rate_limited == len(limited) and stats.errors == 0
    # Retry-After (1 s) was honoured by every request of the account: nothing accepted before it ran out
    assert min(r.at for r in accepted) >= min(r.at for r in limited) + 0.99
    assert elapsed >= 0.99 and len(limited) <= 5  # one 429 per request at most: the pause covers the others


def test_shared_limiter_never_exceeds_sliding_window() -> None:
    limit, window = 20, 2
    sim = GhlSimulator(seed(), rate_limit=limit, rate_window_seconds=window)
    with SimulatorServer(sim) as server:
        limiter = AccountLimiter(limit, window, name=LOC)
        stats = CallStats()

        async def run() -> float:
            async with httpx.AsyncClient() as http:
                a = client(server.base_url, limiter=limiter, http=http, stats=stats)
                b = client(server.base_url, limiter=limiter, http=http, stats=stats)  # same account, same budget
                started = time.monotonic()
                await asyncio.gather(*(x.get_appointment("ap_next") for x in (a, b) for _ in range(30)))
                return time.monotonic() - started

        asyncio.run(run())
    assert stats.rate_limited == 0 and stats.errors == 0 and stats.requests == 60
    busiest = sim.max_requests_in_window(LOC, window)
    assert busiest <= limit
    assert sim.accounting.rate_limited(LOC) == []
    # the budget is nearly reached: some window carried ≥ 90 % of the limit (counted by the provider, so the
    # check does not depend on how loaded the machine is; throughput belongs to bench/reconcile.py)
    assert busiest >= 0.9 * limit


def test_provider_error_text_masks_email(ghl: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl

    async def run() -> tuple[ProviderError, ProviderError]:
        async with httpx.AsyncClient() as http:
            raw = ProviderHttp(provider="ghl", base_url=url, token=TOKEN, limiter=AccountLimiter(100, 10), http=http,
                               retry=FAST, default_headers={"Version": "2021-07-28"})
            with pytest.raises(ProviderError) as echoed:  # the simulator's 404 echoes the path
                await raw.request("GET", "/no-such-endpoint/jane.doe@example.com/+1 555 123 4567")
            sim.faults.configure(error_rate=1.0, error_statuses=[500], only_paths=["/contacts/search"])
            c = client(url, http=http, retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01,
                                                          backoff_jitter_s=0.0))
            with pytest.raises(ProviderError) as failed:
                await c.find_contact_id_by_email("jane.doe@example.com")
            return echoed.value, failed.value

    echoed, failed = asyncio.run(run())
    assert echoed.kind == "not_found" and "[redacted-email]" in str(echoed) and "[redacted-phone]" in str(echoed)
    assert failed.kind == "server" and failed.status_code == 500
    for error in (echoed, failed):
        assert "jane.doe" not in str(error) and "example.com" not in str(error)
        assert "jane.doe" not in (error.path or "") and TOKEN not in str(error)


def test_httpx_request_log_masks_email(ghl: tuple[GhlSimulator, str], caplog: pytest.LogCaptureFixture) -> None:
    _, url = ghl
    caplog.set_level(logging.INFO, logger="httpx")

    async def run() -> None:
        async with client(url) as c:
            assert await c.find_contact_id_by_email("ann@example.com") == "c_ann"

    asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("/contacts/search/duplicate" in line for line in lines)
    assert not any("ann@example.com" in line or "ann%40example.com" in line for line in lines)
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_network_errors_retried_then_reported() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run() -> None:
        async with client(f"http://127.0.0.1:{port}") as c:
            with pytest.raises(ProviderError) as info:
                await c.get_appointment("ap_next")
            assert info.value.kind == "network" and c.stats.requests == 4 and c.stats.retries == 3
            with pytest.raises(ProviderError) as info:  # a POST that never left may be retried too
                await c.create_appointment(calendar_id="cal_1", contact_id="c_bob", start_at=NOW,
                                           end_at=NOW + timedelta(minutes=30))
            assert info.value.kind == "network" and c.stats.requests == 8
            assert c.stats.errors_by_kind["network"] == 2

    asyncio.run(run())
