"""Jobs, all partitioned by workspace (partitioning inferred from the selected assets)."""

import dagster as dg

from appt_pipeline.defs.assets import appointment_history_and_rollups

migration_job = dg.define_asset_job(
    "migration_job",
    selection=dg.AssetSelection.assets(appointment_history_and_rollups),
    description="SPEC §5: migrate a workspace's legacy lead rollups into the appointment history.",
    config={"ops": {"appointment_history_and_rollups": {"config": {"evidence": "migration", "apply": True}}}},
    tags={"appt/kind": "migration"},
)
