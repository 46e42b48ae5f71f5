"""Steps 2, 4 and 5 of a round: primaries, rollups (SPEC §3), lead status side effects (§3), follow-up tasks (§4.4).

Side effects come from the per-observation flags, never from state read before the write, and never
for sources without side effects (MIGRATION/BACKFILL).
"""

import sqlalchemy as sa

from appt_pipeline.domain.rules import move_message, resolve_timezone, task_message
from appt_pipeline.store.rollups import PRIMARY_ORDER, count_changed, rollup_update_sql
from appt_pipeline.store.write_path.params import HAS_SIDE_EFFECTS, TASK_PENDING_LITERAL

_ENDED = "('CANCELED', 'RESCHEDULED')"

_NOTE_LEADS = f"""
INSERT INTO appt_obs_leads (lead_id, side_effects, old_primary_id, old_primary_status)
SELECT f.lead_id, f.side_effects, p.id, p.status
FROM (
    SELECT lead_id, bool_or(side_effects) AS side_effects FROM (
        SELECT lead_id, {HAS_SIDE_EFFECTS} AS side_effects
        FROM appt_obs WHERE round = :round AND error_kind IS NULL
        UNION ALL
        -- the lead a key moves away from: its primary changes by this write too (SPEC §3, §4.2)
        SELECT prev_lead_id, {HAS_SIDE_EFFECTS} FROM appt_obs
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
UPDATE leads l SET status = CASE WHEN f.new_primary_status = 'CONFIRMED' THEN :meeting_booked ELSE :qualified END,
    updated_at = now()
FROM appt_obs_leads f
WHERE l.id = f.lead_id AND f.side_effects
  AND ROW(f.old_primary_id, f.old_primary_status) IS DISTINCT FROM ROW(f.new_primary_id, f.new_primary_status)
  AND (
    (f.new_primary_status = 'CONFIRMED'
        AND l.status <> ALL (CAST(:protected_lead_statuses AS text[])) AND l.status <> :meeting_booked)
    OR (f.new_primary_status IN {_ENDED} AND l.status = :meeting_booked
        AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = l.id AND a.status = 'CONFIRMED'))
  )
"""

# The lead booked again before the task was done: its pending tasks become cancelled (SPEC §10 tasks). The new
# invitee of a Calendly reschedule (linked to the task's row) is the reschedule itself, not a new booking: the
# meeting-rescheduled task about it stays pending.
_CANCEL_TASKS = f"""
UPDATE follow_up_tasks t SET status = :task_cancelled, updated_at = :now
WHERE t.status = :task_pending
  AND EXISTS (SELECT 1 FROM appt_obs o JOIN appointments a ON a.id = o.appointment_id
              WHERE o.round = :round AND o.error_kind IS NULL AND o.is_new AND o.new_status = 'CONFIRMED'
                AND o.{HAS_SIDE_EFFECTS} AND o.lead_id = t.lead_id
                AND (t.type = :task_canceled OR a.rescheduled_from_id IS DISTINCT FROM t.appointment_id))
"""

# Candidates for new tasks: a CONFIRMED primary that became CANCELED; a row that became RESCHEDULED; an upcoming
# CONFIRMED row the provider moved to another time (``moved``: a GHL reschedule keeps its id, SPEC §4.3).
# ``rebooked``: a new CONFIRMED booking of the lead follows the cancellation in this round, which (as with two
# separate writes) cancels the task at once — _CANCEL_TASKS ran before the task existed.
_TASK_CANDIDATES = f"""
SELECT DISTINCT ON (o.lead_id, kind) o.lead_id, o.appointment_id, kind, a.start_at, l.timezone, w.timezone,
    o.moved, o.prev_start_at,
    (kind = :task_canceled AND EXISTS (
        SELECT 1 FROM appt_obs b
        WHERE b.round = :round AND b.error_kind IS NULL AND b.lead_id = o.lead_id AND b.ord > o.ord
          AND b.is_new AND b.new_status = 'CONFIRMED' AND b.{HAS_SIDE_EFFECTS})) AS rebooked
FROM (
    SELECT o.*, CAST(CASE WHEN o.new_status IN ('RESCHEDULED', 'CONFIRMED') THEN :task_rescheduled
                          ELSE :task_canceled END AS text) AS kind,
           (o.new_status = 'CONFIRMED') AS moved
    FROM appt_obs o JOIN appt_obs_leads f ON f.lead_id = o.lead_id
    WHERE o.round = :round AND o.error_kind IS NULL AND o.{HAS_SIDE_EFFECTS} AND NOT o.is_new
      AND ((o.prev_status IS DISTINCT FROM o.new_status
            AND (o.new_status = 'RESCHEDULED'
                 OR (o.new_status = 'CANCELED' AND o.prev_status = 'CONFIRMED'
                     AND f.old_primary_id = o.appointment_id)))
           OR (o.start_changed AND o.prev_status = 'CONFIRMED' AND o.new_status = 'CONFIRMED'
               AND o.prev_start_at >= :now AND o.source = ANY (CAST(:move_task_sources AS appointment_source[]))))
) o
JOIN appointments a ON a.id = o.appointment_id
JOIN leads l ON l.id = o.lead_id
JOIN workspaces w ON w.id = l.workspace_id
ORDER BY o.lead_id, kind, o.ord DESC
"""

_INSERT_TASK = f"""
INSERT INTO follow_up_tasks
    (lead_id, appointment_id, type, due_date, status, is_urgent, suggested_message)
VALUES (:lead_id, :appointment_id, :type, :now, CASE WHEN :rebooked THEN :task_cancelled ELSE :task_pending END, true,
        :message)
ON CONFLICT (lead_id, type) WHERE status = '{TASK_PENDING_LITERAL}' DO NOTHING
"""


def _create_tasks(conn: sa.Connection, params: dict[str, object]) -> int:
    rows = conn.execute(sa.text(_TASK_CANDIDATES), params).all()
    created = 0
    for lead_id, appointment_id, kind, start_at, lead_tz, ws_tz, moved, prev_start_at, rebooked in rows:
        zone = resolve_timezone(lead_tz, ws_tz)
        message = move_message(prev_start_at, start_at, zone) if moved else task_message(kind, start_at, zone)
        created += conn.execute(
            sa.text(_INSERT_TASK),
            {"lead_id": lead_id, "appointment_id": appointment_id, "type": kind, "now": params["now"],
             "message": message, "rebooked": bool(rebooked), "task_cancelled": params["task_cancelled"],
             "task_pending": params["task_pending"]},
        ).rowcount
    return created



def note_primaries_before(conn: sa.Connection, params: dict[str, object]) -> None:
    """Step 2: note each affected lead's primary (and whether it has side effects) before the write (SPEC §3)."""
    conn.exec_driver_sql("DELETE FROM appt_obs_leads")
    conn.execute(sa.text(_NOTE_LEADS), params)


def recompute_rollups(conn: sa.Connection, params: dict[str, object], *, primaries: bool) -> int:
    """Step 4: recompute the rollups of every affected lead at ``ref`` and stamp it as their reference (SPEC §3,
    §4.2); returns the leads whose rollup changed.

    With ``primaries`` (noted by :func:`note_primaries_before`) the primary after the write and each
    observation's ``primary_changed`` are noted first.
    """
    if primaries:
        conn.execute(sa.text(_NOTE_NEW_PRIMARY), params)
        conn.execute(sa.text(_NOTE_PRIMARY_CHANGED), params)
        return count_changed(conn.execute(sa.text(_ROLLUPS), params).all())
    return count_changed(conn.execute(sa.text(_ROLLUPS_OF_ROUND), params).all())


def apply_side_effects(conn: sa.Connection, params: dict[str, object]) -> tuple[int, int, int]:
    """Step 5: lead status (SPEC §3) and follow-up tasks (§4.4, §10); returns (leads changed, tasks cancelled,
    tasks created)."""
    leads = conn.execute(sa.text(_LEAD_STATUS), params).rowcount
    cancelled = conn.execute(sa.text(_CANCEL_TASKS), params).rowcount
    return leads, cancelled, _create_tasks(conn, params)
