"""Booking (SPEC §8): book a slot for a lead through the workspace's provider, exactly once per idempotency key.

:func:`book` is the one entry point (the API route ``POST …/bookings`` and ``appt-pipeline book`` call it):

1. **The key.** Requests are worked one at a time per (workspace, ``Idempotency-Key``): a PostgreSQL session
   advisory lock (``store.booking_requests.try_lock_lead``, polled without blocking a thread) is held from the
   claim to the answer, so of 20 concurrent requests with one key one works and 19 wait, then read its answer.
   The key's row is claimed with ``INSERT … ON CONFLICT DO NOTHING`` and read ``FOR UPDATE``. A key whose row
   holds another request's fingerprint is refused ``idempotency_key_reused`` (the row keeps the first answer);
   a row that is ``booked`` or ``refused`` is answered as it is (``replay``), without any provider call.
2. **Refusals decided here** (nothing sent): ``already_booked`` (an upcoming CONFIRMED appointment),
   ``auto_book_disabled`` (AUTO_BOOK while the workspace's ``auto_book_meetings`` or the lead's
   ``auto_book_meetings_enabled`` is off), ``slot_unavailable`` (the slot is not among the calendar's stored
   free slots, or they are stale — after one refresh of that calendar's availability).
3. **The calendar** (the original's rule, ``domain.calendars.booking_calendar``): DIRECT_BOOK uses the
   direct-book calendar / event type when set, else the default; DEFAULT the default.
4. **The provider call.** GHL ``POST /calendars/events/appointments`` (contact = ``leads.ghl_contact_id``,
   resolved by e-mail and persisted when missing; end = start + ``meeting_duration_minutes``); Calendly
   ``POST /invitees`` (event type, start, the lead's e-mail, the invitee's time zone and name — the name only
   goes to Calendly). ``provider_sent_at`` is committed *before* the POST, so even a crash mid-call leaves a
   trace. The answer:

   * success → an observation with the request's source (AUTO_BOOK / MANUAL) and the attribution of the
     calendar used goes through the one write path (SPEC §4) **in the same transaction** that marks the request
     ``booked`` with the new row's id;
   * the provider refused (4xx) → ``refused`` / ``provider_refused`` with its message, e-mails and phones masked;
   * the provider surely did not act (connection never made, 429, 401/403, 503) → the request stays
     ``pending``: nothing is half-written and a retry with the same key finishes it;
   * it may have acted (timeout after the POST, other 5xx, a broken answer) → ``unknown``.

5. **Unknown** is resolved by one reconciliation of that lead (``pipelines.reconciliation.check_lead``, the code
   of the scheduled runs), never by sending again: the next request with the key (or the same call, never)
   asks the provider for the lead's bookings, writes them through §4, and the booking at the slot on that
   calendar becomes the request's answer (``booked``, with the request's source); when the provider has none,
   the request ends ``refused`` / ``not_booked`` (book again with a new key). A failed reconciliation leaves it
   ``unknown``.

Bad input raises :class:`~appt_pipeline.domain.booking.BookingInputError` before anything is stored or sent
(unknown workspace or lead, a slot that is not ISO-8601 with an offset or lies in the past, a lead without a
provider contact or e-mail, a workspace without calendar or provider credentials).
"""

import asyncio
import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import sqlalchemy as sa
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from appt_pipeline.domain.booking import (
    BOOKING_SOURCES,
    BookingInputError,
    BookingRequest,
    BookingState,
    Refusal,
    check_idempotency_key,
    normalise_name,
    parse_slot,
    request_fingerprint,
)
from appt_pipeline.domain.calendars import CalendarRef, booking_calendar
from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.redaction import mask_pii
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import AvailabilitySource, Provider, Source, Status, UnknownStatusError
from appt_pipeline.pipelines.accounts import ProviderAccount, WorkspaceNotConfigured, load_provider_account
from appt_pipeline.pipelines.availability import refresh_workspace_availability
from appt_pipeline.pipelines.clients import ClientFactory
from appt_pipeline.pipelines.reconciliation import check_lead
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import ErrorKind, ProviderError
from appt_pipeline.providers.normalize import calendly_observation, ghl_observation
from appt_pipeline.settings import SECRET_KEY_ENV
from appt_pipeline.store.availability import StoredSlots, stored_free_slots
from appt_pipeline.store.booking_requests import (
    BookingContext,
    BookingRow,
    booking_context,
    claim_request,
    purge_expired,
    try_lock_lead,
    unlock_lead,
    update_request,
)
from appt_pipeline.store.reconcile import Outcome, load_lead, record_outcomes, set_ghl_contact_ids
from appt_pipeline.store.workspaces import SecretKeyError
from appt_pipeline.store.write_path import ConcurrentKeyInsert, apply_observations

log = logging.getLogger(__name__)

#: How long a request waits for another request with the same key to finish (seconds).
DEFAULT_LOCK_WAIT_S = 120.0
#: Poll interval of that wait (seconds).
_LOCK_POLL_S = 0.02
#: Longest provider message kept with a ``provider_refused`` answer (characters).
MAX_MESSAGE_CHARS = 300
#: Calendly needs an invitee name; without one in the request the original's fallback is sent.
DEFAULT_INVITEE_NAME = "Lead"


@dataclass(frozen=True)
class BookingResult:
    """The answer to a booking request (SPEC §8).

    Attributes:
        state: ``booked``, ``refused``, ``unknown`` (the provider may have booked; ask again with the same key),
            or ``pending`` (the provider was unavailable and surely did not book; retry with the same key).
        idempotency_key: the request's key.
        replay: the answer was decided by an earlier request with this key (no provider call was made now).
        reason: refusal reason (:class:`~appt_pipeline.domain.booking.Refusal`), or why it is pending / unknown
            (``provider_unavailable``, ``provider_timeout``, ``provider_server``, …).
        message: the provider's refusal message, e-mails and phones masked (``provider_refused`` only).
        appointment_id: the ``appointments`` row of a ``booked`` answer.
    """

    state: BookingState
    idempotency_key: str
    replay: bool = False
    reason: str | None = None
    message: str | None = None
    appointment_id: UUID | None = None

    @classmethod
    def of(cls, row: BookingRow, *, replay: bool) -> "BookingResult":
        return cls(row.state, row.idempotency_key, replay, row.reason, row.message, row.appointment_id)


class BookingBusy(RuntimeError):
    """Another booking of the same lead was still being worked after the wait (``lock_wait_s``)."""


async def book(
    engine: sa.Engine,
    factory: ClientFactory,
    workspace_id: str,
    lead_id: str,
    slot_start: str | datetime,
    *,
    availability_source: AvailabilitySource | str = AvailabilitySource.DEFAULT,
    source: Source | str = Source.AUTO_BOOK,
    idempotency_key: str,
    invitee_name: str | None = None,
    invitee_timezone: str | None = None,
    now: datetime | None = None,
    secret_key: str | None = None,
    account: ProviderAccount | None = None,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
) -> BookingResult:
    """Book ``slot_start`` for the lead through the workspace's provider, once per ``idempotency_key`` (SPEC §8;
    the steps are in the module doc).

    Args:
        engine: the app database.
        factory: the provider clients (shared ``httpx.AsyncClient``, rate limiters, timeout).
        workspace_id, lead_id: the lead to book.
        slot_start: ISO-8601 date-time with an offset (``2030-03-05T15:00:00Z``) or an aware datetime.
        availability_source: DEFAULT or DIRECT_BOOK (which calendar, SPEC §8).
        source: AUTO_BOOK or MANUAL (the new row's origin; AUTO_BOOK obeys the auto-book switches).
        idempotency_key: 1…255 printable characters, unique per workspace for 30 days.
        invitee_name: sent to Calendly as the invitee's name (default ``"Lead"``); never stored.
        invitee_timezone: IANA zone for Calendly (default the lead's, else the workspace's, else UTC).
        now: the clock (UTC; default the current time): "upcoming", "in the past", staleness, the write's time.
        secret_key: ``APPT_SECRET_KEY`` decrypting the provider token (default the environment).
        account: the workspace's provider account when the caller already has it (tests, the demo).
        lock_wait_s: longest wait for a concurrent booking of the same lead (seconds).

    Returns:
        :class:`BookingResult`.

    Raises:
        BookingInputError: bad input (nothing stored, nothing sent).
        BookingBusy: a concurrent booking of the lead did not finish within ``lock_wait_s``.
        sqlalchemy.exc.OperationalError: the database is unavailable (nothing half-written).
    """
    key = check_idempotency_key(idempotency_key)
    slot = parse_slot(slot_start)
    try:
        availability = AvailabilitySource(availability_source)
    except ValueError:
        raise BookingInputError("invalid_availability_source", "availability_source must be DEFAULT or DIRECT_BOOK") \
            from None
    try:
        origin = Source(source)
    except ValueError:
        origin = None
    if origin not in BOOKING_SOURCES:
        raise BookingInputError("invalid_source", "source must be AUTO_BOOK or MANUAL")
    assert origin is not None
    if invitee_timezone is not None:
        _zone(invitee_timezone)
    request = BookingRequest(workspace_id, lead_id, slot, availability, origin, normalise_name(invitee_name),
                             invitee_timezone)
    now = now or utc_now()
    lock = await _acquire(engine, workspace_id, lead_id, lock_wait_s)
    try:
        return await _Booking(engine, factory, request, key, now, secret_key, account).run()
    finally:
        await asyncio.to_thread(_release, lock, workspace_id, lead_id)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BookingInputError("invalid_timezone", "invitee_timezone is not an IANA time zone") from None


# ------------------------------------------------------------------------------------------------ the key lock


def _try_lock(engine: sa.Engine, workspace_id: str, lead_id: str) -> sa.Connection | None:
    conn = engine.connect()
    try:
        taken = try_lock_lead(conn, workspace_id, lead_id)
        conn.commit()
    except BaseException:
        conn.close()
        raise
    if not taken:
        conn.close()
        return None
    return conn


def _release(conn: sa.Connection, workspace_id: str, lead_id: str) -> None:
    try:
        conn.rollback()
        unlock_lead(conn, workspace_id, lead_id)
        conn.commit()
    finally:
        conn.close()  # a broken session ends, and with it the lock


async def _acquire(engine: sa.Engine, workspace_id: str, lead_id: str, wait_s: float) -> sa.Connection:
    """The connection holding the lead's booking lock. Polls ``pg_try_advisory_lock`` (a waiting request holds
    neither a thread nor a pooled connection)."""
    deadline = time.monotonic() + wait_s
    while True:
        conn = await asyncio.to_thread(_try_lock, engine, workspace_id, lead_id)
        if conn is not None:
            return conn
        if time.monotonic() >= deadline:
            raise BookingBusy(f"another booking of this lead is still being worked after {wait_s:g}s")
        await asyncio.sleep(_LOCK_POLL_S)


# ------------------------------------------------------------------------------------------------ one booking


def _is_write_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrentKeyInsert):
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)


_write_retry = retry(retry=retry_if_exception(_is_write_retryable), stop=stop_after_attempt(8),
                     wait=wait_random_exponential(multiplier=0.05, max=2), reraise=True)


@dataclass
class _Claim:
    row: BookingRow
    context: BookingContext | None = None
    calendar: CalendarRef | None = None
    final: bool = False  # answer with ``row`` as it is
    replay: bool = False
    reused: bool = False


def _not_sent(exc: ProviderError) -> bool:
    """The provider surely did not act on the request: never sent (connect errors are ``retryable`` for a
    POST), rate-limited, refused for credentials, or unavailable (503)."""
    return exc.retryable or exc.kind in (ErrorKind.RATE_LIMITED, ErrorKind.AUTH) or exc.status_code == 503


def _masked(exc: ProviderError) -> str:
    return mask_pii(str(exc))[:MAX_MESSAGE_CHARS]


class _Booking:
    """The steps of one :func:`book` call, under the lead's booking lock."""

    def __init__(self, engine: sa.Engine, factory: ClientFactory, request: BookingRequest, key: str, now: datetime,
                 secret_key: str | None, account: ProviderAccount | None) -> None:
        self.engine, self.factory, self.request, self.key, self.now = engine, factory, request, key, now
        self.secret_key, self._account = secret_key, account
        self.fingerprint = request_fingerprint(request)
        self.ws = request.workspace_id

    # -- database steps (run in a thread) ------------------------------------------------------------------------

    def _claim(self) -> _Claim:
        """Claim the key (or find its row) and decide what this request does, in one transaction: bad input
        raises and rolls the claim back (nothing stored)."""
        r = self.request
        with self.engine.begin() as conn:
            context = booking_context(conn, self.ws, r.lead_id, self.now)
            if context is None:
                raise BookingInputError("unknown_workspace", f"workspace {self.ws!r} does not exist")
            if not context.lead_exists:
                raise BookingInputError("unknown_lead", f"lead {r.lead_id!r} does not exist in workspace {self.ws!r}")
            purge_expired(conn, self.ws, self.now)
            # INSERT … ON CONFLICT DO NOTHING waits for a concurrent claim of the key (another lead's request) to
            # commit, then reads that row FOR UPDATE: whoever inserted owns the key
            row, inserted = claim_request(conn, workspace_id=self.ws, key=self.key, request_hash=self.fingerprint,
                                          lead_id=r.lead_id, slot_start=r.slot_start, source=r.source,
                                          availability_source=r.availability_source, now=self.now)
            if not inserted:
                if row.request_hash != self.fingerprint:
                    return _Claim(row, reused=True)
                if row.state in (BookingState.BOOKED, BookingState.REFUSED):
                    return _Claim(row, final=True, replay=True)
                if row.state is BookingState.UNKNOWN or row.provider_sent_at is not None:
                    return _Claim(row, context, self._calendar(context.workspace, row))
            calendar = self._validate(context)  # a fresh claim, or a pending one worked again
            ids = {"provider": calendar.provider,
                   "ghl_calendar_id": calendar.calendar_key if calendar.provider is Provider.GHL else None,
                   "calendly_event_type_uri": (calendar.calendar_key if calendar.provider is Provider.CALENDLY
                                               else None)}
            refusal = None
            if context.upcoming_confirmed:
                refusal = Refusal.ALREADY_BOOKED
            elif r.source is Source.AUTO_BOOK and not (context.workspace.get("auto_book_meetings")
                                                       and context.lead_auto_book):
                refusal = Refusal.AUTO_BOOK_DISABLED
            if refusal is not None:
                row = update_request(conn, self.ws, self.key, self.now, state=BookingState.REFUSED,
                                     reason=refusal.value, **ids)
                return _Claim(row, final=True)
            row = update_request(conn, self.ws, self.key, self.now, **ids)
            return _Claim(row, context, calendar)

    def _validate(self, context: BookingContext) -> CalendarRef:
        """Bad input of a request about to be worked (raises :class:`BookingInputError`); its calendar."""
        r = self.request
        if r.slot_start <= self.now:
            raise BookingInputError("slot_in_past", "slot_start is not in the future")
        calendar = booking_calendar(context.workspace, r.availability_source)
        if calendar is None:
            raise BookingInputError("calendar_not_configured",
                                    f"workspace {self.ws!r} has no {r.availability_source.value} calendar configured")
        if calendar.provider is Provider.GHL and not (context.ghl_contact_id or context.email):
            raise BookingInputError("lead_without_contact", "the lead has neither a GHL contact id nor an e-mail")
        if calendar.provider is Provider.CALENDLY and not context.email:
            raise BookingInputError("lead_without_email", "Calendly booking needs the lead's e-mail")
        return calendar

    def _calendar(self, workspace: dict[str, Any], row: BookingRow) -> CalendarRef | None:
        calendar = booking_calendar(workspace, row.availability_source)
        if row.provider is None or row.calendar_key is None:
            return calendar
        source = calendar.availability_source if calendar is not None and calendar.calendar_key == row.calendar_key \
            else row.availability_source
        return CalendarRef(row.provider, row.calendar_key, source)

    def _update(self, **values: Any) -> BookingRow:
        with self.engine.begin() as conn:
            return update_request(conn, self.ws, self.key, self.now, **values)

    # -- the steps -----------------------------------------------------------------------------------------------

    async def run(self) -> BookingResult:
        claim = await asyncio.to_thread(self._claim)
        if claim.reused:
            return BookingResult(BookingState.REFUSED, self.key, False, Refusal.IDEMPOTENCY_KEY_REUSED.value)
        if claim.final:
            return BookingResult.of(claim.row, replay=claim.replay)
        assert claim.context is not None and claim.calendar is not None
        account = await asyncio.to_thread(self._load_account)
        client = self.factory.client(account)
        if claim.row.state is BookingState.UNKNOWN or claim.row.provider_sent_at is not None:
            return await self._resolve_unknown(client, account, claim.row, claim.calendar)
        try:
            free = await self._slot_is_free(claim.calendar)
            if free is None:
                row = await asyncio.to_thread(self._update, reason="provider_unavailable")
                return BookingResult.of(row, replay=False)
            if not free:
                row = await asyncio.to_thread(self._update, state=BookingState.REFUSED,
                                              reason=Refusal.SLOT_UNAVAILABLE.value)
                return BookingResult.of(row, replay=False)
            contact_id = claim.context.ghl_contact_id
            resolved = None
            if isinstance(client, GhlClient) and not contact_id:
                contact_id = resolved = await client.find_contact_id_by_email(claim.context.email or "")
                if not contact_id:
                    row = await asyncio.to_thread(
                        self._update, state=BookingState.REFUSED, reason=Refusal.PROVIDER_REFUSED.value,
                        message="ghl: no contact with the lead's e-mail in this location")
                    return BookingResult.of(row, replay=False)
        except ProviderError as exc:  # a GET before the POST: nothing was booked
            log.warning("workspace %s lead %s booking: provider %s before the POST: %s", self.ws,
                        self.request.lead_id, exc.kind, exc.message)
            row = await asyncio.to_thread(self._update, reason="provider_unavailable")
            return BookingResult.of(row, replay=False)
        await asyncio.to_thread(self._update, provider_sent_at=self.now, provider_attempts_inc=True,
                                reason=None)
        try:
            observation = await self._post(client, claim.context, claim.calendar, contact_id)
        except ProviderError as exc:
            return await asyncio.to_thread(self._after_failed_post, exc)
        except UnknownStatusError:  # it booked, but said so in words outside SPEC §2: reconcile, never guess
            row = await asyncio.to_thread(self._update, state=BookingState.UNKNOWN, reason="provider_unknown_status")
            return BookingResult.of(row, replay=False)
        row = await asyncio.to_thread(self._record_booked, observation, resolved)
        return BookingResult.of(row, replay=False)

    def _load_account(self) -> ProviderAccount:
        if self._account is not None:
            return self._account
        try:
            return load_provider_account(self.engine, self.ws, self.secret_key or os.environ.get(SECRET_KEY_ENV))
        except WorkspaceNotConfigured as exc:
            raise BookingInputError("provider_not_configured", str(exc)) from None
        except SecretKeyError:
            raise BookingInputError("provider_not_configured", f"workspace {self.ws!r}: the provider token cannot "
                                                               "be decrypted with APPT_SECRET_KEY") from None

    async def _slot_is_free(self, calendar: CalendarRef) -> bool | None:
        """Whether the slot is a fresh stored free slot of ``calendar``, after one refresh of that calendar when
        it is not (or the slots are stale); ``None`` when the refresh failed (the provider is unavailable)."""
        def stored() -> StoredSlots:
            with self.engine.connect() as conn:
                return stored_free_slots(conn, self.ws, calendar, now=self.now)

        slots = await asyncio.to_thread(stored)
        if not slots.stale and slots.offers(self.request.slot_start):
            return True
        report = await refresh_workspace_availability(self.engine, self.factory, self.ws, now=self.now,
                                                      account=await asyncio.to_thread(self._load_account),
                                                      only=calendar)
        refreshed = report.result_for(calendar)
        if refreshed is None or not refreshed.ok:
            return None
        slots = await asyncio.to_thread(stored)
        return not slots.stale and slots.offers(self.request.slot_start)

    async def _post(self, client: GhlClient | CalendlyClient, context: BookingContext, calendar: CalendarRef,
                    contact_id: str | None) -> Observation:
        r, ws = self.request, context.workspace
        minutes = int(ws.get("meeting_duration_minutes") or 30)
        end = r.slot_start + timedelta(minutes=minutes)
        if isinstance(client, GhlClient):
            assert contact_id is not None
            created = await client.create_appointment(calendar_id=calendar.calendar_key, contact_id=contact_id,
                                                      start_at=r.slot_start, end_at=end)
            obs = ghl_observation(created, workspace_id=self.ws, lead_id=r.lead_id, source=r.source,
                                  timezone=ws.get("timezone"))
            return replace(obs, ghl_calendar_id=calendar.calendar_key)
        zone = r.invitee_timezone or _first_zone(context.lead_timezone, ws.get("timezone"))
        invitee = await client.create_invitee(event_type_uri=calendar.calendar_key, start_at=r.slot_start,
                                              email=context.email or "", timezone=zone,
                                              name=r.invitee_name or DEFAULT_INVITEE_NAME)
        obs = calendly_observation(invitee, None, workspace_id=self.ws, lead_id=r.lead_id, source=r.source)
        return replace(obs, calendly_event_type_uri=calendar.calendar_key, start_at=r.slot_start, end_at=end,
                       status=Status.CONFIRMED if obs.status is Status.CONFIRMED else obs.status)

    def _after_failed_post(self, exc: ProviderError) -> BookingResult:
        log.warning("workspace %s lead %s booking: provider %s on the POST: %s", self.ws, self.request.lead_id,
                    exc.kind, exc.message)
        if exc.kind in (ErrorKind.REFUSED, ErrorKind.NOT_FOUND):
            row = self._update(state=BookingState.REFUSED, reason=Refusal.PROVIDER_REFUSED.value,
                               message=_masked(exc), provider_sent_at=None)
        elif _not_sent(exc):
            row = self._update(reason="provider_unavailable", provider_sent_at=None)
        else:
            row = self._update(state=BookingState.UNKNOWN, reason=f"provider_{exc.kind.value}")
        return BookingResult.of(row, replay=False)

    @_write_retry
    def _record_booked(self, observation: Observation, contact_id: str | None) -> BookingRow:
        """The provider's answer through the one write path and the request ``booked``, in one transaction."""
        with self.engine.begin() as conn:
            result = apply_observations(conn, [observation], now=self.now)[0]
            if result.error_kind is not None or result.appointment_id is None:
                raise RuntimeError(f"the booked appointment could not be written: {result.error_kind}")
            if contact_id:
                set_ghl_contact_ids(conn, {self.request.lead_id: contact_id})
            return update_request(conn, self.ws, self.key, self.now, state=BookingState.BOOKED, reason=None,
                                  appointment_id=result.appointment_id,
                                  ghl_appointment_id=observation.ghl_appointment_id,
                                  calendly_invitee_uri=observation.calendly_invitee_uri,
                                  calendly_scheduled_event_uri=observation.calendly_scheduled_event_uri)

    # -- unknown → one reconciliation of the lead --------------------------------------------------------------

    async def _resolve_unknown(self, client: GhlClient | CalendlyClient, account: ProviderAccount, row: BookingRow,
                               calendar: CalendarRef) -> BookingResult:
        def lead() -> Any:
            with self.engine.connect() as conn:
                return load_lead(conn, self.ws, row.lead_id)

        due = await asyncio.to_thread(lead)
        if due is None:  # the lead is gone (its requests go with it): nothing to resolve
            return BookingResult.of(row, replay=True)
        try:
            evidence = await check_lead(client, account, due, now=self.now)
        except (ProviderError, UnknownStatusError) as exc:
            log.warning("workspace %s lead %s booking: reconciliation of the lead failed (%s)", self.ws,
                        row.lead_id, type(exc).__name__)
            return BookingResult.of(row, replay=True)
        return await asyncio.to_thread(self._record_resolution, row, calendar, evidence)

    @_write_retry
    def _record_resolution(self, row: BookingRow, calendar: CalendarRef, evidence: Any) -> BookingResult:
        observations: list[Observation] = list(evidence.observations)
        match = next((i for i, o in enumerate(observations) if _is_the_booking(o, row, calendar)), None)
        if match is not None:
            observations[match] = replace(observations[match], source=row.source,
                                          ghl_calendar_id=observations[match].ghl_calendar_id
                                          or (calendar.calendar_key if calendar.provider is Provider.GHL else None),
                                          calendly_event_type_uri=observations[match].calendly_event_type_uri
                                          or (calendar.calendar_key if calendar.provider is Provider.CALENDLY
                                              else None))
        with self.engine.begin() as conn:
            results = apply_observations(conn, observations, now=self.now) if observations else []
            if evidence.contact_id:
                set_ghl_contact_ids(conn, {row.lead_id: evidence.contact_id})
            changed = any(w.error_kind is None and (w.is_new or w.status_changed) for w in results)
            record_outcomes(conn, [(row.lead_id, Outcome.CHANGED if changed else evidence.outcome)], self.now)
            if match is not None and results[match].appointment_id is not None:
                found = observations[match]
                done = update_request(conn, self.ws, self.key, self.now, state=BookingState.BOOKED, reason=None,
                                      appointment_id=results[match].appointment_id,
                                      ghl_appointment_id=found.ghl_appointment_id,
                                      calendly_invitee_uri=found.calendly_invitee_uri,
                                      calendly_scheduled_event_uri=found.calendly_scheduled_event_uri)
            else:
                done = update_request(conn, self.ws, self.key, self.now, state=BookingState.REFUSED,
                                      reason=Refusal.NOT_BOOKED.value, provider_sent_at=None)
        return BookingResult.of(done, replay=True)


def _is_the_booking(obs: Observation, row: BookingRow, calendar: CalendarRef) -> bool:
    """Whether the provider's ``obs`` is the booking ``row`` asked for: the same provider id when the answer was
    seen, else a CONFIRMED booking starting at the slot on the calendar used (or without attribution)."""
    if row.ghl_appointment_id and obs.ghl_appointment_id == row.ghl_appointment_id:
        return True
    if row.calendly_invitee_uri and obs.calendly_invitee_uri == row.calendly_invitee_uri:
        return True
    attribution = obs.ghl_calendar_id if obs.provider is Provider.GHL else obs.calendly_event_type_uri
    return (obs.provider is calendar.provider and obs.status is Status.CONFIRMED and obs.start_at == row.slot_start
            and attribution in (None, calendar.calendar_key))


def _first_zone(*names: str | None) -> str:
    for name in names:
        if name:
            try:
                ZoneInfo(name)
                return name
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return "UTC"
