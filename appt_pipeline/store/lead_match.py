"""Which lead of a workspace a provider key belongs to (SPEC §7 lead matching), set-based.

Each key kind has one lookup; every lookup is scoped to the workspace and answers
``{key: lead_id}`` for the keys it knows. Keys are looked up in the appointment history (which
holds every migrated key) or on ``leads`` (GHL contact id, e-mail hash).
"""

from collections.abc import Iterable

import sqlalchemy as sa

#: SQL of :func:`appt_pipeline.domain.webhook_staging.email_hash` over ``leads.email`` (alias ``l``;
#: parameter ``:ws`` is the workspace id).
EMAIL_HASH_SQL = "encode(sha256(convert_to(:ws || ':' || lower(btrim(l.email)), 'UTF8')), 'hex')"

#: One query per key kind (``:ws`` workspace id, ``:keys`` text array) → rows ``(key, lead_id)``.
#: Kinds: ``invitee`` (Calendly invitee URI), ``event`` (Calendly scheduled-event URI: the newest
#: row's lead), ``ghl_appointment``, ``ghl_contact`` (``leads.ghl_contact_id``: the most recently
#: updated lead), ``email_hash`` (:data:`EMAIL_HASH_SQL`: the most recently updated lead).
LEAD_LOOKUP_SQL: dict[str, str] = {
    "invitee": "SELECT calendly_invitee_uri, lead_id FROM appointments "
               "WHERE workspace_id = :ws AND calendly_invitee_uri = ANY(:keys)",
    "event": "SELECT DISTINCT ON (calendly_scheduled_event_uri) calendly_scheduled_event_uri, lead_id "
             "FROM appointments WHERE workspace_id = :ws AND calendly_scheduled_event_uri = ANY(:keys) "
             "ORDER BY calendly_scheduled_event_uri, created_at DESC, id DESC",
    "ghl_appointment": "SELECT ghl_appointment_id, lead_id FROM appointments "
                       "WHERE workspace_id = :ws AND ghl_appointment_id = ANY(:keys)",
    "ghl_contact": "SELECT DISTINCT ON (ghl_contact_id) ghl_contact_id, id FROM leads "
                   "WHERE workspace_id = :ws AND ghl_contact_id = ANY(:keys) "
                   "ORDER BY ghl_contact_id, updated_at DESC, id DESC",
    # no index on a hash of e-mails: one scan of the workspace's leads, only for events no URI matched
    "email_hash": f"SELECT DISTINCT ON (h) h, id FROM (SELECT {EMAIL_HASH_SQL} AS h, l.id, l.updated_at FROM leads l "
                  "WHERE l.workspace_id = :ws AND l.email IS NOT NULL) x WHERE h = ANY(:keys) "
                  "ORDER BY h, updated_at DESC, id DESC",
}

#: The kinds of :data:`LEAD_LOOKUP_SQL` in SPEC §7 matching order.
LOOKUP_ORDER: tuple[str, ...] = tuple(LEAD_LOOKUP_SQL)


def leads_by_key(conn: sa.Connection, workspace_id: str, kind: str, keys: Iterable[str]) -> dict[str, str]:
    """``{key: lead_id}`` for the ``kind`` keys the workspace knows (unknown keys are absent).

    Raises:
        KeyError: ``kind`` is not one of :data:`LOOKUP_ORDER`.
    """
    sql = LEAD_LOOKUP_SQL[kind]
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    return {str(k): str(v) for k, v in conn.execute(sa.text(sql), {"ws": workspace_id, "keys": wanted}).all()}
