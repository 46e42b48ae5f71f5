"""The LeadConnector API v2 routes the GHL simulator serves (paths and shapes in the package docstring)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request

from appt_pipeline.sandbox.common import (
    as_utc,
    from_epoch_ms,
    iso_offset,
    parse_iso,
)
from appt_pipeline.sandbox.ghl.model import (
    _FREE_STATUSES,
    MAX_FREE_SLOT_RANGE,
    SLOT_TAKEN_MESSAGE,
    STATUSES,
    _Appointment,
    _bad_request,
    _forbidden,
    _Location,
    _not_found,
    _unprocessable,
)

if TYPE_CHECKING:
    from appt_pipeline.sandbox.ghl.simulator import GhlSimulator


def add_api_routes(sim: GhlSimulator, app: FastAPI) -> None:
    """Register the provider API routes of ``sim`` on ``app`` (see the package docstring)."""

    def loc_of(request: Request) -> _Location:
        return request.state.principal

    def own(request: Request, location_id: str | None, required: bool = True) -> None:
        if not location_id:
            if required:
                raise _unprocessable("locationId should not be empty")
            return
        if location_id != loc_of(request).id:
            raise _forbidden()

    def ms_param(request: Request, name: str) -> datetime:
        raw = request.query_params.get(name)
        try:
            return from_epoch_ms(int(float(raw)))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError, OSError):
            raise _unprocessable(f"{name} must be a number conforming to the specified constraints") from None

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise _bad_request("Unexpected token in JSON body") from None
        if not isinstance(data, dict):
            raise _bad_request("Body must be a JSON object")
        return data

    def visible_appt(request: Request, event_id: str) -> _Appointment:
        appt = sim._appts.get(event_id)
        if appt is None or appt.location_id != loc_of(request).id:
            raise _not_found("Appointment not found")
        return appt

    def parse_time(value: Any, name: str) -> datetime:
        if not isinstance(value, str):
            raise _unprocessable(f"{name} must be a valid ISO 8601 date string")
        try:
            return as_utc(parse_iso(value))
        except ValueError:
            raise _unprocessable(f"{name} must be a valid ISO 8601 date string") from None

    def status_of(body: dict[str, Any]) -> str | None:
        status = body.get("appointmentStatus")
        if status is not None and status not in STATUSES:
            raise _unprocessable(f"appointmentStatus must be one of the following values: {', '.join(STATUSES)}")
        return status

    # ---- calendars/events (registered before /calendars/{calendarId})

    @app.get("/calendars/events/appointments/{event_id}")
    async def get_appointment(event_id: str, request: Request) -> dict[str, Any]:
        """GHL-SPEC-CAL ``GET /calendars/events/appointments/{eventId}``; wrapper observed."""
        with sim._lock:
            appt = visible_appt(request, event_id)
            return {"appointment": sim._appt_json(appt, meta=True), "traceId": sim._trace(request)}

    @app.get("/calendars/events")
    async def list_events(request: Request) -> dict[str, Any]:
        """Events of a calendar/user/group whose **start** is in ``[startTime, endTime)`` (ms)."""
        q = request.query_params
        own(request, q.get("locationId"))
        if not (q.get("calendarId") or q.get("userId") or q.get("groupId")):
            raise _unprocessable("Either calendarId, userId or groupId is required")
        start, end = ms_param(request, "startTime"), ms_param(request, "endTime")
        loc = loc_of(request)
        with sim._lock:
            events = [
                a
                for a in sim._appts.values()
                if a.location_id == loc.id
                and not a.deleted
                and start <= a.start < end
                and (not q.get("calendarId") or a.calendar_id == q.get("calendarId"))
                and (not q.get("userId") or a.assigned_user_id == q.get("userId"))
                and (not q.get("groupId") or a.group_id == q.get("groupId"))
            ]
            events.sort(key=lambda a: (a.start, a.id))
            return {"events": [sim._appt_json(a) for a in events], "traceId": sim._trace(request)}

    @app.post("/calendars/events/appointments")
    async def create_appointment(request: Request) -> dict[str, Any]:
        """Book (``AppointmentCreateSchema``); a slot that is not free → 400 (observed)."""
        body = await json_body(request)
        missing = [
            f"{f} should not be empty"
            for f in ("calendarId", "locationId", "contactId", "startTime")
            if not body.get(f)
        ]
        if missing:
            raise _unprocessable(*missing)
        own(request, body["locationId"])
        status = status_of(body)
        start = parse_time(body["startTime"], "startTime")
        end = parse_time(body["endTime"], "endTime") if body.get("endTime") else None
        loc = loc_of(request)
        with sim._lock:
            cal = loc.calendars.get(body["calendarId"])
            if cal is None:
                raise _bad_request("Calendar not found")
            contact = loc.contacts.get(body["contactId"])
            if contact is None:
                raise _bad_request("Contact not found")
            appt = sim._create(
                loc,
                cal,
                contact,
                start,
                end,
                status=status,
                title=body.get("title"),
                source="third_party",
                validate=not body.get("ignoreFreeSlotValidation"),
                ignore_range=bool(body.get("ignoreDateRange")),
                address=body.get("address") or "",
                notes=body.get("description") or body.get("notes") or "",
                assigned_user_id=body.get("assignedUserId"),
                meeting_location_type=body.get("meetingLocationType"),
            )
            return {**sim._write_json(appt), "traceId": sim._trace(request)}

    @app.put("/calendars/events/appointments/{event_id}")
    async def update_appointment(event_id: str, request: Request) -> dict[str, Any]:
        """Reschedule (new ``startTime``/``endTime``) and/or change ``appointmentStatus``."""
        body = await json_body(request)
        status = status_of(body)
        start = parse_time(body["startTime"], "startTime") if body.get("startTime") else None
        end = parse_time(body["endTime"], "endTime") if body.get("endTime") else None
        loc = loc_of(request)
        with sim._lock:
            appt = visible_appt(request, event_id)
            if appt.deleted:
                raise _not_found("Appointment not found")
            cal = sim._calendars[appt.calendar_id]
            if body.get("calendarId") and body["calendarId"] != cal.id:
                cal = loc.calendars.get(body["calendarId"])  # type: ignore[assignment]
                if cal is None:
                    raise _bad_request("Calendar not found")
            new_start = start or appt.start
            new_end = end or (new_start + (appt.end - appt.start))
            if new_end <= new_start:
                raise _unprocessable("endTime must be after startTime")
            new_status = status or appt.status
            moved = (new_start, new_end, cal.id) != (appt.start, appt.end, appt.calendar_id)
            if (
                moved
                and new_status not in _FREE_STATUSES
                and not body.get("ignoreFreeSlotValidation")
                and not sim._check_slot(
                    cal, new_start, new_end, exclude=appt.id, ignore_range=bool(body.get("ignoreDateRange"))
                )
            ):
                raise _bad_request(SLOT_TAKEN_MESSAGE)
            appt.start, appt.end, appt.calendar_id, appt.status = new_start, new_end, cal.id, new_status
            for key, attr in (
                ("title", "title"),
                ("address", "address"),
                ("assignedUserId", "assigned_user_id"),
                ("meetingLocationType", "meeting_location_type"),
            ):
                if key in body and body[key] is not None:
                    setattr(appt, attr, body[key])
            if body.get("description") is not None:
                appt.notes = body["description"]
            sim._touch(appt)
            return {**sim._write_json(appt), "traceId": sim._trace(request)}

    @app.delete("/calendars/events/{event_id}")
    async def delete_event(event_id: str, request: Request) -> dict[str, Any]:
        """Delete (spec 201, observed 200 ``{succeeded: true, traceId}``); repeat deletes succeed."""
        with sim._lock:
            appt = visible_appt(request, event_id)
            if not appt.deleted:
                sim.delete(appt.id)
            return {"succeeded": True, "traceId": sim._trace(request)}

    # ---- calendars

    @app.get("/calendars/")
    async def list_calendars(request: Request) -> dict[str, Any]:
        own(request, request.query_params.get("locationId"))
        with sim._lock:
            cals = [sim._calendar_json(c) for c in loc_of(request).calendars.values()]
        return {"calendars": cals, "traceId": sim._trace(request)}

    @app.get("/calendars/{calendar_id}/free-slots")
    async def free_slots(calendar_id: str, request: Request) -> dict[str, Any]:
        """Free slots keyed by local date, ISO with offset; range ≤ 31 days (GHL-SPEC-CAL)."""
        start, end = ms_param(request, "startDate"), ms_param(request, "endDate")
        if end < start:
            raise _unprocessable("endDate must be after startDate")
        if end - start > MAX_FREE_SLOT_RANGE:
            raise _unprocessable("The date range between startDate and endDate must not exceed 31 days")
        loc = loc_of(request)
        tz_name = request.query_params.get("timezone") or loc.tz_name
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise _unprocessable("timezone must be a valid IANA timezone") from None
        with sim._lock:
            cal = loc.calendars.get(calendar_id)
            if cal is None:
                raise _bad_request("Calendar not found")
            slots = sim._free(cal, start, end + timedelta(milliseconds=1))
        out: dict[str, Any] = {}
        for slot in slots:
            local = slot.astimezone(tz)
            out.setdefault(local.date().isoformat(), {"slots": []})["slots"].append(iso_offset(slot, tz))
        out["traceId"] = sim._trace(request)
        return out

    @app.get("/calendars/{calendar_id}")
    async def get_calendar(calendar_id: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            cal = loc_of(request).calendars.get(calendar_id)
            if cal is None:
                raise _bad_request("Calendar not found")
            return {"calendar": sim._calendar_json(cal), "traceId": sim._trace(request)}

    # ---- contacts (registered before /contacts/{contactId}/…)

    @app.get("/contacts/search/duplicate")
    async def duplicate_search(request: Request) -> dict[str, Any]:
        """GHL-SPEC-CON duplicate search by ``email`` (or ``number``); no match → ``contact: null``."""
        q = request.query_params
        own(request, q.get("locationId"))
        email, number = (q.get("email") or "").strip().lower(), (q.get("number") or "").strip()
        if not email and not number:
            raise _unprocessable("email or number is required")
        loc = loc_of(request)
        with sim._lock:
            contact = None
            if email and email in loc.by_email:
                contact = loc.contacts[loc.by_email[email]]
            elif number:
                contact = next((c for c in loc.contacts.values() if c.phone == number), None)
            if contact is None:
                return {"contact": None, "traceId": sim._trace(request)}
            return {
                "contact": sim._contact_json(contact),
                "matchingField": "email" if email else "phone",
                "traceId": sim._trace(request),
            }

    @app.post("/contacts/search")
    async def search_contacts(request: Request) -> dict[str, Any]:
        """``POST /contacts/search`` with ``filters: [{field: "email", operator: "eq", value}]``
        and/or ``query``; ``page``/``pageLimit`` paging."""
        body = await json_body(request)
        own(request, body.get("locationId"))
        page, limit = int(body.get("page") or 1), int(body.get("pageLimit") or 20)
        if page < 1 or not 1 <= limit <= 500:
            raise _unprocessable("page must be ≥ 1 and pageLimit between 1 and 500")
        loc = loc_of(request)
        with sim._lock:
            found = sorted(loc.contacts.values(), key=lambda c: (c.date_added, c.id))
            for flt in body.get("filters") or []:
                if flt.get("field") == "email" and flt.get("operator", "eq") == "eq":
                    want = str(flt.get("value", "")).strip().lower()
                    found = [c for c in found if c.email.lower() == want]
            if body.get("query"):
                needle = str(body["query"]).lower()
                found = [c for c in found if needle in c.email.lower() or needle in c.name.lower()]
            window = found[(page - 1) * limit : page * limit]
            return {
                "contacts": [sim._contact_json(c) for c in window],
                "total": len(found),
                "traceId": sim._trace(request),
            }

    @app.get("/contacts/{contact_id}/appointments")
    async def contact_appointments(contact_id: str, request: Request) -> dict[str, Any]:
        """All (non-deleted) appointments of a contact; no window, no paging (GHL-SPEC-CON)."""
        loc = loc_of(request)
        with sim._lock:
            if contact_id not in loc.contacts:
                raise _bad_request("Contact not found")
            events = sorted(
                (a for a in sim._appts.values() if a.contact_id == contact_id and not a.deleted),
                key=lambda a: (a.start, a.id),
            )
            return {"events": [sim._contact_event_json(a) for a in events], "traceId": sim._trace(request)}

    @app.get("/contacts/{contact_id}")
    async def get_contact(contact_id: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            contact = loc_of(request).contacts.get(contact_id)
            if contact is None:
                raise _bad_request("Contact not found")
            return {"contact": sim._contact_json(contact), "traceId": sim._trace(request)}
