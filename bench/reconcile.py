"""Benchmark of reconciliation (SPEC §6) against the provider simulators, over real loopback HTTP.

    .venv/bin/python -m bench.reconcile [--leads 2000] [--provider ghl|calendly|both] [--database-url URL] [--keep]

One run prints, clearly labelled:

1. **Throughput at the limit** — per provider, a simulator with the *real* limits (GHL 100 requests / 10 s
   per location, Calendly 500 / 60 s per user), a workspace of due leads (each with a contact / invitee and
   1–3 appointments at the provider) and ONE ``reconcile_workspace`` run whose lead and time budgets are
   large enough to finish. Printed: requests sent, requests/s against the limit, utilisation (achieved rate
   ÷ limit over the run; the simulator's own peak ``max_requests_in_window`` ÷ limit; and the burst-aware
   floor ÷ wall time), leads failed (and failed because of 429), 429s
   received, wall time against the lower bound (requests ÷ rate) and the ratio. Plus a profile of where the
   time went: request bursts and the idle gaps between them, HTTP latency, event-loop lag, limiter waits,
   DB write time per ``_flush`` batch. GHL with ``--leads`` (default 2,000) is the headline; Calendly,
   which needs ~3 requests per lead at 500/min, runs with ``--calendly-leads`` (default 400 when both
   providers run) to keep the whole bench near 10 minutes.
2. **Robustness** — per provider, 20 % 5xx, 10 % timeouts (server stall 3 s > client timeout 2 s) and 429
   bursts (all requests answered 429 for 2 s, every 6 s) injected; reconciliation run repeatedly
   (``now`` advanced 15 min each time: past the error
   back-off, before the 1 h recheck, so a run re-checks exactly the leads that failed); per run:
   checked / changed / errors / 429s / retries and how many leads match the provider truth; target: every
   lead converged within 3 runs, no run crashes. Scaled down (default 300 leads, limits ×10) to stay
   within time; the output says so.
3. **Correctness** (cheap) at the end of every phase: each lead's appointments in the DB (provider id,
   status, start) equal the simulator's truth — in particular the count per lead — and rollup drift is 0
   (``rollups.drift_report``).

Instrumentation only observes (timers wrapped around ``reconciliation._flush`` and
``httpx.AsyncClient.send``, a loop-lag probe); settings are the product defaults unless a flag says
otherwise. The bench creates its own database ``appt_bench_rec_<pid>`` on the server of
``--database-url`` and drops it at the end (unless ``--keep``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import map_status
from appt_pipeline.pipelines import reconciliation as recmod
from appt_pipeline.pipelines.accounts import load_provider_account
from appt_pipeline.pipelines.reconciliation import ReconcileReport, ReconcileSettings, reconcile_workspace
from appt_pipeline.providers.http import CALENDLY_RATE_LIMIT, GHL_RATE_LIMIT, RateLimit
from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
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
from appt_pipeline.store.rollups import drift_report
from appt_pipeline.store.schema import upgrade
from appt_pipeline.store.workspaces import set_secret, set_workspace

# the simulators listen on loopback ports chosen at start (README "Provider hosts")
os.environ.setdefault("APPT_PROVIDER_HOST_ALLOWLIST", "127.0.0.1:*")

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
KEY = Fernet.generate_key().decode()
TARGET_UTILISATION = 0.90
FAULTS = {"error_rate": 0.20, "timeout_rate": 0.10, "timeout_seconds": 3.0}
CLIENT_TIMEOUT_S = 2.0
ROBUST_STEP = timedelta(minutes=15)  # > back-off after 3 errors (60·2² s = 4 min), < recheck interval (1 h)
WINDOW_DAYS = 80  # seeded appointments start within ±80 days (Calendly polls −90 … +90 days)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


# ------------------------------------------------------------------------------------------------ database


@dataclass(frozen=True)
class Server:
    url: str

    def libpq(self, database: str = "postgres") -> str:
        return make_url(self.url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)

    def sqlalchemy(self, database: str) -> str:
        return (
            make_url(self.url)
            .set(drivername="postgresql+psycopg", database=database)
            .render_as_string(hide_password=False)
        )

    def create(self, name: str) -> None:
        with psycopg.connect(self.libpq(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')

    def drop(self, name: str) -> None:
        with psycopg.connect(self.libpq(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect_workspace(
    engine: sa.Engine, ws: str, world: GhlWorld | CalendlyWorld, sim: GhlSimulator | CalendlySimulator, base_url: str
) -> str:
    """Point workspace ``ws`` at the simulator serving ``world`` (settings + encrypted token); returns the provider
    account key the rate limit is shared by (GHL location id, Calendly user URI)."""
    if isinstance(world, GhlWorld):
        set_workspace(
            engine,
            ws,
            {
                "meeting_booking_provider": "GHL",
                "ghl_location_id": world.location,
                "ghl_api_base_url": base_url,
                "timezone": "America/Chicago",
            },
        )
        set_secret(engine, ws, "ghl_private_token", world.token, KEY)
        return world.location
    assert isinstance(sim, CalendlySimulator)
    user_uri = sim.user_uri(world.token) or ""
    types = sim.event_type_uris(user_uri)
    set_workspace(
        engine,
        ws,
        {
            "meeting_booking_provider": "CALENDLY",
            "calendly_organization_uri": sim.organization_uri(world.token),
            "calendly_user_uri": user_uri,
            "calendly_event_type_uri": types[0],
            "calendly_direct_book_event_type_uri": types[1],
            "calendly_api_base_url": base_url,
            "timezone": "America/New_York",
        },
    )
    set_secret(engine, ws, "calendly_access_token", world.token, KEY)
    return user_uri


def insert_leads(engine: sa.Engine, ws: str, leads: list[tuple[str, str, str | None]]) -> None:
    """Engaged leads (``last_inbound_at`` set, status ``qualified``): due for reconciliation."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO leads (id, workspace_id, email, ghl_contact_id, status, last_inbound_at) "
                "VALUES (:id, :ws, :email, :cid, 'qualified', now())"
            ),
            [{"id": i, "ws": ws, "email": e, "cid": c} for i, e, c in leads],
        )


# ------------------------------------------------------------------------------------------------ seeds


def _slot(rng: random.Random, now: datetime) -> datetime:
    """A 30-minute grid slot on a weekday, 09:00–16:30 UTC, within ±WINDOW_DAYS of now."""
    while True:
        day = (now + timedelta(days=rng.randint(-WINDOW_DAYS, WINDOW_DAYS))).date()
        if day.weekday() < 5:
            return datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=30 * rng.randrange(16))


@dataclass
class GhlWorld:
    seed: GhlSeed
    location: str
    token: str
    leads: list[tuple[str, str, str | None]]  # (lead id, e-mail, ghl contact id or None)
    lead_of_contact: dict[str, str]


def ghl_world(n: int, *, tag: str, rng_seed: int, email_only_share: float, now: datetime) -> GhlWorld:
    """One location, two calendars, ``n`` contacts with 1–3 appointments each; ``email_only_share`` of the
    leads carry only the e-mail (reconciliation resolves the contact first: one more request)."""
    rng = random.Random(f"bench-ghl:{rng_seed}:{tag}")
    location, token = f"loc_{tag}", f"pit-{tag}"
    cals = [
        GhlCalendar(name="Discovery Call", id=f"{location}_cal_default"),
        GhlCalendar(name="Direct Book", id=f"{location}_cal_direct"),
    ]
    contacts, appts, leads, lead_of_contact = [], [], [], {}
    for i in range(n):
        cid, email = f"{location}_c{i:05d}", f"lead{i}@bench.example"
        contacts.append(GhlContact(email=email, id=cid, first_name="Lead", last_name=str(i)))
        for _ in range(rng.choice((1, 2, 3))):
            start = _slot(rng, now)
            if start < now:
                status = rng.choices(["showed", "noshow", "cancelled", "confirmed", "invalid"], [5, 2, 2, 1, 0.3])[0]
            else:
                status = rng.choices(["confirmed", "new", "cancelled"], [7, 2, 1])[0]
            appts.append(
                GhlAppointment(calendar_id=rng.choice(cals).id or "", contact_id=cid, start=start, status=status)
            )
        lead_id = f"{tag}_L{i:05d}"
        leads.append((lead_id, email, None if rng.random() < email_only_share else cid))
        lead_of_contact[cid] = lead_id
    seed = GhlSeed(
        locations=[
            GhlLocation(
                id=location,
                token=token,
                timezone="America/Chicago",
                name=tag,
                calendars=cals,
                contacts=contacts,
                appointments=appts,
            )
        ]
    )
    return GhlWorld(seed, location, token, leads, lead_of_contact)


@dataclass
class CalendlyWorld:
    seed: CalendlySeed
    token: str
    leads: list[tuple[str, str, str | None]]
    lead_of_email: dict[str, str]
    reschedules: list[tuple[str, datetime]] = field(default_factory=list)  # (invitee e-mail idx, new start)


def calendly_world(n: int, *, tag: str, rng_seed: int, now: datetime) -> CalendlyWorld:
    """One user (organization owner, paid plan), two event types, ``n`` invitee e-mails with 1–3 scheduled
    events each (about 1 in 8 canceled, some past ones no-shows)."""
    rng = random.Random(f"bench-calendly:{rng_seed}:{tag}")
    token = f"cal-{tag}"
    types = [
        CalendlyEventType(name="Discovery Call", slug="discovery-call", duration=30),
        CalendlyEventType(name="Direct Booking", slug="direct-booking", duration=30),
    ]
    events, leads, lead_of_email = [], [], {}
    for i in range(n):
        email = f"lead{i}@bench.example"
        for _ in range(rng.choice((1, 2, 3))):
            start = _slot(rng, now)
            canceled = rng.random() < 0.125
            events.append(
                CalendlyScheduledEvent(
                    event_type=rng.choice(types).slug or "",
                    start=start,
                    invitees=[
                        CalendlyInvitee(
                            email=email,
                            name=f"Lead {i}",
                            status="canceled" if canceled else "active",
                            cancel_reason="Schedule conflict" if canceled else "",
                            no_show=not canceled and start < now and rng.random() < 0.15,
                        )
                    ],
                )
            )
        lead_id = f"{tag}_L{i:05d}"
        leads.append((lead_id, email, None))
        lead_of_email[email] = lead_id
    seed = CalendlySeed(
        users=[
            CalendlyUser(
                token=token,
                email=f"rep@{tag}.example",
                name="Bench Rep",
                organization=f"org-{tag}",
                plan="standard",
                event_types=types,
                scheduled_events=events,
            )
        ]
    )
    return CalendlyWorld(seed, token, leads, lead_of_email)


# ------------------------------------------------------------------------------------------------ truth

Truth = dict[str, set[tuple[str, str, datetime | None]]]


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def ghl_truth(sim: GhlSimulator, world: GhlWorld) -> Truth:
    truth: Truth = {lead: set() for lead, _, _ in world.leads}
    for a in sim.appointments(world.location, include_deleted=False):
        lead = world.lead_of_contact.get(a["contactId"])
        if lead:
            truth[lead].add((a["id"], map_status(a["appointmentStatus"]).value, _parse(a["startTime"])))
    return truth


def calendly_truth(sim: CalendlySimulator, world: CalendlyWorld, now: datetime, window_days: int = 90) -> Truth:
    truth: Truth = {lead: set() for lead, _, _ in world.leads}
    lo, hi = now - timedelta(days=window_days), now + timedelta(days=window_days)
    for user in sim.snapshot()["users"]:
        for event in user["scheduled_events"]:
            start = _parse(event["start_time"])
            if not (start and lo <= start < hi):
                continue
            for inv in event["invitees"]:
                lead = world.lead_of_email.get(inv["email"].strip().lower())
                if not lead:
                    continue
                if inv["status"] == "canceled":
                    status = "RESCHEDULED" if inv.get("rescheduled") else "CANCELED"
                else:
                    status = "NO_SHOW" if inv.get("no_show") else "CONFIRMED"
                truth[lead].add((inv["uri"], status, start))
    return truth


def db_state(engine: sa.Engine, ws: str) -> tuple[Truth, dict[str, int]]:
    """Per lead: the DB's appointments (provider id, status, start) and the consecutive-failure count."""
    got: Truth = {}
    failures: dict[str, int] = {}
    with engine.connect() as conn:
        for lead, failed in conn.execute(
            sa.text("SELECT id, appointment_check_failures FROM leads WHERE workspace_id = :ws"), {"ws": ws}
        ):
            got[lead] = set()
            failures[lead] = int(failed)
        for lead, key, status, start in conn.execute(
            sa.text(
                "SELECT lead_id, coalesce(ghl_appointment_id, calendly_invitee_uri), status::text, start_at "
                "FROM appointments WHERE workspace_id = :ws"
            ),
            {"ws": ws},
        ):
            got.setdefault(lead, set()).add((key, status, start.astimezone(UTC) if start else None))
    return got, failures


@dataclass
class Verdict:
    leads: int
    converged: int
    count_equal: int
    in_error: int
    provider_appointments: int
    db_appointments: int
    drifted: int
    mismatched_sample: list[str]

    @property
    def ok(self) -> bool:
        return self.converged == self.leads and self.in_error == 0 and self.drifted == 0


def verify(engine: sa.Engine, ws: str, truth: Truth, now: datetime) -> Verdict:
    got, failures = db_state(engine, ws)
    converged = count_equal = 0
    bad = []
    for lead, want in truth.items():
        have = got.get(lead, set())
        count_equal += len(have) == len(want)
        if have == want and failures.get(lead, 0) == 0:
            converged += 1
        elif len(bad) < 5:
            bad.append(lead)
    with engine.connect() as conn:
        drift = drift_report(conn, ws, now)
    return Verdict(
        len(truth),
        converged,
        count_equal,
        sum(1 for f in failures.values() if f),
        sum(len(v) for v in truth.values()),
        sum(len(v) for v in got.values()),
        drift.drifted,
        bad,
    )


def print_verdict(v: Verdict, indent: str = "  ") -> None:
    log(
        f"{indent}correctness: {v.count_equal}/{v.leads} leads with the provider's appointment count, "
        f"{v.converged}/{v.leads} identical (id, status, start) and not in error; appointments DB "
        f"{v.db_appointments} vs provider {v.provider_appointments}; leads in error {v.in_error}; "
        f"rollup drift {v.drifted}  → {'OK' if v.ok else 'MISMATCH ' + ', '.join(v.mismatched_sample)}"
    )


# ------------------------------------------------------------------------------------------------ probes


@dataclass
class Probe:
    """Observation only: timings of ``_flush`` batches and HTTP sends, event-loop lag, log warnings."""

    flushes: list[tuple[float, int]] = field(default_factory=list)  # (seconds, leads in batch)
    http: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    warnings: Counter[str] = field(default_factory=Counter)
    retry_waits: list[float] = field(default_factory=list)  # seconds each retry slept (from the retry log)


class _CountingHandler(logging.Handler):
    def __init__(self, probe: Probe) -> None:
        super().__init__(logging.WARNING)
        self.probe = probe

    def emit(self, record: logging.LogRecord) -> None:
        self.probe.warnings[record.name] += 1
        args = record.args
        if record.name.endswith("providers.http") and isinstance(args, tuple) and len(args) == 4:
            with suppress(TypeError, ValueError):
                self.probe.retry_waits.append(float(args[3]))


@contextmanager
def probed() -> Iterator[Probe]:
    probe = Probe()
    orig_flush: Callable[..., None] = recmod._flush
    orig_send = httpx.AsyncClient.send

    def timed_flush(*args: Any, **kwargs: Any) -> None:
        t = time.perf_counter()
        try:
            orig_flush(*args, **kwargs)
        finally:
            probe.flushes.append((time.perf_counter() - t, len(args[1])))

    async def timed_send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        t = time.perf_counter()
        try:
            return await orig_send(self, request, **kwargs)
        finally:
            probe.http.append(time.perf_counter() - t)

    handler = _CountingHandler(probe)
    root = logging.getLogger("appt_pipeline")
    old_level, old_propagate = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False  # counted, not printed (robustness runs log every retry)
    recmod._flush = timed_flush  # type: ignore[assignment]
    httpx.AsyncClient.send = timed_send  # type: ignore[method-assign]
    try:
        yield probe
    finally:
        recmod._flush = orig_flush  # type: ignore[assignment]
        httpx.AsyncClient.send = orig_send  # type: ignore[method-assign]
        root.removeHandler(handler)
        root.setLevel(old_level)
        root.propagate = old_propagate


async def _lag_probe(probe: Probe, step: float = 0.02) -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(step)
        probe.lag.append(time.perf_counter() - t - step)


def run_reconcile(
    engine: sa.Engine, ws: str, settings: ReconcileSettings, probe: Probe, now: datetime | None = None
) -> ReconcileReport:
    account = load_provider_account(engine, ws, KEY)

    async def main() -> ReconcileReport:
        lag = asyncio.ensure_future(_lag_probe(probe))
        try:
            return await reconcile_workspace(engine, account, settings=settings, now=now)
        finally:
            lag.cancel()

    return asyncio.run(main())


def q(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


# ------------------------------------------------------------------------------------------------ phase 1


@dataclass
class ThroughputResult:
    provider: str
    leads: int
    requests: int
    wall_s: float
    utilisation_run: float
    utilisation_peak: float
    efficiency_floor: float | None
    ratio_lower_bound: float
    failed: int
    failed_429: int
    r429: int
    verdict: Verdict


def throughput(provider: str, engine: sa.Engine, n: int, args: argparse.Namespace) -> ThroughputResult:
    now = utc_now()
    tag = f"tp_{provider}"
    ws = f"bench_{tag}"
    if provider == "ghl":
        limit = GHL_RATE_LIMIT
        world: GhlWorld | CalendlyWorld = ghl_world(
            n, tag=tag, rng_seed=args.seed, email_only_share=args.email_only_share, now=now
        )
        sim: GhlSimulator | CalendlySimulator = GhlSimulator(
            world.seed, rate_limit=limit.max_requests, rate_window_seconds=int(limit.period_s), id_seed=tag
        )
    else:
        limit = CALENDLY_RATE_LIMIT
        world = calendly_world(n, tag=tag, rng_seed=args.seed, now=now)
        sim = CalendlySimulator(
            world.seed, rate_limit=limit.max_requests, rate_window_seconds=int(limit.period_s), id_seed=tag
        )
    rate = limit.max_requests / limit.period_s
    label = "GHL" if provider == "ghl" else "Calendly"
    log(
        f"\n=== 1. Throughput at the limit — {label}: {n:,} due leads, REAL limit {limit.max_requests} requests / "
        f"{limit.period_s:g} s ({rate:.2f}/s) ==="
    )

    with SimulatorServer(sim) as server:
        account_key = connect_workspace(engine, ws, world, sim, server.base_url)
        if isinstance(world, GhlWorld):
            email_only = sum(1 for _, _, c in world.leads if c is None)
            log(
                f"  setup: {n:,} contacts, {len(world.seed.locations[0].appointments):,} appointments "
                f"(1–3 per contact); {n - email_only:,} leads with a stored contact id, {email_only:,} by e-mail "
                f"only (resolved first: +1 request)"
            )
        else:
            log(
                f"  setup: {n:,} invitee e-mails, {len(world.seed.users[0].scheduled_events):,} scheduled events "
                f"(1–3 per e-mail, both event types); per lead 1 events list + 1 invitees list per event"
            )
        insert_leads(engine, ws, world.leads)
        settings = ReconcileSettings(lead_budget=n, time_budget_s=3600.0, concurrency=args.concurrency)
        log(
            f"  settings: lead_budget {settings.lead_budget}, time_budget_s {settings.time_budget_s:g}, "
            f"concurrency {settings.concurrency}, write_batch_leads {settings.write_batch_leads}, "
            f"timeout_s {settings.timeout_s:g} (product defaults except the budgets)"
        )
        sim.clear_counters()
        with probed() as probe:
            t_start = time.time()
            m0 = time.monotonic()
            report = run_reconcile(engine, ws, settings, probe)
            wall = time.monotonic() - m0
            t_end = time.time()
        accepted = sim.accounting.accepted(account_key)
        limited = sim.accounting.rate_limited(account_key)
        peak = sim.max_requests_in_window(account_key, limit.period_s)
        truth = ghl_truth(sim, world) if isinstance(world, GhlWorld) else calendly_truth(sim, world, now)  # type: ignore[arg-type]

    requests = int(report.api.get("api_requests", 0))
    r429 = int(report.api.get("api_429s", 0))
    failed_429 = report.errors_by_kind.get("provider_rate_limited", 0)
    achieved = requests / wall
    lower = requests / rate
    floor = (math.ceil(requests / limit.max_requests) - 1) * limit.period_s
    log(
        f"  run: {report.leads_checked:,}/{report.leads_due:,} leads checked — changed {report.changed:,}, "
        f"unchanged {report.unchanged}, not found {report.not_found}, skipped {report.skipped}, "
        f"errors {report.errors} {report.errors_by_kind or ''}; budget exhausted {report.budget_exhausted}, "
        f"circuit broken {report.circuit_broken}"
    )
    log(
        f"  requests sent: {requests:,} (client) / {len(accepted):,} accepted by the simulator "
        f"({requests / max(1, report.leads_checked):.2f} per lead)"
    )
    log(f"  requests/s: {achieved:.2f} achieved over the run vs limit {rate:.2f}")
    log(
        f"  UTILISATION over the run (achieved ÷ limit): {pct(achieved / rate)}   [target ≥ {pct(TARGET_UTILISATION)}; "
        f"can exceed 100 %: a moving window admits its first {limit.max_requests} requests at once]"
    )
    log(
        f"  UTILISATION simulator-side peak: max_requests_in_window({limit.period_s:g} s) = {peak} of "
        f"{limit.max_requests} → {pct(peak / limit.max_requests)} (never above 100 % = never over the limit)"
    )
    log(
        f"  leads failed: {report.errors}  (because of 429: {failed_429})   429s received: {r429} client / "
        f"{len(limited)} simulator"
    )
    log(f"  wall time: {wall:.1f} s vs LOWER BOUND {lower:.1f} s (requests ÷ rate) → ratio {wall / lower:.3f}")
    efficiency = floor / wall if floor > 0 else None
    log(
        f"  wall time vs burst-aware floor {floor:.1f} s (= (⌈requests÷{limit.max_requests}⌉−1)·{limit.period_s:g} s, "
        f"the least time ANY client needs, as the first window's {limit.max_requests} requests need no wait): "
        + (f"ratio {wall / floor:.3f} → limit efficiency {pct(efficiency)}" if efficiency else "n/a (fits one window)")
    )
    _profile(probe, report, accepted, t_start, t_end, wall, limit)
    verdict = verify(engine, ws, truth, utc_now())
    print_verdict(verdict)
    return ThroughputResult(
        provider,
        n,
        requests,
        wall,
        achieved / rate,
        peak / limit.max_requests,
        efficiency,
        wall / lower,
        report.errors,
        failed_429,
        r429,
        verdict,
    )


def _profile(
    probe: Probe,
    report: ReconcileReport,
    accepted: list[float],
    t_start: float,
    t_end: float,
    wall: float,
    limit: RateLimit,
) -> None:
    """Where the time went: request bursts vs idle gaps, HTTP latency, loop lag, limiter waits, DB batches."""
    if not accepted:
        return
    gap_split = limit.period_s / 10
    bursts: list[list[float]] = [[accepted[0]]]
    for prev, cur in pairwise(accepted):
        if cur - prev > gap_split:
            bursts.append([cur])
        else:
            bursts[-1].append(cur)
    lengths = [b[-1] - b[0] for b in bursts]
    starts = [b[0] for b in bursts]
    intervals = [b - a for a, b in pairwise(starts)]
    sizes = [len(b) for b in bursts]
    log("  profile:")
    log(
        f"    before first request {accepted[0] - t_start:.2f} s (due-lead SELECT, client set-up); after last "
        f"request {t_end - accepted[-1]:.2f} s (last answers, final _flush)"
    )
    if len(bursts) > 1:
        log(
            f"    request pattern: {len(bursts)} bursts (gaps > {gap_split:g} s), "
            f"size median {statistics.median(sizes):g} "
            f"(min {min(sizes)}, max {max(sizes)}); burst length median {statistics.median(lengths):.3f} s, max "
            f"{max(lengths):.3f} s; burst-to-burst interval median {statistics.median(intervals):.3f} s, max "
            f"{max(intervals):.3f} s (ideal {limit.period_s:g} s → "
            f"{pct(limit.period_s / statistics.median(intervals))} of the ideal)"
        )
    else:
        log(f"    request pattern: one stream of {len(accepted)} requests over {accepted[-1] - accepted[0]:.2f} s")
    if probe.http:
        log(
            f"    HTTP send→answer (client-side, {len(probe.http):,} attempts): "
            f"p50 {1000 * q(probe.http, 0.5):.1f} ms, "
            f"p95 {1000 * q(probe.http, 0.95):.1f} ms, max {1000 * max(probe.http):.1f} ms"
        )
    if probe.lag:
        log(
            f"    event-loop lag (20 ms probe): p50 {1000 * q(probe.lag, 0.5):.1f} ms, "
            f"p99 {1000 * q(probe.lag, 0.99):.1f} ms, "
            f"max {1000 * max(probe.lag):.1f} ms"
        )
    waited = float(report.api.get("api_limiter_wait_s", 0.0))
    n = max(1, int(report.api.get("api_requests", 0)))
    log(
        f"    limiter wait: {waited:.0f} s summed over {n:,} requests (mean {waited / n:.2f} s per request; "
        f"concurrent, so not wall time)"
    )
    if probe.flushes:
        total = sum(t for t, _ in probe.flushes)
        log(
            f"    DB writes (_flush, in a worker thread): {len(probe.flushes)} batches of ≤ "
            f"{max(k for _, k in probe.flushes)} leads, total {total:.2f} s ({pct(total / wall)} of wall), "
            f"p50 {1000 * q([t for t, _ in probe.flushes], 0.5):.0f} ms, "
            f"max {1000 * max(t for t, _ in probe.flushes):.0f} ms"
        )


# ------------------------------------------------------------------------------------------------ phase 2


@dataclass
class RobustResult:
    provider: str
    leads: int
    runs_to_converge: int | None
    crashes: int
    failed_429: int
    verdict: Verdict | None


def robustness(provider: str, engine: sa.Engine, n: int, args: argparse.Namespace) -> RobustResult:
    scale = args.robust_scale
    start = utc_now()
    tag = f"rb_{provider}"
    ws = f"bench_{tag}"
    base = GHL_RATE_LIMIT if provider == "ghl" else CALENDLY_RATE_LIMIT
    limit = RateLimit(base.max_requests * scale, base.period_s)
    label = "GHL" if provider == "ghl" else "Calendly"
    log(
        f"\n=== 2. Robustness — {label}: SCALED DOWN to stay within time: {n} leads, limits ×{scale} "
        f"({limit.max_requests} / {limit.period_s:g} s) ==="
    )
    if provider == "ghl":
        world: GhlWorld | CalendlyWorld = ghl_world(
            n, tag=tag, rng_seed=args.seed, email_only_share=args.email_only_share, now=start
        )
        sim: GhlSimulator | CalendlySimulator = GhlSimulator(
            world.seed, rate_limit=limit.max_requests, rate_window_seconds=int(limit.period_s), id_seed=tag
        )
    else:
        world = calendly_world(n, tag=tag, rng_seed=args.seed, now=start)
        sim = CalendlySimulator(
            world.seed, rate_limit=limit.max_requests, rate_window_seconds=int(limit.period_s), id_seed=tag
        )
    settings = ReconcileSettings(
        lead_budget=n,
        time_budget_s=3600.0,
        concurrency=args.concurrency,
        timeout_s=CLIENT_TIMEOUT_S,
        ghl_rate=replace(limit),
        calendly_rate=replace(limit),
    )
    log(
        f"  faults: {pct(FAULTS['error_rate'])} 5xx (500/502/503), {pct(FAULTS['timeout_rate'])} stalls of "
        f"{FAULTS['timeout_seconds']:g} s (client timeout_s {CLIENT_TIMEOUT_S:g}), 429 bursts: every request "
        f"answered 429 for {args.burst_seconds:g} s at the start of every run and again every "
        f"{args.burst_every:g} s while a run lasts (Retry-After / X-RateLimit-Reset = time left in the burst); "
        f"retry policy: product default"
    )
    log(f"  runs: now advanced {ROBUST_STEP} per run (past the error back-off, before the 1 h recheck)")

    crashes = 0
    failed_429_total = 0
    converged_at: int | None = None
    verdict: Verdict | None = None
    with SimulatorServer(sim) as server:
        connect_workspace(engine, ws, world, sim, server.base_url)
        insert_leads(engine, ws, world.leads)
        sim.faults.configure(**FAULTS, seed=args.seed + 17)
        log(
            f"  {'run':>3} {'due':>5} {'checked':>7} {'changed':>7} {'unchgd':>6} {'errors':>6} {'err→429':>7} "
            f"{'reqs':>5} {'429s':>5} {'retries':>7} {'5xx/t-o injected':>16} {'secs':>6}  converged  in-error  crash"
        )
        for run in range(1, args.robust_runs + 1):
            now = start + ROBUST_STEP * (run - 1)
            injected_before = dict(sim.faults.injected)
            sim.faults.burst_429(seconds=args.burst_seconds)  # a run starts inside a 429 burst
            stop = threading.Event()

            def bursts(stop: threading.Event = stop) -> None:
                while not stop.wait(args.burst_every):
                    sim.faults.burst_429(seconds=args.burst_seconds)

            burster = threading.Thread(target=bursts, daemon=True)
            burster.start()
            crashed = ""
            t0 = time.monotonic()
            report: ReconcileReport | None = None
            try:
                with probed() as probe:
                    report = run_reconcile(engine, ws, settings, probe, now=now)
            except Exception as exc:  # a crash is a result here, not the end of the bench
                crashes += 1
                crashed = f"{type(exc).__name__}: {exc}"[:120]
            finally:
                stop.set()
                burster.join()
            secs = time.monotonic() - t0
            truth = ghl_truth(sim, world) if isinstance(world, GhlWorld) else calendly_truth(sim, world, now)  # type: ignore[arg-type]
            verdict = verify(engine, ws, truth, now)
            inj = {k: sim.faults.injected[k] - injected_before.get(k, 0) for k in sim.faults.injected}
            if report is not None:
                f429 = report.errors_by_kind.get("provider_rate_limited", 0)
                failed_429_total += f429
                log(
                    f"  {run:>3} {report.leads_due:>5} {report.leads_checked:>7} {report.changed:>7} "
                    f"{report.unchanged:>6} {report.errors:>6} {f429:>7} {report.api.get('api_requests', 0):>5} "
                    f"{report.api.get('api_429s', 0):>5} {report.api.get('api_retries', 0):>7} "
                    f"{inj['errors']:>8}/{inj['timeouts']:<7} {secs:>6.1f}  {verdict.converged:>4}/{verdict.leads:<4} "
                    f"{verdict.in_error:>8}  {crashed or 'no'}"
                )
                waits = probe.retry_waits
                long_waits = sum(1 for w in waits if w >= 10)
                log(
                    f"      retry sleeps: {len(waits)}, p50 {q(waits, 0.5):.2f} s, max {max(waits, default=0):.1f} s, "
                    f"{long_waits} of ≥ 10 s; HTTP attempts p50 {1000 * q(probe.http, 0.5):.0f} ms"
                    + (f"; errors by kind: {report.errors_by_kind}" if report.errors_by_kind else "")
                )
            else:
                log(f"  {run:>3} CRASHED after {secs:.1f} s: {crashed}; converged {verdict.converged}/{verdict.leads}")
            if converged_at is None and verdict.ok:
                converged_at = run
                if not args.robust_all_runs:
                    break
    ok = converged_at is not None and converged_at <= 3 and crashes == 0
    log(
        f"  RESULT: {'every lead converged after run ' + str(converged_at) if converged_at else 'NOT converged'}"
        f" (target ≤ 3 runs); runs crashed: {crashes}; leads failed because of 429: {failed_429_total}"
        f" → {'PASS' if ok else 'FAIL'}"
    )
    if verdict is not None:
        print_verdict(verdict)
    return RobustResult(provider, n, converged_at, crashes, failed_429_total, verdict)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__.splitlines()[0])
    p.add_argument("--leads", type=int, default=2000, help="due leads of the GHL throughput run (headline)")
    p.add_argument("--provider", choices=("ghl", "calendly", "both"), default="both")
    p.add_argument(
        "--calendly-leads",
        type=int,
        default=None,
        help="due leads of the Calendly throughput run (default: 400 with --provider both, else --leads)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("APPT_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
        help="PostgreSQL server to create the scratch database on",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--concurrency",
        type=int,
        default=ReconcileSettings().concurrency,
        help="ReconcileSettings.concurrency (default: the product default)",
    )
    p.add_argument(
        "--email-only-share",
        type=float,
        default=0.1,
        help="GHL leads stored without a contact id (looked up by e-mail first)",
    )
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-robustness", action="store_true")
    p.add_argument("--robust-leads", type=int, default=300)
    p.add_argument("--robust-scale", type=int, default=10, help="robustness limits = real limits × this")
    p.add_argument("--robust-runs", type=int, default=3)
    p.add_argument("--robust-all-runs", action="store_true", help="do every run even after convergence")
    p.add_argument("--burst-seconds", type=float, default=2.0, help="length of each injected all-429 burst")
    p.add_argument("--burst-every", type=float, default=6.0, help="seconds between 429 bursts during a run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    providers = ["ghl", "calendly"] if args.provider == "both" else [args.provider]
    calendly_leads = args.calendly_leads or (400 if args.provider == "both" else args.leads)

    server = Server(args.database_url)
    db = f"appt_bench_rec_{os.getpid()}"
    log(
        f"bench.reconcile — {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; database {db} on {make_url(args.database_url).host}"
    )
    if "calendly" in providers and args.provider == "both" and not args.calendly_leads:
        log(
            f"note: Calendly throughput runs with {calendly_leads} leads (~3 requests per lead at 500/min ≈ "
            f"{calendly_leads * 3 / 500:.1f} min); GHL with {args.leads:,} leads is the headline. "
            f"Use --provider calendly --leads N for a larger Calendly run."
        )
    server.create(db)
    url = server.sqlalchemy(db)
    started = time.monotonic()
    results: list[ThroughputResult] = []
    robust: list[RobustResult] = []
    try:
        upgrade(url)
        engine = sa.create_engine(url, pool_size=10, max_overflow=10)
        if not args.skip_throughput:
            for prov in providers:
                results.append(throughput(prov, engine, args.leads if prov == "ghl" else calendly_leads, args))
        if not args.skip_robustness:
            for prov in providers:
                robust.append(robustness(prov, engine, args.robust_leads, args))
        engine.dispose()
    finally:
        if args.keep:
            log(f"\nkept database {db}")
        else:
            server.drop(db)

    log(f"\n=== Summary (bench wall {time.monotonic() - started:.0f} s) ===")
    passed = True
    for r in results:
        ok = (
            r.utilisation_run >= TARGET_UTILISATION
            and r.utilisation_peak >= TARGET_UTILISATION
            and r.failed_429 == 0
            and r.verdict.ok
        )
        passed &= ok
        log(
            f"  throughput {r.provider:<8} {r.leads:>5} leads: {r.requests:,} requests in {r.wall_s:.1f} s; "
            f"utilisation run {pct(r.utilisation_run)}, sim peak {pct(r.utilisation_peak)}, floor/wall "
            f"{pct(r.efficiency_floor) if r.efficiency_floor else 'n/a'}; wall/lower bound {r.ratio_lower_bound:.3f}; "
            f"leads failed {r.failed} "
            f"(429: {r.failed_429}); 429s {r.r429}; correct {r.verdict.ok} → {'PASS' if ok else 'FAIL'}"
        )
    for rb in robust:
        ok = rb.runs_to_converge is not None and rb.runs_to_converge <= 3 and rb.crashes == 0
        passed &= ok
        log(
            f"  robustness {rb.provider:<8} {rb.leads:>5} leads: converged after run {rb.runs_to_converge}, "
            f"crashes {rb.crashes}, leads failed because of 429 {rb.failed_429} → {'PASS' if ok else 'FAIL'}"
        )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
