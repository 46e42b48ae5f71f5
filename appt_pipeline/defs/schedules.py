"""Schedules: reconciliation of every workspace partition that has due leads (SPEC §6)."""

from collections.abc import Iterator

import dagster as dg

from appt_pipeline.defs.jobs import SCHEDULED_PRIORITY, reconciliation_job
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.runs import PRIORITY_TAG, job_kind, lane_tags
from appt_pipeline.store.reconcile import count_due_leads
from appt_pipeline.store.workspaces import connected_workspaces


@dg.schedule(
    name="reconciliation_schedule",
    job=reconciliation_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: one reconciliation run per workspace partition with due leads.",
)
def reconciliation_schedule(
    context: dg.ScheduleEvaluationContext, app_db: AppDatabase
) -> Iterator[dg.RunRequest] | dg.SkipReason:
    """One run request per connected workspace with due leads; run keys are deterministic per tick and workspace.

    Each run carries its lane tag ``appt/lane = <workspace>:reconciliation``: dagster.yaml keeps at most one
    reconciliation per workspace in flight, beside (never in front of) its webhook runs (docs/operations.md
    §5); these runs carry a higher ``dagster/priority`` than UI-launched runs and backfills.
    """
    tick = context.scheduled_execution_time
    stamp = tick.isoformat() if tick else "manual"
    partitions = set(context.instance.get_dynamic_partitions(workspace_partitions.name))
    with app_db.engine().connect() as conn:
        workspaces = connected_workspaces(conn)
        due = {ws: count_due_leads(conn, ws, provider, tick) if tick else 1 for ws, provider in workspaces
               if ws in partitions}
    requests = [
        dg.RunRequest(partition_key=ws, run_key=f"reconcile:{ws}:{stamp}",
                      tags={PRIORITY_TAG: SCHEDULED_PRIORITY, "appt/due_leads": str(n),
                            **lane_tags(ws, job_kind(reconciliation_job.tags))})
        for ws, n in due.items() if n > 0
    ]
    if not requests:
        return dg.SkipReason(f"no connected workspace among {len(due)} has due leads")
    return iter(requests)
