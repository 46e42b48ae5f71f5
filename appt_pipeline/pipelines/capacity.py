"""Capacity of workspaces (docs/rules.md §9): optionally refresh their availability, then compute and store.

:func:`compute_capacity` is what the ``calendar_capacity`` asset and ``appt-pipeline capacity`` run: it stores
capacity for all the given workspaces in one statement (:func:`appt_pipeline.store.capacity.store_capacity`) and
returns the :class:`~appt_pipeline.domain.capacity.CapacityReport` every reader prints. The command's
``--refresh-availability`` first refreshes the free slots through the availability pipeline
(:func:`refresh_workspaces_availability`: the provider clients and their shared limiter).
:func:`day_chart_png` draws the per-day chart (booked vs available per UTC day) the asset's metadata and the
capacity page show.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import sqlalchemy as sa

from appt_pipeline.domain.calendars import TOTAL_KEY
from appt_pipeline.domain.capacity import CapacityReport, WorkspaceCapacity
from appt_pipeline.pipelines.availability import refresh_workspace_availability
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.store.capacity import read_capacity, store_capacity


@dataclass(frozen=True)
class RefreshOutcome:
    """What refreshing the availability of some workspaces did.

    ``refreshed``: ids whose calendars were all refreshed; ``skipped``: id → why nothing could be fetched (no
    configured calendar, not connected); ``calendar_errors``: id → ``"<calendar key>: <masked error>"`` of the
    calendars that failed (their previous slots kept, the error in ``last_error``); ``failed``: id → the error
    that stopped the workspace's refresh as a whole. Nothing is retried in a loop.
    """

    refreshed: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    calendar_errors: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


async def refresh_workspaces_availability(engine: sa.Engine, workspace_ids: Iterable[str], *, now: datetime,
                                          days: int = 30, options: ClientOptions | None = None,
                                          secret_key: str | None = None) -> RefreshOutcome:
    """Refresh the free slots of each workspace (:func:`~appt_pipeline.pipelines.availability.
    refresh_workspace_availability`, rules §9), one workspace after the other over ONE
    :class:`~appt_pipeline.pipelines.clients.ClientFactory` (one ``httpx.AsyncClient``, the shared per-account
    limiter). ``secret_key`` is ``APPT_SECRET_KEY`` (decrypts the provider tokens); ``days`` 1…90. A workspace
    that fails as a whole is recorded (type and first line of the masked message) and the others go on."""
    opts = options or ClientOptions()
    refreshed: list[str] = []
    skipped: dict[str, str] = {}
    calendar_errors: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=opts.timeout_s) as http:
        factory = ClientFactory(http, opts, engine)
        for ws in workspace_ids:
            try:
                report = await refresh_workspace_availability(engine, factory, ws, now=now, secret_key=secret_key,
                                                              days=days)
            except Exception as exc:  # one workspace failing must not stop the others; the reason is reported
                first = str(exc).splitlines()[0] if str(exc) else ""
                failed[ws] = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
                continue
            if report.not_configured:
                skipped[ws] = report.not_configured
                continue
            errors = [f"{c.calendar.calendar_key}: {c.error or c.error_kind}" for c in report.calendars if not c.ok]
            if errors:
                calendar_errors[ws] = errors
            else:
                refreshed.append(ws)
    return RefreshOutcome(tuple(refreshed), skipped, calendar_errors, failed)


def compute_capacity(engine: sa.Engine, workspace_ids: Iterable[str], *, days: int | None, now: datetime,
                     store: bool = True) -> CapacityReport:
    """Capacity of ``workspace_ids`` for [now, now + days) (days clamped 1…90) from the stored slots and
    appointments, stored (``store``, one transaction) or only read. Raises
    :class:`~appt_pipeline.store.capacity.UnknownWorkspaceError` (nothing written) for an unknown workspace."""
    ids = list(workspace_ids)
    if store:
        return store_capacity(engine, ids, days=days, now=now)
    return read_capacity(engine, ids, days=days, now=now)


def day_chart_png(report: CapacityReport, workspace: WorkspaceCapacity, *, calendar_key: str = TOTAL_KEY,
                  dpi: int = 80) -> bytes:
    """A PNG bar chart of booked (stacked under) available slots per UTC day of the window for
    ``calendar_key`` (default the workspace total), with booked % on a second axis. Matplotlib, Agg, no
    pyplot state (safe in threads)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    days = workspace.days_of(calendar_key)
    labels = [d.day.strftime("%m-%d") for d in days]
    booked = [d.booked_slots for d in days]
    available = [d.available_slots for d in days]
    x = list(range(len(days)))
    fig = Figure(figsize=(10, 3.2), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(x, booked, color="#d9534f", label="booked")
    ax.bar(x, available, bottom=booked, color="#5cb85c", label="available")
    ax.set_xticks(x, labels, rotation=60, fontsize=7)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("slots")
    pct = [b / (b + a) if b + a else None for b, a in zip(booked, available, strict=True)]
    ax2 = ax.twinx()
    ax2.plot([i for i, p in zip(x, pct, strict=True) if p is not None], [p for p in pct if p is not None],
             color="#333333", marker=".", linewidth=1, label="booked %")
    ax2.set_ylim(0, 1)
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    key = "all calendars" if calendar_key == TOTAL_KEY else calendar_key
    ax.set_title(f"{workspace.workspace_id} ({key}): booked vs available per UTC day, "
                 f"{report.window_start:%Y-%m-%d %H:%M} + {report.window_days} d", fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncols=3)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def day_chart_markdown(report: CapacityReport, workspace: WorkspaceCapacity) -> str:
    """Markdown showing :func:`day_chart_png` inline (a ``data:image/png;base64`` URI), as the Dagster UI
    renders ``MetadataValue.md``."""
    data = base64.b64encode(day_chart_png(report, workspace)).decode()
    return f"![booked vs available per UTC day](data:image/png;base64,{data})"
