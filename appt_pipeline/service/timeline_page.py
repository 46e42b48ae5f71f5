"""The timeline page of a lead (SPEC §10): ``GET /workspaces/{workspace_id}/leads/{lead_id}/timeline``.

Server-rendered (``templates/timeline.html``) from the same history read as the API (all rows up to
:data:`~appt_pipeline.domain.history.MAX_LIMIT`): a vertical timeline, newest first, with a status badge per row,
reschedule chains drawn as links between rows (``static/timeline.js`` draws the connectors), time moves
(``Tue 14:00 → Wed 16:00``) and times in the lead's time zone, else the workspace's, else UTC, source and
attribution. The checkboxes "Show canceled" and "Active only" filter the rows in the browser without a reload,
with the API's rules (``include_canceled``, ``active_only`` at the time the page was made; each row carries
``data-status`` and ``data-active``). A lead without rows shows its rollup (``from_rollup``). Every row element
carries ``data-appointment-id`` (empty for the rollup row) and ``data-status``.

Needs a ``read`` token of the workspace (Bearer or the login form's cookie; 401 shows the login form); an unknown
lead is a 404 page. The lead's follow-up tasks (SPEC §10 tasks) are listed above the timeline, pending first.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from appt_pipeline.domain.history import (
    MAX_LIMIT,
    HistoryFilters,
    display_zone,
    format_local,
    format_move,
    is_active,
)
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.service.access import PageRead
from appt_pipeline.service.common import LeadIdPath, ServiceError, WorkspaceIdPath, error_responses
from appt_pipeline.service.reads import fetch_history, fetch_tasks
from appt_pipeline.service.web import render_page
from appt_pipeline.store.history import LeadHistory

STATUS_LABELS = {Status.CONFIRMED: "Confirmed", Status.CANCELED: "Canceled", Status.RESCHEDULED: "Rescheduled",
                 Status.SHOWED: "Showed", Status.NO_SHOW: "No-show"}
SOURCE_LABELS = {Source.WEBHOOK: "Webhook", Source.RECONCILE_CRON: "Reconciliation", Source.BACKFILL: "Backfill",
                 Source.AUTO_BOOK: "Auto-book", Source.MANUAL: "Manual", Source.MIGRATION: "Migration"}
PROVIDER_LABELS = {Provider.GHL: "GoHighLevel", Provider.CALENDLY: "Calendly"}


@dataclass(frozen=True)
class Label:
    """Text shown, with a longer ``title`` (tooltip)."""

    text: str
    title: str = ""


@dataclass(frozen=True)
class RowLink:
    """A link to another row of the chain: its id, its start time as shown, whether it is on this page."""

    id: str
    when: str
    on_page: bool


@dataclass(frozen=True)
class ChangeView:
    """One recorded change, as shown: a status step and / or a time move, with its source and time."""

    status_text: str | None
    move_text: str | None
    source: str
    observed: str


@dataclass
class TimelineRow:
    """One row of the timeline (one appointment, or the rollup of a lead without rows)."""

    id: str
    status: str
    status_label: str
    active: bool
    day: str
    date: str
    time: str
    when_title: str
    provider: str
    source: str
    last_source: str | None
    attribution: Label | None
    provider_key: Label | None
    timezone: str | None
    canceled: str | None
    cancel_reason: str | None
    predecessor: RowLink | None = None
    successor: RowLink | None = None
    chain_move: str | None = None
    moves: list[ChangeView] = field(default_factory=list)
    changes: list[ChangeView] = field(default_factory=list)
    now_before: bool = False
    from_rollup: bool = False


@dataclass
class TimelineView:
    """What ``timeline.html`` shows. ``counts``: ``(status, label, rows)`` of the statuses present."""

    workspace_id: str
    lead_id: str
    zone_name: str
    zone_source: str
    from_rollup: bool
    rows: list[TimelineRow]
    counts: list[tuple[str, str, int]]
    truncated: bool
    active_count: int
    generated: str


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _last_segment(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri


def _attribution(item: Mapping[str, Any]) -> Label | None:
    if item.get("ghl_calendar_id"):
        return Label(f"Calendar {item['ghl_calendar_id']}", "GHL calendar id (attribution)")
    if item.get("calendly_event_type_uri"):
        uri = item["calendly_event_type_uri"]
        return Label(f"Event type {_last_segment(uri)}", uri)
    return None


def _provider_key(item: Mapping[str, Any]) -> Label | None:
    if item.get("ghl_appointment_id"):
        return Label(f"Appointment {item['ghl_appointment_id']}", "GHL appointment id")
    if item.get("calendly_invitee_uri"):
        uri = item["calendly_invitee_uri"]
        return Label(f"Invitee {_last_segment(uri)}", uri)
    return None


def _label(labels: Mapping[Any, str], value: str | None, default: str = "Unknown") -> str:
    if value is None:
        return default
    for key, text in labels.items():
        if key == value:
            return text
    return value


def _changes(item: Mapping[str, Any], zone: ZoneInfo) -> list[ChangeView]:
    out = []
    for change in item.get("changes") or []:
        before, after = change.get("from_status"), change.get("to_status")
        status_text = None
        if before is None:
            status_text = f"Recorded as {_label(STATUS_LABELS, after)}"
        elif before != after:
            status_text = f"{_label(STATUS_LABELS, before)} → {_label(STATUS_LABELS, after)}"
        t0, t1 = _time(change.get("from_start_at")), _time(change.get("to_start_at"))
        move_text = format_move(t0, t1, zone) if t0 is not None and t1 is not None and t0 != t1 else None
        observed = _time(change.get("observed_at"))
        out.append(ChangeView(status_text, move_text, _label(SOURCE_LABELS, change.get("source")),
                              format_local(observed, zone, with_date=True) if observed else ""))
    return out


def build_timeline(history: LeadHistory, now: datetime) -> TimelineView:
    """The view of ``history`` at ``now`` (UTC): rows in the history's order, chains resolved to on-page links,
    time moves and changes formatted in the page's zone (``domain.history.display_zone``)."""
    zone, why = display_zone(history.lead_timezone, history.workspace_timezone)
    items = history.items
    starts = {item["id"]: _time(item.get("start_at")) for item in items if item.get("id")}
    rows: list[TimelineRow] = []
    counts: dict[str, int] = {s.value: 0 for s in Status}
    now_placed = False
    for item in items:
        start, end = _time(item.get("start_at")), _time(item.get("end_at"))
        status = item.get("status")
        if status in counts:
            counts[status] += 1
        if start is not None:
            local = start.astimezone(zone)
            day, date = f"{local:%a}", f"{local.day} {local:%b %Y}"
            time = f"{local:%H:%M}" + (f"–{end.astimezone(zone):%H:%M}" if end is not None else "")
            when_title = f"{local:%A %d %B %Y %H:%M %Z} ({item['start_at']})"
        else:
            day, date, time, when_title = "—", "no start time", "", "the provider gave no start time"
        canceled = _time(item.get("canceled_at"))
        changes = _changes(item, zone)
        row = TimelineRow(
            id=item.get("id") or "", status=status or "", status_label=_label(STATUS_LABELS, status),
            active=is_active(status, start, now), day=day, date=date, time=time, when_title=when_title,
            provider=_label(PROVIDER_LABELS, item.get("provider")), source=_label(SOURCE_LABELS, item.get("source")),
            last_source=(_label(SOURCE_LABELS, item.get("last_source"))
                         if item.get("last_source") and item.get("last_source") != item.get("source") else None),
            attribution=_attribution(item), provider_key=_provider_key(item), timezone=item.get("timezone"),
            canceled=format_local(canceled, zone, with_date=True) if canceled else None,
            cancel_reason=item.get("cancel_reason"), from_rollup=history.from_rollup,
            moves=[c for c in changes if c.move_text], changes=changes,
        )
        for attr, key in (("predecessor", "rescheduled_from_id"), ("successor", "rescheduled_to_id")):
            other = item.get(key)
            if other:
                other_start = starts.get(other)
                setattr(row, attr, RowLink(other, format_local(other_start, zone, with_date=True)
                                           if other_start else "another time", other in starts))
        pred = item.get("rescheduled_from_id")
        if pred and start is not None and starts.get(pred) is not None:
            row.chain_move = format_move(starts[pred], start, zone)  # type: ignore[arg-type]
        if not now_placed and start is not None and start < now:
            row.now_before = now_placed = True
        rows.append(row)
    return TimelineView(
        workspace_id=history.workspace_id, lead_id=history.lead_id, zone_name=str(zone.key), zone_source=why,
        from_rollup=history.from_rollup, rows=rows,
        counts=[(s.value, STATUS_LABELS[s], counts[s.value]) for s in Status if counts[s.value]],
        truncated=len(items) >= MAX_LIMIT,
        active_count=sum(r.active for r in rows), generated=format_local(now, zone, with_date=True),
    )


TASK_LABELS = {"meeting-canceled": "Meeting canceled", "meeting-rescheduled": "Meeting rescheduled"}
TASK_STATUS_LABELS = {"pending": "Pending", "completed": "Completed", "skipped": "Skipped",
                      "cancelled": "Cancelled (booked again)"}


@dataclass(frozen=True)
class TaskView:
    """A follow-up task as the timeline shows it (times in the page's zone)."""

    id: str
    type: str
    type_label: str
    status: str
    status_label: str
    is_urgent: bool
    message: str
    due: str
    ended: str | None


def task_views(tasks: list[Mapping[str, Any]], zone: ZoneInfo) -> list[TaskView]:
    """The tasks of ``GET …/tasks`` (SPEC §10) for the page, in the API's order (pending first)."""
    views = []
    for task in tasks:
        due, done = _time(task.get("due_date")), _time(task.get("completed_at"))
        views.append(TaskView(
            id=str(task["id"]), type=task["type"], type_label=TASK_LABELS.get(task["type"], task["type"]),
            status=task["status"], status_label=TASK_STATUS_LABELS.get(task["status"], task["status"]),
            is_urgent=bool(task.get("is_urgent")), message=task.get("suggested_message") or "",
            due=format_local(due, zone, with_date=True) if due else "—",
            ended=f"completed {format_local(done, zone, with_date=True)}" if done else None))
    return views


router = APIRouter(tags=["pages"])


@router.get("/workspaces/{workspace_id}/leads/{lead_id}/timeline", response_class=HTMLResponse,
            summary="A lead's appointment timeline, as an HTML page (SPEC §10)",
            responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"},
                       **error_responses(401, 403, 404, 503, media_type="text/html")})
async def lead_timeline(request: Request, grant: PageRead, workspace_id: WorkspaceIdPath,
                        lead_id: LeadIdPath) -> Response:
    """The timeline page (see the module doc). 401 answers with the login form."""
    now = utc_now()
    history = await fetch_history(request.app.state.service.db, grant.workspace_id, lead_id,
                                  HistoryFilters(limit=MAX_LIMIT), now)
    if history is None:
        raise ServiceError(404, "unknown_lead", detail=f"Workspace {grant.workspace_id} has no lead {lead_id!r}.")
    tasks_json = await fetch_tasks(request.app.state.service.db, grant.workspace_id, lead_id)
    view = build_timeline(history, now)
    zone, _ = display_zone(history.lead_timezone, history.workspace_timezone)
    tasks = task_views(orjson.loads(tasks_json or "[]"), zone)
    return render_page(request, "timeline.html", {"view": view, "tasks": tasks}, grant=grant)
