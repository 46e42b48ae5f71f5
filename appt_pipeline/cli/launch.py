"""Launching partitioned Dagster jobs from the command line (SPEC §12 ``run``, ``demo``), through the instance.

:func:`run_partition_job` makes one run of the instance (Postgres storage, visible in the UI with its logs,
materializations and asset checks) in one of two ways:

* **queued** — when a ``dagster-daemon`` is running for the instance (:func:`daemon_running`: a fresh
  ``QUEUED_RUN_COORDINATOR`` heartbeat), the run is submitted to the instance's run queue with
  ``dagster job launch``; the daemon starts it when the tag concurrency limits and priorities of
  dagster.yaml allow;
* **in this process** — otherwise it is executed here with ``dagster.execute_job``, after checking the same
  limits against the runs in flight (:func:`conflicting_runs`): a conflict raises :class:`RunInProgressError`
  instead of running beside it.

Either way the call follows the run to its end and returns a :class:`RunOutcome` read back from the
instance (status, typed ``appointment_history`` / ``lead_rollups`` results, asset checks). Only public
Dagster API is used.
"""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from appt_pipeline.definitions import get_job
from appt_pipeline.defs.history_results import (
    ROLLUP_DRIFT_CHECK,
    HistoryResult,
    RollupsResult,
    parse_history,
    parse_rollups,
)
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.runs import FINISHED_STATUSES, IN_FLIGHT_STATUSES, PARTITION_TAG
from appt_pipeline.settings import PROJECT_ROOT

__all__ = ["PARTITION_TAG", "LaunchError", "RunInProgressError", "RunOutcome", "conflicting_runs",
           "daemon_running", "ensure_partitions", "run_partition_job"]

#: The daemon type whose heartbeat says the run queue is served.
QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
#: A heartbeat older than this (seconds) is a stopped daemon: it beats every 30 s.
HEARTBEAT_MAX_AGE_S = 75.0
#: Seconds between two looks at a run being followed.
POLL_S = 0.5


class RunInProgressError(RuntimeError):
    """A run in flight conflicts with the one asked for (a tag concurrency limit or ``max_concurrent_runs``
    of dagster.yaml); the message names it."""


class LaunchError(RuntimeError):
    """Submitting the run to the queue failed (``dagster job launch`` exited non-zero), or the queued run
    was left without a daemon to start it."""


@dataclass
class RunOutcome:
    """A finished run: id, status, how it ran, materialization metadata per asset, asset check results."""

    run_id: str
    success: bool
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.SUCCESS
    queued: bool = False
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def history(self) -> HistoryResult | None:
        """The run's typed ``appointment_history`` result, None when it materialized none."""
        found = self.metadata.get("appointment_history")
        return parse_history(found) if found is not None else None

    @property
    def rollup_check_passed(self) -> bool:
        """The run reported the ``rollup_drift`` check, and it passed."""
        return self.checks.get(ROLLUP_DRIFT_CHECK, False)

    @property
    def rollups(self) -> RollupsResult | None:
        """The run's typed ``lead_rollups`` result, None when it materialized none."""
        found = self.metadata.get("lead_rollups")
        return parse_rollups(found) if found is not None else None


def ensure_partitions(instance: dg.DagsterInstance, workspace_ids: list[str]) -> list[str]:
    """Add missing ``workspace`` partitions; returns the ids added."""
    known = set(instance.get_dynamic_partitions(workspace_partitions.name))
    new = [ws for ws in workspace_ids if ws not in known]
    if new:
        instance.add_dynamic_partitions(workspace_partitions.name, new)
    return new


def daemon_running(instance: dg.DagsterInstance, max_age_s: float = HEARTBEAT_MAX_AGE_S) -> bool:
    """A ``dagster-daemon`` serves this instance's run queue: its run-coordinator heartbeat is at most
    ``max_age_s`` seconds old."""
    beat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON)
    return beat is not None and time.time() - beat.timestamp <= max_age_s


def conflicting_runs(instance: dg.DagsterInstance, tags: Mapping[str, str]) -> list[str]:
    """Why a run with ``tags`` may not start now, given the runs in flight and dagster.yaml's run limits:
    one line per violated limit, naming a conflicting run (empty: it may start).

    Tag limits count every run in flight (``IN_FLIGHT_STATUSES``, queued ones included: they start first);
    ``max_concurrent_runs`` counts the runs that are going (not queued), as the run queue does.
    """
    limits = instance.get_concurrency_config().run_queue_config
    if limits is None:
        return []
    in_flight = [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(statuses=list(IN_FLIGHT_STATUSES)))]
    reasons = []
    for limit in limits.tag_concurrency_limits or []:
        key, value = limit["key"], limit.get("value")
        if key not in tags:
            continue
        if isinstance(value, str) and tags[key] != value:
            continue
        same = [r for r in in_flight if key in r.tags and (value is None or r.tags[key] == tags[key])]
        if len(same) >= limit["limit"]:
            shown = f"{key}={tags[key]}" if value is not None else key
            reasons.append(f"run {same[0].run_id} ({same[0].job_name}, {same[0].status.value}) holds {shown} "
                           f"(limit {limit['limit']})")
    going = [r for r in in_flight if r.status != dg.DagsterRunStatus.QUEUED]
    if 0 <= limits.max_concurrent_runs <= len(going):
        reasons.append(f"{len(going)} runs in progress (max_concurrent_runs {limits.max_concurrent_runs}), "
                       f"e.g. run {going[0].run_id}")
    return reasons


def _partition_run_config(job_name: str, workspace_id: str) -> dict[str, Any]:
    # the job's own config for this partition. execute_job and `dagster job launch` do not resolve a
    # partitioned job's config from the partition tag; without this no evidence would be chosen at all.
    partitioned = get_job(job_name).partitioned_config
    return dict(partitioned.get_run_config_for_partition_key(workspace_id)) if partitioned else {}


def _partition_tags(job_name: str, workspace_id: str) -> dict[str, str]:
    # the partition and the job's own tags for it: its lane ``appt/lane = <workspace>:<kind>`` (docs/operations.md
    # §5), which dagster.yaml's run queue limits; neither execute_job nor `dagster job launch` adds them
    partitioned = get_job(job_name).partitioned_config
    tags = dict(partitioned.get_tags_for_partition_key(workspace_id, job_name)) if partitioned else {}
    return {**tags, PARTITION_TAG: workspace_id}


def _as_dict(run_config: dg.RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    return run_config.to_config_dict() if isinstance(run_config, dg.RunConfig) else dict(run_config)


def run_partition_job(
    instance: dg.DagsterInstance,
    job_name: str,
    workspace_id: str,
    run_config: dg.RunConfig | Mapping[str, Any] | None = None,
    *,
    queue: bool | None = None,
) -> RunOutcome:
    """Run ``job_name`` for partition ``workspace_id`` through the instance and follow it to its end.

    ``run_config`` replaces the job's own partition config whole (default: the job's). ``queue``: submit to
    the run queue (True), execute here (False), or decide by :func:`daemon_running` (None, the default).

    Raises:
        RunInProgressError: executing here, and a run in flight conflicts (see :func:`conflicting_runs`).
        LaunchError: submitting to the queue failed, or the daemon stopped while the run was still queued.
        dagster.DagsterInvariantViolationError: unknown job name.
    """
    ensure_partitions(instance, [workspace_id])
    config = _as_dict(run_config) if run_config is not None else _partition_run_config(job_name, workspace_id)
    tags = _partition_tags(job_name, workspace_id)
    if daemon_running(instance) if queue is None else queue:
        run_id = _submit(job_name, tags, config)
        _follow(instance, run_id)
        return _outcome(instance, run_id, queued=True)
    reasons = conflicting_runs(instance, {**get_job(job_name).tags, **tags})
    if reasons:
        raise RunInProgressError(f"not started, it would conflict with runs in flight: {'; '.join(reasons)}")
    job = dg.build_reconstructable_job("appt_pipeline.definitions", "get_job", reconstructable_args=(job_name,))
    result = dg.execute_job(job, instance=instance, tags=tags, run_config=config)
    return _outcome(instance, result.run_id, queued=False)


def _submit(job_name: str, tags: Mapping[str, str], run_config: Mapping[str, Any]) -> str:
    """Submit a run to the instance's queue with ``dagster job launch`` (the public way to create a run of a
    code location and hand it to the run coordinator); returns its id."""
    run_id = str(uuid.uuid4())
    cmd = [sys.executable, "-m", "dagster", "job", "launch", "-w", str(PROJECT_ROOT / "workspace.yaml"),
           "-j", job_name, "--run-id", run_id, "--tags", json.dumps(dict(tags)),
           "--config-json", json.dumps(run_config)]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LaunchError(f"dagster job launch failed (exit {proc.returncode}): {' / '.join(tail)}")
    return run_id


def _follow(instance: dg.DagsterInstance, run_id: str) -> None:
    """Wait until the run ended; when it is still queued and no daemon serves the queue any more, cancel it
    and raise :class:`LaunchError`."""
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise LaunchError(f"run {run_id} is not in the instance")
        if run.status in FINISHED_STATUSES:
            return
        if run.status == dg.DagsterRunStatus.QUEUED and not daemon_running(instance):
            # the daemon stopped (or its heartbeat was a stale one of a daemon that had just stopped): cancel
            # the run rather than leave it to start unasked whenever a daemon runs again
            instance.report_run_canceled(run, message="no dagster-daemon serves the run queue")
            raise LaunchError(f"run {run_id} was queued but no dagster-daemon serves the queue any more; "
                              "canceled it (run again)")
        time.sleep(POLL_S)


def _outcome(instance: dg.DagsterInstance, run_id: str, *, queued: bool) -> RunOutcome:
    """The finished run as recorded in the instance: status, materialization metadata, check results."""
    run = instance.get_run_by_id(run_id)
    status = run.status if run is not None else dg.DagsterRunStatus.FAILURE
    outcome = RunOutcome(run_id=run_id, success=status == dg.DagsterRunStatus.SUCCESS, status=status, queued=queued)
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        if mat is not None:
            outcome.metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if evaluation is not None:
            outcome.checks[evaluation.check_name] = evaluation.passed
    return outcome
