"""Side-effect rules of SPEC §3 (lead status), §4.3 (reschedule heuristic) and §4.4 (follow-up tasks).

Pure: no I/O. The lead-status (SPEC §3) and reschedule-window (SPEC §4.3) rules themselves exist once,
set-based in SQL in ``store.write_path`` (``side_effects``, ``links``), built from the constants here;
this module holds those constants and what is needed for a single value (task messages, time zones).
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appt_pipeline.domain.vocab import LeadStatus

#: Window of the reschedule heuristic, used only when the provider gives no link (SPEC §4.3).
RESCHEDULE_LINK_WINDOW = timedelta(hours=6)

#: Lead statuses that a new CONFIRMED primary never overrides (SPEC §3).
STATUS_PROTECTED_FROM_BOOKING: frozenset[str] = frozenset({LeadStatus.UNQUALIFIED, LeadStatus.BLACKLISTED})

#: Lead statuses of the booking funnel: such a lead is engaged, so reconciliation checks it (SPEC §6).
STATUS_BOOKING_FUNNEL: frozenset[str] = frozenset({LeadStatus.MEETING_REQUESTED, LeadStatus.MEETING_BOOKED})

TASK_MEETING_CANCELED = "meeting-canceled"
TASK_MEETING_RESCHEDULED = "meeting-rescheduled"


def resolve_timezone(*candidates: str | None) -> ZoneInfo:
    """First valid IANA zone among ``candidates`` (lead, then workspace), else UTC (SPEC §4.4)."""
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def format_meeting_time(start_at: datetime, zone: ZoneInfo) -> str:
    """``Tue, Jan 6, 4:00 PM EST``: US English short form in ``zone`` with its abbreviation."""
    local = start_at.astimezone(zone)
    hour = local.hour % 12 or 12
    return f"{local:%a, %b} {local.day}, {hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'} {local:%Z}"


def task_message(task_type: str, start_at: datetime | None, zone: ZoneInfo) -> str:
    """Suggested message of a follow-up task (docs/original-system.md §9, timezone fixed per SPEC §4.4)."""
    if task_type == TASK_MEETING_RESCHEDULED:
        if start_at is None:
            return "Meeting was rescheduled. Review and confirm the new time with the lead."
        return (
            f"Meeting originally scheduled for {format_meeting_time(start_at, zone)} was rescheduled. "
            "Review and confirm the new time with the lead."
        )
    if start_at is None:
        return "Meeting was canceled. Follow up to reschedule."
    return (
        f"Meeting originally scheduled for {format_meeting_time(start_at, zone)} was canceled. "
        "Follow up to reschedule."
    )


def move_message(original: datetime, new: datetime | None, zone: ZoneInfo) -> str:
    """Suggested message of the ``meeting-rescheduled`` task of a move to another time (SPEC §4.3): both times
    in ``zone``."""
    if new is None:
        return task_message(TASK_MEETING_RESCHEDULED, original, zone)
    return (
        f"Meeting originally scheduled for {format_meeting_time(original, zone)} was moved to "
        f"{format_meeting_time(new, zone)}. Review and confirm the new time with the lead."
    )


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
