"""Async Calendly API v2 client (SPEC §6, §8, §9; docs/providers.md §2).

``Authorization: Bearer <token>``, no version header. Resources are identified by canonical URIs
(``https://api.calendly.com/...``); methods take those URIs (or bare UUIDs) and the transport routes
them — and pagination links — to the configured base URL (SPEC preamble). List calls follow
``pagination.next_page`` to the end (docs/original-system.md §14, item 17: the original read only the first page).
Rate limit: one sliding-window limiter per user, 500 requests / 60 s by default (docs/providers.md §2.5).

Usage::

    limiters = LimiterRegistry()
    async with CalendlyClient(base_url=url, token=tok, user_uri=user, limiter=limiters.get("calendly", user)) as c:
        events = await c.list_scheduled_events(invitee_email=email, min_start=lo, max_start=hi)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from appt_pipeline.providers.http import (
    CALENDLY_RATE_LIMIT,
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
    CALENDLY_CANONICAL_BASE,
    AnswerShapeError,
    CalendlyAvailableTime,
    CalendlyEvent,
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyUser,
    check_calendly_available_times,
    parse_calendly_event,
    parse_calendly_event_type,
    parse_calendly_invitee,
    parse_calendly_page,
    parse_calendly_user,
    split_range,
)

CALENDLY_BASE_URL = CALENDLY_CANONICAL_BASE
#: Longest ``start_time``…``end_time`` range of one available-times request (docs/providers.md §2.2).
AVAILABLE_TIMES_MAX_RANGE = timedelta(days=7)
#: ``start_time`` sent is at least this far ahead of now (Calendly answers 400 for a start in the past).
AVAILABLE_TIMES_MIN_LEAD = timedelta(seconds=30)
#: Page size for list calls (Calendly maximum, CAL-SPEC ``count`` 1–100).
PAGE_SIZE = 100
#: Safety bound on pages followed by one list call.
MAX_PAGES = 1000


def calendly_time(value: datetime) -> str:
    """Calendly's UTC time format for query and body parameters, e.g. ``2020-01-02T03:04:05.678123Z``."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _resource_path(uri_or_uuid: str, collection: str) -> str:
    """A canonical URI (or a path) as given, or ``/{collection}/{uuid}`` for a bare UUID."""
    text = (uri_or_uuid or "").strip()
    if not text:
        raise ProviderError(ErrorKind.REFUSED, f"calendly: empty {collection} reference", provider="calendly")
    if text.startswith(("http://", "https://", "/")):
        return text
    if "/" in text:
        raise ProviderError(ErrorKind.REFUSED, f"calendly: invalid {collection} reference", provider="calendly")
    return f"/{collection}/{quote(text, safe='')}"


class CalendlyClient(ProviderClient):
    """Calendly client for one user (the rate-limit account).

    Args:
        base_url: API root (default ``https://api.calendly.com``; the demo and tests pass a simulator's URL).
        token: personal access token or OAuth access token (never logged, never in exceptions).
        user_uri: the account key: the Calendly user URI whose budget the calls spend (may be ``""``
            until :meth:`get_current_user` tells it).
        organization_uri: default ``organization`` for :meth:`list_scheduled_events` (else taken from
            ``/users/me`` once).
        limiter: the user's shared :class:`RateBudget`; default a private 500 / 60 s one.
        http: a shared ``httpx.AsyncClient``; default one owned (closed by :meth:`aclose`).
        timeout_s: per-request timeout in seconds.
        stats: per-run :class:`CallStats` to add to.
        retry: :class:`RetryPolicy`.

    All methods raise :class:`~appt_pipeline.providers.http.ProviderError` on failure.
    """

    provider = "calendly"

    def __init__(
        self,
        *,
        base_url: str = CALENDLY_BASE_URL,
        token: str | Secret,
        user_uri: str = "",
        organization_uri: str | None = None,
        limiter: RateBudget | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 15.0,
        stats: CallStats | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.user_uri = user_uri
        self.organization_uri = organization_uri
        self._http = ProviderHttp(
            provider=self.provider,
            base_url=base_url,
            token=token,
            limiter=limiter
            or AccountLimiter(
                CALENDLY_RATE_LIMIT.max_requests, CALENDLY_RATE_LIMIT.period_s, name=f"calendly:{user_uri}"
            ),
            http=http,
            timeout_s=timeout_s,
            stats=stats,
            retry=retry,
            default_headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"CalendlyClient(user_uri={self.user_uri!r}, base_url={self._http.base_url!r})"

    def _bad(self, what: str) -> ProviderError:
        return ProviderError(ErrorKind.BAD_RESPONSE, f"calendly: {what}", provider=self.provider)

    async def _get(self, url_or_path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self._http.request("GET", url_or_path, params=params)

    async def _collect(self, path: str, params: Mapping[str, Any]) -> list[Any]:
        """Every ``collection`` item of a paginated list, following ``next_page`` (else ``page_token``)."""
        items: list[Any] = []
        url: str = path
        query: Mapping[str, Any] | None = params
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = parse_calendly_page(await self._get(url, query))
            if page is None:
                raise self._bad(f"list answer of {urlsplit(path).path} has no collection")
            items.extend(page.collection)
            if page.next_page:
                marker = page.next_page
                url, query = page.next_page, None
            elif page.next_page_token:
                marker = page.next_page_token
                url, query = path, {**params, "page_token": page.next_page_token}
            else:
                return items
            if marker in seen:
                raise self._bad("pagination repeats a page")
            seen.add(marker)
        raise self._bad(f"more than {MAX_PAGES} pages")

    # -- reads -----------------------------------------------------------------------------------

    async def get_current_user(self) -> CalendlyUser:
        """``GET /users/me`` → the user URI and current organization URI (CAL-SPEC). Fills ``user_uri`` and
        ``organization_uri`` when they were not configured."""
        user = parse_calendly_user(await self._get("/users/me"))
        if user is None:
            raise self._bad("/users/me answer has no user uri")
        self.user_uri = self.user_uri or user.uri
        self.organization_uri = self.organization_uri or user.current_organization
        return user

    async def list_scheduled_events(
        self,
        *,
        invitee_email: str | None,
        min_start: datetime,
        max_start: datetime,
        organization_uri: str | None = None,
        user_uri: str | None = None,
        status: str | None = None,
    ) -> list[CalendlyEvent]:
        """Every scheduled event (all pages) of the organization with start time in ``[min_start, max_start]``.

        ``GET /scheduled_events`` with ``organization`` (default: configured, else from ``/users/me``),
        optional ``user``, ``invitee_email`` (trimmed, lower-cased; sent only in the query),
        ``min_start_time``/``max_start_time`` (UTC), ``status``, ``sort=start_time:asc``,
        ``count=100`` (docs/providers.md §2.2–2.3; SPEC §6). Unparseable items are skipped.
        """
        organization = organization_uri or self.organization_uri
        if not organization and not user_uri:
            organization = (await self.get_current_user()).current_organization
        params: dict[str, Any] = {
            "organization": organization,
            "user": user_uri,
            "invitee_email": invitee_email.strip().lower() if invitee_email else None,
            "min_start_time": calendly_time(min_start),
            "max_start_time": calendly_time(max_start),
            "status": status,
            "sort": "start_time:asc",
            "count": PAGE_SIZE,
        }
        items = await self._collect("/scheduled_events", {k: v for k, v in params.items() if v is not None})
        return [e for e in (parse_calendly_event(i) for i in items) if e is not None]

    async def get_scheduled_event(self, event_uri: str) -> CalendlyEvent:
        """``GET /scheduled_events/{uuid}`` (a canonical URI or a UUID) → the event (``{resource: Event}``)."""
        event = parse_calendly_event(await self._get(_resource_path(event_uri, "scheduled_events")))
        if event is None:
            raise self._bad("scheduled event answer has no uri")
        return event

    async def list_event_invitees(
        self, event_uri: str, *, email: str | None = None, status: str | None = None
    ) -> list[CalendlyInvitee]:
        """Every invitee (all pages) of a scheduled event: ``GET /scheduled_events/{uuid}/invitees`` with
        ``count=100``, optional ``email``/``status`` filters (CAL-SPEC). Unparseable items are skipped;
        a missing ``event`` on an item is filled with ``event_uri``."""
        path = _resource_path(event_uri, "scheduled_events").rstrip("/") + "/invitees"
        params: dict[str, Any] = {"count": PAGE_SIZE, "email": email.strip().lower() if email else None,
                                  "status": status}
        items = await self._collect(path, {k: v for k, v in params.items() if v is not None})
        canonical = event_uri if event_uri.startswith(("http://", "https://")) else None
        return [i for i in (parse_calendly_invitee(x, event_uri=canonical) for x in items) if i is not None]

    async def get_invitee(self, invitee_uri: str) -> CalendlyInvitee:
        """``GET /scheduled_events/{event_uuid}/invitees/{invitee_uuid}`` (by canonical URI) → the invitee."""
        invitee = parse_calendly_invitee(await self._get(_resource_path(invitee_uri, "invitees")))
        if invitee is None:
            raise self._bad("invitee answer has no uri/status")
        return invitee

    async def get_event_type(self, event_type_uri: str) -> CalendlyEventType:
        """``GET /event_types/{uuid}`` (a canonical URI or a UUID) → the event type (CAL-SPEC ``EventType``)."""
        event_type = parse_calendly_event_type(await self._get(_resource_path(event_type_uri, "event_types")))
        if event_type is None:
            raise self._bad("event type answer has no uri")
        return event_type

    async def get_available_times(
        self, event_type_uri: str, start: datetime, end: datetime
    ) -> list[CalendlyAvailableTime]:
        """Open slots of an event type in ``[start, end)``: ``GET /event_type_available_times`` with
        ``event_type``, ``start_time``, ``end_time``; ranges over 7 days are split into ≤ 7-day requests
        (docs/providers.md §2.2; not paginated). Merged, sorted, de-duplicated; slots outside the range
        dropped. Calendly rejects a ``start_time`` in the past, so the range starts no earlier than
        :data:`AVAILABLE_TIMES_MIN_LEAD` from now (passing ``now`` is fine). Answers are checked strictly
        (:func:`~appt_pipeline.providers.normalize.check_calendly_available_times`, docs/rules.md §9).

        Raises:
            ProviderError: ``bad_response`` for a wrong shape, an unparseable ``start_time`` or an error
                body in a 200; ``not_found``, ``auth`` … as for every call.
        """
        start, end = max(as_utc(start), datetime.now(UTC) + AVAILABLE_TIMES_MIN_LEAD), as_utc(end)
        found: dict[datetime, CalendlyAvailableTime] = {}
        for lo, hi in split_range(start, end, AVAILABLE_TIMES_MAX_RANGE):
            body = await self._get(
                "/event_type_available_times",
                {"event_type": event_type_uri, "start_time": calendly_time(lo), "end_time": calendly_time(hi)},
            )
            try:
                checked = check_calendly_available_times(body)
            except AnswerShapeError as exc:
                raise self._bad(str(exc)) from None
            for slot in checked:
                if start <= slot.start_at < end:
                    found.setdefault(slot.start_at, slot)
        return [found[k] for k in sorted(found)]

    # -- writes ----------------------------------------------------------------------------------

    async def create_invitee(
        self,
        *,
        event_type_uri: str,
        start_at: datetime,
        email: str,
        timezone: str,
        name: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        questions_and_answers: list[Mapping[str, Any]] | None = None,
        location: Mapping[str, Any] | None = None,
    ) -> CalendlyInvitee:
        """Book: ``POST /invitees`` (Scheduling API, released 2025-10-15; docs/providers.md §2.2) → 201
        ``{resource: Invitee}``. Body: ``event_type``, ``start_time`` (UTC), ``invitee {email, timezone,
        name | first_name [+ last_name]}``, optional ``location`` and ``questions_and_answers``.

        Not retried on 5xx or read timeouts (a retry could double-book); 429 and connection failures
        (never sent) are retried. The e-mail and name are sent in the body only and never logged.

        Raises:
            ProviderError: ``refused`` (slot taken — ``already_filled`` —, validation), ``auth`` (plan or
                scope: 403), ``rate_limited``, ``server``, ``timeout`` (the booking may exist: reconcile).
        """
        if not (name or first_name):
            raise ProviderError(ErrorKind.REFUSED, "calendly: invitee name or first_name is required",
                                provider=self.provider)
        invitee: dict[str, Any] = {"email": email.strip(), "timezone": timezone}
        if name:
            invitee["name"] = name
        if first_name:
            invitee["first_name"] = first_name
        if last_name:
            invitee["last_name"] = last_name
        body: dict[str, Any] = {"event_type": event_type_uri, "start_time": calendly_time(start_at),
                                "invitee": invitee}
        if location:
            body["location"] = dict(location)
        if questions_and_answers:
            body["questions_and_answers"] = [dict(q) for q in questions_and_answers]
        created = parse_calendly_invitee(await self._http.request("POST", "/invitees", json=body))
        if created is None:
            raise self._bad("create invitee answer has no invitee uri/status")
        return created
