"""Calendly API v2 simulator: users, event types, scheduled events, invitees, booking, cancellation.

Facts come from docs/providers.md §2 (sources: Calendly's OpenAPI as vendored by
``speakeasy-sdks/calendly-python``, developer.calendly.com pages and release notes, Nango's
recorded real exchanges). Every id is a canonical ``https://api.calendly.com/...`` URI whatever
host the simulator listens on (SPEC: URIs are identities; clients route canonical URIs, including
``next_page`` links, to the simulator). Served paths:

- ``GET /users/me``, ``GET /users/{uuid}`` → ``{resource: User}`` (``uri``, ``current_organization``);
- ``GET /scheduled_events`` (``user`` and/or ``organization`` required) → ``{collection, pagination}``;
- ``GET /scheduled_events/{uuid}`` → ``{resource: Event}``;
- ``GET /scheduled_events/{uuid}/invitees`` → ``{collection: [Invitee], pagination}``;
- ``GET /scheduled_events/{e}/invitees/{i}`` → ``{resource: Invitee}``;
- ``POST /scheduled_events/{uuid}/cancellation`` → 201 ``{resource: {canceled_by, reason,
  canceler_type, created_at}}``;
- ``GET /event_types`` (paginated), ``GET /event_types/{uuid}`` → ``{resource: EventType}``;
- ``GET /event_type_available_times`` → ``{collection: [{status, invitees_remaining, start_time,
  scheduling_url}]}`` (≤ 7 days, not paginated);
- ``POST /invitees`` → 201 ``{resource: Invitee}`` (``scheduling_method: "instant_book"``);
- ``POST /invitee_no_shows``, ``GET``/``DELETE /invitee_no_shows/{uuid}``: mark / read / unmark;
- ``POST /webhook_subscriptions`` → 201 ``{resource: WebhookSubscription}``, ``GET /webhook_subscriptions``
  (``organization`` + ``scope`` required, ``user`` when ``scope=user``; paginated),
  ``GET``/``DELETE /webhook_subscriptions/{uuid}`` (see "Webhooks" below).

Pagination (CAL-SPEC ``Pagination``): keyset ``page_token`` (the token encodes the sort key of the
page edge, so concurrent inserts never shift pages), ``count`` 1–100 (default 20),
``pagination {count, next_page, previous_page, next_page_token, previous_page_token}`` with
``next_page`` repeating the request's filters; all null when there is nothing more.

Errors: ``{title, message, details?: [{parameter, message, code?}]}`` — 400 ``Invalid Argument``,
401 ``Unauthenticated`` / ``The access token is invalid``, 403 ``Permission Denied``, 404
``Resource Not Found``. Booking a slot that is taken → 400 with ``details[].code ==
"already_filled"`` (reported by a public client; unverified).

Rate limits (docs "rate limits"): per user, 500 requests/min on paid plans, 50/min on the free
plan (moving window, configurable); every authenticated response carries ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until room frees up) plus the
observed ``X-RateLimit-Tier``; 429 answers have ``X-RateLimit-Remaining: 0`` and no
``Retry-After`` (not documented — clients use ``X-RateLimit-Reset``). ``POST /invitees`` has its own
per-user limits in addition (paid non-Enterprise 10/min, 50/h, 100/day; Enterprise 500/min; trial
5/day; the free-plan numbers were not captured, the paid ones are used).

Reschedule (docs "see how webhook payloads change when invitees reschedule"): the old invitee is
canceled with ``rescheduled: true`` and ``new_invitee`` → the new invitee's URI on a **new**
scheduled event, whose invitee has ``old_invitee`` → the old URI.

Webhooks (docs/providers.md §2.6; CAL-SPEC ``WebhookSubscription``/``WebhookPayload``; fixture
``calendly.webhook_subscription_create.response.json``): ``POST /webhook_subscriptions {url, events[],
organization, scope: organization|user, user?, signing_key?}`` → 201 ``{resource: {uri, callback_url,
created_at, updated_at, retry_started_at, state, events, scope, organization, user, group, creator,
signing_key}}`` — ``signing_key`` (the one given, else a generated one) is a simulator extension
returned only here (real Calendly never echoes it); 409 ``Already Exists`` when the organization
already has a subscription with that URL; 403 for another organization, for ``scope=organization``
without owner/admin role, or for another user's ``scope=user`` hook without admin role. Every event
(``invitee.created``, ``invitee.canceled``, ``invitee_no_show.created|deleted``) goes to each
*active* subscription of the host's organization whose ``events`` include it (``scope=user``: only
the host's own), as ``{event, created_at, created_by (the subscription creator), payload}`` signed
``Calendly-Webhook-Signature: t=…,v1=…``; failures are retried with back-off until the retry budget
is spent, then the subscription becomes ``state: disabled`` (``retry_started_at`` set) — see
``webhooks.py``. Python: :meth:`CalendlySimulator.create_webhook_subscription`; admin:
``GET|POST /_admin/webhooks/subscriptions``, ``DELETE /_admin/webhooks/subscriptions/{uuid}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from appt_pipeline.domain.signatures import calendly_signature
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
    iso_us_z,
    keyset_page,
    overlaps,
    parse_iso,
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

API = "https://api.calendly.com"
PLANS = ("free", "trial", "standard", "teams", "enterprise")
MAX_AVAILABLE_RANGE = timedelta(days=7)

#: ``POST /invitees`` limits per plan: (requests, window seconds) — rate-limits docs page.
DEFAULT_INVITEE_LIMITS: dict[str, tuple[tuple[int, int], ...]] = {
    "trial": ((5, 86_400),),
    "free": ((10, 60), (50, 3_600), (100, 86_400)),
    "standard": ((10, 60), (50, 3_600), (100, 86_400)),
    "teams": ((10, 60), (50, 3_600), (100, 86_400)),
    "enterprise": ((500, 60),),
}

#: Subscribable event names (get-sample-webhook-data.md); only the ``invitee*`` ones are ever emitted here.
WEBHOOK_EVENTS = (
    "invitee.created",
    "invitee.canceled",
    "invitee_no_show.created",
    "invitee_no_show.deleted",
    "routing_form_submission.created",
    "event_type.created",
    "event_type.updated",
    "event_type.deleted",
)
INVITEE_WEBHOOK_EVENTS = WEBHOOK_EVENTS[:4]
_ORG_ONLY_EVENTS = frozenset({"routing_form_submission.created"})

_UUID_TAIL = re.compile(r"/([^/?#]+)/?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# ----------------------------------------------------------------------------- internal state


@dataclass
class _User:
    uuid: str
    uri: str
    token: str
    email: str
    name: str
    slug: str
    tz_name: str
    tz: ZoneInfo
    org_uri: str
    role: str
    plan: str
    hours: WorkingHours
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role in ("owner", "admin")


@dataclass
class _EventType:
    uuid: str
    uri: str
    owner_uri: str
    name: str
    slug: str
    duration: int
    interval: timedelta
    kind: str
    max_invitees: int
    active: bool
    location_kind: str
    custom_questions: list[dict[str, Any]]
    horizon: timedelta
    min_notice: timedelta
    position: int
    created_at: datetime
    updated_at: datetime


@dataclass
class _Event:
    uuid: str
    uri: str
    event_type_uri: str
    host_uri: str
    name: str
    start: datetime
    end: datetime
    status: str
    location: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    invitees: list[str] = field(default_factory=list)
    guests: list[dict[str, Any]] = field(default_factory=list)
    cancellation: dict[str, Any] | None = None


@dataclass
class _Invitee:
    uuid: str
    uri: str
    event_uuid: str
    email: str
    name: str
    first_name: str | None
    last_name: str | None
    status: str
    timezone: str
    created_at: datetime
    updated_at: datetime
    questions_and_answers: list[dict[str, Any]] = field(default_factory=list)
    tracking: dict[str, Any] = field(default_factory=dict)
    text_reminder_number: str | None = None
    rescheduled: bool = False
    old_invitee: str | None = None
    new_invitee: str | None = None
    cancellation: dict[str, Any] | None = None
    no_show: dict[str, Any] | None = None
    scheduling_method: str | None = None
    invitee_scheduled_by: str | None = None


@dataclass
class _WebhookSub:
    uuid: str
    uri: str
    callback_url: str
    events: list[str]
    scope: str
    organization: str
    user: str | None
    creator: str | None
    signing_key: str
    created_at: datetime
    updated_at: datetime
    state: str = "active"
    retry_started_at: datetime | None = None


def _tracking(data: dict[str, Any] | None = None) -> dict[str, Any]:
    keys = ("utm_campaign", "utm_source", "utm_medium", "utm_content", "utm_term", "salesforce_uuid")
    data = data or {}
    return {k: data.get(k) for k in keys}


# ----------------------------------------------------------------------------- error bodies


def _invalid(*details: tuple[str, str] | tuple[str, str, str]) -> ApiError:
    items = []
    for d in details:
        item = {"parameter": d[0], "message": d[1]}
        if len(d) > 2:
            item["code"] = d[2]  # type: ignore[misc]
        items.append(item)
    return ApiError(
        400, {"title": "Invalid Argument", "message": "The supplied parameters are invalid.", "details": items}
    )


def _not_found() -> ApiError:
    return ApiError(
        404, {"title": "Resource Not Found", "message": "The server could not find the requested resource."}
    )


def _denied(message: str = "You do not have permission to access this resource.") -> ApiError:
    return ApiError(403, {"title": "Permission Denied", "message": message})


def _tail(ref: str) -> str:
    """uuid of a canonical URI (or the ref itself when it is a bare uuid)."""
    match = _UUID_TAIL.search(ref.strip())
    return match.group(1) if match else ref.strip()


class CalendlySimulator(SimulatorBase):
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

    def available_times(
        self, event_type: str, start: datetime | str | None = None, end: datetime | str | None = None
    ) -> list[datetime]:
        """Open slot starts (UTC) of an event type; default window now … now + 7 days."""
        with self._lock:
            et = self._type_by_ref(event_type)
            lo = as_utc(start) if start else self.now()
            hi = as_utc(end) if end else lo + MAX_AVAILABLE_RANGE
            return [s for s, _ in self._available(et, lo, hi)]

    # ================================================================= JSON shapes

    def _user_json(self, u: _User) -> dict[str, Any]:
        return {
            "avatar_url": None,
            "created_at": iso_us_z(u.created_at),
            "current_organization": u.org_uri,
            "email": u.email,
            "locale": "en",
            "name": u.name,
            "resource_type": "User",
            "scheduling_url": f"https://calendly.com/{u.slug}",
            "slug": u.slug,
            "time_notation": "12h",
            "timezone": u.tz_name,
            "updated_at": iso_us_z(u.created_at),
            "uri": u.uri,
        }

    def _type_json(self, et: _EventType) -> dict[str, Any]:
        owner = self._users[et.owner_uri]
        return {
            "uri": et.uri,
            "name": et.name,
            "active": et.active,
            "booking_method": "instant",
            "slug": et.slug,
            "scheduling_url": f"https://calendly.com/{owner.slug}/{et.slug}",
            "duration": et.duration,
            "duration_options": None,
            "kind": et.kind,
            "pooling_type": None,
            "type": "StandardEventType",
            "kind_description": "Group" if et.kind == "group" else "One-on-One",
            "color": "#0069ff",
            "created_at": iso_us_z(et.created_at),
            "updated_at": iso_us_z(et.updated_at),
            "internal_note": None,
            "description_plain": None,
            "description_html": None,
            "profile": {"type": "User", "name": owner.name, "owner": owner.uri},
            "secret": False,
            "deleted_at": None,
            "admin_managed": False,
            "custom_questions": et.custom_questions,
            "is_paid": False,
            "locale": "en",
            "locations": [{"kind": et.location_kind}],
            "position": et.position,
        }

    def _event_json(self, e: _Event) -> dict[str, Any]:
        host = self._users[e.host_uri]
        et = self._types.get(_tail(e.event_type_uri))
        active = self._active_count(e)
        out: dict[str, Any] = {
            "uri": e.uri,
            "name": e.name,
            "meeting_notes_plain": None,
            "meeting_notes_html": None,
            "status": e.status,
            "booking_method": "instant",
            "start_time": iso_us_z(e.start),
            "end_time": iso_us_z(e.end),
            "event_type": e.event_type_uri,
            "location": dict(e.location),
            "invitees_counter": {"total": len(e.invitees), "active": active, "limit": et.max_invitees if et else 1},
            "created_at": iso_us_z(e.created_at),
            "updated_at": iso_us_z(e.updated_at),
            "event_memberships": [{"user": host.uri, "user_email": host.email, "user_name": host.name}],
            "event_guests": [dict(g) for g in e.guests],
            "calendar_event": {"kind": "google", "external_id": e.uuid.replace("-", "")[:26]},
        }
        if e.cancellation:
            out["cancellation"] = dict(e.cancellation)
        return out

    def _invitee_json(self, i: _Invitee) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": i.uri,
            "email": i.email,
            "first_name": i.first_name,
            "last_name": i.last_name,
            "name": i.name,
            "status": i.status,
            "questions_and_answers": [dict(q) for q in i.questions_and_answers],
            "timezone": i.timezone,
            "event": f"{API}/scheduled_events/{i.event_uuid}",
            "created_at": iso_us_z(i.created_at),
            "updated_at": iso_us_z(i.updated_at),
            "tracking": dict(i.tracking),
            "text_reminder_number": i.text_reminder_number,
            "rescheduled": i.rescheduled,
            "old_invitee": i.old_invitee,
            "new_invitee": i.new_invitee,
            "cancel_url": f"https://calendly.com/cancellations/{i.uuid}",
            "reschedule_url": f"https://calendly.com/reschedulings/{i.uuid}",
            "routing_form_submission": None,
            "payment": None,
            "no_show": dict(i.no_show) if i.no_show else None,
            "reconfirmation": None,
            "scheduling_method": i.scheduling_method,
            "invitee_scheduled_by": i.invitee_scheduled_by,
            "canceled": i.status == "canceled",
        }
        if i.cancellation:
            out["cancellation"] = dict(i.cancellation)
        return out

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

    def _webhook_sub_json(self, sub: _WebhookSub, *, with_key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": sub.uri,
            "callback_url": sub.callback_url,
            "created_at": iso_us_z(sub.created_at),
            "updated_at": iso_us_z(sub.updated_at),
            "retry_started_at": iso_us_z(sub.retry_started_at) if sub.retry_started_at else None,
            "state": sub.state,
            "events": list(sub.events),
            "scope": sub.scope,
            "organization": sub.organization,
            "user": sub.user,
            "group": None,
            "creator": sub.creator,
        }
        if with_key:
            out["signing_key"] = sub.signing_key
        return out

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

    # ================================================================= gate hooks

    def _authenticate(self, request: Request) -> tuple[str, Any] | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self._by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        return (user.uri, user) if user else None

    def _general_quota(self, user: _User) -> Quota:
        amount = self.free_rate_limit if user.plan == "free" else self.rate_limit
        return Quota(amount, self.rate_window_seconds)

    def _quotas(self, principal: Any, request: Request | None) -> dict[str, Quota]:
        quotas = {"general": self._general_quota(principal)}
        if request is not None and request.method == "POST" and request.url.path.rstrip("/") == "/invitees":
            for n, (amount, seconds) in enumerate(self.invitee_limits.get(principal.plan, ())):
                quotas[f"invitees_{n}"] = Quota(amount, seconds)
        return quotas

    def _rate_headers(self, principal: Any, states: dict[str, QuotaState], limited: bool) -> dict[str, str]:
        shown = states["general"]
        if limited:
            shown = max((s for s in states.values() if not s.allowed), key=lambda s: s.reset_in)
        return {
            "X-RateLimit-Limit": str(shown.quota.amount),
            "X-RateLimit-Remaining": "0" if limited else str(shown.remaining),
            "X-RateLimit-Reset": str(max(1, math.ceil(shown.reset_in))),
            "X-RateLimit-Tier": principal.plan,
        }

    def _burst_headers(self, principal: Any, reset_in: float) -> dict[str, str]:
        quota = self._general_quota(principal)
        return {
            "X-RateLimit-Limit": str(quota.amount),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(max(1, math.ceil(reset_in))),
            "X-RateLimit-Tier": principal.plan,
        }

    def _unauthenticated(self, request: Request) -> Response:
        return JSONResponse({"title": "Unauthenticated", "message": "The access token is invalid"}, status_code=401)

    def _rate_limited(self, request: Request, principal: Any, headers: dict[str, str], reset_in: float) -> Response:
        body = {
            "title": "Too Many Requests",
            "message": "You have exceeded the rate limit. Please try again after the time in X-RateLimit-Reset.",
        }
        return JSONResponse(body, status_code=429, headers=headers)

    def _server_error_body(self, request: Request) -> dict[str, Any]:
        return {
            "title": "Internal Server Error",
            "message": "The server encountered an unexpected condition that prevented it from fulfilling the request.",
        }

    def _not_found_body(self, request: Request, status: int) -> dict[str, Any]:
        if status == 405:
            return {"title": "Method Not Allowed", "message": "The method is not allowed for the requested URL."}
        return _not_found().body

    def _validation_body(self, request: Request, exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
        details = [{"parameter": str(e.get("loc", ["", ""])[-1]), "message": str(e.get("msg"))} for e in exc.errors()]
        return 400, {"title": "Invalid Argument", "message": "The supplied parameters are invalid.", "details": details}

    # ================================================================= HTTP API

    def _add_routes(self, app: FastAPI) -> None:
        sim = self

        def me(request: Request) -> _User:
            return request.state.principal

        def can_see(caller: _User, user_uri: str) -> bool:
            if caller.uri == user_uri:
                return True
            other = sim._users.get(user_uri)
            return bool(other and caller.is_admin and other.org_uri == caller.org_uri)

        def count_param(request: Request) -> int:
            raw = request.query_params.get("count", "20")
            try:
                count = int(raw)
            except ValueError:
                raise _invalid(("count", "must be an integer")) from None
            if not 1 <= count <= 100:
                raise _invalid(("count", "must be between 1 and 100"))
            return count

        def time_param(request: Request, name: str, required: bool = False) -> datetime | None:
            raw = request.query_params.get(name)
            if not raw:
                if required:
                    raise _invalid((name, "is required"))
                return None
            try:
                return as_utc(parse_iso(raw))
            except ValueError:
                raise _invalid((name, "must be a valid ISO 8601 date-time, e.g. 2020-01-02T03:04:05.678123Z")) from None

        def scope(request: Request) -> set[str]:
            """User URIs whose items a list request covers (``user`` and/or ``organization``)."""
            caller = me(request)
            user_uri, org_uri = request.query_params.get("user"), request.query_params.get("organization")
            if not user_uri and not org_uri:
                raise _invalid(
                    ("organization", "is required if user is not present"),
                    ("user", "is required if organization is not present"),
                )
            if org_uri and org_uri != caller.org_uri:
                raise _denied()
            if user_uri:
                target = sim._users.get(user_uri)
                if target is None:
                    raise _invalid(("user", "must be a valid user URI"))
                if not can_see(caller, user_uri) or (org_uri and target.org_uri != org_uri):
                    raise _denied()
                return {user_uri}
            if not caller.is_admin:
                raise _denied("This user is not authorized to perform this action")
            return {u.uri for u in sim._users.values() if u.org_uri == org_uri}

        def page_json(request: Request, page: Any, path: str, count: int) -> dict[str, Any]:
            params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page_token", "count")]
            params.insert(0, ("count", str(count)))

            def link(token: str | None) -> str | None:
                return f"{API}{path}?{urlencode([*params, ('page_token', token)])}" if token else None

            return {
                "count": len(page.items),
                "next_page": link(page.next_token),
                "previous_page": link(page.previous_token),
                "next_page_token": page.next_token,
                "previous_page_token": page.previous_token,
            }

        def paginate(request: Request, items: list[Any], key: Any, path: str, descending: bool) -> tuple[Any, int]:
            count = count_param(request)
            try:
                page = keyset_page(items, key, count, request.query_params.get("page_token"), descending)
            except ValueError:
                raise _invalid(("page_token", "is invalid")) from None
            return page, count

        def visible_event(request: Request, uuid: str) -> _Event:
            event = sim._events.get(uuid)
            if event is None:
                raise _not_found()
            if not can_see(me(request), event.host_uri):
                raise _denied()
            return event

        def visible_type(request: Request, uuid: str) -> _EventType:
            et = sim._types.get(uuid)
            if et is None:
                raise _not_found()
            if not can_see(me(request), et.owner_uri):
                raise _denied()
            return et

        async def json_body(request: Request) -> dict[str, Any]:
            try:
                data = await request.json()
            except ValueError:
                raise _invalid(("body", "must be a JSON object")) from None
            if not isinstance(data, dict):
                raise _invalid(("body", "must be a JSON object"))
            return data

        # ---- users

        @app.get("/users/me")
        async def users_me(request: Request) -> dict[str, Any]:
            """CAL-SPEC ``GET /users/me`` → ``{resource: User}``."""
            with sim._lock:
                return {"resource": sim._user_json(me(request))}

        @app.get("/users/{uuid}")
        async def get_user(uuid: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                user = sim._users.get(f"{API}/users/{uuid}")
                if user is None:
                    raise _not_found()
                if not (user.uri == me(request).uri or user.org_uri == me(request).org_uri):
                    raise _denied()
                return {"resource": sim._user_json(user)}

        # ---- scheduled events

        @app.get("/scheduled_events")
        async def list_events(request: Request) -> dict[str, Any]:
            """CAL-SPEC ``GET /scheduled_events``: scope, ``invitee_email``, ``status``, start window
            (``min_start_time`` inclusive, ``max_start_time`` exclusive), ``sort``, keyset paging."""
            q = request.query_params
            status = q.get("status")
            if status and status not in ("active", "canceled"):
                raise _invalid(("status", "must be one of active, canceled"))
            sort = q.get("sort", "start_time:asc")
            if sort not in ("start_time:asc", "start_time:desc"):
                raise _invalid(("sort", "must be start_time:asc or start_time:desc"))
            lo, hi = time_param(request, "min_start_time"), time_param(request, "max_start_time")
            email = (q.get("invitee_email") or "").strip().lower()
            with sim._lock:
                hosts = scope(request)
                items = [
                    e
                    for e in sim._events.values()
                    if e.host_uri in hosts
                    and (not status or e.status == status)
                    and (lo is None or e.start >= lo)
                    and (hi is None or e.start < hi)
                    and (not email or any(sim._invitees[i].email.lower() == email for i in e.invitees))
                ]
                page, count = paginate(
                    request, items, lambda e: [iso_us_z(e.start), e.uuid], "/scheduled_events", sort.endswith("desc")
                )
                return {
                    "collection": [sim._event_json(e) for e in page.items],
                    "pagination": page_json(request, page, "/scheduled_events", count),
                }

        @app.get("/scheduled_events/{uuid}")
        async def get_event(uuid: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                return {"resource": sim._event_json(visible_event(request, uuid))}

        @app.get("/scheduled_events/{uuid}/invitees")
        async def list_invitees(uuid: str, request: Request) -> dict[str, Any]:
            """CAL-SPEC ``GET /scheduled_events/{uuid}/invitees``: ``status``, ``email``,
            ``sort`` (``created_at:asc`` default), keyset paging."""
            q = request.query_params
            status = q.get("status")
            if status and status not in ("active", "canceled"):
                raise _invalid(("status", "must be one of active, canceled"))
            sort = q.get("sort", "created_at:asc")
            if sort not in ("created_at:asc", "created_at:desc"):
                raise _invalid(("sort", "must be created_at:asc or created_at:desc"))
            email = (q.get("email") or "").strip().lower()
            with sim._lock:
                event = visible_event(request, uuid)
                items = [
                    sim._invitees[i]
                    for i in event.invitees
                    if (not status or sim._invitees[i].status == status)
                    and (not email or sim._invitees[i].email.lower() == email)
                ]
                path = f"/scheduled_events/{uuid}/invitees"
                page, count = paginate(
                    request, items, lambda i: [iso_us_z(i.created_at), i.uuid], path, sort.endswith("desc")
                )
                return {
                    "collection": [sim._invitee_json(i) for i in page.items],
                    "pagination": page_json(request, page, path, count),
                }

        @app.get("/scheduled_events/{event_uuid}/invitees/{invitee_uuid}")
        async def get_invitee(event_uuid: str, invitee_uuid: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                event = visible_event(request, event_uuid)
                if invitee_uuid not in event.invitees:
                    raise _not_found()
                return {"resource": sim._invitee_json(sim._invitees[invitee_uuid])}

        @app.post("/scheduled_events/{uuid}/cancellation", status_code=201)
        async def cancel_event(uuid: str, request: Request) -> dict[str, Any]:
            """CAL-SPEC cancellation: 201 ``{resource: Cancellation}``; 403 when already canceled or past."""
            raw = await request.body()
            body = await json_body(request) if raw else {}
            with sim._lock:
                event = visible_event(request, uuid)
                if event.status == "canceled":
                    raise _denied("Event is already canceled")
                if event.end <= sim.now():
                    raise _denied("Event in the past")
                result = sim.cancel_event(
                    event.uri, reason=str(body.get("reason") or ""), canceler_type="host", canceled_by=me(request).name
                )
                return {"resource": result["cancellation"]}

        # ---- event types

        @app.get("/event_types")
        async def list_types(request: Request) -> dict[str, Any]:
            """CAL-SPEC ``GET /event_types``: ``user``/``organization``, ``active``, ``sort`` by name."""
            q = request.query_params
            sort = q.get("sort", "name:asc")
            if sort not in ("name:asc", "name:desc"):
                raise _invalid(("sort", "must be name:asc or name:desc"))
            active = q.get("active")
            if active not in (None, "true", "false"):
                raise _invalid(("active", "must be true or false"))
            with sim._lock:
                owners = scope(request)
                items = [
                    t
                    for t in sim._types.values()
                    if t.owner_uri in owners and (active is None or t.active == (active == "true"))
                ]
                page, count = paginate(
                    request, items, lambda t: [t.name.lower(), t.uuid], "/event_types", sort.endswith("desc")
                )
                return {
                    "collection": [sim._type_json(t) for t in page.items],
                    "pagination": page_json(request, page, "/event_types", count),
                }

        @app.get("/event_types/{uuid}")
        async def get_type(uuid: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                return {"resource": sim._type_json(visible_type(request, uuid))}

        @app.get("/event_type_available_times")
        async def available_times(request: Request) -> dict[str, Any]:
            """Open slots of an event type in ``[start_time, end_time)``: range ≤ 7 days, start in
            the future, not paginated, booked slots absent (CAL-SPEC)."""
            et_ref = request.query_params.get("event_type")
            if not et_ref:
                raise _invalid(("event_type", "is required"))
            start = time_param(request, "start_time", required=True)
            end = time_param(request, "end_time", required=True)
            assert start is not None and end is not None
            if start < sim.now():
                raise _invalid(("start_time", "must be in the future"))
            if end <= start:
                raise _invalid(("end_time", "must be after start_time"))
            if end - start > MAX_AVAILABLE_RANGE:
                raise _invalid(("end_time", "date range can be no greater than 1 week (7 days)"))
            with sim._lock:
                et = visible_type(request, _tail(et_ref))
                owner = sim._users[et.owner_uri]
                collection = [
                    {
                        "status": "available",
                        "invitees_remaining": left,
                        "start_time": iso_us_z(slot),
                        "scheduling_url": (
                            f"https://calendly.com/{owner.slug}/{et.slug}/{slot.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                            f"?month={slot.strftime('%Y-%m')}&date={slot.strftime('%Y-%m-%d')}"
                        ),
                    }
                    for slot, left in sim._available(et, start, end)
                ]
                return {"collection": collection}

        # ---- booking

        @app.post("/invitees", status_code=201)
        async def create_invitee(request: Request) -> dict[str, Any]:
            """Create Event Invitee (release note 2025-10-15): 201 ``{resource: Invitee}``."""
            body = await json_body(request)
            problems: list[tuple[str, str]] = []
            if not body.get("event_type"):
                problems.append(("event_type", "is required"))
            if not body.get("start_time"):
                problems.append(("start_time", "is required"))
            inv = body.get("invitee")
            if not isinstance(inv, dict):
                problems.append(("invitee", "is required"))
                inv = {}
            else:
                if not inv.get("email"):
                    problems.append(("invitee.email", "is required"))
                elif not _EMAIL.match(str(inv["email"])):
                    problems.append(("invitee.email", "is invalid"))
                if not inv.get("timezone"):
                    problems.append(("invitee.timezone", "is required"))
                else:
                    try:
                        ZoneInfo(str(inv["timezone"]))
                    except (ZoneInfoNotFoundError, ValueError):
                        problems.append(("invitee.timezone", "is invalid"))
                if not (inv.get("name") or inv.get("first_name")):
                    problems.append(("invitee.name", "name or first_name is required"))
            guests = body.get("event_guests") or []
            if not isinstance(guests, list) or len(guests) > 10:
                problems.append(("event_guests", "must be a list of at most 10 e-mail addresses"))
            if problems:
                raise _invalid(*problems)
            try:
                start = as_utc(parse_iso(str(body["start_time"])))
            except ValueError:
                raise _invalid(("start_time", "must be a valid ISO 8601 date-time")) from None
            with sim._lock:
                et = visible_type(request, _tail(str(body["event_type"])))
                if not et.active:
                    raise _invalid(("event_type", "is not active"))
                sim._check_bookable(et, start)
                invitee = sim._book(
                    et,
                    start,
                    str(inv["email"]),
                    inv.get("name"),
                    str(inv["timezone"]),
                    first_name=inv.get("first_name"),
                    last_name=inv.get("last_name"),
                    questions=body.get("questions_and_answers") or [],
                    tracking=body.get("tracking"),
                    text_reminder_number=inv.get("text_reminder_number"),
                    guests=[str(g) for g in guests],
                    location=body.get("location"),
                    scheduling_method="instant_book",
                    scheduled_by=me(request).uri,
                )
                return {"resource": sim._invitee_json(invitee)}

        # ---- no-shows

        @app.post("/invitee_no_shows", status_code=201)
        async def create_no_show(request: Request) -> dict[str, Any]:
            body = await json_body(request)
            ref = body.get("invitee")
            if not ref:
                raise _invalid(("invitee", "is required"))
            with sim._lock:
                inv = sim._invitees.get(_tail(str(ref)))
                if inv is None:
                    raise _not_found()
                visible_event(request, inv.event_uuid)
                if inv.no_show:
                    raise ApiError(409, {"title": "Already Exists", "message": "The invitee is already a no-show."})
                record = sim.mark_no_show(inv.uri)["no_show"]
                return {"resource": {**record, "invitee": inv.uri}}

        @app.get("/invitee_no_shows/{uuid}")
        async def get_no_show(uuid: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                inv_uuid = sim._no_shows.get(uuid)
                if inv_uuid is None:
                    raise _not_found()
                inv = sim._invitees[inv_uuid]
                visible_event(request, inv.event_uuid)
                return {"resource": {**(inv.no_show or {}), "invitee": inv.uri}}

        @app.delete("/invitee_no_shows/{uuid}", status_code=204)
        async def delete_no_show(uuid: str, request: Request) -> Response:
            with sim._lock:
                inv_uuid = sim._no_shows.get(uuid)
                if inv_uuid is None:
                    raise _not_found()
                inv = sim._invitees[inv_uuid]
                visible_event(request, inv.event_uuid)
                sim.unmark_no_show(inv.uri)
            return Response(status_code=204)

        # ---- webhook subscriptions

        def visible_sub(request: Request, uuid: str) -> _WebhookSub:
            sub = sim._webhook_subs.get(uuid)
            caller = me(request)
            if sub is None or sub.organization != caller.org_uri:
                raise _not_found()
            if sub.scope == "organization" and not caller.is_admin:
                raise _denied()
            if sub.scope == "user" and not can_see(caller, sub.user or ""):
                raise _denied()
            return sub

        @app.post("/webhook_subscriptions", status_code=201)
        async def create_webhook(request: Request) -> dict[str, Any]:
            """CAL-SPEC create: 201 ``{resource: WebhookSubscription}`` (+ ``signing_key``, simulator
            extension); 400 invalid, 403 not allowed, 409 ``Hook with this url already exists``."""
            body = await json_body(request)
            caller = me(request)
            with sim._lock:
                org, scope, user = body.get("organization"), body.get("scope"), body.get("user")
                if isinstance(org, str) and org and org != caller.org_uri:
                    raise _denied()
                if scope == "organization" and not caller.is_admin:
                    raise _denied("This user is not authorized to perform this action")
                if scope == "user" and isinstance(user, str) and user in sim._users and not can_see(caller, user):
                    raise _denied()
                sub = sim._new_webhook_sub(
                    body.get("url"), body.get("events"), org, scope, user, body.get("signing_key"), caller.uri
                )
                return {"resource": sim._webhook_sub_json(sub, with_key=True)}

        @app.get("/webhook_subscriptions")
        async def list_webhooks(request: Request) -> dict[str, Any]:
            """CAL-SPEC list: ``organization`` and ``scope`` required, ``user`` when ``scope=user``;
            ``sort`` ``created_at:asc`` (default) / ``:desc``; keyset paging."""
            q = request.query_params
            org, scope, user = q.get("organization"), q.get("scope"), q.get("user")
            problems: list[tuple[str, str]] = []
            if not org:
                problems.append(("organization", "is required"))
            if scope not in ("organization", "user", "group"):
                problems.append(("scope", "must be one of organization, user, group"))
            if scope == "user" and not user:
                problems.append(("user", "is required when scope is user"))
            sort = q.get("sort", "created_at:asc")
            if sort not in ("created_at:asc", "created_at:desc"):
                problems.append(("sort", "must be created_at:asc or created_at:desc"))
            if problems:
                raise _invalid(*problems)
            caller = me(request)
            with sim._lock:
                if org != caller.org_uri:
                    raise _denied()
                if scope == "organization" and not caller.is_admin:
                    raise _denied("This user is not authorized to perform this action")
                if scope == "user" and not can_see(caller, str(user)):
                    raise _denied()
                items = [
                    s
                    for s in sim._webhook_subs.values()
                    if s.organization == org and s.scope == scope and (scope != "user" or s.user == user)
                ]
                path = "/webhook_subscriptions"
                page, count = paginate(
                    request, items, lambda s: [iso_us_z(s.created_at), s.uuid], path, sort.endswith("desc")
                )
                return {
                    "collection": [sim._webhook_sub_json(s) for s in page.items],
                    "pagination": page_json(request, page, path, count),
                }

        @app.get("/webhook_subscriptions/{uuid}")
        async def get_webhook(uuid: str, request: Request) -> dict[str, Any]:
            with sim._lock:
                return {"resource": sim._webhook_sub_json(visible_sub(request, uuid))}

        @app.delete("/webhook_subscriptions/{uuid}", status_code=204)
        async def delete_webhook(uuid: str, request: Request) -> Response:
            with sim._lock:
                visible_sub(request, uuid)
                sim.delete_webhook_subscription(uuid)
            return Response(status_code=204)

    # ================================================================= admin HTTP

    def _add_admin_routes(self, app: FastAPI) -> None:
        sim = self

        async def body_of(request: Request) -> dict[str, Any]:
            raw = await request.body()
            data = await request.json() if raw else {}
            if not isinstance(data, dict):
                raise SimulatorError("body must be a JSON object")
            return data

        def need(b: dict[str, Any], *names: str) -> None:
            missing = [n for n in names if not b.get(n)]
            if missing:
                raise SimulatorError(f"missing {', '.join(missing)}")

        @app.post("/_admin/book")
        async def admin_book(request: Request) -> dict[str, Any]:
            """``{event_type, start_time, email [, name, timezone, force]}`` → the new invitee."""
            b = await body_of(request)
            need(b, "event_type", "start_time", "email")
            return sim.book(
                b["event_type"],
                b["start_time"],
                b["email"],
                name=b.get("name"),
                timezone=b.get("timezone") or "America/New_York",
                force=bool(b.get("force")),
            )

        @app.post("/_admin/invitees/cancel")
        async def admin_cancel_invitee(request: Request) -> dict[str, Any]:
            """``{invitee [, reason, canceler_type, canceled_by]}``."""
            b = await body_of(request)
            need(b, "invitee")
            return sim.cancel_invitee(
                b["invitee"],
                reason=b.get("reason") or "",
                canceler_type=b.get("canceler_type") or "invitee",
                canceled_by=b.get("canceled_by"),
            )

        @app.post("/_admin/invitees/reschedule")
        async def admin_reschedule(request: Request) -> dict[str, Any]:
            """``{invitee, start_time [, reason, force]}`` → the new invitee."""
            b = await body_of(request)
            need(b, "invitee", "start_time")
            return sim.reschedule(
                b["invitee"], b["start_time"], reason=b.get("reason") or "", force=bool(b.get("force"))
            )

        @app.post("/_admin/invitees/no_show")
        async def admin_no_show(request: Request) -> dict[str, Any]:
            b = await body_of(request)
            need(b, "invitee")
            return sim.mark_no_show(b["invitee"])

        @app.post("/_admin/invitees/no_show/delete")
        async def admin_no_show_delete(request: Request) -> dict[str, Any]:
            b = await body_of(request)
            need(b, "invitee")
            return sim.unmark_no_show(b["invitee"])

        @app.post("/_admin/events/cancel")
        async def admin_cancel_event(request: Request) -> dict[str, Any]:
            """``{event [, reason, canceler_type, canceled_by]}``."""
            b = await body_of(request)
            need(b, "event")
            return sim.cancel_event(
                b["event"],
                reason=b.get("reason") or "",
                canceler_type=b.get("canceler_type") or "host",
                canceled_by=b.get("canceled_by"),
            )

        @app.get("/_admin/invitees")
        async def admin_invitees(email: str) -> dict[str, Any]:
            return {"invitees": sim.invitees_of(email)}

        @app.post("/_admin/users")
        async def admin_add_user(request: Request) -> dict[str, Any]:
            return {"uri": sim.add_user(await body_of(request))}

        @app.get("/_admin/webhooks/subscriptions")
        async def admin_webhook_subscriptions() -> dict[str, Any]:
            """Every subscription with its ``signing_key`` (the workspace secret ``calendly_webhook_signing_key``)."""
            return {"subscriptions": sim.webhook_subscriptions()}

        @app.post("/_admin/webhooks/subscriptions")
        async def admin_create_webhook_subscription(request: Request) -> dict[str, Any]:
            """``{url [, events, user, organization, scope, signing_key]}`` → the resource with ``signing_key``."""
            b = await body_of(request)
            need(b, "url")
            return sim.create_webhook_subscription(
                b["url"],
                b.get("events") or INVITEE_WEBHOOK_EVENTS,
                user=b.get("user"),
                organization=b.get("organization"),
                scope=b.get("scope"),
                signing_key=b.get("signing_key"),
            )

        @app.delete("/_admin/webhooks/subscriptions/{uuid}")
        async def admin_delete_webhook_subscription(uuid: str) -> dict[str, Any]:
            sim.delete_webhook_subscription(uuid)
            return {"ok": True}

        @app.get("/_admin/available_times")
        async def admin_available(event_type: str, days: int = 7) -> dict[str, Any]:
            now = sim.now()
            slots = sim.available_times(event_type, now, now + timedelta(days=days))
            return {"slots": [iso_us_z(s) for s in slots]}


def create_calendly_app(sim: CalendlySimulator) -> FastAPI:
    """The ASGI app of a :class:`CalendlySimulator` (provider API + ``/_admin``)."""
    return sim.create_app()


__all__ = [
    "API",
    "DEFAULT_INVITEE_LIMITS",
    "INVITEE_WEBHOOK_EVENTS",
    "WEBHOOK_EVENTS",
    "CalendlySimulator",
    "create_calendly_app",
]
