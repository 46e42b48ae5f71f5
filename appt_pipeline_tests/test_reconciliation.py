"""Reconciliation (SPEC §6) against the provider simulators over real loopback HTTP."""

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Source
from appt_pipeline.pipelines.accounts import WorkspaceNotConfigured, load_provider_account
from appt_pipeline.pipelines.reconciliation import ReconcileSettings, reconcile_workspace
from appt_pipeline.providers.http import RateLimit
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
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers import QUICK_RETRY, SECRET_KEY, rows, working_day_slot

KEY = SECRET_KEY
FAST = ReconcileSettings(ghl_rate=RateLimit(1000, 1.0), calendly_rate=RateLimit(1000, 1.0), concurrency=4,
                         retry=QUICK_RETRY)


def _days(n: int) -> str:
    """15:00 UTC on the n-th working day from today (a slot the simulator offers on any date)."""
    return working_day_slot(n)


@pytest.fixture()
def ghl_sim() -> Iterator[tuple[GhlSimulator, str]]:
    seed = GhlSeed(locations=[GhlLocation(
        id="loc1", token="tok-ghl-1", timezone="UTC",
        calendars=[GhlCalendar(id="cal1")],
        contacts=[GhlContact(email="a@example.com", id="c_a"), GhlContact(email="b@example.com", id="c_b")],
        appointments=[
            GhlAppointment(id="g_a1", calendar_id="cal1", contact_id="c_a", start=_days(-20), status="cancelled"),
            GhlAppointment(id="g_a2", calendar_id="cal1", contact_id="c_a", start=_days(5), status="confirmed"),
            GhlAppointment(id="g_b1", calendar_id="cal1", contact_id="c_b", start=_days(3), status="confirmed"),
        ],
    )])
    sim = GhlSimulator(seed)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _ghl_workspace(engine: sa.Engine, base_url: str, ws: str = "ws_g", location: str = "loc1") -> None:
    set_workspace(engine, ws, {"meeting_booking_provider": "GHL", "ghl_location_id": location,
                               "ghl_api_base_url": base_url, "timezone": "UTC"})
    set_secret(engine, ws, "ghl_private_token", "tok-ghl-1", KEY)


def _leads(engine: sa.Engine, ws: str, leads: list[tuple[str, str | None, str | None]],
           status: str = "qualified") -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id, email, ghl_contact_id, status, last_inbound_at) "
                             "VALUES (:id, :ws, :email, :cid, :status, now())"),
                     [{"id": i, "ws": ws, "email": e, "cid": c, "status": status} for i, e, c in leads])


def _run(engine: sa.Engine, ws: str, **kw: object) -> object:
    account = load_provider_account(engine, ws, KEY)
    return asyncio.run(reconcile_workspace(engine, account, settings=kw.pop("settings", FAST), **kw))  # type: ignore[arg-type]


def test_ghl_discovery_finds_every_appointment_persists_contact_and_advances_watermark(
    db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]
) -> None:
    _, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("la", "A@Example.com ", None), ("lb", None, "c_b"), ("lc", "nobody@example.com", None)])
    report = _run(db, "ws_g")
    assert (report.leads_checked, report.changed, report.not_found, report.errors) == (3, 2, 1, 0)
    assert report.new_bookings == 2 and report.api["api_requests"] >= 4
    got = rows(db, "SELECT lead_id, ghl_appointment_id, status, source, ghl_calendar_id FROM appointments ORDER BY 2")
    assert [tuple(r) for r in got] == [("la", "g_a1", "CANCELED", "RECONCILE_CRON", "cal1"),
                                       ("la", "g_a2", "CONFIRMED", "RECONCILE_CRON", "cal1"),
                                       ("lb", "g_b1", "CONFIRMED", "RECONCILE_CRON", "cal1")]
    leads = {r.id: r for r in rows(db, "SELECT * FROM leads")}
    assert leads["la"].ghl_contact_id == "c_a" and leads["la"].ghl_appointment_id == "g_a2"
    assert leads["la"].status == "meeting-booked"
    assert all(r.appointment_last_checked_at is not None and r.appointment_next_check_at > r.appointment_last_checked_at
               for r in leads.values())
    with db.connect() as conn:
        assert drift_report(conn, "ws_g", utc_now()).drifted == 0
    # nothing is due again until the recheck interval passes; then the same truth changes nothing
    assert _run(db, "ws_g").leads_checked == 0
    again = _run(db, "ws_g", now=utc_now() + timedelta(hours=2))
    assert (again.leads_checked, again.changed, again.unchanged) == (3, 0, 2)


def test_a_new_booking_after_a_cancellation_is_found(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("lb", None, "c_b")])
    _run(db, "ws_g")
    sim.cancel("g_b1")
    new = sim.book("cal1", _days(8), contact_id="c_b")
    report = _run(db, "ws_g", now=utc_now() + timedelta(hours=2))
    assert (report.new_bookings, report.cancellations) == (1, 1)
    lead = rows(db, "SELECT ghl_appointment_id, appointment_status FROM leads WHERE id = 'lb'")[0]
    assert tuple(lead) == (new["id"], "confirmed")
    # a CONFIRMED primary was canceled, but the lead booked again: the task is cancelled at once
    tasks = rows(db, "SELECT type, status FROM follow_up_tasks WHERE lead_id = 'lb'")
    assert [tuple(t) for t in tasks] == [("meeting-canceled", "cancelled")]


def test_a_ghl_reschedule_keeps_its_id_and_is_counted(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("lb", None, "c_b")])
    _run(db, "ws_g")
    sim.reschedule("g_b1", _days(10))
    report = _run(db, "ws_g", now=utc_now() + timedelta(hours=2))
    assert (report.changed, report.reschedules, report.new_bookings, report.cancellations) == (1, 1, 0, 0)
    moved = rows(db, "SELECT a.start_at, l.booked_slot FROM appointments a JOIN leads l ON l.id = a.lead_id")
    assert len(moved) == 1 and moved[0].booked_slot.startswith(moved[0].start_at.strftime("%Y-%m-%dT%H:%M"))


def test_provider_errors_trip_the_circuit_breaker(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [(f"l{i}", None, "c_a") for i in range(10)])
    sim.faults.configure(error_rate=1.0, error_statuses=(500,), seed=1)
    report = _run(db, "ws_g", settings=replace(FAST, concurrency=1))
    assert report.circuit_broken and report.errors == 5 and report.leads_checked == 5
    assert report.errors_by_kind == {"provider_server": 5}
    assert rows(db, "SELECT count(*) AS n FROM leads WHERE appointment_last_checked_at IS NULL")[0].n == 5


def test_errors_advance_the_watermark_with_exponential_back_off(db: sa.Engine,
                                                               ghl_sim: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("l1", None, "c_a")])
    sim.faults.configure(error_rate=1.0, error_statuses=(503,), seed=1)
    start = utc_now()
    for n, minutes in ((1, 0), (2, 2), (3, 5)):
        report = _run(db, "ws_g", now=start + timedelta(minutes=minutes))
        assert report.errors == 1
        lead = rows(db, "SELECT appointment_check_failures AS n, appointment_last_checked_at AS checked, "
                        "appointment_next_check_at - appointment_last_checked_at AS gap FROM leads")[0]
        assert lead.n == n and lead.gap == timedelta(seconds=60 * 2 ** (n - 1))
        assert lead.checked == start + timedelta(minutes=minutes)
    # the provider recovers: the next check succeeds and resets the failures
    sim.faults.clear()
    assert _run(db, "ws_g", now=start + timedelta(minutes=10)).changed == 1
    assert rows(db, "SELECT appointment_check_failures AS n FROM leads")[0].n == 0


def test_dry_run_writes_nothing(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("lb", None, "c_b")])
    report = _run(db, "ws_g", dry_run=True)
    assert report.changed == 1 and report.new_bookings == 1
    assert rows(db, "SELECT count(*) AS n FROM appointments")[0].n == 0
    assert rows(db, "SELECT appointment_last_checked_at AS checked FROM leads")[0].checked is None


def test_a_lead_of_another_workspace_is_never_touched(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_sim
    _ghl_workspace(db, url, "ws_g")
    _ghl_workspace(db, url, "ws_other", location="loc_other")
    _leads(db, "ws_g", [("mine", None, "c_b")])
    _leads(db, "ws_other", [("theirs", "b@example.com", "c_b")])
    _run(db, "ws_g")
    theirs = rows(db, "SELECT * FROM leads WHERE id = 'theirs'")[0]
    assert theirs.appointment_last_checked_at is None and theirs.ghl_appointment_id is None
    assert rows(db, "SELECT DISTINCT lead_id FROM appointments")[0].lead_id == "mine"


def test_backfill_source_has_no_side_effects(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("la", None, "c_a")])
    _run(db, "ws_g", source=Source.BACKFILL)
    assert rows(db, "SELECT status FROM leads")[0].status == "qualified"
    assert {r.source for r in rows(db, "SELECT source FROM appointments")} == {"BACKFILL"}


def test_unconfigured_workspace_is_refused(db: sa.Engine) -> None:
    set_workspace(db, "bare", {"meeting_booking_provider": "GHL"})
    with pytest.raises(WorkspaceNotConfigured, match="ghl_location_id"):
        load_provider_account(db, "bare", KEY)


ORG_ID = "0000aaaa-0000-0000-0000-000000000001"
ORG = f"https://api.calendly.com/organizations/{ORG_ID}"


@pytest.fixture()
def calendly_sim() -> Iterator[tuple[CalendlySimulator, str]]:
    et = CalendlyEventType(name="Intro", slug="intro", uuid="11111111-1111-1111-1111-111111111111")
    other = CalendlyEventType(name="Other", slug="other", uuid="22222222-2222-2222-2222-222222222222")
    user = CalendlyUser(token="tok-cal-1", email="rep@example.com", uuid="33333333-3333-3333-3333-333333333333",
                        organization=ORG_ID, event_types=[et, other], scheduled_events=[
                            CalendlyScheduledEvent(
                                event_type=slug, start=_days(days), uuid=f"44444444-0000-0000-0000-00000000000{n}",
                                invitees=[CalendlyInvitee(email="c@example.com",
                                                          uuid=f"55555555-0000-0000-0000-00000000000{n}")])
                            for n, slug, days in ((1, "intro", 4), (2, "other", 6))
                        ])
    sim = CalendlySimulator(CalendlySeed(users=[user]))
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def test_calendly_reschedule_chain_and_event_type_filter(db: sa.Engine,
                                                         calendly_sim: tuple[CalendlySimulator, str]) -> None:
    sim, url = calendly_sim
    intro = "https://api.calendly.com/event_types/11111111-1111-1111-1111-111111111111"
    set_workspace(db, "ws_c", {"meeting_booking_provider": "CALENDLY", "calendly_organization_uri": ORG,
                               "calendly_event_type_uri": intro, "calendly_api_base_url": url})
    set_secret(db, "ws_c", "calendly_access_token", "tok-cal-1", KEY)
    _leads(db, "ws_c", [("lc", "c@example.com", None)])
    first = _run(db, "ws_c")
    assert (first.changed, first.new_bookings) == (1, 1)
    old_uri = ("https://api.calendly.com/scheduled_events/44444444-0000-0000-0000-000000000001"
               "/invitees/55555555-0000-0000-0000-000000000001")
    assert [r.calendly_invitee_uri for r in rows(db, "SELECT calendly_invitee_uri FROM appointments")] == [old_uri]
    new = sim.reschedule(old_uri, _days(9))
    report = _run(db, "ws_c", now=utc_now() + timedelta(hours=2))
    assert (report.reschedules, report.new_bookings) == (1, 1)
    chain = rows(db, "SELECT n.calendly_invitee_uri AS new_uri, o.calendly_invitee_uri AS old_uri, o.status "
                     "FROM appointments n JOIN appointments o ON o.id = n.rescheduled_from_id")
    new_uri = new["uri"] if isinstance(new, dict) else new.uri
    assert [tuple(r) for r in chain] == [(new_uri, old_uri, "RESCHEDULED")]
    tasks = rows(db, "SELECT type FROM follow_up_tasks")
    assert [t.type for t in tasks] == ["meeting-rescheduled"]



class _StatusRewritingProxy:
    """A loopback HTTP proxy in front of a simulator that reports one record's status as ``status``.

    The simulators refuse statuses outside the provider's vocabulary (seed, admin API, public API), so an odd
    provider answer is made here, on the wire: every request is forwarded unchanged; in every JSON answer an
    object whose ``id`` or ``uri`` is ``target`` gets its ``appointmentStatus``/``status`` replaced.
    """

    def __init__(self, upstream: str, target: str, status: str) -> None:
        def rewrite(value: object) -> object:
            if isinstance(value, dict):
                out = {k: rewrite(v) for k, v in value.items()}
                if target in (out.get("id"), out.get("uri")):
                    for key in ("appointmentStatus", "appoinmentStatus", "status"):
                        if key in out:
                            out[key] = status
                return out
            if isinstance(value, list):
                return [rewrite(v) for v in value]
            return value

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept-encoding")}
                answer = httpx.get(upstream + self.path, headers=headers)
                body = answer.content
                if answer.headers.get("content-type", "").startswith("application/json"):
                    body = json.dumps(rewrite(answer.json())).encode()
                self.send_response(answer.status_code)
                self.send_header("content-type", answer.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "_StatusRewritingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def test_an_unknown_ghl_status_is_a_counted_lead_error_not_a_failed_run(
    db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]
) -> None:
    _, url = ghl_sim
    with _StatusRewritingProxy(url, "g_b1", "tentative") as proxy:
        _ghl_workspace(db, proxy.base_url)
        _leads(db, "ws_g", [("la", None, "c_a"), ("lb", None, "c_b")])
        start = utc_now()
        report = _run(db, "ws_g", now=start)
        assert (report.leads_checked, report.changed, report.errors) == (2, 1, 1)
        assert report.errors_by_kind == {"unknown_status": 1}
        # the other lead of the run is written; the odd one is not guessed at
        assert {r.lead_id for r in rows(db, "SELECT lead_id FROM appointments")} == {"la"}
        leads = {r.id: r for r in rows(db, "SELECT id, appointment_check_failures AS n, appointment_last_checked_at AS "
                                           "checked, appointment_next_check_at - appointment_last_checked_at AS gap "
                                           "FROM leads")}
        assert leads["lb"].n == 1 and leads["lb"].checked == start and leads["lb"].gap == timedelta(seconds=60)
        assert leads["la"].n == 0 and leads["la"].gap == timedelta(hours=1)
        # the next run is not blocked by it: the lead backs off and the watermark keeps advancing
        again = _run(db, "ws_g", now=start + timedelta(minutes=2))
        assert (again.leads_checked, again.errors) == (1, 1)
        assert rows(db, "SELECT appointment_check_failures AS n FROM leads WHERE id = 'lb'")[0].n == 2


def test_an_unknown_calendly_invitee_status_is_a_counted_lead_error(
    db: sa.Engine, calendly_sim: tuple[CalendlySimulator, str]
) -> None:
    _, url = calendly_sim
    invitee = ("https://api.calendly.com/scheduled_events/44444444-0000-0000-0000-000000000001"
               "/invitees/55555555-0000-0000-0000-000000000001")
    with _StatusRewritingProxy(url, invitee, "tentative") as proxy:
        set_workspace(db, "ws_c", {"meeting_booking_provider": "CALENDLY", "calendly_organization_uri": ORG,
                                   "calendly_api_base_url": proxy.base_url})
        set_secret(db, "ws_c", "calendly_access_token", "tok-cal-1", KEY)
        _leads(db, "ws_c", [("lc", "c@example.com", None), ("ld", "nobody@example.com", None)])
        start = utc_now()
        report = _run(db, "ws_c", now=start)
        assert (report.leads_checked, report.errors, report.not_found) == (2, 1, 1)
        assert report.errors_by_kind == {"unknown_status": 1}
        assert rows(db, "SELECT count(*) AS n FROM appointments")[0].n == 0
        lead = rows(db, "SELECT appointment_check_failures AS n, appointment_last_checked_at AS checked "
                        "FROM leads WHERE id = 'lc'")[0]
        assert (lead.n, lead.checked) == (1, start)


def test_never_checked_leads_come_first(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("a_old", None, "c_a"), ("z_new", None, "c_b")])
    start = utc_now()
    with db.begin() as conn:  # a_old was checked long ago and is due; z_new was never checked
        conn.execute(sa.text("UPDATE leads SET appointment_last_checked_at = :t, appointment_next_check_at = :t "
                             "WHERE id = 'a_old'"), {"t": start - timedelta(days=30)})
    report = _run(db, "ws_g", now=start, settings=replace(FAST, lead_budget=1))
    assert (report.leads_due, report.leads_checked) == (1, 1)
    assert {r.lead_id for r in rows(db, "SELECT lead_id FROM appointments")} == {"z_new"}


def test_the_time_budget_stops_a_run(db: sa.Engine, ghl_sim: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_sim
    _ghl_workspace(db, url)
    _leads(db, "ws_g", [("la", None, "c_a"), ("lb", None, "c_b")])
    report = _run(db, "ws_g", settings=replace(FAST, time_budget_s=0.0))
    assert (report.leads_due, report.leads_checked, report.budget_exhausted) == (2, 0, True)
    assert rows(db, "SELECT count(*) AS n FROM leads WHERE appointment_last_checked_at IS NULL")[0].n == 2


def _calendly_workspace(db: sa.Engine, url: str, **config: str) -> None:
    set_workspace(db, "ws_c", {"meeting_booking_provider": "CALENDLY", "calendly_organization_uri": ORG,
                               "calendly_api_base_url": url, **config})
    set_secret(db, "ws_c", "calendly_access_token", "tok-cal-1", KEY)


def test_the_direct_book_event_type_is_part_of_calendlys_filter(
    db: sa.Engine, calendly_sim: tuple[CalendlySimulator, str]
) -> None:
    _, url = calendly_sim
    types = "https://api.calendly.com/event_types/"
    _calendly_workspace(db, url, calendly_event_type_uri=types + "11111111-1111-1111-1111-111111111111",
                        calendly_direct_book_event_type_uri=types + "22222222-2222-2222-2222-222222222222")
    _leads(db, "ws_c", [("lc", "c@example.com", None)])
    report = _run(db, "ws_c")
    assert report.new_bookings == 2 and report.observations == 2  # both events, of both configured types
    assert rows(db, "SELECT count(*) AS n FROM appointments")[0].n == 2


def test_calendly_not_found_and_error_outcomes_advance_the_watermark(
    db: sa.Engine, calendly_sim: tuple[CalendlySimulator, str]
) -> None:
    """Like GHL's. (Calendly's ``skipped`` — a lead without e-mail — is never due: the due query requires one.)"""
    sim, url = calendly_sim
    _calendly_workspace(db, url)
    _leads(db, "ws_c", [("ld", "nobody@example.com", None)])
    start = utc_now()
    clean = _run(db, "ws_c", now=start)
    assert clean.not_found == 1
    lead = rows(db, "SELECT appointment_last_checked_at AS checked, "
                    "appointment_next_check_at - appointment_last_checked_at AS gap FROM leads")[0]
    assert (lead.checked, lead.gap) == (start, timedelta(hours=1))
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM leads"))
    _leads(db, "ws_c", [("lc", "c@example.com", None)])
    sim.faults.configure(error_rate=1.0, error_statuses=(503,), seed=1)
    report = _run(db, "ws_c", now=start)
    assert report.errors == 1 and report.errors_by_kind == {"provider_server": 1}
    lead = rows(db, "SELECT appointment_check_failures AS n, appointment_last_checked_at AS checked, "
                    "appointment_next_check_at - appointment_last_checked_at AS gap FROM leads")[0]
    assert (lead.n, lead.checked, lead.gap) == (1, start, timedelta(seconds=60))
