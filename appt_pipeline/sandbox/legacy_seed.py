"""Simulator seeds from a legacy CRM export, and a deterministic drift of the providers' truth.

:func:`legacy_seeds` reads ``workspaces.csv`` + ``leads.csv`` (the format of docs/operations.md §2;
the CSV directly — the sandbox never imports ``appt_pipeline.store``) and builds a
:class:`~.state.GhlSeed` and a :class:`~.state.CalendlySeed` whose truth equals the legacy snapshot:

* GHL: one location per GHL workspace (``ghl_location_id``, a generated token, the workspace's
  zone, else UTC) with its ``ghl_default_calendar_id`` (slots of ``meeting_duration_minutes``);
  one contact per lead ``ghl_contact_id`` (+ e-mail); one appointment per lead
  ``ghl_appointment_id`` on the default calendar with the lead's start/end and status in GHL's
  vocabulary (``confirmed|cancelled|showed|noshow``), ``dateAdded`` = ``appointment_booked_at``.
* Calendly: one user (organization owner, standard plan) per Calendly workspace, in the
  organization of ``calendly_organization_uri`` (the simulator takes the organization **id**, the
  URI's uuid) with the event type of ``calendly_event_type_uri`` (its uuid); one scheduled event per
  event URI (uuid) with the invitees of the leads on it (invitee URI uuid + e-mail), ``active`` or
  ``canceled``, no-shows marked. A legacy RESCHEDULED invitee is held as canceled: the new invitee it
  was moved to is not in the export, and Calendly has no rescheduled invitee without one.

The start is ``appointment_start_at``, else ``booked_slot`` when it is ISO-8601 (as the migration
does, SPEC §5); the status goes through the one mapping (:func:`appt_pipeline.domain.vocab.map_status`).
What the providers cannot hold is skipped and counted by reason (:attr:`LegacySeed.skipped`):

``no_start``                  the lead has a provider id but no usable start time;
``unknown_status``            the status is outside SPEC §2's vocabulary;
``ghl_rescheduled``           RESCHEDULED with a GHL id (GHL keeps the id and moves it: no such state);
``calendly_showed``           SHOWED on Calendly (Calendly has no "showed" state);
``calendly_no_invitee``       a Calendly event URI without the invitee URI (the invitee is unknown);
``calendly_no_email``         a Calendly invitee without an e-mail;
``calendly_event_conflict``   an invitee whose start differs from its event's (set by an earlier lead);
``wrong_provider``            a GHL id in a Calendly workspace or the reverse (no account to hold it);
``unknown_workspace``         the lead's workspace is not in ``workspaces.csv``;
``unconfigured_workspace``    the workspace lacks its location id / calendar / organization / event type;
``duplicate_id``              a provider id already seeded for a lead with a smaller id.

:func:`apply_drift` then changes the truth through the simulators' admin interface, deterministically
for a given ``seed``: cancellations and reschedules of confirmed bookings (GHL: same id, new time;
Calendly: the invitee is canceled with ``rescheduled: true`` and a new invitee on a new event carries
``old_invitee``), brand-new bookings for leads whose booking was canceled, and no-shows of past
confirmed bookings. It returns a :class:`DriftSummary` of what it did, including what a
reconciliation pass is expected to count (:meth:`DriftSummary.expected`).
"""

from __future__ import annotations

import csv
import hashlib
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appt_pipeline.domain.timeparse import parse_timestamp, parse_timestamp_or_none
from appt_pipeline.domain.vocab import Status, UnknownStatusError, map_status
from appt_pipeline.sandbox.calendly import CalendlySimulator
from appt_pipeline.sandbox.ghl import GhlSimulator
from appt_pipeline.sandbox.state import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
    CalendlySeed,
    CalendlyUser,
    GhlAppointment,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
)

GHL = "GHL"
CALENDLY = "CALENDLY"

#: Status (SPEC §2) → GHL ``appointmentStatus``. RESCHEDULED has no GHL state (the id moves instead).
GHL_STATUS: dict[Status, str] = {
    Status.CONFIRMED: "confirmed",
    Status.CANCELED: "cancelled",
    Status.SHOWED: "showed",
    Status.NO_SHOW: "noshow",
}

#: Calendly's reconciliation window is −90 d … +90 d around now (SPEC §6); drift on Calendly stays
#: this far inside it, so that reruns within a few days pick the same bookings.
CALENDLY_DRIFT_WINDOW = timedelta(days=80)
#: Past bookings eligible for a no-show ended at least this long ago.
NO_SHOW_AFTER = timedelta(hours=2)
#: New bookings only for leads whose cancellation is older than this: a new CONFIRMED row within
#: 6 hours of a cancellation would be linked as a reschedule by the write path's heuristic (SPEC §4.3).
REBOOK_AFTER_CANCELLATION = timedelta(days=1)
RESCHEDULE_BY = timedelta(days=2)
REBOOK_AFTER = timedelta(days=7)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# ----------------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class SeededBooking:
    """One legacy appointment as seeded at its provider (times UTC).

    ``key``: the GHL appointment id or the Calendly invitee URI; ``status``: SPEC §2 status of the
    legacy row; ``provider_status``: what the simulator holds (GHL ``appointmentStatus`` or Calendly
    invitee ``active``/``canceled``; Calendly no-shows are ``active`` with ``no_show``).
    """

    workspace_id: str
    lead_id: str
    provider: str
    key: str
    start: datetime
    end: datetime | None
    status: Status
    provider_status: str
    email: str | None
    ghl_location_id: str | None = None
    ghl_calendar_id: str | None = None
    ghl_contact_id: str | None = None
    calendly_event_uri: str | None = None
    calendly_event_type_uri: str | None = None
    canceled_at: datetime | None = None
    group_event: bool = False


@dataclass(frozen=True)
class SeededAccount:
    """A workspace's provider account at the simulator. The token is never shown in ``repr``."""

    workspace_id: str
    provider: str
    token: str = field(repr=False)
    ghl_location_id: str | None = None
    calendly_user_uri: str | None = None
    calendly_organization_uri: str | None = None


@dataclass
class LegacySeed:
    """Seeds of both simulators built from a legacy export, plus what was seeded and skipped."""

    ghl: GhlSeed
    calendly: CalendlySeed
    accounts: dict[str, SeededAccount]
    bookings: list[SeededBooking]
    contacts: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def bookings_of(self, workspace_id: str) -> list[SeededBooking]:
        return [b for b in self.bookings if b.workspace_id == workspace_id]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(fh)]


def _uuid_of(uri: str) -> str | None:
    """The uuid at the end of a Calendly URI (``.../organizations/<uuid>``), or None."""
    match = _UUID.search(uri.rstrip("/").rsplit("/", 1)[-1]) if uri else None
    return match.group(0).lower() if match else None


def _positive(text: str, default: int) -> int:
    try:
        value = int(text)
    except ValueError:
        return default
    return value if value > 0 else default


def _zone(text: str) -> str:
    """``text`` when it is an IANA zone, else UTC."""
    if text:
        try:
            ZoneInfo(text)
            return text
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return "UTC"


def _start_of(lead: dict[str, str]) -> datetime | None:
    try:
        start = parse_timestamp(lead.get("appointment_start_at"))
    except ValueError:
        start = None
    return start or parse_timestamp_or_none(lead.get("booked_slot"))


def _ts(text: str | None) -> datetime | None:
    return parse_timestamp_or_none(text)


def _token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


def legacy_seeds(folder: str | Path) -> LegacySeed:
    """Seeds of the GHL and Calendly simulators equal to the legacy export in ``folder``.

    Leads are read in id order; a provider id claimed by several leads goes to the smallest lead id
    (as the migration decides). Tokens are generated (``secrets``) on every call; everything else is
    a pure function of the files.
    """
    folder = Path(folder)
    workspaces = {w["id"]: w for w in _read_csv(folder / "workspaces.csv") if w.get("id")}
    leads = sorted((r for r in _read_csv(folder / "leads.csv") if r.get("id")), key=lambda r: r["id"])
    skipped: Counter[str] = Counter()
    accounts: dict[str, SeededAccount] = {}
    locations: dict[str, GhlLocation] = {}
    users: dict[str, CalendlyUser] = {}
    events: dict[str, dict[str, CalendlyScheduledEvent]] = {}
    event_types: dict[str, str] = {}
    bookings: list[SeededBooking] = []
    seen_keys: set[str] = set()
    contacts: dict[str, str] = {}  # contact id -> workspace id

    for ws_id, ws in sorted(workspaces.items()):
        provider = (ws.get("meeting_booking_provider") or GHL).upper()
        zone = _zone(ws.get("timezone", ""))
        minutes = _positive(ws.get("meeting_duration_minutes", ""), 30)
        if provider == GHL:
            location_id, calendar_id = ws.get("ghl_location_id"), ws.get("ghl_default_calendar_id")
            if not location_id or not calendar_id or location_id in locations:
                continue
            token = _token("pit")
            locations[location_id] = GhlLocation(
                id=location_id, token=token, timezone=zone, name=ws.get("name") or ws_id,
                calendars=[GhlCalendar(name="Sales Call", id=calendar_id, slot_minutes=minutes)],
            )
            accounts[ws_id] = SeededAccount(ws_id, GHL, token, ghl_location_id=location_id)
        elif provider == CALENDLY:
            org_id = _uuid_of(ws.get("calendly_organization_uri", ""))
            type_id = _uuid_of(ws.get("calendly_event_type_uri", ""))
            if not org_id or not type_id or type_id in event_types.values():
                continue
            token = _token("cal")
            user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"appt-pipeline:legacy-seed:{ws_id}"))
            users[ws_id] = CalendlyUser(
                token=token, email=f"scheduling+{ws_id}@example.com".lower(), name=ws.get("name") or ws_id,
                uuid=user_id, timezone=zone, organization=org_id, role="owner", plan="standard",
                event_types=[CalendlyEventType(name="Discovery Call", uuid=type_id, slug=f"discovery-{ws_id}",
                                               duration=minutes)],
            )
            event_types[ws_id] = type_id
            events[ws_id] = {}
            accounts[ws_id] = SeededAccount(
                ws_id, CALENDLY, token, calendly_user_uri=f"https://api.calendly.com/users/{user_id}",
                calendly_organization_uri=f"https://api.calendly.com/organizations/{org_id}",
            )

    for lead in leads:
        ws_id = lead.get("workspace_id", "")
        account = accounts.get(ws_id)
        email = lead.get("email") or None
        contact_id = lead.get("ghl_contact_id") or None
        if account is not None and account.provider == GHL and contact_id and contact_id not in contacts:
            assert account.ghl_location_id is not None
            contacts[contact_id] = ws_id
            locations[account.ghl_location_id].contacts.append(GhlContact(email=email or "", id=contact_id))
        appointment_id = lead.get("ghl_appointment_id") or None
        invitee_uri = lead.get("calendly_invitee_uri") or None
        event_uri = lead.get("calendly_scheduled_event_uri") or None
        if not (appointment_id or invitee_uri or event_uri):
            continue
        provider = GHL if appointment_id else CALENDLY  # as the migration decides (SPEC §5)
        if ws_id not in workspaces:
            skipped["unknown_workspace"] += 1
            continue
        if (workspaces[ws_id].get("meeting_booking_provider") or GHL).upper() != provider:
            skipped["wrong_provider"] += 1
            continue
        if account is None:
            skipped["unconfigured_workspace"] += 1
            continue
        try:
            status = map_status(lead.get("appointment_status"), has_provider_id=True)
        except UnknownStatusError:
            skipped["unknown_status"] += 1
            continue
        start = _start_of(lead)
        if start is None:
            skipped["no_start"] += 1
            continue
        end = _ts(lead.get("appointment_end_at"))
        if end is not None and end <= start:
            end = None
        booked_at = _ts(lead.get("appointment_booked_at"))
        canceled_at = _ts(lead.get("appointment_canceled_at"))
        if provider == GHL:
            assert appointment_id is not None and account.ghl_location_id is not None
            if status is Status.RESCHEDULED:
                skipped["ghl_rescheduled"] += 1
                continue
            if appointment_id in seen_keys:
                skipped["duplicate_id"] += 1
                continue
            location = locations[account.ghl_location_id]
            calendar_id = location.calendars[0].id  # type: ignore[union-attr]
            if not contact_id or contacts.get(contact_id) != ws_id:
                # an appointment needs a contact: one without a known contact id gets a generated one
                contact_id = f"{appointment_id}_contact"
                contacts[contact_id] = ws_id
                location.contacts.append(GhlContact(email=email or "", id=contact_id))
            seen_keys.add(appointment_id)
            location.appointments.append(GhlAppointment(
                calendar_id=calendar_id or "", contact_id=contact_id, start=start, end=end,
                status=GHL_STATUS[status], id=appointment_id, date_added=booked_at,
            ))
            bookings.append(SeededBooking(
                ws_id, lead["id"], GHL, appointment_id, start, end, status, GHL_STATUS[status], email,
                ghl_location_id=account.ghl_location_id, ghl_calendar_id=calendar_id, ghl_contact_id=contact_id,
                canceled_at=canceled_at,
            ))
            continue
        # Calendly
        if not invitee_uri:
            skipped["calendly_no_invitee"] += 1
            continue
        invitee_id = _uuid_of(invitee_uri)
        event_id = _uuid_of(event_uri or invitee_uri.split("/invitees/")[0])
        if not invitee_id or not event_id or (event_uri and not invitee_uri.startswith(event_uri.rstrip("/"))):
            skipped["calendly_no_invitee"] += 1
            continue
        if status is Status.SHOWED:
            skipped["calendly_showed"] += 1
            continue
        if not email:
            skipped["calendly_no_email"] += 1
            continue
        if invitee_uri in seen_keys:
            skipped["duplicate_id"] += 1
            continue
        ws_events = events[ws_id]
        event = ws_events.get(event_id)
        if event is None:
            event = ws_events[event_id] = CalendlyScheduledEvent(
                event_type=event_types[ws_id], start=start, uuid=event_id, end=end, created_at=booked_at,
            )
        elif event.start != start:
            skipped["calendly_event_conflict"] += 1
            continue
        ended = status in (Status.CANCELED, Status.RESCHEDULED)
        event.invitees.append(CalendlyInvitee(
            email=email, uuid=invitee_id, status="canceled" if ended else "active",
            timezone=_zone(lead.get("timezone", "") or workspaces[ws_id].get("timezone", "")),
            created_at=booked_at, cancel_reason="Rescheduled" if status is Status.RESCHEDULED else "",
            no_show=status is Status.NO_SHOW,
        ))
        seen_keys.add(invitee_uri)
        bookings.append(SeededBooking(
            ws_id, lead["id"], CALENDLY, invitee_uri, start, event.end if isinstance(event.end, datetime) else None,
            status, "canceled" if ended else "active", email,
            calendly_event_uri=f"https://api.calendly.com/scheduled_events/{event_id}",
            calendly_event_type_uri=f"https://api.calendly.com/event_types/{event_types[ws_id]}",
            canceled_at=canceled_at,
        ))

    group_events = set()
    for ws_id, user in users.items():
        user.scheduled_events = list(events[ws_id].values())
        biggest = max((len(e.invitees) for e in events[ws_id].values()), default=1)
        if biggest > 1:  # several legacy leads on one event: a group event type
            et = user.event_types[0]
            assert isinstance(et, CalendlyEventType)
            et.kind, et.max_invitees = "group", biggest
        group_events |= {f"https://api.calendly.com/scheduled_events/{e.uuid}"
                         for e in events[ws_id].values() if len(e.invitees) > 1}
    bookings = [
        replace(b, group_event=True) if b.calendly_event_uri in group_events else b
        for b in bookings
    ]
    return LegacySeed(
        ghl=GhlSeed(locations=list(locations.values())),
        calendly=CalendlySeed(users=list(users.values())),
        accounts=accounts,
        bookings=bookings,
        contacts=len(contacts),
        skipped=skipped,
    )


# ----------------------------------------------------------------------------------- drift

CANCEL = "cancel"
RESCHEDULE = "reschedule"
NEW_BOOKING = "new_booking"
NO_SHOW = "no_show"
DRIFT_KINDS = (CANCEL, RESCHEDULE, NEW_BOOKING, NO_SHOW)


@dataclass(frozen=True)
class DriftAction:
    """One change of the providers' truth. ``key``: the booking acted on (GHL appointment id /
    Calendly invitee URI); ``new_key``: the booking it created (new booking; Calendly reschedule's new
    invitee); ``start``: the start after the action (UTC)."""

    kind: str
    provider: str
    workspace_id: str
    lead_id: str
    key: str
    new_key: str | None
    start: datetime


@dataclass(frozen=True)
class ExpectedFindings:
    """What one reconciliation pass over the drifted leads counts (``reconciliation_job`` metadata).

    ``new_bookings`` includes the new invitee of each Calendly reschedule (a new CONFIRMED row);
    ``reschedules`` counts both kinds: a Calendly row that became RESCHEDULED, and a GHL appointment
    that kept its id and moved to a new time (SPEC §4.3).
    """

    new_bookings: int = 0
    cancellations: int = 0
    reschedules: int = 0
    changed_leads: int = 0


@dataclass
class DriftSummary:
    """What :func:`apply_drift` did, action by action."""

    seed: int
    actions: list[DriftAction] = field(default_factory=list)

    def count(self, kind: str | None = None, workspace_id: str | None = None) -> int:
        return sum(1 for a in self.actions
                   if (kind is None or a.kind == kind) and (workspace_id is None or a.workspace_id == workspace_id))

    def counts(self, workspace_id: str | None = None) -> dict[str, int]:
        """Actions per kind (every kind present, zeros included)."""
        return {kind: self.count(kind, workspace_id) for kind in DRIFT_KINDS}

    def workspaces(self) -> list[str]:
        return sorted({a.workspace_id for a in self.actions})

    def expected(self, workspace_id: str | None = None) -> ExpectedFindings:
        mine = [a for a in self.actions if workspace_id is None or a.workspace_id == workspace_id]
        calendly_moves = sum(1 for a in mine if a.kind == RESCHEDULE and a.provider == CALENDLY)
        return ExpectedFindings(
            new_bookings=sum(1 for a in mine if a.kind == NEW_BOOKING) + calendly_moves,
            cancellations=sum(1 for a in mine if a.kind == CANCEL),
            reschedules=sum(1 for a in mine if a.kind == RESCHEDULE),
            changed_leads=len({a.lead_id for a in mine}),
        )

    def describe(self) -> str:
        """One line, e.g. ``4 cancellations, 3 reschedules, 5 new bookings, 2 no-shows``."""
        c = self.counts()
        return (f"{c[CANCEL]} cancellations, {c[RESCHEDULE]} reschedules, {c[NEW_BOOKING]} new bookings, "
                f"{c[NO_SHOW]} no-shows")


def _draw(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and the booking key."""
    digest = hashlib.sha256(f"drift:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _eligible(kind: str, b: SeededBooking, now: datetime) -> bool:
    """Whether booking ``b`` can get drift ``kind`` (and reconciliation can see the result)."""
    if b.group_event:
        return False
    if b.provider == CALENDLY:
        lo, hi = now - CALENDLY_DRIFT_WINDOW, now + CALENDLY_DRIFT_WINDOW
        if not lo <= b.start <= hi - REBOOK_AFTER:  # the new time must stay visible too
            return False
    if kind in (CANCEL, RESCHEDULE):  # upcoming meetings first (see apply_drift), then late updates of past ones
        return b.status is Status.CONFIRMED
    if kind == NO_SHOW:  # meetings that are over
        return b.status is Status.CONFIRMED and (b.end or b.start) < now - NO_SHOW_AFTER
    # the lead books again after a cancellation
    return b.status is Status.CANCELED and b.canceled_at is not None and b.canceled_at < now - REBOOK_AFTER_CANCELLATION


def apply_drift(
    ghl_sim: GhlSimulator | None,
    calendly_sim: CalendlySimulator | None,
    *,
    seed: int,
    legacy: LegacySeed,
    leads: Collection[str] | None = None,
    rate: float = 0.04,
    now: datetime | None = None,
) -> DriftSummary:
    """Make the providers' truth drift from the legacy snapshot seeded by ``legacy``; returns what was done.

    Only bookings of ``leads`` (lead ids; None = every lead) drift, at most one action per lead. Per
    workspace and kind, ``rate`` of the eligible bookings (at least one when there is any) are taken in
    the order of a hash of ``seed`` and the booking key: confirmed bookings are canceled and as many
    rescheduled (+2 days) — upcoming ones first, then past ones (a late update; the shipped sample's
    dates are fixed, so upcoming ones run out as time passes) —, past confirmed ones become no-shows,
    and leads whose booking was canceled book again (+7 days). Calendly drift stays within
    :data:`CALENDLY_DRIFT_WINDOW` of ``now`` so that reconciliation's window sees it. Times are
    deterministic and admin calls use ``force`` (no slot checks): the same seed, legacy data, leads and
    day give the same actions, ids included (the simulators' generated ids come from their ``id_seed``
    and the order of the calls).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    wanted = None if leads is None else set(leads)
    summary = DriftSummary(seed=seed)
    pool = [b for b in legacy.bookings
            if (wanted is None or b.lead_id in wanted)
            and (ghl_sim if b.provider == GHL else calendly_sim) is not None]
    taken: set[str] = set()
    chosen: list[tuple[str, SeededBooking]] = []
    for ws in sorted({b.workspace_id for b in pool}):
        mine = sorted((b for b in pool if b.workspace_id == ws), key=lambda b: (_draw(seed, b.key), b.key))
        for kind in DRIFT_KINDS:
            eligible = [b for b in mine if b.lead_id not in taken and _eligible(kind, b, now)]
            if kind in (CANCEL, RESCHEDULE):
                eligible.sort(key=lambda b: b.start <= now)  # stable: upcoming first, each group in draw order
            quota = max(1, round(rate * len(eligible))) if eligible else 0
            for b in eligible[:quota]:
                taken.add(b.lead_id)
                chosen.append((kind, b))
    for kind, b in sorted(chosen, key=lambda c: (c[1].workspace_id, c[1].lead_id)):
        summary.actions.append(_apply(kind, b, ghl_sim, calendly_sim))
    return summary


def _apply(kind: str, b: SeededBooking, ghl_sim: GhlSimulator | None,
           calendly_sim: CalendlySimulator | None) -> DriftAction:
    new_key: str | None = None
    start = b.start
    if b.provider == GHL:
        assert ghl_sim is not None and b.ghl_calendar_id and b.ghl_contact_id
        if kind == CANCEL:
            ghl_sim.cancel(b.key)
        elif kind == RESCHEDULE:
            start = b.start + RESCHEDULE_BY
            ghl_sim.reschedule(b.key, start, force=True)
        elif kind == NO_SHOW:
            ghl_sim.set_status(b.key, "noshow")
        else:
            start = b.start + REBOOK_AFTER
            end = b.end + REBOOK_AFTER if b.end else None
            new_key = str(ghl_sim.book(b.ghl_calendar_id, start, contact_id=b.ghl_contact_id, status="confirmed",
                                       end=end, force=True)["id"])
    else:
        assert calendly_sim is not None and b.calendly_event_type_uri and b.email
        if kind == CANCEL:
            calendly_sim.cancel_invitee(b.key, reason="Cannot make it anymore", canceler_type="invitee")
        elif kind == RESCHEDULE:
            start = b.start + RESCHEDULE_BY
            new_key = str(calendly_sim.reschedule(b.key, start, reason="Moved", force=True)["uri"])
        elif kind == NO_SHOW:
            calendly_sim.mark_no_show(b.key)
        else:
            start = b.start + REBOOK_AFTER
            new_key = str(calendly_sim.book(b.calendly_event_type_uri, start, b.email, force=True)["uri"])
    return DriftAction(kind, b.provider, b.workspace_id, b.lead_id, b.key, new_key, start)


def expected_history(actions: Iterable[DriftAction]) -> list[tuple[str, str, Status, datetime]]:
    """``(provider, key, status, start)`` the appointment history must hold after reconciling ``actions``.

    Cancel → the booking CANCELED; no-show → NO_SHOW; GHL reschedule → the same id CONFIRMED at the
    new time; Calendly reschedule → the old invitee RESCHEDULED and the new one CONFIRMED at the new
    time; new booking → the new booking CONFIRMED.
    """
    out: list[tuple[str, str, Status, datetime]] = []
    for a in actions:
        if a.kind == CANCEL:
            out.append((a.provider, a.key, Status.CANCELED, a.start))
        elif a.kind == NO_SHOW:
            out.append((a.provider, a.key, Status.NO_SHOW, a.start))
        elif a.kind == RESCHEDULE and a.provider == GHL:
            out.append((a.provider, a.key, Status.CONFIRMED, a.start))
        elif a.kind == RESCHEDULE:
            assert a.new_key is not None
            out.append((a.provider, a.new_key, Status.CONFIRMED, a.start))
            out.append((a.provider, a.key, Status.RESCHEDULED, a.start - RESCHEDULE_BY))
        else:
            assert a.new_key is not None
            out.append((a.provider, a.new_key, Status.CONFIRMED, a.start))
    return out


__all__ = [
    "CALENDLY_DRIFT_WINDOW",
    "DRIFT_KINDS",
    "GHL_STATUS",
    "DriftAction",
    "DriftSummary",
    "ExpectedFindings",
    "LegacySeed",
    "SeededAccount",
    "SeededBooking",
    "apply_drift",
    "expected_history",
    "legacy_seeds",
]
