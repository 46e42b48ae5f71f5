"""Seed data of the simulators: plain dataclasses (or the same as dicts), plus sample generators.

A seed describes what the provider "already knows" when the simulator starts. Everything optional
is generated deterministically from the simulator's ``id_seed``. Times are ``datetime`` (naive =
UTC) or ISO-8601 text; durations are minutes where the field name says so.

GHL (one entry per sub-account / location)::

    GhlSeed(locations=[GhlLocation(
        id="loc_1", token="pit-loc1", timezone="America/Chicago",
        calendars=[GhlCalendar(name="Sales Call", id="cal_1")],
        contacts=[GhlContact(email="ann@example.com", id="c_ann", first_name="Ann")],
        appointments=[GhlAppointment(calendar_id="cal_1", contact_id="c_ann",
                                     start="2026-08-03T15:00:00Z", status="confirmed")],
    )])

Calendly (one entry per user; users sharing ``organization`` form one organization)::

    CalendlySeed(users=[CalendlyUser(
        token="cal-token-1", email="rep@acme.test", name="Rep One", organization="org-1",
        event_types=[CalendlyEventType(name="Discovery Call", slug="discovery", duration=30)],
        scheduled_events=[CalendlyScheduledEvent(event_type="discovery", start="2026-08-03T15:00:00Z",
                          invitees=[CalendlyInvitee(email="ann@example.com", name="Ann Lee")])],
    )])

``sample_ghl_seed`` / ``sample_calendly_seed`` build realistic seeds of any size (used by
``python -m appt_pipeline.sandbox``, demos and benchmarks).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appt_pipeline.sandbox.common import WorkingHours, default_working_hours, slot_grid

# ----------------------------------------------------------------------------------- GHL


@dataclass
class GhlContact:
    """A contact of a location. ``email`` is matched case-insensitively by duplicate search."""

    email: str
    id: str | None = None
    first_name: str = ""
    last_name: str = ""
    phone: str | None = None
    date_added: datetime | str | None = None


@dataclass
class GhlCalendar:
    """A booking calendar: slots of ``slot_minutes`` every ``interval_minutes`` in working hours.

    ``working_hours`` maps ``mon``…``sun`` to ``[("09:00", "17:00"), …]`` in the location's zone
    (default Monday–Friday 09:00–17:00). Free slots reach ``booking_horizon_days`` ahead and start
    at least ``min_notice_minutes`` from now. ``auto_confirm`` → new bookings are ``confirmed``
    (else ``new``).
    """

    name: str = "Sales Call"
    id: str | None = None
    slot_minutes: int = 30
    interval_minutes: int | None = None
    working_hours: WorkingHours | None = None
    assigned_user_id: str | None = None
    group_id: str = ""
    auto_confirm: bool = True
    booking_horizon_days: int = 60
    min_notice_minutes: int = 0


@dataclass
class GhlAppointment:
    """An existing appointment. ``calendar_id`` may name the calendar by id or name,
    ``contact_id`` the contact by id or e-mail. ``end`` defaults to start + the calendar's slot.
    ``status`` is GHL's ``appointmentStatus`` (``new|confirmed|cancelled|showed|noshow|invalid``).
    """

    calendar_id: str
    contact_id: str
    start: datetime | str
    end: datetime | str | None = None
    status: str = "confirmed"
    id: str | None = None
    title: str | None = None
    deleted: bool = False
    address: str = ""
    notes: str = ""
    date_added: datetime | str | None = None
    date_updated: datetime | str | None = None


@dataclass
class GhlLocation:
    """A sub-account: its Private Integration Token, IANA zone and data."""

    id: str
    token: str
    timezone: str = "America/Chicago"
    name: str = ""
    calendars: list[GhlCalendar | dict[str, Any]] = field(default_factory=list)
    contacts: list[GhlContact | dict[str, Any]] = field(default_factory=list)
    appointments: list[GhlAppointment | dict[str, Any]] = field(default_factory=list)


@dataclass
class GhlSeed:
    locations: list[GhlLocation | dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------- Calendly


@dataclass
class CalendlyEventType:
    """An event type of a user. ``slug``/``uuid`` are generated when absent.

    ``kind`` ``solo`` (one invitee per event) or ``group`` (up to ``max_invitees`` per event).
    Slots: every ``interval_minutes`` (default ``duration``) in the owner's working hours, up to
    ``booking_horizon_days`` ahead, at least ``min_notice_minutes`` from now.
    """

    name: str = "30 Minute Meeting"
    slug: str | None = None
    uuid: str | None = None
    duration: int = 30
    interval_minutes: int | None = None
    kind: str = "solo"
    max_invitees: int = 1
    active: bool = True
    location_kind: str = "zoom_conference"
    custom_questions: list[dict[str, Any]] = field(default_factory=list)
    booking_horizon_days: int = 60
    min_notice_minutes: int = 0


@dataclass
class CalendlyInvitee:
    """An invitee of a seeded scheduled event (``status`` ``active|canceled``)."""

    email: str
    name: str | None = None
    uuid: str | None = None
    status: str = "active"
    timezone: str = "America/New_York"
    created_at: datetime | str | None = None
    cancel_reason: str = ""
    canceler_type: str = "invitee"
    no_show: bool = False
    questions_and_answers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CalendlyScheduledEvent:
    """A scheduled event; ``event_type`` names one of the user's event types (uuid, URI or slug).
    ``status`` defaults to ``active`` while any invitee is active, else ``canceled``.
    """

    event_type: str
    start: datetime | str
    invitees: list[CalendlyInvitee | dict[str, Any]] = field(default_factory=list)
    uuid: str | None = None
    end: datetime | str | None = None
    status: str | None = None
    created_at: datetime | str | None = None


@dataclass
class CalendlyUser:
    """A Calendly user and its personal access token.

    ``organization``: organization uuid (generated when absent; users naming the same one share
    it). ``role`` ``owner|admin|user`` (owners/admins may list the whole organization). ``plan``
    ``free|standard|teams|enterprise|trial`` picks the rate limits (free: 50/min, others 500/min).
    """

    token: str
    email: str
    name: str = "Sales Rep"
    uuid: str | None = None
    slug: str | None = None
    timezone: str = "America/New_York"
    organization: str | None = None
    role: str = "owner"
    plan: str = "standard"
    working_hours: WorkingHours | None = None
    event_types: list[CalendlyEventType | dict[str, Any]] = field(default_factory=list)
    scheduled_events: list[CalendlyScheduledEvent | dict[str, Any]] = field(default_factory=list)


@dataclass
class CalendlySeed:
    users: list[CalendlyUser | dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------- samples

_FIRST = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena", "Mo", "Nia")
_LAST = ("Lee", "Diaz", "Kim", "Patel", "Novak", "Okafor", "Rossi", "Silva", "Tanaka", "Weber", "Young")


def _grid_times(rng: random.Random, tz: str, start: datetime, end: datetime, n: int) -> list[datetime]:
    slots = list(
        slot_grid(start, end, ZoneInfo(tz), default_working_hours(), timedelta(minutes=30), timedelta(minutes=30))
    )
    rng.shuffle(slots)
    return sorted(slots[:n]) if n <= len(slots) else sorted(rng.choice(slots) for _ in range(n))


def sample_ghl_seed(
    contacts: int = 20,
    *,
    seed: int = 0,
    location_id: str = "loc_demo_1",
    token: str = "pit-demo-location-1",
    timezone: str = "America/Chicago",
    booked_share: float = 0.6,
    now: datetime | None = None,
) -> GhlSeed:
    """One location with two calendars and ``contacts`` contacts (``lead{i}@example.com``).

    About ``booked_share`` of the contacts have an appointment between 60 days ago and 30 days
    ahead, on distinct working-hours slots; past ones are mostly ``showed``/``noshow``, some are
    ``cancelled``; future ones ``confirmed``/``new``.
    """
    rng = random.Random(f"ghl-sample:{seed}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cals = [
        GhlCalendar(name="Discovery Call", id=f"{location_id}_cal_default"),
        GhlCalendar(name="Direct Book", id=f"{location_id}_cal_direct", slot_minutes=30),
    ]
    people = [
        GhlContact(
            email=f"lead{i}@example.com",
            id=f"{location_id}_c{i:05d}",
            first_name=rng.choice(_FIRST),
            last_name=rng.choice(_LAST),
            phone=f"+1555{rng.randrange(10**6, 10**7)}",
        )
        for i in range(contacts)
    ]
    booked = [c for c in people if rng.random() < booked_share]
    times = _grid_times(rng, timezone, now - timedelta(days=60), now + timedelta(days=30), len(booked))
    appts = []
    for contact, start in zip(booked, times, strict=True):
        if start < now:
            status = rng.choices(["showed", "noshow", "cancelled", "confirmed"], [5, 2, 2, 1])[0]
        else:
            status = rng.choices(["confirmed", "new", "cancelled"], [7, 2, 1])[0]
        appts.append(
            GhlAppointment(
                calendar_id=rng.choice(cals).id or "", contact_id=contact.id or "", start=start, status=status
            )
        )
    return GhlSeed(
        locations=[
            GhlLocation(
                id=location_id,
                token=token,
                timezone=timezone,
                name="Demo Location",
                calendars=list(cals),
                contacts=list(people),
                appointments=list(appts),
            )
        ]
    )


def sample_calendly_seed(
    invitees: int = 20,
    *,
    seed: int = 0,
    token: str = "calendly-demo-token-1",
    email: str = "rep1@demo.example",
    timezone: str = "America/New_York",
    plan: str = "standard",
    now: datetime | None = None,
) -> CalendlySeed:
    """One user (organization owner) with two event types and ``invitees`` past/future bookings.

    Invitee e-mails are ``lead{i}@example.com``; about one in eight bookings is canceled.
    """
    rng = random.Random(f"calendly-sample:{seed}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    types = [
        CalendlyEventType(name="Discovery Call", slug="discovery-call", duration=30),
        CalendlyEventType(name="Direct Booking", slug="direct-booking", duration=30),
    ]
    times = _grid_times(rng, timezone, now - timedelta(days=60), now + timedelta(days=30), invitees)
    events = []
    for i, start in enumerate(times):
        canceled = rng.random() < 0.125
        events.append(
            CalendlyScheduledEvent(
                event_type=rng.choice(types).slug or "",
                start=start,
                invitees=[
                    CalendlyInvitee(
                        email=f"lead{i}@example.com",
                        name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                        status="canceled" if canceled else "active",
                        cancel_reason="Schedule conflict" if canceled else "",
                        no_show=(not canceled and start < now and rng.random() < 0.15),
                    )
                ],
            )
        )
    return CalendlySeed(
        users=[
            CalendlyUser(
                token=token,
                email=email,
                name="Demo Rep",
                timezone=timezone,
                plan=plan,
                event_types=list(types),
                scheduled_events=list(events),
            )
        ]
    )


__all__ = [
    "CalendlyEventType",
    "CalendlyInvitee",
    "CalendlyScheduledEvent",
    "CalendlySeed",
    "CalendlyUser",
    "GhlAppointment",
    "GhlCalendar",
    "GhlContact",
    "GhlLocation",
    "GhlSeed",
    "sample_calendly_seed",
    "sample_ghl_seed",
]
