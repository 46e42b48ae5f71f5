"""GHL simulator records: constants, the in-memory state rows and the NestJS-shaped error bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from appt_pipeline.sandbox.common import (
    ApiError,
    WorkingHours,
)

VERSIONS = ("2021-04-15", "2021-07-28", "2023-02-21")
STATUSES = ("new", "confirmed", "cancelled", "showed", "noshow", "invalid")
_FREE_STATUSES = frozenset({"cancelled", "invalid"})  # these do not occupy their slot
MAX_FREE_SLOT_RANGE = timedelta(days=31)
WEBHOOK_EVENTS = ("AppointmentCreate", "AppointmentUpdate", "AppointmentDelete")
_DOW = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


# ----------------------------------------------------------------------------- internal state


@dataclass
class _Calendar:
    id: str
    location_id: str
    name: str
    slot: timedelta
    interval: timedelta
    hours: WorkingHours
    assigned_user_id: str | None
    group_id: str
    auto_confirm: bool
    horizon: timedelta
    min_notice: timedelta


@dataclass
class _Contact:
    id: str
    location_id: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    date_added: datetime
    date_updated: datetime

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.email


@dataclass
class _Appointment:
    id: str
    location_id: str
    calendar_id: str
    contact_id: str
    start: datetime
    end: datetime
    status: str
    title: str
    date_added: datetime
    date_updated: datetime
    address: str = ""
    notes: str = ""
    assigned_user_id: str | None = None
    group_id: str = ""
    deleted: bool = False
    source: str = "third_party"
    meeting_location_type: str | None = None

    def occupies_slot(self) -> bool:
        return not self.deleted and self.status not in _FREE_STATUSES


@dataclass
class _Location:
    id: str
    token: str
    tz_name: str
    tz: ZoneInfo
    name: str
    calendars: dict[str, _Calendar] = field(default_factory=dict)
    contacts: dict[str, _Contact] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- error bodies


def _bad_request(message: str) -> ApiError:
    return ApiError(400, {"statusCode": 400, "message": message, "error": "Bad Request"})


def _unprocessable(*messages: str) -> ApiError:
    return ApiError(422, {"statusCode": 422, "message": list(messages), "error": "Unprocessable Entity"})


def _not_found(message: str) -> ApiError:
    return ApiError(404, {"statusCode": 404, "message": message, "error": "Not Found"})


def _forbidden() -> ApiError:
    return ApiError(
        403, {"statusCode": 403, "message": "The token does not have access to this location.", "error": "Forbidden"}
    )


SLOT_TAKEN_MESSAGE = "The slot you have selected is no longer available."
