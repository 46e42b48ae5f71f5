"""The ``calendar_availability`` asset, ``availability_job`` and ``availability_schedule`` (docs/rules.md §9).

A materialization refreshes the free slots of the workspace partition's configured calendars / event
types for the next ``days`` (default 30) through the providers
(:func:`appt_pipeline.pipelines.availability.refresh_availability`: GHL ≤ 31-day, Calendly ≤ 7-day ranges,
the shared rate limiter; one calendar failing never fails the others nor loses their slots) and reports
per calendar: a table, counts, errors. The asset check ``availability_fresh`` warns when a calendar's
refresh failed or its slots are stale.

The refresh interval (minutes) comes from ``APPT_AVAILABILITY_REFRESH_MINUTES`` (default 60; a divisor of
60, or a whole number of hours dividing 24): the schedule ticks at that interval and ``stale_at =
fetched_at + 2 × interval``. Runnable from the UI for any partition or as a backfill (docs/operations.md).
"""

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from appt_pipeline.defs.jobs import MANUAL_PRIORITY, SCHEDULED_PRIORITY
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.defs.runs import MAX_RUNTIME_TAG, PRIORITY_TAG, WRITER_POOL, lane_config
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.pipelines.accounts import WorkspaceNotConfigured
from appt_pipeline.pipelines.availability import DEFAULT_DAYS, MAX_DAYS, AvailabilityReport, refresh_availability
from appt_pipeline.store.availability import AvailabilityStatus, availability_statuses, workspaces_due
from appt_pipeline.store.workspaces import connected_workspaces

log = logging.getLogger(__name__)

GROUP = "capacity"
AVAILABILITY_FRESH_CHECK = "availability_fresh"
#: Environment variable: minutes between scheduled refreshes (and half the staleness horizon).
REFRESH_MINUTES_ENV = "APPT_AVAILABILITY_REFRESH_MINUTES"
DEFAULT_REFRESH_MINUTES = 60
#: A refresh of two calendars takes seconds; 15 minutes is a stuck run.
AVAILABILITY_MAX_RUNTIME_S = 900


def _valid_minutes(minutes: int) -> bool:
    if minutes < 1:
        return False
    return (minutes <= 60 and 60 % minutes == 0) or (minutes % 60 == 0 and 1440 % minutes == 0)


def refresh_minutes(value: str | None = None) -> int:
    """The refresh interval in minutes: ``value``, else ``APPT_AVAILABILITY_REFRESH_MINUTES``, else 60.

    Valid: a divisor of 60 (1, 2, … 30, 60) or a whole number of hours dividing 24 (120, 180, … 1440), so
    a cron expression ticks at exactly that interval. An invalid value is logged and 60 used (the code
    location must load whatever the environment says).
    """
    raw = value if value is not None else dg.EnvVar(REFRESH_MINUTES_ENV).get_value()
    if raw is None or not str(raw).strip():
        return DEFAULT_REFRESH_MINUTES
    try:
        minutes = int(str(raw).strip())
    except ValueError:
        minutes = -1
    if not _valid_minutes(minutes):
        log.warning("%s=%r is not a divisor of 60 or a number of hours dividing 24; using %d",
                    REFRESH_MINUTES_ENV, raw, DEFAULT_REFRESH_MINUTES)
        return DEFAULT_REFRESH_MINUTES
    return minutes


def refresh_cron(minutes: int) -> str:
    """The cron expression ticking every ``minutes`` (see :func:`refresh_minutes`), at minute 0 of the hour."""
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = minutes // 60
    return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"


class AvailabilityConfig(dg.Config):
    """Options of one availability refresh (docs/rules.md §9).

    Attributes:
        days: window in days from now, 1…90 (default 30).
        refresh_interval_minutes: interval used for ``stale_at`` (2 × it); 0 = the schedule's interval
            (``APPT_AVAILABILITY_REFRESH_MINUTES``, default 60).
    """

    days: int = DEFAULT_DAYS
    refresh_interval_minutes: int = 0


_TABLE_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("calendar_key", "string"),
    dg.TableColumn("provider", "string"),
    dg.TableColumn("availability_source", "string"),
    dg.TableColumn("refreshed", "bool", description="slots replaced by this run"),
    dg.TableColumn("slots", "int", description="free slot starts stored now"),
    dg.TableColumn("requests", "int", description="provider requests of this run"),
    dg.TableColumn("stale", "bool"),
    dg.TableColumn("last_error", "string", description="masked; empty after a success"),
])


def _status_of(statuses: list[AvailabilityStatus], provider: str, key: str,
               source: str) -> AvailabilityStatus | None:
    return next((s for s in statuses if (s.calendar.provider.value, s.calendar.calendar_key,
                                         s.calendar.availability_source.value) == (provider, key, source)), None)


def report_metadata(report: AvailabilityReport, statuses: list[AvailabilityStatus], now: datetime) -> dict[str, Any]:
    """Materialization metadata: ``calendars`` (table: key, provider, source, refreshed, slots, requests,
    stale, last_error), ``slots_by_calendar`` / ``errors`` (JSON, by calendar key), the counts
    ``calendar_count``, ``refreshed``, ``failed``, ``available_slots`` (all calendars), the window and
    ``fetched_at`` / ``stale_at`` (timestamps), ``api_*`` counters, ``duration_s`` (seconds) and
    ``not_configured`` when nothing could be fetched. Never tokens or PII (errors are masked)."""
    rows = []
    slots: dict[str, int] = {}
    errors: dict[str, str] = {}
    for result in report.calendars:
        d = result.as_dict()
        status = _status_of(statuses, d["provider"], d["calendar_key"], d["availability_source"])
        stored = status.slot_count if status else 0
        slots[d["calendar_key"]] = stored
        if result.error:
            errors[d["calendar_key"]] = result.error
        rows.append(dg.TableRecord({
            "calendar_key": d["calendar_key"], "provider": d["provider"],
            "availability_source": d["availability_source"], "refreshed": result.ok, "slots": stored,
            "requests": result.requests, "stale": status.is_stale(now) if status else True,
            "last_error": result.error or "",
        }))
    metadata: dict[str, Any] = {
        "calendars": dg.MetadataValue.table(rows, schema=_TABLE_SCHEMA),
        "calendar_count": len(report.calendars),
        "refreshed": report.refreshed,
        "failed": report.failed,
        "available_slots": sum(slots.values()),
        "slots_by_calendar": dg.MetadataValue.json(slots),
        "errors": dg.MetadataValue.json(errors),
        "window_start": dg.MetadataValue.timestamp(report.window_start),
        "window_end": dg.MetadataValue.timestamp(report.window_end),
        "fetched_at": dg.MetadataValue.timestamp(report.fetched_at),
        "stale_at": dg.MetadataValue.timestamp(report.stale_at),
        **report.api,
        "duration_s": round(report.duration_s, 3),
    }
    if report.not_configured:
        metadata["not_configured"] = report.not_configured
    if report.dropped:
        metadata["dropped_calendars"] = report.dropped
    return metadata


def check_result(report: AvailabilityReport, statuses: list[AvailabilityStatus], now: datetime) -> dg.AssetCheckResult:
    """``availability_fresh`` (severity WARN): passes when no configured calendar's last refresh failed and
    none is stale at ``now``. Metadata: ``failed`` / ``stale`` (calendar keys), ``last_errors``."""
    keys = {(c.calendar.provider.value, c.calendar.calendar_key, c.calendar.availability_source.value)
            for c in report.calendars}
    mine = [s for s in statuses if (s.calendar.provider.value, s.calendar.calendar_key,
                                    s.calendar.availability_source.value) in keys]
    failed = [s.calendar.calendar_key for s in mine if s.last_error]
    stale = [s.calendar.calendar_key for s in mine if s.is_stale(now)]
    missing = [c.calendar.calendar_key for c in report.calendars if _status_of(
        mine, c.calendar.provider.value, c.calendar.calendar_key, c.calendar.availability_source.value) is None]
    return dg.AssetCheckResult(
        check_name=AVAILABILITY_FRESH_CHECK,
        asset_key="calendar_availability",
        passed=not (failed or stale or missing),
        severity=dg.AssetCheckSeverity.WARN,
        description="Every configured calendar refreshed without error and its slots are fresh (rules §9).",
        metadata={
            "failed": dg.MetadataValue.json(failed),
            "stale": dg.MetadataValue.json(sorted(set(stale + missing))),
            "last_errors": dg.MetadataValue.json({s.calendar.calendar_key: s.last_error for s in mine
                                                  if s.last_error}),
            "calendar_count": len(report.calendars),
        },
    )


availability_fresh_check = dg.AssetCheckSpec(
    AVAILABILITY_FRESH_CHECK,
    asset="calendar_availability",
    description="Warns when a configured calendar's availability refresh failed or its slots are stale "
    "(docs/rules.md §9: stale or failed availability is never used as fresh).",
)


@dg.asset(
    name="calendar_availability",
    group_name=GROUP,
    deps=["ghl_api", "calendly_api"],
    partitions_def=workspace_partitions,
    check_specs=[availability_fresh_check],
    kinds={"postgres"},
    pool=WRITER_POOL,
    description="Free slots of each configured calendar / event type for the next 30 days (rules §9), "
    "replaced per calendar in one transaction; a failed calendar keeps its slots and records `last_error`.",
)
def calendar_availability(
    context: dg.AssetExecutionContext, config: AvailabilityConfig, app_db: AppDatabase, providers: ProviderClients
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Refresh the workspace partition's availability; metadata per calendar; check ``availability_fresh``."""
    workspace_id = context.partition_key
    if not 1 <= config.days <= MAX_DAYS:
        raise dg.Failure(description=f"days must be between 1 and {MAX_DAYS}, not {config.days}")
    minutes = config.refresh_interval_minutes or refresh_minutes()
    if minutes < 1:
        raise dg.Failure(description="refresh_interval_minutes must be positive")
    engine = app_db.engine()
    now = utc_now()
    try:
        report = refresh_availability(engine, workspace_id, now=now, secret_key=providers.key(),
                                      options=providers.client_options(), days=config.days,
                                      refresh_interval_s=minutes * 60)
    except WorkspaceNotConfigured as exc:
        raise dg.Failure(description=str(exc)) from None
    with engine.connect() as conn:
        statuses = availability_statuses(conn, workspace_id)
    for result in report.calendars:
        if result.ok:
            context.log.info(f"{result.calendar.calendar_key}: {result.fetched} free slots stored "
                             f"({result.requests} requests)")
        else:
            context.log.warning(f"{result.calendar.calendar_key}: refresh failed, previous slots kept: {result.error}")
    if report.not_configured:
        context.log.warning(f"workspace {workspace_id}: {report.not_configured}")
    yield dg.MaterializeResult(metadata=report_metadata(report, statuses, now))
    yield check_result(report, statuses, now)


availability_job = dg.define_asset_job(
    "availability_job",
    selection=[calendar_availability],
    config=lane_config("availability"),
    description="Rules §9: refresh the free slots of a workspace's configured calendars from its provider.",
    tags={"appt/kind": "availability", PRIORITY_TAG: MANUAL_PRIORITY,
          MAX_RUNTIME_TAG: str(AVAILABILITY_MAX_RUNTIME_S)},
)

_MINUTES = refresh_minutes()


@dg.schedule(
    name="availability_schedule",
    job=availability_job,
    cron_schedule=refresh_cron(_MINUTES),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Every {_MINUTES} minutes ({REFRESH_MINUTES_ENV}): one availability refresh per connected "
    "workspace partition whose calendars are due.",
)
def availability_schedule(
    context: dg.ScheduleEvaluationContext, app_db: AppDatabase
) -> Iterator[dg.RunRequest] | dg.SkipReason:
    """One run per connected workspace partition that is due (never fetched, last attempt failed, or last
    success older than half the interval — so a UI refresh just before the tick is not repeated); run keys
    are deterministic per tick and workspace."""
    tick = context.scheduled_execution_time or utc_now()
    stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    minutes = refresh_minutes()
    partitions = set(context.instance.get_dynamic_partitions(workspace_partitions.name))
    with app_db.engine().connect() as conn:
        connected = [ws for ws, _ in connected_workspaces(conn) if ws in partitions]
        due = workspaces_due(conn, connected, refreshed_before=tick - timedelta(minutes=minutes / 2))
    requests = [
        dg.RunRequest(partition_key=ws, run_key=f"availability:{ws}:{stamp}",
                      run_config={"ops": {"calendar_availability": {"config": {
                          "refresh_interval_minutes": minutes}}}},
                      tags={PRIORITY_TAG: SCHEDULED_PRIORITY, "appt/due_reason": reason})
        for ws, reason in sorted(due.items())
    ]
    if not requests:
        return dg.SkipReason(f"no connected workspace among {len(connected)} is due for an availability refresh")
    return iter(requests)
