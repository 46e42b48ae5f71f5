"""Sensors: the workspace registry keeps one dynamic partition per ``workspaces`` row."""

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase


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
