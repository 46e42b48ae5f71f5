"""Run vocabulary shared by jobs, sensors and the command line: tags, the writer pool, run statuses.

Defined once here: :data:`IN_FLIGHT_STATUSES` (a run that may still claim rows or hold its workspace),
:data:`FINISHED_STATUSES`, the tag names (``dagster/partition``, ``dagster/max_runtime``, the job kind
``appt/kind`` and the run lane ``appt/lane``), :func:`lane_tags` and the ``app_pg_writer`` pool every asset
that writes the app database belongs to (its limit is set in dagster.yaml, ``concurrency.pools.default_limit``).

**Lanes** (docs/operations.md §5): every run of a workspace partition carries ``appt/lane =
<workspace>:<kind>``, and dagster.yaml limits each lane value to one run in flight. A webhook run of a
workspace therefore never queues behind its reconciliation, migration or backfill (other kinds, other
lanes; the write path is safe under concurrent writers, rules §4), while two runs of one kind of one
workspace never run side by side (at most one webhook run per workspace in flight).
"""

from collections.abc import Mapping

import dagster as dg

from appt_pipeline.defs.partitions import workspace_partitions

PARTITION_TAG = "dagster/partition"
#: The job kind of a run (``migration``, ``reconciliation``, ``webhooks``, ``attribution``): a job tag.
KIND_TAG = "appt/kind"
#: The run lane ``<workspace>:<kind>``; dagster.yaml allows one run in flight per value.
LANE_TAG = "appt/lane"
BACKFILL_TAG = "dagster/backfill"
PRIORITY_TAG = "dagster/priority"
#: ``dagster/priority`` of runs launched from the UI, the command line or by backfills: below live work.
MANUAL_PRIORITY = "-1"
#: The reconciliation schedule's runs (SPEC §6) go before manual runs and backfills.
SCHEDULED_PRIORITY = "1"
#: Webhook runs apply what a provider just pushed: ahead of everything else.
WEBHOOK_PRIORITY = "2"
#: seconds after which run monitoring (dagster.yaml ``run_monitoring``) fails a run still going
MAX_RUNTIME_TAG = "dagster/max_runtime"

#: Pool of every asset that writes the app database; limit in dagster.yaml (``pools.default_limit``).
WRITER_POOL = "app_pg_writer"

#: Runs that are queued or going: they may still claim staging rows or write their workspace.
IN_FLIGHT_STATUSES: tuple[dg.DagsterRunStatus, ...] = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)

#: Runs that ended; ``SUCCESS`` is the only good end.
FINISHED_STATUSES: tuple[dg.DagsterRunStatus, ...] = (
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
)


def lane(workspace_id: str, kind: str) -> str:
    """The lane of a run of job kind ``kind`` for partition ``workspace_id``: ``"<workspace>:<kind>"``.

    Kinds never contain ``:``, so the last ``:`` separates them (a workspace id may contain one).
    Raises ValueError for an empty workspace id or kind, or a kind with ``:``.
    """
    if not workspace_id or not kind or ":" in kind:
        raise ValueError(f"bad lane parts: workspace {workspace_id!r}, kind {kind!r}")
    return f"{workspace_id}:{kind}"


def lane_tags(workspace_id: str, kind: str) -> dict[str, str]:
    """The tags that put a run in its lane: ``{"appt/lane": "<workspace>:<kind>"}`` (see the module doc)."""
    return {LANE_TAG: lane(workspace_id, kind)}


def job_kind(job_tags: Mapping[str, str]) -> str:
    """The kind of a job from its tags (``appt/kind``). Raises KeyError when the job has none."""
    return job_tags[KIND_TAG]


def lane_config(kind: str, run_config: dg.RunConfig | None = None) -> dg.PartitionedConfig:
    """A job's config per workspace partition: ``run_config`` (the same for every partition) and the lane tags
    of ``kind``. Dagster adds these tags to every run it makes for a partition of the job — sensor and schedule
    run requests, job backfills, the UI's launchpad — so no run of a partition misses its lane."""
    fixed = run_config.to_config_dict() if run_config is not None else {}
    lane(workspace_partitions.name, kind)  # a bad kind fails at definition time, not per run
    return dg.PartitionedConfig(
        partitions_def=workspace_partitions,
        run_config_for_partition_key_fn=lambda _key: fixed,
        tags_for_partition_key_fn=lambda key: lane_tags(key, kind),
    )
