"""Assets of the ``appointments`` group: the appointment history and the lead rollups derived from it.

``appointment_history`` and ``lead_rollups`` are materialized together by one op in one transaction
per chunk (the seed's "atomic dual write", SPEC §3/§4); the ``rollup_drift`` asset check runs in the
same step and must report 0 (SPEC §10). ``legacy_lead_rollups`` is the upstream external asset: the
CRM's legacy rollup columns, loaded by ``appt-pipeline import-legacy``.
"""

from collections.abc import Iterator
from typing import Literal

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.store.migration import DEFAULT_CHUNK_SIZE, migrate_workspace
from appt_pipeline.store.rollups import drift_report

GROUP = "appointments"

legacy_lead_rollups = dg.AssetSpec(
    "legacy_lead_rollups",
    group_name=GROUP,
    description="The CRM's legacy one-appointment-per-lead rollup columns (SPEC §1 `leads`), "
    "loaded by `appt-pipeline import-legacy`; the migration's input.",
    partitions_def=workspace_partitions,
    kinds={"postgres"},
)

appointment_history_spec = dg.AssetSpec(
    "appointment_history",
    group_name=GROUP,
    deps=[legacy_lead_rollups],
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
    """Which evidence a run ingests and how. ``evidence="migration"``: the legacy rollups (SPEC §5)."""

    evidence: Literal["migration"] = "migration"
    apply: bool = True
    resume: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE


@dg.multi_asset(
    name="appointment_history_and_rollups",
    specs=[appointment_history_spec, lead_rollups_spec],
    check_specs=[rollup_drift_check],
    partitions_def=workspace_partitions,
    can_subset=False,
    pool="app_pg_writer",
)
def appointment_history_and_rollups(
    context: dg.AssetExecutionContext, config: AppointmentHistoryConfig, app_db: AppDatabase
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Apply one workspace's evidence through the one write path and check the rollups."""
    workspace_id = context.partition_key
    engine = app_db.engine()
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
    with engine.connect() as conn:
        drift = drift_report(conn, workspace_id, utc_now())
        leads = conn.execute(sa.text("SELECT count(*) FROM leads WHERE workspace_id = :ws"), {"ws": workspace_id})
        lead_count = int(leads.scalar_one())
    yield dg.MaterializeResult(
        asset_key="appointment_history",
        metadata={
            "evidence": config.evidence,
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
        },
    )
    yield dg.MaterializeResult(
        asset_key="lead_rollups",
        metadata={
            "leads": lead_count,
            "leads_with_history": drift.leads_with_rows,
            "rollups_changed": report.rollups_changed,
        },
    )
    yield dg.AssetCheckResult(
        check_name="rollup_drift",
        asset_key="lead_rollups",
        passed=drift.drifted == 0,
        metadata={"drifted_leads": drift.drifted, "sample_lead_ids": dg.MetadataValue.json(drift.sample_lead_ids)},
    )
