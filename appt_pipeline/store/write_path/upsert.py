"""Step 3 of a round: the upsert of SPEC §4.1, and the status history it appends (SPEC §4.2).

Keys not found get a plain ``INSERT`` (time-ordered ids assigned in ``appt_obs``); found keys an
``INSERT … ON CONFLICT (provider key) DO UPDATE`` honouring the monotonic rules of §4.1 (stale
observations, terminal Calendly invitees, ``canceled_at`` never re-stamped, ``source`` never
overwritten). If a unique index objects to the plain INSERT, the round falls back to upserting every key.
"""

from collections import Counter
from collections.abc import Sequence

import psycopg
import sqlalchemy as sa


class ConcurrentKeyInsert(Exception):
    """Another transaction created one of our provider keys between our lock and our upsert; retried."""


_STALE = (
    "(EXCLUDED.provider_updated_at IS NOT NULL AND a.provider_updated_at IS NOT NULL"
    " AND EXCLUDED.provider_updated_at < a.provider_updated_at)"
)
_FROZEN = "(a.provider = 'CALENDLY' AND a.status IN ('CANCELED', 'RESCHEDULED'))"
# Calendly never reactivates an invitee; CANCELED may still be refined to RESCHEDULED (SPEC §4.1).
_NEW_STATUS = (
    f"(CASE WHEN {_STALE} THEN a.status"
    f" WHEN {_FROZEN} THEN (CASE WHEN a.status = 'CANCELED' AND EXCLUDED.status = 'RESCHEDULED'"
    " THEN EXCLUDED.status ELSE a.status END)"
    " ELSE EXCLUDED.status END)"
)
_ENDED = "('CANCELED', 'RESCHEDULED')"

_SET_CLAUSES = {
    "workspace_id": f"CASE WHEN {_STALE} THEN a.workspace_id ELSE EXCLUDED.workspace_id END",
    "lead_id": f"CASE WHEN {_STALE} THEN a.lead_id ELSE EXCLUDED.lead_id END",
    "calendly_scheduled_event_uri": f"CASE WHEN {_STALE} THEN coalesce(a.calendly_scheduled_event_uri, "
    "EXCLUDED.calendly_scheduled_event_uri) ELSE coalesce(EXCLUDED.calendly_scheduled_event_uri, "
    "a.calendly_scheduled_event_uri) END",
    "ghl_calendar_id": f"CASE WHEN {_STALE} THEN coalesce(a.ghl_calendar_id, EXCLUDED.ghl_calendar_id) "
    "ELSE coalesce(EXCLUDED.ghl_calendar_id, a.ghl_calendar_id) END",
    "calendly_event_type_uri": f"CASE WHEN {_STALE} THEN coalesce(a.calendly_event_type_uri, "
    "EXCLUDED.calendly_event_type_uri) ELSE coalesce(EXCLUDED.calendly_event_type_uri, "
    "a.calendly_event_type_uri) END",
    "start_at": f"CASE WHEN {_STALE} OR {_FROZEN} THEN coalesce(a.start_at, EXCLUDED.start_at) "
    "ELSE coalesce(EXCLUDED.start_at, a.start_at) END",
    "end_at": f"CASE WHEN {_STALE} OR {_FROZEN} THEN coalesce(a.end_at, EXCLUDED.end_at) "
    "ELSE coalesce(EXCLUDED.end_at, a.end_at) END",
    "timezone": f"CASE WHEN {_STALE} THEN coalesce(a.timezone, EXCLUDED.timezone) "
    "ELSE coalesce(EXCLUDED.timezone, a.timezone) END",
    "status": _NEW_STATUS,
    "status_changed_at": f"CASE WHEN {_NEW_STATUS} <> a.status THEN EXCLUDED.status_changed_at "
    "ELSE a.status_changed_at END",
    # the provider's cancellation time when known, else first seen; never re-stamped (SPEC §4.1)
    "canceled_at": f"CASE WHEN {_NEW_STATUS} IN {_ENDED} THEN (CASE WHEN a.status IN {_ENDED} "
    "THEN coalesce(a.canceled_at, EXCLUDED.canceled_at) ELSE EXCLUDED.canceled_at END) END",
    "cancel_reason": f"CASE WHEN {_NEW_STATUS} IN {_ENDED} THEN (CASE WHEN {_STALE} "
    "THEN coalesce(a.cancel_reason, EXCLUDED.cancel_reason) ELSE coalesce(EXCLUDED.cancel_reason, "
    "a.cancel_reason) END) END",
    "last_source": "EXCLUDED.last_source",
    "last_observed_at": "EXCLUDED.last_observed_at",
    "provider_updated_at": "GREATEST(a.provider_updated_at, EXCLUDED.provider_updated_at)",
    "legacy_lead_key": "coalesce(a.legacy_lead_key, EXCLUDED.legacy_lead_key)",
    "updated_at": "now()",
}

_INSERT_COLUMNS = (
    "workspace_id, lead_id, provider, ghl_appointment_id, calendly_invitee_uri, calendly_scheduled_event_uri, "
    "ghl_calendar_id, calendly_event_type_uri, start_at, end_at, timezone, status, status_changed_at, "
    "canceled_at, cancel_reason, source, last_source, last_observed_at, provider_updated_at, legacy_lead_key, "
    "created_at"
)
_INSERT_VALUES = (
    "o.workspace_id, o.lead_id, o.provider, o.ghl_appointment_id, o.calendly_invitee_uri, "
    "o.calendly_scheduled_event_uri, o.ghl_calendar_id, o.calendly_event_type_uri, o.start_at, o.end_at, "
    "o.timezone, o.status, o.status_changed_at, o.canceled_at, o.cancel_reason, o.source, o.source, "
    ":now, o.provider_updated_at, o.legacy_lead_key, coalesce(o.booked_at, :now)"
)

#: (arbiter column, staging filter) per key kind; each kind gets its own INSERT … ON CONFLICT.
_KEY_KINDS: tuple[tuple[str, str], ...] = (
    ("ghl_appointment_id", "o.provider = 'GHL'"),
    ("calendly_invitee_uri", "o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NOT NULL"),
    ("legacy_lead_key", "o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NULL"),
)


def _upsert_sql(arbiter: str, kind_filter: str) -> str:
    sets = ",\n        ".join(f"{col} = {expr}" for col, expr in _SET_CLAUSES.items())
    return f"""
    WITH up AS (
        INSERT INTO appointments AS a ({_INSERT_COLUMNS})
        SELECT {_INSERT_VALUES} FROM appt_obs o
        WHERE o.round = :round AND o.error_kind IS NULL AND {kind_filter}
        ORDER BY o.{arbiter}
        ON CONFLICT ({arbiter}) DO UPDATE SET
        {sets}
        RETURNING a.id, a.{arbiter} AS k, a.status, a.start_at, (a.xmax = 0) AS inserted
    )
    UPDATE appt_obs o SET appointment_id = up.id, new_status = up.status, is_new = up.inserted,
        start_changed = o.prev_found AND up.start_at IS DISTINCT FROM o.prev_start_at, new_start_at = up.start_at
    FROM up
    WHERE o.round = :round AND o.error_kind IS NULL AND {kind_filter} AND o.{arbiter} = up.k
    RETURNING o.prev_found, up.inserted
    """


_UPSERTS = tuple(_upsert_sql(arbiter, kind_filter) for arbiter, kind_filter in _KEY_KINDS)

# Fast path of the write (see write_rows): keys _LOCK_AND_NOTE_EXISTING did not find get their ids in the
# staging table and one plain INSERT (no speculative insertion, no RETURNING, no join back); only found keys
# (their rows are locked) go through INSERT … ON CONFLICT … DO UPDATE.
_ASSIGN_NEW_IDS = """
UPDATE appt_obs o SET appointment_id = appt_uuid_v7(), is_new = true, new_status = o.status
WHERE o.round = :round AND o.error_kind IS NULL AND NOT o.prev_found
"""
_INSERT_NEW = f"""
INSERT INTO appointments AS a (id, {_INSERT_COLUMNS})
SELECT o.appointment_id, {_INSERT_VALUES} FROM appt_obs o
WHERE o.round = :round AND o.error_kind IS NULL AND NOT o.prev_found
ORDER BY o.provider, o.ghl_appointment_id, o.calendly_invitee_uri, o.legacy_lead_key
"""
_UPSERTS_FOUND = tuple(_upsert_sql(arbiter, f"{kind_filter} AND o.prev_found") for arbiter, kind_filter in _KEY_KINDS)

# One row per created row, changed status or moved start (SPEC §4.3: from_status = to_status when only the time
# moved); the start times are set on creation (to) and on a move (from → to), null for a status-only change.
_STATUS_CHANGES = """
INSERT INTO appointment_status_changes
    (appointment_id, from_status, to_status, from_start_at, to_start_at, source, observed_at, provider_event_at,
     webhook_event_id)
SELECT appointment_id, prev_status, new_status,
       CASE WHEN start_changed THEN prev_start_at END,
       CASE WHEN is_new THEN start_at WHEN start_changed THEN new_start_at END,
       source, :now, provider_updated_at, webhook_event_id
FROM appt_obs
WHERE round = :round AND error_kind IS NULL AND (is_new OR prev_status IS DISTINCT FROM new_status OR start_changed)
ORDER BY ord
"""


def write_rows(conn: sa.Connection, params: dict[str, object], totals: Counter[str]) -> None:
    """Write the round's rows (step 3): fast path in a savepoint, else the general upserts.

    Fast path: a plain INSERT of the keys not found (their ids assigned in ``appt_obs``), then the
    upserts of the found keys. It writes exactly what the general upserts would, unless a unique
    index objects — a key inserted concurrently, or two staged rows of the round sharing a unique
    value across key kinds (e.g. ``legacy_lead_key``). Then the savepoint is rolled back and the
    round goes through the general upserts, which decide as always (DO UPDATE, an error, or
    :class:`ConcurrentKeyInsert`).
    """
    savepoint = conn.begin_nested()
    try:
        created = conn.execute(sa.text(_ASSIGN_NEW_IDS), params).rowcount
        if created:
            conn.execute(sa.text(_INSERT_NEW), params)
        found = _upsert(conn, _UPSERTS_FOUND, params)
    except sa.exc.IntegrityError as exc:
        savepoint.rollback()
        if not isinstance(exc.orig, psycopg.errors.UniqueViolation):
            raise
        found = _upsert(conn, _UPSERTS, params)
    else:
        savepoint.commit()
        found["created"] += created
    totals.update(found)


def _upsert(conn: sa.Connection, upserts: Sequence[str], params: dict[str, object]) -> Counter[str]:
    counts = Counter[str]()
    for upsert in upserts:
        for prev_found, inserted in conn.execute(sa.text(upsert), params):
            if not prev_found and not inserted:
                raise ConcurrentKeyInsert("a staged provider key was inserted concurrently")
            counts["created" if inserted else "updated"] += 1
    return counts



def append_status_changes(conn: sa.Connection, params: dict[str, object]) -> int:
    """Append one ``appointment_status_changes`` row per created row, changed status or moved start time of the
    round (SPEC §4.3)."""
    return conn.execute(sa.text(_STATUS_CHANGES), params).rowcount
