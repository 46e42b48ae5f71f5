"""Jobs, all partitioned by workspace (partitioning inferred from the selected assets)."""

import dagster as dg

from appt_pipeline.defs.assets import appointment_history_and_rollups

#: Run logs at INFO (the console logger's default is DEBUG: every engine event).
RUN_LOGGERS = {"console": {"config": {"log_level": "INFO"}}}

migration_job = dg.define_asset_job(
    "migration_job",
    selection=dg.AssetSelection.assets(appointment_history_and_rollups),
    description="SPEC §5: migrate a workspace's legacy lead rollups into the appointment history.",
    config={"ops": {"appointment_history_and_rollups": {"config": {"evidence": "migration", "apply": True}}},
            "loggers": RUN_LOGGERS},
    tags={"appt/kind": "migration"},
)

#: Priority of runs launched from the UI or by backfills; the schedule's runs go first (SPEC §6).
MANUAL_PRIORITY = "-1"
SCHEDULED_PRIORITY = "1"

reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.assets(appointment_history_and_rollups),
    description="SPEC §6: poll the workspace's provider for its due leads and apply what it says.",
    config={"ops": {"appointment_history_and_rollups": {"config": {"evidence": "reconciliation", "apply": True}}},
            "loggers": RUN_LOGGERS},
    tags={"appt/kind": "reconciliation", "dagster/priority": MANUAL_PRIORITY},
)

#: Webhook runs apply what a provider just pushed: ahead of the reconciliation schedule's runs.
WEBHOOK_PRIORITY = "2"

webhook_ingest_job = dg.define_asset_job(
    "webhook_ingest_job",
    selection=dg.AssetSelection.assets(appointment_history_and_rollups),
    description="SPEC §7: apply the workspace's pending webhook staging rows (source WEBHOOK); "
    "launched by webhook_events_sensor.",
    config={"ops": {"appointment_history_and_rollups": {"config": {"evidence": "webhooks", "apply": True}}},
            "loggers": RUN_LOGGERS},
    tags={"appt/kind": "webhooks", "dagster/priority": WEBHOOK_PRIORITY},
)
