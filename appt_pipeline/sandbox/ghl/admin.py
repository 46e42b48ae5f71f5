"""The GHL simulator's ``/_admin`` routes as one table (:data:`ADMIN_ACTIONS`), registered by
:meth:`appt_pipeline.sandbox.base.SimulatorBase._add_admin_routes`.

Each handler takes the simulator and the parsed :class:`~appt_pipeline.sandbox.base.AdminCall` and
returns the JSON answer; required body fields are checked by the loop before the handler runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from appt_pipeline.sandbox.base import AdminAction, AdminCall
from appt_pipeline.sandbox.common import SimulatorError, epoch_ms

if TYPE_CHECKING:
    from appt_pipeline.sandbox.ghl.simulator import GhlSimulator


def admin_book(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.book(
        b["calendarId"],
        b["startTime"],
        contact_id=b.get("contactId"),
        email=b.get("email"),
        first_name=b.get("firstName", ""),
        last_name=b.get("lastName", ""),
        status=b.get("appointmentStatus"),
        title=b.get("title"),
        end=b.get("endTime"),
        force=bool(b.get("force")),
    )


def admin_appointments(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return {"appointments": sim.appointments(call.query("locationId", default=None))}


def admin_appointment(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return sim.appointment(call.path["event_id"])


def admin_cancel(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return sim.cancel(call.path["event_id"])


def admin_reschedule(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.reschedule(call.path["event_id"], b["startTime"], b.get("endTime"), force=bool(b.get("force")))


def admin_status(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return sim.set_status(call.path["event_id"], str(call.body.get("status", "")))


def admin_delete(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return sim.delete(call.path["event_id"])


def admin_add_location(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return {"id": sim.add_location(call.body)}


def admin_add_contact(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return {"id": sim.add_contact(call.path["location_id"], call.body)}


def admin_webhooks(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return sim.webhook_config()


_WEBHOOK_FIELDS = {"url_template", "url", "urls", "legacy_rsa", "events"}


def admin_set_webhooks(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    unknown = set(b) - _WEBHOOK_FIELDS
    if unknown:
        raise SimulatorError(f"unknown field(s) {sorted(unknown)}")
    if b.get("urls") is not None and not isinstance(b["urls"], dict):
        raise SimulatorError("urls must be an object {locationId: url}")
    return sim.set_webhooks(
        b.get("url_template") or b.get("url"),
        urls=b.get("urls"),
        legacy_rsa=bool(b.get("legacy_rsa")),
        events=b.get("events"),
    )


def admin_clear_webhooks(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    sim.clear_webhooks()
    return {"ok": True}


def admin_public_keys(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    return sim.webhook_public_keys()


def admin_free_slots(sim: GhlSimulator, call: AdminCall) -> dict[str, Any]:
    now = sim.now()
    slots = sim.free_slots(call.path["calendar_id"], now, now + timedelta(days=call.query("days", int, 30)))
    return {"slots": [epoch_ms(s) for s in slots], "iso": [s.isoformat() for s in slots]}


#: Every GHL admin route: (methods, path, handler, required body fields, doc), in registration order.
ADMIN_ACTIONS: tuple[AdminAction, ...] = (
    AdminAction(
        ("POST",),
        "/_admin/book",
        admin_book,
        ("calendarId", "startTime"),
        "``{calendarId, startTime, contactId | email [, firstName, lastName, appointmentStatus, title, "
        "endTime, force]}`` → the appointment.",
    ),
    AdminAction(("GET",), "/_admin/appointments", admin_appointments, doc="``?locationId`` → ``{appointments}``."),
    AdminAction(("GET",), "/_admin/appointments/{event_id}", admin_appointment, doc="→ the appointment."),
    AdminAction(("POST",), "/_admin/appointments/{event_id}/cancel", admin_cancel, doc="→ the appointment."),
    AdminAction(
        ("POST",),
        "/_admin/appointments/{event_id}/reschedule",
        admin_reschedule,
        ("startTime",),
        "``{startTime [, endTime, force]}`` → the appointment.",
    ),
    AdminAction(
        ("POST",),
        "/_admin/appointments/{event_id}/status",
        admin_status,
        doc="``{status}`` e.g. ``showed`` / ``noshow`` → the appointment.",
        body=True,
    ),
    AdminAction(("DELETE",), "/_admin/appointments/{event_id}", admin_delete, doc="→ the appointment."),
    AdminAction(("POST",), "/_admin/appointments/{event_id}/delete", admin_delete, doc="→ the appointment."),
    AdminAction(
        ("POST",), "/_admin/locations", admin_add_location, doc="A ``GhlLocation`` object → ``{id}``.", body=True
    ),
    AdminAction(
        ("POST",),
        "/_admin/locations/{location_id}/contacts",
        admin_add_contact,
        doc="A ``GhlContact`` object → ``{id}``.",
        body=True,
    ),
    AdminAction(("GET",), "/_admin/webhooks", admin_webhooks, doc="→ ``{url_template, urls, legacy_rsa, events}``."),
    AdminAction(
        ("PUT",),
        "/_admin/webhooks",
        admin_set_webhooks,
        doc="``{url_template | url, urls: {locationId: url}, legacy_rsa: bool, events: [...]}`` (replaces the "
        "configuration) → ``{url_template, urls, legacy_rsa, events}``.",
        body=True,
    ),
    AdminAction(("DELETE",), "/_admin/webhooks", admin_clear_webhooks, doc="→ ``{ok: true}``."),
    AdminAction(
        ("GET",),
        "/_admin/webhooks/public_keys",
        admin_public_keys,
        doc="``{ghl_webhook_public_key, ghl_webhook_legacy_public_key}`` (base64 SPKI DER).",
    ),
    AdminAction(
        ("GET",),
        "/_admin/calendars/{calendar_id}/free-slots",
        admin_free_slots,
        doc="``?days`` (default 30) → ``{slots: [epoch ms], iso: [ISO with offset]}``.",
    ),
)
