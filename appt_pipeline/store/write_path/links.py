"""Step 4 of a round: reschedule links (SPEC §4.3), exact from provider hints, else the 6-hour heuristic.

Reschedule chains stay acyclic and never cross workspaces.
"""

import sqlalchemy as sa

from appt_pipeline.domain.rules import RESCHEDULE_LINK_WINDOW


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
      AND o.source <> CAST(:migration AS appointment_source) AND o.is_new AND n.status = 'CONFIRMED'
    UNION ALL
    -- rows that just became CANCELED looking for the booking that replaced them
    SELECT n.id, c.id, abs(extract(epoch FROM n.created_at - c.canceled_at))
    FROM appt_obs o
    JOIN appointments c ON c.id = o.appointment_id
    JOIN appointments n ON n.lead_id = c.lead_id AND n.provider = c.provider AND n.status = 'CONFIRMED'
                       AND n.id <> c.id
                       AND n.created_at BETWEEN c.canceled_at - {_WINDOW} AND c.canceled_at + {_WINDOW}
    WHERE o.round = :round AND o.error_kind IS NULL AND NOT o.provider_links_reschedules
      AND o.source <> CAST(:migration AS appointment_source) AND c.status = 'CANCELED'
      AND o.prev_status IS DISTINCT FROM 'CANCELED'
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


def link_reschedules(
    conn: sa.Connection, params: dict[str, object], *, from_hints: bool, to_hints: bool, heuristic: bool
) -> None:
    """Link the round's rows (SPEC §4.3); each flag says whether that kind of link can match in the round."""
    if from_hints:
        conn.execute(sa.text(_LINK_FROM_OLD), params)
    if to_hints:
        conn.execute(sa.text(_LINK_TO_NEW), params)
    if from_hints or to_hints:
        conn.execute(sa.text(_BREAK_LINK_CYCLES), params)
    if heuristic:
        conn.execute(sa.text(_HEURISTIC_LINK), params)
