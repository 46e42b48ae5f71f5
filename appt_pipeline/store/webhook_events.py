"""The staging table ``webhook_events`` (SPEC §1, §7): written by the intake service, read by the sensor.

Writers insert with :data:`INSERT_EVENTS_SQL` (``ON CONFLICT (dedupe_key) DO NOTHING``: a redelivery is
recognised, never stored twice); the sensor reads :func:`pending_workspaces`; ingestion
(``appt_pipeline.pipelines.webhook_ingest``) claims a workspace's pending rows with
:data:`CLAIM_PENDING_SQL` and marks them with :func:`mark_events`; :func:`requeue_events` puts ``failed``
rows back to ``pending`` (``appt-pipeline webhooks requeue``, SPEC §12); :func:`purge_events` deletes finished
rows older than the dedupe retention (at least 30 days, SPEC §7). The sensor selects by
**status**, never by an id or time cursor, so a row that commits after a higher id was already
processed is still picked up (SPEC §7).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import sqlalchemy as sa

from appt_pipeline.domain.signatures import DEDUPE_RETENTION_S
from appt_pipeline.domain.vocab import WebhookStatus
from appt_pipeline.domain.webhook_staging import StagedEvent

#: The pending status as it stands in the partial index ``webhook_events (workspace_id, …) WHERE status =
#: 'pending'`` (sql/0005_webhooks.sql). Queries that must use that index spell the value as a literal (a
#: bound parameter would make a generic plan that cannot prove the index predicate); it is taken from the
#: vocabulary here, the one place, and never from input.
PENDING_LITERAL = WebhookStatus.PENDING.value

#: Multi-row insert of staged events from ONE JSON array of row objects (:func:`row_json`), so a whole group
#: of deliveries is one statement and one parameter (orjson serialises a row in ~10 µs; psycopg's adaptation
#: of eight parallel arrays cost ~150 µs per row). ``ON CONFLICT (dedupe_key) DO NOTHING``: returns the dedupe
#: keys actually inserted (the others were duplicates). ``ignored`` rows get ``processed_at`` at once.
#: psycopg placeholder (``%(rows)s``), so the async intake service uses it as is.
INSERT_EVENTS_SQL = """
INSERT INTO webhook_events (workspace_id, provider, event_type, dedupe_key, provider_created_at, payload,
                            status, error, processed_at)
SELECT x.w, x.p::meeting_booking_provider, x.e, x.k, x.t, x.j::jsonb, x.s, x.r,
       CASE WHEN x.s = %(pending)s THEN NULL ELSE now() END
FROM json_to_recordset(%(rows)s::json) AS x(w text, p text, e text, k text, t timestamptz, j json, s text, r text)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key
"""


#: Is a dedupe key already stored? (psycopg placeholder; the intake asks it for a GHL delivery older than the
#: 24-h window, SPEC §7: a seen ``webhookId`` is a duplicate whatever its age.) Uses the UNIQUE index.
DEDUPE_KEY_SEEN_SQL = "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE dedupe_key = %(key)s)"


def row_json(workspace_id: str, event: StagedEvent) -> bytes:
    """One row object of :data:`INSERT_EVENTS_SQL` (UTF-8 JSON; times as RFC 3339).

    Raises:
        TypeError: a payload value JSON cannot represent (never produced by ``stage_*``).
    """
    return orjson.dumps({
        "w": workspace_id, "p": event.provider.value, "e": event.event_type, "k": event.dedupe_key,
        "t": event.provider_created_at, "j": event.payload, "s": event.status, "r": event.error,
    })


def insert_param(rows: Sequence[bytes]) -> dict[str, str]:
    """The parameter of :data:`INSERT_EVENTS_SQL` for rows made by :func:`row_json`."""
    return {"rows": (b"[" + b",".join(rows) + b"]").decode(), "pending": WebhookStatus.PENDING.value}


def insert_events(conn: sa.Connection, rows: Sequence[tuple[str, StagedEvent]]) -> set[str]:
    """Insert staged events ``(workspace_id, event)`` in the caller's transaction; return the dedupe keys that
    were new."""
    if not rows:
        return set()
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(INSERT_EVENTS_SQL, insert_param([row_json(ws, e) for ws, e in rows]))
        return {r[0] for r in cur.fetchall()}


@dataclass(frozen=True, slots=True)
class PendingWorkspace:
    """A workspace with pending staging rows: how many, the highest id, the oldest ``received_at`` (UTC)."""

    workspace_id: str
    pending: int
    max_id: int
    oldest_received_at: datetime


def pending_workspaces(conn: sa.Connection) -> list[PendingWorkspace]:
    """Every workspace that has ``pending`` rows, by workspace id (uses the partial pending index)."""
    rows = conn.execute(sa.text(
        "SELECT workspace_id, count(*), max(id), min(received_at) FROM webhook_events "
        f"WHERE status = '{PENDING_LITERAL}' GROUP BY workspace_id ORDER BY workspace_id"
    ))
    return [PendingWorkspace(ws, int(n), int(m), t) for ws, n, m, t in rows]


#: A workspace's pending rows in provider-time order, locked for this transaction; rows another
#: ingestion holds are skipped (it will mark them), so two runs never apply the same row.
CLAIM_PENDING_SQL = f"""
SELECT id, provider, event_type, provider_created_at, received_at, payload
FROM webhook_events
WHERE workspace_id = :ws AND status = '{PENDING_LITERAL}'
ORDER BY provider_created_at NULLS LAST, id
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """How one staging row ended: ``status`` ``processed``/``ignored``/``failed`` and the reason (``error``)."""

    id: int
    status: str
    error: str | None = None


def mark_events(conn: sa.Connection, outcomes: Iterable[EventOutcome], now: datetime) -> int:
    """Set status, ``processed_at`` and ``error`` of staging rows (set-based); returns rows updated."""
    items = list(outcomes)
    if not items:
        return 0
    result = conn.execute(
        sa.text(
            "UPDATE webhook_events w SET status = x.s, error = x.e, processed_at = :now "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:errors AS text[])) AS x(i, s, e) "
            "WHERE w.id = x.i"
        ),
        {"ids": [o.id for o in items], "statuses": [o.status for o in items], "errors": [o.error for o in items],
         "now": now},
    )
    return result.rowcount


#: Statuses :func:`requeue_events` may put back to ``pending`` (SPEC §12 ``webhooks requeue``).
REQUEUEABLE_STATUSES: tuple[WebhookStatus, ...] = (WebhookStatus.FAILED,)


def requeue_events(conn: sa.Connection, workspace_id: str, status: str = WebhookStatus.FAILED) -> int:
    """Put the workspace's ``status`` rows back to ``pending`` (``processed_at`` and ``error`` cleared) so
    the sensor ingests them again; returns how many (SPEC §12).

    Raises:
        ValueError: ``status`` is not one of :data:`REQUEUEABLE_STATUSES`.
    """
    if status not in REQUEUEABLE_STATUSES:
        raise ValueError(f"only {', '.join(REQUEUEABLE_STATUSES)} rows can be requeued, not {status!r}")
    result = conn.execute(
        sa.text("UPDATE webhook_events SET status = :pending, processed_at = NULL, error = NULL "
                "WHERE workspace_id = :ws AND status = :status"),
        {"ws": workspace_id, "status": status, "pending": WebhookStatus.PENDING.value},
    )
    return result.rowcount


def purge_events(conn: sa.Connection, *, now: datetime, keep_s: int = DEDUPE_RETENTION_S,
                 workspace_id: str | None = None) -> int:
    """Delete staging rows that are finished (``processed``/``ignored``/``failed`` with ``processed_at``) and
    were received more than ``keep_s`` seconds before ``now`` (UTC); returns how many. Pending rows are
    never deleted. ``workspace_id`` limits it to one workspace.

    Raises:
        ValueError: ``keep_s`` below the 30-day dedupe retention (SPEC §7: a GHL ``webhookId`` must be
            recognised as a duplicate for at least 30 days).
    """
    if keep_s < DEDUPE_RETENTION_S:
        raise ValueError(f"dedupe keys are kept at least {DEDUPE_RETENTION_S // 86400} days (SPEC §7), "
                         f"not {keep_s / 86400:g}")
    result = conn.execute(
        sa.text(f"DELETE FROM webhook_events WHERE status <> '{PENDING_LITERAL}' AND processed_at IS NOT NULL "
                "AND received_at < :horizon AND (CAST(:ws AS text) IS NULL OR workspace_id = :ws)"),
        {"horizon": now - timedelta(seconds=keep_s), "ws": workspace_id},
    )
    return result.rowcount
