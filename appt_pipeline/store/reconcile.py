"""Reconciliation bookkeeping in SQL (SPEC §6): which leads are due, and the watermark per outcome.

Due leads: ``appointment_next_check_at`` NULL or ≤ now, never-checked first, then oldest check,
within the per-run lead budget. Eligibility follows the original (docs/original-system.md §5.2)
as far as this schema carries it — there is no follow-up-sequence table here, so "hot" outreach is
read from the lead status:

* the lead can be looked up at the provider (GHL: contact id, e-mail or an appointment id;
  Calendly: a non-blank e-mail), and is not ``unqualified``/``blacklisted``;
* and it is engaged: an inbound reply (``last_inbound_at``), provider evidence (ids on the lead or
  history rows), or a status in the booking funnel (``meeting-requested``, ``meeting-booked``).

Every terminal outcome advances ``appointment_last_checked_at`` (except dry-run, where nothing is
written); errors also push ``appointment_next_check_at`` out with exponential back-off and count
``appointment_check_failures``; other outcomes schedule the next check after the recheck interval.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from appt_pipeline.domain.rules import STATUS_BOOKING_FUNNEL, STATUS_PROTECTED_FROM_BOOKING
from appt_pipeline.domain.vocab import Provider


class Outcome(StrEnum):
    """Terminal outcome of one lead's check."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    NOT_FOUND = "not_found"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class DueLead:
    """A lead to check. ``email`` is held in memory for provider look-ups only; never logged or stored."""

    id: str
    email: str | None
    ghl_contact_id: str | None
    ghl_appointment_ids: tuple[str, ...]
    calendly_invitee_uris: tuple[str, ...]
    last_checked_at: datetime | None
    check_failures: int


@dataclass(frozen=True)
class RecheckPolicy:
    """Seconds until the next check: ``recheck_s`` after a clean outcome, ``backoff_base_s·2^(n−1)`` capped at
    ``backoff_max_s`` after the n-th consecutive error."""

    recheck_s: float = 3600.0
    backoff_base_s: float = 60.0
    backoff_max_s: float = 86_400.0

    def backoff(self, failures: int) -> timedelta:
        """Back-off after ``failures`` consecutive errors (≥ 1)."""
        return timedelta(seconds=min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, failures - 1)))


_LOOKUP = {
    Provider.GHL: "(l.ghl_contact_id IS NOT NULL OR nullif(btrim(l.email), '') IS NOT NULL "
    "OR l.ghl_appointment_id IS NOT NULL)",
    Provider.CALENDLY: "nullif(btrim(l.email), '') IS NOT NULL",
}

#: Lead statuses the due-lead query binds (SPEC §6 eligibility).
_STATUS_PARAMS = {"protected_lead_statuses": sorted(STATUS_PROTECTED_FROM_BOOKING),
                  "funnel_lead_statuses": sorted(STATUS_BOOKING_FUNNEL)}

_DUE = """
SELECT l.id, l.email, l.ghl_contact_id, l.appointment_last_checked_at, l.appointment_check_failures,
       coalesce(array_agg(a.ghl_appointment_id) FILTER (WHERE a.ghl_appointment_id IS NOT NULL), '{{}}'),
       coalesce(array_agg(a.calendly_invitee_uri) FILTER (WHERE a.calendly_invitee_uri IS NOT NULL), '{{}}')
FROM (
    SELECT l.* FROM leads l
    WHERE l.workspace_id = :ws
      AND (l.appointment_next_check_at IS NULL OR l.appointment_next_check_at <= :now)
      AND l.status <> ALL (CAST(:protected_lead_statuses AS text[]))
      AND {lookup}
      AND (l.last_inbound_at IS NOT NULL
           OR l.ghl_appointment_id IS NOT NULL OR l.calendly_invitee_uri IS NOT NULL
           OR l.calendly_scheduled_event_uri IS NOT NULL
           OR l.status = ANY (CAST(:funnel_lead_statuses AS text[]))
           OR EXISTS (SELECT 1 FROM appointments x WHERE x.lead_id = l.id))
    ORDER BY l.appointment_last_checked_at ASC NULLS FIRST, l.id
    LIMIT :limit
) l
LEFT JOIN appointments a ON a.lead_id = l.id
GROUP BY l.id, l.email, l.ghl_contact_id, l.appointment_last_checked_at, l.appointment_check_failures
ORDER BY l.appointment_last_checked_at ASC NULLS FIRST, l.id
"""


def select_due_leads(conn: sa.Connection, workspace_id: str, provider: Provider, now: datetime,
                     limit: int) -> list[DueLead]:
    """Up to ``limit`` due, eligible leads of the workspace, never-checked first then oldest (SPEC §6)."""
    sql = _DUE.format(lookup=_LOOKUP[provider])
    rows = conn.execute(sa.text(sql), {"ws": workspace_id, "now": now, "limit": limit, **_STATUS_PARAMS})
    return [
        DueLead(id=r[0], email=(r[1] or "").strip().lower() or None, ghl_contact_id=r[2], last_checked_at=r[3],
                check_failures=int(r[4]), ghl_appointment_ids=tuple(r[5]), calendly_invitee_uris=tuple(r[6]))
        for r in rows
    ]


def count_due_leads(conn: sa.Connection, workspace_id: str, provider: Provider, now: datetime) -> int:
    """How many leads of the workspace are due now (for schedules deciding whether to launch a run)."""
    sql = f"SELECT count(*) FROM ({_DUE.format(lookup=_LOOKUP[provider])}) d"
    params = {"ws": workspace_id, "now": now, "limit": None, **_STATUS_PARAMS}
    return int(conn.execute(sa.text(sql), params).scalar_one())


def record_outcomes(conn: sa.Connection, outcomes: Sequence[tuple[str, Outcome]], now: datetime,
                    policy: RecheckPolicy = RecheckPolicy()) -> int:
    """Advance the watermark of every lead in ``outcomes`` (one statement); returns leads updated.

    Errors: ``appointment_check_failures`` + 1 and next check after :meth:`RecheckPolicy.backoff`;
    any other outcome resets the failures and schedules the next check after ``recheck_s``.
    """
    if not outcomes:
        return 0
    ids = [lead_id for lead_id, _ in outcomes]
    errors = [outcome is Outcome.ERROR for _, outcome in outcomes]
    result = conn.execute(
        sa.text(
            """
            UPDATE leads l SET
                appointment_last_checked_at = :now,
                appointment_check_failures = CASE WHEN o.error THEN l.appointment_check_failures + 1 ELSE 0 END,
                appointment_next_check_at = :now + CASE
                    WHEN o.error THEN make_interval(secs => least(:max_s,
                        :base_s * power(2, l.appointment_check_failures)))
                    ELSE make_interval(secs => :recheck_s) END,
                updated_at = now()
            FROM unnest(CAST(:ids AS text[]), CAST(:errors AS boolean[])) AS o(id, error)
            WHERE l.id = o.id
            """
        ),
        {"ids": ids, "errors": errors, "now": now, "max_s": policy.backoff_max_s, "base_s": policy.backoff_base_s,
         "recheck_s": policy.recheck_s},
    )
    return result.rowcount


def set_ghl_contact_ids(conn: sa.Connection, contact_ids: dict[str, str]) -> None:
    """Persist GHL contact ids resolved by e-mail (lead id → contact id), only where none was stored."""
    if not contact_ids:
        return
    conn.execute(
        sa.text(
            "UPDATE leads l SET ghl_contact_id = c.contact_id, updated_at = now() "
            "FROM unnest(CAST(:ids AS text[]), CAST(:cids AS text[])) AS c(id, contact_id) "
            "WHERE l.id = c.id AND l.ghl_contact_id IS NULL"
        ),
        {"ids": list(contact_ids), "cids": list(contact_ids.values())},
    )


def load_lead(conn: sa.Connection, workspace_id: str, lead_id: str) -> DueLead | None:
    """One lead of the workspace as a :class:`DueLead`, due or not (a check on demand, e.g. to resolve a booking
    whose outcome is unknown, SPEC §8); ``None`` when the lead is not in the workspace."""
    row = conn.execute(sa.text(
        """SELECT l.id, l.email, l.ghl_contact_id, l.appointment_last_checked_at, l.appointment_check_failures,
                  coalesce(array_agg(a.ghl_appointment_id) FILTER (WHERE a.ghl_appointment_id IS NOT NULL), '{}'),
                  coalesce(array_agg(a.calendly_invitee_uri) FILTER (WHERE a.calendly_invitee_uri IS NOT NULL), '{}')
           FROM leads l LEFT JOIN appointments a ON a.lead_id = l.id
           WHERE l.id = :lead AND l.workspace_id = :ws
           GROUP BY l.id"""), {"ws": workspace_id, "lead": lead_id}).first()
    if row is None:
        return None
    return DueLead(id=row[0], email=(row[1] or "").strip().lower() or None, ghl_contact_id=row[2],
                   last_checked_at=row[3], check_failures=int(row[4]), ghl_appointment_ids=tuple(row[5]),
                   calendly_invitee_uris=tuple(row[6]))
