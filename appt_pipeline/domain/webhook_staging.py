"""What a webhook delivery becomes in the staging table ``webhook_events`` (SPEC §1, §7, §11).

Pure: no I/O. :func:`stage_calendly` and :func:`stage_ghl` take a decoded, already authenticated
body and return a :class:`StagedEvent`: the dedupe key, the provider time used to order events, and
the **whitelisted** payload — ids/URIs, event type, times, statuses, reschedule flag and links,
canceler type, cancel reason with e-mails and phone numbers masked, timezone, and a salted SHA-256
**hash** of the invitee e-mail for lead matching. Ids and URIs are kept verbatim (they are the
provider's keys) and a delivery whose id field holds an e-mail address is refused. Never names,
e-mails, phones, notes, titles, addresses or answers. The stored payload keeps the provider's shape,
so ingestion parses it with the same functions as a live body (``providers.normalize.parse_calendly_webhook`` /
``parse_ghl_webhook``).

Valid events we do not handle are staged with status ``ignored`` (reason ``unhandled_event``).
A body missing a field every delivery of its kind must have raises :class:`WebhookPayloadError`
(HTTP 400; nothing stored).
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appt_pipeline.domain.redaction import mask_pii
from appt_pipeline.domain.timeparse import check_range
from appt_pipeline.domain.timeparse import parse_timestamp_or_none as parse_timestamp
from appt_pipeline.domain.vocab import ErrorKind, Provider, WebhookStatus

CALENDLY_HANDLED = frozenset(
    {"invitee.created", "invitee.canceled", "invitee_no_show.created", "invitee_no_show.deleted"}
)
GHL_HANDLED = frozenset({"AppointmentCreate", "AppointmentUpdate", "AppointmentDelete"})

#: Longest text kept from a delivery field (ids, URIs, statuses); longer values are rejected (400).
MAX_FIELD_CHARS = 2048

STATUS_PENDING = WebhookStatus.PENDING
STATUS_IGNORED = WebhookStatus.IGNORED
REASON_UNHANDLED = ErrorKind.UNHANDLED_EVENT


class WebhookPayloadError(ValueError):
    """A body that is not a usable delivery (HTTP 400). ``reason`` is a short code safe to log/return
    (``not_an_object``, ``missing_fields``, ``invalid_field``); ``fields`` names what is missing/invalid."""

    def __init__(self, reason: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"{reason}: {', '.join(fields)}" if fields else reason)
        self.reason = reason
        self.fields = fields


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """One ``webhook_events`` row to insert (``id``/``received_at`` come from the database).

    ``provider_created_at``: the provider's time of the change (UTC) — Calendly invitee
    ``updated_at``, else the envelope's ``created_at``; GHL ``dateUpdated``, else ``timestamp`` —
    used to apply events in provider-time order. ``sent_at``: GHL's delivery ``timestamp`` (replay
    window), ``None`` for Calendly (its time is in the signature header). ``status`` is ``pending``
    or ``ignored`` with ``error`` = the reason.
    """

    provider: Provider
    event_type: str
    dedupe_key: str
    provider_created_at: datetime | None
    payload: dict[str, Any]
    status: str = STATUS_PENDING
    error: str | None = None
    sent_at: datetime | None = None


def email_hash(workspace_id: str, email: str) -> str:
    """Salted SHA-256 (hex) of a trimmed, lower-cased e-mail: ``sha256(workspace_id + ":" + email)``.

    The same expression in SQL matches leads (``store.lead_match.EMAIL_HASH_SQL``). Scoped to the
    workspace so one address hashes differently in two tenants.
    """
    return hashlib.sha256(f"{workspace_id}:{email.strip().lower()}".encode()).hexdigest()


def _digest(*parts: str | None) -> str:
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()


def _text(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False, free_text: bool = False
          ) -> str | None:
    """A string field: ids, URIs, statuses and zones verbatim (masking would corrupt UUIDs whose digit runs
    look like phone numbers) but refused when they hold an e-mail address; ``free_text`` (cancel reasons)
    is kept with e-mails and phone numbers masked (SPEC §7, §11)."""
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise WebhookPayloadError("missing_fields", (path,))
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookPayloadError("invalid_field", (path,))
    text = str(value).strip()
    if len(text) > MAX_FIELD_CHARS:
        raise WebhookPayloadError("invalid_field", (path,))
    if free_text:
        return mask_pii(text)
    if "@" in text or "%40" in text.lower():
        raise WebhookPayloadError("invalid_field", (path,))
    return text


def _time(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """An ISO-8601 time normalised to UTC (``…Z``); ``None`` when absent; 400 when unparseable."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    parsed = parse_timestamp(value) if isinstance(value, str) and len(value) <= 64 else None
    if parsed is None:
        raise WebhookPayloadError("invalid_field", (path,))
    return _iso(parsed)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else None


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# ------------------------------------------------------------------------------------------- Calendly


def _calendly_cancellation(obj: Mapping[str, Any] | None, path: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    return _drop_none({
        "canceler_type": _text(obj, "canceler_type", f"{path}.canceler_type"),
        "reason": _text(obj, "reason", f"{path}.reason", free_text=True),
        "created_at": _time(obj, "created_at", f"{path}.created_at"),
    })


def _calendly_event(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if obj is None or not obj.get("uri"):
        return None
    p = "payload.scheduled_event"
    event_type = obj.get("event_type")
    if isinstance(event_type, Mapping):  # an expanded event type object: keep its URI only
        event_type = event_type.get("uri")
    return _drop_none({
        "uri": _text(obj, "uri", f"{p}.uri"),
        "status": _text(obj, "status", f"{p}.status"),
        "event_type": _text({"event_type": event_type}, "event_type", f"{p}.event_type"),
        "start_time": _time(obj, "start_time", f"{p}.start_time"),
        "end_time": _time(obj, "end_time", f"{p}.end_time"),
        "created_at": _time(obj, "created_at", f"{p}.created_at"),
        "updated_at": _time(obj, "updated_at", f"{p}.updated_at"),
        "cancellation": _calendly_cancellation(_mapping(obj, "cancellation"), f"{p}.cancellation"),
    })


def stage_calendly(body: Any, *, workspace_id: str) -> StagedEvent:
    """The staging row of a Calendly delivery ``{event, created_at, created_by, payload}`` (SPEC §7).

    Invitee fields are read at the root of ``payload`` (current form) or from ``payload.invitee``
    (older form); the event from ``payload.scheduled_event`` (or ``scheduledEvent``, or an ``event``
    object). Handled events need ``payload.uri`` (the invitee) and ``payload.status``.

    Dedupe key: ``calendly:`` + SHA-256 of (workspace, event, invitee URI, invitee ``updated_at``,
    envelope ``created_at``) — docs/providers.md §2.6; a delivery without an invitee URI is keyed by
    the envelope alone.

    Raises:
        WebhookPayloadError: not an object, no ``event``/``payload``, a handled event without invitee
            URI or status, or a field of the wrong type / unparseable time.
    """
    if not isinstance(body, Mapping):
        raise WebhookPayloadError("not_an_object")
    event = _text(body, "event", "event", required=True)
    assert event is not None
    envelope_created = _time(body, "created_at", "created_at")
    payload = _mapping(body, "payload")
    if payload is None:
        raise WebhookPayloadError("missing_fields", ("payload",))
    if event not in CALENDLY_HANDLED:
        return StagedEvent(
            provider=Provider.CALENDLY, event_type=event,
            dedupe_key="calendly:"
            + _digest(workspace_id, event, envelope_created, _text(payload, "uri", "payload.uri")),
            provider_created_at=parse_timestamp(envelope_created) if envelope_created else None,
            payload=_drop_none({"event": event, "created_at": envelope_created}),
            status=STATUS_IGNORED, error=REASON_UNHANDLED,
        )
    invitee = _mapping(payload, "invitee") or payload
    p = "payload" if invitee is payload else "payload.invitee"
    uri = _text(invitee, "uri", f"{p}.uri", required=True)
    status = _text(invitee, "status", f"{p}.status")
    if status is None and isinstance(invitee.get("canceled"), bool):
        status = "canceled" if invitee["canceled"] else "active"
    if status is None:
        raise WebhookPayloadError("missing_fields", (f"{p}.status",))
    event_obj = next((payload[k] for k in ("scheduled_event", "scheduledEvent", "event")
                      if isinstance(payload.get(k), Mapping)), None)
    event_uri = invitee.get("event") if isinstance(invitee.get("event"), str) else None
    no_show = invitee.get("no_show")
    email = invitee.get("email")
    updated_at = _time(invitee, "updated_at", f"{p}.updated_at")
    staged_invitee = _drop_none({
        "uri": uri,
        "status": status,
        "event": _text({"event": event_uri}, "event", f"{p}.event"),
        "rescheduled": invitee.get("rescheduled") is True,
        "old_invitee": _text(invitee, "old_invitee", f"{p}.old_invitee"),
        "new_invitee": _text(invitee, "new_invitee", f"{p}.new_invitee"),
        "timezone": _text(invitee, "timezone", f"{p}.timezone"),
        "created_at": _time(invitee, "created_at", f"{p}.created_at"),
        "updated_at": updated_at,
        "cancellation": _calendly_cancellation(_mapping(invitee, "cancellation"), f"{p}.cancellation"),
        "no_show": (_drop_none({"uri": _text(no_show, "uri", f"{p}.no_show.uri"),
                                "created_at": _time(no_show, "created_at", f"{p}.no_show.created_at")})
                    if isinstance(no_show, Mapping) else (True if no_show is True else None)),
        "email_hash": email_hash(workspace_id, email) if isinstance(email, str) and email.strip() else None,
        "scheduled_event": _calendly_event(event_obj if isinstance(event_obj, Mapping) else None),
    })
    ordered_at = updated_at or envelope_created
    return StagedEvent(
        provider=Provider.CALENDLY,
        event_type=event,
        dedupe_key="calendly:" + _digest(workspace_id, event, uri, updated_at, envelope_created),
        provider_created_at=parse_timestamp(ordered_at) if ordered_at else None,
        payload=_drop_none({"event": event, "created_at": envelope_created, "payload": staged_invitee}),
    )


# ------------------------------------------------------------------------------------------------ GHL


def stage_ghl(body: Any, *, workspace_id: str) -> StagedEvent:
    """The staging row of a GHL delivery ``{type, locationId, appointment: {…}, webhookId, timestamp}``.

    Every signed delivery needs ``type``, ``webhookId`` and ``timestamp`` (GHL-WH-AUTH); appointment
    events also ``appointment.id``. Kept of the appointment: ids (``id``, ``calendarId``,
    ``contactId``, ``locationId``), ``appointmentStatus`` (or the misspelled ``appoinmentStatus``, or
    ``status``), ``startTime``/``endTime``/``dateAdded``/``dateUpdated`` (UTC); never title, notes,
    address, users or source. Dedupe key: ``ghl:`` + SHA-256 of (workspace, ``webhookId``).
    ``sent_at`` is ``timestamp`` (for the replay window; ISO string or epoch seconds/milliseconds).

    Raises:
        WebhookPayloadError: not an object, a required field missing, or a field of the wrong type.
    """
    if not isinstance(body, Mapping):
        raise WebhookPayloadError("not_an_object")
    missing = tuple(k for k in ("type", "webhookId", "timestamp") if body.get(k) in (None, ""))
    if missing:
        raise WebhookPayloadError("missing_fields", missing)
    event = _text(body, "type", "type", required=True)
    webhook_id = _text(body, "webhookId", "webhookId", required=True)
    assert event is not None and webhook_id is not None
    sent_at = _epoch_or_iso(body.get("timestamp"))
    if sent_at is None:
        raise WebhookPayloadError("invalid_field", ("timestamp",))
    location = _text(body, "locationId", "locationId")
    base = {"type": event, "locationId": location, "webhookId": webhook_id, "timestamp": _iso(sent_at)}
    key = "ghl:" + _digest(workspace_id, webhook_id)
    if event not in GHL_HANDLED:
        return StagedEvent(provider=Provider.GHL, event_type=event, dedupe_key=key, provider_created_at=sent_at,
                           payload=_drop_none(base), status=STATUS_IGNORED, error=REASON_UNHANDLED, sent_at=sent_at)
    appt = _mapping(body, "appointment")
    if appt is None:
        raise WebhookPayloadError("missing_fields", ("appointment",))
    p = "appointment"
    appt_id = next((v for v in (_text(appt, k, f"{p}.{k}") for k in ("id", "eventId", "appointmentId")) if v), None)
    if appt_id is None:
        raise WebhookPayloadError("missing_fields", (f"{p}.id",))
    status = next((v for v in (_text(appt, k, f"{p}.{k}") for k in ("appointmentStatus", "appoinmentStatus", "status"))
                   if v), None)
    date_updated = _time(appt, "dateUpdated", f"{p}.dateUpdated")
    staged_appt = _drop_none({
        "id": appt_id,
        "calendarId": _text(appt, "calendarId", f"{p}.calendarId"),
        "contactId": _text(appt, "contactId", f"{p}.contactId"),
        "locationId": _text(appt, "locationId", f"{p}.locationId"),
        "appointmentStatus": status,
        "startTime": _time(appt, "startTime", f"{p}.startTime"),
        "endTime": _time(appt, "endTime", f"{p}.endTime"),
        "dateAdded": _time(appt, "dateAdded", f"{p}.dateAdded"),
        "dateUpdated": date_updated,
        "deleted": True if appt.get("deleted") is True else None,
    })
    return StagedEvent(
        provider=Provider.GHL,
        event_type=event,
        dedupe_key=key,
        provider_created_at=parse_timestamp(date_updated) if date_updated else sent_at,
        payload={**_drop_none(base), "appointment": staged_appt},
        sent_at=sent_at,
    )


def _epoch_or_iso(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value >= 10**11 else value
        try:
            return check_range(datetime.fromtimestamp(seconds, tz=UTC))
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and len(value) <= 64:
        if value.strip().isdigit():
            return _epoch_or_iso(int(value.strip()))
        return parse_timestamp(value)
    return None
