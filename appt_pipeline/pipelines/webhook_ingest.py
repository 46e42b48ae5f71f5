"""Webhook ingestion (SPEC §7): a workspace's pending staging rows → the one write path (source WEBHOOK).

:func:`ingest_workspace` works in batches, each in one transaction:

1. **claim** — up to ``batch_size`` pending rows of the workspace in provider-time order
   (``FOR UPDATE SKIP LOCKED``: a concurrent ingestion never applies the same row);
2. **match** — each event to a lead **of this workspace**, set-based (one query per key kind,
   ``store.lead_match``):
   Calendly by invitee URI, then the reschedule partner's URI (``old_invitee``/``new_invitee``,
   also within the batch), then scheduled-event URI, then the e-mail hash; GHL by appointment id,
   then ``contactId`` = ``leads.ghl_contact_id``. Keys are looked up in the appointment history
   (which holds every migrated key); no match → the row is ``ignored`` with ``lead_not_found``
   (a later reconciliation may still find the booking);
3. **build observation** — with the same normalisers as reconciliation; the event rules live
   beside them (``providers.normalize.calendly_webhook_observation`` /
   ``ghl_webhook_observation``): ``invitee.created``/``invitee.canceled`` (RESCHEDULED when
   ``rescheduled``), ``invitee_no_show.created`` → NO_SHOW, ``invitee_no_show.deleted`` → the
   invitee's own status again; GHL ``AppointmentCreate``/``Update`` by ``appointmentStatus``,
   ``AppointmentDelete`` → CANCELED with reason ``deleted``;
4. **apply** — through :func:`~appt_pipeline.store.write_path.apply_observations` (monotonic
   rules, reschedule links, rollups, lead status and follow-up tasks: SPEC §3, §4);
5. **mark** — every row ``processed``, ``ignored`` or ``failed`` with its reason, in the same
   transaction, so a crash leaves rows pending and a re-run is safe.

A batch the database refuses is retried one row at a time (savepoints) so one bad event fails
alone. A *transient* database error (deadlock, serialization failure, lock timeout, lost or
terminated connection: ``store.engine.is_transient``) is never the event's fault: it propagates,
the batch's transaction rolls back, its rows stay ``pending`` and the run fails, so the sensor
launches another (SPEC §7). Rows that did fail are put back with ``appt-pipeline webhooks requeue``.
"""

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import (
    LEAD_ERROR_KINDS,
    ErrorKind,
    Provider,
    Source,
    Status,
    UnknownStatusError,
    WebhookStatus,
)
from appt_pipeline.domain.webhook_staging import CALENDLY_HANDLED, GHL_HANDLED
from appt_pipeline.providers.normalize import calendly_webhook_observation, ghl_webhook_observation
from appt_pipeline.store.engine import is_transient, transaction
from appt_pipeline.store.lead_match import LOOKUP_ORDER, leads_by_key
from appt_pipeline.store.webhook_events import CLAIM_PENDING_SQL, EventOutcome, mark_events
from appt_pipeline.store.write_path import WriteResult, apply_observations

log = logging.getLogger(__name__)

PROCESSED, IGNORED, FAILED = WebhookStatus.PROCESSED, WebhookStatus.IGNORED, WebhookStatus.FAILED
DEFAULT_BATCH_SIZE = 1_000


@dataclass
class IngestReport:
    """What one ingestion of a workspace did (counts of staging rows and of appointment changes)."""

    workspace_id: str
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    ignored_by_reason: Counter[str] = field(default_factory=Counter)
    failed_by_kind: Counter[str] = field(default_factory=Counter)
    new_bookings: int = 0
    cancellations: int = 0
    reschedules: int = 0
    no_shows: int = 0
    status_changes: int = 0
    primary_changes: int = 0
    batches: int = 0
    max_lag_s: float = 0.0
    duration_s: float = 0.0

    def count(self, outcome: EventOutcome) -> None:
        if outcome.status == PROCESSED:
            self.processed += 1
        elif outcome.status == IGNORED:
            self.ignored += 1
            self.ignored_by_reason[outcome.error or "unknown"] += 1
        else:
            self.failed += 1
            self.failed_by_kind[outcome.error or "unknown"] += 1

    def count_write(self, result: WriteResult) -> None:
        """Count one applied observation the way reconciliation does (``WriteResult.is_*``)."""
        self.new_bookings += result.is_new_booking
        self.cancellations += result.is_cancellation
        self.reschedules += result.is_reschedule
        self.no_shows += (result.is_new or result.status_changed) and result.status is Status.NO_SHOW
        self.status_changes += int(result.status_changed)
        self.primary_changes += int(result.primary_changed)


@dataclass(frozen=True, slots=True)
class _Event:
    """A claimed staging row, parsed: the keys lead matching uses and how to build its observation."""

    id: int
    provider: Provider
    event_type: str
    received_at: datetime
    payload: Mapping[str, Any]
    keys: tuple[tuple[str, str], ...]  # (kind, value) in matching order


def _keys(provider: Provider, payload: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    if provider is Provider.CALENDLY:
        inv = payload.get("payload") or {}
        event = inv.get("scheduled_event") or {}
        for kind, value in (
            ("invitee", inv.get("uri")),
            ("invitee", inv.get("old_invitee")),
            ("invitee", inv.get("new_invitee")),
            ("event", inv.get("event") or event.get("uri")),
            ("email_hash", inv.get("email_hash")),
        ):
            if isinstance(value, str) and value:
                out.append((kind, value))
    else:
        appt = payload.get("appointment") or {}
        for kind, value in (("ghl_appointment", appt.get("id")), ("ghl_contact", appt.get("contactId"))):
            if isinstance(value, str) and value:
                out.append((kind, value))
    return tuple(out)


def match_leads(conn: sa.Connection, workspace_id: str, events: Sequence[_Event]) -> dict[int, str]:
    """Lead id per event id, scoped to ``workspace_id`` (SPEC §7 matching order; see the module doc).

    Key kinds are looked up in order, each only for events still unmatched; then events linked by a
    reschedule to a matched event of the same batch inherit its lead.
    """
    found: dict[int, str] = {}
    for kind in LOOKUP_ORDER:
        wanted = {v for e in events if e.id not in found for k, v in e.keys if k == kind}
        if not wanted:
            continue
        hits = leads_by_key(conn, workspace_id, kind, wanted)
        for e in events:
            if e.id in found:
                continue
            lead = next((hits[v] for k, v in e.keys if k == kind and v in hits), None)
            if lead is not None:
                found[e.id] = lead
    # reschedule partners in the same batch (both invitees new to us, one matched by e-mail)
    by_invitee: dict[str, str] = {}
    for e in events:
        if e.id in found:
            for k, v in e.keys:
                if k == "invitee":
                    by_invitee.setdefault(v, found[e.id])
    for e in events:
        if e.id not in found:
            lead = next((by_invitee[v] for k, v in e.keys if k == "invitee" and v in by_invitee), None)
            if lead is not None:
                found[e.id] = lead
    return found


def build_observation(event: _Event, *, workspace_id: str, lead_id: str, source: Source) -> Observation:
    """The observation of one staged event (SPEC §2, §7; the event rules live in ``providers.normalize``).

    Raises:
        UnknownStatusError: a status outside SPEC §2's vocabulary.
        ValueError: a handled event whose stored payload has no usable invitee/appointment.
    """
    build = calendly_webhook_observation if event.provider is Provider.CALENDLY else ghl_webhook_observation
    obs = build(event.event_type, event.payload, workspace_id=workspace_id, lead_id=lead_id, source=source)
    return replace(obs, webhook_event_id=event.id)


def _claim(conn: sa.Connection, workspace_id: str, limit: int) -> list[_Event]:
    rows = conn.execute(sa.text(CLAIM_PENDING_SQL), {"ws": workspace_id, "limit": limit}).all()
    return [
        _Event(id=r.id, provider=Provider(r.provider), event_type=r.event_type, received_at=r.received_at,
               payload=r.payload, keys=_keys(Provider(r.provider), r.payload))
        for r in rows
    ]


def _build(events: Sequence[_Event], leads: Mapping[int, str], workspace_id: str,
           source: Source) -> tuple[list[tuple[_Event, Observation]], list[EventOutcome]]:
    """The observation of every matched, handled event; the outcome of every other one."""
    outcomes: list[EventOutcome] = []
    planned: list[tuple[_Event, Observation]] = []
    for event in events:
        handled = CALENDLY_HANDLED if event.provider is Provider.CALENDLY else GHL_HANDLED
        if event.event_type not in handled:
            outcomes.append(EventOutcome(event.id, IGNORED, ErrorKind.UNHANDLED_EVENT))
            continue
        lead_id = leads.get(event.id)
        if lead_id is None:
            outcomes.append(EventOutcome(event.id, IGNORED, ErrorKind.LEAD_NOT_FOUND))
            continue
        try:
            planned.append((event, build_observation(event, workspace_id=workspace_id, lead_id=lead_id,
                                                     source=source)))
        except UnknownStatusError:
            outcomes.append(EventOutcome(event.id, FAILED, ErrorKind.UNKNOWN_STATUS))
        except ValueError as exc:
            kind = getattr(exc, "kind", None) or str(exc)
            outcomes.append(EventOutcome(event.id, FAILED, kind if kind.isidentifier() else ErrorKind.INVALID_EVENT))
    return planned, outcomes


def _apply(conn: sa.Connection, planned: list[tuple[_Event, Observation]], now: datetime,
           report: IngestReport) -> list[EventOutcome]:
    """Apply the batch in a savepoint; if the database refuses it, apply row by row so one bad event fails alone."""
    observations = [obs for _, obs in planned]
    try:
        with conn.begin_nested():
            results = apply_observations(conn, observations, now=now)
    except sa.exc.DBAPIError as exc:
        if is_transient(exc):  # not the event's fault: fail the run, the rows stay pending (module doc)
            raise
        if len(planned) == 1:
            code = getattr(exc.orig, "sqlstate", None) or type(exc.orig).__name__
            log.warning("webhook event %s refused by the database (%s)", planned[0][0].id, code)
            return [EventOutcome(planned[0][0].id, FAILED, f"database_error:{code}")]
        out: list[EventOutcome] = []
        for item in planned:
            out.extend(_apply(conn, [item], now, report))
        return out
    outcomes = []
    for (event, _), result in zip(planned, results, strict=True):
        if result.error_kind is not None:
            status = IGNORED if result.error_kind in LEAD_ERROR_KINDS else FAILED
            outcomes.append(EventOutcome(event.id, status, result.error_kind))
            continue
        report.count_write(result)
        outcomes.append(EventOutcome(event.id, PROCESSED))
    return outcomes


def ingest_batch(conn: sa.Connection, workspace_id: str, *, source: Source = Source.WEBHOOK,
                 batch_size: int = DEFAULT_BATCH_SIZE, now: datetime | None = None,
                 report: IngestReport | None = None) -> IngestReport:
    """Claim, match, build, apply and mark one batch of the workspace's pending rows in the caller's transaction.

    Raises:
        sqlalchemy.exc.DBAPIError: a transient database error (module doc); the caller's transaction
            must be rolled back, the rows stay pending.
    """
    now = now or utc_now()
    report = report or IngestReport(workspace_id)
    events = _claim(conn, workspace_id, batch_size)
    if not events:
        return report
    report.claimed += len(events)
    report.batches += 1
    report.max_lag_s = max(report.max_lag_s, max((now - e.received_at).total_seconds() for e in events))
    leads = match_leads(conn, workspace_id, events)
    planned, outcomes = _build(events, leads, workspace_id, source)
    if planned:
        outcomes.extend(_apply(conn, planned, now, report))
    for outcome in outcomes:
        report.count(outcome)
    mark_events(conn, outcomes, now)
    return report


def ingest_workspace(engine: sa.Engine, workspace_id: str, *, source: Source = Source.WEBHOOK,
                     batch_size: int = DEFAULT_BATCH_SIZE, max_batches: int | None = None,
                     dry_run: bool = False) -> IngestReport:
    """Ingest the workspace's pending webhook rows until none is left (or ``max_batches``), one transaction per batch.

    With ``dry_run`` one batch is applied and rolled back: the report says what would happen; rows stay
    pending. Safe to run twice and concurrently (claimed rows are locked and skipped by others).

    Raises:
        sqlalchemy.exc.DBAPIError: a database error outside one event's write, or a transient one
            (module doc): batches committed before stay committed, the failing batch's rows stay pending.
    """
    started = time.monotonic()
    report = IngestReport(workspace_id)
    while max_batches is None or report.batches < max_batches:
        before = report.claimed
        with transaction(engine, dry_run=dry_run) as conn:
            ingest_batch(conn, workspace_id, source=source, batch_size=batch_size, report=report)
        if dry_run or report.claimed - before < batch_size:
            break
    report.duration_s = time.monotonic() - started
    return report
