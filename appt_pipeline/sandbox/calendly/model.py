"""Calendly simulator records: constants, the in-memory state rows and the API error bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appt_pipeline.sandbox.common import (
    ApiError,
    WorkingHours,
)

API = "https://api.calendly.com"
PLANS = ("free", "trial", "standard", "teams", "enterprise")
MAX_AVAILABLE_RANGE = timedelta(days=7)

#: ``POST /invitees`` limits per plan: (requests, window seconds) — rate-limits docs page.
DEFAULT_INVITEE_LIMITS: dict[str, tuple[tuple[int, int], ...]] = {
    "trial": ((5, 86_400),),
    "free": ((10, 60), (50, 3_600), (100, 86_400)),
    "standard": ((10, 60), (50, 3_600), (100, 86_400)),
    "teams": ((10, 60), (50, 3_600), (100, 86_400)),
    "enterprise": ((500, 60),),
}

#: Subscribable event names (get-sample-webhook-data.md); only the ``invitee*`` ones are ever emitted here.
WEBHOOK_EVENTS = (
    "invitee.created",
    "invitee.canceled",
    "invitee_no_show.created",
    "invitee_no_show.deleted",
    "routing_form_submission.created",
    "event_type.created",
    "event_type.updated",
    "event_type.deleted",
)
INVITEE_WEBHOOK_EVENTS = WEBHOOK_EVENTS[:4]
_ORG_ONLY_EVENTS = frozenset({"routing_form_submission.created"})

_UUID_TAIL = re.compile(r"/([^/?#]+)/?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# ----------------------------------------------------------------------------- internal state


@dataclass
class _User:
    uuid: str
    uri: str
    token: str
    email: str
    name: str
    slug: str
    tz_name: str
    tz: ZoneInfo
    org_uri: str
    role: str
    plan: str
    hours: WorkingHours
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role in ("owner", "admin")


@dataclass
class _EventType:
    uuid: str
    uri: str
    owner_uri: str
    name: str
    slug: str
    duration: int
    interval: timedelta
    kind: str
    max_invitees: int
    active: bool
    location_kind: str
    custom_questions: list[dict[str, Any]]
    horizon: timedelta
    min_notice: timedelta
    position: int
    created_at: datetime
    updated_at: datetime


@dataclass
class _Event:
    uuid: str
    uri: str
    event_type_uri: str
    host_uri: str
    name: str
    start: datetime
    end: datetime
    status: str
    location: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    invitees: list[str] = field(default_factory=list)
    guests: list[dict[str, Any]] = field(default_factory=list)
    cancellation: dict[str, Any] | None = None


@dataclass
class _Invitee:
    uuid: str
    uri: str
    event_uuid: str
    email: str
    name: str
    first_name: str | None
    last_name: str | None
    status: str
    timezone: str
    created_at: datetime
    updated_at: datetime
    questions_and_answers: list[dict[str, Any]] = field(default_factory=list)
    tracking: dict[str, Any] = field(default_factory=dict)
    text_reminder_number: str | None = None
    rescheduled: bool = False
    old_invitee: str | None = None
    new_invitee: str | None = None
    cancellation: dict[str, Any] | None = None
    no_show: dict[str, Any] | None = None
    scheduling_method: str | None = None
    invitee_scheduled_by: str | None = None


@dataclass
class _WebhookSub:
    uuid: str
    uri: str
    callback_url: str
    events: list[str]
    scope: str
    organization: str
    user: str | None
    creator: str | None
    signing_key: str
    created_at: datetime
    updated_at: datetime
    state: str = "active"
    retry_started_at: datetime | None = None


def _tracking(data: dict[str, Any] | None = None) -> dict[str, Any]:
    keys = ("utm_campaign", "utm_source", "utm_medium", "utm_content", "utm_term", "salesforce_uuid")
    data = data or {}
    return {k: data.get(k) for k in keys}


# ----------------------------------------------------------------------------- error bodies


def _invalid(*details: tuple[str, str] | tuple[str, str, str]) -> ApiError:
    items = []
    for d in details:
        item = {"parameter": d[0], "message": d[1]}
        if len(d) > 2:
            item["code"] = d[2]  # type: ignore[misc]
        items.append(item)
    return ApiError(
        400, {"title": "Invalid Argument", "message": "The supplied parameters are invalid.", "details": items}
    )


def _not_found() -> ApiError:
    return ApiError(
        404, {"title": "Resource Not Found", "message": "The server could not find the requested resource."}
    )


def _denied(message: str = "You do not have permission to access this resource.") -> ApiError:
    return ApiError(403, {"title": "Permission Denied", "message": message})


def _tail(ref: str) -> str:
    """uuid of a canonical URI (or the ref itself when it is a bare uuid)."""
    match = _UUID_TAIL.search(ref.strip())
    return match.group(1) if match else ref.strip()
