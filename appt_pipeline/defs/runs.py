"""Run vocabulary shared by jobs, sensors and the command line: tags, the writer pool, run statuses.

Defined once here: :data:`IN_FLIGHT_STATUSES` (a run that may still claim rows or hold its workspace),
:data:`FINISHED_STATUSES`, the ``dagster/partition`` / ``dagster/max_runtime`` tag names and the
``app_pg_writer`` pool every asset that writes the app database belongs to (its limit is set in
dagster.yaml, ``concurrency.pools.default_limit``).
"""

import dagster as dg

PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"
PRIORITY_TAG = "dagster/priority"
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
