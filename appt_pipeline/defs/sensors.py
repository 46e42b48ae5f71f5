"""Sensors: the workspace registry keeps one dynamic partition per ``workspaces`` row; the webhook sensor
turns pending staging rows into one ``webhook_ingest_job`` run per workspace; the backlog sensor reports the
staging backlog as observations of ``webhook_events``."""

import json
from datetime import datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.defs.jobs import webhook_ingest_job
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.runs import IN_FLIGHT_STATUSES, PARTITION_TAG, job_kind, lane_tags
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.store.webhook_events import PendingWorkspace, pending_workspaces


@dg.sensor(
    name="workspace_registry_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `workspace` partition for every new row of the workspaces table.",
)
def workspace_registry_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabase
) -> dg.SensorResult | dg.SkipReason:
    """Return add requests for workspace ids that have no partition yet (never deletes partitions)."""
    with app_db.engine().connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM workspaces ORDER BY id"))]
    known = set(context.instance.get_dynamic_partitions(workspace_partitions.name))
    new = [ws for ws in ids if ws not in known]
    if not new:
        return dg.SkipReason(f"all {len(ids)} workspaces have partitions")
    return dg.SensorResult(dynamic_partitions_requests=[workspace_partitions.build_add_request(new)])


@dg.sensor(
    name="webhook_events_sensor",
    job=webhook_ingest_job,
    # the sensor daemon loops every ~5 s (docs/operations.md §6.3); an interval of exactly 5 s aliases with
    # that loop (a tick 4.99 s after the last one is skipped) and ticks every 10 s. 1 s: every loop ticks.
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One webhook_ingest_job run per workspace with pending webhook_events rows (SPEC §7).",
)
def webhook_events_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabase
) -> dg.SensorResult | dg.SkipReason:
    """Request a run for every workspace that has ``pending`` staging rows and no webhook run in flight.

    A webhook run of the workspace is in flight when its status is one of ``IN_FLIGHT_STATUSES``: the new
    run waits until it ended. Rows are found by **status**, never by an id or time cursor, so a row that
    commits after a higher id was already processed is still picked up. Run keys are deterministic:
    ``webhooks:<workspace>:<max pending id>-<pending count>:<attempt>``; the cursor remembers the last
    pending state requested per workspace, and the attempt number grows only when the same rows are
    still pending after that run ended (it failed), so a failed run is retried on a later tick
    instead of being deduplicated away. Workspaces without a partition yet get one in the same tick.
    Each run carries its lane tag ``appt/lane = <workspace>:webhooks`` (docs/operations.md §5): it waits for
    nothing but a webhook run of the same workspace, not for a reconciliation or backfill of it.
    """
    with app_db.engine().connect() as conn:
        pending = pending_workspaces(conn)
    if not pending:
        return dg.SkipReason("no pending webhook rows")
    previous: dict[str, list[Any]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(workspace_partitions.name))
    new_partitions = sorted({p.workspace_id for p in pending} - known)
    in_flight = {
        run.tags.get(PARTITION_TAG)
        for run in context.instance.get_runs(
            filters=dg.RunsFilter(job_name=webhook_ingest_job.name, statuses=list(IN_FLIGHT_STATUSES))
        )
    }
    cursor: dict[str, list[Any]] = {}
    requests: list[dg.RunRequest] = []
    for p in pending:
        state = f"{p.max_id}-{p.pending}"
        last = previous.get(p.workspace_id)
        if p.workspace_id in in_flight:
            if last is not None:
                cursor[p.workspace_id] = last
            continue
        attempt = int(last[1]) + 1 if last is not None and last[0] == state else 0
        cursor[p.workspace_id] = [state, attempt]
        requests.append(dg.RunRequest(
            run_key=f"webhooks:{p.workspace_id}:{state}:{attempt}",
            partition_key=p.workspace_id,
            # the lane (also added by the job's partitioned config): never behind the workspace's other runs
            tags={"appt/pending_rows": str(p.pending), **lane_tags(p.workspace_id, job_kind(webhook_ingest_job.tags))},
        ))
    if not requests and not new_partitions:
        return dg.SkipReason(f"{len(pending)} workspace(s) with pending rows all have a webhook run in flight")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[workspace_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )


#: Seconds between two backlog observations (an observation per workspace per tick would flood the event log).
BACKLOG_OBSERVATION_INTERVAL_S = 60


def backlog_observations(pending: list[PendingWorkspace], drained: list[str], known: set[str],
                         now: datetime) -> list[dg.AssetObservation]:
    """``webhook_events`` observations: one per workspace partition with pending rows (``pending``,
    ``oldest_pending_age_s`` in seconds) and one with zeros per workspace in ``drained`` (it had a backlog at
    the previous tick). Workspaces without a partition yet are left out (the registry sensor adds them)."""
    events = [
        dg.AssetObservation(asset_key="webhook_events", partition=p.workspace_id, metadata={
            "pending": p.pending,
            "oldest_pending_age_s": dg.MetadataValue.float(round(max(0.0, (now - p.oldest_received_at)
                                                                    .total_seconds()), 3)),
        })
        for p in pending if p.workspace_id in known
    ]
    events += [dg.AssetObservation(asset_key="webhook_events", partition=ws,
                                   metadata={"pending": 0, "oldest_pending_age_s": dg.MetadataValue.float(0.0)})
               for ws in drained if ws in known]
    return events


@dg.sensor(
    name="webhook_backlog_sensor",
    minimum_interval_seconds=BACKLOG_OBSERVATION_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute: the staging backlog of each workspace (pending webhook_events rows and the oldest "
                "one's age) as an observation of webhook_events, so the UI shows it (docs/operations.md §4).",
)
def webhook_backlog_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabase
) -> dg.SensorResult | dg.SkipReason:
    """Observe ``webhook_events`` per workspace partition with a backlog, and once more (with zeros) when it
    drained; the cursor is the JSON list of workspaces that had a backlog at the last tick. Launches no run."""
    with app_db.engine().connect() as conn:
        pending = pending_workspaces(conn)
    previous = set(json.loads(context.cursor)) if context.cursor else set()
    now_pending = {p.workspace_id for p in pending}
    known = set(context.instance.get_dynamic_partitions(workspace_partitions.name))
    events = backlog_observations(pending, sorted(previous - now_pending), known, utc_now())
    if not events:
        return dg.SkipReason("no staging backlog")
    return dg.SensorResult(asset_events=events, cursor=json.dumps(sorted(now_pending)))
