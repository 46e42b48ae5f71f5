"""Async GoHighLevel (LeadConnector API v2) client (SPEC §6, §8, §9; docs/providers.md §1).

Every call: ``Authorization: Bearer <token>`` and the endpoint's ``Version`` header (calendars
``2021-04-15``, contacts ``2021-07-28``; GHL-SPEC-CAL / GHL-SPEC-CON), through the shared
:class:`~appt_pipeline.providers.http.ProviderHttp` policy (one sliding-window limiter per location,
100 requests / 10 s by default; 429/5xx/timeout handling; masked errors). Answers are returned as
typed objects from :mod:`appt_pipeline.providers.normalize`.

Usage::

    limiters = LimiterRegistry()
    async with GhlClient(base_url=url, token=tok, location_id=loc, limiter=limiters.get("ghl", loc)) as ghl:
        listed = await ghl.get_contact_appointments(contact_id)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from appt_pipeline.providers.http import (
    GHL_RATE_LIMIT,
    AccountLimiter,
    CallStats,
    ErrorKind,
    ProviderClient,
    ProviderError,
    ProviderHttp,
    RateBudget,
    RetryPolicy,
    Secret,
    as_utc,
)
from appt_pipeline.providers.normalize import (
    AnswerShapeError,
    GhlAppointment,
    GhlAppointmentList,
    check_ghl_free_slots,
    parse_ghl_appointment,
    parse_ghl_appointment_list,
    parse_ghl_contact_id,
    split_range,
)

GHL_BASE_URL = "https://services.leadconnectorhq.com"
#: ``Version`` header values (docs/providers.md §1.1).
VERSION_CALENDARS = "2021-04-15"
VERSION_CONTACTS = "2021-07-28"
#: Longest ``startDate``…``endDate`` range of one free-slots request (docs/providers.md §1.2).
FREE_SLOTS_MAX_RANGE = timedelta(days=31)


def _segment(value: str, what: str) -> str:
    """A path segment for an id; rejects blanks and ids with slashes before any request is made."""
    text = (value or "").strip()
    if not text or "/" in text:
        raise ProviderError(ErrorKind.REFUSED, f"ghl: invalid {what}", provider="ghl")
    return quote(text, safe="")


def _epoch_ms(value: datetime) -> int:
    return int(as_utc(value).timestamp() * 1000)


class GhlClient(ProviderClient):
    """GoHighLevel client for one location (sub-account).

    Args:
        base_url: API root (default the real host; the demo and tests pass a simulator's URL).
        token: private-integration or OAuth location token (never logged, never in exceptions).
        location_id: the account key: GHL location id (rate limits are per location).
        limiter: the location's shared :class:`RateBudget`; default a private 100 / 10 s one.
        http: a shared ``httpx.AsyncClient``; default one owned (closed by :meth:`aclose`).
        timeout_s: per-request timeout in seconds (the original used 15 s).
        stats: per-run :class:`CallStats` to add to.
        retry: :class:`RetryPolicy`.

    All methods raise :class:`~appt_pipeline.providers.http.ProviderError` on failure.
    """

    provider = "ghl"

    def __init__(
        self,
        *,
        base_url: str = GHL_BASE_URL,
        token: str | Secret,
        location_id: str,
        limiter: RateBudget | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 15.0,
        stats: CallStats | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.location_id = location_id
        self._http = ProviderHttp(
            provider=self.provider,
            base_url=base_url,
            token=token,
            limiter=limiter
            or AccountLimiter(GHL_RATE_LIMIT.max_requests, GHL_RATE_LIMIT.period_s, name=f"ghl:{location_id}"),
            http=http,
            timeout_s=timeout_s,
            stats=stats,
            retry=retry,
            default_headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"GhlClient(location_id={self.location_id!r}, base_url={self._http.base_url!r})"

    async def _get(self, path: str, version: str, params: dict[str, Any] | None = None) -> Any:
        return await self._http.request("GET", path, params=params, headers={"Version": version})

    # -- reads -----------------------------------------------------------------------------------

    async def get_contact_appointments(self, contact_id: str) -> GhlAppointmentList:
        """All appointments of a contact: ``GET /contacts/{contactId}/appointments`` (Version 2021-07-28).

        GHL returns ``{events: [...]}`` with no window and no pagination (GHL-SPEC-CON). Invalid items
        are dropped and counted in ``dropped`` (docs/original-system.md §7.2). An unknown contact gives
        ``not_found``.
        """
        body = await self._get(f"/contacts/{_segment(contact_id, 'contact id')}/appointments", VERSION_CONTACTS)
        if not isinstance(body, dict):
            raise ProviderError(ErrorKind.BAD_RESPONSE, "ghl: contact appointments answer is not an object",
                                provider=self.provider)
        return parse_ghl_appointment_list(body, location_id=self.location_id)

    async def get_appointment(self, appointment_id: str) -> GhlAppointment:
        """One appointment: ``GET /calendars/events/appointments/{eventId}`` (Version 2021-04-15).

        Handles the observed ``{appointment: …, traceId}`` and the specified ``{event: …}`` shapes; a
        deleted appointment comes back with ``deleted=True`` (GET still answers 200;
        docs/providers.md §1.2). Raises ``not_found`` for 404 and ``bad_response`` when the body has no
        valid appointment.
        """
        body = await self._get(
            f"/calendars/events/appointments/{_segment(appointment_id, 'appointment id')}", VERSION_CALENDARS
        )
        appt = parse_ghl_appointment(body, location_id=self.location_id)
        if appt is None:
            raise ProviderError(ErrorKind.BAD_RESPONSE, "ghl: appointment answer is missing required fields",
                                provider=self.provider)
        return appt

    async def find_contact_id_by_email(self, email: str) -> str | None:
        """The contact id for an e-mail in this location, or ``None``: ``GET /contacts/search/duplicate``
        with ``locationId`` and ``email`` (Version 2021-07-28; GHL-SPEC-CON). The e-mail is trimmed and
        lower-cased; it is sent only in the query and never appears in errors or logs. Never creates a
        contact. A 404 answer also means "no contact".
        """
        normalised = (email or "").strip().lower()
        if not normalised:
            return None
        try:
            body = await self._get(
                "/contacts/search/duplicate", VERSION_CONTACTS, {"locationId": self.location_id, "email": normalised}
            )
        except ProviderError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return None
            raise
        return parse_ghl_contact_id(body)

    async def get_free_slots(
        self,
        calendar_id: str,
        start: datetime,
        end: datetime,
        *,
        timezone: str = "UTC",
        user_id: str | None = None,
    ) -> list[datetime]:
        """Free slot starts of a calendar in ``[start, end)`` as sorted UTC datetimes.

        ``GET /calendars/{calendarId}/free-slots`` (Version 2021-04-15) with ``startDate``/``endDate``
        in epoch milliseconds; ranges longer than 31 days are split into ≤ 31-day requests
        (docs/providers.md §1.2) and the answers merged (duplicates removed, slots outside the range
        dropped). Answers are checked strictly (:func:`~appt_pipeline.providers.normalize.check_ghl_free_slots`):
        stored availability is never built from a partial or garbled answer (docs/rules.md §9).

        Raises:
            ProviderError: ``bad_response`` for a wrong shape, an unparseable slot time or an error body
                in a 200; ``not_found``, ``auth``, ``server`` … as for every call.
        """
        start, end = as_utc(start), as_utc(end)
        path = f"/calendars/{_segment(calendar_id, 'calendar id')}/free-slots"
        found: set[datetime] = set()
        for lo, hi in split_range(start, end, FREE_SLOTS_MAX_RANGE):
            params = {"startDate": _epoch_ms(lo), "endDate": _epoch_ms(hi), "timezone": timezone, "userId": user_id}
            body = await self._get(path, VERSION_CALENDARS, params)
            try:
                found.update(check_ghl_free_slots(body))
            except AnswerShapeError as exc:
                raise ProviderError(ErrorKind.BAD_RESPONSE, f"ghl: {exc}", provider=self.provider,
                                    status_code=200, method="GET", path=path) from None
        return sorted(t for t in found if start <= t < end)

    # -- writes ----------------------------------------------------------------------------------

    async def create_appointment(
        self,
        *,
        calendar_id: str,
        contact_id: str,
        start_at: datetime,
        end_at: datetime,
        title: str | None = None,
        appointment_status: str = "confirmed",
        assigned_user_id: str | None = None,
        description: str | None = None,
        ignore_free_slot_validation: bool | None = None,
        to_notify: bool | None = None,
    ) -> GhlAppointment:
        """Book: ``POST /calendars/events/appointments`` (Version 2021-04-15; GHL-SPEC-CAL
        ``AppointmentCreateSchema``). Times are sent as ISO-8601 UTC with offset.

        Not retried on 5xx or read timeouts (not idempotent: a retry could double-book); 429 and
        connection failures (request never sent) are retried. The answer (a flat
        ``AppointmentSchemaResponse``) is completed with the request's own fields when it omits them,
        so a booking that happened is never reported as failed for a missing field.

        Raises:
            ProviderError: ``refused`` (slot taken, validation), ``auth``, ``server``, ``timeout`` (the
                booking may or may not exist: reconcile before retrying), …
        """
        body: dict[str, Any] = {
            "calendarId": calendar_id,
            "locationId": self.location_id,
            "contactId": contact_id,
            "startTime": as_utc(start_at).isoformat(),
            "endTime": as_utc(end_at).isoformat(),
            "appointmentStatus": appointment_status,
        }
        optional = {
            "title": title,
            "assignedUserId": assigned_user_id,
            "description": description,
            "ignoreFreeSlotValidation": ignore_free_slot_validation,
            "toNotify": to_notify,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        answer = await self._http.request(
            "POST", "/calendars/events/appointments", json=body, headers={"Version": VERSION_CALENDARS}
        )
        created = answer
        if isinstance(answer, dict):
            inner = answer.get("appointment") or answer.get("event") or answer
            if isinstance(inner, dict):
                created = {**body, **{k: v for k, v in inner.items() if v not in (None, "")}}
        appt = parse_ghl_appointment(created, location_id=self.location_id)
        if appt is None:
            raise ProviderError(ErrorKind.BAD_RESPONSE, "ghl: create appointment answer has no appointment id",
                                provider=self.provider)
        return appt
