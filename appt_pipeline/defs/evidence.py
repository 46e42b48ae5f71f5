"""Run config of ``appointment_history_and_rollups``: which evidence a run applies, as an explicit choice.

:class:`AppointmentHistoryConfig` has one required field, ``evidence``: a discriminated union (pydantic
``Field(discriminator="kind")``) of :class:`MigrationEvidence`, :class:`ReconciliationEvidence` and
:class:`WebhookEvidence`. Dagster renders it as a selector, so run config names the evidence by key::

    ops:
      appointment_history_and_rollups:
        config:
          evidence:
            reconciliation: {lead_budget: 90}

There is no default: a materialization without config (the UI's "Materialize" button on the asset, or
``dagster asset materialize`` with no ``--config``) fails config validation before the op starts, so nothing
is written unless a job or the launchpad asked for a given evidence. Every job supplies its own through
:func:`history_run_config`.
"""

from typing import Any, Literal

import dagster as dg
from pydantic import Field

from appt_pipeline.pipelines.webhook_ingest import DEFAULT_BATCH_SIZE
from appt_pipeline.store.migration import DEFAULT_CHUNK_SIZE

#: The op (multi-asset) these configs belong to.
HISTORY_OP = "appointment_history_and_rollups"

#: Run logs at INFO (the console logger's default is DEBUG: every engine event).
RUN_LOGGERS: dict[str, Any] = {"console": {"config": {"log_level": "INFO"}}}


class MigrationEvidence(dg.Config):
    """The legacy rollups (SPEC §5). ``resume``: continue after the last committed chunk of an earlier
    applied run; ``chunk_size``: leads per transaction; ``apply=False``: dry-run, nothing written."""

    kind: Literal["migration"] = "migration"
    apply: bool = True
    resume: bool = False
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1)


class ReconciliationEvidence(dg.Config):
    """Poll the workspace's provider for its due leads (SPEC §6): at most ``lead_budget`` leads and
    ``time_budget_s`` seconds per run. Source RECONCILE_CRON, or BACKFILL when the run belongs to a Dagster
    backfill (no follow-up tasks, no lead status change). ``apply=False``: ask, write nothing."""

    kind: Literal["reconciliation"] = "reconciliation"
    apply: bool = True
    lead_budget: int = Field(default=500, ge=1)
    time_budget_s: float = Field(default=900.0, gt=0)


class WebhookEvidence(dg.Config):
    """Apply the workspace's pending ``webhook_events`` rows in provider-time order (SPEC §7), ``batch_size``
    rows per transaction, source WEBHOOK. ``apply=False``: claim nothing, write nothing."""

    kind: Literal["webhooks"] = "webhooks"
    apply: bool = True
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)


Evidence = MigrationEvidence | ReconciliationEvidence | WebhookEvidence


class AppointmentHistoryConfig(dg.Config):
    """Which evidence a run applies (required; see the module doc)."""

    evidence: Evidence = Field(discriminator="kind", description="migration, reconciliation or webhooks")


def history_run_config(evidence: Evidence) -> dg.RunConfig:
    """The run config of a job (or one run) that applies ``evidence``, with the project's INFO run logs."""
    return dg.RunConfig(ops={HISTORY_OP: AppointmentHistoryConfig(evidence=evidence)}, loggers=RUN_LOGGERS)
