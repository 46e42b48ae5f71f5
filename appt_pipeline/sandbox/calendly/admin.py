"""The Calendly simulator's ``/_admin`` routes as one table (:data:`ADMIN_ACTIONS`), registered by
:meth:`appt_pipeline.sandbox.base.SimulatorBase._add_admin_routes`.

Each handler takes the simulator and the parsed :class:`~appt_pipeline.sandbox.base.AdminCall` and
returns the JSON answer; required body fields are checked by the loop before the handler runs
(400 ``{error: "missing …"}``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from appt_pipeline.sandbox.base import AdminAction, AdminCall
from appt_pipeline.sandbox.calendly.model import INVITEE_WEBHOOK_EVENTS
from appt_pipeline.sandbox.common import iso_us_z

if TYPE_CHECKING:
    from appt_pipeline.sandbox.calendly.simulator import CalendlySimulator


def admin_book(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.book(
        b["event_type"],
        b["start_time"],
        b["email"],
        name=b.get("name"),
        timezone=b.get("timezone") or "America/New_York",
        force=bool(b.get("force")),
    )


def admin_cancel_invitee(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.cancel_invitee(
        b["invitee"],
        reason=b.get("reason") or "",
        canceler_type=b.get("canceler_type") or "invitee",
        canceled_by=b.get("canceled_by"),
    )


def admin_reschedule(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.reschedule(b["invitee"], b["start_time"], reason=b.get("reason") or "", force=bool(b.get("force")))


def admin_no_show(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    return sim.mark_no_show(call.body["invitee"])


def admin_no_show_delete(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    return sim.unmark_no_show(call.body["invitee"])


def admin_cancel_event(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.cancel_event(
        b["event"],
        reason=b.get("reason") or "",
        canceler_type=b.get("canceler_type") or "host",
        canceled_by=b.get("canceled_by"),
    )


def admin_invitees(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    return {"invitees": sim.invitees_of(call.query("email"))}


def admin_add_user(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    return {"uri": sim.add_user(call.body)}


def admin_webhook_subscriptions(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    return {"subscriptions": sim.webhook_subscriptions()}


def admin_create_webhook_subscription(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    b = call.body
    return sim.create_webhook_subscription(
        b["url"],
        b.get("events") or INVITEE_WEBHOOK_EVENTS,
        user=b.get("user"),
        organization=b.get("organization"),
        scope=b.get("scope"),
        signing_key=b.get("signing_key"),
    )


def admin_delete_webhook_subscription(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    sim.delete_webhook_subscription(call.path["uuid"])
    return {"ok": True}


def admin_available(sim: CalendlySimulator, call: AdminCall) -> dict[str, Any]:
    event_type = call.query("event_type")
    days = call.query("days", int, 7)
    now = sim.now()
    slots = sim.available_times(event_type, now, now + timedelta(days=days))
    return {"slots": [iso_us_z(s) for s in slots]}


#: Every Calendly admin route: (methods, path, handler, required body fields, doc), in registration order.
ADMIN_ACTIONS: tuple[AdminAction, ...] = (
    AdminAction(
        ("POST",),
        "/_admin/book",
        admin_book,
        ("event_type", "start_time", "email"),
        "``{event_type, start_time, email [, name, timezone, force]}`` → the new invitee.",
    ),
    AdminAction(
        ("POST",),
        "/_admin/invitees/cancel",
        admin_cancel_invitee,
        ("invitee",),
        "``{invitee [, reason, canceler_type, canceled_by]}`` → the invitee.",
    ),
    AdminAction(
        ("POST",),
        "/_admin/invitees/reschedule",
        admin_reschedule,
        ("invitee", "start_time"),
        "``{invitee, start_time [, reason, force]}`` → the new invitee.",
    ),
    AdminAction(("POST",), "/_admin/invitees/no_show", admin_no_show, ("invitee",), "``{invitee}`` → the invitee."),
    AdminAction(
        ("POST",), "/_admin/invitees/no_show/delete", admin_no_show_delete, ("invitee",), "``{invitee}`` → the invitee."
    ),
    AdminAction(
        ("POST",),
        "/_admin/events/cancel",
        admin_cancel_event,
        ("event",),
        "``{event [, reason, canceler_type, canceled_by]}`` → the event.",
    ),
    AdminAction(("GET",), "/_admin/invitees", admin_invitees, doc="``?email`` (required) → ``{invitees}``."),
    AdminAction(("POST",), "/_admin/users", admin_add_user, doc="A ``CalendlyUser`` object → ``{uri}``.", body=True),
    AdminAction(
        ("GET",),
        "/_admin/webhooks/subscriptions",
        admin_webhook_subscriptions,
        doc="Every subscription with its ``signing_key`` (the workspace secret ``calendly_webhook_signing_key``).",
    ),
    AdminAction(
        ("POST",),
        "/_admin/webhooks/subscriptions",
        admin_create_webhook_subscription,
        ("url",),
        "``{url [, events, user, organization, scope, signing_key]}`` → the resource with ``signing_key``.",
    ),
    AdminAction(
        ("DELETE",),
        "/_admin/webhooks/subscriptions/{uuid}",
        admin_delete_webhook_subscription,
        doc="→ ``{ok: true}``.",
    ),
    AdminAction(
        ("GET",),
        "/_admin/available_times",
        admin_available,
        doc="``?event_type`` (required) ``&days`` (default 7) → ``{slots: [ISO µs Z]}``.",
    ),
)
