"""Migration of legacy lead rollups into the appointment history (SPEC §5), set-based and resumable.

Leads are processed in id order, in chunks; each chunk is one transaction that stages one
observation per lead into ``appt_obs`` with a single ``INSERT … SELECT`` from ``leads`` and applies
it through the one write path (:func:`appt_pipeline.store.write_path.apply_staged`), then records
the resume point. A crash loses at most the chunk in flight; a rerun (with or without ``resume``)
ends with the same tables, because every lead is keyed by ``legacy_lead_key`` = lead id.

Outcome per scanned lead (counters ``scanned = created + exists + skipped + errors``):

* ``created`` — a row was (or, in a dry-run, would be) created;
* ``exists`` — the lead was migrated before, or its provider key already belongs to it;
* ``skipped`` — the lead has no provider id (nothing to migrate);
* ``errors`` by kind — ``unknown_status`` (SPEC §2, the value is reported) and
  ``duplicate_provider_id``: several leads claim one provider id. **The winner is the lead with the
  smallest id** (the first one the migration reaches, which keeps the outcome identical across
  chunking, resumes and reruns); every other claimant is reported naming the owner and keeps its
  legacy rollup untouched. A key already owned by a lead of another workspace is the same conflict.

Warnings (row still created): ``unparseable_booked_slot`` — ``booked_slot`` is not ISO-8601 and no
``appointment_start_at`` exists, so ``start_at`` is NULL (SPEC §5).
"""

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import STATUS_SYNONYMS, ErrorKind, Source, WarningKind
from appt_pipeline.store.write_path import (
    KEY_KIND,
    KEY_VALUE,
    apply_staged,
    ensure_stage,
    rows_by_key,
    stage_insert_sql,
)

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 50_000
MAX_ERROR_SAMPLES = 50


class UnknownWorkspaceError(LookupError):
    """The workspace id does not exist in ``workspaces``."""


@dataclass
class MigrationReport:
    """Counters of one migration run of one workspace (SPEC §5). ``duration_s`` in seconds."""

    workspace_id: str
    apply: bool
    scanned: int = 0
    created: int = 0
    exists: int = 0
    skipped: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    warnings_by_kind: dict[str, int] = field(default_factory=dict)
    error_samples: list[dict[str, str]] = field(default_factory=list)
    rollups_changed: int = 0
    status_changes: int = 0
    resumed_after: str | None = None
    last_lead_id: str | None = None
    chunks: int = 0
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# Status mapping injected as data from the one Python mapping (SPEC §2): no second copy in SQL.
def _status_values() -> tuple[str, dict[str, str]]:
    params: dict[str, str] = {}
    rows = []
    for i, (raw, status) in enumerate(sorted(STATUS_SYNONYMS.items())):
        params[f"sk{i}"], params[f"sv{i}"] = raw, status.value
        rows.append(f"(:sk{i}, CAST(:sv{i} AS appointment_status))")
    return "VALUES " + ", ".join(rows), params


_STATUS_VALUES, _STATUS_PARAMS = _status_values()

#: The vocabulary the statements below bind (never pasted into SQL text).
_VOCAB_PARAMS: dict[str, str] = {
    "migration": Source.MIGRATION.value,
    "unknown_status": ErrorKind.UNKNOWN_STATUS.value,
    "duplicate_provider_id": ErrorKind.DUPLICATE_PROVIDER_ID.value,
    "unparseable_booked_slot": WarningKind.UNPARSEABLE_BOOKED_SLOT.value,
}

#: Trim as Python's ``str.strip`` does (any whitespace, incl. tabs, newlines and no-break spaces), so the
#: SQL lookup key equals ``domain.vocab.normalise_status_key``.
_TRIM = "regexp_replace({}, '^[\\s\\u00a0]+|[\\s\\u00a0]+$', '', 'g')"

# One chunk: the next ``:limit`` leads of the workspace in id order. Leads with a provider id are staged (one
# observation each); the statement returns the chunk's last lead id and its size (the resume point, and the
# leads skipped = size − staged). ``warning`` flags a row whose booked_slot is not ISO-8601 and that has no
# appointment_start_at (SPEC §5: start_at NULL); it counts only if the row is created.
_STAGE = f"""
WITH chunk AS (
    SELECT id, workspace_id, ghl_appointment_id, calendly_invitee_uri, calendly_scheduled_event_uri,
           appointment_start_at, appointment_end_at, appointment_booked_at, appointment_canceled_at,
           appointment_status, booked_slot
    FROM leads
    WHERE workspace_id = :ws AND (CAST(:after AS text) IS NULL OR id > :after)
    ORDER BY id LIMIT :limit
),
staged AS (
    {stage_insert_sql({
        "ord": "row_number() OVER (ORDER BY l.id)",
        "round": "0",
        "workspace_id": "l.workspace_id",
        "lead_id": "l.id",
        "provider": "x.provider",
        "status": "coalesce(m.status, 'CONFIRMED')",
        "source": "CAST(:migration AS appointment_source)",
        "ghl_appointment_id": "CASE WHEN x.provider = 'GHL' THEN l.ghl_appointment_id END",
        "calendly_invitee_uri": "CASE WHEN x.provider = 'CALENDLY' THEN l.calendly_invitee_uri END",
        "calendly_scheduled_event_uri": "CASE WHEN x.provider = 'CALENDLY' THEN l.calendly_scheduled_event_uri END",
        "start_at": "x.start_at",
        "end_at": "l.appointment_end_at",
        "booked_at": "l.appointment_booked_at",
        "canceled_at": "CASE WHEN m.status IN ('CANCELED', 'RESCHEDULED') "
                       "THEN coalesce(l.appointment_canceled_at, :now) END",
        "status_changed_at": "coalesce(l.appointment_canceled_at, l.appointment_booked_at, :now)",
        "legacy_lead_key": "l.id",
        "error_kind": f"CASE WHEN m.status IS NULL AND nullif({_TRIM.format('l.appointment_status')}, '') IS NOT NULL"
                      " THEN CAST(:unknown_status AS text) END",
        "warning": "CASE WHEN x.start_at IS NULL AND nullif(btrim(l.booked_slot), '') IS NOT NULL"
                   " THEN CAST(:unparseable_booked_slot AS text) END",
    })}
    FROM chunk l
    CROSS JOIN LATERAL (SELECT CASE WHEN l.ghl_appointment_id IS NOT NULL THEN 'GHL'
                                   ELSE 'CALENDLY' END::meeting_booking_provider AS provider,
                               coalesce(l.appointment_start_at, appt_parse_legacy_timestamp(l.booked_slot))
                                   AS start_at) x
    LEFT JOIN ({_STATUS_VALUES}) m(raw, status) ON m.raw = lower({_TRIM.format("l.appointment_status")})
    WHERE l.ghl_appointment_id IS NOT NULL OR l.calendly_invitee_uri IS NOT NULL
       OR l.calendly_scheduled_event_uri IS NOT NULL
    RETURNING 1
)
SELECT (SELECT max(id) FROM chunk), (SELECT count(*) FROM chunk), (SELECT count(*) FROM staged)
"""

# Already migrated (the lead's legacy key is present), or its provider key is already owned: by this lead →
# ``already_present`` (not applied, counted as exists), else a conflict naming the owner (``claimed_by_lead_id``).
# Each key kind is one sorted scan of its unique index (write_path's rows_by_key, plus the legacy key of every
# lead); a lead with several hits is `exists` if one is its own. This outranks `unknown_status` (the only error
# staging sets): a lead migrated before is reported as it is.
_MARK_EXISTING = f"""
WITH found AS (
    {rows_by_key("true")}
    UNION ALL
    SELECT 'lead', a.legacy_lead_key, a.id FROM appointments a
    WHERE a.legacy_lead_key = ANY (ARRAY(SELECT lead_id FROM appt_obs))
),
matched AS (
    SELECT o.ord, o.lead_id, f.id FROM found f JOIN appt_obs o ON o.lead_id = f.k
    WHERE f.kind = 'lead'
    UNION ALL
    SELECT o.ord, o.lead_id, f.id FROM found f JOIN appt_obs o ON f.kind = {KEY_KIND} AND f.k = {KEY_VALUE}
),
hits AS (
    SELECT m.ord, bool_or(a.lead_id = m.lead_id) AS own, min(a.lead_id) AS owner
    FROM matched m JOIN appointments a ON a.id = m.id
    GROUP BY m.ord
)
UPDATE appt_obs o SET already_present = h.own,
                      error_kind = CASE WHEN NOT h.own THEN CAST(:duplicate_provider_id AS text) END,
                      claimed_by_lead_id = CASE WHEN NOT h.own THEN h.owner END
FROM hits h
WHERE o.ord = h.ord
"""

# Several leads of the chunk claim one provider id: the smallest lead id wins.
_MARK_DUPLICATES = """
UPDATE appt_obs o SET error_kind = :duplicate_provider_id, claimed_by_lead_id = d.winner
FROM (
    SELECT ord, first_value(lead_id) OVER w AS winner, row_number() OVER w AS n
    FROM appt_obs
    WHERE error_kind IS NULL AND NOT already_present AND coalesce(ghl_appointment_id, calendly_invitee_uri) IS NOT NULL
    WINDOW w AS (PARTITION BY provider, coalesce(ghl_appointment_id, calendly_invitee_uri) ORDER BY lead_id)
) d
WHERE o.ord = d.ord AND d.n > 1
"""

# Dry-run only: provider ids claimed by earlier chunks of this run (their rows were never written), so that
# a dry-run reports the same duplicates as --apply whatever the chunk size.
_DRY_CLAIMS_CREATE = """
CREATE TEMP TABLE IF NOT EXISTS appt_dry_claims (
    provider meeting_booking_provider NOT NULL, key text NOT NULL, lead_id text NOT NULL,
    PRIMARY KEY (provider, key)
)
"""
_DRY_CLAIMS_MARK = """
UPDATE appt_obs o SET error_kind = :duplicate_provider_id, claimed_by_lead_id = c.lead_id
FROM appt_dry_claims c
WHERE o.error_kind IS NULL AND NOT o.already_present AND c.provider = o.provider
  AND c.key = coalesce(o.ghl_appointment_id, o.calendly_invitee_uri) AND c.lead_id <> o.lead_id
"""
_DRY_CLAIMS_ADD = """
INSERT INTO appt_dry_claims (provider, key, lead_id)
SELECT provider, coalesce(ghl_appointment_id, calendly_invitee_uri), lead_id FROM appt_obs
WHERE error_kind IS NULL AND NOT already_present AND coalesce(ghl_appointment_id, calendly_invitee_uri) IS NOT NULL
ON CONFLICT DO NOTHING
"""

# Outcome per staged lead (already present, an error kind, or created when neither), and the warnings of the
# rows (to be) created.
_OUTCOMES = """
SELECT already_present, error_kind, count(*),
       count(*) FILTER (WHERE error_kind IS NULL AND NOT already_present AND warning IS NOT NULL)
FROM appt_obs GROUP BY 1, 2
"""

# Leads migrated before are not applied again.
_DROP_PRESENT = "DELETE FROM appt_obs WHERE already_present"

_ERROR_SAMPLES = """
SELECT lead_id, error_kind,
       CASE WHEN claimed_by_lead_id IS NOT NULL THEN 'provider id already claimed by lead ' || claimed_by_lead_id
            ELSE '' END
FROM appt_obs WHERE error_kind IS NOT NULL ORDER BY lead_id LIMIT :limit
"""

_UNKNOWN_STATUS_SAMPLES = """
SELECT o.lead_id, l.appointment_status FROM appt_obs o JOIN leads l ON l.id = o.lead_id
WHERE o.error_kind = :unknown_status ORDER BY o.lead_id LIMIT :limit
"""

# Planner settings of each chunk's transaction: JIT compilation costs up to ~0.5 s per large statement
# and buys nothing for these one-pass statements (measured: ~1 s per 50k-lead chunk).
#: ``work_mem``: the rollup recompute sorts a chunk's rows (~12 MB spilled to disk at the 4 MB default).
_CHUNK_SETTINGS = "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"

#: ``appointments`` is re-analyzed after a chunk once this run has inserted at least this many rows and at
#: least as many as the table held at its last ANALYZE (so O(log n) times per run). The write path's plans
#: depend on its statistics (e.g. the null fraction of ``calendly_invitee_uri``), and autovacuum may lag
#: behind (or be off during) a bulk migration that grows the table from nothing.
ANALYZE_MIN_ROWS = 10_000
_APPOINTMENTS_RELTUPLES = "SELECT reltuples FROM pg_class WHERE oid = 'appointments'::regclass"

_SAVE_PROGRESS = """
INSERT INTO migration_progress (workspace_id, last_lead_id) VALUES (:ws, :upto)
ON CONFLICT (workspace_id) DO UPDATE SET last_lead_id = EXCLUDED.last_lead_id, updated_at = now()
"""


#: Advisory lock class of ``migrate --apply`` (first key of ``pg_advisory_lock(int, int)``; the second
#: is ``hashtext(workspace_id)``). A hash collision of two workspace ids only serialises their runs.
_MIGRATE_LOCK_CLASS = 0x4D494752  # "MIGR"
_TRY_LOCK = sa.text("SELECT pg_try_advisory_lock(:cls, hashtext(:ws))")
_LOCK = sa.text("SELECT pg_advisory_lock(:cls, hashtext(:ws))")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:cls, hashtext(:ws))")


def migrate_workspace(
    engine: sa.Engine,
    workspace_id: str,
    *,
    apply: bool = False,
    resume: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    now: datetime | None = None,
    on_chunk: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Migrate one workspace's legacy rollups (SPEC §5); dry-run unless ``apply``.

    ``resume`` starts after the last committed chunk of an earlier ``apply`` run (a dry-run never
    moves the resume point). ``on_chunk`` is called with the running report after each chunk.
    No follow-up tasks and no lead status change (source MIGRATION); rollups are recomputed.

    Two ``apply`` runs of the same workspace are serialised by a per-workspace PostgreSQL advisory lock
    (held on a connection of its own for the whole run, docs/operations.md §3): the second waits for the
    first and then reports as ``exists`` what the first created. A dry-run takes no lock.

    Raises:
        UnknownWorkspaceError: ``workspace_id`` does not exist.
        ValueError: ``chunk_size`` < 1.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    kwargs: dict[str, Any] = {"apply": apply, "resume": resume, "chunk_size": chunk_size, "now": now,
                              "on_chunk": on_chunk}
    if not apply:
        return _migrate_workspace(engine, workspace_id, **kwargs)
    key = {"cls": _MIGRATE_LOCK_CLASS, "ws": workspace_id}
    with engine.connect() as lock_conn:
        if not lock_conn.execute(_TRY_LOCK, key).scalar_one():
            log.info("migrate %s: another migrate --apply of this workspace is running; waiting for it",
                     workspace_id)
            lock_conn.execute(_LOCK, key)
        lock_conn.commit()  # a session lock outlives the transaction: the run holds no transaction open here
        try:
            return _migrate_workspace(engine, workspace_id, **kwargs)
        finally:
            lock_conn.execute(_UNLOCK, key)
            lock_conn.commit()


def _migrate_workspace(
    engine: sa.Engine,
    workspace_id: str,
    *,
    apply: bool,
    resume: bool,
    chunk_size: int,
    now: datetime | None,
    on_chunk: Callable[[MigrationReport], None] | None,
) -> MigrationReport:
    started = time.monotonic()
    report = MigrationReport(workspace_id=workspace_id, apply=apply)
    kinds: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM workspaces WHERE id = :ws"), {"ws": workspace_id}).first()
        if not exists:
            raise UnknownWorkspaceError(f"workspace {workspace_id!r} does not exist")
        after: str | None = None
        if resume:
            after = conn.execute(
                sa.text("SELECT last_lead_id FROM migration_progress WHERE workspace_id = :ws"), {"ws": workspace_id}
            ).scalar_one_or_none()
            report.resumed_after = after
        conn.commit()
        ensure_stage(conn)
        if not apply:
            conn.exec_driver_sql(_DRY_CLAIMS_CREATE)
            conn.exec_driver_sql("TRUNCATE appt_dry_claims")
        analyzed_rows = max(0, int(conn.exec_driver_sql(_APPOINTMENTS_RELTUPLES).scalar_one()))
        conn.commit()
        inserted_since_analyze = 0
        while True:
            run_now = now or utc_now()
            with conn.begin() as tx:
                conn.exec_driver_sql(_CHUNK_SETTINGS)
                params = {"ws": workspace_id, "after": after, "limit": chunk_size, "now": run_now, **_STATUS_PARAMS,
                          **_VOCAB_PARAMS}
                upto, n_leads, n_staged = conn.execute(sa.text(_STAGE), params).one()
                if not n_leads:
                    tx.rollback()
                    break
                params["upto"] = upto
                conn.execute(sa.text(_MARK_EXISTING), _VOCAB_PARAMS)
                conn.execute(sa.text(_MARK_DUPLICATES), _VOCAB_PARAMS)
                if not apply:
                    conn.execute(sa.text(_DRY_CLAIMS_MARK), _VOCAB_PARAMS)
                    conn.exec_driver_sql(_DRY_CLAIMS_ADD)
                outcome: Counter[str] = Counter()
                warn = 0
                for present, error_kind, count, warned in conn.exec_driver_sql(_OUTCOMES):
                    outcome["exists" if present else error_kind or "created"] += int(count)
                    warn += int(warned)
                # every lead of the chunk with a provider id was staged; the others are skipped
                skipped = int(n_leads) - int(n_staged)
                _collect_samples(conn, report)
                if apply:
                    # apply_staged analyzes the staging table itself (a 50k-row chunk without statistics gets
                    # quadratic plans); the migration reads no per-observation flags (and has no side effects)
                    conn.exec_driver_sql(_DROP_PRESENT)
                    summary = apply_staged(conn, now=run_now, flags=False)
                    report.rollups_changed += summary.rollups_changed
                    report.status_changes += summary.status_changes
                    conn.execute(sa.text(_SAVE_PROGRESS), params)
                    tx.commit()
                    inserted_since_analyze += summary.created
                else:
                    # nothing persistent was written: committing only empties appt_obs (ON COMMIT DELETE
                    # ROWS) and keeps this run's dry-run claims in the session's temp table
                    tx.commit()
            if inserted_since_analyze >= max(ANALYZE_MIN_ROWS, analyzed_rows):
                with conn.begin():
                    conn.exec_driver_sql("ANALYZE appointments")
                analyzed_rows += inserted_since_analyze
                inserted_since_analyze = 0
            report.chunks += 1
            report.skipped += skipped
            report.created += int(outcome.pop("created", 0))
            report.exists += int(outcome.pop("exists", 0))
            kinds.update({k: int(v) for k, v in outcome.items()})
            if warn:
                warnings[WarningKind.UNPARSEABLE_BOOKED_SLOT.value] += warn
            report.errors = sum(kinds.values())
            report.errors_by_kind = dict(sorted(kinds.items()))
            report.warnings_by_kind = dict(sorted(warnings.items()))
            report.scanned = report.created + report.exists + report.skipped + report.errors
            report.last_lead_id = upto
            report.duration_s = time.monotonic() - started
            after = upto
            if on_chunk:
                on_chunk(report)
    report.duration_s = time.monotonic() - started
    return report


def _collect_samples(conn: sa.Connection, report: MigrationReport) -> None:
    room = MAX_ERROR_SAMPLES - len(report.error_samples)
    if room <= 0:
        return
    statuses = dict(conn.execute(sa.text(_UNKNOWN_STATUS_SAMPLES), {"limit": room, **_VOCAB_PARAMS}).all())
    for lead_id, kind, detail in conn.execute(sa.text(_ERROR_SAMPLES), {"limit": room}):
        if kind == ErrorKind.UNKNOWN_STATUS:
            detail = f"unknown appointment status {statuses.get(lead_id)!r}"
        report.error_samples.append({"lead_id": lead_id, "kind": kind, "detail": detail})
