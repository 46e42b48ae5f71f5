"""Webhook deliveries as the providers send them (with PII, as real ones carry it), staged like the intake
service stages them (docs/rules.md §7)."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.webhook_staging import stage_calendly, stage_ghl
from appt_pipeline.store.webhook_events import insert_events

API = "https://api.calendly.com"
def inv_uri(invitee: str, event: str | None = None) -> str:
    return f"{API}/scheduled_events/{event or 'ev-' + invitee}/invitees/{invitee}"


def calendly_body(event: str, invitee: str, *, status: str = "active", updated: str = "2026-03-01T10:00:00Z",
                  start: str = "2026-03-05T15:00:00Z", email: str | None = "jane.roe@example.com",
                  rescheduled: bool = False, old: str | None = None, new: str | None = None,
                  no_show: bool = False, ev: str | None = None) -> dict[str, Any]:
    ev_uri = f"{API}/scheduled_events/{ev or 'ev-' + invitee}"
    start_at = datetime.fromisoformat(start.replace("Z", "+00:00"))
    payload: dict[str, Any] = {
        "uri": inv_uri(invitee, ev), "email": email, "name": "Jane Roe", "first_name": "Jane", "status": status,
        "event": ev_uri, "rescheduled": rescheduled, "old_invitee": old and inv_uri(old),
        "new_invitee": new and inv_uri(new), "timezone": "America/New_York", "created_at": "2026-02-20T09:00:00Z",
        "updated_at": updated, "text_reminder_number": "+1 415 555 0100",
        "questions_and_answers": [{"question": "Anything else?", "answer": "Call me at +1 415 555 0199",
                                   "position": 0}],
        "no_show": {"uri": f"{API}/invitee_no_shows/ns-{invitee}", "created_at": updated} if no_show else None,
        "scheduled_event": {"uri": ev_uri, "status": "active", "event_type": f"{API}/event_types/et1",
                            "start_time": start, "end_time": (start_at + timedelta(minutes=30)).isoformat(),
                            "name": "Intro call with Jane Roe",
                            "event_memberships": [{"user": f"{API}/users/u1", "user_email": "host@example.com",
                                                   "user_name": "Hank Host"}]},
    }
    if status == "canceled":
        payload["cancellation"] = {"canceled_by": "Jane Roe", "reason": "Conflict, mail jane.roe@example.com",
                                   "canceler_type": "invitee", "created_at": updated}
    return {"event": event, "created_at": updated, "created_by": f"{API}/users/u1", "payload": payload}


def ghl_body(kind: str, appt: str, *, contact: str = "contact-1", status: str = "confirmed",
             start: str = "2026-03-05T15:00:00Z", updated: str = "2026-03-01T10:00:00Z",
             location: str = "loc-1") -> dict[str, Any]:
    start_at = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return {
        "type": kind, "locationId": location, "webhookId": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(),
        "appointment": {"id": appt, "calendarId": "cal-1", "contactId": contact, "appointmentStatus": status,
                        "startTime": start, "endTime": (start_at + timedelta(minutes=30)).isoformat(),
                        "dateAdded": "2026-02-20T09:00:00Z", "dateUpdated": updated,
                        "title": "Call with Jane Roe", "notes": "jane.roe@example.com +1 415 555 0100",
                        "address": "1 Main St"},
    }


def deliver(engine: sa.Engine, ws: str, *bodies: dict[str, Any]) -> int:
    """Stage bodies like the intake service; return how many were new (not duplicates)."""
    staged = [(ws, stage_calendly(b, workspace_id=ws) if "event" in b else stage_ghl(b, workspace_id=ws))
              for b in bodies]
    with engine.begin() as conn:
        return len(insert_events(conn, staged))


def with_email(engine: sa.Engine, lead_id: str, email: str = "Jane.Roe@example.com ", contact: str | None = None,
               status: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET email = :e, ghl_contact_id = :c, status = coalesce(:s, status) "
                             "WHERE id = :id"), {"e": email, "c": contact, "s": status, "id": lead_id})
