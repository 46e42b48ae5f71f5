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

Modules: ``model`` (constants, state rows, error bodies), ``render`` (JSON shapes), ``auth`` (auth,
rate limits, error bodies: the gate hooks), ``api`` (the API v2 routes), ``admin`` (the ``/_admin``
table), ``simulator`` (:class:`CalendlySimulator`: state, seeding, bookings, no-shows, webhook
subscriptions).
"""

from appt_pipeline.sandbox.calendly.model import (
    API,
    DEFAULT_INVITEE_LIMITS,
    INVITEE_WEBHOOK_EVENTS,
    MAX_AVAILABLE_RANGE,
    PLANS,
    WEBHOOK_EVENTS,
)
from appt_pipeline.sandbox.calendly.simulator import CalendlySimulator, create_calendly_app

__all__ = [
    "API",
    "DEFAULT_INVITEE_LIMITS",
    "INVITEE_WEBHOOK_EVENTS",
    "MAX_AVAILABLE_RANGE",
    "PLANS",
    "WEBHOOK_EVENTS",
    "CalendlySimulator",
    "create_calendly_app",
]
