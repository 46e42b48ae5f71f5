"""Jobs, all partitioned by workspace (partitioning inferred from the selected assets).

Each writing job selects the SPEC §10 drift checks with its asset (:data:`HISTORY_SELECTION`): they check
the leads the run touched (``defs.checks``). Each job supplies its own evidence config
(:func:`appt_pipeline.defs.evidence.history_run_config`) as a partitioned config that also gives every run of
a workspace its lane tag (``appt/lane = <workspace>:<kind>``, :func:`appt_pipeline.defs.runs.lane_config`;
docs/operations.md §5), a ``dagster/priority`` (live work first) and a ``dagster/max_runtime`` tag (seconds):
run monitoring fails a run still going after that long.
"""

import dagster as dg

from appt_pipeline.defs.assets import appointment_history_and_rollups
from appt_pipeline.defs.checks import drift_checks
from appt_pipeline.defs.evidence import (
    RUN_LOGGERS,
    MigrationEvidence,
    ReconciliationEvidence,
    WebhookEvidence,
    history_run_config,
)
from appt_pipeline.defs.runs import (
    KIND_TAG,
    MANUAL_PRIORITY,
    MAX_RUNTIME_TAG,
    PRIORITY_TAG,
    SCHEDULED_PRIORITY,
    WEBHOOK_PRIORITY,
    lane_config,
)

__all__ = ["MANUAL_PRIORITY", "RUN_LOGGERS", "SCHEDULED_PRIORITY", "WEBHOOK_PRIORITY", "migration_job",
           "reconciliation_job", "webhook_ingest_job"]

#: A workspace's migration: ~20 s per 100k leads measured (bench.migration); an hour is far beyond that.
MIGRATION_MAX_RUNTIME_S = 3600
#: Reconciliation stops itself after ``time_budget_s`` (900 s by default); twice that is a stuck run.
RECONCILIATION_MAX_RUNTIME_S = 1800
#: A webhook run applies what is pending in seconds; 10 minutes is a stuck run.
WEBHOOK_MAX_RUNTIME_S = 600

#: The history asset and its drift checks (run-scoped in these jobs).
HISTORY_SELECTION = dg.AssetSelection.assets(appointment_history_and_rollups) | dg.AssetSelection.checks(drift_checks)

migration_job = dg.define_asset_job(
    "migration_job",
    selection=HISTORY_SELECTION,
    description="SPEC §5: migrate a workspace's legacy lead rollups into the appointment history.",
    config=lane_config("migration", history_run_config(MigrationEvidence(apply=True))),
    tags={KIND_TAG: "migration", PRIORITY_TAG: MANUAL_PRIORITY, MAX_RUNTIME_TAG: str(MIGRATION_MAX_RUNTIME_S)},
)

reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=HISTORY_SELECTION,
    description="SPEC §6: poll the workspace's provider for its due leads and apply what it says.",
    config=lane_config("reconciliation", history_run_config(ReconciliationEvidence(apply=True))),
    tags={KIND_TAG: "reconciliation", PRIORITY_TAG: MANUAL_PRIORITY,
          MAX_RUNTIME_TAG: str(RECONCILIATION_MAX_RUNTIME_S)},
)

webhook_ingest_job = dg.define_asset_job(
    "webhook_ingest_job",
    selection=HISTORY_SELECTION,
    description="SPEC §7: apply the workspace's pending webhook staging rows (source WEBHOOK); "
    "launched by webhook_events_sensor.",
    config=lane_config("webhooks", history_run_config(WebhookEvidence(apply=True))),
    tags={KIND_TAG: "webhooks", PRIORITY_TAG: WEBHOOK_PRIORITY, MAX_RUNTIME_TAG: str(WEBHOOK_MAX_RUNTIME_S)},
)
