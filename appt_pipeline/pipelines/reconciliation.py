"""Reconciliation (SPEC §6): learn the truth of one workspace's due leads from its provider.

For each due lead (``store.reconcile.select_due_leads``: never-checked first, within a lead budget
and a time budget) the provider is asked, every answer becomes observations, and every observation
goes through the one write path (source RECONCILE_CRON, or BACKFILL for historical backfills):

* GHL — discovery on every check: the contact (stored id, else resolved by e-mail and persisted),
  then *all* of its appointments (``GET /contacts/{id}/appointments``), so a new booking after a
  cancellation is found; an appointment listed without its calendar, or known to us but no longer
  listed (deleted ones drop out of lists), is refreshed by id.
* Calendly — ``GET /scheduled_events`` by invitee e-mail, organization and a rolling window
  (−90 d … +90 d), every page; the invitees of each event (every page), matched by e-mail; both
  configured event types (default and direct-book) when set, else all.

Every terminal outcome advances the watermark (except dry-run); errors back off exponentially. A
circuit breaker stops the run once ≥ 5 leads were checked and more than half of them failed. All
requests of a run share one rate limiter per provider account.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import ErrorKind as DomainErrorKind
from appt_pipeline.domain.vocab import Source, UnknownStatusError
from appt_pipeline.pipelines.accounts import ProviderAccount
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import (
    CALENDLY_RATE_LIMIT,
    GHL_RATE_LIMIT,
    CallStats,
    ErrorKind,
    ProviderError,
    RateLimit,
    RetryPolicy,
)
from appt_pipeline.providers.normalize import calendly_observation, ghl_observation
from appt_pipeline.store.reconcile import (
    DueLead,
    Outcome,
    RecheckPolicy,
    record_outcomes,
    select_due_leads,
    set_ghl_contact_ids,
)
from appt_pipeline.store.write_path import WriteResult, write_observations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileSettings:
    """Budgets and limits of one run. Seconds unless named otherwise."""

    lead_budget: int = 500
    time_budget_s: float = 900.0
    concurrency: int = 16
    window_days: int = 90
    write_batch_leads: int = 50
    timeout_s: float = 15.0
    breaker_min_checks: int = 5
    breaker_error_rate: float = 0.5
    ghl_rate: RateLimit = GHL_RATE_LIMIT
    calendly_rate: RateLimit = CALENDLY_RATE_LIMIT
    recheck: RecheckPolicy = field(default_factory=RecheckPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def client_options(self) -> ClientOptions:
        """The options of the run's :class:`ClientFactory` (limits, timeout, retries)."""
        return ClientOptions(ghl_rate=self.ghl_rate, calendly_rate=self.calendly_rate, timeout_s=self.timeout_s,
                             retry=self.retry)


@dataclass
class ReconcileReport:
    """Counters of one run (SPEC §6 run metadata). ``duration_s`` in seconds."""

    workspace_id: str
    provider: str
    dry_run: bool
    source: str
    leads_due: int = 0
    leads_checked: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    not_found: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    new_bookings: int = 0
    cancellations: int = 0
    reschedules: int = 0
    observations: int = 0
    circuit_broken: bool = False
    budget_exhausted: bool = False
    api: dict[str, int | float] = field(default_factory=dict)
    duration_s: float = 0.0


@dataclass
class LeadEvidence:
    """One lead's check: its outcome, the observations the provider's answers became, and the GHL contact id
    resolved by e-mail (to persist), or the error kind."""

    lead: DueLead
    outcome: Outcome
    observations: list[Observation] = field(default_factory=list)
    contact_id: str | None = None
    error_kind: str | None = None


async def _ghl_evidence(client: GhlClient, account: ProviderAccount, lead: DueLead, source: Source) -> LeadEvidence:
    contact_id = lead.ghl_contact_id
    resolved = None
    if not contact_id and lead.email:
        contact_id = resolved = await client.find_contact_id_by_email(lead.email)
    appointments = {}
    if contact_id:
        listing = await client.get_contact_appointments(contact_id)
        appointments = {a.id: a for a in listing.items}
    # refresh by id: listed without calendar (incomplete) or known to us but no longer listed
    refresh = [a.id for a in appointments.values() if not a.calendar_id]
    refresh += [k for k in lead.ghl_appointment_ids if k not in appointments]
    for appointment_id in refresh:
        try:
            appointments[appointment_id] = await client.get_appointment(appointment_id)
        except ProviderError as exc:
            if exc.kind != ErrorKind.NOT_FOUND:
                raise
    if not contact_id and not appointments:
        return LeadEvidence(lead, Outcome.NOT_FOUND)
    observations = [
        ghl_observation(a, workspace_id=account.workspace_id, lead_id=lead.id, source=source, timezone=account.timezone)
        for a in appointments.values()
    ]
    return LeadEvidence(lead, Outcome.UNCHANGED, observations, contact_id=resolved)


async def _calendly_evidence(client: CalendlyClient, account: ProviderAccount, lead: DueLead, source: Source,
                             now: datetime, window: timedelta) -> LeadEvidence:
    if not lead.email:
        return LeadEvidence(lead, Outcome.SKIPPED)
    events = await client.list_scheduled_events(
        invitee_email=lead.email, min_start=now - window, max_start=now + window,
        organization_uri=account.organization_uri,
    )
    if account.event_type_uris:
        events = [e for e in events if e.event_type_uri in account.event_type_uris]
    observations = []
    for event in events:
        for invitee in await client.list_event_invitees(event.uri, email=lead.email):
            if (invitee.email or "").strip().lower() == lead.email:
                observations.append(calendly_observation(invitee, event, workspace_id=account.workspace_id,
                                                         lead_id=lead.id, source=source))
    if not observations:
        return LeadEvidence(lead, Outcome.NOT_FOUND)
    return LeadEvidence(lead, Outcome.UNCHANGED, observations)


async def check_lead(client: GhlClient | CalendlyClient, account: ProviderAccount, lead: DueLead, *,
                     source: Source = Source.RECONCILE_CRON, now: datetime | None = None,
                     window_days: int = ReconcileSettings.window_days) -> LeadEvidence:
    """Ask the provider about one lead exactly as a reconciliation run does (SPEC §6: GHL discovery by contact,
    Calendly by e-mail over −``window_days`` … +``window_days``); nothing is written. Used on its own to resolve
    a booking whose outcome is unknown (SPEC §8).

    Raises:
        ProviderError: the provider failed (after the client's retries).
        UnknownStatusError: a status outside SPEC §2's vocabulary.
    """
    if isinstance(client, GhlClient):
        return await _ghl_evidence(client, account, lead, source)
    return await _calendly_evidence(client, account, lead, source, now or utc_now(), timedelta(days=window_days))


def _classify(results: Sequence[LeadEvidence], writes: list[WriteResult], report: ReconcileReport) -> None:
    """Turn write flags into lead outcomes and change counters (pure bookkeeping)."""
    position = 0
    for result in results:
        mine = writes[position:position + len(result.observations)]
        position += len(result.observations)
        failed = [w for w in mine if w.error_kind]
        if failed and len(failed) == len(mine):
            result.outcome, result.error_kind = Outcome.ERROR, failed[0].error_kind
            continue
        changed = [w for w in mine if not w.error_kind
                   and (w.is_new or w.status_changed or w.primary_changed or w.start_changed)]
        if changed:
            result.outcome = Outcome.CHANGED
        for w in mine:
            if w.error_kind:
                continue
            report.new_bookings += w.is_new_booking
            report.cancellations += w.is_cancellation
            report.reschedules += w.is_reschedule


async def reconcile_workspace(
    engine: sa.Engine,
    account: ProviderAccount,
    *,
    settings: ReconcileSettings = ReconcileSettings(),
    source: Source = Source.RECONCILE_CRON,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ReconcileReport:
    """Check the workspace's due leads against its provider and apply what it says (SPEC §6).

    Never raises for a lead's provider failure or a status outside SPEC §2's vocabulary (counted by
    kind — ``provider_<kind>`` resp. ``unknown_status`` — watermark backs off); raises only
    for database failures outside a lead's write.
    """
    started = time.monotonic()
    now = now or utc_now()
    deadline = started + settings.time_budget_s
    report = ReconcileReport(account.workspace_id, account.provider.value, dry_run, source.value)
    with engine.connect() as conn:
        leads = select_due_leads(conn, account.workspace_id, account.provider, now, settings.lead_budget)
    report.leads_due = len(leads)
    stats = CallStats()
    errors_by_kind: Counter[str] = Counter()
    pending: list[LeadEvidence] = []
    window = timedelta(days=settings.window_days)
    state = {"checked": 0, "errors": 0, "broken": False}

    async with httpx.AsyncClient(timeout=settings.timeout_s) as http:
        client = ClientFactory(http, settings.client_options(), engine).client(account, stats)
        gate = asyncio.Semaphore(settings.concurrency)

        async def check(lead: DueLead) -> LeadEvidence | None:
            async with gate:
                if state["broken"] or time.monotonic() >= deadline:
                    return None
                try:
                    if isinstance(client, GhlClient):
                        result = await _ghl_evidence(client, account, lead, source)
                    else:
                        result = await _calendly_evidence(client, account, lead, source, now, window)
                except ProviderError as exc:
                    log.warning("workspace %s lead %s: provider %s error: %s", account.workspace_id, lead.id,
                                exc.kind, exc.message)
                    result = LeadEvidence(lead, Outcome.ERROR, error_kind=f"provider_{exc.kind}")
                except UnknownStatusError:  # SPEC §2: counted for this lead, never guessed, never fatal to the run
                    log.warning("workspace %s lead %s: unknown provider status", account.workspace_id, lead.id)
                    result = LeadEvidence(lead, Outcome.ERROR, error_kind=DomainErrorKind.UNKNOWN_STATUS.value)
                state["checked"] += 1
                state["errors"] += result.outcome is Outcome.ERROR
                checked, errors = state["checked"], state["errors"]
                if checked >= settings.breaker_min_checks and errors / checked > settings.breaker_error_rate:
                    state["broken"] = True
                return result

        tasks = [asyncio.ensure_future(check(lead)) for lead in leads]
        for next_done in asyncio.as_completed(tasks):
            result = await next_done
            if result is None:
                continue
            pending.append(result)
            if len(pending) >= settings.write_batch_leads:
                await asyncio.to_thread(_flush, engine, pending, report, errors_by_kind, now, settings, dry_run)
                pending = []
        if pending:
            await asyncio.to_thread(_flush, engine, pending, report, errors_by_kind, now, settings, dry_run)

    report.circuit_broken = bool(state["broken"])
    report.budget_exhausted = not report.circuit_broken and report.leads_checked < report.leads_due
    report.errors_by_kind = dict(sorted(errors_by_kind.items()))
    report.api = stats.as_metadata()
    report.duration_s = time.monotonic() - started
    return report


_OUTCOME_COUNTER = {Outcome.CHANGED: "changed", Outcome.UNCHANGED: "unchanged", Outcome.SKIPPED: "skipped",
                   Outcome.NOT_FOUND: "not_found", Outcome.ERROR: "errors"}


def _flush(engine: sa.Engine, results: list[LeadEvidence], report: ReconcileReport, errors_by_kind: Counter[str],
           now: datetime, settings: ReconcileSettings, dry_run: bool) -> None:
    """Write one batch of leads' observations, then their outcomes and resolved contact ids."""
    observations = [o for r in results if r.outcome is not Outcome.ERROR for o in r.observations]
    writing = [r for r in results if r.outcome is not Outcome.ERROR]
    if observations:
        try:
            writes = write_observations(engine, observations, now=now, dry_run=dry_run)
        except Exception as exc:  # one bad batch must not stop the run: retry lead by lead
            log.warning("workspace %s: batch write failed (%s); writing lead by lead", report.workspace_id,
                        type(exc).__name__)
            writes = []
            for r in writing:
                try:
                    writes += write_observations(engine, r.observations, now=now, dry_run=dry_run)
                except Exception as lead_exc:
                    r.outcome, r.error_kind = Outcome.ERROR, f"write_{type(lead_exc).__name__}"
                    r.observations = []
        _classify([r for r in writing if r.outcome is not Outcome.ERROR], writes, report)
        report.observations += len(observations)
    for r in results:
        report.leads_checked += 1
        counter = _OUTCOME_COUNTER[r.outcome]
        setattr(report, counter, getattr(report, counter) + 1)
        if r.outcome is Outcome.ERROR:
            errors_by_kind[r.error_kind or "unknown"] += 1
    if dry_run:
        return
    with engine.begin() as conn:
        set_ghl_contact_ids(conn, {r.lead.id: r.contact_id for r in results if r.contact_id})
        record_outcomes(conn, [(r.lead.id, r.outcome) for r in results], now, settings.recheck)
