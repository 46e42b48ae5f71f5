"""The one write path (SPEC §4): observations → appointment history + lead rollups, in one transaction.

Every writer stages its observations in the per-connection temp table ``appt_obs`` — from Python
(:func:`apply_observations`, via COPY) or from SQL (the migration's ``INSERT … SELECT``) — and calls
:func:`apply_staged`, which, set-based:

0. analyzes ``appt_obs`` when the batch is large (temp tables are never auto-analyzed), then locks
   every affected lead of the whole batch once (the observed leads and the leads the keys currently
   belong to), by primary-key lookups in id order, and keeps the locked ids and their workspace in
   the temp table ``appt_obs_locked``. Writers sharing a lead or a key queue here, before noting
   existing keys; no concurrent write of those leads' rows happens until commit.

Then round by round:

1. marks observations of unknown leads / leads of another workspace (answered by the lock set),
   upgrades event-only migrated rows, locks the existing rows of the staged provider keys (in id
   order) and notes them. A noted row owned by a lead we did not lock (the key moved while we waited
   for the lead locks) releases everything since the batch lock and takes it again with the new set
   (round 0), or locks that lead out of order (later rounds, normally never);
2. notes each lead's primary before the write (skipped with ``flags=False`` in a round without side
   effects, see :func:`apply_staged`);
3. writes: keys not found get a plain ``INSERT`` (time-ordered ids assigned in ``appt_obs``); found keys an
   ``INSERT … ON CONFLICT (provider key) DO UPDATE`` honouring the monotonic rules of §4.1 (stale
   observations, terminal Calendly invitees, ``canceled_at`` never re-stamped, ``source`` never
   overwritten). If a unique index objects to the plain INSERT (a key inserted concurrently, or rows
   of the round sharing a unique value), the round falls back to upserting every key;
4. appends status changes, links reschedules (§4.3), recomputes the rollups of every affected
   lead (§3, including a lead a key moved away from, §4.2);
5. applies lead status side effects (§3) and follow-up tasks (§4.4) from the per-observation
   flags, never from state read before the write, and never for MIGRATION/BACKFILL.

Steps that cannot match anything in a round are skipped, decided by one pass over the round
(``_ROUND_FLAGS``): exact reschedule links and the cycle breaker need link hints, the heuristic link
a non-MIGRATION source without provider links, step 5 a source with side effects.

A batch holding the same key several times is split into rounds (the n-th occurrence of each key
goes to round n), so observations of one key apply in the order given.
"""

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg
import sqlalchemy as sa
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from appt_pipeline.domain.observation import InvalidObservationError, Observation
from appt_pipeline.domain.rules import (
    RESCHEDULE_LINK_WINDOW,
    STATUS_PROTECTED_FROM_BOOKING,
    TASK_MEETING_CANCELED,
    TASK_MEETING_RESCHEDULED,
    resolve_timezone,
    task_message,
    utc_now,
)
from appt_pipeline.domain.vocab import Status
from appt_pipeline.store.engine import transaction
from appt_pipeline.store.rollups import PRIMARY_ORDER, rollup_update_sql

log = logging.getLogger(__name__)

#: Columns of the staging table, in COPY order (the observation fields plus the round number).
STAGE_COLUMNS: tuple[str, ...] = (
    "ord", "round", "workspace_id", "lead_id", "provider", "status", "source",
    "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri",
    "ghl_calendar_id", "calendly_event_type_uri", "start_at", "end_at", "timezone", "booked_at",
    "provider_updated_at", "canceled_at", "cancel_reason", "status_changed_at",
    "rescheduled_from_invitee_uri", "rescheduled_to_invitee_uri", "provider_links_reschedules",
    "legacy_lead_key", "webhook_event_id", "error_kind",
)

#: Batches at least this large get fresh planner statistics on the staging table before they apply.
ANALYZE_STAGE_ROWS = 1_000

CREATE_STAGE_SQL = """
CREATE TEMP TABLE IF NOT EXISTS appt_obs (
    ord                           integer NOT NULL,
    round                         integer NOT NULL DEFAULT 0,
    workspace_id                  text NOT NULL,
    lead_id                       text NOT NULL,
    provider                      meeting_booking_provider NOT NULL,
    status                        appointment_status NOT NULL,
    source                        appointment_source NOT NULL,
    ghl_appointment_id            text,
    calendly_invitee_uri          text,
    calendly_scheduled_event_uri  text,
    ghl_calendar_id               text,
    calendly_event_type_uri       text,
    start_at                      timestamptz,
    end_at                        timestamptz,
    timezone                      text,
    booked_at                     timestamptz,
    provider_updated_at           timestamptz,
    canceled_at                   timestamptz,
    cancel_reason                 text,
    status_changed_at             timestamptz,
    rescheduled_from_invitee_uri  text,
    rescheduled_to_invitee_uri    text,
    provider_links_reschedules    boolean NOT NULL DEFAULT false,
    legacy_lead_key               text,
    webhook_event_id              bigint,
    error_kind                    text,
    warning                       text,
    -- filled by apply_staged
    appointment_id                uuid,
    prev_found                    boolean NOT NULL DEFAULT false,
    prev_lead_id                  text,
    prev_status                   appointment_status,
    prev_start_at                 timestamptz,
    start_changed                 boolean NOT NULL DEFAULT false,
    is_new                        boolean,
    new_status                    appointment_status,
    primary_changed               boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS appt_obs_leads (
    lead_id             text PRIMARY KEY,
    side_effects        boolean NOT NULL,
    old_primary_id      uuid,
    old_primary_status  appointment_status,
    new_primary_id      uuid,
    new_primary_status  appointment_status
) ON COMMIT DELETE ROWS;
-- the leads this transaction has locked (and their workspace): apply_staged's lock set
CREATE TEMP TABLE IF NOT EXISTS appt_obs_locked (
    lead_id       text NOT NULL,  -- distinct (every insert excludes the ids present); no index to maintain
    workspace_id  text NOT NULL
) ON COMMIT DELETE ROWS;
"""


class ConcurrentKeyInsert(Exception):
    """Another transaction created one of our provider keys between our lock and our upsert; retried."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one observation (SPEC §4): flags that drive side effects, or ``error_kind``.

    ``index`` is the observation's position in the batch given. ``start_changed``: an existing row's
    ``start_at`` moved (a GHL reschedule keeps its id and changes the times, SPEC §4.3).
    """

    index: int
    appointment_id: UUID | None
    is_new: bool
    status_changed: bool
    previous_status: Status | None
    status: Status | None
    primary_changed: bool
    error_kind: str | None = None
    start_changed: bool = False

    # What the write means for an operator; reconciliation and webhook ingestion count the same way.
    @property
    def is_new_booking(self) -> bool:
        """A provider booking we did not know, CONFIRMED."""
        return self.error_kind is None and self.is_new and self.status is Status.CONFIRMED

    @property
    def is_cancellation(self) -> bool:
        """A known booking became CANCELED."""
        return self.error_kind is None and self.status_changed and self.status is Status.CANCELED

    @property
    def is_reschedule(self) -> bool:
        """Calendly: the old invitee of a reschedule became (or arrived as) RESCHEDULED; GHL: a known CONFIRMED
        booking keeps its id and moves to a new time (SPEC §4.3)."""
        if self.error_kind is not None:
            return False
        if self.status is Status.RESCHEDULED:
            return self.is_new or self.status_changed
        return self.start_changed and not self.is_new and self.status is Status.CONFIRMED


@dataclass(frozen=True, slots=True)
class StagedSummary:
    """Counters of one :func:`apply_staged` call."""

    staged: int
    created: int
    updated: int
    status_changes: int
    errors: int
    rollups_changed: int
    leads_status_changed: int
    tasks_created: int
    tasks_completed: int


def ensure_stage(conn: sa.Connection) -> None:
    """Create the session's staging temp tables if needed (rows vanish at commit)."""
    conn.exec_driver_sql(CREATE_STAGE_SQL)


# --------------------------------------------------------------------------------------------- upsert SQL

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

def _key_match(a: str) -> str:
    """Join condition of a staged observation ``o`` to the existing row ``a`` holding its key."""
    return f"""(
    (o.provider = 'GHL' AND {a}.ghl_appointment_id = o.ghl_appointment_id)
    OR (o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NOT NULL
        AND {a}.calendly_invitee_uri = o.calendly_invitee_uri)
    OR (o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NULL AND {a}.legacy_lead_key = o.legacy_lead_key)
)"""


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
        start_changed = o.prev_found AND up.start_at IS DISTINCT FROM o.prev_start_at
    FROM up
    WHERE o.round = :round AND o.error_kind IS NULL AND {kind_filter} AND o.{arbiter} = up.k
    RETURNING o.prev_found, up.inserted
    """


_UPSERTS = tuple(_upsert_sql(arbiter, kind_filter) for arbiter, kind_filter in _KEY_KINDS)

# Fast path of the write (see _write_rows): keys _LOCK_AND_NOTE_EXISTING did not find get their ids in the
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

# ------------------------------------------------------------------------------------------- round steps

# Every existing lead the round observes is locked (and in appt_obs_locked) by now, and a locked lead can be
# neither deleted nor moved: the lock set answers "exists / same workspace" without reading ``leads``.
_MARK_UNKNOWN_LEADS = """
UPDATE appt_obs o
SET error_kind = CASE WHEN EXISTS (SELECT 1 FROM appt_obs_locked k WHERE k.lead_id = o.lead_id)
                      THEN 'lead_in_other_workspace' ELSE 'unknown_lead' END
WHERE o.round = :round AND o.error_kind IS NULL
  AND NOT EXISTS (SELECT 1 FROM appt_obs_locked k WHERE k.lead_id = o.lead_id AND k.workspace_id = o.workspace_id)
"""

# A Calendly observation with an invitee URI upgrades the lead's event-only (migrated) row (SPEC §5).
_UPGRADE_EVENT_ONLY_ROWS = """
UPDATE appointments a SET calendly_invitee_uri = o.calendly_invitee_uri, updated_at = now()
FROM appt_obs o
WHERE o.round = :round AND o.error_kind IS NULL AND o.provider = 'CALENDLY'
  AND o.calendly_invitee_uri IS NOT NULL
  AND a.provider = 'CALENDLY' AND a.calendly_invitee_uri IS NULL
  AND a.lead_id = o.lead_id AND a.calendly_scheduled_event_uri = o.calendly_scheduled_event_uri
  AND NOT EXISTS (SELECT 1 FROM appointments b WHERE b.calendly_invitee_uri = o.calendly_invitee_uri)
  AND a.id = (SELECT min(c.id::text)::uuid FROM appointments c
              WHERE c.lead_id = o.lead_id AND c.calendly_scheduled_event_uri = o.calendly_scheduled_event_uri
                AND c.calendly_invitee_uri IS NULL)
"""

def rows_by_key(filter_sql: str) -> str:
    """SELECT ``kind, k, id`` of the existing rows holding a key staged in ``appt_obs`` (rows matching ``filter_sql``).

    ``kind`` is the key kind of :data:`KEY_KIND` ('G' GHL id, 'C' invitee URI, 'L' legacy lead key). ``col =
    ANY (ARRAY(…))`` makes each kind one sorted scan of its unique index, whatever the table's size (a join is
    planned as a hash join over a scan of all of ``appointments``, or as an OR of three probes per row).
    """
    return f"""
    SELECT 'G' AS kind, a.ghl_appointment_id AS k, a.id FROM appointments a
    WHERE a.ghl_appointment_id = ANY (ARRAY(
        SELECT o.ghl_appointment_id FROM appt_obs o WHERE {filter_sql} AND o.provider = 'GHL'))
    UNION ALL
    SELECT 'C', a.calendly_invitee_uri, a.id FROM appointments a
    WHERE a.calendly_invitee_uri = ANY (ARRAY(
        SELECT o.calendly_invitee_uri FROM appt_obs o
        WHERE {filter_sql} AND o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NOT NULL))
    UNION ALL
    SELECT 'L', a.legacy_lead_key, a.id FROM appointments a
    WHERE a.legacy_lead_key = ANY (ARRAY(
        SELECT o.legacy_lead_key FROM appt_obs o
        WHERE {filter_sql} AND o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NULL))"""


#: (kind, key) of a staged observation ``o``, the counterpart of :func:`rows_by_key` (equality joins hash).
KEY_KIND = "(CASE WHEN o.provider = 'GHL' THEN 'G' WHEN o.calendly_invitee_uri IS NOT NULL THEN 'C' ELSE 'L' END)"
KEY_VALUE = "coalesce(o.ghl_appointment_id, o.calendly_invitee_uri, o.legacy_lead_key)"

# The existing rows of the round's keys are locked in id order (FOR UPDATE re-reads a row a concurrent writer
# changed while we waited) and noted on their observations.
_LOCK_AND_NOTE_EXISTING = f"""
WITH found AS ({rows_by_key("o.round = :round AND o.error_kind IS NULL")}
),
prev AS (
    SELECT a.id, a.workspace_id, a.lead_id, a.status, a.start_at FROM appointments a
    WHERE a.id = ANY (ARRAY(SELECT id FROM found))
    ORDER BY a.id
    FOR UPDATE
)
UPDATE appt_obs o SET prev_found = true, appointment_id = a.id, prev_lead_id = a.lead_id,
    prev_status = a.status, prev_start_at = a.start_at,
    error_kind = CASE WHEN a.workspace_id <> o.workspace_id THEN 'provider_key_in_other_workspace' END
FROM found f JOIN prev a ON a.id = f.id
WHERE o.round = :round AND o.error_kind IS NULL AND f.kind = {KEY_KIND} AND f.k = {KEY_VALUE}
"""

# Before any round, the leads of the whole batch are locked in one id-ordered pass: the observed leads and the
# current owners of the staged keys. This precedes every snapshot that notes existing keys, so writers sharing a
# lead or a key queue here (no lock-order deadlock, also across rounds) and then see every key the other
# committed (no ConcurrentKeyInsert). See _lock_batch_leads for keys that move while we wait.
_BATCH_LEAD_IDS = f"""
    SELECT lead_id FROM appt_obs WHERE error_kind IS NULL
    UNION SELECT a.lead_id FROM appointments a
    WHERE a.id = ANY (ARRAY(SELECT id FROM ({rows_by_key("o.error_kind IS NULL")}) f))
"""


def _lock_leads_sql(lead_ids_sql: str) -> str:
    """Lock the existing leads among ``lead_ids_sql`` in id order and add them to ``appt_obs_locked``.

    ``id = ANY (ARRAY(…))`` makes it primary-key lookups in id order; ``id IN (…)`` is planned as a hash
    semi-join over all of ``leads``, whatever the batch size.
    """
    return f"""
WITH locked AS (
    SELECT l.id, l.workspace_id FROM leads l
    WHERE l.id = ANY (ARRAY({lead_ids_sql}))
    ORDER BY l.id
    FOR UPDATE
)
INSERT INTO appt_obs_locked (lead_id, workspace_id) SELECT id, workspace_id FROM locked
"""


_LOCK_BATCH_LEADS = _lock_leads_sql(_BATCH_LEAD_IDS)

# After noting a round's existing keys (their rows are locked now and cannot move): does one belong to a lead we
# did not lock — a key that moved to another lead while we waited for the lead locks? Temp tables only.
_OWNERS_UNLOCKED = """
SELECT EXISTS (
    SELECT 1 FROM appt_obs o
    WHERE o.round = :round AND o.error_kind IS NULL AND o.prev_lead_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM appt_obs_locked k WHERE k.lead_id = o.prev_lead_id))
"""

# Locks those owners, out of batch order (normally never needed; a deadlock is retried by write_observations).
_LOCK_LEADS = _lock_leads_sql("""
        SELECT prev_lead_id FROM appt_obs
        WHERE round = :round AND error_kind IS NULL AND prev_lead_id IS NOT NULL
        EXCEPT SELECT lead_id FROM appt_obs_locked""")

# Which of the optional steps can match anything in this round (one pass instead of running them all):
# exact reschedule links need hints, the heuristic link a source without provider links that is not the
# migration, lead status and tasks a source with side effects.
_ROUND_FLAGS = """
SELECT coalesce(bool_or(rescheduled_from_invitee_uri IS NOT NULL), false),
       coalesce(bool_or(rescheduled_to_invitee_uri IS NOT NULL), false),
       coalesce(bool_or(NOT provider_links_reschedules AND source <> 'MIGRATION'), false),
       coalesce(bool_or(source NOT IN ('MIGRATION', 'BACKFILL')), false)
FROM appt_obs WHERE round = :round AND error_kind IS NULL
"""

_NOTE_LEADS = f"""
INSERT INTO appt_obs_leads (lead_id, side_effects, old_primary_id, old_primary_status)
SELECT f.lead_id, f.side_effects, p.id, p.status
FROM (
    SELECT lead_id, bool_or(side_effects) AS side_effects FROM (
        SELECT lead_id, source NOT IN ('MIGRATION', 'BACKFILL') AS side_effects
        FROM appt_obs WHERE round = :round AND error_kind IS NULL
        UNION ALL
        -- the lead a key moves away from: its primary changes by this write too (SPEC §3, §4.2)
        SELECT prev_lead_id, source NOT IN ('MIGRATION', 'BACKFILL') FROM appt_obs
        WHERE round = :round AND error_kind IS NULL AND prev_lead_id IS NOT NULL
    ) s GROUP BY lead_id
) f
LEFT JOIN (
    SELECT DISTINCT ON (a.lead_id) a.lead_id, a.id, a.status FROM appointments a
    WHERE a.lead_id IN (SELECT lead_id FROM appt_obs WHERE round = :round AND error_kind IS NULL
                        UNION SELECT prev_lead_id FROM appt_obs WHERE round = :round AND error_kind IS NULL)
    ORDER BY a.lead_id, {PRIMARY_ORDER}
) p ON p.lead_id = f.lead_id
"""

_STATUS_CHANGES = """
INSERT INTO appointment_status_changes
    (appointment_id, from_status, to_status, source, observed_at, provider_event_at, webhook_event_id)
SELECT appointment_id, prev_status, new_status, source, :now, provider_updated_at, webhook_event_id
FROM appt_obs
WHERE round = :round AND error_kind IS NULL AND (is_new OR prev_status IS DISTINCT FROM new_status)
ORDER BY ord
"""


def _no_cycle(new_id: str, old_id: str) -> str:
    """True unless linking ``new_id`` → ``old_id`` closes a cycle (``new_id`` is ``old_id`` or its ancestor)."""
    return f"""NOT EXISTS (
    WITH RECURSIVE up(id) AS (
        SELECT {old_id}
        UNION
        SELECT x.rescheduled_from_id FROM appointments x JOIN up ON x.id = up.id WHERE x.rescheduled_from_id IS NOT NULL
    )
    SELECT 1 FROM up WHERE up.id = {new_id})"""


# Exact links from the provider (Calendly old_invitee / new_invitee), either arrival order (SPEC §4.3); a hint
# never links to a row of another workspace (tenancy).
# Contradictory hints never close a cycle (reschedule chains stay acyclic).
_LINK_FROM_OLD = f"""
UPDATE appointments n SET rescheduled_from_id = old.id, updated_at = now()
FROM appt_obs o JOIN appointments old ON old.calendly_invitee_uri = o.rescheduled_from_invitee_uri
                                   AND old.workspace_id = o.workspace_id
WHERE o.round = :round AND o.error_kind IS NULL AND n.id = o.appointment_id
  AND old.id <> n.id AND n.rescheduled_from_id IS DISTINCT FROM old.id AND {_no_cycle("n.id", "old.id")}
"""
_LINK_TO_NEW = f"""
UPDATE appointments n SET rescheduled_from_id = o.appointment_id, updated_at = now()
FROM appt_obs o
WHERE o.round = :round AND o.error_kind IS NULL AND n.calendly_invitee_uri = o.rescheduled_to_invitee_uri
  AND n.workspace_id = o.workspace_id AND n.id <> o.appointment_id
  AND n.rescheduled_from_id IS DISTINCT FROM o.appointment_id
  AND {_no_cycle("n.id", "o.appointment_id")}
"""

# Hints contradicting each other within one round (A's old invitee is B, B's is A) are applied by one
# statement, which the guard above cannot see: cut every cycle through this round's rows at its smallest id.
_BREAK_LINK_CYCLES = """
WITH RECURSIVE walk(start_id, id) AS (
    SELECT a.id, a.rescheduled_from_id FROM appointments a
    WHERE a.id IN (SELECT appointment_id FROM appt_obs WHERE round = :round AND error_kind IS NULL)
      AND a.rescheduled_from_id IS NOT NULL
    UNION
    SELECT w.start_id, a.rescheduled_from_id FROM walk w JOIN appointments a ON a.id = w.id
    WHERE a.rescheduled_from_id IS NOT NULL
),
members AS (SELECT w.start_id, w.id FROM walk w WHERE w.start_id IN (SELECT start_id FROM walk WHERE id = start_id))
UPDATE appointments a SET rescheduled_from_id = NULL, updated_at = now()
WHERE a.id IN (SELECT min(id::text)::uuid FROM members GROUP BY start_id)
"""

# The seed's heuristic, only when the provider gives no link: a new CONFIRMED row of the same lead and
# provider within 6 hours of a cancellation, either order, links to it (SPEC §4.3).
_WINDOW = f"interval '{int(RESCHEDULE_LINK_WINDOW.total_seconds())} seconds'"
_HEURISTIC_LINK = f"""
WITH pairs AS (
    -- new CONFIRMED rows looking for the cancellation they replace
    SELECT n.id AS new_id, c.id AS old_id, abs(extract(epoch FROM n.created_at - c.canceled_at)) AS gap
    FROM appt_obs o
    JOIN appointments n ON n.id = o.appointment_id
    JOIN appointments c ON c.lead_id = n.lead_id AND c.provider = n.provider AND c.status = 'CANCELED'
                       AND c.id <> n.id AND c.canceled_at IS NOT NULL
                       AND c.canceled_at BETWEEN n.created_at - {_WINDOW} AND n.created_at + {_WINDOW}
    WHERE o.round = :round AND o.error_kind IS NULL AND NOT o.provider_links_reschedules
      AND o.source <> 'MIGRATION' AND o.is_new AND n.status = 'CONFIRMED'
    UNION ALL
    -- rows that just became CANCELED looking for the booking that replaced them
    SELECT n.id, c.id, abs(extract(epoch FROM n.created_at - c.canceled_at))
    FROM appt_obs o
    JOIN appointments c ON c.id = o.appointment_id
    JOIN appointments n ON n.lead_id = c.lead_id AND n.provider = c.provider AND n.status = 'CONFIRMED'
                       AND n.id <> c.id
                       AND n.created_at BETWEEN c.canceled_at - {_WINDOW} AND c.canceled_at + {_WINDOW}
    WHERE o.round = :round AND o.error_kind IS NULL AND NOT o.provider_links_reschedules
      AND o.source <> 'MIGRATION' AND c.status = 'CANCELED' AND o.prev_status IS DISTINCT FROM 'CANCELED'
),
free AS (
    SELECT p.* FROM pairs p
    JOIN appointments n ON n.id = p.new_id
    JOIN appointments c ON c.id = p.old_id
    WHERE n.rescheduled_from_id IS NULL AND c.rescheduled_from_id IS DISTINCT FROM n.id
      AND NOT EXISTS (SELECT 1 FROM appointments s WHERE s.rescheduled_from_id = p.old_id)
      AND {_no_cycle("p.new_id", "p.old_id")}
),
best_per_new AS (SELECT DISTINCT ON (new_id) * FROM free ORDER BY new_id, gap, old_id),
best AS (SELECT DISTINCT ON (old_id) * FROM best_per_new ORDER BY old_id, gap, new_id)
UPDATE appointments n SET rescheduled_from_id = best.old_id, updated_at = now()
FROM best WHERE n.id = best.new_id
"""

_NOTE_NEW_PRIMARY = f"""
UPDATE appt_obs_leads f SET new_primary_id = p.id, new_primary_status = p.status
FROM (
    SELECT DISTINCT ON (a.lead_id) a.lead_id, a.id, a.status FROM appointments a
    WHERE a.lead_id IN (SELECT lead_id FROM appt_obs_leads)
    ORDER BY a.lead_id, {PRIMARY_ORDER}
) p
WHERE p.lead_id = f.lead_id
"""

# appt_obs_leads holds only the current round: note each observation's flag before the next round.
_NOTE_PRIMARY_CHANGED = """
UPDATE appt_obs o SET primary_changed =
    ROW(f.old_primary_id, f.old_primary_status) IS DISTINCT FROM ROW(f.new_primary_id, f.new_primary_status)
FROM appt_obs_leads f
WHERE o.round = :round AND o.error_kind IS NULL AND f.lead_id = o.lead_id
"""

_ROLLUPS = rollup_update_sql("SELECT lead_id FROM appt_obs_leads")

# The same recompute for a round without side effects whose caller reads no flags (apply_staged(flags=False)):
# the round's leads straight from appt_obs, without noting them in appt_obs_leads first.
_ROLLUPS_OF_ROUND = rollup_update_sql(
    """SELECT lead_id FROM appt_obs WHERE round = :round AND error_kind IS NULL
       UNION ALL SELECT prev_lead_id FROM appt_obs
       WHERE round = :round AND error_kind IS NULL AND prev_lead_id IS NOT NULL"""
)

# Lead status side effects when the primary (row or its status) changed (SPEC §3).
_LEAD_STATUS = f"""
UPDATE leads l SET status = CASE WHEN f.new_primary_status = 'CONFIRMED' THEN 'meeting-booked' ELSE 'qualified' END,
    updated_at = now()
FROM appt_obs_leads f
WHERE l.id = f.lead_id AND f.side_effects
  AND ROW(f.old_primary_id, f.old_primary_status) IS DISTINCT FROM ROW(f.new_primary_id, f.new_primary_status)
  AND (
    (f.new_primary_status = 'CONFIRMED'
        AND l.status NOT IN ({", ".join(repr(s) for s in sorted(STATUS_PROTECTED_FROM_BOOKING))}, 'meeting-booked'))
    OR (f.new_primary_status IN {_ENDED} AND l.status = 'meeting-booked'
        AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = l.id AND a.status = 'CONFIRMED'))
  )
"""

# A new CONFIRMED booking completes the lead's pending meeting-canceled task (SPEC §4.4).
_COMPLETE_TASKS = f"""
UPDATE follow_up_tasks t SET status = 'completed', completed_at = :now, updated_at = :now
WHERE t.status = 'pending' AND t.type = '{TASK_MEETING_CANCELED}'
  AND t.lead_id IN (SELECT lead_id FROM appt_obs
                    WHERE round = :round AND error_kind IS NULL AND is_new AND new_status = 'CONFIRMED'
                      AND source NOT IN ('MIGRATION', 'BACKFILL'))
"""

# Candidates for new tasks: a CONFIRMED primary that became CANCELED; a row that became RESCHEDULED.
# ``rebooked``: a new CONFIRMED booking of the lead follows the cancellation in this round, which (as with two
# separate writes) completes the task at once — _COMPLETE_TASKS ran before the task existed.
_TASK_CANDIDATES = f"""
SELECT DISTINCT ON (o.lead_id, kind) o.lead_id, o.appointment_id, kind, a.start_at, l.timezone, w.timezone,
    (kind = '{TASK_MEETING_CANCELED}' AND EXISTS (
        SELECT 1 FROM appt_obs b
        WHERE b.round = :round AND b.error_kind IS NULL AND b.lead_id = o.lead_id AND b.ord > o.ord
          AND b.is_new AND b.new_status = 'CONFIRMED' AND b.source NOT IN ('MIGRATION', 'BACKFILL'))) AS rebooked
FROM (
    SELECT o.*, CASE WHEN o.new_status = 'RESCHEDULED' THEN '{TASK_MEETING_RESCHEDULED}'
                     ELSE '{TASK_MEETING_CANCELED}' END AS kind
    FROM appt_obs o JOIN appt_obs_leads f ON f.lead_id = o.lead_id
    WHERE o.round = :round AND o.error_kind IS NULL AND o.source NOT IN ('MIGRATION', 'BACKFILL')
      AND NOT o.is_new AND o.prev_status IS DISTINCT FROM o.new_status
      AND (o.new_status = 'RESCHEDULED'
           OR (o.new_status = 'CANCELED' AND o.prev_status = 'CONFIRMED' AND f.old_primary_id = o.appointment_id))
) o
JOIN appointments a ON a.id = o.appointment_id
JOIN leads l ON l.id = o.lead_id
JOIN workspaces w ON w.id = l.workspace_id
ORDER BY o.lead_id, kind, o.ord DESC
"""

_INSERT_TASK = """
INSERT INTO follow_up_tasks
    (lead_id, appointment_id, type, due_date, status, is_urgent, suggested_message, completed_at)
VALUES (:lead_id, :appointment_id, :type, :now, CASE WHEN :rebooked THEN 'completed' ELSE 'pending' END, true,
        :message, CASE WHEN :rebooked THEN CAST(:now AS timestamptz) END)
ON CONFLICT (lead_id, type) WHERE status = 'pending' DO NOTHING
"""


# Rounds and staged rows of the batch.
_STAGE_SIZE = "SELECT coalesce(max(round), -1) + 1, count(*) FROM appt_obs"

# The staging table is never auto-analyzed: without statistics the planner takes a 50k-row batch for a handful
# of rows and picks nested loops that are quadratic in the batch (measured: 371 s instead of 2.5 s for one
# upsert of a 50k-row batch). A small sample is enough (30 ms instead of 170 ms for 50k rows).
_ANALYZE_STAGE = (
    "SET LOCAL default_statistics_target = 10; ANALYZE appt_obs; SET LOCAL default_statistics_target TO DEFAULT"
)


def apply_staged(conn: sa.Connection, *, now: datetime | None = None, flags: bool = True) -> StagedSummary:
    """Apply every row staged in ``appt_obs`` through SPEC §4, in the caller's transaction.

    Rows with ``error_kind`` already set are left alone (counted as errors). ``now`` (UTC) is the
    write's clock and the §3 reference time. Raises :class:`ConcurrentKeyInsert` when another
    transaction created a staged key meanwhile — retry the whole transaction
    (:func:`write_observations` does).

    ``flags=False`` is for callers that read no per-observation flags from ``appt_obs`` (the
    migration): in a round without side effects (only MIGRATION/BACKFILL sources) the primary
    before/after the write is not noted, so ``primary_changed`` stays NULL. Tables and the summary
    are the same either way (the rollups of every affected lead are still recomputed).
    """
    now = now or utc_now()
    totals = Counter[str]()
    rounds, staged = conn.exec_driver_sql(_STAGE_SIZE).one()
    if staged >= ANALYZE_STAGE_ROWS:
        conn.exec_driver_sql(_ANALYZE_STAGE)
    if rounds:
        _lock_batch_and_note_first_round(conn, {"round": 0})
    for round_no in range(rounds):
        p = {"round": round_no, "now": now, "ref": now}
        if round_no:
            _note_existing(conn, p)
            if conn.execute(sa.text(_OWNERS_UNLOCKED), p).scalar_one():
                conn.execute(sa.text(_LOCK_LEADS), p)
        from_hints, to_hints, heuristic, side_effects = conn.execute(sa.text(_ROUND_FLAGS), p).one()
        primaries = flags or side_effects
        if primaries:
            conn.exec_driver_sql("DELETE FROM appt_obs_leads")
            conn.execute(sa.text(_NOTE_LEADS), p)
        _write_rows(conn, p, totals)
        totals["status_changes"] += conn.execute(sa.text(_STATUS_CHANGES), p).rowcount
        if from_hints:
            conn.execute(sa.text(_LINK_FROM_OLD), p)
        if to_hints:
            conn.execute(sa.text(_LINK_TO_NEW), p)
        if from_hints or to_hints:
            conn.execute(sa.text(_BREAK_LINK_CYCLES), p)
        if heuristic:
            conn.execute(sa.text(_HEURISTIC_LINK), p)
        if primaries:
            conn.execute(sa.text(_NOTE_NEW_PRIMARY), p)
            conn.execute(sa.text(_NOTE_PRIMARY_CHANGED), p)
            totals["rollups_changed"] += len(conn.execute(sa.text(_ROLLUPS), p).all())
        else:
            totals["rollups_changed"] += len(conn.execute(sa.text(_ROLLUPS_OF_ROUND), p).all())
        if side_effects:
            totals["leads_status_changed"] += conn.execute(sa.text(_LEAD_STATUS), p).rowcount
            totals["tasks_completed"] += conn.execute(sa.text(_COMPLETE_TASKS), p).rowcount
            totals["tasks_created"] += _create_tasks(conn, p)
    counts = conn.exec_driver_sql(
        "SELECT count(*), count(*) FILTER (WHERE error_kind IS NOT NULL) FROM appt_obs"
    ).one()
    return StagedSummary(
        staged=int(counts[0]),
        errors=int(counts[1]),
        created=totals["created"],
        updated=totals["updated"],
        status_changes=totals["status_changes"],
        rollups_changed=totals["rollups_changed"],
        leads_status_changed=totals["leads_status_changed"],
        tasks_created=totals["tasks_created"],
        tasks_completed=totals["tasks_completed"],
    )


def _write_rows(conn: sa.Connection, params: dict[str, object], totals: Counter[str]) -> None:
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


def _note_existing(conn: sa.Connection, params: dict[str, object]) -> None:
    """Step 1 of a round: unknown leads, event-only upgrades, then lock and note the existing keys' rows."""
    conn.execute(sa.text(_MARK_UNKNOWN_LEADS), params)
    conn.execute(sa.text(_UPGRADE_EVENT_ONLY_ROWS), params)
    conn.execute(sa.text(_LOCK_AND_NOTE_EXISTING), params)


def _lock_batch_and_note_first_round(conn: sa.Connection, params: dict[str, object], attempts: int = 5) -> None:
    """Lock the batch's leads in id order, then note round 0's existing keys; start again if a key moved.

    The lead set (observed leads and current owners of the staged keys) is read at the start of the locking
    statement; a writer we waited for may have moved a staged key to a lead outside it. Noting the round's
    existing keys locks their rows (they cannot move any more) and shows such an owner. Locking it then would be
    out of order (a deadlock), so everything since the savepoint is undone — locks released, ``appt_obs`` and
    ``appt_obs_locked`` as before — and taken again with the new set. A set still moving after ``attempts`` is
    locked out of order (a deadlock there is retried by :func:`write_observations`). Later rounds observe the
    same keys again (the n-th occurrence of each key is in round n), so their owners are our leads.
    """
    conn.exec_driver_sql("DELETE FROM appt_obs_locked")
    for _ in range(attempts):
        savepoint = conn.begin_nested()
        conn.exec_driver_sql(_LOCK_BATCH_LEADS)
        _note_existing(conn, params)
        if not conn.execute(sa.text(_OWNERS_UNLOCKED), params).scalar_one():
            savepoint.commit()
            return
        savepoint.rollback()
    conn.exec_driver_sql(_LOCK_BATCH_LEADS)
    _note_existing(conn, params)
    conn.execute(sa.text(_LOCK_LEADS), params)


def _create_tasks(conn: sa.Connection, params: dict[str, object]) -> int:
    rows = conn.execute(sa.text(_TASK_CANDIDATES), params).all()
    created = 0
    for lead_id, appointment_id, kind, start_at, lead_tz, ws_tz, rebooked in rows:
        message = task_message(kind, start_at, resolve_timezone(lead_tz, ws_tz))
        created += conn.execute(
            sa.text(_INSERT_TASK),
            {"lead_id": lead_id, "appointment_id": appointment_id, "type": kind, "now": params["now"],
             "message": message, "rebooked": bool(rebooked)},
        ).rowcount
    return created


# ------------------------------------------------------------------------------------- Python entry points

def _stage_row(index: int, round_no: int, obs: Observation, now: datetime) -> tuple[object, ...]:
    ended = obs.status in (Status.CANCELED, Status.RESCHEDULED)
    changed_at = obs.status_changed_at or (obs.canceled_at if ended else None) or obs.provider_updated_at or now
    return (
        index, round_no, obs.workspace_id, obs.lead_id, obs.provider.value, obs.status.value, obs.source.value,
        obs.ghl_appointment_id, obs.calendly_invitee_uri, obs.calendly_scheduled_event_uri,
        obs.ghl_calendar_id, obs.calendly_event_type_uri, obs.start_at, obs.end_at, obs.timezone, obs.booked_at,
        obs.provider_updated_at, (obs.canceled_at or now) if ended else None, obs.cancel_reason, changed_at,
        obs.rescheduled_from_invitee_uri, obs.rescheduled_to_invitee_uri, obs.provider_links_reschedules,
        obs.legacy_lead_key, obs.webhook_event_id, None,
    )


def apply_observations(
    conn: sa.Connection, observations: Sequence[Observation], *, now: datetime | None = None
) -> list[WriteResult]:
    """Apply ``observations`` through SPEC §4 in the caller's transaction; one result per observation.

    Invalid observations (no provider key, ids of the other provider, naive datetimes) and
    observations of unknown leads come back with ``error_kind`` set; the rest of the batch applies.
    Rows are staged with COPY and written set-based (no round trip per observation).
    """
    now = now or utc_now()
    ensure_stage(conn)
    # rows of an earlier call in this transaction would be applied again (staging empties only at commit)
    conn.exec_driver_sql("DELETE FROM appt_obs; DELETE FROM appt_obs_leads")
    seen = Counter[str]()
    invalid: dict[int, str] = {}
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    with raw.cursor().copy(f"COPY appt_obs ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
        for index, obs in enumerate(observations):
            try:
                obs = obs.validate()
                key = obs.key
            except InvalidObservationError as exc:
                invalid[index] = exc.kind
                continue
            copy.write_row(_stage_row(index, seen[key], obs, now))
            seen[key] += 1
    apply_staged(conn, now=now)
    results: dict[int, WriteResult] = {
        index: WriteResult(index, None, False, False, None, None, False, kind) for index, kind in invalid.items()
    }
    flags = conn.exec_driver_sql(
        """
        SELECT ord, appointment_id, coalesce(is_new, false), prev_status, new_status, error_kind,
               coalesce(primary_changed, false), start_changed
        FROM appt_obs
        """
    )
    for index, appointment_id, is_new, prev, new, error_kind, primary_changed, start_changed in flags:
        if error_kind is not None:
            results[index] = WriteResult(index, None, False, False, None, None, False, error_kind)
            continue
        previous = Status(prev) if prev else None
        status = Status(new) if new else None
        results[index] = WriteResult(
            index=index,
            appointment_id=appointment_id,
            is_new=bool(is_new),
            status_changed=previous is not None and status is not None and previous is not status,
            previous_status=previous,
            status=status,
            primary_changed=bool(primary_changed),
            error_kind=None,
            start_changed=bool(start_changed),
        )
    return [results[i] for i in range(len(observations))]


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrentKeyInsert):
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)


@retry(
    retry=retry_if_exception(_is_retryable),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.05, max=2),
    reraise=True,
)
def write_observations(
    engine: sa.Engine, observations: Sequence[Observation], *, now: datetime | None = None, dry_run: bool = False
) -> list[WriteResult]:
    """Apply ``observations`` in one new transaction (SPEC §4), retried on deadlock or a concurrent key insert.

    With ``dry_run`` the transaction is rolled back: the results say exactly what would happen and
    nothing is written.
    """
    with transaction(engine, dry_run=dry_run) as conn:
        return apply_observations(conn, observations, now=now)
