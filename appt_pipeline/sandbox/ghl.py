"""GoHighLevel (LeadConnector API v2) simulator: the calendar/contact endpoints our clients call.

Facts come from ``reference/provider-apis.md`` §1 (sources: the official OpenAPI files
``apps/calendars.json`` / ``apps/contacts.json`` of ``GoHighLevel/highlevel-api-docs``, the rate-limit
page, and Nango's recorded real exchanges of 2026-07). Served paths (base
``https://services.leadconnectorhq.com`` in production):

- ``GET /calendars/events/appointments/{eventId}`` → ``{appointment: {...}, traceId}``; a deleted
  appointment still answers 200 with ``deleted: true``;
- ``GET /calendars/events?locationId&calendarId|userId|groupId&startTime&endTime`` (epoch ms) →
  ``{events: [...], traceId}``, filtered by **start time** only;
- ``POST /calendars/events/appointments`` → 200 flat body; a slot that is not free → 400;
- ``PUT /calendars/events/appointments/{eventId}`` → reschedule / status change (cancel =
  ``appointmentStatus: cancelled``), 200 flat body;
- ``DELETE /calendars/events/{eventId}`` → 200 ``{succeeded: true, traceId}``;
- ``GET /calendars/{calendarId}/free-slots?startDate&endDate&timezone`` (epoch ms, ≤ 31 days) →
  ``{"YYYY-MM-DD": {slots: [ISO with offset]}, traceId}``;
- ``GET /calendars/`` → ``{calendars}``; ``GET /calendars/{calendarId}`` → ``{calendar}``;
- ``GET /contacts/{contactId}/appointments`` (contacts API) → ``{events: [...], traceId}``;
- ``GET /contacts/search/duplicate?locationId&email`` → ``{contact: {...}|null, traceId}``;
- ``POST /contacts/search`` → ``{contacts, total, traceId}``; ``GET /contacts/{contactId}`` → ``{contact}``.

Shapes: appointment objects carry ``id, calendarId, locationId, contactId, title, appointmentStatus``
plus the misspelled duplicate ``appoinmentStatus``, ``startTime``/``endTime`` in the location's
offset (``2026-08-01T12:00:00+02:00``), ``dateAdded``/``dateUpdated`` in UTC ``Z`` with
milliseconds, ``deleted``, ``isRecurring``, ``assignedResources``, ``createdBy`` (observed
2026-07). Statuses are GHL's ``new|confirmed|cancelled|showed|noshow|invalid``.

Errors are NestJS-shaped ``{statusCode, message, error, traceId}`` (``message`` is a list for 422),
as in the spec's ``BadRequestDTO``/``UnauthorizedDTO``/``UnprocessableDTO``.

Auth: ``Authorization: Bearer <token>`` must be a location's token (401 ``Invalid token: access
token is invalid`` otherwise); the ``Version`` header is required (400 when missing or not one of
``versions``). A request naming another location answers 403.

Rate limits (docs "rate-limits" page): 100 requests per 10 s (moving window) and 200,000 per
day per location, configurable. Every authenticated response carries ``X-RateLimit-Max``,
``X-RateLimit-Remaining``, ``X-RateLimit-Interval-Milliseconds``, ``X-RateLimit-Limit-Daily``,
``X-RateLimit-Daily-Remaining`` and the observed ``X-RateLimit-Daily-Reset`` (ms).

**429 (our choice — the real 429 is undocumented):** status 429, body ``{statusCode: 429, message:
"Too Many Requests", traceId}``, the five headers with ``X-RateLimit-Remaining: 0`` and a
``Retry-After`` header in whole seconds (≥ 1) = the time until the oldest request of the moving
window leaves it, i.e. the earliest moment a retry can succeed. ``Retry-After`` (RFC 9110 §10.2.3)
is what generic HTTP clients, GHL's SDK users and the original CRM's client (peer-behaviour §7.3)
already honour; a rejected request consumes no quota.

**Webhooks** (provider-apis.md §1.5, §3): Marketplace app webhooks are configured in the app's
settings, not by API, so here by :meth:`GhlSimulator.set_webhooks` / ``PUT /_admin/webhooks
{url_template | urls, legacy_rsa, events}``. Each ``AppointmentCreate|Update|Delete`` of a location
with a URL is POSTed as the event body plus top-level ``webhookId`` (uuid, kept across retries) and
``timestamp`` (ISO-8601 UTC, the attempt's time), serialized once per attempt, with
``X-GHL-Signature`` (base64 Ed25519 over those bytes) and, when ``legacy_rsa``, ``x-wh-signature``
(base64 RSA-SHA256 PKCS#1 v1.5). Public keys: :meth:`GhlSimulator.webhook_public_keys` /
``GET /_admin/webhooks/public_keys``. Only a 429 answer is retried (6 times); see ``webhooks.py``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from appt_pipeline.domain.signatures import ghl_ed25519_signature, ghl_rsa_signature
from appt_pipeline.sandbox.base import SimulatorBase
from appt_pipeline.sandbox.common import (
    ApiError,
    Clock,
    FaultSettings,
    IdFactory,
    ProviderEvent,
    Quota,
    QuotaState,
    SimulatorError,
    WorkingHours,
    as_utc,
    coerce,
    default_working_hours,
    epoch_ms,
    from_epoch_ms,
    iso_ms_z,
    iso_offset,
    overlaps,
    parse_iso,
    slot_grid,
    utc_now,
)
from appt_pipeline.sandbox.state import GhlAppointment, GhlCalendar, GhlContact, GhlLocation, GhlSeed
from appt_pipeline.sandbox.webhooks import DeliverySettings, GhlSigningKeys, Outgoing, dumps

VERSIONS = ("2021-04-15", "2021-07-28", "2023-02-21")
STATUSES = ("new", "confirmed", "cancelled", "showed", "noshow", "invalid")
_FREE_STATUSES = frozenset({"cancelled", "invalid"})  # these do not occupy their slot
MAX_FREE_SLOT_RANGE = timedelta(days=31)
WEBHOOK_EVENTS = ("AppointmentCreate", "AppointmentUpdate", "AppointmentDelete")
_DOW = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


# ----------------------------------------------------------------------------- internal state


@dataclass
class _Calendar:
    id: str
    location_id: str
    name: str
    slot: timedelta
    interval: timedelta
    hours: WorkingHours
    assigned_user_id: str | None
    group_id: str
    auto_confirm: bool
    horizon: timedelta
    min_notice: timedelta


@dataclass
class _Contact:
    id: str
    location_id: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    date_added: datetime
    date_updated: datetime

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.email


@dataclass
class _Appointment:
    id: str
    location_id: str
    calendar_id: str
    contact_id: str
    start: datetime
    end: datetime
    status: str
    title: str
    date_added: datetime
    date_updated: datetime
    address: str = ""
    notes: str = ""
    assigned_user_id: str | None = None
    group_id: str = ""
    deleted: bool = False
    source: str = "third_party"
    meeting_location_type: str | None = None

    def occupies_slot(self) -> bool:
        return not self.deleted and self.status not in _FREE_STATUSES


@dataclass
class _Location:
    id: str
    token: str
    tz_name: str
    tz: ZoneInfo
    name: str
    calendars: dict[str, _Calendar] = field(default_factory=dict)
    contacts: dict[str, _Contact] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- error bodies


def _bad_request(message: str) -> ApiError:
    return ApiError(400, {"statusCode": 400, "message": message, "error": "Bad Request"})


def _unprocessable(*messages: str) -> ApiError:
    return ApiError(422, {"statusCode": 422, "message": list(messages), "error": "Unprocessable Entity"})


def _not_found(message: str) -> ApiError:
    return ApiError(404, {"statusCode": 404, "message": message, "error": "Not Found"})


def _forbidden() -> ApiError:
    return ApiError(
        403, {"statusCode": 403, "message": "The token does not have access to this location.", "error": "Forbidden"}
    )


SLOT_TAKEN_MESSAGE = "The slot you have selected is no longer available."


class GhlSimulator(SimulatorBase):
    """In-memory GoHighLevel: locations, calendars, contacts, appointments + the HTTP API.

    ``seed``: :class:`~.state.GhlSeed` or the same as a dict. ``rate_limit`` requests per
    ``rate_window_seconds`` (moving window) and ``daily_limit`` per day (``None`` = no daily limit)
    per location. ``versions``: accepted ``Version`` header values. ``id_seed``: seeds generated ids
    (and trace ids). ``faults``: initial :class:`~.common.FaultSettings`. ``clock``: "now" for free
    slots and timestamps (rate limiting always uses the real clock).

    Thread-safe: HTTP handlers and the Python admin methods share one lock.
    """

    provider = "ghl"

    def __init__(
        self,
        seed: GhlSeed | dict[str, Any] | None = None,
        *,
        rate_limit: int = 100,
        rate_window_seconds: int = 10,
        daily_limit: int | None = 200_000,
        versions: tuple[str, ...] = VERSIONS,
        id_seed: int | str = 0,
        faults: FaultSettings | None = None,
        clock: Clock = utc_now,
        webhook_settings: DeliverySettings | dict[str, Any] | None = None,
    ):
        super().__init__(id_seed=id_seed, faults=faults, clock=clock, webhook_settings=webhook_settings)
        self.rate_limit = rate_limit
        self.rate_window_seconds = rate_window_seconds
        self.daily_limit = daily_limit
        self.versions = tuple(versions)
        self._initial_seed = seed
        self._locations: dict[str, _Location] = {}
        self._by_token: dict[str, _Location] = {}
        self._calendars: dict[str, _Calendar] = {}
        self._contacts: dict[str, _Contact] = {}
        self._appts: dict[str, _Appointment] = {}
        self.webhook_keys = GhlSigningKeys(id_seed)
        self._webhook_ids = IdFactory(f"ghl-webhooks:{id_seed}")  # never shifts entity ids
        self._wh_template: str | None = None
        self._wh_urls: dict[str, str] = {}
        self._wh_legacy = False
        self._wh_events: tuple[str, ...] = WEBHOOK_EVENTS
        self.load(seed)

    # ================================================================= seeding and configuration

    def load(self, seed: GhlSeed | dict[str, Any] | None) -> None:
        """Replace all provider data with ``seed`` (id generation restarts from ``id_seed``)."""
        data = coerce(GhlSeed, seed) if seed is not None else GhlSeed()
        with self._lock:
            self.ids = IdFactory(self.id_seed)
            self._locations.clear()
            self._by_token.clear()
            self._calendars.clear()
            self._contacts.clear()
            self._appts.clear()
            for raw in data.locations:
                self.add_location(raw)

    def reset(self, seed: GhlSeed | dict[str, Any] | None = None) -> None:
        """Back to ``seed`` (default: the constructor's seed) with counters, faults, events, the webhook
        configuration and webhook deliveries cleared (the signing keys stay: they derive from ``id_seed``)."""
        self.load(seed if seed is not None else self._initial_seed)
        self.faults.clear(counters=True)
        self.clear_counters()
        self._reset_webhooks()

    def _reset_webhooks(self) -> None:
        with self._lock:
            self._wh_template, self._wh_urls, self._wh_legacy = None, {}, False
            self._wh_events = WEBHOOK_EVENTS
            self._webhook_ids = IdFactory(f"ghl-webhooks:{self.id_seed}")
        super()._reset_webhooks()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change ``rate_limit``, ``rate_window_seconds``, ``daily_limit`` or ``versions``.

        Rate-limit windows restart (the limiter is cleared) so the new numbers apply at once.
        """
        allowed = {"rate_limit", "rate_window_seconds", "daily_limit", "versions"}
        unknown = set(changes) - allowed
        if unknown:
            raise SimulatorError(f"unknown setting(s) {sorted(unknown)}")
        with self._lock:
            for key, value in changes.items():
                setattr(self, key, tuple(value) if key == "versions" else value)
            self.limiter.reset()
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            "rate_limit": self.rate_limit,
            "rate_window_seconds": self.rate_window_seconds,
            "daily_limit": self.daily_limit,
            "versions": list(self.versions),
        }

    def add_location(self, raw: GhlLocation | dict[str, Any]) -> str:
        """Add a location (with its calendars, contacts and appointments); returns its id."""
        seed = coerce(GhlLocation, raw)
        try:
            tz = ZoneInfo(seed.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SimulatorError(f"unknown timezone {seed.timezone!r}") from exc
        with self._lock:
            if seed.id in self._locations or seed.token in self._by_token:
                raise SimulatorError(f"location {seed.id!r} or its token already exists")
            loc = _Location(seed.id, seed.token, seed.timezone, tz, seed.name or seed.id)
            self._locations[loc.id] = loc
            self._by_token[loc.token] = loc
            for cal in seed.calendars:
                self._add_calendar(loc, coerce(GhlCalendar, cal))
            for contact in seed.contacts:
                self.add_contact(loc.id, contact)
            for appt in seed.appointments:
                self._seed_appointment(loc, coerce(GhlAppointment, appt))
            return loc.id

    def _add_calendar(self, loc: _Location, seed: GhlCalendar) -> _Calendar:
        cal = _Calendar(
            id=seed.id or self.ids.ghl_id(),
            location_id=loc.id,
            name=seed.name,
            slot=timedelta(minutes=seed.slot_minutes),
            interval=timedelta(minutes=seed.interval_minutes or seed.slot_minutes),
            hours=seed.working_hours or default_working_hours(),
            assigned_user_id=seed.assigned_user_id,
            group_id=seed.group_id,
            auto_confirm=seed.auto_confirm,
            horizon=timedelta(days=seed.booking_horizon_days),
            min_notice=timedelta(minutes=seed.min_notice_minutes),
        )
        if cal.id in self._calendars:
            raise SimulatorError(f"calendar {cal.id!r} already exists")
        loc.calendars[cal.id] = cal
        self._calendars[cal.id] = cal
        return cal

    def add_contact(self, location_id: str, raw: GhlContact | dict[str, Any]) -> str:
        """Add a contact to a location; returns its id (generated when absent)."""
        seed = coerce(GhlContact, raw)
        with self._lock:
            loc = self._location(location_id)
            added = as_utc(seed.date_added) if seed.date_added else self.seed_epoch() - timedelta(days=30)
            contact = _Contact(
                id=seed.id or self.ids.ghl_id(),
                location_id=loc.id,
                email=seed.email.strip(),
                first_name=seed.first_name,
                last_name=seed.last_name,
                phone=seed.phone,
                date_added=added,
                date_updated=added,
            )
            if contact.id in self._contacts:
                raise SimulatorError(f"contact {contact.id!r} already exists")
            loc.contacts[contact.id] = contact
            loc.by_email.setdefault(contact.email.lower(), contact.id)
            self._contacts[contact.id] = contact
            return contact.id

    def _seed_appointment(self, loc: _Location, seed: GhlAppointment) -> _Appointment:
        cal = self._calendar_by_ref(loc, seed.calendar_id)
        contact = self._contact_by_ref(loc, seed.contact_id)
        if seed.status not in STATUSES:
            raise SimulatorError(f"unknown appointmentStatus {seed.status!r}")
        start = as_utc(seed.start)
        end = as_utc(seed.end) if seed.end else start + cal.slot
        added = as_utc(seed.date_added) if seed.date_added else min(start, self.seed_epoch()) - timedelta(days=3)
        appt = _Appointment(
            id=seed.id or self.ids.ghl_id(),
            location_id=loc.id,
            calendar_id=cal.id,
            contact_id=contact.id,
            start=start,
            end=end,
            status=seed.status,
            title=seed.title if seed.title is not None else contact.name,
            date_added=added,
            date_updated=as_utc(seed.date_updated) if seed.date_updated else added,
            address=seed.address,
            notes=seed.notes,
            assigned_user_id=cal.assigned_user_id,
            group_id=cal.group_id,
            deleted=seed.deleted,
            source="booking_widget",
        )
        if appt.id in self._appts:
            raise SimulatorError(f"appointment {appt.id!r} already exists")
        self._appts[appt.id] = appt
        return appt

    # ================================================================= lookups

    def _location(self, location_id: str) -> _Location:
        try:
            return self._locations[location_id]
        except KeyError:
            raise SimulatorError(f"unknown location {location_id!r}") from None

    def _calendar_by_ref(self, loc: _Location, ref: str) -> _Calendar:
        if ref in loc.calendars:
            return loc.calendars[ref]
        for cal in loc.calendars.values():
            if cal.name == ref:
                return cal
        raise SimulatorError(f"unknown calendar {ref!r} in location {loc.id!r}")

    def _contact_by_ref(self, loc: _Location, ref: str) -> _Contact:
        if ref in loc.contacts:
            return loc.contacts[ref]
        cid = loc.by_email.get(ref.strip().lower())
        if cid:
            return loc.contacts[cid]
        raise SimulatorError(f"unknown contact {ref!r} in location {loc.id!r}")

    def _appointment(self, event_id: str) -> _Appointment:
        try:
            return self._appts[event_id]
        except KeyError:
            raise SimulatorError(f"unknown appointment {event_id!r}") from None

    def location_of_token(self, token: str) -> str | None:
        loc = self._by_token.get(token)
        return loc.id if loc else None

    # ================================================================= slots

    def _busy(self, cal: _Calendar, exclude: str | None = None) -> list[tuple[datetime, datetime]]:
        return sorted(
            (a.start, a.end)
            for a in self._appts.values()
            if a.calendar_id == cal.id and a.occupies_slot() and a.id != exclude
        )

    def _free(
        self, cal: _Calendar, start: datetime, end: datetime, *, exclude: str | None = None, ignore_range: bool = False
    ) -> list[datetime]:
        """Free slot starts (UTC) of ``cal`` in ``[start, end)``: on the working-hours grid, inside
        ``[now + min_notice, now + horizon)`` (unless ``ignore_range``) and overlapping no
        appointment that occupies its slot (anything but cancelled/invalid/deleted)."""
        now = self.now()
        if not ignore_range:
            start, end = max(start, now + cal.min_notice), min(end, now + cal.horizon)
        if start >= end:
            return []
        busy = [b for b in self._busy(cal, exclude) if b[1] > start - cal.slot and b[0] < end + cal.slot]
        free = []
        for slot in slot_grid(start, end, self._locations[cal.location_id].tz, cal.hours, cal.slot, cal.interval):
            slot_end = slot + cal.slot
            if not any(overlaps(slot, slot_end, b0, b1) for b0, b1 in busy):
                free.append(slot)
        return free

    def _check_slot(
        self, cal: _Calendar, start: datetime, end: datetime, *, exclude: str | None = None, ignore_range: bool = False
    ) -> bool:
        if start not in self._free(
            cal, start, start + timedelta(seconds=1), exclude=exclude, ignore_range=ignore_range
        ):
            return False
        return not any(overlaps(start, end, b0, b1) for b0, b1 in self._busy(cal, exclude))

    def free_slots(
        self, calendar_id: str, start: datetime | str | None = None, end: datetime | str | None = None
    ) -> list[datetime]:
        """Free slot starts (UTC) of a calendar; default window: now … now + 30 days."""
        with self._lock:
            cal = self._calendars.get(calendar_id)
            if cal is None:
                raise SimulatorError(f"unknown calendar {calendar_id!r}")
            lo = as_utc(start) if start else self.now()
            hi = as_utc(end) if end else lo + timedelta(days=30)
            return self._free(cal, lo, hi)

    # ================================================================= JSON shapes

    def _appt_json(self, a: _Appointment, *, meta: bool = False) -> dict[str, Any]:
        """``CalendarEventDTO`` as observed (GET by id with ``meta``; list items without)."""
        tz = self._locations[a.location_id].tz
        out: dict[str, Any] = {
            "id": a.id,
            "title": a.title,
            "calendarId": a.calendar_id,
            "locationId": a.location_id,
            "contactId": a.contact_id,
            "appointmentStatus": a.status,
            "appoinmentStatus": a.status,
            "address": a.address,
            "startTime": iso_offset(a.start, tz),
            "endTime": iso_offset(a.end, tz),
            "dateAdded": iso_ms_z(a.date_added),
            "dateUpdated": iso_ms_z(a.date_updated),
            "assignedResources": [],
            "isRecurring": False,
            "createdBy": {"source": a.source, "userId": None},
            "deleted": a.deleted,
        }
        if a.assigned_user_id:
            out["assignedUserId"] = a.assigned_user_id
            out["users"] = []
        if a.group_id:
            out["groupId"] = a.group_id
        if a.notes:
            out["notes"] = a.notes
        if meta:
            out["appointmentMeta"] = {"slotType": "custom"}
        return out

    def _contact_event_json(self, a: _Appointment) -> dict[str, Any]:
        """``GetEventSchema`` item of ``GET /contacts/{id}/appointments`` (contacts API)."""
        tz = self._locations[a.location_id].tz
        return {
            "id": a.id,
            "calendarId": a.calendar_id,
            "status": "cancelled" if a.status in _FREE_STATUSES else "booked",
            "title": a.title,
            "assignedUserId": a.assigned_user_id or "",
            "notes": a.notes,
            "startTime": iso_offset(a.start, tz),
            "endTime": iso_offset(a.end, tz),
            "address": a.address,
            "locationId": a.location_id,
            "contactId": a.contact_id,
            "groupId": a.group_id,
            "appointmentStatus": a.status,
            "users": [],
            "dateAdded": iso_ms_z(a.date_added),
            "dateUpdated": iso_ms_z(a.date_updated),
            "assignedResources": [],
        }

    def _write_json(self, a: _Appointment) -> dict[str, Any]:
        """``AppointmentSchemaResponse`` of create/update: flat, ``status: "booked"`` (observed)."""
        tz = self._locations[a.location_id].tz
        out: dict[str, Any] = {
            "id": a.id,
            "calendarId": a.calendar_id,
            "locationId": a.location_id,
            "contactId": a.contact_id,
            "title": a.title,
            "status": "cancelled" if a.status in _FREE_STATUSES else "booked",
            "appointmentStatus": a.status,
            "appoinmentStatus": a.status,
            "address": a.address,
            "startTime": iso_offset(a.start, tz),
            "endTime": iso_offset(a.end, tz),
            "dateAdded": iso_ms_z(a.date_added),
            "dateUpdated": iso_ms_z(a.date_updated),
            "isRecurring": False,
        }
        if a.assigned_user_id:
            out["assignedUserId"] = a.assigned_user_id
        if a.meeting_location_type:
            out["meetingLocationType"] = a.meeting_location_type
        return out

    def _webhook_json(self, kind: str, a: _Appointment) -> dict[str, Any]:
        """Marketplace webhook body (docs ``AppointmentCreate/Update/Delete``)."""
        tz = self._locations[a.location_id].tz
        return {
            "type": kind,
            "locationId": a.location_id,
            "appointment": {
                "id": a.id,
                "address": a.address,
                "title": a.title,
                "calendarId": a.calendar_id,
                "contactId": a.contact_id,
                "groupId": a.group_id,
                "appointmentStatus": a.status,
                "assignedUserId": a.assigned_user_id or "",
                "users": [],
                "notes": a.notes,
                "source": a.source,
                "startTime": iso_offset(a.start, tz),
                "endTime": iso_offset(a.end, tz),
                "dateAdded": iso_offset(a.date_added, tz),
                "dateUpdated": iso_offset(a.date_updated, tz),
            },
        }

    def _contact_json(self, c: _Contact) -> dict[str, Any]:
        return {
            "id": c.id,
            "dateAdded": iso_ms_z(c.date_added),
            "dateUpdated": iso_ms_z(c.date_updated),
            "type": "lead",
            "locationId": c.location_id,
            "email": c.email,
            "emailLowerCase": c.email.lower(),
            "phone": c.phone,
            "firstName": c.first_name,
            "firstNameLowerCase": c.first_name.lower(),
            "lastName": c.last_name,
            "lastNameLowerCase": c.last_name.lower(),
            "fullNameLowerCase": " ".join(p for p in (c.first_name, c.last_name) if p).lower(),
            "tags": [],
            "customFields": [],
            "additionalEmails": [],
            "additionalPhones": [],
        }

    def _calendar_json(self, cal: _Calendar) -> dict[str, Any]:
        minutes = int(cal.slot.total_seconds() // 60)
        open_hours = [
            {
                "daysOfTheWeek": [_DOW[day]],
                "hours": [
                    {
                        "openHour": int(o[:2]),
                        "openMinute": int(o[3:]),
                        "closeHour": int(c[:2]),
                        "closeMinute": int(c[3:]),
                    }
                    for o, c in ranges
                ],
            }
            for day, ranges in cal.hours.items()
            if ranges
        ]
        out: dict[str, Any] = {
            "id": cal.id,
            "locationId": cal.location_id,
            "name": cal.name,
            "calendarType": "event",
            "eventTitle": "{{contact.name}}",
            "eventColor": "#039BE5",
            "slotDuration": minutes,
            "slotDurationUnit": "mins",
            "slotInterval": int(cal.interval.total_seconds() // 60),
            "slotIntervalUnit": "mins",
            "slotBuffer": 0,
            "slotBufferUnit": "mins",
            "preBuffer": 0,
            "preBufferUnit": "mins",
            "appoinmentPerSlot": 1,
            "appointmentPerSlot": 1,
            "allowBookingAfter": int(cal.min_notice.total_seconds() // 60),
            "allowBookingAfterUnit": "mins",
            "allowBookingFor": cal.horizon.days,
            "allowBookingForUnit": "days",
            "openHours": open_hours,
            "enableRecurring": False,
            "autoConfirm": cal.auto_confirm,
            "allowReschedule": True,
            "allowCancellation": True,
            "availabilities": [],
            "teamMembers": [{"userId": cal.assigned_user_id, "priority": 0.5, "selected": True}]
            if cal.assigned_user_id
            else [],
            "isActive": True,
        }
        if cal.group_id:
            out["groupId"] = cal.group_id
        return out

    # ================================================================= core operations

    def _create(
        self,
        loc: _Location,
        cal: _Calendar,
        contact: _Contact,
        start: datetime,
        end: datetime | None,
        *,
        status: str | None,
        title: str | None,
        source: str,
        validate: bool,
        ignore_range: bool = False,
        address: str = "",
        notes: str = "",
        assigned_user_id: str | None = None,
        meeting_location_type: str | None = None,
    ) -> _Appointment:
        end = end or start + cal.slot
        if end <= start:
            raise _unprocessable("endTime must be after startTime")
        if validate and not self._check_slot(cal, start, end, ignore_range=ignore_range):
            raise _bad_request(SLOT_TAKEN_MESSAGE)
        now = self.now()
        appt = _Appointment(
            id=self.ids.ghl_id(),
            location_id=loc.id,
            calendar_id=cal.id,
            contact_id=contact.id,
            start=start,
            end=end,
            status=status or ("confirmed" if cal.auto_confirm else "new"),
            title=title or contact.name,
            date_added=now,
            date_updated=now,
            address=address,
            notes=notes,
            assigned_user_id=assigned_user_id or cal.assigned_user_id,
            group_id=cal.group_id,
            source=source,
            meeting_location_type=meeting_location_type,
        )
        self._appts[appt.id] = appt
        self._emit("AppointmentCreate", self._webhook_json("AppointmentCreate", appt), loc.id)
        return appt

    def _touch(self, appt: _Appointment) -> None:
        appt.date_updated = max(self.now(), appt.date_updated + timedelta(milliseconds=1))
        self._emit("AppointmentUpdate", self._webhook_json("AppointmentUpdate", appt), appt.location_id)

    # ================================================================= Python admin interface

    def book(
        self,
        calendar_id: str,
        start: datetime | str,
        *,
        contact_id: str | None = None,
        email: str | None = None,
        first_name: str = "",
        last_name: str = "",
        status: str | None = None,
        title: str | None = None,
        end: datetime | str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """A person books on the calendar's booking page (``source: booking_widget``).

        The contact is ``contact_id``, else found by ``email`` — created when unknown. The slot
        must be free unless ``force``. Returns the appointment as ``GET`` shows it.
        """
        with self._lock:
            cal = self._calendars.get(calendar_id)
            if cal is None:
                raise SimulatorError(f"unknown calendar {calendar_id!r}")
            loc = self._locations[cal.location_id]
            if contact_id:
                contact = self._contact_by_ref(loc, contact_id)
            elif email:
                cid = loc.by_email.get(email.strip().lower())
                if cid is None:
                    cid = self.add_contact(loc.id, GhlContact(email=email, first_name=first_name, last_name=last_name))
                contact = loc.contacts[cid]
            else:
                raise SimulatorError("book needs contact_id or email")
            if status is not None and status not in STATUSES:
                raise SimulatorError(f"unknown appointmentStatus {status!r}")
            start_at = as_utc(start)
            end_at = as_utc(end) if end else None
            if not force and not self._check_slot(cal, start_at, end_at or start_at + cal.slot):
                raise SimulatorError(f"slot {start_at.isoformat()} of calendar {cal.id} is not free")
            appt = self._create(
                loc, cal, contact, start_at, end_at, status=status, title=title, source="booking_widget", validate=False
            )
            return self._appt_json(appt)

    def cancel(self, event_id: str) -> dict[str, Any]:
        """The contact or a user cancels: ``appointmentStatus`` → ``cancelled``."""
        return self.set_status(event_id, "cancelled")

    def set_status(self, event_id: str, status: str) -> dict[str, Any]:
        """Set ``appointmentStatus`` (``showed``/``noshow`` after the meeting, ``confirmed`` …)."""
        if status not in STATUSES:
            raise SimulatorError(f"unknown appointmentStatus {status!r}")
        with self._lock:
            appt = self._appointment(event_id)
            appt.status = status
            self._touch(appt)
            return self._appt_json(appt)

    def reschedule(
        self, event_id: str, start: datetime | str, end: datetime | str | None = None, *, force: bool = False
    ) -> dict[str, Any]:
        """Move an appointment (same id) to a new start; the duration is kept unless ``end``."""
        with self._lock:
            appt = self._appointment(event_id)
            cal = self._calendars[appt.calendar_id]
            start_at = as_utc(start)
            end_at = as_utc(end) if end else start_at + (appt.end - appt.start)
            if not force and not self._check_slot(cal, start_at, end_at, exclude=appt.id):
                raise SimulatorError(f"slot {start_at.isoformat()} of calendar {cal.id} is not free")
            appt.start, appt.end = start_at, end_at
            if appt.status in _FREE_STATUSES:
                appt.status = "confirmed"
            self._touch(appt)
            return self._appt_json(appt)

    def delete(self, event_id: str) -> dict[str, Any]:
        """Delete: the appointment disappears from lists; GET by id still answers, ``deleted: true``."""
        with self._lock:
            appt = self._appointment(event_id)
            appt.deleted = True
            appt.date_updated = max(self.now(), appt.date_updated + timedelta(milliseconds=1))
            self._emit("AppointmentDelete", self._webhook_json("AppointmentDelete", appt), appt.location_id)
            return self._appt_json(appt)

    def appointment(self, event_id: str) -> dict[str, Any]:
        with self._lock:
            return self._appt_json(self._appointment(event_id), meta=True)

    def appointments(self, location_id: str | None = None, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return [
                self._appt_json(a)
                for a in sorted(self._appts.values(), key=lambda a: (a.start, a.id))
                if (location_id is None or a.location_id == location_id) and (include_deleted or not a.deleted)
            ]

    def contact_id(self, location_id: str, email: str) -> str | None:
        with self._lock:
            return self._location(location_id).by_email.get(email.strip().lower())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "locations": [
                    {
                        "id": loc.id,
                        "timezone": loc.tz_name,
                        "calendars": [self._calendar_json(c) for c in loc.calendars.values()],
                        "contacts": [self._contact_json(c) for c in loc.contacts.values()],
                        "appointments": self.appointments(loc.id),
                    }
                    for loc in self._locations.values()
                ]
            }

    # ================================================================= webhooks

    def _default_delivery_settings(self) -> DeliverySettings:
        return DeliverySettings.ghl()

    def set_webhooks(
        self,
        url_template: str | None = None,
        *,
        urls: dict[str, str] | None = None,
        legacy_rsa: bool = False,
        events: list[str] | tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """Configure the app's webhook target (replaces the previous configuration).

        ``url_template``: URL for every location, ``{locationId}`` replaced by the location id
        (e.g. ``http://127.0.0.1:PORT/webhooks/ghl/<workspace_id>`` for one location, or a template
        when several locations map to workspaces by id). ``urls``: ``{locationId: URL}``, winning
        over the template. ``legacy_rsa``: also send ``x-wh-signature``. ``events``: subset of
        ``AppointmentCreate|Update|Delete`` (default all). Returns :meth:`webhook_config`.
        """
        targets = {**({"*": url_template} if url_template else {}), **(urls or {})}
        for loc, url in targets.items():
            if not isinstance(url, str) or not url.replace("{locationId}", "x").startswith(("http://", "https://")):
                raise SimulatorError(f"webhook URL for {loc!r} must be an http(s) URL")
        chosen = tuple(events) if events else WEBHOOK_EVENTS
        unknown = set(chosen) - set(WEBHOOK_EVENTS)
        if unknown:
            raise SimulatorError(f"unknown webhook event(s) {sorted(unknown)} (one of {WEBHOOK_EVENTS})")
        if legacy_rsa:
            _ = self.webhook_keys.rsa  # derive the RSA key now, not inside the first emit
        with self._lock:
            self._wh_template = url_template or None
            self._wh_urls = dict(urls or {})
            self._wh_legacy = bool(legacy_rsa)
            self._wh_events = chosen
        return self.webhook_config()

    def clear_webhooks(self) -> None:
        """No webhook target any more (queued deliveries still finish)."""
        with self._lock:
            self._wh_template, self._wh_urls, self._wh_legacy = None, {}, False
            self._wh_events = WEBHOOK_EVENTS

    def webhook_config(self) -> dict[str, Any]:
        """``{url_template, urls, legacy_rsa, events}``."""
        with self._lock:
            return {
                "url_template": self._wh_template,
                "urls": dict(self._wh_urls),
                "legacy_rsa": self._wh_legacy,
                "events": list(self._wh_events),
            }

    def webhook_public_keys(self) -> dict[str, str]:
        """The public keys receivers verify with (base64 SPKI DER, one line each):
        ``{"ghl_webhook_public_key": <Ed25519>, "ghl_webhook_legacy_public_key": <RSA-2048>}``."""
        keys = self.webhook_keys.public_keys()
        return {"ghl_webhook_public_key": keys["ed25519"], "ghl_webhook_legacy_public_key": keys["rsa"]}

    def _webhook_url(self, location_id: str) -> str | None:
        if location_id in self._wh_urls:
            return self._wh_urls[location_id]
        return self._wh_template.replace("{locationId}", location_id) if self._wh_template else None

    def _webhook_outgoing(self, event: ProviderEvent) -> list[Outgoing]:
        """The signed delivery of ``event`` to its location's URL, if one is configured (§1.5)."""
        url = self._webhook_url(event.account)
        if url is None or event.name not in self._wh_events:
            return []
        payload = copy.deepcopy(event.payload)
        webhook_id = self._webhook_ids.uuid()
        keys, legacy, wall = self.webhook_keys, self._wh_legacy, self.webhooks

        def build() -> tuple[bytes, dict[str, str]]:
            sent = datetime.fromtimestamp(wall.wall_clock(), UTC)
            body = dumps({**payload, "webhookId": webhook_id, "timestamp": iso_ms_z(sent)})
            headers = {"X-GHL-Signature": ghl_ed25519_signature(keys.ed25519, body)}
            if legacy:
                headers["x-wh-signature"] = ghl_rsa_signature(keys.rsa, body)
            return body, headers

        appointment = payload.get("appointment") or {}
        return [
            Outgoing(
                target=f"ghl:{event.account}",
                url=url,
                build=build,
                resource=appointment.get("id"),
                webhook_id=webhook_id,
            )
        ]

    # ================================================================= gate hooks

    @staticmethod
    def _trace(request: Request) -> str:
        return request.state.trace_id

    def _authenticate(self, request: Request) -> tuple[str, Any] | None:
        request.state.trace_id = self.ids.trace_id()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        loc = self._by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        return (loc.id, loc) if loc else None

    def _quotas(self, principal: Any, request: Request) -> dict[str, Quota]:
        quotas = {"burst": Quota(self.rate_limit, self.rate_window_seconds)}
        if self.daily_limit:
            quotas["daily"] = Quota(self.daily_limit, 86_400, fixed=True)
        return quotas

    def _rate_headers(self, principal: Any, states: dict[str, QuotaState], limited: bool) -> dict[str, str]:
        burst = states["burst"]
        headers = {
            "X-RateLimit-Max": str(burst.quota.amount),
            "X-RateLimit-Remaining": str(burst.remaining),
            "X-RateLimit-Interval-Milliseconds": str(burst.quota.seconds * 1000),
        }
        daily = states.get("daily")
        if daily:
            headers["X-RateLimit-Limit-Daily"] = str(daily.quota.amount)
            headers["X-RateLimit-Daily-Remaining"] = str(daily.remaining)
            headers["X-RateLimit-Daily-Reset"] = str(int(daily.reset_in * 1000))
        if limited:
            blocked = [s for s in states.values() if not s.allowed]
            headers["Retry-After"] = str(max(1, math.ceil(max(s.reset_in for s in blocked))))
            if not burst.allowed:
                headers["X-RateLimit-Remaining"] = "0"
        return headers

    def _burst_headers(self, principal: Any, reset_in: float) -> dict[str, str]:
        quotas = self._quotas(principal, None)  # type: ignore[arg-type]
        states = {name: self.limiter.peek(principal.id, name, q) for name, q in quotas.items()}
        headers = self._rate_headers(principal, states, False)
        headers["X-RateLimit-Remaining"] = "0"
        headers["Retry-After"] = str(max(1, math.ceil(reset_in)))
        return headers

    def _unauthenticated(self, request: Request) -> Response:
        body = {
            "statusCode": 401,
            "message": "Invalid token: access token is invalid",
            "error": "Unauthorized",
            "traceId": self._trace(request),
        }
        return JSONResponse(body, status_code=401)

    def _rate_limited(self, request: Request, principal: Any, headers: dict[str, str], reset_in: float) -> Response:
        body = {"statusCode": 429, "message": "Too Many Requests", "traceId": self._trace(request)}
        return JSONResponse(body, status_code=429, headers=headers)

    def _error_body(self, request: Request, status: int, body: dict[str, Any]) -> dict[str, Any]:
        out = {"statusCode": status, **body}
        out.setdefault("traceId", getattr(request.state, "trace_id", None) or self.ids.trace_id())
        return out

    def _server_error_body(self, request: Request) -> dict[str, Any]:
        return {"statusCode": 500, "message": "Internal server error", "traceId": self._trace(request)}

    def _not_found_body(self, request: Request, status: int) -> dict[str, Any]:
        if status == 405:
            return self._error_body(request, 405, {"message": "Method Not Allowed", "error": "Method Not Allowed"})
        return self._error_body(
            request, status, {"message": f"Cannot {request.method} {request.url.path}", "error": "Not Found"}
        )

    def _validation_body(self, request: Request, exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
        messages = [str(e.get("msg")) for e in exc.errors()]
        return 422, self._error_body(request, 422, {"message": messages, "error": "Unprocessable Entity"})

    def _precheck(self, request: Request, principal: Any) -> Response | None:
        version = request.headers.get("version")
        if not version:
            message = "Version header was not found"
        elif version not in self.versions:
            message = f"Invalid Version header: {version!r} is not supported"
        else:
            return None
        body = self._error_body(request, 400, {"message": message, "error": "Bad Request"})
        return JSONResponse(body, status_code=400)

    # ================================================================= HTTP API

    def _add_routes(self, app: FastAPI) -> None:
        sim = self

        def loc_of(request: Request) -> _Location:
            return request.state.principal

        def own(request: Request, location_id: str | None, required: bool = True) -> None:
            if not location_id:
                if required:
                    raise _unprocessable("locationId should not be empty")
                return
            if location_id != loc_of(request).id:
                raise _forbidden()

        def ms_param(request: Request, name: str) -> datetime:
            raw = request.query_params.get(name)
            try:
                return from_epoch_ms(int(float(raw)))  # type: ignore[arg-type]
            except (TypeError, ValueError, OverflowError, OSError):
                raise _unprocessable(f"{name} must be a number conforming to the specified constraints") from None

        async def json_body(request: Request) -> dict[str, Any]:
            raw = await request.body()
            if not raw:
                return {}
            try:
                data = await request.json()
            except ValueError:
                raise _bad_request("Unexpected token in JSON body") from None
            if not isinstance(data, dict):
                raise _bad_request("Body must be a JSON object")
            return data

        def visible_appt(request: Request, event_id: str) -> _Appointment:
            appt = sim._appts.get(event_id)
            if appt is None or appt.location_id != loc_of(request).id:
                raise _not_found("Appointment not found")
            return appt

        def parse_time(value: Any, name: str) -> datetime:
            if not isinstance(value, str):
                raise _unprocessable(f"{name} must be a valid ISO 8601 date string")
            try:
                return as_utc(parse_iso(value))
            except ValueError:
                raise _unprocessable(f"{name} must be a valid ISO 8601 date string") from None

        def status_of(body: dict[str, Any]) -> str | None:
            status = body.get("appointmentStatus")
            if status is not None and status not in STATUSES:
                raise _unprocessable(f"appointmentStatus must be one of the following values: {', '.join(STATUSES)}")
            return status

        # ---- calendars/events (registered before /calendars/{calendarId})

        @app.get("/calendars/events/appointments/{event_id}")
        async def get_appointment(event_id: str, request: Request) -> dict[str, Any]:
            """GHL-SPEC-CAL ``GET /calendars/events/appointments/{eventId}``; wrapper observed."""
            with sim._lock:
                appt = visible_appt(request, event_id)
                return {"appointment": sim._appt_json(appt, meta=True), "traceId": sim._trace(request)}

        @app.get("/calendars/events")
        async def list_events(request: Request) -> dict[str, Any]:
            """Events of a calendar/user/group whose **start** is in ``[startTime, endTime)`` (ms)."""
            q = request.query_params
            own(request, q.get("locationId"))
            if not (q.get("calendarId") or q.get("userId") or q.get("groupId")):
                raise _unprocessable("Either calendarId, userId or groupId is required")
            start, end = ms_param(request, "startTime"), ms_param(request, "endTime")
            loc = loc_of(request)
            with sim._lock:
                events = [
                    a
                    for a in sim._appts.values()
                    if a.location_id == loc.id
                    and not a.deleted
                    and start <= a.start < end
                    and (not q.get("calendarId") or a.calendar_id == q.get("calendarId"))
                    and (not q.get("userId") or a.assigned_user_id == q.get("userId"))
                    and (not q.get("groupId") or a.group_id == q.get("groupId"))
                ]
                events.sort(key=lambda a: (a.start, a.id))
                return {"events": [sim._appt_json(a) for a in events], "traceId": sim._trace(request)}

        @app.post("/calendars/events/appointments")
        async def create_appointment(request: Request) -> dict[str, Any]:
            """Book (``AppointmentCreateSchema``); a slot that is not free → 400 (observed)."""
            body = await json_body(request)
            missing = [
                f"{f} should not be empty"
                for f in ("calendarId", "locationId", "contactId", "startTime")
                if not body.get(f)
            ]
            if missing:
                raise _unprocessable(*missing)
            own(request, body["locationId"])
            status = status_of(body)
            start = parse_time(body["startTime"], "startTime")
            end = parse_time(body["endTime"], "endTime") if body.get("endTime") else None
            loc = loc_of(request)
            with sim._lock:
                cal = loc.calendars.get(body["calendarId"])
                if cal is None:
                    raise _bad_request("Calendar not found")
                contact = loc.contacts.get(body["contactId"])
                if contact is None:
                    raise _bad_request("Contact not found")
                appt = sim._create(
                    loc,
                    cal,
                    contact,
                    start,
                    end,
                    status=status,
                    title=body.get("title"),
                    source="third_party",
                    validate=not body.get("ignoreFreeSlotValidation"),
                    ignore_range=bool(body.get("ignoreDateRange")),
                    address=body.get("address") or "",
                    notes=body.get("description") or body.get("notes") or "",
                    assigned_user_id=body.get("assignedUserId"),
                    meeting_location_type=body.get("meetingLocationType"),
                )
                return {**sim._write_json(appt), "traceId": sim._trace(request)}

        @app.put("/calendars/events/appointments/{event_id}")
        async def update_appointment(event_id: str, request: Request) -> dict[str, Any]:
            """Reschedule (new ``startTime``/``endTime``) and/or change ``appointmentStatus``."""
            body = await json_body(request)
            status = status_of(body)
            start = parse_time(body["startTime"], "startTime") if body.get("startTime") else None
            end = parse_time(body["endTime"], "endTime") if body.get("endTime") else None
            loc = loc_of(request)
            with sim._lock:
                appt = visible_appt(request, event_id)
                if appt.deleted:
                    raise _not_found("Appointment not found")
                cal = sim._calendars[appt.calendar_id]
                if body.get("calendarId") and body["calendarId"] != cal.id:
                    cal = loc.calendars.get(body["calendarId"])  # type: ignore[assignment]
                    if cal is None:
                        raise _bad_request("Calendar not found")
                new_start = start or appt.start
                new_end = end or (new_start + (appt.end - appt.start))
                if new_end <= new_start:
                    raise _unprocessable("endTime must be after startTime")
                new_status = status or appt.status
                moved = (new_start, new_end, cal.id) != (appt.start, appt.end, appt.calendar_id)
                if (
                    moved
                    and new_status not in _FREE_STATUSES
                    and not body.get("ignoreFreeSlotValidation")
                    and not sim._check_slot(
                        cal, new_start, new_end, exclude=appt.id, ignore_range=bool(body.get("ignoreDateRange"))
                    )
                ):
                    raise _bad_request(SLOT_TAKEN_MESSAGE)
                appt.start, appt.end, appt.calendar_id, appt.status = new_start, new_end, cal.id, new_status
                for key, attr in (
                    ("title", "title"),
                    ("address", "address"),
                    ("assignedUserId", "assigned_user_id"),
                    ("meetingLocationType", "meeting_location_type"),
                ):
                    if key in body and body[key] is not None:
                        setattr(appt, attr, body[key])
                if body.get("description") is not None:
                    appt.notes = body["description"]
                sim._touch(appt)
                return {**sim._write_json(appt), "traceId": sim._trace(request)}

        @app.delete("/calendars/events/{event_id}")
        async def delete_event(event_id: str, request: Request) -> dict[str, Any]:
            """Delete (spec 201, observed 200 ``{succeeded: true, traceId}``); repeat deletes succeed."""
            with sim._lock:
                appt = visible_appt(request, event_id)
                if not appt.deleted:
                    sim.delete(appt.id)
                return {"succeeded": True, "traceId": sim._trace(request)}

        # ---- calendars

        @app.get("/calendars/")
        async def list_calendars(request: Request) -> dict[str, Any]:
            own(request, request.query_params.get("locationId"))
            with sim._lock:
                cals = [sim._calendar_json(c) for c in loc_of(request).calendars.values()]
            return {"calendars": cals, "traceId": sim._trace(request)}

        @app.get("/calendars/{calendar_id}/free-slots")
        async def free_slots(calendar_id: str, request: Request) -> dict[str, Any]:
            """Free slots keyed by local date, ISO with offset; range ≤ 31 days (GHL-SPEC-CAL)."""
            start, end = ms_param(request, "startDate"), ms_param(request, "endDate")
            if end < start:
                raise _unprocessable("endDate must be after startDate")
            if end - start > MAX_FREE_SLOT_RANGE:
                raise _unprocessable("The date range between startDate and endDate must not exceed 31 days")
            loc = loc_of(request)
            tz_name = request.query_params.get("timezone") or loc.tz_name
            try:
                tz = ZoneInfo(tz_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise _unprocessable("timezone must be a valid IANA timezone") from None
            with sim._lock:
                cal = loc.calendars.get(calendar_id)
                if cal is None:
                    raise _bad_request("Calendar not found")
                slots = sim._free(cal, start, end + timedelta(milliseconds=1))
            out: dict[str, Any] = {}
            for slot in slots:
                local = slot.astimezone(tz)
                out.setdefault(local.date().isoformat(), {"slots": []})["slots"].append(iso_offset(slot, tz))
            out["traceId"] = sim._trace(request)
            return out

        @app.get("/calendars/{calendar_id}")
        async def get_calendar(calendar_id: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                cal = loc_of(request).calendars.get(calendar_id)
                if cal is None:
                    raise _bad_request("Calendar not found")
                return {"calendar": sim._calendar_json(cal), "traceId": sim._trace(request)}

        # ---- contacts (registered before /contacts/{contactId}/…)

        @app.get("/contacts/search/duplicate")
        async def duplicate_search(request: Request) -> dict[str, Any]:
            """GHL-SPEC-CON duplicate search by ``email`` (or ``number``); no match → ``contact: null``."""
            q = request.query_params
            own(request, q.get("locationId"))
            email, number = (q.get("email") or "").strip().lower(), (q.get("number") or "").strip()
            if not email and not number:
                raise _unprocessable("email or number is required")
            loc = loc_of(request)
            with sim._lock:
                contact = None
                if email and email in loc.by_email:
                    contact = loc.contacts[loc.by_email[email]]
                elif number:
                    contact = next((c for c in loc.contacts.values() if c.phone == number), None)
                if contact is None:
                    return {"contact": None, "traceId": sim._trace(request)}
                return {
                    "contact": sim._contact_json(contact),
                    "matchingField": "email" if email else "phone",
                    "traceId": sim._trace(request),
                }

        @app.post("/contacts/search")
        async def search_contacts(request: Request) -> dict[str, Any]:
            """``POST /contacts/search`` with ``filters: [{field: "email", operator: "eq", value}]``
            and/or ``query``; ``page``/``pageLimit`` paging."""
            body = await json_body(request)
            own(request, body.get("locationId"))
            page, limit = int(body.get("page") or 1), int(body.get("pageLimit") or 20)
            if page < 1 or not 1 <= limit <= 500:
                raise _unprocessable("page must be ≥ 1 and pageLimit between 1 and 500")
            loc = loc_of(request)
            with sim._lock:
                found = sorted(loc.contacts.values(), key=lambda c: (c.date_added, c.id))
                for flt in body.get("filters") or []:
                    if flt.get("field") == "email" and flt.get("operator", "eq") == "eq":
                        want = str(flt.get("value", "")).strip().lower()
                        found = [c for c in found if c.email.lower() == want]
                if body.get("query"):
                    needle = str(body["query"]).lower()
                    found = [c for c in found if needle in c.email.lower() or needle in c.name.lower()]
                window = found[(page - 1) * limit : page * limit]
                return {
                    "contacts": [sim._contact_json(c) for c in window],
                    "total": len(found),
                    "traceId": sim._trace(request),
                }

        @app.get("/contacts/{contact_id}/appointments")
        async def contact_appointments(contact_id: str, request: Request) -> dict[str, Any]:
            """All (non-deleted) appointments of a contact; no window, no paging (GHL-SPEC-CON)."""
            loc = loc_of(request)
            with sim._lock:
                if contact_id not in loc.contacts:
                    raise _bad_request("Contact not found")
                events = sorted(
                    (a for a in sim._appts.values() if a.contact_id == contact_id and not a.deleted),
                    key=lambda a: (a.start, a.id),
                )
                return {"events": [sim._contact_event_json(a) for a in events], "traceId": sim._trace(request)}

        @app.get("/contacts/{contact_id}")
        async def get_contact(contact_id: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                contact = loc_of(request).contacts.get(contact_id)
                if contact is None:
                    raise _bad_request("Contact not found")
                return {"contact": sim._contact_json(contact), "traceId": sim._trace(request)}

    # ================================================================= admin HTTP

    def _add_admin_routes(self, app: FastAPI) -> None:
        sim = self

        async def body_of(request: Request) -> dict[str, Any]:
            raw = await request.body()
            data = await request.json() if raw else {}
            if not isinstance(data, dict):
                raise SimulatorError("body must be a JSON object")
            return data

        @app.post("/_admin/book")
        async def admin_book(request: Request) -> dict[str, Any]:
            """``{calendarId, startTime, contactId | email [, firstName, lastName, appointmentStatus,
            title, endTime, force]}`` → the appointment."""
            b = await body_of(request)
            if not b.get("calendarId") or not b.get("startTime"):
                raise SimulatorError("calendarId and startTime are required")
            return sim.book(
                b["calendarId"],
                b["startTime"],
                contact_id=b.get("contactId"),
                email=b.get("email"),
                first_name=b.get("firstName", ""),
                last_name=b.get("lastName", ""),
                status=b.get("appointmentStatus"),
                title=b.get("title"),
                end=b.get("endTime"),
                force=bool(b.get("force")),
            )

        @app.get("/_admin/appointments")
        async def admin_appointments(locationId: str | None = None) -> dict[str, Any]:
            return {"appointments": sim.appointments(locationId)}

        @app.get("/_admin/appointments/{event_id}")
        async def admin_appointment(event_id: str) -> dict[str, Any]:
            return sim.appointment(event_id)

        @app.post("/_admin/appointments/{event_id}/cancel")
        async def admin_cancel(event_id: str) -> dict[str, Any]:
            return sim.cancel(event_id)

        @app.post("/_admin/appointments/{event_id}/reschedule")
        async def admin_reschedule(event_id: str, request: Request) -> dict[str, Any]:
            """``{startTime [, endTime, force]}``."""
            b = await body_of(request)
            if not b.get("startTime"):
                raise SimulatorError("startTime is required")
            return sim.reschedule(event_id, b["startTime"], b.get("endTime"), force=bool(b.get("force")))

        @app.post("/_admin/appointments/{event_id}/status")
        async def admin_status(event_id: str, request: Request) -> dict[str, Any]:
            """``{status}`` e.g. ``showed`` / ``noshow``."""
            b = await body_of(request)
            return sim.set_status(event_id, str(b.get("status", "")))

        @app.post("/_admin/appointments/{event_id}/delete")
        @app.delete("/_admin/appointments/{event_id}")
        async def admin_delete(event_id: str) -> dict[str, Any]:
            return sim.delete(event_id)

        @app.post("/_admin/locations")
        async def admin_add_location(request: Request) -> dict[str, Any]:
            return {"id": sim.add_location(await body_of(request))}

        @app.post("/_admin/locations/{location_id}/contacts")
        async def admin_add_contact(location_id: str, request: Request) -> dict[str, Any]:
            b = await body_of(request)
            return {"id": sim.add_contact(location_id, b)}

        @app.get("/_admin/webhooks")
        async def admin_webhooks() -> dict[str, Any]:
            return sim.webhook_config()

        @app.put("/_admin/webhooks")
        async def admin_set_webhooks(request: Request) -> dict[str, Any]:
            """``{url_template | url, urls: {locationId: url}, legacy_rsa: bool, events: [...]}``
            (replaces the configuration) → ``{url_template, urls, legacy_rsa, events}``."""
            b = await body_of(request)
            unknown = set(b) - {"url_template", "url", "urls", "legacy_rsa", "events"}
            if unknown:
                raise SimulatorError(f"unknown field(s) {sorted(unknown)}")
            if b.get("urls") is not None and not isinstance(b["urls"], dict):
                raise SimulatorError("urls must be an object {locationId: url}")
            return sim.set_webhooks(
                b.get("url_template") or b.get("url"),
                urls=b.get("urls"),
                legacy_rsa=bool(b.get("legacy_rsa")),
                events=b.get("events"),
            )

        @app.delete("/_admin/webhooks")
        async def admin_clear_webhooks() -> dict[str, Any]:
            sim.clear_webhooks()
            return {"ok": True}

        @app.get("/_admin/webhooks/public_keys")
        async def admin_public_keys() -> dict[str, Any]:
            """``{ghl_webhook_public_key, ghl_webhook_legacy_public_key}`` (base64 SPKI DER)."""
            return sim.webhook_public_keys()

        @app.get("/_admin/calendars/{calendar_id}/free-slots")
        async def admin_free_slots(calendar_id: str, days: int = 30) -> dict[str, Any]:
            now = sim.now()
            slots = sim.free_slots(calendar_id, now, now + timedelta(days=days))
            return {"slots": [epoch_ms(s) for s in slots], "iso": [s.isoformat() for s in slots]}


def create_ghl_app(sim: GhlSimulator) -> FastAPI:
    """The ASGI app of a :class:`GhlSimulator` (provider API + ``/_admin``)."""
    return sim.create_app()


__all__ = ["SLOT_TAKEN_MESSAGE", "STATUSES", "VERSIONS", "WEBHOOK_EVENTS", "GhlSimulator", "create_ghl_app"]
