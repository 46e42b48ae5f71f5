"""The provider budget shared through PostgreSQL (issue 13 item 3b; docs/operations.md "Rate limits").

Against the real database and the GHL simulator at its real limit (100 requests / 10 s per location, counted
by the simulator's own moving window): two processes, each with its own engine, httpx client and limiter —
sharing only the database — stay at 0×429 and use ≥ 90 % of the limit; the same load with in-process
limiters draws 429s (the control). Reconciliation and the availability refresh of one
workspace at once, plus bookings, stay at 0×429.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from appt_pipeline.domain.calendars import CalendarRef
from appt_pipeline.domain.vocab import AvailabilitySource, Provider, Source
from appt_pipeline.pipelines.accounts import load_provider_account
from appt_pipeline.pipelines.availability import refresh_availability
from appt_pipeline.pipelines.booking import book
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.pipelines.reconciliation import ReconcileSettings, reconcile_workspace
from appt_pipeline.pipelines.shared_limiter import SharedAccountLimiter
from appt_pipeline.providers.http import GHL_RATE_LIMIT
from appt_pipeline.sandbox import GhlCalendar, GhlContact, GhlLocation, GhlSeed, GhlSimulator, SimulatorServer
from appt_pipeline.store.availability import stored_free_slots
from appt_pipeline.store.rate_permits import account_key, ensure_permits, return_permit, take_permit
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers import SECRET_KEY, rows

NOW = datetime(2031, 3, 3, 6, 0, tzinfo=UTC)  # the simulator's clock and the availability refresh's now
LIMIT, PERIOD = GHL_RATE_LIMIT.max_requests, GHL_RATE_LIMIT.period_s
SHARED, CONTROL, WS_LOC = "loc_shared", "loc_control", "loc_ws"
CONTACTS = 130


def _location(loc: str) -> GhlLocation:
    return GhlLocation(id=loc, token=f"tok-{loc}", timezone="UTC",
                       calendars=[GhlCalendar(id=f"{loc}_cal_a"), GhlCalendar(id=f"{loc}_cal_b", name="Direct")],
                       contacts=[GhlContact(email=f"p{i}@example.com", id=f"{loc}_c_{i}") for i in range(CONTACTS)])


@pytest.fixture(scope="module")
def ghl() -> Iterator[tuple[GhlSimulator, str]]:
    """The GHL simulator at its real limit (the defaults: 100 / 10 s per location)."""
    sim = GhlSimulator(GhlSeed(locations=[_location(SHARED), _location(CONTROL), _location(WS_LOC)]),
                       clock=lambda: NOW)
    assert (sim.rate_limit, sim.rate_window_seconds) == (LIMIT, PERIOD)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _in_threads(*jobs: Callable[[], Any]) -> list[Any]:
    """Run each job in its own thread (each job runs its own event loop); re-raise the first failure."""
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _sustained_use(stamps: list[float]) -> float:
    """Share of the limit used over the run: requests / (windows the run spanned × N), where the run spans
    ``last - first + period`` (the last request's window included)."""
    stamps = sorted(stamps)
    return len(stamps) / ((stamps[-1] - stamps[0] + PERIOD) / PERIOD * LIMIT)


# -- store ------------------------------------------------------------------------------------------


def test_account_key_is_a_hash_without_the_account_id() -> None:
    uri = "https://api.calendly.com/users/33333333-3333-3333-3333-3333333333b3"
    key = account_key("Calendly", uri)
    assert key.startswith("calendly:") and len(key) == len("calendly:") + 32 and "3333" not in key
    assert account_key("ghl", "loc1") == account_key("ghl", " loc1 ") != account_key("calendly", "loc1")
    with pytest.raises(ValueError, match="provider"):
        account_key("hubspot", "x")
    with pytest.raises(ValueError, match="blank"):
        account_key("ghl", "  ")


def test_permits_are_taken_held_after_the_answer_and_paused(db: sa.Engine) -> None:
    key = account_key("ghl", "loc_store")
    with db.connect() as conn:
        ensure_permits(conn, key, 3)
        ensure_permits(conn, key, 3)  # idempotent
        taken = [take_permit(conn, key, 3, lease_s=60.0) for _ in range(4)]
        assert sorted(t[0] for t in taken[:3]) == [0, 1, 2]  # type: ignore[type-var]
        slot, wait_s, permits = taken[3]
        assert slot is None and permits == 3 and 59.0 < wait_s <= 60.0  # in flight: held for the lease
        return_permit(conn, key, 1, hold_s=0.3)  # answered: held 0.3 s more (the window), then free
        slot, wait_s, _ = take_permit(conn, key, 3, lease_s=60.0)
        assert slot is None and 0.0 < wait_s <= 0.3
        time.sleep(0.35)
        assert take_permit(conn, key, 3, lease_s=60.0)[0] == 1
        return_permit(conn, key, 1, hold_s=0.0, pause_s=5.0)  # a 429: the whole account waits 5 s
        slot, wait_s, _ = take_permit(conn, key, 3, lease_s=60.0)
        assert slot is None and 4.0 < wait_s <= 5.0
        assert take_permit(conn, key, 4, lease_s=1.0)[2] == 3  # N raised: the caller creates the missing row
    stored = rows(db, "SELECT account_key, count(*) AS n FROM provider_rate_permits GROUP BY 1")
    assert [(r.account_key, r.n) for r in stored] == [(key, 3)]  # only the hash is stored


def test_a_cancelled_waiter_gives_its_permit_back(db: sa.Engine) -> None:
    limiter = SharedAccountLimiter(db, "ghl", "loc_cancel", 1, 0.2)

    async def run() -> float:
        async with limiter.slot():
            waiter = asyncio.create_task(limiter.slot().__aenter__())
            await asyncio.sleep(0.05)
            waiter.cancel()
        started = time.monotonic()
        async with limiter.slot():
            return time.monotonic() - started

    waited = asyncio.run(run())
    assert 0.1 < waited < 2.0  # the only permit came back a window after the first request, not after a lease


# -- against the simulator ----------------------------------------------------------------------------


def _processes(url: str, loc: str, requests: int, *, database_url: str | None, fail_on_429: bool = False,
               count: int = 2) -> list[dict[str, Any]]:
    """``count`` worker processes (:mod:`appt_pipeline_tests.helpers.rate_budget_worker`), each with its own
    engine, httpx client and limiter, sending ``requests`` GETs at once to location ``loc`` from the same
    instant (after their imports: each says ``ready``, then all are told to go); their call counters."""
    command = [sys.executable, "-m", "appt_pipeline_tests.helpers.rate_budget_worker", "--base-url", url,
               "--location", loc, "--requests", str(requests), "--contacts", str(CONTACTS)]
    command += ["--database-url", database_url] if database_url else []
    command += ["--fail-on-429"] if fail_on_429 else []
    workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(count)]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready", w.stderr and w.stderr.read()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        out = []
        for w in workers:
            stdout, stderr = w.communicate(timeout=90)
            assert w.returncode == 0, stderr[-2000:]
            out.append(json.loads(stdout))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    return out


def test_two_processes_sharing_only_the_database_stay_under_the_limit_and_use_it(
    db: sa.Engine, database_url: str, ghl: tuple[GhlSimulator, str]
) -> None:
    sim, url = ghl
    # the control: the same two processes with in-process limiters each spend a full budget → 429s
    control = _processes(url, CONTROL, LIMIT, database_url=None, fail_on_429=True)
    assert sum(s["api_429s"] for s in control) >= LIMIT // 2 and sim.accounting.rate_limited(CONTROL)

    stats = _processes(url, SHARED, LIMIT, database_url=database_url)
    accepted = sim.accounting.accepted(SHARED)
    assert sim.accounting.rate_limited(SHARED) == [] and sum(s["api_429s"] for s in stats) == 0
    assert [s["failed"] for s in stats] == [0, 0]
    assert len(accepted) == 2 * LIMIT and sum(s["api_requests"] for s in stats) == 2 * LIMIT
    assert sim.accounting.max_requests_in_window(SHARED, PERIOD) <= LIMIT
    use = _sustained_use(accepted)
    print(f"\nshared budget, 2 processes: {len(accepted)} requests in {accepted[-1] - accepted[0]:.2f} s, "
          f"peak {sim.accounting.max_requests_in_window(SHARED, PERIOD)}/{LIMIT} per {PERIOD:g} s, "
          f"{use:.1%} of the limit used; control: {sum(s['api_429s'] for s in control)}×429")
    assert use >= 0.9
    assert all(s["api_limiter_wait_s"] > 0 for s in stats)  # both waited for permits the other held


def test_a_429_pause_holds_every_limiter_of_the_account(db: sa.Engine) -> None:
    """Two limiter instances (as two processes would have): a pause taken by one holds the other."""
    first = SharedAccountLimiter(db, "ghl", "loc_pause", 10, 0.1)
    second = SharedAccountLimiter(db, "ghl", "loc_pause", 10, 0.1)

    async def run() -> float:
        async with first.slot():
            first.pause(1.0)  # as ProviderHttp does on a 429: written with the permit's return
        started = time.monotonic()
        async with second.slot():
            return time.monotonic() - started

    assert 0.8 < asyncio.run(run()) < 3.0


BOOKED = 3  # leads booked while reconciliation runs


def _workspace(engine: sa.Engine, url: str) -> None:
    set_workspace(engine, "ws_rl", {"meeting_booking_provider": "GHL", "timezone": "UTC", "ghl_location_id": WS_LOC,
                                    "ghl_api_base_url": url, "ghl_default_calendar_id": f"{WS_LOC}_cal_a",
                                    "ghl_direct_book_calendar_id": f"{WS_LOC}_cal_b"})
    set_secret(engine, "ws_rl", "ghl_private_token", f"tok-{WS_LOC}", SECRET_KEY)
    with engine.begin() as conn:  # reconciliation checks leads l…; the booked leads b… are not due (checked later)
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id, ghl_contact_id, status, last_inbound_at,"
                             " appointment_next_check_at) VALUES (:id, 'ws_rl', :cid, 'qualified', now(), :next)"),
                     [{"id": f"l{i}", "cid": f"{WS_LOC}_c_{i}", "next": None} for i in range(CONTACTS - BOOKED)]
                     + [{"id": f"b{i}", "cid": f"{WS_LOC}_c_{CONTACTS - 1 - i}", "next": NOW}
                        for i in range(BOOKED)])


async def _book_some(engine: sa.Engine) -> list[Any]:
    """Book leads b0… on the first free slots of the default calendar, at once, through one factory."""
    with engine.connect() as conn:
        free = stored_free_slots(conn, "ws_rl", CalendarRef(Provider.GHL, f"{WS_LOC}_cal_a",
                                                            AvailabilitySource.DEFAULT), now=NOW)
    assert not free.stale and len(free.slots) >= BOOKED
    async with httpx.AsyncClient() as http:
        factory = ClientFactory(http, ClientOptions(timeout_s=10.0), engine)
        return await asyncio.gather(*(
            book(engine, factory, "ws_rl", f"b{i}", free.slots[i], source=Source.MANUAL, idempotency_key=f"k{i}",
                 now=NOW, secret_key=SECRET_KEY) for i in range(BOOKED)))


def test_reconciliation_availability_refresh_and_bookings_of_one_workspace_at_once(
    db: sa.Engine, database_url: str, ghl: tuple[GhlSimulator, str]
) -> None:
    """Three callers of one GHL location, each with its own engine (as separate processes would have): a
    reconciliation run, and — once it has spent nearly the whole window's budget — the availability refresh
    followed by bookings. 0×429; the refresh and the bookings waited for the permits reconciliation held."""
    sim, url = ghl
    _workspace(db, url)
    engines = [sa.create_engine(database_url, pool_size=4) for _ in range(2)]

    def reconcile() -> Any:
        account = load_provider_account(engines[0], "ws_rl", SECRET_KEY)
        assert account.provider is Provider.GHL
        return asyncio.run(reconcile_workspace(engines[0], account, settings=ReconcileSettings(timeout_s=10.0)))

    def refresh_then_book() -> Any:
        deadline = time.monotonic() + 30
        while sim.accounting.count_between(WS_LOC, 0, time.time()) < LIMIT - 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # start once reconciliation has spent (nearly) the whole window's budget
        refreshed = refresh_availability(engines[1], "ws_rl", now=NOW, secret_key=SECRET_KEY, days=90,
                                         options=ClientOptions(timeout_s=10.0))
        return refreshed, asyncio.run(_book_some(engines[1]))

    try:
        recon, (availability, bookings) = _in_threads(reconcile, refresh_then_book)
    finally:
        for e in engines:
            e.dispose()
    assert recon.leads_checked == CONTACTS - BOOKED and recon.errors == 0
    assert [c.error for c in availability.calendars] == [None, None] and availability.api["api_requests"] == 6
    assert [b.state for b in bookings] == ["booked"] * BOOKED
    assert recon.api["api_429s"] == 0 and availability.api["api_429s"] == 0
    assert sim.accounting.rate_limited(WS_LOC) == []
    accepted = sim.accounting.accepted(WS_LOC)
    posts = [r for r in sim.accounting.log if r.account == WS_LOC and r.method == "POST"]
    assert len(posts) == BOOKED and all(r.status < 300 for r in posts)
    assert len(accepted) == CONTACTS - BOOKED + 6 + BOOKED
    assert sim.accounting.max_requests_in_window(WS_LOC, PERIOD) <= LIMIT
    assert availability.api["api_limiter_wait_s"] > 1.0  # it waited for the permits reconciliation held
    assert posts[0].at - accepted[0] >= PERIOD  # the bookings too: they went out in the next window
    print(f"\nreconciliation + availability + {BOOKED} bookings: {len(accepted)} requests in "
          f"{accepted[-1] - accepted[0]:.2f} s, peak {sim.accounting.max_requests_in_window(WS_LOC, PERIOD)}/{LIMIT},"
          f" 0×429; availability waited {availability.api['api_limiter_wait_s']:.1f} s")


def test_client_factory_uses_the_shared_budget_with_an_engine(db: sa.Engine) -> None:
    async def limiters() -> tuple[Any, Any]:
        async with httpx.AsyncClient() as http:
            return (ClientFactory(http, engine=db).limiters.get("ghl", "loc1"),
                    ClientFactory(http).limiters.get("ghl", "loc1"))

    shared, local = asyncio.run(limiters())
    assert isinstance(shared, SharedAccountLimiter) and shared.key == account_key("ghl", "loc1")
    assert not isinstance(local, SharedAccountLimiter)
    assert (shared.max_requests, shared.period_s) == (local.max_requests, local.period_s) == (LIMIT, PERIOD)


def test_database_unreachable_sends_nothing() -> None:
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    limiter = SharedAccountLimiter(engine, "ghl", "loc1", LIMIT, PERIOD)

    async def run() -> None:
        async with limiter.slot():
            raise AssertionError("a request was let through without a permit")

    with pytest.raises(sa.exc.OperationalError):
        asyncio.run(run())
    engine.dispose()


def test_database_lost_after_the_answer_keeps_the_answer_and_the_permit_leased(
    db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The request was answered, then the database went away: the caller still gets the answer (a booking's
    must never be lost to bookkeeping) and the permit stays taken until its lease ends — never freed early."""
    limiter = SharedAccountLimiter(db, "ghl", "loc_lost", 1, 0.1, in_flight_lease_s=30.0)
    unreachable = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")

    async def run() -> str:
        async with limiter.slot():
            limiter.engine = unreachable  # the database is gone when the answer arrives
            answer = "the provider's answer"
        return answer

    assert asyncio.run(run()) == "the provider's answer"
    unreachable.dispose()
    assert "not returned (OperationalError)" in caplog.text and "loc_lost" not in caplog.text
    with db.connect() as conn:
        slot, wait_s, _ = take_permit(conn, account_key("ghl", "loc_lost"), 1, lease_s=1.0)
    assert slot is None and 25.0 < wait_s <= 30.2
