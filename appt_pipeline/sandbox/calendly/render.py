"""Calendly JSON shapes (CAL-SPEC ``User``, ``EventType``, ``ScheduledEvent``, ``Invitee``, ``WebhookSubscription``)."""

from __future__ import annotations

from typing import Any

from appt_pipeline.sandbox.calendly.model import (
    API,
    _Event,
    _EventType,
    _Invitee,
    _tail,
    _User,
    _WebhookSub,
)
from appt_pipeline.sandbox.common import (
    iso_us_z,
)


class CalendlyRender:
    """JSON shapes of the Calendly simulator's records (mixed into :class:`~.simulator.CalendlySimulator`)."""

    # ================================================================= JSON shapes

    def _user_json(self, u: _User) -> dict[str, Any]:
        return {
            "avatar_url": None,
            "created_at": iso_us_z(u.created_at),
            "current_organization": u.org_uri,
            "email": u.email,
            "locale": "en",
            "name": u.name,
            "resource_type": "User",
            "scheduling_url": f"https://calendly.com/{u.slug}",
            "slug": u.slug,
            "time_notation": "12h",
            "timezone": u.tz_name,
            "updated_at": iso_us_z(u.created_at),
            "uri": u.uri,
        }

    def _type_json(self, et: _EventType) -> dict[str, Any]:
        owner = self._users[et.owner_uri]
        return {
            "uri": et.uri,
            "name": et.name,
            "active": et.active,
            "booking_method": "instant",
            "slug": et.slug,
            "scheduling_url": f"https://calendly.com/{owner.slug}/{et.slug}",
            "duration": et.duration,
            "duration_options": None,
            "kind": et.kind,
            "pooling_type": None,
            "type": "StandardEventType",
            "kind_description": "Group" if et.kind == "group" else "One-on-One",
            "color": "#0069ff",
            "created_at": iso_us_z(et.created_at),
            "updated_at": iso_us_z(et.updated_at),
            "internal_note": None,
            "description_plain": None,
            "description_html": None,
            "profile": {"type": "User", "name": owner.name, "owner": owner.uri},
            "secret": False,
            "deleted_at": None,
            "admin_managed": False,
            "custom_questions": et.custom_questions,
            "is_paid": False,
            "locale": "en",
            "locations": [{"kind": et.location_kind}],
            "position": et.position,
        }

    def _event_json(self, e: _Event) -> dict[str, Any]:
        host = self._users[e.host_uri]
        et = self._types.get(_tail(e.event_type_uri))
        active = self._active_count(e)
        out: dict[str, Any] = {
            "uri": e.uri,
            "name": e.name,
            "meeting_notes_plain": None,
            "meeting_notes_html": None,
            "status": e.status,
            "booking_method": "instant",
            "start_time": iso_us_z(e.start),
            "end_time": iso_us_z(e.end),
            "event_type": e.event_type_uri,
            "location": dict(e.location),
            "invitees_counter": {"total": len(e.invitees), "active": active, "limit": et.max_invitees if et else 1},
            "created_at": iso_us_z(e.created_at),
            "updated_at": iso_us_z(e.updated_at),
            "event_memberships": [{"user": host.uri, "user_email": host.email, "user_name": host.name}],
            "event_guests": [dict(g) for g in e.guests],
            "calendar_event": {"kind": "google", "external_id": e.uuid.replace("-", "")[:26]},
        }
        if e.cancellation:
            out["cancellation"] = dict(e.cancellation)
        return out

    def _invitee_json(self, i: _Invitee) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": i.uri,
            "email": i.email,
            "first_name": i.first_name,
            "last_name": i.last_name,
            "name": i.name,
            "status": i.status,
            "questions_and_answers": [dict(q) for q in i.questions_and_answers],
            "timezone": i.timezone,
            "event": f"{API}/scheduled_events/{i.event_uuid}",
            "created_at": iso_us_z(i.created_at),
            "updated_at": iso_us_z(i.updated_at),
            "tracking": dict(i.tracking),
            "text_reminder_number": i.text_reminder_number,
            "rescheduled": i.rescheduled,
            "old_invitee": i.old_invitee,
            "new_invitee": i.new_invitee,
            "cancel_url": f"https://calendly.com/cancellations/{i.uuid}",
            "reschedule_url": f"https://calendly.com/reschedulings/{i.uuid}",
            "routing_form_submission": None,
            "payment": None,
            "no_show": dict(i.no_show) if i.no_show else None,
            "reconfirmation": None,
            "scheduling_method": i.scheduling_method,
            "invitee_scheduled_by": i.invitee_scheduled_by,
            "canceled": i.status == "canceled",
        }
        if i.cancellation:
            out["cancellation"] = dict(i.cancellation)
        return out

    def _webhook_sub_json(self, sub: _WebhookSub, *, with_key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": sub.uri,
            "callback_url": sub.callback_url,
            "created_at": iso_us_z(sub.created_at),
            "updated_at": iso_us_z(sub.updated_at),
            "retry_started_at": iso_us_z(sub.retry_started_at) if sub.retry_started_at else None,
            "state": sub.state,
            "events": list(sub.events),
            "scope": sub.scope,
            "organization": sub.organization,
            "user": sub.user,
            "group": None,
            "creator": sub.creator,
        }
        if with_key:
            out["signing_key"] = sub.signing_key
        return out
