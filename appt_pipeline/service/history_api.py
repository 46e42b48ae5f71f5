"""The history API (SPEC §10): a lead's appointments and its booking status, JSON, ``read`` scope.

::

    GET /api/v1/workspaces/{workspace_id}/leads/{lead_id}/appointments?include_canceled=&active_only=&limit=
    GET /api/v1/workspaces/{workspace_id}/leads/{lead_id}/booking-status

Both need ``Authorization: Bearer <token>`` of the workspace with scope ``read``
(:mod:`appt_pipeline.service.access`: 401 / 403), answer 404 ``unknown_lead`` for a lead that is not in the
workspace, 422 for a malformed query, 503 when the database is unavailable. Each is one statement of
:mod:`appt_pipeline.store.history`; the body of ``…/appointments`` is the JSON PostgreSQL built.
"""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from appt_pipeline.domain.history import DEFAULT_LIMIT, MAX_LIMIT, HistoryFilters
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.service.access import ApiRead
from appt_pipeline.service.common import NO_STORE, LeadIdPath, ServiceError, WorkspaceIdPath, error_responses
from appt_pipeline.service.reads import fetch_booking_status, fetch_history

#: A boolean query value as SPEC §10 spells it.
QueryBool = Literal["true", "false", "1", "0"]
_TRUE = frozenset({"true", "1"})


class HistoryChange(BaseModel):
    """One status or start-time change of an appointment (``appointment_status_changes``, oldest first).
    ``from_status`` is null on creation; ``from_start_at`` / ``to_start_at`` are set when the start moved."""

    from_status: Status | None
    to_status: Status
    from_start_at: datetime | None
    to_start_at: datetime | None
    source: Source
    observed_at: datetime


class HistoryItem(BaseModel):
    """One appointment of the lead (SPEC §10). Times are ISO-8601 UTC. ``rescheduled_from_id`` /
    ``rescheduled_to_id``: predecessor and successor in a reschedule chain. In a ``from_rollup`` answer the one
    item comes from the lead's rollup columns: ``id`` and what the lead does not keep are null."""

    id: UUID | None
    provider: Provider | None
    status: Status | None
    start_at: datetime | None
    end_at: datetime | None
    timezone: str | None
    source: Source | None
    last_source: Source | None
    ghl_appointment_id: str | None
    calendly_invitee_uri: str | None
    ghl_calendar_id: str | None
    calendly_event_type_uri: str | None
    rescheduled_from_id: UUID | None
    rescheduled_to_id: UUID | None
    canceled_at: datetime | None
    cancel_reason: str | None
    changes: list[HistoryChange]


class LeadAppointments(BaseModel):
    """``GET …/appointments``: the lead's rows newest first (by ``coalesce(start_at, created_at)``).
    ``from_rollup``: the lead has no appointment rows; ``appointments`` then holds at most its rollup."""

    workspace_id: str
    lead_id: str
    from_rollup: bool
    appointments: list[HistoryItem]


class LeadRollupColumns(BaseModel):
    """The lead's stored rollup (SPEC §3): lower-case status and source strings, times ISO-8601 UTC."""

    ghl_appointment_id: str | None
    calendly_invitee_uri: str | None
    calendly_scheduled_event_uri: str | None
    appointment_booked_at: datetime | None
    appointment_start_at: datetime | None
    appointment_end_at: datetime | None
    appointment_status: str | None
    appointment_canceled_at: datetime | None
    appointment_provider: Provider | None
    appointment_source: str | None
    booked_slot: str | None


class StatusCounts(BaseModel):
    """Appointment rows of the lead by status."""

    CONFIRMED: int = Field(ge=0)
    CANCELED: int = Field(ge=0)
    RESCHEDULED: int = Field(ge=0)
    SHOWED: int = Field(ge=0)
    NO_SHOW: int = Field(ge=0)


class BookingStatus(BaseModel):
    """``GET …/booking-status`` (the original's booking-status read): the primary now (SPEC §3), the stored
    rollup, counts by status; ``has_appointment``: the lead records a booking (booked time or a provider id, also
    when canceled); ``appointment_id``: its GHL id, else Calendly event URI, else invitee URI."""

    workspace_id: str
    lead_id: str
    primary: HistoryItem | None
    rollup: LeadRollupColumns
    counts: StatusCounts
    appointment_count: int = Field(ge=0)
    has_history: bool
    has_appointment: bool
    appointment_id: str | None


router = APIRouter(prefix="/api/v1", tags=["history"])

_ERRORS = error_responses(401, 403, 404, 503)


class HistoryQuery(BaseModel):
    """The query of ``GET …/appointments``; an unknown parameter is refused (422), so a misspelt filter never
    silently answers unfiltered."""

    model_config = ConfigDict(extra="forbid")

    include_canceled: QueryBool = Field("true", description="keep CANCELED rows (default true)")
    active_only: QueryBool = Field("false", description="only CONFIRMED rows starting now or later, or without a "
                                                        "start (default false)")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"at most this many rows (default "
                                                                      f"{DEFAULT_LIMIT})")


@router.get("/workspaces/{workspace_id}/leads/{lead_id}/appointments", response_class=Response,
            summary="A lead's appointment history (SPEC §10)",
            responses={200: {"model": LeadAppointments, "description": "the history"}, **_ERRORS})
async def lead_appointments(request: Request, grant: ApiRead, workspace_id: WorkspaceIdPath, lead_id: LeadIdPath,
                            query: Annotated[HistoryQuery, Query()]) -> Response:
    """The lead's rows, newest first, each with its reschedule predecessor / successor, status and time changes,
    sources and attribution; a lead without rows answers with its rollup (``from_rollup``)."""
    filters = HistoryFilters(include_canceled=query.include_canceled in _TRUE,
                             active_only=query.active_only in _TRUE, limit=query.limit)
    history = await fetch_history(request.app.state.service.db, grant.workspace_id, lead_id, filters, utc_now())
    if history is None:
        raise ServiceError(404, "unknown_lead")
    return Response(history.json(), media_type="application/json", headers=NO_STORE)


@router.get("/workspaces/{workspace_id}/leads/{lead_id}/booking-status", response_class=Response,
            summary="A lead's booking status: primary, rollup, counts (SPEC §10)",
            responses={200: {"model": BookingStatus, "description": "the booking status"}, **_ERRORS})
async def lead_booking_status(request: Request, grant: ApiRead, workspace_id: WorkspaceIdPath,
                              lead_id: LeadIdPath) -> Response:
    """The primary appointment now, the lead's stored rollup and its rows counted by status."""
    status = await fetch_booking_status(request.app.state.service.db, grant.workspace_id, lead_id, utc_now())
    if status is None:
        raise ServiceError(404, "unknown_lead")
    return Response(orjson.dumps(status), media_type="application/json", headers=NO_STORE)
