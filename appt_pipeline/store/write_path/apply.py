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

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import ErrorKind, Status
from appt_pipeline.store.engine import transaction
from appt_pipeline.store.write_path import locks
from appt_pipeline.store.write_path.links import link_reschedules
from appt_pipeline.store.write_path.params import HAS_SIDE_EFFECTS, VOCAB_PARAMS
from appt_pipeline.store.write_path.side_effects import apply_side_effects, note_primaries_before, recompute_rollups
from appt_pipeline.store.write_path.staging import (
    ANALYZE_STAGE,
    ANALYZE_STAGE_ROWS,
    STAGE_COUNTS,
    STAGE_FLAGS,
    STAGE_SIZE,
    copy_observations,
)
from appt_pipeline.store.write_path.upsert import ConcurrentKeyInsert, append_status_changes, write_rows

log = logging.getLogger(__name__)

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
    error_kind: ErrorKind | None = None
    start_changed: bool = False

    @classmethod
    def failed(cls, index: int, error_kind: ErrorKind) -> "WriteResult":
        """The observation at ``index`` was not applied, for ``error_kind``."""
        return cls(index, None, False, False, None, None, False, error_kind)

    @classmethod
    def written(
        cls,
        index: int,
        appointment_id: UUID,
        *,
        is_new: bool,
        previous_status: Status | None,
        status: Status | None,
        primary_changed: bool,
        start_changed: bool,
    ) -> "WriteResult":
        """The observation at ``index`` was applied to row ``appointment_id`` (``status_changed`` is derived)."""
        return cls(
            index=index,
            appointment_id=appointment_id,
            is_new=is_new,
            status_changed=previous_status is not None and status is not None and previous_status is not status,
            previous_status=previous_status,
            status=status,
            primary_changed=primary_changed,
            start_changed=start_changed,
        )

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
    tasks_cancelled: int


# Which of the optional steps can match anything in this round (one pass instead of running them all):
# exact reschedule links need hints, the heuristic link a source without provider links that is not the
# migration, lead status and tasks a source with side effects.
_ROUND_FLAGS = f"""
SELECT coalesce(bool_or(rescheduled_from_invitee_uri IS NOT NULL), false),
       coalesce(bool_or(rescheduled_to_invitee_uri IS NOT NULL), false),
       coalesce(bool_or(NOT provider_links_reschedules AND source <> CAST(:migration AS appointment_source)), false),
       coalesce(bool_or({HAS_SIDE_EFFECTS}), false)
FROM appt_obs WHERE round = :round AND error_kind IS NULL
"""

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
    rounds, staged = conn.exec_driver_sql(STAGE_SIZE).one()
    if staged >= ANALYZE_STAGE_ROWS:
        conn.exec_driver_sql(ANALYZE_STAGE)
    if rounds:
        locks.lock_batch_and_note_first_round(conn, {"round": 0, **VOCAB_PARAMS})
    for round_no in range(rounds):
        p = {"round": round_no, "now": now, "ref": now, **VOCAB_PARAMS}
        if round_no:
            locks.note_existing(conn, p)
            locks.lock_moved_owners(conn, p)
        from_hints, to_hints, heuristic, side_effects = conn.execute(sa.text(_ROUND_FLAGS), p).one()
        primaries = flags or side_effects
        if primaries:
            note_primaries_before(conn, p)
        write_rows(conn, p, totals)
        totals["status_changes"] += append_status_changes(conn, p)
        link_reschedules(conn, p, from_hints=from_hints, to_hints=to_hints, heuristic=heuristic)
        totals["rollups_changed"] += recompute_rollups(conn, p, primaries=primaries)
        if side_effects:
            leads, cancelled, created = apply_side_effects(conn, p)
            totals["leads_status_changed"] += leads
            totals["tasks_cancelled"] += cancelled
            totals["tasks_created"] += created
    n_staged, n_errors = conn.exec_driver_sql(STAGE_COUNTS).one()
    return StagedSummary(
        staged=int(n_staged),
        errors=int(n_errors),
        created=totals["created"],
        updated=totals["updated"],
        status_changes=totals["status_changes"],
        rollups_changed=totals["rollups_changed"],
        leads_status_changed=totals["leads_status_changed"],
        tasks_created=totals["tasks_created"],
        tasks_cancelled=totals["tasks_cancelled"],
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
    invalid = copy_observations(conn, observations, now)
    apply_staged(conn, now=now)
    results = {index: WriteResult.failed(index, kind) for index, kind in invalid.items()}
    for index, appointment_id, is_new, prev, new, error_kind, primary_changed, start_changed in (
        conn.exec_driver_sql(STAGE_FLAGS)
    ):
        if error_kind is not None:
            results[index] = WriteResult.failed(index, ErrorKind(error_kind))
            continue
        results[index] = WriteResult.written(
            index,
            appointment_id,
            is_new=bool(is_new),
            previous_status=Status(prev) if prev else None,
            status=Status(new) if new else None,
            primary_changed=bool(primary_changed),
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
