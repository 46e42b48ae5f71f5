"""GoHighLevel (LeadConnector API v2) simulator: the calendar/contact endpoints our clients call.

Facts come from docs/providers.md §1 (sources: the official OpenAPI files
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
is what generic HTTP clients, GHL's SDK users and the original CRM's client (docs/original-system.md §7.3)
already honour; a rejected request consumes no quota.

**Webhooks** (docs/providers.md §1.5): Marketplace app webhooks are configured in the app's
settings, not by API, so here by :meth:`GhlSimulator.set_webhooks` / ``PUT /_admin/webhooks
{url_template | urls, legacy_rsa, events}``. Each ``AppointmentCreate|Update|Delete`` of a location
with a URL is POSTed as the event body plus top-level ``webhookId`` (uuid, kept across retries) and
``timestamp`` (ISO-8601 UTC, the attempt's time), serialized once per attempt, with
``X-GHL-Signature`` (base64 Ed25519 over those bytes) and, when ``legacy_rsa``, ``x-wh-signature``
(base64 RSA-SHA256 PKCS#1 v1.5). Public keys: :meth:`GhlSimulator.webhook_public_keys` /
``GET /_admin/webhooks/public_keys``. Only a 429 answer is retried (6 times); see ``webhooks.py``.

Modules: ``model`` (constants, state rows, error bodies), ``render`` (JSON shapes), ``auth`` (auth,
``Version`` check, rate limits: the gate hooks), ``api`` (the LeadConnector routes), ``admin`` (the
``/_admin`` table), ``simulator`` (:class:`GhlSimulator`: state, seeding, slots, bookings, webhooks).
"""

from appt_pipeline.sandbox.ghl.model import MAX_FREE_SLOT_RANGE, SLOT_TAKEN_MESSAGE, STATUSES, VERSIONS, WEBHOOK_EVENTS
from appt_pipeline.sandbox.ghl.simulator import GhlSimulator, create_ghl_app

__all__ = [
    "MAX_FREE_SLOT_RANGE",
    "SLOT_TAKEN_MESSAGE",
    "STATUSES",
    "VERSIONS",
    "WEBHOOK_EVENTS",
    "GhlSimulator",
    "create_ghl_app",
]
