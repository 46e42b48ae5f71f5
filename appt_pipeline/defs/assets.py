"""Assets of the ``appointments`` group: the appointment history and the lead rollups derived from it.

``appointment_history`` and ``lead_rollups`` are materialized together by one op in one transaction
per chunk (the seed's "atomic dual write", SPEC §3/§4); the ``rollup_drift`` asset check runs in the
same step and must report 0 (SPEC §10). ``legacy_lead_rollups`` is the upstream external asset: the
CRM's legacy rollup columns, loaded by ``appt-pipeline import-legacy``.
"""

import asyncio
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Source
from appt_pipeline.pipelines.accounts import WorkspaceNotConfigured
from appt_pipeline.pipelines.reconciliation import ReconcileSettings, reconcile_workspace
from appt_pipeline.pipelines.webhook_ingest import DEFAULT_BATCH_SIZE, ingest_workspace
from appt_pipeline.store.migration import DEFAULT_CHUNK_SIZE, migrate_workspace
from appt_pipeline.store.rollups import drift_report

GROUP = "appointments"
BACKFILL_TAG = "dagster/backfill"

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

rollup_drift_check = dg.AssetCheckSpec(
    "rollup_drift",
    asset="lead_rollups",
    description="Leads whose rollup differs from the rollup of their primary appointment (SPEC §10); must be 0.",
)


class AppointmentHistoryConfig(dg.Config):
    """Which evidence a run ingests and how.

    ``evidence="migration"``: the legacy rollups (SPEC §5; ``resume``, ``chunk_size``).
    ``evidence="reconciliation"``: poll the workspace's provider for its due leads (SPEC §6;
    ``lead_budget`` leads and ``time_budget_s`` seconds per run). Source RECONCILE_CRON, or
    BACKFILL when the run belongs to a Dagster backfill (no follow-up tasks, no lead status change).
    ``evidence="webhooks"``: apply the workspace's pending ``webhook_events`` rows in provider-time
    order (SPEC §7; ``batch_size`` rows per transaction), source WEBHOOK.
    ``apply=False`` is a dry-run: nothing is written.
    """

    evidence: Literal["migration", "reconciliation", "webhooks"] = "migration"
    apply: bool = True
    resume: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    lead_budget: int = 500
    time_budget_s: float = 900.0
    batch_size: int = DEFAULT_BATCH_SIZE


@dg.multi_asset(
    name="appointment_history_and_rollups",
    specs=[appointment_history_spec, lead_rollups_spec],
    check_specs=[rollup_drift_check],
    partitions_def=workspace_partitions,
    can_subset=False,
    pool="app_pg_writer",
)
def appointment_history_and_rollups(
    context: dg.AssetExecutionContext,
    config: AppointmentHistoryConfig,
    app_db: AppDatabase,
    providers: ProviderClients,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Apply one workspace's evidence through the one write path and check the rollups."""
    workspace_id = context.partition_key
    engine = app_db.engine()
    if config.evidence == "migration":
        history, rollups = _migrate(context, config, engine, workspace_id)
    elif config.evidence == "webhooks":
        history, rollups = _ingest_webhooks(context, config, engine, workspace_id)
    else:
        history, rollups = _reconcile(context, config, providers, engine, workspace_id)
    with engine.connect() as conn:
        drift = drift_report(conn, workspace_id, utc_now())
        leads = conn.execute(sa.text("SELECT count(*) FROM leads WHERE workspace_id = :ws"), {"ws": workspace_id})
        rollups["leads"] = int(leads.scalar_one())
    rollups["leads_with_history"] = drift.leads_with_rows
    yield dg.MaterializeResult(asset_key="appointment_history", metadata=history)
    yield dg.MaterializeResult(asset_key="lead_rollups", metadata=rollups)
    yield dg.AssetCheckResult(
        check_name="rollup_drift",
        asset_key="lead_rollups",
        passed=drift.drifted == 0,
        metadata={"drifted_leads": drift.drifted, "sample_lead_ids": dg.MetadataValue.json(drift.sample_lead_ids)},
    )


Metadata = dict[str, Any]


def _migrate(context: dg.AssetExecutionContext, config: AppointmentHistoryConfig, engine: sa.Engine,
             workspace_id: str) -> tuple[Metadata, Metadata]:
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
    history: Metadata = {
        "evidence": "migration",
        "apply": config.apply,
        "scanned": report.scanned,
        "created": report.created,
        "exists": report.exists,
        "skipped": report.skipped,
        "errors": report.errors,
        "errors_by_kind": dg.MetadataValue.json(report.errors_by_kind),
        "warnings_by_kind": dg.MetadataValue.json(report.warnings_by_kind),
        "status_changes": report.status_changes,
        "duration_s": round(report.duration_s, 3),
    }
    return history, {"rollups_changed": report.rollups_changed}


def _reconcile(context: dg.AssetExecutionContext, config: AppointmentHistoryConfig, providers: ProviderClients,
               engine: sa.Engine, workspace_id: str) -> tuple[Metadata, Metadata]:
    backfill = context.run.tags.get(BACKFILL_TAG) is not None
    source = Source.BACKFILL if backfill else Source.RECONCILE_CRON
    try:
        account = providers.booking_account(engine, workspace_id)
    except WorkspaceNotConfigured as exc:
        context.log.warning(f"workspace {workspace_id} skipped: {exc}")
        return {"evidence": "reconciliation", "skipped_workspace": str(exc)}, {"rollups_changed": 0}
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
    history: Metadata = {
        "evidence": "reconciliation",
        "source": source.value,
        "apply": config.apply,
        "provider": report.provider,
        "leads_due": report.leads_due,
        "leads_checked": report.leads_checked,
        "changed": report.changed,
        "unchanged": report.unchanged,
        "skipped": report.skipped,
        "not_found": report.not_found,
        "errors": report.errors,
        "errors_by_kind": dg.MetadataValue.json(report.errors_by_kind),
        "new_bookings": report.new_bookings,
        "cancellations": report.cancellations,
        "reschedules": report.reschedules,
        "circuit_broken": report.circuit_broken,
        "budget_exhausted": report.budget_exhausted,
        **report.api,
        "duration_s": round(report.duration_s, 3),
    }
    return history, {"leads_changed": report.changed}


def _ingest_webhooks(context: dg.AssetExecutionContext, config: AppointmentHistoryConfig, engine: sa.Engine,
                     workspace_id: str) -> tuple[Metadata, Metadata]:
    report = ingest_workspace(engine, workspace_id, batch_size=config.batch_size, dry_run=not config.apply)
    context.log.info(
        f"workspace {workspace_id}: webhook rows claimed={report.claimed} processed={report.processed} "
        f"ignored={report.ignored} failed={report.failed} new_bookings={report.new_bookings} "
        f"cancellations={report.cancellations} reschedules={report.reschedules}"
    )
    history: Metadata = {
        "evidence": "webhooks",
        "source": Source.WEBHOOK.value,
        "apply": config.apply,
        "rows_claimed": report.claimed,
        "processed": report.processed,
        "ignored": report.ignored,
        "ignored_by_reason": dg.MetadataValue.json(dict(report.ignored_by_reason)),
        "failed": report.failed,
        "failed_by_kind": dg.MetadataValue.json(dict(report.failed_by_kind)),
        "new_bookings": report.new_bookings,
        "cancellations": report.cancellations,
        "reschedules": report.reschedules,
        "no_shows": report.no_shows,
        "status_changes": report.status_changes,
        "max_lag_s": round(report.max_lag_s, 3),
        "duration_s": round(report.duration_s, 3),
    }
    return history, {"primary_changes": report.primary_changes}
