"""GHL JSON shapes: appointments (read, write and webhook forms), contacts and calendars."""

from __future__ import annotations

from typing import Any

from appt_pipeline.sandbox.common import (
    iso_ms_z,
    iso_offset,
)
from appt_pipeline.sandbox.ghl.model import (
    _DOW,
    _FREE_STATUSES,
    _Appointment,
    _Calendar,
    _Contact,
)


class GhlRender:
    """JSON shapes of the Ghl simulator's records (mixed into :class:`~.simulator.GhlSimulator`)."""

    # ================================================================= JSON shapes

    def _appt_json(self, a: _Appointment, *, meta: bool = False) -> dict[str, Any]:
        """``CalendarEventDTO`` as observed (GET by id with ``meta``; list items without)."""
        tz = self._locations[a.location_id].tz
        out: dict[str, Any] = {
            "id": a.id,
            "title": a.title,
            "calendarId": a.calendar_id,
            "locationId": a.location_id,
            "contactId": a.contact_id,
            "appointmentStatus": a.status,
            "appoinmentStatus": a.status,
            "address": a.address,
            "startTime": iso_offset(a.start, tz),
            "endTime": iso_offset(a.end, tz),
            "dateAdded": iso_ms_z(a.date_added),
            "dateUpdated": iso_ms_z(a.date_updated),
            "assignedResources": [],
            "isRecurring": False,
            "createdBy": {"source": a.source, "userId": None},
            "deleted": a.deleted,
        }
        if a.assigned_user_id:
            out["assignedUserId"] = a.assigned_user_id
            out["users"] = []
        if a.group_id:
            out["groupId"] = a.group_id
        if a.notes:
            out["notes"] = a.notes
        if meta:
            out["appointmentMeta"] = {"slotType": "custom"}
        return out

    def _contact_event_json(self, a: _Appointment) -> dict[str, Any]:
        """``GetEventSchema`` item of ``GET /contacts/{id}/appointments`` (contacts API)."""
        tz = self._locations[a.location_id].tz
        return {
            "id": a.id,
            "calendarId": a.calendar_id,
            "status": "cancelled" if a.status in _FREE_STATUSES else "booked",
            "title": a.title,
            "assignedUserId": a.assigned_user_id or "",
            "notes": a.notes,
            "startTime": iso_offset(a.start, tz),
            "endTime": iso_offset(a.end, tz),
            "address": a.address,
            "locationId": a.location_id,
            "contactId": a.contact_id,
            "groupId": a.group_id,
            "appointmentStatus": a.status,
            "users": [],
            "dateAdded": iso_ms_z(a.date_added),
            "dateUpdated": iso_ms_z(a.date_updated),
            "assignedResources": [],
        }

    def _write_json(self, a: _Appointment) -> dict[str, Any]:
        """``AppointmentSchemaResponse`` of create/update: flat, ``status: "booked"`` (observed)."""
        tz = self._locations[a.location_id].tz
        out: dict[str, Any] = {
            "id": a.id,
            "calendarId": a.calendar_id,
            "locationId": a.location_id,
            "contactId": a.contact_id,
            "title": a.title,
            "status": "cancelled" if a.status in _FREE_STATUSES else "booked",
            "appointmentStatus": a.status,
            "appoinmentStatus": a.status,
            "address": a.address,
            "startTime": iso_offset(a.start, tz),
            "endTime": iso_offset(a.end, tz),
            "dateAdded": iso_ms_z(a.date_added),
            "dateUpdated": iso_ms_z(a.date_updated),
            "isRecurring": False,
        }
        if a.assigned_user_id:
            out["assignedUserId"] = a.assigned_user_id
        if a.meeting_location_type:
            out["meetingLocationType"] = a.meeting_location_type
        return out

    def _webhook_json(self, kind: str, a: _Appointment) -> dict[str, Any]:
        """Marketplace webhook body (docs ``AppointmentCreate/Update/Delete``)."""
        tz = self._locations[a.location_id].tz
        return {
            "type": kind,
            "locationId": a.location_id,
            "appointment": {
                "id": a.id,
                "address": a.address,
                "title": a.title,
                "calendarId": a.calendar_id,
                "contactId": a.contact_id,
                "groupId": a.group_id,
                "appointmentStatus": a.status,
                "assignedUserId": a.assigned_user_id or "",
                "users": [],
                "notes": a.notes,
                "source": a.source,
                "startTime": iso_offset(a.start, tz),
                "endTime": iso_offset(a.end, tz),
                "dateAdded": iso_offset(a.date_added, tz),
                "dateUpdated": iso_offset(a.date_updated, tz),
            },
        }

    def _contact_json(self, c: _Contact) -> dict[str, Any]:
        return {
            "id": c.id,
            "dateAdded": iso_ms_z(c.date_added),
            "dateUpdated": iso_ms_z(c.date_updated),
            "type": "lead",
            "locationId": c.location_id,
            "email": c.email,
            "emailLowerCase": c.email.lower(),
            "phone": c.phone,
            "firstName": c.first_name,
            "firstNameLowerCase": c.first_name.lower(),
            "lastName": c.last_name,
            "lastNameLowerCase": c.last_name.lower(),
            "fullNameLowerCase": " ".join(p for p in (c.first_name, c.last_name) if p).lower(),
            "tags": [],
            "customFields": [],
            "additionalEmails": [],
            "additionalPhones": [],
        }

    def _calendar_json(self, cal: _Calendar) -> dict[str, Any]:
        minutes = int(cal.slot.total_seconds() // 60)
        open_hours = [
            {
                "daysOfTheWeek": [_DOW[day]],
                "hours": [
                    {
                        "openHour": int(o[:2]),
                        "openMinute": int(o[3:]),
                        "closeHour": int(c[:2]),
                        "closeMinute": int(c[3:]),
                    }
                    for o, c in ranges
                ],
            }
            for day, ranges in cal.hours.items()
            if ranges
        ]
        out: dict[str, Any] = {
            "id": cal.id,
            "locationId": cal.location_id,
            "name": cal.name,
            "calendarType": "event",
            "eventTitle": "{{contact.name}}",
            "eventColor": "#039BE5",
            "slotDuration": minutes,
            "slotDurationUnit": "mins",
            "slotInterval": int(cal.interval.total_seconds() // 60),
            "slotIntervalUnit": "mins",
            "slotBuffer": 0,
            "slotBufferUnit": "mins",
            "preBuffer": 0,
            "preBufferUnit": "mins",
            "appoinmentPerSlot": 1,
            "appointmentPerSlot": 1,
            "allowBookingAfter": int(cal.min_notice.total_seconds() // 60),
            "allowBookingAfterUnit": "mins",
            "allowBookingFor": cal.horizon.days,
            "allowBookingForUnit": "days",
            "openHours": open_hours,
            "enableRecurring": False,
            "autoConfirm": cal.auto_confirm,
            "allowReschedule": True,
            "allowCancellation": True,
            "availabilities": [],
            "teamMembers": [{"userId": cal.assigned_user_id, "priority": 0.5, "selected": True}]
            if cal.assigned_user_id
            else [],
            "isActive": True,
        }
        if cal.group_id:
            out["groupId"] = cal.group_id
        return out
