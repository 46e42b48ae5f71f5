"""Stored free slots per configured calendar / event type (docs/rules.md §9 "Availability", §1 tables).

Two tables: ``calendar_availability`` (one row per free slot start of a calendar) and
``calendar_availability_status`` (one row per configured calendar: last success ``fetched_at``,
``stale_at``, ``last_attempt_at``, ``last_error``, ``slot_count``), both keyed by
``(workspace_id, provider, calendar_key, availability_source)``.

Write rules:

* :func:`replace_calendar_slots` — a successful fetch: the calendar's previous slots are replaced by
  the new set with one ``DELETE`` and one ``INSERT … SELECT unnest(…)`` in the caller's transaction,
  and the status row records the success (``last_error`` cleared). A fetch older than the stored one
  (two refreshes racing) changes nothing: the status row is locked first and compared.
* :func:`record_refresh_failure` — a failed fetch: the slots stay as they are, the status row gets
  ``last_error`` (masked: e-mails and phones removed, cut to :data:`MAX_ERROR_CHARS`) and
  ``last_attempt_at``; ``fetched_at`` / ``stale_at`` / ``slot_count`` keep describing the slots kept.

All times are UTC ``datetime``; the functions take an open ``sa.Connection`` and never commit: run
writes inside ``engine.begin()`` so each calendar's change is one transaction.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from appt_pipeline.domain.calendars import CalendarRef, configured_calendars
from appt_pipeline.domain.redaction import mask_pii
from appt_pipeline.domain.vocab import AvailabilitySource, Provider

#: ``last_error`` is stored masked and cut to this many characters.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class AvailabilityStatus:
    """The refresh outcome of one calendar (a ``calendar_availability_status`` row).

    Attributes:
        calendar: the calendar / event type.
        slot_minutes: slot length the slots were stored with (minutes), ``None`` before a first success.
        slot_count: slots stored now.
        fetched_at: last successful fetch (UTC), ``None`` when it never succeeded.
        stale_at: ``fetched_at`` + 2 × the refresh interval (UTC), ``None`` when it never succeeded.
        last_attempt_at: last refresh attempt, successful or not (UTC).
        last_error: masked error of the last attempt, ``None`` after a success.
    """

    calendar: CalendarRef
    slot_minutes: int | None
    slot_count: int
    fetched_at: datetime | None
    stale_at: datetime | None
    last_attempt_at: datetime
    last_error: str | None

    def is_stale(self, now: datetime) -> bool:
        """True when the slots cannot be used as fresh at ``now``: never fetched, or ``now >= stale_at``."""
        return self.stale_at is None or now >= self.stale_at


@dataclass(frozen=True)
class StoredSlots:
    """What :func:`stored_free_slots` returns: the stored free slot starts of one calendar.

    Attributes:
        slots: sorted UTC slot starts in the asked range (by default from ``now`` on).
        stale: no successful fetch yet, no status row, or ``now >= stale_at`` (docs/rules.md §9: stale
            availability is never used as fresh; booking refreshes once, §8).
        fetched_at, stale_at: of the stored slots (``None`` when never fetched).
        last_error: masked error of the last refresh attempt, ``None`` when it succeeded.
        slot_minutes: slot length in minutes (``None`` when never fetched).
    """

    slots: list[datetime]
    stale: bool
    fetched_at: datetime | None
    stale_at: datetime | None
    last_error: str | None
    slot_minutes: int | None

    def offers(self, slot_start: datetime) -> bool:
        """True when ``slot_start`` (UTC) is among :attr:`slots` (exact instant)."""
        return slot_start in set(self.slots)


def _key(workspace_id: str, calendar: CalendarRef) -> dict[str, str]:
    return {"ws": workspace_id, "provider": Provider(calendar.provider).value, "key": calendar.calendar_key,
            "source": AvailabilitySource(calendar.availability_source).value}


_KEY_WHERE = ("workspace_id = :ws AND provider = CAST(:provider AS meeting_booking_provider) "
              "AND calendar_key = :key AND availability_source = CAST(:source AS availability_source)")

_CLAIM_SUCCESS = sa.text("""
INSERT INTO calendar_availability_status AS s
    (workspace_id, provider, calendar_key, availability_source, slot_minutes, slot_count,
     fetched_at, stale_at, last_attempt_at, last_error)
VALUES (:ws, CAST(:provider AS meeting_booking_provider), :key, CAST(:source AS availability_source),
        :minutes, :count, :fetched_at, :stale_at, :fetched_at, NULL)
ON CONFLICT (workspace_id, provider, calendar_key, availability_source) DO UPDATE
SET slot_minutes = EXCLUDED.slot_minutes, slot_count = EXCLUDED.slot_count, fetched_at = EXCLUDED.fetched_at,
    stale_at = EXCLUDED.stale_at, last_attempt_at = GREATEST(s.last_attempt_at, EXCLUDED.last_attempt_at),
    last_error = CASE WHEN s.last_attempt_at > EXCLUDED.last_attempt_at THEN s.last_error END
WHERE s.fetched_at IS NULL OR s.fetched_at <= EXCLUDED.fetched_at
RETURNING 1
""")

_DELETE_SLOTS = sa.text(f"DELETE FROM calendar_availability WHERE {_KEY_WHERE}")

_INSERT_SLOTS = sa.text("""
INSERT INTO calendar_availability
    (workspace_id, provider, calendar_key, availability_source, slot_start, slot_minutes, fetched_at, stale_at)
SELECT :ws, CAST(:provider AS meeting_booking_provider), :key, CAST(:source AS availability_source),
       s.slot_start, :minutes, :fetched_at, :stale_at
FROM (SELECT DISTINCT unnest(CAST(:slots AS timestamptz[])) AS slot_start) s
""")


def replace_calendar_slots(
    conn: sa.Connection,
    workspace_id: str,
    calendar: CalendarRef,
    slots: Sequence[datetime],
    *,
    slot_minutes: int,
    fetched_at: datetime,
    stale_at: datetime,
) -> bool:
    """Replace ``calendar``'s stored slots by ``slots`` and record the success (docs/rules.md §9).

    Args:
        conn: a connection inside a transaction (the caller commits; a failure rolls back and the
            previous slots stay).
        slots: free slot starts (UTC; duplicates are stored once).
        slot_minutes: slot length in minutes (> 0).
        fetched_at: when the answer was fetched (UTC); ``stale_at``: when it goes stale (UTC).

    Returns:
        True when stored; False when the stored slots come from a later fetch (nothing changed).

    Raises:
        ValueError: ``slot_minutes`` < 1 or ``stale_at`` before ``fetched_at``.
        sqlalchemy.exc.DBAPIError: the database refused the write (e.g. unknown workspace).
    """
    if slot_minutes < 1:
        raise ValueError("slot_minutes must be at least 1")
    if stale_at < fetched_at:
        raise ValueError("stale_at must not be before fetched_at")
    distinct = sorted(set(slots))
    params = {**_key(workspace_id, calendar), "minutes": slot_minutes, "count": len(distinct),
              "fetched_at": fetched_at, "stale_at": stale_at}
    if conn.execute(_CLAIM_SUCCESS, params).first() is None:
        return False
    conn.execute(_DELETE_SLOTS, params)
    if distinct:
        conn.execute(_INSERT_SLOTS, {**params, "slots": distinct})
    return True


_RECORD_FAILURE = sa.text("""
INSERT INTO calendar_availability_status AS s
    (workspace_id, provider, calendar_key, availability_source, slot_count, last_attempt_at, last_error)
VALUES (:ws, CAST(:provider AS meeting_booking_provider), :key, CAST(:source AS availability_source),
        0, :attempted_at, :error)
ON CONFLICT (workspace_id, provider, calendar_key, availability_source) DO UPDATE
SET last_attempt_at = EXCLUDED.last_attempt_at, last_error = EXCLUDED.last_error
WHERE s.last_attempt_at <= EXCLUDED.last_attempt_at
""")

_MARK_SLOTS_FAILED = sa.text(f"UPDATE calendar_availability SET last_error = :error WHERE {_KEY_WHERE}")


def safe_error(text: object) -> str:
    """``text`` as stored in ``last_error``: e-mails/phones masked (docs/rules.md §11), at most
    :data:`MAX_ERROR_CHARS` characters, never empty."""
    masked = " ".join(mask_pii(text).split()) or "unknown error"
    return masked if len(masked) <= MAX_ERROR_CHARS else masked[: MAX_ERROR_CHARS - 1] + "…"


def record_refresh_failure(
    conn: sa.Connection, workspace_id: str, calendar: CalendarRef, error: object, *, attempted_at: datetime
) -> str:
    """Record a failed refresh of ``calendar``: its slots are kept, ``last_error`` set (docs/rules.md §9).

    ``error`` is masked with :func:`safe_error` before it is stored (also on the kept slot rows'
    ``last_error``). A failure older than a success already stored changes nothing.

    Returns:
        The stored (masked) error text.
    """
    text = safe_error(error)
    params = {**_key(workspace_id, calendar), "attempted_at": attempted_at, "error": text}
    if conn.execute(_RECORD_FAILURE, params).rowcount:
        conn.execute(_MARK_SLOTS_FAILED, params)
    return text


def drop_unconfigured_calendars(conn: sa.Connection, workspace_id: str, keep: Iterable[CalendarRef]) -> int:
    """Delete the slots and status rows of the workspace's calendars not in ``keep`` (calendars no longer
    configured). Returns the number of status rows deleted."""
    kept = [f"{Provider(c.provider).value}\x1f{c.calendar_key}\x1f{AvailabilitySource(c.availability_source).value}"
            for c in keep]
    where = ("workspace_id = :ws AND NOT (provider::text || chr(31) || calendar_key || chr(31) "
             "|| availability_source::text = ANY(CAST(:kept AS text[])))")
    conn.execute(sa.text(f"DELETE FROM calendar_availability WHERE {where}"), {"ws": workspace_id, "kept": kept})
    return conn.execute(sa.text(f"DELETE FROM calendar_availability_status WHERE {where}"),
                        {"ws": workspace_id, "kept": kept}).rowcount


def _status(row: sa.RowMapping) -> AvailabilityStatus:
    return AvailabilityStatus(
        calendar=CalendarRef(Provider(row["provider"]), row["calendar_key"],
                             AvailabilitySource(row["availability_source"])),
        slot_minutes=row["slot_minutes"], slot_count=row["slot_count"], fetched_at=row["fetched_at"],
        stale_at=row["stale_at"], last_attempt_at=row["last_attempt_at"], last_error=row["last_error"],
    )


def availability_statuses(conn: sa.Connection, workspace_id: str) -> list[AvailabilityStatus]:
    """Every status row of the workspace, DEFAULT before DIRECT_BOOK, then by calendar key."""
    rows = conn.execute(sa.text(
        "SELECT * FROM calendar_availability_status WHERE workspace_id = :ws "
        "ORDER BY availability_source, provider, calendar_key"), {"ws": workspace_id}).mappings()
    return [_status(r) for r in rows]


def availability_status(conn: sa.Connection, workspace_id: str, calendar: CalendarRef) -> AvailabilityStatus | None:
    """The status row of one calendar, ``None`` when it was never refreshed.

    Matched by provider and calendar key; the row of ``calendar.availability_source`` is preferred, else the
    calendar's row under the other source (a direct-book booking on a workspace whose direct-book calendar
    is the default one finds the default's slots: one calendar is stored once, docs/rules.md §9)."""
    row = conn.execute(sa.text(
        "SELECT * FROM calendar_availability_status WHERE workspace_id = :ws "
        "AND provider = CAST(:provider AS meeting_booking_provider) AND calendar_key = :key "
        "ORDER BY (availability_source = CAST(:source AS availability_source)) DESC LIMIT 1"),
        _key(workspace_id, calendar)).mappings().first()
    return _status(row) if row else None


def stored_free_slots(
    conn: sa.Connection,
    workspace_id: str,
    calendar: CalendarRef,
    *,
    now: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
) -> StoredSlots:
    """The stored free slot starts of ``calendar`` in ``[start, end)`` and whether they are stale (§9, §8).

    ``calendar`` is matched as in :func:`availability_status` (provider and key; its own source preferred).

    Args:
        now: the reference time (UTC): staleness is judged at ``now``; ``start`` defaults to ``now``
            (slots that already began are not free); ``end`` defaults to no upper bound.

    Returns:
        :class:`StoredSlots` (``stale`` True and no slots when the calendar was never refreshed).
    """
    status = availability_status(conn, workspace_id, calendar)
    lo = start if start is not None else now
    stored_as = status.calendar if status is not None else calendar
    params = {**_key(workspace_id, stored_as), "lo": lo, "hi": end}
    slots = [r[0] for r in conn.execute(sa.text(
        f"SELECT slot_start FROM calendar_availability WHERE {_KEY_WHERE} AND slot_start >= :lo "
        "AND (CAST(:hi AS timestamptz) IS NULL OR slot_start < CAST(:hi AS timestamptz)) ORDER BY slot_start"),
        params)]
    if status is None:
        return StoredSlots(slots, True, None, None, None, None)
    return StoredSlots(slots, status.is_stale(now), status.fetched_at, status.stale_at, status.last_error,
                       status.slot_minutes)


def workspaces_due(conn: sa.Connection, workspace_ids: Iterable[str], *, refreshed_before: datetime) -> dict[str, str]:
    """Which of ``workspace_ids`` need an availability refresh, with the reason (the refresh schedule).

    A workspace is due when one of its configured calendars was never fetched (``never_fetched``), its
    last attempt failed (``last_error``), or its last success is older than ``refreshed_before``
    (``outdated``). Workspaces without a configured calendar are never due. Two queries in all.
    """
    ids = sorted(set(workspace_ids))
    if not ids:
        return {}
    workspaces = conn.execute(sa.text(
        "SELECT id, meeting_booking_provider, ghl_default_calendar_id, ghl_direct_book_calendar_id, "
        "calendly_event_type_uri, calendly_direct_book_event_type_uri FROM workspaces WHERE id = ANY(:ids)"),
        {"ids": ids}).mappings().all()
    statuses: dict[tuple[str, str, str, str], sa.RowMapping] = {
        (r["workspace_id"], r["provider"], r["calendar_key"], r["availability_source"]): r
        for r in conn.execute(sa.text(
            "SELECT workspace_id, provider::text AS provider, calendar_key, "
            "availability_source::text AS availability_source, fetched_at, last_error "
            "FROM calendar_availability_status WHERE workspace_id = ANY(:ids)"), {"ids": ids}).mappings()
    }
    due: dict[str, str] = {}
    for ws in workspaces:
        for cal in configured_calendars(ws):
            row = statuses.get((ws["id"], cal.provider.value, cal.calendar_key, cal.availability_source.value))
            reason = ("never_fetched" if row is None or row["fetched_at"] is None
                      else "last_error" if row["last_error"] is not None
                      else "outdated" if row["fetched_at"] < refreshed_before else None)
            if reason:
                due[ws["id"]] = reason
                break
    return due
