"""Launching partitioned Dagster jobs from the command line (SPEC §12 ``run``, ``demo``).

Runs are real Dagster runs in the instance (Postgres storage), executed in this process with
``execute_job`` — visible in the UI with their logs, materializations and asset checks.
"""

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.reconstruct import build_reconstructable_job
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from appt_pipeline.definitions import get_job
from appt_pipeline.defs.partitions import workspace_partitions

PARTITION_TAG = "dagster/partition"


class RunInProgressError(RuntimeError):
    """Another run of the same workspace partition is in progress (one run per workspace at a time)."""


@dataclass
class RunOutcome:
    """A finished run: id, success, materialization metadata per asset, asset check results."""

    run_id: str
    success: bool
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)


def ensure_partitions(instance: dg.DagsterInstance, workspace_ids: list[str]) -> list[str]:
    """Add missing ``workspace`` partitions; returns the ids added."""
    known = set(instance.get_dynamic_partitions(workspace_partitions.name))
    new = [ws for ws in workspace_ids if ws not in known]
    if new:
        instance.add_dynamic_partitions(workspace_partitions.name, new)
    return new


def run_partition_job(
    instance: dg.DagsterInstance, job_name: str, workspace_id: str, run_config: dict[str, Any] | None = None
) -> RunOutcome:
    """Execute ``job_name`` for partition ``workspace_id`` as a Dagster run; wait for it to finish.

    Raises:
        RunInProgressError: a run of that partition is already queued or running.
        dagster.DagsterInvariantViolationError: unknown job name.
    """
    ensure_partitions(instance, [workspace_id])
    busy = instance.get_run_records(
        dg.RunsFilter(tags={PARTITION_TAG: workspace_id}, statuses=list(IN_PROGRESS_RUN_STATUSES)), limit=1
    )
    if busy:
        raise RunInProgressError(f"run {busy[0].dagster_run.run_id} of workspace {workspace_id!r} is in progress")
    job = build_reconstructable_job("appt_pipeline.definitions", "get_job", reconstructable_args=(job_name,))
    if run_config is None:
        # the job's own config for this partition (a given one replaces it whole). execute_job does not
        # resolve a partitioned job's config from the partition tag: without this every asset job would run
        # with the op's config defaults (evidence "migration"), whatever job was named.
        partitioned = get_job(job_name).partitioned_config
        run_config = dict(partitioned.get_run_config_for_partition_key(workspace_id)) if partitioned else {}
    result = dg.execute_job(job, instance=instance, tags={PARTITION_TAG: workspace_id}, run_config=run_config)
    outcome = RunOutcome(run_id=result.run_id, success=result.success)
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization if event.is_step_materialization else None
        if mat is None:
            continue
        outcome.metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    for evaluation in result.get_asset_check_evaluations():
        outcome.checks[evaluation.check_name] = evaluation.passed
    return outcome
