"""The Dagster code location of appt-pipeline: ``defs`` (loaded by workspace.yaml and ``[tool.dagster]``).

No I/O at import: the app database URL (``APPT_DATABASE_URL``) and the key of stored secrets
(``APPT_SECRET_KEY``) are read from the environment at run time (``EnvVar``; see ``defs.resources``).
"""

import dagster as dg

from appt_pipeline.defs.assets import (
    appointment_history_and_rollups,
    calendly_api,
    ghl_api,
    legacy_lead_rollups,
    webhook_events,
)
from appt_pipeline.defs.attribution import attribution_backfill_job, calendar_attribution
from appt_pipeline.defs.availability import availability_job, availability_schedule, calendar_availability
from appt_pipeline.defs.capacity import (
    calendar_capacity,
    capacity_after_availability_sensor,
    capacity_job,
    capacity_overview,
    capacity_overview_job,
)
from appt_pipeline.defs.checks import drift_check_job, drift_check_schedule, drift_checks
from appt_pipeline.defs.jobs import migration_job, reconciliation_job, webhook_ingest_job
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.defs.rollups import rollup_refresh_job, rollup_refresh_schedule
from appt_pipeline.defs.schedules import reconciliation_schedule
from appt_pipeline.defs.sensors import webhook_backlog_sensor, webhook_events_sensor, workspace_registry_sensor
from appt_pipeline.settings import DATABASE_URL_ENV

defs = dg.Definitions(
    assets=[legacy_lead_rollups, ghl_api, calendly_api, webhook_events, appointment_history_and_rollups,
            calendar_attribution, calendar_availability, calendar_capacity, capacity_overview],
    asset_checks=[drift_checks],
    jobs=[migration_job, reconciliation_job, webhook_ingest_job, attribution_backfill_job, availability_job,
          capacity_job, capacity_overview_job, rollup_refresh_job, drift_check_job],
    schedules=[reconciliation_schedule, availability_schedule, rollup_refresh_schedule, drift_check_schedule],
    sensors=[workspace_registry_sensor, webhook_events_sensor, webhook_backlog_sensor,
             capacity_after_availability_sensor],
    resources={
        "app_db": AppDatabase(url=dg.EnvVar(DATABASE_URL_ENV)),
        "providers": ProviderClients(),  # APPT_SECRET_KEY when an account is loaded (ProviderClients doc)
    },
    # one process per run instead of one per step: ~2 s saved per step on 2 cores (docs/operations.md §6.2)
    executor=dg.in_process_executor,
)


def get_job(name: str) -> dg.JobDefinition:
    """The resolved job ``name`` (used to rebuild jobs in run workers: ``build_reconstructable_job``)."""
    return defs.resolve_job_def(name)
