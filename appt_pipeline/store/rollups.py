"""Primary selection and lead rollups in SQL (SPEC §3) — the set-based twin of ``domain.primary``.

``PRIMARY_ORDER`` is the one SQL spelling of the §3 rule; a property test proves it picks the same
row as :func:`appt_pipeline.domain.primary.select_primary`.
"""

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from appt_pipeline.domain.primary import LeadRollup

#: ORDER BY (after ``lead_id``) whose first row per lead is the primary at ``:ref`` (SPEC §3).
PRIMARY_ORDER = """
    CASE WHEN a.status = 'CONFIRMED' AND a.start_at > :ref THEN 1
         WHEN a.status = 'CONFIRMED' AND a.start_at IS NOT NULL THEN 2
         WHEN a.status = 'CONFIRMED' THEN 3
         WHEN a.status = 'CANCELED' THEN 4
         ELSE 5 END,
    CASE WHEN a.status = 'CONFIRMED' AND a.start_at > :ref THEN a.start_at END ASC,
    CASE WHEN a.status = 'CONFIRMED' AND a.start_at <= :ref THEN a.start_at END DESC,
    CASE WHEN a.status = 'CANCELED' THEN coalesce(a.canceled_at, a.created_at)
         WHEN a.status = 'CONFIRMED' AND a.start_at IS NOT NULL THEN NULL
         ELSE a.created_at END DESC,
    a.created_at DESC,
    a.id DESC
"""

#: The eleven rollup columns of ``leads`` (SPEC §3), in ``LeadRollup`` field order.
ROLLUP_COLUMNS: tuple[str, ...] = tuple(LeadRollup.__dataclass_fields__)

#: SQL expressions computing each rollup column from primary row ``p`` (NULLs when no primary).
ROLLUP_EXPRESSIONS: dict[str, str] = {
    "ghl_appointment_id": "p.ghl_appointment_id",
    "calendly_invitee_uri": "p.calendly_invitee_uri",
    "calendly_scheduled_event_uri": "p.calendly_scheduled_event_uri",
    "appointment_booked_at": "p.created_at",
    "appointment_start_at": "p.start_at",
    "appointment_end_at": "p.end_at",
    "appointment_status": "lower(p.status::text)",
    "appointment_canceled_at": "p.canceled_at",
    "appointment_provider": "p.provider",
    "appointment_source": "lower(p.source::text)",
    "booked_slot": """to_char(p.start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
}


def primary_rows_sql(lead_ids_sql: str) -> str:
    """SELECT of the primary row per lead among ``lead_ids_sql`` (a query yielding one ``lead_id`` column).

    Output columns: ``lead_id`` plus every ``appointments`` column prefixed by nothing (``a.*``).
    Bind ``:ref`` (UTC datetime).
    """
    return f"""
        SELECT DISTINCT ON (a.lead_id) a.*
        FROM appointments a
        WHERE a.lead_id IN ({lead_ids_sql})
        ORDER BY a.lead_id, {PRIMARY_ORDER}
    """


def rollup_update_sql(lead_ids_sql: str) -> str:
    """UPDATE setting the rollup of every lead in ``lead_ids_sql`` to that of its primary (SPEC §3).

    A lead without rows gets the all-null rollup. Only leads whose rollup differs are written, so a
    repeat is a no-op. Returns ``id`` of each updated lead. Bind ``:ref``.
    """
    targets = ", ".join(f"{expr} AS {col}" for col, expr in ROLLUP_EXPRESSIONS.items())
    assignments = ", ".join(f"{col} = t.{col}" for col in ROLLUP_COLUMNS)
    current = ", ".join(f"l.{col}" for col in ROLLUP_COLUMNS)
    wanted = ", ".join(f"t.{col}" for col in ROLLUP_COLUMNS)
    return f"""
        WITH affected AS (SELECT DISTINCT lead_id FROM ({lead_ids_sql}) s(lead_id)),
        p AS ({primary_rows_sql("SELECT lead_id FROM affected")}),
        t AS (SELECT f.lead_id, {targets} FROM affected f LEFT JOIN p ON p.lead_id = f.lead_id)
        UPDATE leads l SET {assignments}, updated_at = now()
        FROM t
        WHERE l.id = t.lead_id AND ROW({current}) IS DISTINCT FROM ROW({wanted})
        RETURNING l.id
    """


@dataclass(frozen=True)
class DriftReport:
    """Rollup drift of one workspace (SPEC §10): leads with rows whose rollup ≠ rollup(primary)."""

    workspace_id: str
    leads_with_rows: int
    drifted: int
    sample_lead_ids: list[str]
    repaired: int = 0


def drift_sql(where: str) -> str:
    """SELECT ``lead_id`` of leads (filtered by ``where`` on ``l``) whose rollup differs from their primary's."""
    targets = ", ".join(f"{expr} AS {col}" for col, expr in ROLLUP_EXPRESSIONS.items())
    current = ", ".join(f"l.{col}" for col in ROLLUP_COLUMNS)
    wanted = ", ".join(f"t.{col}" for col in ROLLUP_COLUMNS)
    return f"""
        WITH p AS (
            SELECT DISTINCT ON (a.lead_id) a.*
            FROM appointments a JOIN leads l ON l.id = a.lead_id
            WHERE {where}
            ORDER BY a.lead_id, {PRIMARY_ORDER}
        ),
        t AS (SELECT p.lead_id, {targets} FROM p)
        SELECT l.id FROM leads l JOIN t ON t.lead_id = l.id
        WHERE ROW({current}) IS DISTINCT FROM ROW({wanted})
        ORDER BY l.id
    """


def drift_report(conn: sa.Connection, workspace_id: str, ref: datetime, *, repair: bool = False) -> DriftReport:
    """Count (and with ``repair`` fix, in the caller's transaction) rollup drift of a workspace (SPEC §10, §12).

    ``ref`` is the UTC reference time of the §3 rule. Repair recomputes every lead of the workspace
    that has rows; leads without rows keep their legacy columns (SPEC §3).
    """
    params = {"ws": workspace_id, "ref": ref}
    drifted = [r[0] for r in conn.execute(sa.text(drift_sql("l.workspace_id = :ws")), params)]
    with_rows = conn.execute(
        sa.text("SELECT count(DISTINCT lead_id) FROM appointments WHERE workspace_id = :ws"), params
    ).scalar_one()
    repaired = 0
    if repair and drifted:
        sql = rollup_update_sql("SELECT DISTINCT lead_id FROM appointments WHERE workspace_id = :ws")
        repaired = len(conn.execute(sa.text(sql), params).all())
    return DriftReport(workspace_id, int(with_rows), len(drifted), drifted[:20], repaired)
