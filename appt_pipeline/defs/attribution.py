"""The ``calendar_attribution`` asset and ``attribution_backfill_job`` (SPEC §9), partitioned by workspace.

A materialization fills the partition's missing calendar attribution from the providers
(:func:`appt_pipeline.pipelines.attribution.backfill_attribution`: batches, pause, per-run limit, failures
isolated) and reports the coverage per provider afterwards. Run config (:class:`AttributionConfig`):
``batch_size`` (10), ``pause_ms`` (500), ``limit`` (500, max 5,000), ``dry_run`` (false).

Resources: ``app_db`` (:class:`AppDatabase`) and ``providers`` (:class:`ProviderClients`: rate
the key of stored secrets, rate
limits and timeout of the client factory).
"""

import asyncio
from typing import Any

import dagster as dg

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.defs.runs import KIND_TAG, MANUAL_PRIORITY, MAX_RUNTIME_TAG, PRIORITY_TAG, WRITER_POOL, lane_config
from appt_pipeline.pipelines.accounts import WorkspaceNotConfigured
from appt_pipeline.pipelines.attribution import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LIMIT,
    AttributionReport,
    backfill_attribution,
)

GROUP = "appointments"


class AttributionConfig(dg.Config):
    """Options of one attribution backfill run (SPEC §9). Out-of-range values are clamped and reported.

    Attributes:
        batch_size: provider lookups per batch (1…50).
        pause_ms: milliseconds between batches (0…30,000).
        limit: rows per run, oldest first (1…5,000).
        dry_run: ask the providers, write nothing.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    pause_ms: int = 500
    limit: int = DEFAULT_LIMIT
    dry_run: bool = False


def report_metadata(report: AttributionReport) -> dict[str, Any]:
    """Materialization metadata of a run: flat numbers (plotted per partition in the UI) and JSON details.

    Keys: ``coverage`` (JSON per provider + ``"*"``: total / attributed / missing / unresolvable /
    ratio), ``coverage_ghl``, ``coverage_calendly``, ``coverage_total`` (ratios; absent when the provider
    has no rows), ``ghl_missing``, ``calendly_missing``, ``candidates``, ``filled``, ``failed``,
    ``failed_by_kind``, ``skipped``, ``skipped_by_reason``, ``batches``, ``api_requests``, ``api_429s`` (and
    the other ``api_*`` counters), ``duration_s`` (seconds), the options used, and ``clamped`` /
    ``not_configured`` when not empty.
    """
    metadata: dict[str, Any] = {
        "dry_run": report.dry_run,
        "limit": report.limit,
        "batch_size": report.batch_size,
        "pause_ms": round(report.pause_s * 1000),
        "coverage": dg.MetadataValue.json(report.coverage),
    }
    for key, name in (("GHL", "ghl"), ("CALENDLY", "calendly"), ("*", "total")):
        ratio = report.coverage[key]["ratio"]
        if ratio is not None:
            metadata[f"coverage_{name}"] = dg.MetadataValue.float(float(ratio))
        if key != "*":
            metadata[f"{name}_missing"] = report.coverage[key]["missing"]
    metadata.update({
        "candidates": report.candidates,
        "lookups": report.lookups,
        "batches": report.batches,
        "filled": report.filled,
        "filled_by_provider": dg.MetadataValue.json(report.filled_by_provider),
        "failed": report.failed,
        "failed_by_kind": dg.MetadataValue.json(report.failed_by_kind),
        "skipped": report.skipped,
        "skipped_by_reason": dg.MetadataValue.json(report.skipped_by_reason),
        **report.api,
        "duration_s": round(report.duration_s, 3),
    })
    if report.clamped:
        metadata["clamped"] = dg.MetadataValue.json(report.clamped)
    if report.not_configured:
        metadata["not_configured"] = dg.MetadataValue.json(report.not_configured)
    return metadata


@dg.asset(
    name="calendar_attribution",
    group_name=GROUP,
    deps=["appointment_history", "ghl_api", "calendly_api"],
    partitions_def=workspace_partitions,
    kinds={"postgres"},
    pool=WRITER_POOL,
    description="Calendar attribution of the appointment history (SPEC §9): missing `ghl_calendar_id` / "
    "`calendly_event_type_uri` filled from the providers; metadata reports the coverage per provider.",
)
def calendar_attribution(
    context: dg.AssetExecutionContext, config: AttributionConfig, app_db: AppDatabase, providers: ProviderClients
) -> dg.MaterializeResult:
    """Run the attribution backfill for the workspace partition and report coverage, fills and failures."""
    workspace_id = context.partition_key
    engine = app_db.engine()
    try:
        accounts, not_configured = providers.attribution_accounts(engine, workspace_id)
    except WorkspaceNotConfigured as exc:
        raise dg.Failure(description=str(exc)) from None
    for provider, reason in not_configured.items():
        context.log.info(f"workspace {workspace_id}: {provider} not configured ({reason}); its rows are skipped")
    options = providers.client_options()
    report = asyncio.run(backfill_attribution(
        engine,
        accounts,
        workspace_id=workspace_id,
        batch_size=config.batch_size,
        pause_s=config.pause_ms / 1000,
        limit=config.limit,
        dry_run=config.dry_run,
        not_configured=not_configured,
        ghl_rate=options.ghl_rate,
        calendly_rate=options.calendly_rate,
        timeout_s=options.timeout_s,
    ))
    for name, change in report.clamped.items():
        context.log.warning(f"{name} {change['requested']} is out of range; used {change['used']}")
    context.log.info(
        f"workspace {workspace_id}: candidates={report.candidates} filled={report.filled} failed={report.failed} "
        f"skipped={report.skipped} api_requests={report.api.get('api_requests')} "
        f"429s={report.api.get('api_429s')} coverage={report.coverage['*']['ratio']}"
    )
    return dg.MaterializeResult(metadata=report_metadata(report))


attribution_backfill_job = dg.define_asset_job(
    "attribution_backfill_job",
    selection=[calendar_attribution],
    description="SPEC §9: fill a workspace's missing calendar attribution from its providers and report coverage.",
    # batches with pauses, at most 5,000 rows a run: an hour is a stuck run
    config=lane_config("attribution"),
    tags={KIND_TAG: "attribution", PRIORITY_TAG: MANUAL_PRIORITY, MAX_RUNTIME_TAG: "3600"},
)
