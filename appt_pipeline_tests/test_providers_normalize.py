"""Provider response normalisation (pure): GHL vectors of docs/original-system.md §15.3 (+ the recommended extras),
Calendly invitee/event/webhook parsing, and observations (SPEC §2, §4, §7, §9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appt_pipeline.domain.redaction import EMAIL_MASK, PHONE_MASK
from appt_pipeline.domain.vocab import Provider, Source, Status, UnknownStatusError
from appt_pipeline.providers.normalize import (
    GHL_DELETED_REASON,
    CalendlyInvitee,
    CalendlyNoShow,
    calendly_event_invitee,
    calendly_observation,
    calendly_webhook_observation,
    ghl_observation,
    ghl_webhook_observation,
    parse_calendly_available_times,
    parse_calendly_event,
    parse_calendly_event_type,
    parse_calendly_invitee,
    parse_calendly_page,
    parse_calendly_user,
    parse_calendly_webhook,
    parse_ghl_appointment,
    parse_ghl_appointment_list,
    parse_ghl_contact_id,
    parse_ghl_free_slots,
    parse_ghl_webhook,
    split_range,
)

G1 = {
    "appointment": {
        "id": "appt-1", "calendarId": "cal-1", "contactId": "contact-1", "locationId": "loc-1", "title": "Intro Call",
        "startTime": "2026-01-06T09:00:00-07:00", "endTime": "2026-01-06T09:30:00-07:00",
        "appointmentStatus": "invalid", "assignedUserId": "user-1", "notes": "",
        "address": "https://example.com/meeting", "dateAdded": "2026-01-06T03:59:13.034Z",
        "dateUpdated": "2026-01-06T15:21:56.018Z",
    },
    "traceId": "trace-1",
}
BASE = {
    "calendarId": "cal-1", "contactId": "contact-1", "locationId": "loc-1",
    "startTime": "2026-01-25T10:00:00Z", "endTime": "2026-01-25T10:30:00Z", "appointmentStatus": "confirmed",
}


def ws(**kw: Any) -> dict[str, Any]:
    return {"workspace_id": "ws1", "lead_id": "lead1", "source": Source.RECONCILE_CRON, **kw}


# ------------------------------------------------------------------------ GHL, docs/original-system.md §15.3


def test_g1_wrapped_appointment_offsets_and_raw_status() -> None:
    appt = parse_ghl_appointment(G1)
    assert appt is not None
    assert (appt.id, appt.calendar_id, appt.contact_id, appt.location_id) == ("appt-1", "cal-1", "contact-1", "loc-1")
    assert appt.status == "invalid"  # raw, unmapped
    assert appt.start_time_raw == "2026-01-06T09:00:00-07:00"
    assert appt.end_time_raw == "2026-01-06T09:30:00-07:00"
    assert appt.start_at == datetime(2026, 1, 6, 16, 0, tzinfo=UTC)
    assert appt.end_at == datetime(2026, 1, 6, 16, 30, tzinfo=UTC)
    assert appt.date_added == datetime(2026, 1, 6, 3, 59, 13, 34000, tzinfo=UTC)
    assert appt.date_updated == datetime(2026, 1, 6, 15, 21, 56, 18000, tzinfo=UTC)
    assert appt.assigned_user_id == "user-1" and appt.notes == "" and appt.address == "https://example.com/meeting"
    assert not appt.deleted


def test_g2_direct_shape() -> None:
    appt = parse_ghl_appointment({"id": "appt-123", "title": "Test Appointment", **BASE})
    assert appt is not None and appt.id == "appt-123" and appt.calendar_id == "cal-1"


def test_g3_event_wrapper() -> None:
    appt = parse_ghl_appointment({"event": {"id": "evt-789", "title": "Event", **BASE}})
    assert appt is not None and appt.id == "evt-789"


@pytest.mark.parametrize(
    "value",
    [
        {"appointment": {"calendarId": "cal-1", "startTime": "2026-01-25T10:00:00Z"}},  # G4: no id, no endTime
        None, {}, "string", 123, True, [],  # G5–G7
        {"appointment": "not-an-object"},
        {"id": "x", **{**BASE, "startTime": "garbage"}},
        {"id": "x", **{**BASE, "endTime": ""}},
        {"id": "", **BASE},
        {"id": 17, **BASE},
    ],
)
def test_g4_to_g7_and_invalid_shapes_give_none(value: Any) -> None:
    assert parse_ghl_appointment(value) is None


def test_g8_minimal_has_no_optional_fields() -> None:
    appt = parse_ghl_appointment({"appointment": {"id": "appt-minimal", "title": "Minimal", **BASE}})
    assert appt is not None and appt.id == "appt-minimal"
    assert appt.assigned_user_id is None and appt.notes is None and appt.address is None


def test_g9_empty_strings_preserved() -> None:
    appt = parse_ghl_appointment(
        {"appointment": {"id": "appt-empty-strings", "title": "Empty strings test", "notes": "", "address": "", **BASE}}
    )
    assert appt is not None and appt.notes == "" and appt.address == ""


def test_extra_vectors_status_fallbacks_ids_and_calendar() -> None:
    no_status = {k: v for k, v in BASE.items() if k != "appointmentStatus"}
    assert parse_ghl_appointment({"appointment": {"id": "a", **no_status, "status": "cancelled"}}).status == "cancelled"
    assert parse_ghl_appointment({"appointment": {"id": "a", **no_status}}).status == ""
    assert parse_ghl_appointment({"eventId": "ev-1", **BASE}).id == "ev-1"
    assert parse_ghl_appointment({"appointmentId": "ap-1", **BASE}).id == "ap-1"
    assert parse_ghl_appointment({"id": "a", **BASE, "calendarId": 5}).calendar_id == "5"
    assert parse_ghl_appointment({"id": "a", **{k: v for k, v in BASE.items() if k != "calendarId"}}).calendar_id == ""


def test_misspelled_duplicate_status_and_deleted_flag() -> None:
    no_status = {k: v for k, v in BASE.items() if k != "appointmentStatus"}
    appt = parse_ghl_appointment({"appointment": {"id": "a", **no_status, "appoinmentStatus": "showed",
                                                  "status": "booked", "deleted": True}, "traceId": "t"})
    assert appt is not None and appt.status == "showed" and appt.deleted
    both = parse_ghl_appointment({"id": "a", **BASE, "appoinmentStatus": "confirmed"})
    assert both.status == "confirmed" and not both.deleted


def test_naive_times_read_in_given_zone() -> None:
    raw = {"id": "a", **BASE, "startTime": "2021-07-16 11:00:00", "endTime": "2021-07-16 11:30:00"}
    assert parse_ghl_appointment(raw).start_at == datetime(2021, 7, 16, 11, tzinfo=UTC)
    berlin = parse_ghl_appointment(raw, naive_timezone="Europe/Berlin")
    assert berlin.start_at == datetime(2021, 7, 16, 9, tzinfo=UTC)


def test_list_keeps_valid_and_counts_dropped() -> None:
    listed = parse_ghl_appointment_list({"events": [{"id": "a", **BASE}, {}]})
    assert [a.id for a in listed.items] == ["a"] and listed.dropped == 1
    for shape in ({"appointments": [{"id": "a", **BASE}]}, {"data": {"events": [{"id": "a", **BASE}]}},
                  {"data": {"appointments": [{"id": "a", **BASE}]}}, [{"id": "a", **BASE}]):
        assert [a.id for a in parse_ghl_appointment_list(shape).items] == ["a"]
    assert parse_ghl_appointment_list({"traceId": "x"}).items == ()
    assert parse_ghl_appointment_list(None).items == ()


def test_repr_hides_free_text() -> None:
    appt = parse_ghl_appointment({"id": "a", **BASE, "title": "Call with Jane", "notes": "jane@x.io"})
    assert "Jane" not in repr(appt) and "jane@x.io" not in repr(appt)


# --------------------------------------------------------------------------------------------- GHL observations


@pytest.mark.parametrize(
    ("status", "expected"),
    [("confirmed", Status.CONFIRMED), ("new", Status.CONFIRMED), ("booked", Status.CONFIRMED),
     ("invalid", Status.CANCELED), ("cancelled", Status.CANCELED), ("Cancelled", Status.CANCELED),
     ("showed", Status.SHOWED), ("noshow", Status.NO_SHOW), ("", Status.CONFIRMED)],
)
def test_ghl_status_mapping(status: str, expected: Status) -> None:
    appt = parse_ghl_appointment({"id": "a", **{**BASE, "appointmentStatus": status}})
    assert ghl_observation(appt, **ws()).status is expected


def test_ghl_unknown_status_is_an_error() -> None:
    appt = parse_ghl_appointment({"id": "a", **{**BASE, "appointmentStatus": "tentative"}})
    with pytest.raises(UnknownStatusError) as info:
        ghl_observation(appt, **ws())
    assert info.value.kind == "unknown_status" and info.value.value == "tentative"


def test_ghl_observation_fields() -> None:
    obs = ghl_observation(parse_ghl_appointment(G1), **ws(source=Source.BACKFILL))
    assert obs.provider is Provider.GHL and obs.ghl_appointment_id == "appt-1"
    assert obs.status is Status.CANCELED  # `invalid` is a void appointment (SPEC §2)
    assert obs.ghl_calendar_id == "cal-1"
    assert obs.start_at == datetime(2026, 1, 6, 16, 0, tzinfo=UTC)
    assert obs.booked_at == datetime(2026, 1, 6, 3, 59, 13, 34000, tzinfo=UTC)
    assert obs.provider_updated_at == datetime(2026, 1, 6, 15, 21, 56, 18000, tzinfo=UTC)
    assert obs.source is Source.BACKFILL and obs.provider_links_reschedules is False
    assert obs.calendly_invitee_uri is None and obs.cancel_reason is None


def test_ghl_deleted_is_canceled_with_reason_and_empty_calendar_is_null() -> None:
    appt = parse_ghl_appointment({"appointment": {"id": "a", **BASE, "calendarId": "", "deleted": True}})
    obs = ghl_observation(appt, **ws())
    assert obs.status is Status.CANCELED and obs.cancel_reason == GHL_DELETED_REASON
    assert obs.ghl_calendar_id is None


def test_ghl_webhook_delete_and_top_level_location() -> None:
    body = {"type": "AppointmentDelete", "locationId": "loc-9", "webhookId": "wh-1", "timestamp": 1767225600000,
            "appointment": {"id": "a", **{k: v for k, v in BASE.items() if k != "locationId"}}}
    hook = parse_ghl_webhook(body)
    assert hook is not None and hook.type == "AppointmentDelete" and hook.webhook_id == "wh-1"
    assert hook.appointment.deleted and hook.appointment.location_id == "loc-9"
    assert hook.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert ghl_observation(hook.appointment, **ws(source=Source.WEBHOOK)).status is Status.CANCELED
    assert parse_ghl_webhook({"locationId": "x"}) is None


def test_ghl_free_slots_and_contact_lookup() -> None:
    slots = parse_ghl_free_slots({
        "2024-10-28": {"slots": ["2024-10-28T10:00:00-05:00", "bad", {"startTime": "2024-10-28T11:00:00-05:00"}]},
        "_dates_": {"slots": ["2024-10-28T10:00:00-05:00"]},
        "traceId": "t",
    })
    assert slots == [datetime(2024, 10, 28, 15, tzinfo=UTC), datetime(2024, 10, 28, 16, tzinfo=UTC)]
    assert parse_ghl_contact_id({"contact": {"id": "c1", "email": "a@b.co"}, "traceId": "t"}) == "c1"
    assert parse_ghl_contact_id({"contact": None}) is None
    assert parse_ghl_contact_id({"contacts": [{"id": "c2"}], "total": 1}) == "c2"
    assert parse_ghl_contact_id("x") is None


# --------------------------------------------------------------------------------------------- Calendly

EVENT = "https://api.calendly.com/scheduled_events/EV1"
OLD = f"{EVENT}/invitees/OLD"
NEW = "https://api.calendly.com/scheduled_events/EV2/invitees/NEW"


def invitee(**kw: Any) -> dict[str, Any]:
    base = {"uri": OLD, "event": EVENT, "email": " Lead@Example.COM ", "status": "active", "rescheduled": False,
            "old_invitee": None, "new_invitee": None, "timezone": "Europe/Paris", "no_show": None,
            "created_at": "2026-02-01T10:00:00.000000Z", "updated_at": "2026-02-01T10:00:00.000000Z"}
    return {**base, **kw}


def event(**kw: Any) -> dict[str, Any]:
    base = {"uri": EVENT, "status": "active", "event_type": "https://api.calendly.com/event_types/ET1",
            "start_time": "2026-03-05T15:00:00.000000Z", "end_time": "2026-03-05T15:30:00.000000Z"}
    return {**base, **kw}


def test_calendly_invitee_active_confirmed() -> None:
    inv = parse_calendly_invitee({"resource": invitee()})
    assert inv.email == "lead@example.com" and "example" not in repr(inv)
    obs = calendly_observation(inv, parse_calendly_event({"resource": event()}), **ws())
    assert obs.provider is Provider.CALENDLY and obs.status is Status.CONFIRMED
    assert obs.calendly_invitee_uri == OLD and obs.calendly_scheduled_event_uri == EVENT
    assert obs.calendly_event_type_uri == "https://api.calendly.com/event_types/ET1"
    assert obs.start_at == datetime(2026, 3, 5, 15, tzinfo=UTC)
    assert obs.end_at == datetime(2026, 3, 5, 15, 30, tzinfo=UTC)
    assert obs.timezone == "Europe/Paris" and obs.booked_at == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert obs.provider_links_reschedules is True and obs.canceled_at is None


def test_calendly_status_comes_from_invitee_not_event() -> None:
    inv = parse_calendly_invitee(invitee(status="canceled", cancellation={
        "canceled_by": "Jane Doe", "reason": "mail me at jane@example.com or +1 555 123 4567",
        "canceler_type": "invitee", "created_at": "2026-02-02T09:00:00.000000Z"}))
    obs = calendly_observation(inv, parse_calendly_event(event(status="active")), **ws())  # group event stays active
    assert obs.status is Status.CANCELED
    assert obs.canceled_at == datetime(2026, 2, 2, 9, tzinfo=UTC)
    assert obs.cancel_reason == f"mail me at {EMAIL_MASK} or {PHONE_MASK}"
    assert "Jane" not in repr(inv)
    active_of_canceled_event = parse_calendly_invitee(invitee())
    assert calendly_observation(active_of_canceled_event, parse_calendly_event(event(status="canceled")),
                                **ws()).status is Status.CONFIRMED


def test_calendly_reschedule_links_both_ways() -> None:
    old = parse_calendly_invitee(invitee(status="canceled", rescheduled=True, new_invitee=NEW,
                                         cancellation={"canceler_type": "invitee", "reason": None}))
    new = parse_calendly_invitee(invitee(uri=NEW, event="https://api.calendly.com/scheduled_events/EV2",
                                         old_invitee=OLD))
    old_obs = calendly_observation(old, None, **ws())
    new_obs = calendly_observation(new, None, **ws())
    assert old_obs.status is Status.RESCHEDULED and old_obs.rescheduled_to_invitee_uri == NEW
    assert new_obs.status is Status.CONFIRMED and new_obs.rescheduled_from_invitee_uri == OLD
    assert old_obs.cancel_reason is None and old_obs.start_at is None


def test_calendly_no_show_and_legacy_canceled_flag() -> None:
    ns = parse_calendly_invitee(invitee(no_show={"uri": "https://api.calendly.com/invitee_no_shows/N1",
                                                 "created_at": "2026-03-05T16:00:00Z"}))
    assert calendly_observation(ns, None, **ws()).status is Status.NO_SHOW
    legacy = {k: v for k, v in invitee().items() if k != "status"}
    assert parse_calendly_invitee({**legacy, "canceled": True}).status == "canceled"
    assert parse_calendly_invitee({**legacy, "canceled": False}).status == "active"
    assert parse_calendly_invitee(legacy) is None
    weird = parse_calendly_invitee(invitee(status="pending"))
    with pytest.raises(UnknownStatusError):
        calendly_observation(weird, None, **ws())


def test_calendly_webhook_root_and_nested_forms() -> None:
    root = parse_calendly_webhook({"event": "invitee.created", "created_at": "2026-02-01T10:00:01Z",
                                   "payload": {**invitee(), "scheduled_event": event()}})
    assert root.event == "invitee.created" and root.invitee.uri == OLD and root.scheduled_event.uri == EVENT
    nested = parse_calendly_webhook({"event": "invitee.canceled", "payload": {
        "invitee": {k: v for k, v in invitee(status="canceled").items() if k != "event"},
        "event": {"uri": EVENT, "status": "canceled", "start_time": "2026-03-05T15:00:00Z"}}})
    assert nested.invitee.uri == OLD and nested.invitee.event_uri == EVENT
    assert nested.scheduled_event.start_at == datetime(2026, 3, 5, 15, tzinfo=UTC)
    assert parse_calendly_webhook({"event": "x"}) is None and parse_calendly_webhook([]) is None


def test_calendly_other_resources() -> None:
    et = parse_calendly_event_type({"resource": {"uri": "https://api.calendly.com/event_types/ET1", "duration": 30,
                                                 "custom_questions": [{"name": "Company", "required": True,
                                                                       "position": 1}, {"bad": 1}]}})
    assert et.duration_minutes == 30 and [q.name for q in et.custom_questions] == ["Company"]
    assert et.custom_questions[0].required
    times = parse_calendly_available_times({"collection": [
        {"status": "available", "start_time": "2026-03-05T15:00:00.000000Z", "invitees_remaining": 1},
        {"status": "available", "start_time": "nope"},
        {"status": "available", "start_time": "2026-03-05T15:00:00Z"}]})
    assert [t.start_at for t in times] == [datetime(2026, 3, 5, 15, tzinfo=UTC)]
    user = parse_calendly_user({"resource": {"uri": "https://api.calendly.com/users/U1", "email": "x@y.z",
                                             "current_organization": "https://api.calendly.com/organizations/O1"}})
    assert user.current_organization.endswith("/O1") and "x@y.z" not in repr(user)
    page = parse_calendly_page({"collection": [], "pagination": {"count": 0, "next_page": None}})
    assert page.collection == () and page.next_page is None
    assert parse_calendly_page({"resource": {}}) is None


def test_split_range() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    parts = split_range(start, start + timedelta(days=30), timedelta(days=7))
    assert len(parts) == 5 and parts[0] == (start, start + timedelta(days=7))
    assert parts[-1][1] == start + timedelta(days=30)
    assert all(hi - lo <= timedelta(days=7) for lo, hi in parts)
    assert split_range(start, start, timedelta(days=1)) == []


# ------------------------------------------------------------------------------- webhook event rules (SPEC §7)

_INV = CalendlyInvitee(uri="https://api.calendly.com/scheduled_events/e1/invitees/i1", status="active",
                       event_uri="https://api.calendly.com/scheduled_events/e1")
_KW: dict[str, Any] = {"workspace_id": "ws1", "lead_id": "lead1", "source": Source.WEBHOOK}


def test_calendly_no_show_created_marks_and_deleted_unmarks() -> None:
    marked = calendly_event_invitee("invitee_no_show.created", _INV)
    assert marked.no_show is not None and marked.status == "active"
    already = CalendlyNoShow(uri="https://api.calendly.com/invitee_no_shows/n1")
    kept = calendly_event_invitee("invitee_no_show.created", CalendlyInvitee(uri=_INV.uri, status="active",
                                                                               no_show=already))
    assert kept.no_show is already
    assert calendly_event_invitee("invitee_no_show.deleted", marked).no_show is None


def test_calendly_canceled_event_forces_a_canceled_invitee() -> None:
    forced = calendly_event_invitee("invitee.canceled", _INV)
    assert forced.status == "canceled"
    assert calendly_event_invitee("invitee.created", _INV) is _INV
    rescheduled = CalendlyInvitee(uri=_INV.uri, status="active", rescheduled=True)
    assert calendly_event_invitee("invitee.canceled", rescheduled).status == "canceled"


def _calendly_delivery(event: str, **invitee: Any) -> dict[str, Any]:
    return {"event": event, "created_at": "2026-03-01T10:00:00Z",
            "payload": {"uri": _INV.uri, "event": _INV.event_uri, "status": "active", **invitee}}


@pytest.mark.parametrize("event,extra,expected", [
    ("invitee.created", {}, Status.CONFIRMED),
    ("invitee.canceled", {}, Status.CANCELED),
    ("invitee.canceled", {"rescheduled": True}, Status.RESCHEDULED),
    ("invitee_no_show.created", {}, Status.NO_SHOW),
    ("invitee_no_show.deleted", {"no_show": {"uri": "https://api.calendly.com/invitee_no_shows/n1"}},
     Status.CONFIRMED),
])
def test_calendly_webhook_observation_status(event: str, extra: dict[str, Any], expected: Status) -> None:
    obs = calendly_webhook_observation(event, _calendly_delivery(event, **extra), **_KW)
    assert (obs.status, obs.calendly_invitee_uri, obs.source) == (expected, _INV.uri, Source.WEBHOOK)


def test_calendly_webhook_without_invitee_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing_invitee"):
        calendly_webhook_observation("invitee.created", {"event": "invitee.created", "payload": {}}, **_KW)


def test_ghl_bare_delete_is_canceled_with_reason_deleted_and_no_times() -> None:
    obs = ghl_webhook_observation("AppointmentDelete", {"type": "AppointmentDelete",
                                                        "appointment": {"id": "g1", "calendarId": "cal-1"}}, **_KW)
    assert (obs.status, obs.cancel_reason, obs.ghl_appointment_id, obs.ghl_calendar_id) == (
        Status.CANCELED, GHL_DELETED_REASON, "g1", "cal-1")
    assert obs.start_at is None and obs.provider is Provider.GHL
    flagged = ghl_webhook_observation("AppointmentUpdate", {"appointment": {"id": "g1", "deleted": True}}, **_KW)
    assert (flagged.status, flagged.cancel_reason) == (Status.CANCELED, GHL_DELETED_REASON)


def test_ghl_webhook_without_times_uses_the_raw_status_and_needs_an_id() -> None:
    obs = ghl_webhook_observation("AppointmentUpdate", {"appointment": {"id": "g1", "appointmentStatus": "noshow"}},
                                  **_KW)
    assert (obs.status, obs.cancel_reason) == (Status.NO_SHOW, None)
    with pytest.raises(UnknownStatusError):
        ghl_webhook_observation("AppointmentUpdate", {"appointment": {"id": "g1", "appointmentStatus": "odd"}}, **_KW)
    with pytest.raises(ValueError, match="missing_appointment"):
        ghl_webhook_observation("AppointmentDelete", {"appointment": {}}, **_KW)


def test_ghl_webhook_with_times_goes_through_ghl_observation() -> None:
    obs = ghl_webhook_observation("AppointmentCreate", {"type": "AppointmentCreate", **G1}, **_KW)
    assert obs == ghl_observation(parse_ghl_webhook({"type": "AppointmentCreate", **G1}).appointment, **_KW)
