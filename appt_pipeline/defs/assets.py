"""Assets of the ``appointments`` group: the appointment history and the lead rollups derived from it.

``appointment_history`` and ``lead_rollups`` are materialized together by one op in one transaction
per chunk (the seed's "atomic dual write", SPEC §3/§4); the SPEC §10 drift checks (``defs.checks``) are
selected with it by the writing jobs and check the leads the run touched. ``legacy_lead_rollups`` is the
upstream external asset: the CRM's legacy rollup columns, loaded by ``appt-pipeline import-legacy``.
"""

import asyncio
from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.defs.evidence import (
    AppointmentHistoryConfig,
    MigrationEvidence,
    ReconciliationEvidence,
    WebhookEvidence,
)
from appt_pipeline.defs.history_results import (
    HistoryCounters,
    HistoryResult,
    MigrationResult,
    ReconciliationResult,
    RollupsResult,
    WebhookResult,
    history_metadata,
    rollups_metadata,
)
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.defs.runs import BACKFILL_TAG, WRITER_POOL
from appt_pipeline.domain.vocab import Source
from appt_pipeline.pipelines.accounts import WorkspaceNotConfigured
from appt_pipeline.pipelines.reconciliation import ReconcileSettings, reconcile_workspace
from appt_pipeline.pipelines.webhook_ingest import ingest_workspace
from appt_pipeline.store.migration import migrate_workspace

GROUP = "appointments"

legacy_lead_rollups = dg.AssetSpec(
    "legacy_lead_rollups",
    group_name=GROUP,
    description="The CRM's legacy one-appointment-per-lead rollup columns (SPEC §1 `leads`), "
    "loaded by `appt-pipeline import-legacy`; the migration's input.",
    partitions_def=workspace_partitions,
    kinds={"postgres"},
)

ghl_api = dg.AssetSpec(
    "ghl_api",
    group_name=GROUP,
    description="GoHighLevel (LeadConnector API v2): contacts' appointments, polled by reconciliation (SPEC §6).",
    partitions_def=workspace_partitions,
    kinds={"api"},
)

calendly_api = dg.AssetSpec(
    "calendly_api",
    group_name=GROUP,
    description="Calendly API v2: scheduled events and invitees, polled by reconciliation (SPEC §6).",
    partitions_def=workspace_partitions,
    kinds={"api"},
)

webhook_events = dg.AssetSpec(
    "webhook_events",
    group_name=GROUP,
    description="Staging rows written by the webhook intake service (`appt-pipeline serve`): signed provider "
    "deliveries reduced to PII-free fields (SPEC §7); `webhook_events_sensor` turns pending rows into runs.",
    partitions_def=workspace_partitions,
    kinds={"postgres"},
)

appointment_history_spec = dg.AssetSpec(
    "appointment_history",
    group_name=GROUP,
    deps=[legacy_lead_rollups, ghl_api, calendly_api, webhook_events],
    partitions_def=workspace_partitions,
    description="One row per provider booking (SPEC §1 `appointments`) with status, cancellation, "
    "reschedule chain and calendar attribution, keyed by the provider's own ids.",
    kinds={"postgres"},
)

lead_rollups_spec = dg.AssetSpec(
    "lead_rollups",
    group_name=GROUP,
    deps=["appointment_history"],
    partitions_def=workspace_partitions,
    description="The legacy rollup columns of `leads`, derived from each lead's primary appointment (SPEC §3).",
    kinds={"postgres"},
)

@dg.multi_asset(
    name="appointment_history_and_rollups",
    specs=[appointment_history_spec, lead_rollups_spec],
    partitions_def=workspace_partitions,
    can_subset=False,
    pool=WRITER_POOL,
)
def appointment_history_and_rollups(
    context: dg.AssetExecutionContext,
    config: AppointmentHistoryConfig,
    app_db: AppDatabase,
    providers: ProviderClients,
) -> Iterator[dg.MaterializeResult]:
    """Apply one workspace's evidence (``config.evidence``, required) through the one write path and check
    the rollups. Materializations: ``appointment_history`` (:func:`history_metadata`), ``lead_rollups``
    (:func:`rollups_metadata`). The drift checks run in their own step (``defs.checks``)."""
    workspace_id = context.partition_key
    engine = app_db.engine()
    evidence = config.evidence
    result: HistoryResult
    if isinstance(evidence, MigrationEvidence):
        result = _migrate(context, evidence, engine, workspace_id)
    elif isinstance(evidence, WebhookEvidence):
        result = _ingest_webhooks(context, evidence, engine, workspace_id)
    else:
        result = _reconcile(context, evidence, providers, engine, workspace_id)
    with engine.connect() as conn:
        leads, with_rows = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM leads WHERE workspace_id = :ws), "
            "(SELECT count(DISTINCT lead_id) FROM appointments WHERE workspace_id = :ws)"), {"ws": workspace_id}).one()
        rollups = RollupsResult(leads=int(leads), leads_with_history=int(with_rows),
                                rollups_changed=result.core.rollups_changed)
    yield dg.MaterializeResult(asset_key="appointment_history", metadata=history_metadata(result))
    yield dg.MaterializeResult(asset_key="lead_rollups", metadata=rollups_metadata(rollups))


def _migrate(context: dg.AssetExecutionContext, config: MigrationEvidence, engine: sa.Engine,
             workspace_id: str) -> MigrationResult:
    report = migrate_workspace(
        engine,
        workspace_id,
        apply=config.apply,
        resume=config.resume,
        chunk_size=config.chunk_size,
        on_chunk=lambda r: context.log.info(
            f"workspace {workspace_id}: scanned={r.scanned} created={r.created} exists={r.exists} "
            f"skipped={r.skipped} errors={r.errors}"
        ),
    )
    return MigrationResult.from_report(report)


def _reconcile(context: dg.AssetExecutionContext, config: ReconciliationEvidence, providers: ProviderClients,
               engine: sa.Engine, workspace_id: str) -> ReconciliationResult:
    backfill = context.run.tags.get(BACKFILL_TAG) is not None
    source = Source.BACKFILL if backfill else Source.RECONCILE_CRON
    try:
        account = providers.booking_account(engine, workspace_id)
    except WorkspaceNotConfigured as exc:
        context.log.warning(f"workspace {workspace_id} skipped: {exc}")
        return ReconciliationResult(core=HistoryCounters(), source=source.value, apply=config.apply,
                                    skipped_workspace=str(exc))
    options = providers.client_options()
    settings = ReconcileSettings(
        lead_budget=config.lead_budget,
        time_budget_s=config.time_budget_s,
        timeout_s=options.timeout_s,
        ghl_rate=options.ghl_rate,
        calendly_rate=options.calendly_rate,
    )
    report = asyncio.run(reconcile_workspace(engine, account, settings=settings, source=source,
                                             dry_run=not config.apply))
    context.log.info(
        f"workspace {workspace_id}: checked={report.leads_checked} changed={report.changed} "
        f"unchanged={report.unchanged} not_found={report.not_found} errors={report.errors} "
        f"api_requests={report.api.get('api_requests')} 429s={report.api.get('api_429s')}"
    )
    return ReconciliationResult.from_report(report, apply=config.apply)


def _ingest_webhooks(context: dg.AssetExecutionContext, config: WebhookEvidence, engine: sa.Engine,
                     workspace_id: str) -> WebhookResult:
    report = ingest_workspace(engine, workspace_id, batch_size=config.batch_size, dry_run=not config.apply)
    context.log.info(
        f"workspace {workspace_id}: webhook rows claimed={report.claimed} processed={report.processed} "
        f"ignored={report.ignored} failed={report.failed} new_bookings={report.new_bookings} "
        f"cancellations={report.cancellations} reschedules={report.reschedules}"
    )
    return WebhookResult.from_report(report, source=Source.WEBHOOK.value, apply=config.apply)
