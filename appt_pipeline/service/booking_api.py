"""The booking API (SPEC §8, §10): book a slot for a lead, once per ``Idempotency-Key``, ``book`` scope.

::

    POST /api/v1/workspaces/{workspace_id}/leads/{lead_id}/bookings
    Idempotency-Key: <1…255 printable characters, unique per workspace for 30 days>
    {"slot_start": "2030-03-05T15:00:00Z", "availability_source": "DEFAULT", "source": "AUTO_BOOK",
     "invitee_name": "Ada Lovelace", "invitee_timezone": "Europe/London"}

Answers (the work is :func:`appt_pipeline.pipelines.booking.book`):

* **201** booked now, **200** the same key again (a replay; also when an ``unknown`` booking is resolved as
  booked): ``{"state": "booked", "idempotency_key", "appointment": {…the history item of SPEC §10…}}``;
* **202** ``{"state": "unknown", "idempotency_key", "appointment": null, "reason"}``: the provider did not
  answer after the POST; send the same request again to have the lead reconciled (never re-sent);
* **409** a refusal ``{"reason", "state": "refused", "idempotency_key", "message"}`` — ``already_booked``,
  ``auto_book_disabled``, ``slot_unavailable``, ``provider_refused`` (``message``: the provider's, masked),
  ``idempotency_key_reused``, ``not_booked``;
* **404** ``unknown_lead``; **400** a body that cannot be decoded; **422** a malformed request (``{"detail": …}``
  for the body / header shape, ``{"error": <reason>}`` for values the booking refuses to carry out:
  ``invalid_slot``, ``slot_in_past``, ``lead_without_contact``, ``lead_without_email``, ``calendar_not_configured``,
  ``provider_not_configured``, ``invalid_timezone``, …); **503** ``provider_unavailable`` (nothing was booked, the
  request stays pending: retry with the same key), ``request_in_progress`` (a request with the same key is still
  being worked) or ``database_unavailable``, with ``Retry-After``.
"""

import asyncio
from typing import Annotated, Any, Literal

import httpx
import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from appt_pipeline.domain.booking import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_INVITEE_NAME_CHARS,
    BookingInputError,
    BookingState,
)
from appt_pipeline.domain.vocab import AvailabilitySource
from appt_pipeline.pipelines.booking import BookingBusy, BookingResult, book
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.service.access import ApiBook
from appt_pipeline.service.common import NO_STORE, LeadIdPath, ServiceError, WorkspaceIdPath, error_responses
from appt_pipeline.service.db import DatabaseUnavailable
from appt_pipeline.service.history_api import HistoryItem
from appt_pipeline.store.history import read_appointment_item


class BookingBody(BaseModel):
    """The booking request (SPEC §10). ``slot_start``: ISO-8601 with an offset, one of the calendar's free slots;
    ``invitee_name`` goes to Calendly only and is never stored."""

    model_config = ConfigDict(extra="forbid")

    slot_start: str = Field(min_length=1, max_length=64, description="ISO-8601 date-time with an offset, e.g. "
                                                                     "`2030-03-05T15:00:00Z`; must lie in the future")
    availability_source: AvailabilitySource = Field(AvailabilitySource.DEFAULT, description="which calendar: "
                                                    "DEFAULT, or DIRECT_BOOK (the direct-book one when configured)")
    source: Literal["AUTO_BOOK", "MANUAL"] = Field("AUTO_BOOK", description="the new appointment's source; "
                                                   "AUTO_BOOK obeys the workspace's and the lead's auto-book switch")
    invitee_name: str | None = Field(None, max_length=MAX_INVITEE_NAME_CHARS,
                                     description="Calendly invitee name (default `Lead`); never stored")
    invitee_timezone: str | None = Field(None, max_length=64, description="IANA time zone for Calendly (default "
                                                                          "the lead's, else the workspace's, else UTC)")


class BookingAnswer(BaseModel):
    """201 / 200 / 202: the request's state and, when booked, the appointment (a SPEC §10 history item)."""

    state: Literal["booked", "unknown"]
    idempotency_key: str
    appointment: HistoryItem | None
    reason: str | None = None


class BookingRefusal(BaseModel):
    """409: why the booking was refused (SPEC §8)."""

    reason: str
    state: Literal["refused"]
    idempotency_key: str
    message: str | None = None


class BookingError(BaseModel):
    """422 / 503 answers of the booking route: ``error`` is a reason code."""

    error: str
    state: str | None = None
    idempotency_key: str | None = None


router = APIRouter(prefix="/api/v1", tags=["booking"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": BookingAnswer, "description": "booked now"},
    200: {"model": BookingAnswer, "description": "a replay of the key: the first answer (booked)"},
    202: {"model": BookingAnswer, "description": "`unknown`: the provider may have booked; send the same request "
                                                 "again to have the lead reconciled"},
    400: {"description": "the body cannot be decoded (not UTF-8 / not JSON)"},
    409: {"model": BookingRefusal, "description": "refused: `already_booked`, `auto_book_disabled`, "
                                                  "`slot_unavailable`, `provider_refused`, `idempotency_key_reused`, "
                                                  "`not_booked`"},
    422: {"description": "malformed request (`detail`), or `error`: `invalid_slot`, `slot_in_past`, "
                         "`lead_without_contact`, `lead_without_email`, `calendar_not_configured`, "
                         "`provider_not_configured`, `invalid_timezone`, `invalid_idempotency_key`, …"},
    **error_responses(401, 403, 404),
    503: {"model": BookingError, "description": "`provider_unavailable` (nothing booked, retry with the same key), "
                                                "`request_in_progress`, `database_unavailable`",
          "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}},
}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json",
                    headers={**NO_STORE, **(headers or {})})


@router.post("/workspaces/{workspace_id}/leads/{lead_id}/bookings", response_class=Response, status_code=201,
             summary="Book a slot for the lead, once per Idempotency-Key (SPEC §8)", responses=_RESPONSES)
async def create_booking(
    request: Request,
    grant: ApiBook,
    workspace_id: WorkspaceIdPath,
    lead_id: LeadIdPath,
    body: Annotated[BookingBody, Body()],
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1,
                                           max_length=MAX_IDEMPOTENCY_KEY_CHARS,
                                           description="the request's key (unique per workspace for 30 days): "
                                                       "the same key always gets the first answer")],
) -> Response:
    """Book through the workspace's provider (GHL appointment / Calendly invitee); see the module doc."""
    service = request.app.state.service
    retry_after = {"Retry-After": str(service.settings.retry_after_s)}
    if "\x00" in lead_id:
        raise ServiceError(404, "unknown_lead")
    engine = service.sql_engine()
    try:
        async with httpx.AsyncClient() as http:
            factory = ClientFactory(http, ClientOptions(timeout_s=service.settings.provider_timeout_s), engine)
            result = await book(engine, factory, grant.workspace_id, lead_id, body.slot_start,
                                availability_source=body.availability_source, source=body.source,
                                idempotency_key=idempotency_key, invitee_name=body.invitee_name,
                                invitee_timezone=body.invitee_timezone, secret_key=service.settings.secret_key)
    except BookingInputError as exc:
        if exc.reason in ("unknown_lead", "unknown_workspace"):
            raise ServiceError(404, "unknown_lead") from None
        return _json(422, {"error": exc.reason})
    except BookingBusy:
        return _json(503, {"error": "request_in_progress", "idempotency_key": idempotency_key}, retry_after)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        raise DatabaseUnavailable("database_error") from None
    return await _answer(engine, result, retry_after)


async def _answer(engine: sa.Engine, result: BookingResult, retry_after: dict[str, str]) -> Response:
    key = result.idempotency_key
    if result.state is BookingState.BOOKED:
        def item() -> dict[str, Any] | None:
            with engine.connect() as conn:
                return read_appointment_item(conn, result.appointment_id) if result.appointment_id else None

        appointment = await asyncio.to_thread(item)
        return _json(200 if result.replay else 201, {"state": "booked", "idempotency_key": key,
                                                     "appointment": appointment})
    if result.state is BookingState.REFUSED:
        return _json(409, {"reason": result.reason, "state": "refused", "idempotency_key": key,
                           "message": result.message})
    if result.state is BookingState.UNKNOWN:
        return _json(202, {"state": "unknown", "idempotency_key": key, "appointment": None, "reason": result.reason})
    return _json(503, {"error": result.reason or "provider_unavailable", "state": "pending", "idempotency_key": key},
                 retry_after)
