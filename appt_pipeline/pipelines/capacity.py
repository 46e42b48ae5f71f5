"""Capacity of workspaces (docs/rules.md §9): optionally refresh their availability, then compute and store.

:func:`compute_capacity` is what the ``calendar_capacity`` asset and ``appt-pipeline capacity`` run: with
``refresh_availability`` it first refreshes each workspace's free slots through the availability pipeline
(:func:`refresh_availability`, the provider clients and their shared limiter), then stores capacity for
all the workspaces in one statement (:func:`appt_pipeline.store.capacity.store_capacity`) and returns the
:class:`~appt_pipeline.domain.capacity.CapacityReport` every reader prints. :func:`day_chart_png` draws the
per-day chart (booked vs available per UTC day) the asset's metadata and the capacity page show.
"""

from __future__ import annotations

import base64
import inspect
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa

from appt_pipeline.domain.calendars import TOTAL_KEY
from appt_pipeline.domain.capacity import CapacityReport, WorkspaceCapacity
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.store.capacity import read_capacity, store_capacity


class AvailabilityRefreshUnavailable(RuntimeError):
    """The availability refresh (the ``availability`` module of this package) is not part of this build."""


@dataclass(frozen=True)
class RefreshOutcome:
    """What refreshing the availability of some workspaces did: ``refreshed`` ids, ``failed`` id → masked
    reason (a workspace whose token was revoked or that has no provider account is reported, not retried)."""

    refreshed: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


def _availability_refresher() -> Callable[..., Any]:
    try:
        from appt_pipeline.pipelines import availability
    except ImportError as exc:  # GAP until the availability branch is merged (see docs/operations.md)
        raise AvailabilityRefreshUnavailable(
            "availability refresh is not available in this build (appt_pipeline.pipelines.availability missing)"
        ) from exc
    refresher: Callable[..., Any] = availability.refresh_workspace_availability
    return refresher


async def refresh_availability(engine: sa.Engine, workspace_ids: Iterable[str], *, now: datetime, days: int = 30,
                               options: ClientOptions | None = None, secret_key: str | None = None) -> RefreshOutcome:
    """Refresh the free slots of each workspace through
    ``refresh_workspace_availability(engine, factory, ws, now=, days=)`` of the availability pipeline,
    one workspace after the other over ONE :class:`~appt_pipeline.pipelines.clients.ClientFactory` (one
    ``httpx.AsyncClient``, the shared per-account limiter). A workspace that fails as a whole (e.g. no
    provider account, token revoked) is recorded in ``failed`` (type and first line of the masked message)
    and the others go on; the refresh itself records per-calendar errors in ``calendar_availability_status``.
    ``secret_key`` (``APPT_SECRET_KEY``) is passed when the refresh takes one.

    Raises :class:`AvailabilityRefreshUnavailable` when the refresh is not part of this build.
    """
    refresher = _availability_refresher()
    takes_key = "secret_key" in inspect.signature(refresher).parameters
    opts = options or ClientOptions()
    refreshed: list[str] = []
    failed: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=opts.timeout_s) as http:
        factory = ClientFactory(http, opts)
        for ws in workspace_ids:
            extra = {"secret_key": secret_key} if takes_key else {}
            try:
                result = refresher(engine, factory, ws, now=now, days=days, **extra)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # one workspace failing must not stop the others; the reason is reported
                first = str(exc).splitlines()[0] if str(exc) else ""
                failed[ws] = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
            else:
                refreshed.append(ws)
    return RefreshOutcome(tuple(refreshed), failed)


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
