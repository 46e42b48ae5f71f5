"""The Calendly simulator: state, seeding, bookings, no-shows and webhook subscriptions."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI

from appt_pipeline.domain.signatures import calendly_signature
from appt_pipeline.sandbox.base import SimulatorBase
from appt_pipeline.sandbox.calendly.admin import ADMIN_ACTIONS
from appt_pipeline.sandbox.calendly.api import add_api_routes
from appt_pipeline.sandbox.calendly.auth import CalendlyGate
from appt_pipeline.sandbox.calendly.model import (
    _ORG_ONLY_EVENTS,
    API,
    DEFAULT_INVITEE_LIMITS,
    INVITEE_WEBHOOK_EVENTS,
    MAX_AVAILABLE_RANGE,
    PLANS,
    WEBHOOK_EVENTS,
    _Event,
    _EventType,
    _invalid,
    _Invitee,
    _tail,
    _tracking,
    _User,
    _WebhookSub,
)
from appt_pipeline.sandbox.calendly.render import CalendlyRender
from appt_pipeline.sandbox.common import (
    ApiError,
    Clock,
    FaultSettings,
    IdFactory,
    ProviderEvent,
    SimulatorError,
    as_utc,
    coerce,
    default_working_hours,
    iso_us_z,
    overlaps,
    slot_grid,
    utc_now,
)
from appt_pipeline.sandbox.state import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
    CalendlySeed,
    CalendlyUser,
)
from appt_pipeline.sandbox.webhooks import DeliverySettings, Outgoing, calendly_signing_key, dumps


class CalendlySimulator(CalendlyGate, CalendlyRender, SimulatorBase):
    """In-memory Calendly: users/organizations, event types, scheduled events, invitees + the API.

    ``seed``: :class:`~.state.CalendlySeed` or the same as a dict. ``rate_limit`` (paid plans) /
    ``free_rate_limit`` (free plan) requests per ``rate_window_seconds`` per user (moving window).
    ``invitee_limits``: extra ``POST /invitees`` quotas per plan (``None`` = the documented ones,
    ``{}`` = none). ``id_seed``, ``faults``, ``clock`` as for :class:`~.ghl.GhlSimulator`.
    """

    provider = "calendly"

    def __init__(
        self,
        seed: CalendlySeed | dict[str, Any] | None = None,
        *,
        rate_limit: int = 500,
        free_rate_limit: int = 50,
        rate_window_seconds: int = 60,
        invitee_limits: dict[str, tuple[tuple[int, int], ...]] | None = None,
        id_seed: int | str = 0,
        faults: FaultSettings | None = None,
        clock: Clock = utc_now,
        webhook_settings: DeliverySettings | dict[str, Any] | None = None,
    ):
        super().__init__(id_seed=id_seed, faults=faults, clock=clock, webhook_settings=webhook_settings)
        self.rate_limit = rate_limit
        self.free_rate_limit = free_rate_limit
        self.rate_window_seconds = rate_window_seconds
        self.invitee_limits = dict(DEFAULT_INVITEE_LIMITS if invitee_limits is None else invitee_limits)
        self._initial_seed = seed
        self._users: dict[str, _User] = {}  # by uri
        self._by_token: dict[str, _User] = {}
        self._types: dict[str, _EventType] = {}  # by uuid
        self._events: dict[str, _Event] = {}  # by uuid
        self._invitees: dict[str, _Invitee] = {}  # by uuid
        self._no_shows: dict[str, str] = {}  # no-show uuid -> invitee uuid
        self._orgs: dict[str, str] = {}  # seed label -> org uri
        self._webhook_subs: dict[str, _WebhookSub] = {}  # by uuid; kept by load(), cleared by reset()
        self._webhook_ids = IdFactory(f"calendly-webhooks:{id_seed}")  # never shifts entity ids
        self.load(seed)

    # ================================================================= seeding and configuration

    def load(self, seed: CalendlySeed | dict[str, Any] | None) -> None:
        """Replace all provider data with ``seed`` (id generation restarts from ``id_seed``)."""
        data = coerce(CalendlySeed, seed) if seed is not None else CalendlySeed()
        with self._lock:
            self.ids = IdFactory(self.id_seed)
            for table in (
                self._users,
                self._by_token,
                self._types,
                self._events,
                self._invitees,
                self._no_shows,
                self._orgs,
            ):
                table.clear()
            for raw in data.users:
                self.add_user(raw)

    def reset(self, seed: CalendlySeed | dict[str, Any] | None = None) -> None:
        """Back to ``seed`` (default: the constructor's seed) with counters, faults, events, webhook
        subscriptions and webhook deliveries cleared."""
        self.load(seed if seed is not None else self._initial_seed)
        self.faults.clear(counters=True)
        self.clear_counters()
        self._reset_webhooks()

    def _reset_webhooks(self) -> None:
        with self._lock:
            self._webhook_subs.clear()
            self._webhook_ids = IdFactory(f"calendly-webhooks:{self.id_seed}")
        super()._reset_webhooks()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change ``rate_limit``, ``free_rate_limit``, ``rate_window_seconds`` or ``invitee_limits``
        (rate-limit windows restart)."""
        allowed = {"rate_limit", "free_rate_limit", "rate_window_seconds", "invitee_limits"}
        unknown = set(changes) - allowed
        if unknown:
            raise SimulatorError(f"unknown setting(s) {sorted(unknown)}")
        with self._lock:
            for key, value in changes.items():
                if key == "invitee_limits":  # None = the documented limits, {} = none
                    limits = DEFAULT_INVITEE_LIMITS if value is None else value
                    value = {plan: tuple(tuple(q) for q in quotas) for plan, quotas in limits.items()}
                setattr(self, key, value)
            self.limiter.reset()
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            "rate_limit": self.rate_limit,
            "free_rate_limit": self.free_rate_limit,
            "rate_window_seconds": self.rate_window_seconds,
            "invitee_limits": {plan: [list(q) for q in quotas] for plan, quotas in self.invitee_limits.items()},
        }

    def add_user(self, raw: CalendlyUser | dict[str, Any]) -> str:
        """Add a user with its event types and scheduled events; returns the user URI."""
        seed = coerce(CalendlyUser, raw)
        if seed.plan not in PLANS:
            raise SimulatorError(f"unknown plan {seed.plan!r} (one of {PLANS})")
        if seed.role not in ("owner", "admin", "user"):
            raise SimulatorError(f"unknown role {seed.role!r}")
        try:
            tz = ZoneInfo(seed.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SimulatorError(f"unknown timezone {seed.timezone!r}") from exc
        with self._lock:
            if seed.token in self._by_token:
                raise SimulatorError("token already in use")
            user_uuid = seed.uuid or self.ids.uuid()
            if seed.organization is None:
                org_uri = f"{API}/organizations/{self.ids.uuid()}"
            else:
                org_uri = self._orgs.setdefault(seed.organization, f"{API}/organizations/{seed.organization}")
            slug = seed.slug or re.sub(r"[^a-z0-9]+", "-", seed.name.lower()).strip("-") or user_uuid[:8]
            user = _User(
                uuid=user_uuid,
                uri=f"{API}/users/{user_uuid}",
                token=seed.token,
                email=seed.email,
                name=seed.name,
                slug=slug,
                tz_name=seed.timezone,
                tz=tz,
                org_uri=org_uri,
                role=seed.role,
                plan=seed.plan,
                hours=seed.working_hours or default_working_hours(),
                created_at=self.seed_epoch() - timedelta(days=365),
            )
            if user.uri in self._users:
                raise SimulatorError(f"user {user.uri} already exists")
            self._users[user.uri] = user
            self._by_token[user.token] = user
            for position, et in enumerate(seed.event_types):
                self.add_event_type(user.uri, et, position=position)
            for ev in seed.scheduled_events:
                self._seed_event(user, coerce(CalendlyScheduledEvent, ev))
            return user.uri

    def add_event_type(self, user_uri: str, raw: CalendlyEventType | dict[str, Any], position: int = 0) -> str:
        """Add an event type to a user; returns its URI."""
        seed = coerce(CalendlyEventType, raw)
        if seed.kind not in ("solo", "group"):
            raise SimulatorError("event type kind must be 'solo' or 'group'")
        with self._lock:
            user = self._user(user_uri)
            et_uuid = seed.uuid or self.ids.uuid()
            created = user.created_at + timedelta(days=1)
            et = _EventType(
                uuid=et_uuid,
                uri=f"{API}/event_types/{et_uuid}",
                owner_uri=user.uri,
                name=seed.name,
                slug=seed.slug or re.sub(r"[^a-z0-9]+", "-", seed.name.lower()).strip("-"),
                duration=seed.duration,
                interval=timedelta(minutes=seed.interval_minutes or seed.duration),
                kind=seed.kind,
                max_invitees=seed.max_invitees if seed.kind == "group" else 1,
                active=seed.active,
                location_kind=seed.location_kind,
                custom_questions=list(seed.custom_questions),
                horizon=timedelta(days=seed.booking_horizon_days),
                min_notice=timedelta(minutes=seed.min_notice_minutes),
                position=position,
                created_at=created,
                updated_at=created,
            )
            if et.uuid in self._types:
                raise SimulatorError(f"event type {et.uuid} already exists")
            self._types[et.uuid] = et
            return et.uri

    def _seed_event(self, user: _User, seed: CalendlyScheduledEvent) -> _Event:
        et = self._type_by_ref(seed.event_type, owner=user)
        start = as_utc(seed.start)
        end = as_utc(seed.end) if seed.end else start + timedelta(minutes=et.duration)
        created = as_utc(seed.created_at) if seed.created_at else min(start, self.seed_epoch()) - timedelta(days=5)
        invitees = [coerce(CalendlyInvitee, i) for i in seed.invitees]
        status = seed.status or (
            "active" if any(i.status == "active" for i in invitees) or not invitees else "canceled"
        )
        event = self._new_event(et, user, start, end, created, status=status, uuid=seed.uuid)
        for inv in invitees:
            if inv.status not in ("active", "canceled"):
                raise SimulatorError(f"invitee status must be active or canceled, not {inv.status!r}")
            inv_created = as_utc(inv.created_at) if inv.created_at else created
            invitee = self._new_invitee(
                event,
                inv.email,
                inv.name,
                inv.timezone,
                inv_created,
                questions=inv.questions_and_answers,
                uuid=inv.uuid,
            )
            if inv.status == "canceled":
                canceled_at = min(start, self.seed_epoch()) - timedelta(days=1)
                invitee.status = "canceled"
                invitee.cancellation = {
                    "canceled_by": invitee.name if inv.canceler_type == "invitee" else user.name,
                    "reason": inv.cancel_reason,
                    "canceler_type": inv.canceler_type,
                    "created_at": iso_us_z(canceled_at),
                }
                invitee.updated_at = max(canceled_at, inv_created)
            if inv.no_show:
                invitee.no_show = self._no_show_record(invitee, end)
                invitee.updated_at = max(invitee.updated_at, end)
        if event.status == "canceled" and event.cancellation is None:
            first = next((self._invitees[i] for i in event.invitees), None)
            event.cancellation = (
                first.cancellation
                if first and first.cancellation
                else {
                    "canceled_by": user.name,
                    "reason": "",
                    "canceler_type": "host",
                    "created_at": iso_us_z(min(start, self.seed_epoch()) - timedelta(days=1)),
                }
            )
        event.updated_at = max([event.updated_at] + [self._invitees[i].updated_at for i in event.invitees])
        return event

    def _new_event(
        self,
        et: _EventType,
        host: _User,
        start: datetime,
        end: datetime,
        created: datetime,
        *,
        status: str = "active",
        uuid: str | None = None,
        location: dict[str, Any] | None = None,
    ) -> _Event:
        ev_uuid = uuid or self.ids.uuid()
        if location is None:
            location = {"type": et.location_kind}
            if et.location_kind.endswith("_conference"):
                location.update({"status": "pushed", "join_url": f"https://calendly.zoom.us/j/{int(ev_uuid[:8], 16)}"})
        event = _Event(
            uuid=ev_uuid,
            uri=f"{API}/scheduled_events/{ev_uuid}",
            event_type_uri=et.uri,
            host_uri=host.uri,
            name=et.name,
            start=start,
            end=end,
            status=status,
            location=location,
            created_at=created,
            updated_at=created,
        )
        if event.uuid in self._events:
            raise SimulatorError(f"scheduled event {event.uuid} already exists")
        self._events[event.uuid] = event
        return event

    def _new_invitee(
        self,
        event: _Event,
        email: str,
        name: str | None,
        timezone: str,
        created: datetime,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        questions: list[dict[str, Any]] | None = None,
        uuid: str | None = None,
        tracking: dict[str, Any] | None = None,
        text_reminder_number: str | None = None,
        scheduling_method: str | None = None,
        scheduled_by: str | None = None,
    ) -> _Invitee:
        inv_uuid = uuid or self.ids.uuid()
        full = name or " ".join(p for p in (first_name, last_name) if p) or email.split("@")[0]
        invitee = _Invitee(
            uuid=inv_uuid,
            uri=f"{event.uri}/invitees/{inv_uuid}",
            event_uuid=event.uuid,
            email=email.strip(),
            name=full,
            first_name=first_name,
            last_name=last_name,
            status="active",
            timezone=timezone,
            created_at=created,
            updated_at=created,
            questions_and_answers=list(questions or []),
            tracking=_tracking(tracking),
            text_reminder_number=text_reminder_number,
            scheduling_method=scheduling_method,
            invitee_scheduled_by=scheduled_by,
        )
        if invitee.uuid in self._invitees:
            raise SimulatorError(f"invitee {invitee.uuid} already exists")
        self._invitees[invitee.uuid] = invitee
        event.invitees.append(invitee.uuid)
        return invitee

    def _no_show_record(self, invitee: _Invitee, at: datetime) -> dict[str, Any]:
        ns_uuid = self.ids.uuid()
        self._no_shows[ns_uuid] = invitee.uuid
        return {"uri": f"{API}/invitee_no_shows/{ns_uuid}", "created_at": iso_us_z(at)}

    # ================================================================= lookups

    def _user(self, ref: str) -> _User:
        user = self._users.get(ref) or self._users.get(f"{API}/users/{_tail(ref)}")
        if user is None:
            raise SimulatorError(f"unknown user {ref!r}")
        return user

    def _type_by_ref(self, ref: str, owner: _User | None = None) -> _EventType:
        et = self._types.get(_tail(ref))
        if et is None:  # a slug: the owner's, else the only one with that slug
            same = [t for t in self._types.values() if t.slug == ref and (owner is None or t.owner_uri == owner.uri)]
            et = same[0] if len(same) == 1 else None
        if et is None:
            raise SimulatorError(f"unknown event type {ref!r}")
        return et

    def _event_by_ref(self, ref: str) -> _Event:
        event = self._events.get(_tail(ref))
        if event is None:
            raise SimulatorError(f"unknown scheduled event {ref!r}")
        return event

    def _invitee_by_ref(self, ref: str) -> _Invitee:
        invitee = self._invitees.get(_tail(ref))
        if invitee is None:
            raise SimulatorError(f"unknown invitee {ref!r}")
        return invitee

    def user_uri(self, token: str) -> str | None:
        user = self._by_token.get(token)
        return user.uri if user else None

    def organization_uri(self, token: str) -> str | None:
        user = self._by_token.get(token)
        return user.org_uri if user else None

    def event_type_uris(self, user_uri: str) -> list[str]:
        with self._lock:
            return [t.uri for t in sorted(self._types.values(), key=lambda t: t.position) if t.owner_uri == user_uri]

    # ================================================================= slots

    def _host_busy(self, host_uri: str, start: datetime, end: datetime) -> list[_Event]:
        return [
            e
            for e in self._events.values()
            if e.host_uri == host_uri and e.status == "active" and e.end > start and e.start < end
        ]

    def _active_count(self, event: _Event) -> int:
        return sum(1 for i in event.invitees if self._invitees[i].status == "active")

    def _grid(self, et: _EventType, start: datetime, end: datetime) -> list[datetime]:
        """Slot starts of ``et`` in ``[start, end)`` inside ``[now + notice, now + horizon)``."""
        now = self.now()
        lo, hi = max(start, now + et.min_notice), min(end, now + et.horizon)
        if lo >= hi:
            return []
        owner = self._users[et.owner_uri]
        return list(slot_grid(lo, hi, owner.tz, owner.hours, timedelta(minutes=et.duration), et.interval))

    def _available(
        self, et: _EventType, start: datetime, end: datetime, exclude: str | None = None
    ) -> list[tuple[datetime, int]]:
        """``(slot start, invitees_remaining)`` of ``et`` in ``[start, end)``; booked slots absent.

        ``exclude``: a scheduled event uuid to ignore (the one being rescheduled away from).
        """
        if not et.active:
            return []
        duration = timedelta(minutes=et.duration)
        busy = [e for e in self._host_busy(et.owner_uri, start - duration, end + duration) if e.uuid != exclude]
        out = []
        for slot in self._grid(et, start, end):
            slot_end = slot + duration
            clashing = [e for e in busy if overlaps(slot, slot_end, e.start, e.end)]
            if et.kind == "group":
                same = [e for e in clashing if e.event_type_uri == et.uri and e.start == slot]
                if same and len(same) == len(clashing):
                    left = et.max_invitees - self._active_count(same[0])
                    if left > 0:
                        out.append((slot, left))
                    continue
            if not clashing:
                out.append((slot, et.max_invitees))
        return out

    #: Canned available-times faults of :meth:`fail_available_times`: mode → (status, body).
    AVAILABLE_TIMES_FAULTS: ClassVar[dict[str, tuple[int, Any]]] = {
        "garbage": (200, {"data": "unavailable"}),  # wrong shape: no collection
        "unparseable": (200, {"collection": [
            {"status": "available", "invitees_remaining": 1, "start_time": "2031-03-03T09:00:00.000000Z"},
            {"status": "available", "invitees_remaining": 1, "start_time": "soon"},
        ]}),
        "error_200": (200, {"title": "Internal Server Error", "message": "The server encountered an error"}),
        "not_found": (404, {"title": "Resource Not Found", "message": "The server could not find the requested "
                            "resource."}),
        "unauthorized": (401, {"title": "Unauthenticated", "message": "The access token is invalid"}),
    }

    def fail_available_times(self, mode: str, *, count: int | None = None) -> None:
        """Make ``GET /event_type_available_times`` answer a canned fault ``count`` times (``None``: until
        ``faults.clear()``). Modes as :data:`AVAILABLE_TIMES_FAULTS`: ``garbage``, ``unparseable``,
        ``error_200``, ``not_found`` (404), ``unauthorized`` (401). Raises :class:`SimulatorError` for an
        unknown mode."""
        if mode not in self.AVAILABLE_TIMES_FAULTS:
            raise SimulatorError(f"unknown available-times fault {mode!r}; one of "
                                 f"{sorted(self.AVAILABLE_TIMES_FAULTS)}")
        status, body = self.AVAILABLE_TIMES_FAULTS[mode]
        self.faults.can("/event_type_available_times", status, body, count)

    def available_times(
        self, event_type: str, start: datetime | str | None = None, end: datetime | str | None = None
    ) -> list[datetime]:
        """Open slot starts (UTC) of an event type; default window now … now + 7 days."""
        with self._lock:
            et = self._type_by_ref(event_type)
            lo = as_utc(start) if start else self.now()
            hi = as_utc(end) if end else lo + MAX_AVAILABLE_RANGE
            return [s for s, _ in self._available(et, lo, hi)]

    def _emit_invitee(self, name: str, invitee: _Invitee) -> None:
        event = self._events[invitee.event_uuid]
        payload = {**self._invitee_json(invitee), "scheduled_event": self._event_json(event)}
        self._emit(name, payload, event.host_uri)

    # ================================================================= core operations

    def _check_bookable(self, et: _EventType, start: datetime, exclude: str | None = None) -> None:
        """Raise the API's 400 unless ``start`` is an open slot of ``et``."""
        if any(s == start for s, _ in self._available(et, start, start + timedelta(seconds=1), exclude)):
            return
        if start in self._grid(et, start, start + timedelta(seconds=1)) and et.active:
            raise _invalid(("start_time", "The selected time is no longer available.", "already_filled"))
        raise _invalid(("start_time", "is not an available time for this event type"))

    def _book(
        self,
        et: _EventType,
        start: datetime,
        email: str,
        name: str | None,
        timezone: str,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        questions: list[dict[str, Any]] | None = None,
        tracking: dict[str, Any] | None = None,
        text_reminder_number: str | None = None,
        guests: list[str] | None = None,
        location: dict[str, Any] | None = None,
        scheduling_method: str | None = None,
        scheduled_by: str | None = None,
        old_invitee: str | None = None,
    ) -> _Invitee:
        now = self.now()
        host = self._users[et.owner_uri]
        event = None
        if et.kind == "group":
            event = next(
                (
                    e
                    for e in self._events.values()
                    if e.event_type_uri == et.uri and e.start == start and e.status == "active"
                ),
                None,
            )
        if event is None:
            loc = None
            if location and location.get("kind"):
                loc = {"type": location["kind"]}
                if location.get("location"):
                    loc["location"] = location["location"]
            event = self._new_event(et, host, start, start + timedelta(minutes=et.duration), now, location=loc)
        for guest in guests or []:
            event.guests.append({"email": guest, "created_at": iso_us_z(now), "updated_at": iso_us_z(now)})
        invitee = self._new_invitee(
            event,
            email,
            name,
            timezone,
            now,
            first_name=first_name,
            last_name=last_name,
            questions=questions,
            tracking=tracking,
            text_reminder_number=text_reminder_number,
            scheduling_method=scheduling_method,
            scheduled_by=scheduled_by,
        )
        invitee.old_invitee = old_invitee
        event.updated_at = now
        self._emit_invitee("invitee.created", invitee)
        return invitee

    def _cancel_invitee(
        self,
        invitee: _Invitee,
        *,
        reason: str,
        canceler_type: str,
        canceled_by: str | None,
        rescheduled_to: str | None = None,
    ) -> None:
        if invitee.status == "canceled":
            raise SimulatorError(f"invitee {invitee.uri} is already canceled")
        if canceler_type not in ("host", "invitee"):
            raise SimulatorError("canceler_type must be 'host' or 'invitee'")
        now = self.now()
        event = self._events[invitee.event_uuid]
        host = self._users[event.host_uri]
        cancellation = {
            "canceled_by": canceled_by or (invitee.name if canceler_type == "invitee" else host.name),
            "reason": reason,
            "canceler_type": canceler_type,
            "created_at": iso_us_z(now),
        }
        invitee.status = "canceled"
        invitee.cancellation = cancellation
        invitee.updated_at = now
        if rescheduled_to:
            invitee.rescheduled = True
            invitee.new_invitee = rescheduled_to
        if event.status == "active" and self._active_count(event) == 0:
            event.status = "canceled"
            event.cancellation = dict(cancellation)
        event.updated_at = now
        self._emit_invitee("invitee.canceled", invitee)

    # ================================================================= Python admin interface

    def book(
        self,
        event_type: str,
        start: datetime | str,
        email: str,
        *,
        name: str | None = None,
        timezone: str = "America/New_York",
        questions_and_answers: list[dict[str, Any]] | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """A person books on the event type's page (``scheduling_method: null``).

        ``event_type``: URI, uuid or slug. The slot must be open unless ``force``. Returns the
        new invitee (``{"uri", "event", ...}``).
        """
        with self._lock:
            et = self._type_by_ref(event_type)
            start_at = as_utc(start)
            if not force:
                try:
                    self._check_bookable(et, start_at)
                except ApiError as exc:
                    raise SimulatorError(f"slot {start_at.isoformat()} is not open for {et.uri}") from exc
            invitee = self._book(et, start_at, email, name, timezone, questions=questions_and_answers)
            return self._invitee_json(invitee)

    def cancel_invitee(
        self, invitee: str, *, reason: str = "", canceler_type: str = "invitee", canceled_by: str | None = None
    ) -> dict[str, Any]:
        """Cancel one invitee (the event is canceled too when no active invitee is left)."""
        with self._lock:
            inv = self._invitee_by_ref(invitee)
            self._cancel_invitee(inv, reason=reason, canceler_type=canceler_type, canceled_by=canceled_by)
            return self._invitee_json(inv)

    def cancel_event(
        self, event: str, *, reason: str = "", canceler_type: str = "host", canceled_by: str | None = None
    ) -> dict[str, Any]:
        """Cancel a scheduled event and all its active invitees (like the host in the UI / API)."""
        with self._lock:
            ev = self._event_by_ref(event)
            if ev.status == "canceled":
                raise SimulatorError(f"event {ev.uri} is already canceled")
            for inv_uuid in list(ev.invitees):
                inv = self._invitees[inv_uuid]
                if inv.status == "active":
                    self._cancel_invitee(inv, reason=reason, canceler_type=canceler_type, canceled_by=canceled_by)
            if ev.status != "canceled":  # an event without active invitees
                host = self._users[ev.host_uri]
                ev.status = "canceled"
                ev.cancellation = {
                    "canceled_by": canceled_by or host.name,
                    "reason": reason,
                    "canceler_type": canceler_type,
                    "created_at": iso_us_z(self.now()),
                }
                ev.updated_at = self.now()
            return self._event_json(ev)

    def reschedule(
        self, invitee: str, start: datetime | str, *, reason: str = "", force: bool = False
    ) -> dict[str, Any]:
        """The invitee reschedules: old invitee canceled (``rescheduled: true``, ``new_invitee``),
        new invitee on a new scheduled event (``old_invitee``). Returns the new invitee."""
        with self._lock:
            old = self._invitee_by_ref(invitee)
            if old.status != "active":
                raise SimulatorError(f"invitee {old.uri} is not active")
            old_event = self._events[old.event_uuid]
            et = self._type_by_ref(old_event.event_type_uri)
            start_at = as_utc(start)
            if not force:
                try:
                    self._check_bookable(et, start_at, exclude=old_event.uuid)
                except ApiError as exc:
                    raise SimulatorError(f"slot {start_at.isoformat()} is not open for {et.uri}") from exc
            new_uuid = self.ids.uuid()
            new_event_uuid = self.ids.uuid()
            new_uri = f"{API}/scheduled_events/{new_event_uuid}/invitees/{new_uuid}"
            self._cancel_invitee(
                old, reason=reason, canceler_type="invitee", canceled_by=old.name, rescheduled_to=new_uri
            )
            now = self.now()
            host = self._users[et.owner_uri]
            event = self._new_event(
                et, host, start_at, start_at + timedelta(minutes=et.duration), now, uuid=new_event_uuid
            )
            new = self._new_invitee(
                event,
                old.email,
                old.name,
                old.timezone,
                now,
                first_name=old.first_name,
                last_name=old.last_name,
                questions=old.questions_and_answers,
                uuid=new_uuid,
                tracking=old.tracking,
                text_reminder_number=old.text_reminder_number,
            )
            new.old_invitee = old.uri
            self._emit_invitee("invitee.created", new)
            return self._invitee_json(new)

    def mark_no_show(self, invitee: str) -> dict[str, Any]:
        """The host marks the invitee as a no-show (``no_show {uri, created_at}``)."""
        with self._lock:
            inv = self._invitee_by_ref(invitee)
            if inv.no_show:
                raise SimulatorError(f"invitee {inv.uri} is already marked as no-show")
            inv.no_show = self._no_show_record(inv, self.now())
            inv.updated_at = self.now()
            self._emit_invitee("invitee_no_show.created", inv)
            return self._invitee_json(inv)

    def unmark_no_show(self, invitee: str) -> dict[str, Any]:
        with self._lock:
            inv = self._invitee_by_ref(invitee)
            if not inv.no_show:
                raise SimulatorError(f"invitee {inv.uri} is not marked as no-show")
            self._no_shows.pop(_tail(inv.no_show["uri"]), None)
            inv.no_show = None
            inv.updated_at = self.now()
            self._emit_invitee("invitee_no_show.deleted", inv)
            return self._invitee_json(inv)

    def invitee(self, ref: str) -> dict[str, Any]:
        with self._lock:
            return self._invitee_json(self._invitee_by_ref(ref))

    def event(self, ref: str) -> dict[str, Any]:
        with self._lock:
            return self._event_json(self._event_by_ref(ref))

    def invitees_of(self, email: str) -> list[dict[str, Any]]:
        """All invitees (any status) with this e-mail, oldest first."""
        with self._lock:
            want = email.strip().lower()
            found = sorted(
                (i for i in self._invitees.values() if i.email.lower() == want), key=lambda i: (i.created_at, i.uuid)
            )
            return [self._invitee_json(i) for i in found]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "users": [
                    {
                        **self._user_json(u),
                        "event_types": [self._type_json(t) for t in self._types.values() if t.owner_uri == u.uri],
                        "scheduled_events": [
                            {
                                **self._event_json(e),
                                "invitees": [self._invitee_json(self._invitees[i]) for i in e.invitees],
                            }
                            for e in sorted(self._events.values(), key=lambda e: (e.start, e.uuid))
                            if e.host_uri == u.uri
                        ],
                    }
                    for u in self._users.values()
                ]
            }

    # ================================================================= webhook subscriptions

    def _default_delivery_settings(self) -> DeliverySettings:
        return DeliverySettings.calendly()

    def _new_webhook_sub(
        self,
        url: Any,
        events: Any,
        organization: Any,
        scope: Any,
        user: Any,
        signing_key: Any,
        creator: str | None,
    ) -> _WebhookSub:
        """Validate and store a subscription (CAL-SPEC create rules); raises the API's 400/409."""
        problems: list[tuple[str, str]] = []
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            problems.append(("url", "must be a valid http(s) URL"))
        if not isinstance(events, list) or not events:
            problems.append(("events", "must be a non-empty list"))
        elif any(e not in WEBHOOK_EVENTS for e in events):
            problems.append(("events", f"must be a subset of {', '.join(WEBHOOK_EVENTS)}"))
        elif scope != "organization" and any(e in _ORG_ONLY_EVENTS for e in events):
            problems.append(("events", "routing_form_submission.created requires the organization scope"))
        if not isinstance(organization, str) or not organization:
            problems.append(("organization", "is required"))
        if scope not in ("organization", "user"):
            problems.append(
                ("scope", "must be organization or user" + (" (group is not simulated)" if scope == "group" else ""))
            )
        if scope == "user" and not user:
            problems.append(("user", "is required when scope is user"))
        if signing_key is not None and (not isinstance(signing_key, str) or not 1 <= len(signing_key) <= 512):
            problems.append(("signing_key", "must be a string of 1 to 512 characters"))
        if problems:
            raise _invalid(*problems)
        org_users = [u for u in self._users.values() if u.org_uri == organization]
        if not org_users:
            raise _invalid(("organization", "must be a valid organization URI"))
        user_uri = None
        if scope == "user":
            target = self._users.get(str(user)) or self._users.get(f"{API}/users/{_tail(str(user))}")
            if target is None or target.org_uri != organization:
                raise _invalid(("user", "must be a valid user URI in the organization"))
            user_uri = target.uri
        if any(s.callback_url == url and s.organization == organization for s in self._webhook_subs.values()):
            raise ApiError(409, {"title": "Already Exists", "message": "Hook with this url already exists"})
        now = self.now()
        sub_uuid = self._webhook_ids.uuid()
        sub = _WebhookSub(
            uuid=sub_uuid,
            uri=f"{API}/webhook_subscriptions/{sub_uuid}",
            callback_url=str(url),
            events=list(dict.fromkeys(events)),
            scope=str(scope),
            organization=str(organization),
            user=user_uri,
            creator=creator,
            signing_key=signing_key or calendly_signing_key(self.id_seed, sub_uuid),
            created_at=now,
            updated_at=now,
        )
        self._webhook_subs[sub.uuid] = sub
        return sub

    def create_webhook_subscription(
        self,
        url: str,
        events: list[str] | tuple[str, ...] = INVITEE_WEBHOOK_EVENTS,
        *,
        user: str | None = None,
        organization: str | None = None,
        scope: str | None = None,
        signing_key: str | None = None,
    ) -> dict[str, Any]:
        """Subscribe ``url`` (e.g. ``http://127.0.0.1:PORT/webhooks/calendly/<workspace_id>``) to
        ``events`` (default: the four ``invitee*`` events), as the API would, without auth checks.

        ``user`` alone → ``scope=user`` for that user (organization = theirs); ``organization``
        alone → ``scope=organization``. ``signing_key``: the key to sign with (generated when
        absent). Returns the resource **with** ``signing_key`` — store it as the workspace secret
        ``calendly_webhook_signing_key``. Raises :class:`SimulatorError` (bad argument, URL taken).
        """
        with self._lock:
            user_obj = self._user(user) if user else None
            org = organization or (user_obj.org_uri if user_obj else None)
            if scope is None:
                scope = "user" if user_obj else "organization"
            creator = user_obj.uri if user_obj else None
            if creator is None:
                members = sorted(
                    (u for u in self._users.values() if u.org_uri == org), key=lambda u: (not u.is_admin, u.created_at)
                )
                creator = members[0].uri if members else None
            try:
                sub = self._new_webhook_sub(
                    url, list(events), org, scope, user_obj.uri if user_obj else None, signing_key, creator
                )
            except ApiError as exc:
                raise SimulatorError(f"cannot create webhook subscription: {exc.body}") from exc
            return self._webhook_sub_json(sub, with_key=True)

    def webhook_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription, oldest first, **with** its ``signing_key`` (admin view)."""
        with self._lock:
            subs = sorted(self._webhook_subs.values(), key=lambda s: (s.created_at, s.uuid))
            return [self._webhook_sub_json(s, with_key=True) for s in subs]

    def webhook_subscription(self, ref: str) -> dict[str, Any]:
        """One subscription (URI or uuid) with its ``signing_key``."""
        with self._lock:
            sub = self._webhook_subs.get(_tail(ref))
            if sub is None:
                raise SimulatorError(f"unknown webhook subscription {ref!r}")
            return self._webhook_sub_json(sub, with_key=True)

    def delete_webhook_subscription(self, ref: str) -> None:
        """Delete a subscription; its queued deliveries are given up (``subscription_deleted``)."""
        with self._lock:
            if self._webhook_subs.pop(_tail(ref), None) is None:
                raise SimulatorError(f"unknown webhook subscription {ref!r}")

    def _webhook_outgoing(self, event: ProviderEvent) -> list[Outgoing]:
        """One signed delivery per active subscription covering the event's host (docs/providers.md §2.6)."""
        host = self._users.get(event.account)
        if host is None or not self._webhook_subs:
            return []
        subs = sorted(self._webhook_subs.values(), key=lambda s: (s.created_at, s.uuid))
        out = []
        for sub in subs:
            if sub.state != "active" or event.name not in sub.events or sub.organization != host.org_uri:
                continue
            if sub.scope == "user" and sub.user != host.uri:
                continue
            envelope = {
                "event": event.name,
                "created_at": iso_us_z(event.at),
                "created_by": sub.creator,
                "payload": event.payload,
            }
            out.append(self._calendly_outgoing(sub, dumps(envelope), event.payload.get("uri")))
        return out

    def _calendly_outgoing(self, sub: _WebhookSub, body: bytes, resource: str | None) -> Outgoing:
        key, sub_uuid, clock = sub.signing_key, sub.uuid, self.webhooks

        def build() -> tuple[bytes, dict[str, str]]:
            # a fresh t per attempt (the receiver rejects t older than 180 s); same bytes every time
            return body, {"Calendly-Webhook-Signature": calendly_signature(key, body, int(clock.wall_clock()))}

        def check() -> str | None:
            with self._lock:
                current = self._webhook_subs.get(sub_uuid)
                if current is None:
                    return "subscription_deleted"
                return None if current.state == "active" else "subscription_disabled"

        def on_outcome(outcome: str) -> None:
            with self._lock:
                current = self._webhook_subs.get(sub_uuid)
                if current is None:
                    return
                now = self.now()
                if outcome == "failing" and current.retry_started_at is None:
                    current.retry_started_at = current.updated_at = now
                elif outcome == "delivered" and current.retry_started_at is not None:
                    current.retry_started_at, current.updated_at = None, now
                elif outcome == "gave_up:retry_budget_exhausted":
                    current.state, current.updated_at = "disabled", now
                    current.retry_started_at = current.retry_started_at or now

        return Outgoing(
            target=sub.uri, url=sub.callback_url, build=build, resource=resource, check=check, on_outcome=on_outcome
        )

    admin_actions = ADMIN_ACTIONS

    def _add_routes(self, app: FastAPI) -> None:
        add_api_routes(self, app)


def create_calendly_app(sim: CalendlySimulator) -> FastAPI:
    """The ASGI app of a :class:`CalendlySimulator` (provider API + ``/_admin``)."""
    return sim.create_app()
