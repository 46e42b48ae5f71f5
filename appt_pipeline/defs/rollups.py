"""``rollup_refresh_job`` and its hourly schedule: rollups that stay true as time passes (SPEC §3).

The primary of a lead depends on the reference time (an upcoming CONFIRMED meeting that passes stops being
primary), so a rollup can go stale with no write. A run recomputes, set-based, the partition's leads that
have a CONFIRMED row whose ``start_at`` lies in (``appointment_rollup_at``, now] and stamps the new
reference (:func:`appt_pipeline.store.rollups.refresh_rollups`); no tasks, no lead status change. It reports
a materialization of ``lead_rollups`` (metadata ``due``, ``changed``, ``reference``, ``sample_lead_ids``).
"""

from collections.abc import Iterator

import dagster as dg

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.runs import MAX_RUNTIME_TAG, PRIORITY_TAG, WRITER_POOL, lane_config
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.store.rollups import due_refresh_counts, refresh_rollups

#: A refresh touches the leads whose meetings started in the last hour: seconds; 10 min is a stuck run.
ROLLUP_REFRESH_MAX_RUNTIME_S = 600
#: Below webhook runs and the reconciliation schedule (a refresh an hour late is still fresh, SPEC §3).
ROLLUP_REFRESH_PRIORITY = "0"


@dg.op(pool=WRITER_POOL, description="SPEC §3: recompute the rollups of the partition's leads whose primary "
       "may have moved with time; stamp the new reference.")
def refresh_lead_rollups(context: dg.OpExecutionContext, app_db: AppDatabase) -> None:
    """Refresh one workspace partition (one transaction) and report it as a ``lead_rollups`` materialization."""
    workspace_id = context.partition_key
    with app_db.engine().begin() as conn:
        report = refresh_rollups(conn, workspace_id, utc_now())
    context.log.info(f"workspace {workspace_id}: {report.due} leads due for a rollup refresh, "
                     f"{report.changed} rollups changed")
    context.log_event(dg.AssetMaterialization(
        asset_key="lead_rollups", partition=workspace_id,
        description="rollup refresh (SPEC §3 rollups over time)",
        metadata={"due": report.due, "changed": report.changed,
                  "reference": dg.MetadataValue.timestamp(report.ref),
                  "sample_lead_ids": dg.MetadataValue.json(report.sample_lead_ids)},
    ))


@dg.job(name="rollup_refresh_job", config=lane_config("rollup_refresh"),
        description="SPEC §3: recompute the rollups whose primary moved with time (no tasks, no lead status).",
        tags={"appt/kind": "rollup_refresh", PRIORITY_TAG: ROLLUP_REFRESH_PRIORITY,
              MAX_RUNTIME_TAG: str(ROLLUP_REFRESH_MAX_RUNTIME_S)})
def rollup_refresh_job() -> None:
    refresh_lead_rollups()


@dg.schedule(
    name="rollup_refresh_schedule",
    job=rollup_refresh_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly (SPEC §3): one rollup refresh run per workspace partition with leads due.",
)
def rollup_refresh_schedule(
    context: dg.ScheduleEvaluationContext, app_db: AppDatabase
) -> Iterator[dg.RunRequest] | dg.SkipReason:
    """One run request per workspace partition that has leads due (one query for all workspaces)."""
    tick = context.scheduled_execution_time
    stamp = tick.isoformat() if tick else "manual"
    partitions = set(context.instance.get_dynamic_partitions(workspace_partitions.name))
    with app_db.engine().connect() as conn:
        due = {ws: n for ws, n in due_refresh_counts(conn, tick or utc_now()).items() if ws in partitions}
    if not due:
        return dg.SkipReason("no workspace has a rollup whose primary moved with time")
    return iter(dg.RunRequest(partition_key=ws, run_key=f"rollup_refresh:{ws}:{stamp}",
                              tags={"appt/due_leads": str(n)}) for ws, n in due.items())
