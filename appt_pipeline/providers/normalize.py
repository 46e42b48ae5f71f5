"""Provider payloads → typed objects → observations (SPEC §2, §4, §7, §9; docs/providers.md).

Pure: no I/O, no logging of payload content. Every parser takes any decoded JSON value and never
raises on a malformed payload: it returns ``None`` (single objects) or drops and counts the bad
items (lists) — except the strict ``check_*`` functions for stored availability (docs/rules.md §9),
which raise :class:`AnswerShapeError` on any garbled answer. Times are parsed to timezone-aware UTC
``datetime`` values; provider strings with offsets (``2026-01-06T09:00:00-07:00``) become instants.

PII: the typed objects keep only ids, URIs, times, statuses and flags. The Calendly invitee e-mail
is kept in memory for lead matching (``repr=False``: it never appears in a ``repr``, a log line or
an exception); free-text GHL ``title``/``notes``/``address`` are kept only because the original's
normaliser exposes them (docs/original-system.md §7.2) and are likewise hidden from ``repr``. Cancellation
reasons are masked with :func:`~appt_pipeline.domain.redaction.mask_pii` at parse time; the
canceller's name (``canceled_by``) is never kept.

Status strings stay raw here; :func:`ghl_observation` and :func:`calendly_observation` map them
through the one mapping, :func:`appt_pipeline.domain.vocab.map_status` (unknown strings raise
:class:`~appt_pipeline.domain.vocab.UnknownStatusError`, never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.redaction import mask_pii
from appt_pipeline.domain.timeparse import parse_timestamp
from appt_pipeline.domain.vocab import Provider, Source, Status, map_status

#: Canonical Calendly API host: provider URIs are identities in this form (SPEC preamble).
CALENDLY_CANONICAL_BASE = "https://api.calendly.com"
#: cancel_reason stored for a GHL appointment reported with ``deleted: true`` or by AppointmentDelete (SPEC §7).
GHL_DELETED_REASON = "deleted"
#: Keys that may hold the list of a GHL list response, in order (docs/original-system.md §7.2).
_GHL_LIST_KEYS: tuple[tuple[str, ...], ...] = (
    ("events",), ("appointments",), ("data", "events"), ("data", "appointments"),
)


# --------------------------------------------------------------------------------------------------
# small coercions


def _text(value: Any) -> str | None:
    """A non-blank string, else ``None`` (the original value is kept, not stripped)."""
    return value if isinstance(value, str) and value.strip() else None


def _scalar_text(value: Any) -> str:
    """String conversion of a scalar id (``5`` → ``"5"``); ``""`` for missing, null, bool or containers."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return ""


def _uri(value: Any) -> str | None:
    """A URI given as a string or as an object with ``uri`` (Calendly returns both forms)."""
    if isinstance(value, Mapping):
        return _text(value.get("uri"))
    return _text(value)


def _when(value: Any, *, naive_tz: ZoneInfo | None = None) -> datetime | None:
    """UTC instant from an ISO-8601 string; ``None`` when missing or unparseable.

    A naive value (no offset, e.g. GHL's ``"2021-07-16 11:00:00"`` schema examples) is read in
    ``naive_tz`` when given, else as UTC.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_timestamp(value)
    except ValueError:
        return None
    if parsed is not None and naive_tz is not None and not _has_offset(value):
        parsed = parsed.replace(tzinfo=None).replace(tzinfo=naive_tz).astimezone(UTC)
    return parsed


def _has_offset(raw: str) -> bool:
    text = raw.strip()
    if text.endswith(("Z", "z")):
        return True
    tail = text[10:]  # after the date part
    return "+" in tail or "-" in tail


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return None


def _int(value: Any) -> int | None:
    """A JSON number as ``int`` (booleans are not numbers here); else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _flag(value: Any) -> bool:
    """A JSON boolean (``true``), or the strings ``"true"``/``"1"``; anything else is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return False


# --------------------------------------------------------------------------------------------------
# GoHighLevel


@dataclass(frozen=True, slots=True)
class GhlAppointment:
    """One GHL appointment (``CalendarEventDTO`` / ``GetEventSchema`` / create response / webhook body).

    Attributes:
        id: the appointment (event) id — ``id``, else ``eventId``, else ``appointmentId``.
        calendar_id, contact_id, location_id: ids as strings; ``""`` when the payload lacks them.
        status: the raw status string (``appointmentStatus``, else the misspelled duplicate
            ``appoinmentStatus``, else ``status``; first non-blank) or ``""``; unmapped.
        start_at, end_at: UTC instants parsed from ``startTime``/``endTime`` (offsets honoured).
        start_time_raw, end_time_raw: the provider strings unchanged (offsets kept; docs/original-system.md §7.2).
        date_added, date_updated: UTC instants from ``dateAdded``/``dateUpdated``, ``None`` if absent.
        deleted: ``deleted: true`` on a GET of a deleted appointment, or an AppointmentDelete webhook.
        assigned_user_id, title, notes, address: copied only when strings (``""`` kept); ``None`` when
            absent. ``title``/``notes``/``address`` are free text: never logged or stored.

    Source: docs/providers.md §1.2 (GHL-SPEC-CAL ``CalendarEventDTO``, NANGO-GHL-REC observed extras).
    """

    id: str
    calendar_id: str
    contact_id: str
    location_id: str
    status: str
    start_at: datetime
    end_at: datetime
    start_time_raw: str
    end_time_raw: str
    date_added: datetime | None = None
    date_updated: datetime | None = None
    deleted: bool = False
    assigned_user_id: str | None = None
    title: str | None = field(default=None, repr=False)
    notes: str | None = field(default=None, repr=False)
    address: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class GhlAppointmentList:
    """A parsed GHL list response: the valid ``items`` in provider order and how many were ``dropped``."""

    items: tuple[GhlAppointment, ...]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class GhlWebhook:
    """A GHL appointment webhook (``AppointmentCreate|Update|Delete``; docs/providers.md §1.5).

    ``appointment`` is ``None`` when the body holds no valid appointment; for ``AppointmentDelete`` it
    has ``deleted=True``. ``webhook_id``/``timestamp`` are present on signed deliveries only.
    """

    type: str
    location_id: str
    appointment: GhlAppointment | None
    webhook_id: str | None = None
    timestamp: datetime | None = None


def parse_ghl_appointment(
    obj: Any, *, naive_timezone: str | None = None, location_id: str | None = None
) -> GhlAppointment | None:
    """Normalise any JSON value into a :class:`GhlAppointment`, or ``None`` when it is not one.

    Rules (docs/original-system.md §7.2, vectors §15.3 G1–G9 and the recommended extras):

    1. non-objects (``None``, strings, numbers, booleans, lists) → ``None``;
    2. the candidate is the ``appointment`` member if truthy, else ``event`` if truthy, else the object
       itself (GET returns ``{appointment: …, traceId}``; the spec says ``{event: …}``); a truthy
       non-object candidate → ``None``;
    3. id = ``id`` | ``eventId`` | ``appointmentId``, a non-empty string, else ``None``;
    4. ``startTime`` and ``endTime`` must be strings that parse as ISO-8601, else ``None``;
    5. status = first non-blank string of ``appointmentStatus``, ``appoinmentStatus`` (GHL's
       misspelled duplicate), ``status``; else ``""``; kept raw;
    6. ``calendarId``/``contactId``/``locationId`` → string (``5`` → ``"5"``), ``""`` when missing;
       a webhook's top-level ``locationId`` (or the ``location_id`` argument) fills a missing one;
    7. ``deleted: true`` is kept (GET of a deleted appointment answers 200 with it).

    Args:
        obj: the decoded JSON body or list item.
        naive_timezone: IANA zone for times without an offset (default UTC).
        location_id: location to assume when the payload has none.
    """
    if not isinstance(obj, Mapping):
        return None
    candidate: Any = obj
    for wrapper in ("appointment", "event"):
        inner = obj.get(wrapper)
        if inner:
            candidate = inner
            break
    if not isinstance(candidate, Mapping):
        return None
    appt_id = next((v for v in (candidate.get(k) for k in ("id", "eventId", "appointmentId")) if _text(v)), None)
    if appt_id is None:
        return None
    zone = _zone(naive_timezone)
    start_raw, end_raw = candidate.get("startTime"), candidate.get("endTime")
    start_at, end_at = _when(start_raw, naive_tz=zone), _when(end_raw, naive_tz=zone)
    if start_at is None or end_at is None:
        return None
    assert isinstance(start_raw, str) and isinstance(end_raw, str)  # _when parsed them
    status = next(
        (v for v in (candidate.get(k) for k in ("appointmentStatus", "appoinmentStatus", "status")) if _text(v)), ""
    )
    location = _scalar_text(candidate.get("locationId")) or _scalar_text(obj.get("locationId")) or (location_id or "")

    def _opt(key: str) -> str | None:
        value = candidate.get(key)
        return value if isinstance(value, str) else None

    return GhlAppointment(
        id=appt_id,
        calendar_id=_scalar_text(candidate.get("calendarId")),
        contact_id=_scalar_text(candidate.get("contactId")),
        location_id=location,
        status=status,
        start_at=start_at,
        end_at=end_at,
        start_time_raw=start_raw,
        end_time_raw=end_raw,
        date_added=_when(candidate.get("dateAdded"), naive_tz=zone),
        date_updated=_when(candidate.get("dateUpdated"), naive_tz=zone),
        deleted=_flag(candidate.get("deleted")),
        assigned_user_id=_opt("assignedUserId"),
        title=_opt("title"),
        notes=_opt("notes"),
        address=_opt("address"),
    )


def parse_ghl_appointment_list(
    obj: Any, *, naive_timezone: str | None = None, location_id: str | None = None
) -> GhlAppointmentList:
    """Normalise a GHL list response (``GET /contacts/{id}/appointments``, ``GET /calendars/events``).

    The array is the first list among ``events``, ``appointments``, ``data.events``,
    ``data.appointments`` (a bare JSON array is accepted too); no array → empty list. Every item
    goes through :func:`parse_ghl_appointment`; invalid items are dropped and counted
    (docs/original-system.md §7.2 and §14, item 2). Never raises.
    """
    items: Any = obj if isinstance(obj, list) else None
    if items is None and isinstance(obj, Mapping):
        for path in _GHL_LIST_KEYS:
            node: Any = obj
            for key in path:
                node = node.get(key) if isinstance(node, Mapping) else None
            if isinstance(node, list):
                items = node
                break
    if not items:
        return GhlAppointmentList(items=())
    parsed = [parse_ghl_appointment(item, naive_timezone=naive_timezone, location_id=location_id) for item in items]
    kept = tuple(p for p in parsed if p is not None)
    return GhlAppointmentList(items=kept, dropped=len(parsed) - len(kept))


def parse_ghl_webhook(obj: Any) -> GhlWebhook | None:
    """Parse a GHL appointment webhook body ``{type, locationId, appointment: {…}, webhookId?, timestamp?}``.

    ``type == "AppointmentDelete"`` marks the appointment ``deleted`` (SPEC §7: delete → CANCELED with
    reason ``deleted``). Returns ``None`` for a non-object or a body without a string ``type``.
    Source: docs/providers.md §1.5 (GHL-WH-DOCS, GHL-WH-AUTH).
    """
    if not isinstance(obj, Mapping) or not _text(obj.get("type")):
        return None
    event_type = obj["type"].strip()
    location = _scalar_text(obj.get("locationId"))
    appt = parse_ghl_appointment(obj, location_id=location or None) if obj.get("appointment") else None
    if appt is not None and event_type == "AppointmentDelete" and not appt.deleted:
        appt = replace(appt, deleted=True)
    ts = obj.get("timestamp")
    timestamp = _when(ts) if isinstance(ts, str) else _epoch(ts)
    return GhlWebhook(
        type=event_type,
        location_id=location or (appt.location_id if appt else ""),
        appointment=appt,
        webhook_id=_text(obj.get("webhookId")),
        timestamp=timestamp,
    )


def _epoch(value: Any) -> datetime | None:
    """Epoch seconds or milliseconds (numbers ≥ 10^11 are milliseconds) → UTC; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if value >= 1e11 else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_ghl_free_slots(obj: Any) -> list[datetime]:
    """Free slot starts from ``GET /calendars/{id}/free-slots`` as sorted, de-duplicated UTC instants.

    Shape (docs/providers.md §1.2, fixture ``ghl.calendar_free_slots.json``): an object keyed by
    ``YYYY-MM-DD`` (older spec: ``_dates_``) whose values hold ``{slots: [ISO-8601 with offset]}``;
    ``traceId`` and other non-slot members are ignored; a slot may also be ``{startTime}``
    (docs/original-system.md §8.3). Unparseable slots are dropped.
    """
    found: set[datetime] = set()
    if isinstance(obj, Mapping):
        for key, day in obj.items():
            if key == "traceId" or not isinstance(day, Mapping) or not isinstance(day.get("slots"), list):
                continue
            for slot in day["slots"]:
                raw = slot.get("startTime") if isinstance(slot, Mapping) else slot
                when = _when(raw)
                if when is not None:
                    found.add(when)
    return sorted(found)


class AnswerShapeError(ValueError):
    """A provider answer that is not the shape an endpoint documents (wrong shape, unparseable times, an
    error body in a 2xx). The message names what is wrong, never values from the answer except masked
    provider error text."""


#: Members of a JSON error body (GHL ``{statusCode, message}``, Calendly ``{title, message}``, OAuth ``error``).
_ERROR_MEMBERS = ("statusCode", "error", "error_description", "title", "message", "msg")


def _error_in_answer(obj: Mapping[str, Any]) -> str | None:
    """The masked message of an error body answered with a 2xx, else ``None``."""
    found = [k for k in _ERROR_MEMBERS if k in obj]
    if not found:
        return None
    text = next((obj[k] for k in ("message", "error_description", "error", "title", "msg")
                 if isinstance(obj.get(k), str) and obj[k].strip()), None)
    detail = mask_pii(text)[:200] if text else ", ".join(found)
    return f"error body in a 2xx answer: {detail}"


def _is_date_key(key: str) -> bool:
    try:
        datetime.strptime(key, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def check_ghl_free_slots(obj: Any) -> list[datetime]:
    """Strict :func:`parse_ghl_free_slots` for storing availability (docs/rules.md §9): the answer must be
    an object whose members are ``YYYY-MM-DD`` (or ``_dates_``) days holding ``{slots: [ISO-8601]}``
    plus ``traceId``; every slot must parse.

    Returns:
        Sorted, de-duplicated UTC slot starts (``[]`` for an answer with no day: no free slot).

    Raises:
        AnswerShapeError: not an object, an error body (``statusCode`` / ``message`` / ``error`` …), an
            unexpected member, a day without a ``slots`` list, or a slot that does not parse (counted).
    """
    if not isinstance(obj, Mapping):
        raise AnswerShapeError(f"free-slots answer is {type(obj).__name__}, not an object")
    if (error := _error_in_answer(obj)) is not None:
        raise AnswerShapeError(error)
    found: set[datetime] = set()
    bad = 0
    for key, day in obj.items():
        if key == "traceId":
            continue
        if not (key == "_dates_" or (isinstance(key, str) and _is_date_key(key))):
            raise AnswerShapeError("free-slots answer has a member that is not a date")
        if not isinstance(day, Mapping) or not isinstance(day.get("slots"), list):
            raise AnswerShapeError("free-slots day without a slots list")
        for slot in day["slots"]:
            raw = slot.get("startTime") if isinstance(slot, Mapping) else slot
            when = _when(raw)
            if when is None:
                bad += 1
            else:
                found.add(when)
    if bad:
        raise AnswerShapeError(f"free-slots answer has {bad} unparseable slot time(s)")
    return sorted(found)


def check_calendly_available_times(obj: Any) -> list[CalendlyAvailableTime]:
    """Strict :func:`parse_calendly_available_times` for storing availability (docs/rules.md §9): the
    answer must be ``{collection: [{start_time, …}]}`` with every ``start_time`` parseable.

    Raises:
        AnswerShapeError: not an object, an error body, no ``collection`` list, an item that is not an
            object, or a ``start_time`` that does not parse (counted).
    """
    if not isinstance(obj, Mapping):
        raise AnswerShapeError(f"available times answer is {type(obj).__name__}, not an object")
    collection = obj.get("collection")
    if not isinstance(collection, list):
        raise AnswerShapeError(_error_in_answer(obj) or "available times answer has no collection")
    if any(not isinstance(item, Mapping) for item in collection):
        raise AnswerShapeError("available times item that is not an object")
    bad = sum(1 for item in collection if _when(item.get("start_time")) is None)
    if bad:
        raise AnswerShapeError(f"available times answer has {bad} unparseable start_time(s)")
    return parse_calendly_available_times(obj)


def parse_ghl_contact_id(obj: Any) -> str | None:
    """The contact id of a GHL contact lookup answer, or ``None`` when no contact matched.

    Accepts ``GET /contacts/search/duplicate`` (``{contact: {id, …} | null, traceId}``),
    ``POST /contacts/search`` (``{contacts: [{id, …}], total}``) and ``{contact: {id}}`` of
    ``GET /contacts/{id}`` (GHL-SPEC-CON). Only the id is read: names, e-mails and phones are not.
    """
    if not isinstance(obj, Mapping):
        return None
    contact = obj.get("contact")
    if isinstance(contact, Mapping):
        return _text(_scalar_text(contact.get("id")))
    contacts = obj.get("contacts")
    if isinstance(contacts, list):
        for item in contacts:
            if isinstance(item, Mapping) and _text(_scalar_text(item.get("id"))):
                return _scalar_text(item.get("id"))
    return None


def ghl_observation(
    appt: GhlAppointment, *, workspace_id: str, lead_id: str, source: Source, timezone: str | None = None
) -> Observation:
    """The :class:`Observation` of one GHL appointment (SPEC §2, §4, §7, §9).

    * status: ``deleted`` → CANCELED with ``cancel_reason="deleted"``; else
      :func:`~appt_pipeline.domain.vocab.map_status` of the raw status (``invalid`` → CANCELED,
      ``new``/``booked`` → CONFIRMED, ``noshow`` → NO_SHOW, ``""`` → CONFIRMED: the id exists);
    * ``provider_updated_at`` = ``dateUpdated``; ``booked_at`` = ``dateAdded``;
    * attribution ``ghl_calendar_id`` = ``calendarId`` (``""`` → ``None``, SPEC §9);
    * ``provider_links_reschedules=False``: GHL keeps the id on a reschedule and changes the times
      (§4.3), so the write path's 6-hour heuristic applies to GHL rows;
    * ``timezone`` is not reported by GHL; the caller may pass the workspace's.

    Raises:
        UnknownStatusError: the raw status is outside SPEC §2's vocabulary (counted, never guessed).
    """
    if appt.deleted:
        status, reason = Status.CANCELED, GHL_DELETED_REASON
    else:
        status, reason = map_status(appt.status, has_provider_id=True), None
    return Observation(
        workspace_id=workspace_id,
        lead_id=lead_id,
        provider=Provider.GHL,
        status=status,
        source=source,
        ghl_appointment_id=appt.id,
        ghl_calendar_id=appt.calendar_id or None,
        start_at=appt.start_at,
        end_at=appt.end_at,
        timezone=timezone or None,
        booked_at=appt.date_added,
        provider_updated_at=appt.date_updated,
        cancel_reason=reason,
        provider_links_reschedules=False,
    ).validate()


# --------------------------------------------------------------------------------------------------
# Calendly


@dataclass(frozen=True, slots=True)
class CalendlyCancellation:
    """``cancellation`` of an invitee or event: ``reason`` masked (e-mails/phones), ``canceler_type``
    (``host``|``invitee``), ``created_at`` (UTC, absent in older payloads). ``canceled_by`` (a
    person's name) is deliberately not kept."""

    reason: str | None = None
    canceler_type: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CalendlyNoShow:
    """``no_show`` of an invitee: the no-show record's ``uri`` and ``created_at`` (UTC)."""

    uri: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CalendlyEvent:
    """A Calendly scheduled event (CAL-SPEC ``Event``; docs/providers.md §2.2).

    ``status`` is the raw ``active``/``canceled`` (informational only: a row's status comes from the
    invitee, SPEC §2). ``start_at``/``end_at``/``created_at``/``updated_at`` are UTC.
    """

    uri: str
    status: str
    event_type_uri: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    cancellation: CalendlyCancellation | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class CalendlyInvitee:
    """A Calendly invitee (CAL-SPEC ``Invitee``; docs/providers.md §2.2, reschedule semantics).

    Attributes:
        uri: the invitee URI (the appointment's provider key).
        event_uri: the scheduled event URI (``event``; ``scheduled_event`` on POST /invitees answers).
        email: lower-cased, for lead matching only — never logged or stored (``repr=False``).
        status: raw invitee status ``active``/``canceled`` (older payloads: the ``canceled`` boolean).
        rescheduled: this (canceled) invitee was rescheduled to ``new_invitee``.
        old_invitee / new_invitee: reschedule links (URIs) or ``None``.
        cancellation: reason (masked), canceler type, time; ``None`` unless canceled.
        no_show: set when the host marked the invitee as a no-show.
        timezone: the invitee's IANA zone; created_at / updated_at: UTC.
    """

    uri: str
    status: str
    event_uri: str | None = None
    email: str | None = field(default=None, repr=False)
    rescheduled: bool = False
    old_invitee: str | None = None
    new_invitee: str | None = None
    cancellation: CalendlyCancellation | None = None
    no_show: CalendlyNoShow | None = None
    timezone: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CalendlyWebhook:
    """A Calendly webhook envelope ``{event, created_at, created_by, payload}`` (CAL-SPEC ``WebhookPayload``).

    ``invitee`` comes from the invitee fields at the root of ``payload`` (current form) or from the
    older nested ``payload.invitee``; ``scheduled_event`` from ``payload.scheduled_event`` (or
    ``scheduledEvent``, or an ``event`` object). Either may be ``None`` for events we do not handle.
    """

    event: str
    created_at: datetime | None
    invitee: CalendlyInvitee | None
    scheduled_event: CalendlyEvent | None
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class CalendlyCustomQuestion:
    """One ``custom_questions`` entry of an event type (no answers: those are PII)."""

    name: str
    type: str | None = None
    position: int = 0
    enabled: bool = True
    required: bool = False


@dataclass(frozen=True, slots=True)
class CalendlyEventType:
    """A Calendly event type (CAL-SPEC ``EventType``): the attribution key for Calendly rows (SPEC §9)."""

    uri: str
    name: str | None = None
    active: bool = True
    duration_minutes: int | None = None
    scheduling_url: str | None = None
    kind: str | None = None
    pooling_type: str | None = None
    owner_uri: str | None = None
    custom_questions: tuple[CalendlyCustomQuestion, ...] = ()


@dataclass(frozen=True, slots=True)
class CalendlyAvailableTime:
    """One ``event_type_available_times`` entry: slot ``start_at`` (UTC) and remaining seats."""

    start_at: datetime
    status: str = "available"
    invitees_remaining: int | None = None
    scheduling_url: str | None = None


@dataclass(frozen=True, slots=True)
class CalendlyUser:
    """``GET /users/me`` → ``resource``: the user ``uri``, ``current_organization`` URI and timezone."""

    uri: str
    current_organization: str | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class CalendlyPage:
    """A list page ``{collection, pagination}``: raw ``collection`` items and the next-page pointers."""

    collection: tuple[Any, ...]
    next_page: str | None = None
    next_page_token: str | None = None


def _cancellation(obj: Any) -> CalendlyCancellation | None:
    if not isinstance(obj, Mapping):
        return None
    reason = obj.get("reason")
    return CalendlyCancellation(
        reason=mask_pii(reason) if isinstance(reason, str) and reason.strip() else None,
        canceler_type=_text(obj.get("canceler_type")),
        created_at=_when(obj.get("created_at")),
    )


def _resource(obj: Any) -> Any:
    """Unwrap ``{resource: …}`` (GET/POST answers); anything else is returned as is."""
    if isinstance(obj, Mapping) and isinstance(obj.get("resource"), Mapping):
        return obj["resource"]
    return obj


def parse_calendly_event(obj: Any) -> CalendlyEvent | None:
    """A scheduled event from ``{resource: Event}``, a collection item or a webhook's ``scheduled_event``.

    Needs a string ``uri``; ``status`` defaults to ``""``. Returns ``None`` otherwise.
    """
    item = _resource(obj)
    if not isinstance(item, Mapping) or not _text(item.get("uri")):
        return None
    return CalendlyEvent(
        uri=item["uri"],
        status=_text(item.get("status")) or "",
        event_type_uri=_uri(item.get("event_type")),
        start_at=_when(item.get("start_time")),
        end_at=_when(item.get("end_time")),
        created_at=_when(item.get("created_at")),
        updated_at=_when(item.get("updated_at")),
        cancellation=_cancellation(item.get("cancellation")),
        name=_text(item.get("name")),
    )


def parse_calendly_invitee(obj: Any, *, event_uri: str | None = None) -> CalendlyInvitee | None:
    """An invitee from ``{resource: Invitee}``, a collection item or a webhook payload's invitee fields.

    Needs a string ``uri`` and a status: ``status`` (``active``/``canceled``), else the legacy
    ``canceled`` boolean. ``event_uri`` fills a missing ``event``. The e-mail is trimmed and
    lower-cased (docs/original-system.md §5.5). Returns ``None`` when the object is not an invitee.
    """
    item = _resource(obj)
    if not isinstance(item, Mapping) or not _text(item.get("uri")):
        return None
    status = _text(item.get("status"))
    if status is None and isinstance(item.get("canceled"), bool):
        status = "canceled" if item["canceled"] else "active"
    if status is None:
        return None
    email = _text(item.get("email"))
    no_show_raw = item.get("no_show")
    no_show = None
    if isinstance(no_show_raw, Mapping):
        no_show = CalendlyNoShow(uri=_text(no_show_raw.get("uri")), created_at=_when(no_show_raw.get("created_at")))
    elif no_show_raw is True:
        no_show = CalendlyNoShow()
    return CalendlyInvitee(
        uri=item["uri"],
        status=status,
        event_uri=_uri(item.get("event")) or _uri(item.get("scheduled_event")) or event_uri,
        email=email.strip().lower() if email else None,
        rescheduled=_flag(item.get("rescheduled")),
        old_invitee=_uri(item.get("old_invitee")),
        new_invitee=_uri(item.get("new_invitee")),
        cancellation=_cancellation(item.get("cancellation")),
        no_show=no_show,
        timezone=_text(item.get("timezone")),
        created_at=_when(item.get("created_at")),
        updated_at=_when(item.get("updated_at")),
    )


def parse_calendly_webhook(obj: Any) -> CalendlyWebhook | None:
    """Parse a Calendly webhook envelope (SPEC §7; docs/providers.md §2.6).

    Current form: invitee fields at the root of ``payload`` and the event under
    ``payload.scheduled_event``; older form: ``payload.invitee`` (and ``payload.event`` as an object).
    Returns ``None`` when ``obj`` is not an object with a string ``event`` and an object ``payload``.
    """
    if not isinstance(obj, Mapping) or not _text(obj.get("event")) or not isinstance(obj.get("payload"), Mapping):
        return None
    payload = obj["payload"]
    event_obj = next(
        (payload[k] for k in ("scheduled_event", "scheduledEvent", "event") if isinstance(payload.get(k), Mapping)),
        None,
    )
    scheduled_event = parse_calendly_event(event_obj) if event_obj is not None else None
    invitee_obj = payload["invitee"] if isinstance(payload.get("invitee"), Mapping) else payload
    invitee = parse_calendly_invitee(invitee_obj, event_uri=scheduled_event.uri if scheduled_event else None)
    return CalendlyWebhook(
        event=obj["event"].strip(),
        created_at=_when(obj.get("created_at")),
        invitee=invitee,
        scheduled_event=scheduled_event,
        created_by=_text(obj.get("created_by")),
    )


def parse_calendly_event_type(obj: Any) -> CalendlyEventType | None:
    """An event type from ``{resource: EventType}`` or a collection item; ``None`` without ``uri``."""
    item = _resource(obj)
    if not isinstance(item, Mapping) or not _text(item.get("uri")):
        return None
    questions = []
    for q in item.get("custom_questions") or ():
        if isinstance(q, Mapping) and _text(q.get("name")):
            pos = q.get("position")
            questions.append(
                CalendlyCustomQuestion(
                    name=q["name"],
                    type=_text(q.get("type")),
                    position=_int(pos) or 0,
                    enabled=q.get("enabled") is not False,
                    required=q.get("required") is True,
                )
            )
    duration = item.get("duration")
    profile = item.get("profile")
    return CalendlyEventType(
        uri=item["uri"],
        name=_text(item.get("name")),
        active=item.get("active") is not False,
        duration_minutes=_int(duration),
        scheduling_url=_text(item.get("scheduling_url")),
        kind=_text(item.get("kind")),
        pooling_type=_text(item.get("pooling_type")),
        owner_uri=_text(profile.get("owner")) if isinstance(profile, Mapping) else None,
        custom_questions=tuple(questions),
    )


def parse_calendly_available_times(obj: Any) -> list[CalendlyAvailableTime]:
    """``GET /event_type_available_times`` → entries with a parseable ``start_time`` (others dropped).

    Shape: ``{collection: [{status, invitees_remaining, start_time, scheduling_url}]}`` (CAL-SPEC); not
    paginated. Sorted by start, duplicates removed.
    """
    seen: dict[datetime, CalendlyAvailableTime] = {}
    collection = obj.get("collection") if isinstance(obj, Mapping) else None
    for item in collection if isinstance(collection, list) else ():
        if not isinstance(item, Mapping):
            continue
        start = _when(item.get("start_time"))
        if start is None or start in seen:
            continue
        remaining = item.get("invitees_remaining")
        seen[start] = CalendlyAvailableTime(
            start_at=start,
            status=_text(item.get("status")) or "available",
            invitees_remaining=_int(remaining),
            scheduling_url=_text(item.get("scheduling_url")),
        )
    return [seen[k] for k in sorted(seen)]


def parse_calendly_user(obj: Any) -> CalendlyUser | None:
    """``GET /users/me`` → :class:`CalendlyUser` (name and e-mail are not kept); ``None`` without ``uri``."""
    item = _resource(obj)
    if not isinstance(item, Mapping) or not _text(item.get("uri")):
        return None
    return CalendlyUser(
        uri=item["uri"],
        current_organization=_uri(item.get("current_organization")),
        timezone=_text(item.get("timezone")),
    )


def parse_calendly_page(obj: Any) -> CalendlyPage | None:
    """A list page ``{collection: [...], pagination: {next_page, next_page_token, …}}`` (CAL-SPEC ``Pagination``).

    ``None`` when ``collection`` is not a list. Missing ``pagination`` means no further page.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("collection"), list):
        return None
    pagination = obj.get("pagination") if isinstance(obj.get("pagination"), Mapping) else {}
    return CalendlyPage(
        collection=tuple(obj["collection"]),
        next_page=_text(pagination.get("next_page")),
        next_page_token=_text(pagination.get("next_page_token")),
    )


def calendly_status(invitee: CalendlyInvitee) -> Status:
    """The appointment status of a Calendly invitee (SPEC §2).

    ``no_show`` set → NO_SHOW; else the invitee status through ``map_status`` (``active`` →
    CONFIRMED, ``canceled`` → CANCELED), with CANCELED becoming RESCHEDULED when ``rescheduled``.

    Raises:
        UnknownStatusError: an invitee status outside SPEC §2's vocabulary.
    """
    if invitee.no_show is not None:
        return Status.NO_SHOW
    status = map_status(invitee.status, has_provider_id=True)
    if status is Status.CANCELED and invitee.rescheduled:
        return Status.RESCHEDULED
    return status


def calendly_observation(
    invitee: CalendlyInvitee,
    event: CalendlyEvent | None,
    *,
    workspace_id: str,
    lead_id: str,
    source: Source,
) -> Observation:
    """The :class:`Observation` of one Calendly invitee of one scheduled event (SPEC §2, §4, §4.3, §9).

    * key: the invitee URI; ``calendly_scheduled_event_uri`` = the invitee's ``event`` (else the
      event's ``uri``); start/end and ``calendly_event_type_uri`` from ``event`` when given;
    * status from the **invitee** (:func:`calendly_status`), never from the event;
    * reschedule links ``rescheduled_from_invitee_uri`` = ``old_invitee``,
      ``rescheduled_to_invitee_uri`` = ``new_invitee``; ``provider_links_reschedules=True``;
    * ``cancel_reason`` = the (already masked) cancellation reason; ``canceled_at`` =
      ``cancellation.created_at``; ``provider_updated_at`` = invitee ``updated_at``;
      ``booked_at`` = invitee ``created_at``; ``timezone`` = invitee timezone.

    Raises:
        UnknownStatusError: an invitee status outside SPEC §2's vocabulary.
    """
    status = calendly_status(invitee)
    cancellation = invitee.cancellation
    ended = status in (Status.CANCELED, Status.RESCHEDULED)
    return Observation(
        workspace_id=workspace_id,
        lead_id=lead_id,
        provider=Provider.CALENDLY,
        status=status,
        source=source,
        calendly_invitee_uri=invitee.uri,
        calendly_scheduled_event_uri=invitee.event_uri or (event.uri if event else None),
        calendly_event_type_uri=event.event_type_uri if event else None,
        start_at=event.start_at if event else None,
        end_at=event.end_at if event else None,
        timezone=invitee.timezone,
        booked_at=invitee.created_at,
        provider_updated_at=invitee.updated_at,
        canceled_at=cancellation.created_at if cancellation and ended else None,
        cancel_reason=cancellation.reason if cancellation else None,
        rescheduled_from_invitee_uri=invitee.old_invitee,
        rescheduled_to_invitee_uri=invitee.new_invitee,
        provider_links_reschedules=True,
    ).validate()


# --------------------------------------------------------------------------------------------------
# webhook events (SPEC §7): what the event itself says, beside what the resource in it says


def calendly_event_invitee(event_type: str, invitee: CalendlyInvitee) -> CalendlyInvitee:
    """The invitee as the Calendly webhook ``event_type`` reports it (SPEC §7).

    * ``invitee_no_show.created`` → marked no-show (kept when the payload already carries one);
    * ``invitee_no_show.deleted`` → no-show removed: the invitee's own status again;
    * ``invitee.canceled`` → status ``canceled`` even when the payload's resource says otherwise
      (``rescheduled`` still turns it into RESCHEDULED in :func:`calendly_status`);
    * any other event: the invitee unchanged.
    """
    if event_type == "invitee_no_show.created" and invitee.no_show is None:
        return replace(invitee, no_show=CalendlyNoShow())
    if event_type == "invitee_no_show.deleted":
        return replace(invitee, no_show=None)
    if event_type == "invitee.canceled" and invitee.status != "canceled":
        return replace(invitee, status="canceled")
    return invitee


def calendly_webhook_observation(
    event_type: str, payload: Any, *, workspace_id: str, lead_id: str, source: Source
) -> Observation:
    """The :class:`Observation` of one stored Calendly webhook delivery (SPEC §7).

    The delivery's invitee (and scheduled event) as :func:`parse_calendly_webhook` reads them,
    adjusted by :func:`calendly_event_invitee`, through :func:`calendly_observation`.

    Raises:
        UnknownStatusError: an invitee status outside SPEC §2's vocabulary.
        ValueError: ``"missing_invitee"`` — the payload has no usable invitee.
    """
    parsed = parse_calendly_webhook(payload)
    if parsed is None or parsed.invitee is None:
        raise ValueError("missing_invitee")
    invitee = calendly_event_invitee(event_type, parsed.invitee)
    return calendly_observation(invitee, parsed.scheduled_event, workspace_id=workspace_id, lead_id=lead_id,
                                source=source)


def ghl_webhook_observation(
    event_type: str, payload: Any, *, workspace_id: str, lead_id: str, source: Source
) -> Observation:
    """The :class:`Observation` of one stored GHL webhook delivery (SPEC §7).

    An appointment with usable times goes through :func:`ghl_observation`. Without them (e.g. a
    bare ``AppointmentDelete``) the observation says what the event itself says: ``AppointmentDelete``
    or ``deleted: true`` → CANCELED with ``cancel_reason="deleted"``; else the raw
    ``appointmentStatus`` through :func:`~appt_pipeline.domain.vocab.map_status`; no times.

    Raises:
        UnknownStatusError: a status outside SPEC §2's vocabulary.
        ValueError: ``"missing_appointment"`` — the payload has no appointment id.
    """
    parsed = parse_ghl_webhook(payload)
    if parsed is not None and parsed.appointment is not None:
        return ghl_observation(parsed.appointment, workspace_id=workspace_id, lead_id=lead_id, source=source)
    appt = (payload.get("appointment") if isinstance(payload, Mapping) else None) or {}
    if not isinstance(appt, Mapping) or not appt.get("id"):
        raise ValueError("missing_appointment")
    deleted = event_type == "AppointmentDelete" or appt.get("deleted") is True
    return Observation(
        workspace_id=workspace_id, lead_id=lead_id, provider=Provider.GHL,
        status=Status.CANCELED if deleted else map_status(appt.get("appointmentStatus"), has_provider_id=True),
        source=source, ghl_appointment_id=appt["id"], ghl_calendar_id=appt.get("calendarId"),
        cancel_reason=GHL_DELETED_REASON if deleted else None,
    ).validate()


# --------------------------------------------------------------------------------------------------
# time windows


def split_range(start: datetime, end: datetime, max_span: timedelta) -> list[tuple[datetime, datetime]]:
    """Split ``[start, end)`` into consecutive ranges no longer than ``max_span`` (GHL free slots ≤ 31 days,
    Calendly available times ≤ 7 days; docs/providers.md §1.2, §2.2). Empty when ``end <= start``."""
    if max_span <= timedelta(0):
        raise ValueError("max_span must be positive")
    out: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        stop = min(cursor + max_span, end)
        out.append((cursor, stop))
        cursor = stop
    return out
