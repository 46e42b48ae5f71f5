"""Calendar capacity for analysts (SPEC §9, §10 "Access"): the JSON API and the HTML page.

::

    GET /api/v1/workspaces/{workspace_id}/capacity?days=N     JSON (the ``appt-pipeline capacity --json`` shape)
    GET /workspaces/{workspace_id}/capacity?days=N            the capacity page (table + per-day chart)

Both need a ``read`` token of the workspace (:mod:`appt_pipeline.service.access`: Bearer, or for the page the
login form's cookie; 401 / 403). ``days`` is the window length, 1…90 (default 30; outside → 422). The numbers are
computed when asked, from the stored history and the stored free slots (rules §9), by the same store read as
the CLI and the Dagster asset, so the page, the JSON, ``appt-pipeline capacity --json`` and the asset's metadata
always agree. The availability used is reported as it is: a stale or failed calendar is flagged, never shown as
fresh.

The page is server-rendered (``templates/capacity.html``): a table per calendar key and the workspace total, and
a per-day stacked bar chart (inline SVG, no script) of booked vs available slots of the total.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from appt_pipeline.domain.calendars import TOTAL_KEY
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.service.access import ApiRead, PageRead
from appt_pipeline.service.common import NO_STORE, ServiceError, WorkspaceIdPath, error_responses
from appt_pipeline.service.reads import fetch_capacity
from appt_pipeline.service.web import render_page

DEFAULT_DAYS = 30
MAX_DAYS = 90


class CapacityQuery(BaseModel):
    """The query of both capacity routes; an unknown parameter is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    days: int = Field(DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="window length in days from now, 1…90 "
                                                                   "(default 30)")


class CapacityCalendar(BaseModel):
    """One configured calendar / event type (SPEC §9 calendar keys). ``booked_pct`` in [0, 1] or null when the
    calendar has neither bookings nor free slots in the window; ``stale`` / ``last_error``: the availability used."""

    calendar_key: str
    provider: str | None
    availability_source: str | None
    booked_slots: int
    available_slots: int
    total_slots: int
    booked_pct: float | None
    stale: bool
    last_error: str | None


class CapacityTotal(BaseModel):
    """The workspace total (``*``): every CONFIRMED booking in the window, attributed or not (the unattributed
    ones also counted apart), against the union of the calendars' free slots."""

    booked_slots: int
    available_slots: int
    total_slots: int
    booked_pct: float | None
    unattributed_booked_slots: int


class CapacityDay(BaseModel):
    """Booked and available slots of one calendar key (or ``*``) on one UTC day of the window."""

    date: date
    calendar_key: str
    booked_slots: int
    available_slots: int


class WorkspaceCapacity(BaseModel):
    """Capacity of one workspace; ``calendars`` is empty for a workspace with no configured calendar."""

    workspace_id: str
    calendars: list[CapacityCalendar]
    total: CapacityTotal
    days: list[CapacityDay]


class CapacityReport(BaseModel):
    """The window [``window_start``, ``window_end``) (ISO-8601 UTC) and its capacity per workspace."""

    window_days: int
    window_start: str
    window_end: str
    workspaces: list[WorkspaceCapacity]


@dataclass(frozen=True)
class Bar:
    """One day of the chart: SVG geometry (user units) and the numbers it shows."""

    day: str
    label: str
    x: float
    width: float
    booked_y: float
    booked_h: float
    available_y: float
    available_h: float
    booked: int
    available: int


@dataclass(frozen=True)
class Chart:
    """The per-day stacked bar chart of the total: bars, the y-axis maximum and its tick lines."""

    width: int
    height: int
    top: int
    plot_height: int
    left: int
    bars: list[Bar]
    y_max: int
    ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]


def _when(iso: str) -> str:
    """``2026-12-04T21:02:27.776Z`` as ``2026-12-04 21:02 UTC``."""
    return f"{iso[:10]} {iso[11:16]} UTC"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k that is ≥ ``value`` (≥ 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def build_chart(days: Sequence[Mapping[str, Any]], *, width: int = 960, height: int = 260) -> Chart:
    """The chart of the ``*`` rows of ``days`` (one bar per UTC day, in date order): booked at the bottom,
    available on top, scaled to a rounded maximum of booked + available."""
    rows = sorted((d for d in days if d["calendar_key"] == TOTAL_KEY), key=lambda d: str(d["date"]))
    left, top, bottom = 44, 12, 28
    plot_w, plot_h = width - left - 8, height - top - bottom
    y_max = _nice_max(max((int(d["booked_slots"]) + int(d["available_slots"]) for d in rows), default=0))
    slot = plot_w / max(len(rows), 1)
    bars, labels = [], []
    for i, d in enumerate(rows):
        booked, available = int(d["booked_slots"]), int(d["available_slots"])
        bh, ah = plot_h * booked / y_max, plot_h * available / y_max
        x = left + i * slot + slot * 0.12
        day = str(d["date"])
        bars.append(Bar(day=day, label=date.fromisoformat(day).strftime("%a %d %b"), x=round(x, 2),
                        width=round(slot * 0.76, 2), booked_y=round(top + plot_h - bh, 2), booked_h=round(bh, 2),
                        available_y=round(top + plot_h - bh - ah, 2), available_h=round(ah, 2), booked=booked,
                        available=available))
        if i % 7 == 0 or len(rows) <= 10:
            labels.append((round(x + slot * 0.38, 2), date.fromisoformat(day).strftime("%d %b")))
    ticks = [(round(top + plot_h - plot_h * f, 2), f"{y_max * f:g}") for f in (0, 0.25, 0.5, 0.75, 1)]
    return Chart(width=width, height=height, top=top, plot_height=plot_h, left=left, bars=bars, y_max=y_max,
                 ticks=ticks, x_labels=labels)


router = APIRouter(tags=["capacity"])
_ERRORS = error_responses(401, 403, 503)


async def _report(request: Request, workspace_id: str, days: int) -> dict[str, Any]:
    report = await fetch_capacity(request.app.state.service.db, workspace_id, days, utc_now())
    if report is None:  # the token's workspace was deleted after the access check
        raise ServiceError(403, "wrong_workspace")
    return report


@router.get("/api/v1/workspaces/{workspace_id}/capacity", response_class=Response,
            summary="Calendar capacity of the workspace for the next N days (SPEC §9)",
            responses={200: {"model": CapacityReport, "description": "the capacity"}, **_ERRORS})
async def workspace_capacity(request: Request, grant: ApiRead, workspace_id: WorkspaceIdPath,
                             query: Annotated[CapacityQuery, Query()]) -> Response:
    """Per calendar key and the total: booked, available and total slots, ``booked_pct``, the staleness of the
    availability used; per UTC day of the window. Same shape as ``appt-pipeline capacity --json``."""
    report = await _report(request, grant.workspace_id, query.days)
    return Response(orjson.dumps(report), media_type="application/json", headers=NO_STORE)


@router.get("/workspaces/{workspace_id}/capacity", response_class=HTMLResponse, tags=["pages"],
            summary="The workspace's calendar capacity, as an HTML page (SPEC §9)",
            responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"},
                       **error_responses(401, 403, 503, media_type="text/html")})
async def capacity_page(request: Request, grant: PageRead, workspace_id: WorkspaceIdPath,
                        query: Annotated[CapacityQuery, Query()]) -> Response:
    """The capacity page (see the module doc). 401 answers with the login form."""
    report = await _report(request, grant.workspace_id, query.days)
    ws = report["workspaces"][0]
    context = {
        "report": report, "ws": ws, "chart": build_chart(ws["days"]), "pct": _pct,
        "window": (_when(report["window_start"]), _when(report["window_end"])),
        "stale_calendars": [c for c in ws["calendars"] if c["stale"] or c["last_error"]],
        "windows": [7, 14, 30, 60, 90], "days": query.days,
    }
    return render_page(request, "capacity.html", context, grant=grant)
