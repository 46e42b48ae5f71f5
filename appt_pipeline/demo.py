"""The main job end to end on the embedded default (SPEC §12 ``demo``).

Imports the legacy sample shipped in the package, registers every workspace as a partition, runs
``migration_job`` for each as a real Dagster run, and returns a per-workspace summary. Idempotent:
a second demo creates nothing.
"""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.launch import ensure_partitions, run_partition_job
from appt_pipeline.runtime import Runtime
from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.store.legacy_import import import_legacy
from appt_pipeline.store.workspaces import workspace_ids


@dataclass
class WorkspaceSummary:
    """One row of the demo summary."""

    workspace_id: str
    leads: int
    created: int
    exists: int
    rollups_changed: int
    errors_by_kind: dict[str, int]
    drift_check_passed: bool
    run_id: str
    success: bool


def run_demo(runtime: Runtime, instance: dg.DagsterInstance, sample_dir: Path = SAMPLE_DIR) -> list[WorkspaceSummary]:
    """Import the sample, register partitions, run ``migration_job`` per workspace; summary per workspace."""
    import_legacy(runtime.engine, sample_dir)
    with runtime.engine.connect() as conn:
        sample_ws = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT workspace_id FROM leads ORDER BY 1"))]
    ids = [ws for ws in workspace_ids(runtime.engine) if ws in set(sample_ws)]
    ensure_partitions(instance, ids)
    summaries = []
    for ws in ids:
        outcome = run_partition_job(instance, "migration_job", ws)
        history = outcome.metadata.get("appointment_history", {})
        rollups = outcome.metadata.get("lead_rollups", {})
        summaries.append(
            WorkspaceSummary(
                workspace_id=ws,
                leads=int(rollups.get("leads", 0)),
                created=int(history.get("created", 0)),
                exists=int(history.get("exists", 0)),
                rollups_changed=int(rollups.get("rollups_changed", 0)),
                errors_by_kind=dict(history.get("errors_by_kind") or {}),
                drift_check_passed=outcome.checks.get("rollup_drift", False),
                run_id=outcome.run_id,
                success=outcome.success,
            )
        )
    return summaries
