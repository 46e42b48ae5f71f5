"""The ``calendar_capacity`` asset (partitioned by workspace), ``capacity_overview``, ``capacity_job`` (rules §9).

``calendar_capacity`` computes and stores the workspace's capacity for the window [now, now + window_days)
(:func:`appt_pipeline.pipelines.capacity.compute_capacity`: one statement, from the stored free slots of
``calendar_availability`` and the appointment history), downstream of ``appointment_history`` and
``calendar_availability``. Its materialization carries (:func:`capacity_metadata`):

* ``capacity`` — a table (one row per configured calendar and a ``*`` total row): calendar key, provider,
  availability source, booked, available, total, booked %, unattributed (total row), stale, last error;
* ``booked_pct`` (float, absent when null) and ``available_slots`` (int) of the total, plus ``booked_slots``,
  ``total_slots``, ``unattributed_booked_slots``: the asset's Plots tab shows them over time;
* ``per_day_chart`` — booked vs available per UTC day (a PNG inline in markdown);
* ``report`` — the JSON of ``appt-pipeline capacity --json`` for this workspace (the same numbers).

Asset check ``capacity_availability_fresh`` (severity WARN): fails when the availability a calendar's numbers
used is stale or its last refresh failed (``stale`` / ``last_error``), or when no calendar is configured.

``capacity_overview`` (unpartitioned, downstream of every ``calendar_capacity`` partition): the stored rows of
all workspaces as a pandas DataFrame, one row per workspace and calendar key, sorted by booked %, shown as a
table in the UI.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from appt_pipeline.defs.availability import availability_job
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.runs import MAX_RUNTIME_TAG, WRITER_POOL, lane_config
from appt_pipeline.domain.calendars import TOTAL_KEY
from appt_pipeline.domain.capacity import DEFAULT_WINDOW_DAYS, CapacityReport, WorkspaceCapacity, clamp_window_days
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.pipelines.capacity import compute_capacity, day_chart_markdown
from appt_pipeline.store.capacity import STORED_COLUMNS, UnknownWorkspaceError, stored_capacity

GROUP = "capacity"
FRESH_CHECK = "capacity_availability_fresh"
#: The upstream asset of the availability refresh (defined with the availability pipeline).
CALENDAR_AVAILABILITY = dg.AssetKey("calendar_availability")


class CapacityConfig(dg.Config):
    """Options of one capacity run (rules §9).

    Attributes:
        window_days: length of the window [now, now + window_days) in days, clamped to 1…90.
    """

    window_days: int = DEFAULT_WINDOW_DAYS


CAPACITY_TABLE_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("calendar_key", "string", description="GHL calendar id / Calendly event type URI; * = total"),
    dg.TableColumn("provider", "string"),
    dg.TableColumn("availability_source", "string", description="DEFAULT | DIRECT_BOOK"),
    dg.TableColumn("booked_slots", "int", description="CONFIRMED appointments starting in the window"),
    dg.TableColumn("available_slots", "int", description="distinct free slot starts in the window"),
    dg.TableColumn("total_slots", "int"),
    dg.TableColumn("booked_pct", "float", description="booked / total, 0…1; empty when total is 0"),
    dg.TableColumn("unattributed_booked_slots", "int", description="total row: bookings of no configured calendar"),
    dg.TableColumn("stale", "bool", description="availability past its stale_at or never fetched"),
    dg.TableColumn("last_error", "string", description="last availability refresh error (masked)"),
])


def capacity_table(workspace: WorkspaceCapacity) -> dg.TableMetadataValue:
    """The ``capacity`` table of a materialization: the calendars (DEFAULT first) then the ``*`` total."""
    records = [dg.TableRecord({
        "calendar_key": c.calendar_key, "provider": c.provider, "availability_source": c.availability_source,
        "booked_slots": c.booked_slots, "available_slots": c.available_slots, "total_slots": c.total_slots,
        "booked_pct": c.booked_pct, "unattributed_booked_slots": None, "stale": c.stale,
        "last_error": c.last_error}) for c in workspace.calendars]
    t = workspace.total
    records.append(dg.TableRecord({
        "calendar_key": TOTAL_KEY, "provider": None, "availability_source": None, "booked_slots": t.booked_slots,
        "available_slots": t.available_slots, "total_slots": t.total_slots, "booked_pct": t.booked_pct,
        "unattributed_booked_slots": t.unattributed_booked_slots, "stale": workspace.stale,
        "last_error": None if workspace.has_calendars else "no configured calendar"}))
    return dg.MetadataValue.table(records, schema=CAPACITY_TABLE_SCHEMA)


def capacity_metadata(report: CapacityReport, workspace: WorkspaceCapacity) -> dict[str, Any]:
    """Materialization metadata of one workspace's capacity (keys: module doc). Times ISO-8601 UTC."""
    t = workspace.total
    metadata: dict[str, Any] = {
        "capacity": capacity_table(workspace),
        "available_slots": dg.MetadataValue.int(t.available_slots),
        "booked_slots": dg.MetadataValue.int(t.booked_slots),
        "total_slots": dg.MetadataValue.int(t.total_slots),
        "unattributed_booked_slots": dg.MetadataValue.int(t.unattributed_booked_slots),
        "calendars": len(workspace.calendars),
        "stale_calendars": sum(1 for c in workspace.calendars if c.stale),
        "window_days": report.window_days,
        "window_start": report.as_dict()["window_start"],
        "window_end": report.as_dict()["window_end"],
        "per_day_chart": dg.MetadataValue.md(day_chart_markdown(report, workspace)),
        "report": dg.MetadataValue.json({**report.as_dict(), "workspaces": [workspace.as_dict()]}),
    }
    if t.booked_pct is not None:
        metadata["booked_pct"] = dg.MetadataValue.float(t.booked_pct)
    return metadata


def freshness_check(workspace: WorkspaceCapacity) -> dg.AssetCheckResult:
    """``capacity_availability_fresh``: passes when every configured calendar's availability is fresh and its
    last refresh succeeded; WARN otherwise (and when no calendar is configured)."""
    failing = [{"calendar_key": c.calendar_key, "availability_source": c.availability_source, "stale": c.stale,
                "last_error": c.last_error} for c in workspace.failed]
    return dg.AssetCheckResult(
        check_name=FRESH_CHECK,
        asset_key="calendar_capacity",
        passed=workspace.has_calendars and not failing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"calendars": len(workspace.calendars), "stale_or_failed": len(failing),
                  "details": dg.MetadataValue.json(failing),
                  **({} if workspace.has_calendars else {"reason": "no configured calendar"})},
    )


@dg.asset(
    name="calendar_capacity",
    group_name=GROUP,
    deps=["appointment_history", CALENDAR_AVAILABILITY],
    partitions_def=workspace_partitions,
    check_specs=[dg.AssetCheckSpec(FRESH_CHECK, asset="calendar_capacity",
                                   description="WARN when the availability capacity used is stale or its last "
                                   "refresh failed (rules §9), or when no calendar is configured.")],
    kinds={"postgres"},
    pool=WRITER_POOL,
    description="Calendar capacity of the workspace for the next N days (rules §9): booked / (booked + available) "
    "per configured calendar and in total, per UTC day; stored in `calendar_capacity` and `calendar_capacity_days`.",
)
def calendar_capacity(context: dg.AssetExecutionContext, config: CapacityConfig,
                      app_db: AppDatabase) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Compute and store the partition's capacity; yield its materialization and the freshness check."""
    workspace_id = context.partition_key
    if config.window_days != (used := clamp_window_days(config.window_days)):
        context.log.warning(f"window_days {config.window_days} is out of range 1…90; used {used}")
    try:
        report = compute_capacity(app_db.engine(), [workspace_id], days=config.window_days, now=utc_now())
    except UnknownWorkspaceError as exc:
        raise dg.Failure(description=str(exc)) from None
    workspace = report.workspace(workspace_id)
    total = workspace.total
    context.log.info(
        f"workspace {workspace_id}: {len(workspace.calendars)} calendar(s), booked={total.booked_slots} "
        f"available={total.available_slots} booked_pct={total.booked_pct} "
        f"unattributed={total.unattributed_booked_slots} stale_or_failed={len(workspace.failed)}")
    yield dg.MaterializeResult(metadata=capacity_metadata(report, workspace))
    yield freshness_check(workspace)


OVERVIEW_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn(name, {"booked_slots": "int", "available_slots": "int", "total_slots": "int",
                          "unattributed_booked_slots": "int", "window_days": "int", "booked_pct": "float",
                          "stale": "bool"}.get(name, "string"))
    for name in STORED_COLUMNS])


def overview_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The overview DataFrame (columns :data:`~appt_pipeline.store.capacity.STORED_COLUMNS`, the order given)."""
    return pd.DataFrame(rows, columns=list(STORED_COLUMNS))


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


@dg.asset(
    name="capacity_overview",
    group_name=GROUP,
    deps=["calendar_capacity"],
    kinds={"pandas", "postgres"},
    description="Capacity of every workspace and calendar (the stored `calendar_capacity` rows of the 30-day "
    "window), one row per workspace and calendar key, sorted by booked % (rules §9).",
)
def capacity_overview(context: dg.AssetExecutionContext, app_db: AppDatabase) -> dg.Output[pd.DataFrame]:
    """The stored capacity rows of all workspaces as a DataFrame, sorted by booked % descending (nulls last)."""
    frame = overview_frame(stored_capacity(app_db.engine(), window_days=DEFAULT_WINDOW_DAYS))
    context.log.info(f"{frame['workspace_id'].nunique()} workspace(s), {len(frame)} row(s)")
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in frame.to_dict("records")]
    return dg.Output(frame, metadata={
        "overview": dg.MetadataValue.table(records, schema=OVERVIEW_SCHEMA),
        "workspaces": int(frame["workspace_id"].nunique()),
        "rows": len(frame),
        "dagster/row_count": len(frame),
    })


capacity_job = dg.define_asset_job(
    "capacity_job",
    selection=[calendar_capacity],
    config=lane_config("capacity"),
    description="rules §9: compute and store a workspace's calendar capacity for the next 30 days from its stored "
    "free slots and appointment history.",
    tags={"appt/kind": "capacity", MAX_RUNTIME_TAG: "600"},
)

capacity_overview_job = dg.define_asset_job(
    "capacity_overview_job",
    selection=[capacity_overview],
    description="rules §9: the capacity overview of every workspace (unpartitioned).",
    tags={"appt/kind": "capacity", MAX_RUNTIME_TAG: "600"},
)


@dg.run_status_sensor(
    name="capacity_after_availability_sensor", run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[availability_job], request_job=capacity_job,
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="rules §9: after a successful availability refresh of a workspace (schedule, UI or backfill), "
                "recompute that workspace's calendar_capacity from the new slots.")
def capacity_after_availability_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    """One ``capacity_job`` run for the partition of each successful ``availability_job`` run (run key: that
    run's id, so a sensor restart never requests it twice)."""
    partition = context.dagster_run.tags.get("dagster/partition")
    if not partition:
        return dg.SkipReason(f"availability run {context.dagster_run.run_id} has no workspace partition")
    return dg.RunRequest(run_key=f"capacity_after:{context.dagster_run.run_id}", partition_key=partition)
