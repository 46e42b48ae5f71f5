"""The main job end to end on the embedded default (SPEC §12 ``demo``): migration, then reconciliation.

1. Imports the legacy sample shipped in the package, registers every workspace as a partition and runs
   ``migration_job`` for each as a real Dagster run.
2. Starts both provider simulators on loopback with the real rate limits (GHL 100 requests / 10 s per
   location, Calendly 500 / min per user), seeded from the same legacy export so that the providers'
   truth starts equal to the legacy snapshot (:func:`appt_pipeline.sandbox.legacy_seed.legacy_seeds`);
   points the sample workspaces at them (``ghl_api_base_url`` / ``calendly_api_base_url``) and stores
   their tokens encrypted with ``APPT_SECRET_KEY`` — when it is unset, with an ephemeral key set in this
   process's environment only (the in-process Dagster runs read it there), never printed.
3. Makes the truth drift (:func:`~appt_pipeline.sandbox.legacy_seed.apply_drift`: cancellations,
   reschedules, new bookings after a cancellation, no-shows) among the leads the reconciliation pass
   will check, then runs ``reconciliation_job`` for every workspace as real Dagster runs: one pass of
   up to :data:`DEMO_LEAD_BUDGET` due leads each, in the job's own order (never checked first, then
   oldest check, then lead id).
4. Checks that every drift action is reflected in the appointment history; connects the webhooks, changes
   other bookings at the simulators and ingests the signed deliveries (``webhook_ingest_job``).
5. Runs the attribution backfill, the availability refresh, one booking per workspace through the HTTP API
   and the capacity of every workspace (:mod:`appt_pipeline.local.demo_capacity`), then stops the simulators
   and disconnects the workspaces again (tokens deleted, base URLs back to the providers').

**Rerun semantics** — the demo replays the same scenario, and a rerun shows that the pipeline is
idempotent end to end:

* migration creates nothing (every lead is keyed by ``legacy_lead_key``);
* the simulators are new, re-seeded from the legacy export, and the same deterministic drift is applied
  again (same seed, same bookings, same generated ids);
* the watermark the previous demo pass left on the sample leads is cleared first
  (``appointment_last_checked_at``, ``appointment_next_check_at``, ``appointment_check_failures`` of
  the leads whose ``appointment_next_check_at`` is set — only reconciliation sets it; legacy values of
  never-reconciled leads are kept), so the pass checks the same leads in the same order. Without it
  every checked lead would be "checked less than an hour ago", not due, and the pass would check others;
* so reconciliation finds the same drifted truth and reports 0 changed leads, 0 new bookings,
  0 cancellations and 0 reschedules — the history already holds them — and the history check passes
  again.
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.cli.launch import RunOutcome, ensure_partitions, run_partition_job
from appt_pipeline.cli.runtime import Runtime
from appt_pipeline.defs.evidence import ReconciliationEvidence, history_run_config
from appt_pipeline.defs.history_results import (
    HistoryCounters,
    MigrationResult,
    ReconciliationResult,
    RollupsResult,
    WebhookResult,
)
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.sensors import webhook_events_sensor
from appt_pipeline.domain.vocab import Provider
from appt_pipeline.local.demo_capacity import CapacityPhase, run_capacity_phase
from appt_pipeline.local.stack import LocalStack, local_stack, session_secret_key
from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sandbox.legacy_seed import (
    DriftAction,
    DriftSummary,
    ExpectedFindings,
    apply_drift,
    expected_history,
    legacy_seeds,
)
from appt_pipeline.store.legacy_import import import_legacy
from appt_pipeline.store.reconcile import count_due_leads, select_due_leads
from appt_pipeline.store.workspaces import workspace_ids

#: Due leads checked per workspace by the demo's reconciliation pass (the job's ``lead_budget``): what
#: one rate-limit window of the provider serves at once, at about one request per GHL check (100
#: requests / 10 s per location) and about 1.2 per Calendly check (500 / min per user). The sample has
#: ~750 due leads per workspace; checking them all at the real limits takes over a minute per
#: workspace, so the demo shows one pass — the schedule's next ticks would take the rest.
DEMO_LEAD_BUDGET: dict[Provider, int] = {Provider.GHL: 90, Provider.CALENDLY: 300}
#: Seed of the demo's provider drift (and of the simulators' generated ids).
DEMO_DRIFT_SEED = 7

#: Share of the other sample bookings (not checked by the reconciliation pass) the providers change after
#: the webhooks are connected: these changes reach the history only by webhook.
WEBHOOK_DRIFT_RATE = 0.01


@dataclass
class WorkspaceSummary:
    """One row of the demo's migration summary."""

    workspace_id: str
    leads: int
    created: int
    exists: int
    rollups_changed: int
    errors_by_kind: dict[str, int]
    drift_check_passed: bool
    run_id: str
    success: bool


@dataclass
class ReconciliationSummary:
    """One row of the demo's reconciliation summary: what the pass found, and what the drift predicts.

    ``leads_due``: the due leads the run took (within its budget); ``leads_due_total``: all due leads of
    the workspace before the run; the other counters are the run's typed ``appointment_history`` result
    (:class:`~appt_pipeline.defs.history_results.ReconciliationResult`).
    """

    workspace_id: str
    provider: str
    leads_due: int
    leads_due_total: int
    leads_checked: int
    changed: int
    new_bookings: int
    cancellations: int
    reschedules: int
    unchanged: int
    not_found: int
    errors: int
    api_requests: int
    api_429s: int
    duration_s: float
    expected: ExpectedFindings
    drift_actions: int
    drift_in_history: int
    rollup_check_passed: bool
    run_id: str
    success: bool
    skipped_workspace: str | None = None

    @property
    def found(self) -> ExpectedFindings:
        """What this pass counted, in the shape of the drift's prediction."""
        return ExpectedFindings(self.new_bookings, self.cancellations, self.reschedules, self.changed)

    @property
    def matches_drift(self) -> bool:
        """This pass found exactly the drift: a first pass over the drifted leads."""
        return self.found == self.expected

    @property
    def found_nothing_new(self) -> bool:
        """This pass found no change: a rerun, the history already held the drift."""
        return self.found == ExpectedFindings()

    @property
    def drift_check_passed(self) -> bool:
        """Every drift action is in the history, and what the pass counted is the drift or nothing."""
        return self.drift_in_history == self.drift_actions and (self.matches_drift or self.found_nothing_new)

    @property
    def drift_verdict(self) -> str:
        """``found``: this pass found exactly the provider drift; ``known``: nothing new, the history already
        held it (a rerun); ``none``: no drift here and nothing found; ``FAILED``: anything else."""
        if not self.drift_check_passed:
            return "FAILED"
        if self.found_nothing_new:
            return "known" if self.drift_actions else "none"
        return "found"

    @property
    def ok(self) -> bool:
        """The run succeeded, its rollup drift check passed, and so did the provider drift check."""
        return self.success and self.rollup_check_passed and self.drift_check_passed


@dataclass
class WebhookSummary:
    """One row of the demo's webhook summary: deliveries the service stored for the workspace, what the
    ``webhook_ingest_job`` run requested by ``webhook_events_sensor`` did, and what the drift predicts."""

    workspace_id: str
    provider: str
    stored: int
    processed: int
    ignored: int
    failed: int
    new_bookings: int
    cancellations: int
    reschedules: int
    no_shows: int
    tasks_created: int
    expected: ExpectedFindings
    drift_actions: int
    drift_in_history: int
    rollup_check_passed: bool
    run_id: str
    success: bool

    @property
    def found(self) -> ExpectedFindings:
        return ExpectedFindings(self.new_bookings, self.cancellations, self.reschedules)

    @property
    def drift_verdict(self) -> str:
        """``found`` (exactly the drift), ``known`` (nothing new: a rerun), ``none``, or ``FAILED``."""
        expected = ExpectedFindings(self.expected.new_bookings, self.expected.cancellations, self.expected.reschedules)
        if self.drift_in_history != self.drift_actions or self.failed:
            return "FAILED"
        if self.found == expected and self.drift_actions:
            return "found"
        if self.found == ExpectedFindings():
            return "known" if self.drift_actions else "none"
        return "FAILED"

    @property
    def ok(self) -> bool:
        return self.success and self.rollup_check_passed and self.drift_verdict != "FAILED"


@dataclass
class WebhookPhase:
    """The webhook part of the demo: the drift, the simulators' delivery counts and the runs per workspace."""

    drift: DriftSummary
    deliveries: dict[str, dict[str, object]]
    flushed: bool
    workspaces: list[WebhookSummary] = field(default_factory=list)
    runs_requested: int = 0
    wall_s: float = 0.0
    not_in_history: list[DriftAction] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.flushed and all(w.ok for w in self.workspaces)


@dataclass
class DemoSummary:
    """Everything the demo did: migration and reconciliation per workspace, the seed and the drift."""

    migration: list[WorkspaceSummary]
    reconciliation: list[ReconciliationSummary] = field(default_factory=list)
    drift: DriftSummary | None = None
    seeded_bookings: int = 0
    seeded_skipped: dict[str, int] = field(default_factory=dict)
    lead_budget: dict[Provider, int] = field(default_factory=lambda: dict(DEMO_LEAD_BUDGET))
    ephemeral_secret_key: bool = False
    drift_not_in_history: list[DriftAction] = field(default_factory=list)
    reconciliation_wall_s: float = 0.0
    webhooks: WebhookPhase | None = None
    capacity: CapacityPhase | None = None

    @property
    def ok(self) -> bool:
        return (all(s.success and s.drift_check_passed for s in self.migration)
                and all(r.ok for r in self.reconciliation)
                and (self.webhooks is None or self.webhooks.ok)
                and (self.capacity is None or self.capacity.ok))


def run_demo(
    runtime: Runtime,
    instance: dg.DagsterInstance,
    sample_dir: Path = SAMPLE_DIR,
    *,
    lead_budget: dict[Provider, int] | None = None,
    drift_seed: int = DEMO_DRIFT_SEED,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Import the sample, migrate every workspace, drift the providers and reconcile every workspace.

    Raises:
        appt_pipeline.store.workspaces.SecretKeyError: ``APPT_SECRET_KEY`` is set but not a Fernet key.
    """
    say = progress or (lambda _msg: None)
    import_legacy(runtime.engine, sample_dir)
    with runtime.engine.connect() as conn:
        sample_ws = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT workspace_id FROM leads ORDER BY 1"))]
    ids = [ws for ws in workspace_ids(runtime.engine) if ws in set(sample_ws)]
    ensure_partitions(instance, ids)
    budget = {**DEMO_LEAD_BUDGET, **(lead_budget or {})}
    summary = DemoSummary(migration=[_migrate(instance, ws) for ws in ids], lead_budget=budget)

    legacy = legacy_seeds(sample_dir)
    summary.seeded_bookings = len(legacy.bookings)
    summary.seeded_skipped = dict(sorted(legacy.skipped.items()))
    with contextlib.ExitStack() as stack:
        key, summary.ephemeral_secret_key = stack.enter_context(session_secret_key())
        sims = stack.enter_context(local_stack(runtime.engine, runtime.urls.app_url, legacy, ids, secret_key=key,
                                               id_seed=f"demo:{drift_seed}"))
        say(f"simulators: GHL {sims.ghl_url}, Calendly {sims.calendly_url}; webhook service {sims.service_url}")
        providers = sims.providers
        now = datetime.now(UTC)
        due, due_total = _replay_watermark(runtime.engine, providers, now, budget)
        checked = {lead for leads in due.values() for lead in leads}
        drift = apply_drift(sims.ghl, sims.calendly, seed=drift_seed, legacy=legacy, leads=checked, now=now)
        summary.drift = drift
        say(f"provider drift: {drift.describe()}")
        started = time.monotonic()
        # one after the other: Dagster's in-process execution is not thread-safe (its per-run logging
        # setup reconfigures the logging module), and each run is a real run of the instance
        outcomes = {ws: _reconcile(instance, ws, budget[providers.get(ws, Provider.GHL)]) for ws in ids}
        summary.reconciliation_wall_s = time.monotonic() - started
        summary.webhooks = _webhooks(runtime, instance, sims, checked, drift_seed, say)
        say("attribution, availability, one booking per workspace through the API, capacity")
        summary.capacity = run_capacity_phase(runtime.engine, instance, sims)
    missing = _not_in_history(runtime.engine, drift.actions)
    summary.drift_not_in_history = missing
    for ws in ids:
        outcome = outcomes[ws]
        rec = _history(outcome, ReconciliationResult) or ReconciliationResult(core=HistoryCounters())
        actions = [a for a in drift.actions if a.workspace_id == ws]
        summary.reconciliation.append(ReconciliationSummary(
            workspace_id=ws,
            provider=rec.provider or str(providers.get(ws) or "-"),
            leads_due=rec.leads_due,
            leads_due_total=due_total.get(ws, 0),
            leads_checked=rec.leads_checked,
            changed=rec.changed,
            new_bookings=rec.new_bookings,
            cancellations=rec.cancellations,
            reschedules=rec.reschedules,
            unchanged=rec.unchanged,
            not_found=rec.not_found,
            errors=rec.core.errors,
            api_requests=rec.api_requests,
            api_429s=rec.api_429s,
            duration_s=rec.core.duration_s,
            expected=drift.expected(ws),
            drift_actions=len(actions),
            drift_in_history=len(actions) - sum(1 for a in missing if a.workspace_id == ws),
            rollup_check_passed=outcome.rollup_check_passed,
            run_id=outcome.run_id,
            success=outcome.success,
            skipped_workspace=rec.skipped_workspace,
        ))
    return summary


_R = TypeVar("_R", MigrationResult, ReconciliationResult, WebhookResult)


def _history(outcome: RunOutcome | None, kind: type[_R]) -> _R | None:
    """The run's typed ``appointment_history`` result when it is of ``kind`` (a failed run has none)."""
    history = outcome.history if outcome is not None else None
    return history if isinstance(history, kind) else None


def _migrate(instance: dg.DagsterInstance, ws: str) -> WorkspaceSummary:
    outcome = run_partition_job(instance, "migration_job", ws)
    history = _history(outcome, MigrationResult) or MigrationResult(core=HistoryCounters())
    rollups = outcome.rollups or RollupsResult()
    return WorkspaceSummary(
        workspace_id=ws,
        leads=rollups.leads,
        created=history.core.created,
        exists=history.exists,
        rollups_changed=rollups.rollups_changed,
        errors_by_kind=dict(history.errors_by_kind),
        drift_check_passed=outcome.rollup_check_passed,
        run_id=outcome.run_id,
        success=outcome.success,
    )


def _reconcile(instance: dg.DagsterInstance, ws: str, lead_budget: int) -> RunOutcome:
    return run_partition_job(instance, "reconciliation_job", ws,
                             run_config=history_run_config(ReconciliationEvidence(lead_budget=lead_budget)))


def _replay_watermark(engine: sa.Engine, providers: dict[str, Provider], now: datetime,
                      lead_budget: dict[Provider, int]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Clear the watermark an earlier reconciliation left on the sample leads (see the module doc).

    Returns, per workspace, the leads this pass will check (the job's own due-lead query and budget) and
    how many leads are due in all.
    """
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE leads SET appointment_last_checked_at = NULL, appointment_next_check_at = NULL, "
                    "appointment_check_failures = 0, updated_at = now() "
                    "WHERE workspace_id = ANY(:ws) AND appointment_next_check_at IS NOT NULL"),
            {"ws": list(providers)},
        )
    with engine.connect() as conn:
        due = {ws: [lead.id for lead in select_due_leads(conn, ws, provider, now, lead_budget[provider])]
               for ws, provider in providers.items()}
        total = {ws: count_due_leads(conn, ws, provider, now) for ws, provider in providers.items()}
    return due, total


def _not_in_history(engine: sa.Engine, actions: list[DriftAction]) -> list[DriftAction]:
    """The drift actions whose effect the appointment history does not show (status and start per key)."""
    missing = []
    with engine.connect() as conn:
        for action in actions:
            for provider, key, status, start in expected_history([action]):
                column = "ghl_appointment_id" if provider == Provider.GHL else "calendly_invitee_uri"
                row = conn.execute(
                    sa.text(f"SELECT status, start_at FROM appointments WHERE provider = :p AND {column} = :k"),
                    {"p": provider, "k": key},
                ).first()
                if row is None or row.status != status.value or row.start_at != start:
                    missing.append(action)
                    break
    return missing


def _webhooks(runtime: Runtime, instance: dg.DagsterInstance, sims: LocalStack, checked: set[str], drift_seed: int,
              say: Callable[[str], None]) -> WebhookPhase:
    """Connect the webhooks, change other bookings at the providers, and ingest what they push.

    The simulators deliver signed webhooks to the intake service, which stores them in ``webhook_events``;
    then ``webhook_events_sensor`` is evaluated against the instance and the runs it requests are executed
    here (under ``appt-pipeline dev`` the Dagster daemon does both). Every drift action must then be in
    the appointment history.
    """
    sims.connect_webhooks()
    started = time.monotonic()
    since = datetime.now(UTC)
    others = {b.lead_id for b in sims.legacy.bookings} - checked
    drift = apply_drift(sims.ghl, sims.calendly, seed=drift_seed + 1, legacy=sims.legacy, leads=others,
                        rate=WEBHOOK_DRIFT_RATE, now=since)
    say(f"webhook drift: {drift.describe()}; waiting for the simulators' signed deliveries")
    flushed = sims.flush_webhooks(60)
    phase = WebhookPhase(drift=drift, deliveries=sims.delivery_counts(), flushed=flushed)
    with dg.build_sensor_context(instance=instance,
                                 resources={"app_db": AppDatabase(url=runtime.urls.app_url)}) as ctx:
        result = webhook_events_sensor(ctx)
    requests = list(getattr(result, "run_requests", None) or [])
    phase.runs_requested = len(requests)
    outcomes = {r.partition_key: run_partition_job(instance, "webhook_ingest_job", str(r.partition_key))
                for r in requests}
    phase.wall_s = time.monotonic() - started
    phase.not_in_history = _not_in_history(runtime.engine, drift.actions)
    with runtime.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT workspace_id, count(*) FROM webhook_events WHERE received_at >= :t "
                                           "GROUP BY workspace_id"), {"t": since}).all())
        tasks = dict(conn.execute(sa.text("SELECT l.workspace_id, count(*) FROM follow_up_tasks t JOIN leads l "
                                          "ON l.id = t.lead_id WHERE t.created_at >= :t GROUP BY 1"),
                                  {"t": since}).all())
    for ws, provider in sims.providers.items():
        outcome = outcomes.get(ws)
        hook = _history(outcome, WebhookResult) or WebhookResult(core=HistoryCounters())
        actions = [a for a in drift.actions if a.workspace_id == ws]
        phase.workspaces.append(WebhookSummary(
            workspace_id=ws, provider=provider.value, stored=int(stored.get(ws, 0)),
            processed=hook.processed, ignored=hook.ignored, failed=hook.failed, new_bookings=hook.new_bookings,
            cancellations=hook.cancellations, reschedules=hook.reschedules, no_shows=hook.no_shows,
            tasks_created=int(tasks.get(ws, 0)),
            expected=drift.expected(ws), drift_actions=len(actions),
            drift_in_history=len(actions) - sum(1 for a in phase.not_in_history if a.workspace_id == ws),
            # no run: nothing new was stored (a rerun's redeliveries are recognised as duplicates at intake)
            rollup_check_passed=outcome.rollup_check_passed if outcome else True,
            run_id=outcome.run_id if outcome else "-", success=outcome.success if outcome else True,
        ))
    return phase
