"""The GHL simulator: state, seeding, slots, bookings and webhook configuration."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI

from appt_pipeline.domain.signatures import ghl_ed25519_signature, ghl_rsa_signature
from appt_pipeline.sandbox.base import SimulatorBase
from appt_pipeline.sandbox.common import (
    Clock,
    FaultSettings,
    IdFactory,
    ProviderEvent,
    SimulatorError,
    as_utc,
    coerce,
    default_working_hours,
    iso_ms_z,
    overlaps,
    slot_grid,
    utc_now,
)
from appt_pipeline.sandbox.ghl.admin import ADMIN_ACTIONS
from appt_pipeline.sandbox.ghl.api import add_api_routes
from appt_pipeline.sandbox.ghl.auth import GhlGate
from appt_pipeline.sandbox.ghl.model import (
    _FREE_STATUSES,
    SLOT_TAKEN_MESSAGE,
    STATUSES,
    VERSIONS,
    WEBHOOK_EVENTS,
    _Appointment,
    _bad_request,
    _Calendar,
    _Contact,
    _Location,
    _unprocessable,
)
from appt_pipeline.sandbox.ghl.render import GhlRender
from appt_pipeline.sandbox.state import GhlAppointment, GhlCalendar, GhlContact, GhlLocation, GhlSeed
from appt_pipeline.sandbox.webhooks import DeliverySettings, GhlSigningKeys, Outgoing, dumps


class GhlSimulator(GhlGate, GhlRender, SimulatorBase):
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

    #: Canned free-slots faults of :meth:`fail_free_slots`: mode → (status, body).
    FREE_SLOTS_FAULTS: ClassVar[dict[str, tuple[int, Any]]] = {
        "garbage": (200, ["2031-03-03T09:00:00+00:00"]),  # wrong shape: a list, not days
        "unparseable": (200, {"2031-03-03": {"slots": ["2031-03-03T09:00:00+00:00", "next tuesday", "T25:00"]},
                              "traceId": "canned-trace"}),
        "error_200": (200, {"statusCode": 400, "message": "Calendar is not ready, try again later",
                            "traceId": "canned-trace"}),
        "not_found": (404, {"statusCode": 404, "message": "Calendar not found", "error": "Not Found",
                            "traceId": "canned-trace"}),
        "unauthorized": (401, {"statusCode": 401, "message": "Invalid token: access token is invalid",
                               "error": "Unauthorized", "traceId": "canned-trace"}),
    }

    def fail_free_slots(self, mode: str, calendar_id: str | None = None, *, count: int | None = None) -> None:
        """Make ``GET /calendars/{calendar_id}/free-slots`` (every calendar when ``None``) answer a canned fault
        ``count`` times (``None``: until ``faults.clear()``). Modes: :data:`FREE_SLOTS_FAULTS` — ``garbage``
        (200, wrong shape), ``unparseable`` (200, slot times that do not parse), ``error_200`` (200 with an
        error body), ``not_found`` (404), ``unauthorized`` (401). Raises :class:`SimulatorError` for an
        unknown mode."""
        if mode not in self.FREE_SLOTS_FAULTS:
            raise SimulatorError(f"unknown free-slots fault {mode!r}; one of {sorted(self.FREE_SLOTS_FAULTS)}")
        status, body = self.FREE_SLOTS_FAULTS[mode]
        with self._lock:
            targets = [calendar_id] if calendar_id else list(self._calendars)
        for cal in targets:  # ``count`` applies to each calendar
            self.faults.can(f"/calendars/{cal}/free-slots", status, copy.deepcopy(body), count)

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
        """The signed delivery of ``event`` to its location's URL, if one is configured (docs/providers.md §1.5)."""
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

    admin_actions = ADMIN_ACTIONS

    def _admin_missing(self, missing: list[str], required: tuple[str, ...]) -> str:
        return f"{' and '.join(required)} {'is' if len(required) == 1 else 'are'} required"

    def _add_routes(self, app: FastAPI) -> None:
        add_api_routes(self, app)


def create_ghl_app(sim: GhlSimulator) -> FastAPI:
    """The ASGI app of a :class:`GhlSimulator` (provider API + ``/_admin``)."""
    return sim.create_app()
