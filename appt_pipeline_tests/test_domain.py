"""Pure domain rules (no database): §2 status mapping, §3 primary selection and rollup, §4.3 reschedule window,
§3 lead status rule, §4.4 task messages; plus Hypothesis properties of the primary rule.

Vectors are those of docs/original-system.md §15.5 (ref 2026-03-01T12:00Z) where they apply; SPEC §2
overrides the original's ``invalid`` → confirmed (it maps to CANCELED here).
"""

from __future__ import annotations

import uuid
from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appt_pipeline.domain.observation import InvalidObservationError, Observation
from appt_pipeline.domain.primary import EMPTY_ROLLUP, LeadRollup, build_rollup, primary_rank, select_primary
from appt_pipeline.domain.rules import (
    TASK_MEETING_CANCELED,
    TASK_MEETING_RESCHEDULED,
    resolve_timezone,
    task_message,
)
from appt_pipeline.domain.signatures import (
    GHL_EXPIRED,
    GHL_FRESH,
    GHL_RETRY,
    SignatureError,
    check_ghl_timestamp,
    ghl_replay_verdict,
)
from appt_pipeline.domain.timeparse import format_booked_slot, parse_timestamp
from appt_pipeline.domain.vocab import Provider, Source, Status, UnknownStatusError, map_status
from appt_pipeline_tests.helpers.primary_vectors import PRIMARY_VECTORS, C, N, R, Row, S, X, row

REF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)




def name_of(found: Row | None) -> str | None:
    if found is None:
        return None
    return next(n for n in "ABCDEFGH" if uuid.uuid5(uuid.NAMESPACE_URL, n) == found.id)


# ------------------------------------------------------------------------------------------- §3 primary


@pytest.mark.parametrize(("rows", "expected"), [(r, e) for _, r, e in PRIMARY_VECTORS],
                         ids=[n for n, _, _ in PRIMARY_VECTORS])
def test_primary_vectors(rows: list[Row], expected: str) -> None:
    assert name_of(select_primary(rows, REF)) == expected
    assert name_of(select_primary(list(reversed(rows)), REF)) == expected


def test_no_rows_no_primary_and_empty_rollup() -> None:
    assert select_primary([], REF) is None
    assert build_rollup(None) == EMPTY_ROLLUP
    assert astuple(EMPTY_ROLLUP) == (None,) * 11
    assert LeadRollup() == EMPTY_ROLLUP


def test_primary_ranks() -> None:
    assert primary_rank(row("A", C, start_at="2026-03-01T12:01"), REF) == 1
    assert primary_rank(row("A", C, start_at="2026-03-01T12:00"), REF) == 2
    assert primary_rank(row("A", C), REF) == 3
    assert primary_rank(row("A", X), REF) == 4
    assert [primary_rank(row("A", s), REF) for s in (R, S, N)] == [5, 5, 5]


def test_primary_compares_microseconds_exactly() -> None:
    base = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)
    a = Row(uuid.uuid4(), C, at("2026-01-01T00:00"), start_at=base + timedelta(microseconds=2))
    b = Row(uuid.uuid4(), C, at("2026-01-01T00:00"), start_at=base + timedelta(microseconds=1))
    assert select_primary([a, b], REF) is b


# ------------------------------------------------------------------------------------------- §3 rollup


def test_rollup_vector_calendly_confirmed() -> None:
    created = datetime(2026, 2, 20, 8, 30, 15, 123456, tzinfo=UTC)
    p = Row(
        id=uuid.uuid4(), status=C, created_at=created, start_at=at("2026-03-05T15:00"), end_at=at("2026-03-05T15:30"),
        provider=Provider.CALENDLY, source=Source.WEBHOOK, ghl_appointment_id=None,
        calendly_invitee_uri="https://api.calendly.com/scheduled_events/E1/invitees/I1",
        calendly_scheduled_event_uri="https://api.calendly.com/scheduled_events/E1",
    )
    assert build_rollup(p) == LeadRollup(
        ghl_appointment_id=None,
        calendly_invitee_uri="https://api.calendly.com/scheduled_events/E1/invitees/I1",
        calendly_scheduled_event_uri="https://api.calendly.com/scheduled_events/E1",
        appointment_booked_at=created,
        appointment_start_at=at("2026-03-05T15:00"),
        appointment_end_at=at("2026-03-05T15:30"),
        appointment_status="confirmed",
        appointment_canceled_at=None,
        appointment_provider="CALENDLY",
        appointment_source="webhook",
        booked_slot="2026-03-05T15:00:00.000Z",
    )


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize("status", list(Status))
def test_rollup_lowercase_strings(status: Status, source: Source) -> None:
    r = build_rollup(Row(uuid.uuid4(), status, REF, source=source, canceled_at=REF if status is X else None))
    assert r.appointment_status == status.value.lower()
    assert r.appointment_source == source.value.lower()
    assert r.booked_slot is None
    assert r.appointment_canceled_at == (REF if status is X else None)
    assert r.appointment_provider == "GHL" and r.ghl_appointment_id == "ghl-1"


def test_booked_slot_truncates_to_milliseconds() -> None:
    assert format_booked_slot(datetime(2026, 3, 5, 15, 0, 0, 999_999, tzinfo=UTC)) == "2026-03-05T15:00:00.999Z"
    assert format_booked_slot(datetime(2026, 3, 5, 15, 0, 0, 1_999, tzinfo=UTC)) == "2026-03-05T15:00:00.001Z"
    assert format_booked_slot(datetime(2026, 3, 5, 15, 0, 0, 999, tzinfo=UTC)) == "2026-03-05T15:00:00.000Z"
    # any zone is rendered in UTC
    assert format_booked_slot(parse_timestamp("2026-03-05T10:00:00.5-05:00")) == "2026-03-05T15:00:00.500Z"
    assert format_booked_slot(None) is None
    with pytest.raises(ValueError):
        format_booked_slot(datetime(2026, 3, 5, 15, 0))


def test_parse_timestamp() -> None:
    assert parse_timestamp("2026-01-06T09:00:00-07:00") == at("2026-01-06T16:00")
    assert parse_timestamp("2026-03-05T15:00:00Z") == at("2026-03-05T15:00")
    assert parse_timestamp("2026-03-05 15:00") == at("2026-03-05T15:00")
    assert parse_timestamp("  ") is None and parse_timestamp(None) is None
    with pytest.raises(ValueError, match="tomorrow 3pm"):
        parse_timestamp("tomorrow 3pm")


# ------------------------------------------------------------------------------------------- §2 mapping

MAPPING = {
    "confirmed": C, "booked": C, "new": C, "active": C,
    "canceled": X, "cancelled": X, "invalid": X,
    "rescheduled": R,
    "showed": S, "completed": S,
    "no_show": N, "noshow": N, "no-show": N,
}  # fmt: skip


@pytest.mark.parametrize(("raw", "expected"), sorted(MAPPING.items()))
def test_status_mapping_table(raw: str, expected: Status) -> None:
    assert map_status(raw) is expected
    assert map_status(raw.upper()) is expected
    assert map_status(f"  {raw.title()}\t") is expected
    assert map_status(raw, has_provider_id=False) is expected


@pytest.mark.parametrize(("raw", "expected"), [
    (" Cancelled ", X), ("Cancelled", X), ("Canceled", X), ("CONFIRMED", C), ("NoShow", N), ("No-Show", N),
    ("noshow", N), ("invalid", X), ("Invalid", X),
])  # fmt: skip
def test_status_mapping_vectors(raw: str, expected: Status) -> None:
    assert map_status(raw) is expected


@pytest.mark.parametrize("blank", [None, "", "   ", "\t"])
def test_blank_status_needs_a_provider_id(blank: str | None) -> None:
    assert map_status(blank, has_provider_id=True) is C
    assert map_status(blank) is C
    with pytest.raises(UnknownStatusError) as info:
        map_status(blank, has_provider_id=False)
    assert info.value.kind == "unknown_status"


@pytest.mark.parametrize("raw", ["pending", "no show", "cancel", "confirm", "showed!", "rescheduled_x", "0", "null"])
def test_unknown_status_raises_naming_value(raw: str) -> None:
    with pytest.raises(UnknownStatusError) as info:
        map_status(raw)
    assert info.value.kind == "unknown_status"
    assert info.value.value == raw
    assert repr(raw) in str(info.value)


def test_enum_rollup_strings() -> None:
    assert [s.rollup for s in Status] == ["confirmed", "canceled", "rescheduled", "showed", "no_show"]
    assert [s.rollup for s in Source] == ["webhook", "reconcile_cron", "backfill", "auto_book", "manual", "migration"]
    assert {s for s in Source if not s.has_side_effects} == {Source.MIGRATION, Source.BACKFILL}


# ------------------------------------------------------------------------------------------- observations


def test_observation_validation() -> None:
    base = Observation("ws", "l", Provider.GHL, C, Source.WEBHOOK, ghl_appointment_id="g1")
    assert base.validate() is base and base.key == "ghl:g1"
    with pytest.raises(InvalidObservationError) as info:
        replace(base, ghl_appointment_id=None).validate()
    assert info.value.kind == "missing_provider_key"
    with pytest.raises(InvalidObservationError) as info:
        replace(base, calendly_invitee_uri="https://api.calendly.com/x").validate()
    assert info.value.kind == "mixed_provider_ids"
    with pytest.raises(InvalidObservationError) as info:
        replace(base, start_at=datetime(2026, 1, 1)).validate()
    assert info.value.kind == "naive_datetime"
    cal = Observation("ws", "l", Provider.CALENDLY, C, Source.WEBHOOK, calendly_invitee_uri="u")
    with pytest.raises(InvalidObservationError) as info:
        replace(cal, ghl_appointment_id="g").validate()
    assert info.value.kind == "mixed_provider_ids"
    with pytest.raises(InvalidObservationError):
        replace(cal, calendly_invitee_uri=None, calendly_scheduled_event_uri="e").validate()
    legacy = replace(cal, calendly_invitee_uri=None, calendly_scheduled_event_uri="e", legacy_lead_key="k")
    assert legacy.validate().key == "legacy:k"
    cleaned = replace(base, ghl_calendar_id="", calendly_event_type_uri="").validate()
    assert cleaned.ghl_calendar_id is None and cleaned.calendly_event_type_uri is None


def test_observation_empty_ids_are_absent() -> None:
    """An empty-string id of the other provider is no id at all (it must not reach the CHECK constraint)."""
    g = Observation("ws", "l", Provider.GHL, C, Source.WEBHOOK, ghl_appointment_id="g1", calendly_invitee_uri="",
                    calendly_scheduled_event_uri="").validate()
    assert g.calendly_invitee_uri is None and g.calendly_scheduled_event_uri is None
    c = Observation("ws", "l", Provider.CALENDLY, C, Source.WEBHOOK, calendly_invitee_uri="u",
                    ghl_appointment_id="").validate()
    assert c.ghl_appointment_id is None
    with pytest.raises(InvalidObservationError):
        Observation("ws", "l", Provider.GHL, C, Source.WEBHOOK, ghl_appointment_id="").validate()


# ------------------------------------------------------------------------------------------- §4.4 messages


def test_task_message_timezones() -> None:
    start = at("2026-01-06T21:00")
    ny, berlin = "America/New_York", "Europe/Berlin"
    assert resolve_timezone(ny, berlin) == ZoneInfo(ny)
    assert resolve_timezone(None, berlin) == ZoneInfo(berlin)
    assert resolve_timezone("", "Not/AZone", berlin) == ZoneInfo(berlin)
    assert resolve_timezone(None, None) == ZoneInfo("UTC")
    assert resolve_timezone("Not/AZone") == ZoneInfo("UTC")
    lead_msg = task_message(TASK_MEETING_CANCELED, start, resolve_timezone(ny, berlin))
    ws_msg = task_message(TASK_MEETING_CANCELED, start, resolve_timezone(None, berlin))
    utc_msg = task_message(TASK_MEETING_CANCELED, start, resolve_timezone(None, None))
    assert lead_msg == "Meeting originally scheduled for Tue, Jan 6, 4:00 PM EST was canceled. Follow up to reschedule."
    assert ws_msg == "Meeting originally scheduled for Tue, Jan 6, 10:00 PM CET was canceled. Follow up to reschedule."
    assert utc_msg == "Meeting originally scheduled for Tue, Jan 6, 9:00 PM UTC was canceled. Follow up to reschedule."
    assert task_message(TASK_MEETING_CANCELED, None, ZoneInfo("UTC")) == (
        "Meeting was canceled. Follow up to reschedule.")
    assert task_message(TASK_MEETING_RESCHEDULED, None, ZoneInfo("UTC")) == (
        "Meeting was rescheduled. Review and confirm the new time with the lead."
    )
    assert task_message(TASK_MEETING_RESCHEDULED, at("2026-07-06T09:05"), ZoneInfo(ny)) == (
        "Meeting originally scheduled for Mon, Jul 6, 5:05 AM EDT was rescheduled. "
        "Review and confirm the new time with the lead."
    )
    assert "12:00 AM" in task_message(TASK_MEETING_CANCELED, at("2026-01-06T00:00"), ZoneInfo("UTC"))
    assert "12:30 PM" in task_message(TASK_MEETING_CANCELED, at("2026-01-06T12:30"), ZoneInfo("UTC"))


# ------------------------------------------------------------------------------------------- properties

# A small grid of instants around REF so that ties (equal created_at, equal start_at) are common.
INSTANTS = [REF + timedelta(hours=h) for h in (-72, -24, -1, 0, 1, 24, 72)] + [REF + timedelta(microseconds=1)]
instants = st.sampled_from(INSTANTS)


ANY_STATUS = st.sampled_from(list(Status))


@st.composite
def row_strategy(draw: st.DrawFn, status: st.SearchStrategy[Status] = ANY_STATUS) -> Row:
    s = draw(status)
    return Row(
        id=draw(st.uuids()),
        status=s,
        created_at=draw(instants),
        start_at=draw(st.none() | instants),
        canceled_at=draw(st.none() | instants) if s is X else None,
        source=draw(st.sampled_from(list(Source))),
    )


row_lists = st.lists(row_strategy(), min_size=1, max_size=8, unique_by=lambda r: r.id)


@settings(max_examples=300, deadline=None)
@given(rows=row_lists, ref=instants)
def test_primary_is_one_of_the_rows(rows: list[Row], ref: datetime) -> None:
    primary = select_primary(rows, ref)
    assert primary is not None and primary in rows
    # no other row has a strictly better §3 rank
    assert primary_rank(primary, ref) == min(primary_rank(r, ref) for r in rows)
    assert build_rollup(primary).appointment_status == primary.status.value.lower()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rows=row_lists, ref=instants)
def test_primary_does_not_depend_on_order(data: st.DataObject, rows: list[Row], ref: datetime) -> None:
    shuffled = data.draw(st.permutations(rows))
    assert select_primary(shuffled, ref) == select_primary(rows, ref)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(row_strategy(), min_size=0, max_size=8, unique_by=lambda r: r.id),
    new=row_strategy(st.just(C)),
    ahead=st.integers(min_value=1, max_value=10**9),
    ref=instants,
)
def test_future_confirmed_never_makes_a_past_row_primary(rows: list[Row], new: Row, ahead: int, ref: datetime) -> None:
    new = replace(new, start_at=ref + timedelta(microseconds=ahead), created_at=max(r.created_at for r in [new, *rows]))
    assert new.id not in {r.id for r in rows}
    before = select_primary(rows, ref)
    after = select_primary([*rows, new], ref)
    assert after is not None and after.status is C
    assert after.start_at is not None and after.start_at > ref
    assert after is new or after is before


@pytest.mark.parametrize("signed", ["body_only", "no_dot", "dot_after_body"])
def test_calendly_signatures_not_over_t_dot_body_are_refused(signed: str) -> None:
    """SPEC §7: Calendly's HMAC covers ``t + "." + body``; a signature over anything else never passes."""
    import hashlib
    import hmac

    from appt_pipeline.domain.signatures import SignatureError, calendly_signature, verify_calendly

    key, body, t = "signing-key", b'{"event":"invitee.created"}', 1_700_000_000
    assert verify_calendly(calendly_signature(key, body, t), body, key, now=t) == t  # the right one passes
    message = {"body_only": body, "no_dot": str(t).encode() + body, "dot_after_body": body + b"." + str(t).encode()}
    digest = hmac.new(key.encode(), message[signed], hashlib.sha256).hexdigest()
    with pytest.raises(SignatureError) as info:
        verify_calendly(f"t={t},v1={digest}", body, key, now=t)
    assert info.value.reason == "bad_signature"


# ------------------------------------------------------------------------------- GHL replay window (§7)

GHL_NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("offset", "verdict"), [
    (timedelta(0), GHL_FRESH), (timedelta(minutes=-5), GHL_FRESH), (timedelta(minutes=5), GHL_FRESH),
    (timedelta(minutes=-5, seconds=-1), GHL_RETRY), (timedelta(minutes=-10), GHL_RETRY),
    (timedelta(hours=-24), GHL_RETRY), (timedelta(hours=-24, seconds=-1), GHL_EXPIRED),
    (timedelta(days=-29), GHL_EXPIRED),
])
def test_ghl_replay_verdict_by_age(offset: timedelta, verdict: str) -> None:
    assert ghl_replay_verdict(GHL_NOW + offset, now=GHL_NOW) == verdict


def test_ghl_timestamp_too_far_ahead_or_expired_and_unseen_is_stale() -> None:
    with pytest.raises(SignatureError, match="stale_timestamp"):
        ghl_replay_verdict(GHL_NOW + timedelta(minutes=5, seconds=1), now=GHL_NOW)
    with pytest.raises(SignatureError, match="stale_timestamp"):
        check_ghl_timestamp(GHL_NOW - timedelta(hours=25), now=GHL_NOW)
    check_ghl_timestamp(GHL_NOW - timedelta(hours=25), now=GHL_NOW, seen=True)  # a duplicate, whatever its age
    check_ghl_timestamp(GHL_NOW - timedelta(hours=23), now=GHL_NOW)
