"""The SPEC §10 drift checks as Dagster asset checks on the workspace partitions, their job and daily schedule.

``drift_checks`` is one multi-asset check (one step, one read-only connection) with the eight checks of
:mod:`appt_pipeline.store.drift_checks`, each an ``AssetCheckSpec`` on ``lead_rollups``,
``appointment_history`` or ``webhook_events``, partitioned by workspace, non-blocking (a failing check
never stops ingestion). Each result carries ``count``, ``sample_ids`` (JSON list of lead / appointment /
staging row ids; never PII) and ``scope``.

Scope: in a run of a writing job (``migration_job``, ``reconciliation_job``, ``webhook_ingest_job``, which
select these checks with their asset) only the leads that run touched — the workspace's leads whose
``appointment_rollup_at`` is at or after the run's start (the write path stamps every lead it recomputes) —
and the staging rows processed since; launched on its own (the UI's "Execute checks"), the whole workspace.
``DriftCheckConfig.scope`` forces one (``full`` / ``run``). ``drift_check_job`` (daily schedule, or the UI's
launchpad with a partition) runs the full checks as an op job and reports them as evaluations of the same
asset checks.
"""

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.runs import MAX_RUNTIME_TAG, PRIORITY_TAG, lane_config
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.store.drift_checks import CHECK_ASSETS, CHECK_DESCRIPTIONS, CheckOutcome, run_checks

#: Jobs whose runs write the app database: their checks are run-scoped (module doc).
WRITING_JOBS = frozenset({"migration_job", "reconciliation_job", "webhook_ingest_job"})
#: The full checks of one workspace read every lead once per check: minutes for millions of leads.
DRIFT_CHECK_MAX_RUNTIME_S = 1800
#: Below every writing job: a check a few minutes late is still a daily check.
DRIFT_CHECK_PRIORITY = "-2"

# Partitioned asset checks are a preview feature of Dagster 1.13 (docs/operations.md §4): its warning is expected
# here, once, and silenced so `dagster definitions validate` stays clean.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    CHECK_SPECS = [
        dg.AssetCheckSpec(name, asset=asset, description=CHECK_DESCRIPTIONS[name],
                          partitions_def=workspace_partitions)
        for name, asset in CHECK_ASSETS.items()
    ]


class DriftCheckConfig(dg.Config):
    """``scope``: ``auto`` (run-scoped in a writing job, else full), ``full`` or ``run``."""

    scope: str = "auto"


def _metadata(outcome: CheckOutcome) -> dict[str, Any]:
    """A check's metadata: ``count``, ``sample_ids`` (JSON list of ids), ``scope`` (``full`` / ``run``)."""
    return {"count": outcome.count, "sample_ids": dg.MetadataValue.json(outcome.sample), "scope": outcome.scope}


def _log_failure(context: dg.OpExecutionContext | dg.AssetCheckExecutionContext, workspace_id: str,
                 outcome: CheckOutcome) -> None:
    if not outcome.passed:
        context.log.warning(f"workspace {workspace_id}: {outcome.name} failed ({outcome.count}; "
                            f"e.g. {', '.join(outcome.sample[:5])})")


def _run_start(context: dg.AssetCheckExecutionContext) -> datetime:
    record = context.instance.get_run_record_by_id(context.run.run_id)
    started = record.start_time if record is not None else None
    return datetime.fromtimestamp(started, UTC) if started else utc_now()


@dg.multi_asset_check(specs=CHECK_SPECS, name="drift_checks", can_subset=True,
                      description="SPEC §10 drift checks of one workspace partition (count + sample of ids).")
def drift_checks(context: dg.AssetCheckExecutionContext, config: DriftCheckConfig,
                 app_db: AppDatabase) -> Iterator[dg.AssetCheckResult]:
    """Run the selected checks for the partition (scope: module doc) and yield one result per check.

    Raises:
        ValueError: ``config.scope`` is not ``auto``, ``full`` or ``run``.
    """
    if config.scope not in ("auto", "full", "run"):
        raise ValueError(f"scope must be auto, full or run, not {config.scope!r}")
    workspace_id = context.partition_key
    run_scoped = config.scope == "run" or (config.scope == "auto" and context.run.job_name in WRITING_JOBS)
    since = _run_start(context) if run_scoped else None
    names = [key.name for key in context.selected_asset_check_keys]
    with app_db.engine().connect() as conn:
        outcomes = run_checks(conn, workspace_id, utc_now(), since=since, names=names)
    for outcome in outcomes:
        _log_failure(context, workspace_id, outcome)
        yield dg.AssetCheckResult(check_name=outcome.name, asset_key=outcome.asset, passed=outcome.passed,
                                  metadata=_metadata(outcome))


@dg.op(description="SPEC §10: every drift check over the whole workspace partition (read only).")
def run_drift_checks(context: dg.OpExecutionContext, app_db: AppDatabase) -> None:
    """The full checks of the partition, reported as the ``drift_checks`` asset checks' evaluations (one
    ``AssetCheckEvaluation`` per check, on its asset and partition)."""
    workspace_id = context.partition_key
    with app_db.engine().connect() as conn:
        outcomes = run_checks(conn, workspace_id, utc_now())
    for outcome in outcomes:
        _log_failure(context, workspace_id, outcome)
        context.log_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(outcome.asset), check_name=outcome.name, passed=outcome.passed,
            metadata=_metadata(outcome), partition=workspace_id,
        ))


# An op job: Dagster 1.13 infers a job's partitions from its selected assets only, so a job selecting just the
# (partitioned) checks would have none; this one is partitioned like every other job and reports the same checks.
@dg.job(name="drift_check_job", config=lane_config("drift_checks"),
        description="SPEC §10: every drift check over the whole workspace partition (read only); daily schedule.",
        tags={"appt/kind": "drift_checks", PRIORITY_TAG: DRIFT_CHECK_PRIORITY,
              MAX_RUNTIME_TAG: str(DRIFT_CHECK_MAX_RUNTIME_S)})
def drift_check_job() -> None:
    run_drift_checks()


@dg.schedule(
    name="drift_check_schedule",
    job=drift_check_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC (SPEC §10): the full drift checks of every workspace partition.",
)
def drift_check_schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest] | dg.SkipReason:
    """One run request per workspace partition; run keys ``drift_checks:<ws>:<tick>``."""
    tick = context.scheduled_execution_time
    stamp = tick.isoformat() if tick else "manual"
    partitions = sorted(context.instance.get_dynamic_partitions(workspace_partitions.name))
    if not partitions:
        return dg.SkipReason("no workspace partition yet")
    return iter(dg.RunRequest(partition_key=ws, run_key=f"drift_checks:{ws}:{stamp}") for ws in partitions)
