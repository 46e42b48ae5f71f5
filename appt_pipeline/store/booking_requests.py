"""Booking requests in SQL (SPEC §1 ``booking_requests``, §8 idempotency).

One row per (workspace, idempotency key) holds the first request's fingerprint and its answer. The pipeline
(``appt_pipeline.pipelines.booking``) books a lead under a PostgreSQL session advisory lock on (workspace, lead)
(:func:`try_lock_lead`), so of concurrent requests for one lead — with one key or several — exactly one works
while the others wait; the row itself is claimed with ``INSERT … ON CONFLICT DO NOTHING`` and read
``FOR UPDATE``.
Rows older than 30 days are deleted by :func:`purge_expired` (called before each claim, per workspace).

Also here: the one read of what a booking needs to know about its workspace and lead (:func:`booking_context`).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from appt_pipeline.domain.booking import IDEMPOTENCY_TTL, BookingState
from appt_pipeline.domain.vocab import AvailabilitySource, Provider, Source

#: First key of the two-int advisory locks of bookings (``'bk'``); the second is a hash of workspace and lead.
_LOCK_NAMESPACE = 0x626B


@dataclass(frozen=True)
class BookingRow:
    """A ``booking_requests`` row. ``provider_sent_at``: set while a provider POST may be in flight or may have
    reached the provider (cleared when the provider surely did not book)."""

    workspace_id: str
    idempotency_key: str
    request_hash: bytes
    lead_id: str
    state: BookingState
    reason: str | None
    message: str | None
    source: Source
    availability_source: AvailabilitySource
    slot_start: datetime
    provider: Provider | None
    ghl_calendar_id: str | None
    calendly_event_type_uri: str | None
    ghl_appointment_id: str | None
    calendly_invitee_uri: str | None
    calendly_scheduled_event_uri: str | None
    appointment_id: UUID | None
    provider_attempts: int
    provider_sent_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> "BookingRow":
        m = dict(row._mapping)
        return cls(**{**m, "request_hash": bytes(m["request_hash"]), "state": BookingState(m["state"]),
                      "source": Source(m["source"]),
                      "availability_source": AvailabilitySource(m["availability_source"]),
                      "provider": Provider(m["provider"]) if m["provider"] else None})

    @property
    def calendar_key(self) -> str | None:
        """The calendar id / event type URI the booking uses."""
        return self.ghl_calendar_id or self.calendly_event_type_uri


_COLUMNS = ", ".join(BookingRow.__dataclass_fields__)


def try_lock_lead(conn: sa.Connection, workspace_id: str, lead_id: str) -> bool:
    """Take the session advisory lock of booking (workspace, lead) on ``conn`` without waiting; True when taken.
    Hold ``conn`` (outside any transaction) until :func:`unlock_lead`; a closed session releases it too. (A hash
    collision of two leads only makes one wait for the other.)"""
    return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:ns, hashtext(:ws || chr(31) || :lead))"),
                             {"ns": _LOCK_NAMESPACE, "ws": workspace_id, "lead": lead_id}).scalar_one())


def unlock_lead(conn: sa.Connection, workspace_id: str, lead_id: str) -> None:
    """Release the lock :func:`try_lock_lead` took on ``conn``."""
    conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, hashtext(:ws || chr(31) || :lead))"),
                 {"ns": _LOCK_NAMESPACE, "ws": workspace_id, "lead": lead_id})


def purge_expired(conn: sa.Connection, workspace_id: str, now: datetime) -> int:
    """Delete the workspace's requests created more than 30 days before ``now`` (SPEC §8); returns how many."""
    result = conn.execute(sa.text("DELETE FROM booking_requests WHERE workspace_id = :ws AND created_at < :cutoff"),
                          {"ws": workspace_id, "cutoff": now - IDEMPOTENCY_TTL})
    return result.rowcount


def get_request(conn: sa.Connection, workspace_id: str, key: str, *, lock: bool = False) -> BookingRow | None:
    """The request of (workspace, key), ``FOR UPDATE`` when ``lock``; ``None`` when there is none."""
    sql = f"SELECT {_COLUMNS} FROM booking_requests WHERE workspace_id = :ws AND idempotency_key = :key"
    row = conn.execute(sa.text(sql + (" FOR UPDATE" if lock else "")), {"ws": workspace_id, "key": key}).first()
    return BookingRow.of(row) if row is not None else None


def claim_request(conn: sa.Connection, *, workspace_id: str, key: str, request_hash: bytes, lead_id: str,
                  slot_start: datetime, source: Source, availability_source: AvailabilitySource,
                  now: datetime) -> tuple[BookingRow, bool]:
    """Claim the key: ``INSERT … ON CONFLICT DO NOTHING``, then the row ``FOR UPDATE`` (in the caller's
    transaction). Returns the row and whether this call inserted it (``pending``)."""
    inserted = conn.execute(sa.text(
        f"""INSERT INTO booking_requests (workspace_id, idempotency_key, request_hash, lead_id, slot_start, source,
                                          availability_source, created_at, updated_at)
            VALUES (:ws, :key, :hash, :lead, :slot, CAST(:source AS appointment_source),
                    CAST(:asrc AS availability_source), :now, :now)
            ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
            RETURNING {_COLUMNS}"""),
        {"ws": workspace_id, "key": key, "hash": request_hash, "lead": lead_id, "slot": slot_start,
         "source": source.value, "asrc": availability_source.value, "now": now}).first()
    if inserted is not None:
        return BookingRow.of(inserted), True
    row = get_request(conn, workspace_id, key, lock=True)
    if row is None:  # the conflicting row was purged meanwhile (30 days old): claim again
        return claim_request(conn, workspace_id=workspace_id, key=key, request_hash=request_hash, lead_id=lead_id,
                             slot_start=slot_start, source=source, availability_source=availability_source, now=now)
    return row, False


def update_request(conn: sa.Connection, workspace_id: str, key: str, now: datetime, **values: Any) -> BookingRow:
    """Set columns of the request (``state``, ``reason``, ``message``, provider ids, ``appointment_id``,
    ``provider`` / calendar, ``provider_sent_at``; ``provider_attempts_inc=True`` adds one attempt) and
    ``updated_at``; returns the row."""
    inc = values.pop("provider_attempts_inc", False)
    for name in ("state", "provider", "source", "availability_source"):
        if name in values and values[name] is not None:
            values[name] = str(values[name].value if hasattr(values[name], "value") else values[name])
    sets = [f"{name} = :{name}" for name in values]
    if "provider" in values:
        sets[list(values).index("provider")] = "provider = CAST(:provider AS meeting_booking_provider)"
    if inc:
        sets.append("provider_attempts = provider_attempts + 1")
    sql = (f"UPDATE booking_requests SET {', '.join([*sets, 'updated_at = :now'])} "
           f"WHERE workspace_id = :ws AND idempotency_key = :key RETURNING {_COLUMNS}")
    row = conn.execute(sa.text(sql), {**values, "ws": workspace_id, "key": key, "now": now}).one()
    return BookingRow.of(row)


@dataclass(frozen=True)
class BookingContext:
    """What a booking reads about its workspace and lead (one statement). ``email`` is held in memory for the
    provider call only (never logged or stored elsewhere); ``upcoming_confirmed``: the lead has a CONFIRMED
    appointment starting after ``now`` (SPEC §8 ``already_booked``)."""

    workspace: dict[str, Any]
    lead_exists: bool
    email: str | None = None
    ghl_contact_id: str | None = None
    lead_timezone: str | None = None
    lead_auto_book: bool = True
    upcoming_confirmed: bool = False


def booking_context(conn: sa.Connection, workspace_id: str, lead_id: str, now: datetime) -> BookingContext | None:
    """The workspace row and the lead's booking facts; ``None`` for an unknown workspace, ``lead_exists=False``
    for a lead that is not in it."""
    row = conn.execute(sa.text(
        """SELECT to_jsonb(w) AS workspace, l.id IS NOT NULL AS lead_exists, l.email, l.ghl_contact_id,
                  l.timezone, l.auto_book_meetings_enabled,
                  EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = l.id AND a.workspace_id = w.id
                          AND a.status = 'CONFIRMED' AND a.start_at > :now) AS upcoming
           FROM workspaces w LEFT JOIN leads l ON l.workspace_id = w.id AND l.id = :lead
           WHERE w.id = :ws"""), {"ws": workspace_id, "lead": lead_id, "now": now}).first()
    if row is None:
        return None
    if not row.lead_exists:
        return BookingContext(workspace=dict(row.workspace), lead_exists=False)
    return BookingContext(workspace=dict(row.workspace), lead_exists=True,
                          email=(row.email or "").strip().lower() or None,
                          ghl_contact_id=(row.ghl_contact_id or "").strip() or None, lead_timezone=row.timezone,
                          lead_auto_book=bool(row.auto_book_meetings_enabled), upcoming_confirmed=bool(row.upcoming))
