"""Simulator seeds from the shipped legacy sample, and the deterministic provider drift of the demo.

The expectations are computed from the CSV here, independently of ``legacy_seed``; the simulators'
answers are read in their API shapes and normalised with the project's own parsers.
"""

import asyncio
import csv
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from appt_pipeline.domain.timeparse import parse_timestamp_or_none
from appt_pipeline.domain.vocab import Status, map_status
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.normalize import (
    calendly_status,
    parse_calendly_event,
    parse_calendly_invitee,
    parse_ghl_appointment,
)
from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sandbox import CalendlySimulator, GhlSimulator, SimulatorServer
from appt_pipeline.sandbox.legacy_seed import (
    DRIFT_KINDS,
    DriftSummary,
    LegacySeed,
    apply_drift,
    legacy_seeds,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _clock() -> datetime:
    return NOW


def _csv(name: str) -> list[dict[str, str]]:
    with (SAMPLE_DIR / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _sims(legacy: LegacySeed, id_seed: str = "t") -> tuple[GhlSimulator, CalendlySimulator]:
    return (GhlSimulator(legacy.ghl, id_seed=id_seed, clock=_clock),
            CalendlySimulator(legacy.calendly, id_seed=id_seed, clock=_clock))


@pytest.fixture(scope="module")
def legacy() -> LegacySeed:
    return legacy_seeds(SAMPLE_DIR)


def _expected() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], int]:
    """From the CSV: GHL appointments and Calendly invitees the providers can hold, and how many leads
    carry a provider id at all."""
    workspaces = {w["id"]: w for w in _csv("workspaces.csv")}
    ghl: dict[str, dict[str, Any]] = {}
    calendly: dict[str, dict[str, Any]] = {}
    with_ids = 0
    for lead in sorted(_csv("leads.csv"), key=lambda r: r["id"]):
        appt, invitee = lead["ghl_appointment_id"], lead["calendly_invitee_uri"]
        if not (appt or invitee or lead["calendly_scheduled_event_uri"]):
            continue
        with_ids += 1
        ws = workspaces[lead["workspace_id"]]
        start = parse_timestamp_or_none(lead["appointment_start_at"]) or parse_timestamp_or_none(lead["booked_slot"])
        status = map_status(lead["appointment_status"] or None, has_provider_id=True)
        end = parse_timestamp_or_none(lead["appointment_end_at"])
        if appt and ws["meeting_booking_provider"] == "GHL" and start and status is not Status.RESCHEDULED:
            ghl[appt] = {"lead": lead, "ws": ws, "start": start, "end": end, "status": status}
        elif (not appt and invitee and ws["meeting_booking_provider"] == "CALENDLY" and start and lead["email"]
              and status is not Status.SHOWED):
            # Calendly cannot hold RESCHEDULED without the new invitee: it is a canceled invitee
            want = Status.CANCELED if status is Status.RESCHEDULED else status
            calendly[invitee] = {"lead": lead, "ws": ws, "start": start, "end": end, "status": want}
    return ghl, calendly, with_ids


def test_the_seed_holds_every_representable_legacy_appointment_with_its_status_and_times(legacy: LegacySeed) -> None:
    ghl_expected, calendly_expected, with_ids = _expected()
    ghl_sim, calendly_sim = _sims(legacy)

    assert len(ghl_expected) > 1000 and len(calendly_expected) > 400
    assert {b.key for b in legacy.bookings} == set(ghl_expected) | set(calendly_expected)
    # everything else is skipped and counted, by reason
    assert len(legacy.bookings) + sum(legacy.skipped.values()) == with_ids
    assert set(legacy.skipped) <= {"no_start", "calendly_no_invitee", "calendly_no_email", "wrong_provider",
                                   "calendly_showed", "calendly_event_conflict", "unknown_status",
                                   "ghl_rescheduled", "duplicate_id", "unconfigured_workspace", "unknown_workspace"}

    for appt_id, want in ghl_expected.items():
        body = ghl_sim.appointment(appt_id)  # the shape of GET /calendars/events/appointments/{id}
        got = parse_ghl_appointment({"appointment": body})
        assert got is not None
        assert map_status(got.status) is want["status"], appt_id
        assert got.status in ("confirmed", "cancelled", "showed", "noshow")
        assert got.start_at == want["start"]
        if want["end"]:
            assert got.end_at == want["end"]
        assert got.location_id == want["ws"]["ghl_location_id"]
        assert got.calendar_id == want["ws"]["ghl_default_calendar_id"]
        assert got.contact_id == want["lead"]["ghl_contact_id"]
        if want["lead"]["appointment_booked_at"]:
            assert got.date_added == parse_timestamp_or_none(want["lead"]["appointment_booked_at"])
        # times are rendered in the location's (workspace's) zone
        zone = want["ws"]["timezone"] or "UTC"
        assert got.start_time_raw == got.start_at.astimezone(ZoneInfo(zone)).isoformat()

    for uri, want in calendly_expected.items():
        invitee = parse_calendly_invitee(calendly_sim.invitee(uri))
        assert invitee is not None
        event = parse_calendly_event(calendly_sim.event(want["lead"]["calendly_scheduled_event_uri"]))
        assert event is not None
        assert invitee.uri == uri and invitee.event_uri == want["lead"]["calendly_scheduled_event_uri"]
        assert invitee.email == want["lead"]["email"].lower()
        assert calendly_status(invitee) is want["status"], uri
        assert event.start_at == want["start"]
        if want["end"]:
            assert event.end_at == want["end"]
        assert event.event_type_uri == want["ws"]["calendly_event_type_uri"]

    # the accounts: GHL locations of the GHL workspaces, a Calendly user in each Calendly workspace's organization
    for ws in _csv("workspaces.csv"):
        account = legacy.accounts[ws["id"]]
        if ws["meeting_booking_provider"] == "GHL":
            assert ghl_sim.location_of_token(account.token) == ws["ghl_location_id"]
        else:
            assert calendly_sim.organization_uri(account.token) == ws["calendly_organization_uri"]
            assert account.calendly_organization_uri == ws["calendly_organization_uri"]


def test_the_seeded_accounts_answer_the_project_clients_over_http(legacy: LegacySeed) -> None:
    ghl_expected, calendly_expected, _ = _expected()
    ghl_sim, calendly_sim = GhlSimulator(legacy.ghl), CalendlySimulator(legacy.calendly)
    appt_id, ghl_want = next(iter(ghl_expected.items()))
    invitee_uri, cal_want = next((k, v) for k, v in calendly_expected.items()
                                 if abs(v["start"] - datetime.now(UTC)) < timedelta(days=80))

    async def check(ghl_url: str, calendly_url: str) -> None:
        ws = ghl_want["ws"]
        async with httpx.AsyncClient() as http:
            ghl = GhlClient(base_url=ghl_url, token=legacy.accounts[ws["id"]].token,
                            location_id=ws["ghl_location_id"], http=http)
            listing = await ghl.get_contact_appointments(ghl_want["lead"]["ghl_contact_id"])
            assert appt_id in {a.id for a in listing.items}
            assert await ghl.find_contact_id_by_email(ghl_want["lead"]["email"]) == ghl_want["lead"]["ghl_contact_id"]
            cws = cal_want["ws"]
            cal = CalendlyClient(base_url=calendly_url, token=legacy.accounts[cws["id"]].token,
                                 organization_uri=cws["calendly_organization_uri"], http=http)
            now = datetime.now(UTC)
            events = await cal.list_scheduled_events(invitee_email=cal_want["lead"]["email"],
                                                     min_start=now - timedelta(days=90),
                                                     max_start=now + timedelta(days=90))
            assert cal_want["lead"]["calendly_scheduled_event_uri"] in {e.uri for e in events}
            invitees = await cal.list_event_invitees(cal_want["lead"]["calendly_scheduled_event_uri"])
            assert invitee_uri in {i.uri for i in invitees}

    with SimulatorServer(ghl_sim) as ghl_server, SimulatorServer(calendly_sim) as calendly_server:
        asyncio.run(check(ghl_server.base_url, calendly_server.base_url))


def _state(ghl_sim: GhlSimulator, calendly_sim: CalendlySimulator) -> str:
    return json.dumps([ghl_sim.snapshot(), calendly_sim.snapshot()], sort_keys=True, default=str)


def test_drift_is_deterministic_for_a_seed_and_differs_between_seeds(legacy: LegacySeed) -> None:
    runs = []
    for _ in range(2):
        ghl_sim, calendly_sim = _sims(legacy)
        drift = apply_drift(ghl_sim, calendly_sim, seed=7, legacy=legacy, now=NOW)
        runs.append((drift.actions, _state(ghl_sim, calendly_sim)))
    assert runs[0] == runs[1]
    # tokens are generated per build, the drift is not: a new build of the seeds drifts the same way
    rebuilt = legacy_seeds(SAMPLE_DIR)
    assert rebuilt.accounts["ws_7_0"].token != legacy.accounts["ws_7_0"].token
    ghl_sim, calendly_sim = _sims(rebuilt)
    assert apply_drift(ghl_sim, calendly_sim, seed=7, legacy=rebuilt, now=NOW).actions == runs[0][0]
    other = apply_drift(*_sims(legacy), seed=8, legacy=legacy, now=NOW)
    assert {(a.kind, a.key) for a in other.actions} != {(a.kind, a.key) for a in runs[0][0]}


def test_drift_does_what_its_summary_says_only_on_the_given_leads(legacy: LegacySeed) -> None:
    ghl_sim, calendly_sim = _sims(legacy)
    before = {b.key: b for b in legacy.bookings}
    leads = sorted({b.lead_id for b in legacy.bookings})[::2]
    drift: DriftSummary = apply_drift(ghl_sim, calendly_sim, seed=7, legacy=legacy, leads=leads, now=NOW)

    counts = drift.counts()
    assert set(counts) == set(DRIFT_KINDS) and all(counts[k] >= 3 for k in DRIFT_KINDS), counts
    assert {a.workspace_id for a in drift.actions} == {"ws_7_0", "ws_7_1", "ws_7_2"}
    # a few per cent, at most one action per lead, only the leads given
    assert len(drift.actions) < 0.1 * len([b for b in legacy.bookings if b.lead_id in set(leads)])
    assert len({a.lead_id for a in drift.actions}) == len(drift.actions)
    assert {a.lead_id for a in drift.actions} <= set(leads)

    for a in drift.actions:
        b = before[a.key]
        if a.provider == "GHL":
            now_there = parse_ghl_appointment({"appointment": ghl_sim.appointment(a.key)})
            assert now_there is not None
            if a.kind == "cancel":
                assert now_there.status == "cancelled" and b.status is Status.CONFIRMED
            elif a.kind == "no_show":
                assert now_there.status == "noshow" and b.status is Status.CONFIRMED and b.start < NOW
            elif a.kind == "reschedule":  # same id, new time
                assert now_there.status == "confirmed" and now_there.start_at == a.start == b.start + timedelta(days=2)
            else:  # the lead booked again after a cancellation
                assert b.status is Status.CANCELED and now_there.status == "cancelled"
                new = parse_ghl_appointment({"appointment": ghl_sim.appointment(str(a.new_key))})
                assert new is not None and new.status == "confirmed" and new.contact_id == b.ghl_contact_id
                assert new.start_at == a.start
        else:
            old = parse_calendly_invitee(calendly_sim.invitee(a.key))
            assert old is not None
            if a.kind == "cancel":
                assert calendly_status(old) is Status.CANCELED
            elif a.kind == "no_show":
                assert calendly_status(old) is Status.NO_SHOW
            elif a.kind == "reschedule":  # old invitee canceled with the link, a new one on a new event
                new = parse_calendly_invitee(calendly_sim.invitee(str(a.new_key)))
                assert new is not None
                assert calendly_status(old) is Status.RESCHEDULED and old.new_invitee == a.new_key
                assert new.old_invitee == a.key and calendly_status(new) is Status.CONFIRMED
                assert new.event_uri != old.event_uri
            else:
                new = parse_calendly_invitee(calendly_sim.invitee(str(a.new_key)))
                assert new is not None and calendly_status(new) is Status.CONFIRMED and new.old_invitee is None
                assert new.email == (b.email or "").lower()
            # Calendly drift stays inside reconciliation's ±90-day window
            assert abs(a.start - NOW) < timedelta(days=90)

    # what a reconciliation pass is expected to count
    kinds = Counter((a.provider, a.kind) for a in drift.actions)
    expected = drift.expected()
    assert expected.cancellations == counts["cancel"]
    assert expected.reschedules == counts["reschedule"]
    assert expected.new_bookings == counts["new_booking"] + kinds[("CALENDLY", "reschedule")]
    assert expected.changed_leads == len({a.lead_id for a in drift.actions})
