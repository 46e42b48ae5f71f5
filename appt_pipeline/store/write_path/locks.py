"""Step 0/1 of a round: lock the batch's leads in id order, mark unknown leads, lock and note existing keys (SPEC §4).

Before any round, every affected lead of the whole batch (the observed leads and the leads the keys
currently belong to) is locked once, by primary-key lookups in id order, and kept with its workspace in
``appt_obs_locked``. Writers sharing a lead or a key queue there, before noting existing keys.
"""

import sqlalchemy as sa

from appt_pipeline.store.write_path.staging import KEY_KIND, KEY_VALUE, rows_by_key

# Every existing lead the round observes is locked (and in appt_obs_locked) by now, and a locked lead can be
# neither deleted nor moved: the lock set answers "exists / same workspace" without reading ``leads``.
_MARK_UNKNOWN_LEADS = """
UPDATE appt_obs o
SET error_kind = CASE WHEN EXISTS (SELECT 1 FROM appt_obs_locked k WHERE k.lead_id = o.lead_id)
                      THEN CAST(:lead_in_other_workspace AS text) ELSE :unknown_lead END
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
    error_kind = CASE WHEN a.workspace_id <> o.workspace_id THEN CAST(:provider_key_in_other_workspace AS text) END
FROM found f JOIN prev a ON a.id = f.id
WHERE o.round = :round AND o.error_kind IS NULL AND f.kind = {KEY_KIND} AND f.k = {KEY_VALUE}
"""

# Before any round, the leads of the whole batch are locked in one id-ordered pass: the observed leads and the
# current owners of the staged keys. This precedes every snapshot that notes existing keys, so writers sharing a
# lead or a key queue here (no lock-order deadlock, also across rounds) and then see every key the other
# committed (no ConcurrentKeyInsert). See lock_batch_and_note_first_round for keys that move while we wait.
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



def note_existing(conn: sa.Connection, params: dict[str, object]) -> None:
    """Step 1 of a round: unknown leads, event-only upgrades, then lock and note the existing keys' rows."""
    conn.execute(sa.text(_MARK_UNKNOWN_LEADS), params)
    conn.execute(sa.text(_UPGRADE_EVENT_ONLY_ROWS), params)
    conn.execute(sa.text(_LOCK_AND_NOTE_EXISTING), params)


def lock_moved_owners(conn: sa.Connection, params: dict[str, object]) -> None:
    """Later rounds: lock the owners of noted keys that are not in the lock set yet (normally none)."""
    if conn.execute(sa.text(_OWNERS_UNLOCKED), params).scalar_one():
        conn.execute(sa.text(_LOCK_LEADS), params)


def lock_batch_and_note_first_round(conn: sa.Connection, params: dict[str, object], attempts: int = 5) -> None:
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
        note_existing(conn, params)
        if not conn.execute(sa.text(_OWNERS_UNLOCKED), params).scalar_one():
            savepoint.commit()
            return
        savepoint.rollback()
    conn.exec_driver_sql(_LOCK_BATCH_LEADS)
    note_existing(conn, params)
    conn.execute(sa.text(_LOCK_LEADS), params)

