"""Primary selection and lead rollups in SQL (SPEC §3) — the set-based twin of ``domain.primary``.

``PRIMARY_ORDER`` is the one SQL spelling of the §3 rule; a property test proves it picks the same
row as :func:`appt_pipeline.domain.primary.select_primary`.

Rollups over time (SPEC §3): every computation (:func:`rollup_update_sql`) stamps
``leads.appointment_rollup_at`` with its reference time; the drift check (:func:`drift_sql`) compares each
lead with its primary *at that lead's reference*; :func:`refresh_rollups` recomputes the leads whose primary
may have moved with time (a CONFIRMED row whose ``start_at`` lies in (reference, now]); :func:`stale_rollups`
is the freshness check (such a lead whose reference is older than two refresh intervals).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

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

#: The refresh schedule's interval (seconds; SPEC §3: hourly by default). The freshness check allows two.
ROLLUP_REFRESH_INTERVAL_S = 3600

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
    """UPDATE setting the rollup of every lead in ``lead_ids_sql`` to that of its primary at ``:ref`` (SPEC §3)
    and stamping ``appointment_rollup_at = :ref`` (the reference time of that rollup, SPEC §3 "Rollups over
    time").

    A lead without rows gets the all-null rollup. A lead whose rollup and reference are both unchanged is not
    written, so a repeat with the same ``:ref`` is a no-op. Returns ``(id, changed)`` of each written lead;
    ``changed`` is true when a rollup column changed (not only the reference): count those with
    :func:`count_changed`. Bind ``:ref`` (UTC datetime).
    """
    targets = ", ".join(f"{expr} AS {col}" for col, expr in ROLLUP_EXPRESSIONS.items())
    assignments = ", ".join(f"{col} = d.{col}" for col in ROLLUP_COLUMNS)
    current = ", ".join(f"o.{col}" for col in ROLLUP_COLUMNS)
    wanted = ", ".join(f"t.{col}" for col in ROLLUP_COLUMNS)
    return f"""
        WITH affected AS (SELECT DISTINCT lead_id FROM ({lead_ids_sql}) s(lead_id)),
        p AS ({primary_rows_sql("SELECT lead_id FROM affected")}),
        t AS (SELECT f.lead_id, {targets} FROM affected f LEFT JOIN p ON p.lead_id = f.lead_id),
        d AS (SELECT t.*, ROW({current}) IS DISTINCT FROM ROW({wanted}) AS changed,
                     o.appointment_rollup_at IS DISTINCT FROM CAST(:ref AS timestamptz) AS restamp
              FROM t JOIN leads o ON o.id = t.lead_id)
        UPDATE leads l SET {assignments}, appointment_rollup_at = :ref,
            updated_at = CASE WHEN d.changed THEN now() ELSE l.updated_at END
        FROM d
        WHERE l.id = d.lead_id AND (d.changed OR d.restamp)
        RETURNING l.id, d.changed
    """


def count_changed(rows: Sequence[sa.Row[tuple[str, bool]]]) -> int:
    """How many rows returned by a :func:`rollup_update_sql` statement had their rollup changed."""
    return sum(1 for _id, changed in rows if changed)


@dataclass(frozen=True)
class DriftReport:
    """Rollup drift of one workspace (SPEC §10): leads with rows whose rollup ≠ rollup(primary)."""

    workspace_id: str
    leads_with_rows: int
    drifted: int
    sample_lead_ids: list[str]
    repaired: int = 0


def drift_sql(where: str) -> str:
    """SELECT ``id`` of leads (filtered by ``where`` on ``l``) whose rollup differs from the rollup of their
    primary at the lead's own reference ``appointment_rollup_at`` (``:ref`` when it is null, SPEC §3), by id.
    Bind ``:ref``."""
    targets = ", ".join(f"{expr} AS {col}" for col, expr in ROLLUP_EXPRESSIONS.items())
    current = ", ".join(f"l.{col}" for col in ROLLUP_COLUMNS)
    wanted = ", ".join(f"t.{col}" for col in ROLLUP_COLUMNS)
    order = PRIMARY_ORDER.replace(":ref", "coalesce(l.appointment_rollup_at, CAST(:ref AS timestamptz))")
    return f"""
        WITH p AS (
            SELECT DISTINCT ON (a.lead_id) a.*
            FROM appointments a JOIN leads l ON l.id = a.lead_id
            WHERE {where}
            ORDER BY a.lead_id, {order}
        ),
        t AS (SELECT p.lead_id, {targets} FROM p)
        SELECT l.id FROM leads l JOIN t ON t.lead_id = l.id
        WHERE ROW({current}) IS DISTINCT FROM ROW({wanted})
        ORDER BY l.id
    """


def drift_report(conn: sa.Connection, workspace_id: str, ref: datetime, *, repair: bool = False) -> DriftReport:
    """Count (and with ``repair`` fix, in the caller's transaction) rollup drift of a workspace (SPEC §10, §12).

    Each lead is compared with its primary at its ``appointment_rollup_at`` (``ref``, UTC, when null), so time
    passing never makes it drift. Repair recomputes every lead of the workspace that has rows at ``ref``
    (and stamps it); leads without rows keep their legacy columns (SPEC §3). ``repaired`` counts the leads
    whose rollup changed.
    """
    params = {"ws": workspace_id, "ref": ref}
    drifted = [r[0] for r in conn.execute(sa.text(drift_sql("l.workspace_id = :ws")), params)]
    with_rows = conn.execute(
        sa.text("SELECT count(DISTINCT lead_id) FROM appointments WHERE workspace_id = :ws"), params
    ).scalar_one()
    repaired = 0
    if repair and drifted:
        sql = rollup_update_sql("SELECT DISTINCT lead_id FROM appointments WHERE workspace_id = :ws")
        repaired = count_changed(conn.execute(sa.text(sql), params).all())
    return DriftReport(workspace_id, int(with_rows), len(drifted), drifted[:20], repaired)


# ------------------------------------------------------------------------------------- rollups over time

#: Leads of ``:ws`` whose primary may have moved with time: a CONFIRMED row whose ``start_at`` lies in
#: (``appointment_rollup_at``, ``:now``] (any started CONFIRMED row when the lead has no reference yet).
#: Uses the (workspace_id, status, start_at) index of ``appointments``.
_DUE_LEADS = """
    SELECT DISTINCT a.lead_id FROM appointments a JOIN leads l ON l.id = a.lead_id
    WHERE a.workspace_id = :ws AND a.status = 'CONFIRMED' AND a.start_at <= :now
      AND (l.appointment_rollup_at IS NULL OR a.start_at > l.appointment_rollup_at)
"""

#: The due leads locked in id order (as the write path locks leads: no lock-order deadlock with writers).
_LOCK_DUE_LEADS = f"""
    SELECT l.id FROM leads l WHERE l.id = ANY (ARRAY({_DUE_LEADS} ORDER BY 1)) ORDER BY l.id FOR UPDATE
"""

_REFRESH = rollup_update_sql("SELECT unnest(CAST(:ids AS text[]))")


@dataclass(frozen=True)
class RefreshReport:
    """One rollup refresh of a workspace (SPEC §3): ``due`` leads recomputed at ``ref`` (UTC), ``changed`` of
    them with a new rollup, a sample of the changed lead ids."""

    workspace_id: str
    ref: datetime
    due: int
    changed: int
    sample_lead_ids: list[str]


def refresh_rollups(conn: sa.Connection, workspace_id: str, now: datetime) -> RefreshReport:
    """Recompute, set-based and in the caller's transaction, the rollup of every lead of ``workspace_id`` whose
    primary may have moved with time — a CONFIRMED row with ``start_at`` in (``appointment_rollup_at``, ``now``]
    — and stamp ``now`` (UTC) as their reference (SPEC §3, ``appt-pipeline rollups --refresh``, the hourly
    ``rollup_refresh_job``). Never creates tasks or changes a lead's status (time is not a provider event).

    The leads are locked in id order first and their rollups computed by a second statement, so a writer
    that changed one meanwhile is seen (READ COMMITTED: a new snapshot per statement).
    """
    params = {"ws": workspace_id, "now": now}
    ids = [r[0] for r in conn.execute(sa.text(_LOCK_DUE_LEADS), params)]
    if not ids:
        return RefreshReport(workspace_id, now, 0, 0, [])
    rows = conn.execute(sa.text(_REFRESH), {"ids": ids, "ref": now}).all()
    changed = sorted(r[0] for r in rows if r[1])
    return RefreshReport(workspace_id, now, len(ids), len(changed), changed[:20])


#: Leads due for a refresh (:data:`_DUE_LEADS`) whose reference is older than ``:horizon``, by id.
_STALE_LEADS = f"""
    SELECT l.id FROM leads l WHERE l.id IN ({_DUE_LEADS})
      AND (l.appointment_rollup_at IS NULL OR l.appointment_rollup_at < :horizon)
    ORDER BY l.id
"""


def stale_rollups(conn: sa.Connection, workspace_id: str, now: datetime, *,
                  interval_s: int = ROLLUP_REFRESH_INTERVAL_S, sample: int = 20) -> tuple[int, list[str]]:
    """The ``rollup_freshness`` check (SPEC §3, §10): ``(count, sample of lead ids)`` of leads of ``workspace_id``
    due for a refresh (a CONFIRMED row started after their reference) whose reference is more than two refresh
    intervals (``2 * interval_s`` seconds) before ``now`` (UTC). 0 means fresh."""
    params = {"ws": workspace_id, "now": now, "horizon": now - timedelta(seconds=2 * interval_s)}
    ids = [r[0] for r in conn.execute(sa.text(_STALE_LEADS), params)]
    return len(ids), ids[:sample]


def due_refresh_counts(conn: sa.Connection, now: datetime) -> dict[str, int]:
    """Workspace id → how many of its leads are due for a rollup refresh at ``now`` (UTC; the leads of
    :func:`refresh_rollups`), for every workspace with at least one (one statement; the hourly schedule)."""
    rows = conn.execute(sa.text(
        "SELECT a.workspace_id, count(DISTINCT a.lead_id) FROM appointments a JOIN leads l ON l.id = a.lead_id "
        "WHERE a.status = 'CONFIRMED' AND a.start_at <= :now "
        "AND (l.appointment_rollup_at IS NULL OR a.start_at > l.appointment_rollup_at) "
        "GROUP BY a.workspace_id ORDER BY a.workspace_id"), {"now": now})
    return {ws: int(n) for ws, n in rows}
