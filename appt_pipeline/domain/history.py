"""Rules of a lead's appointment history (SPEC §10): filters, the rollup fallback, time moves as people read them.

Pure: no I/O. The set-based twin of :func:`passes_filters` is the WHERE clause of
``appt_pipeline.store.history``; both are pinned by the history tests.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appt_pipeline.domain.timeparse import format_booked_slot, parse_timestamp_or_none
from appt_pipeline.domain.vocab import STATUS_SYNONYMS, Provider, Source, Status, normalise_status_key

#: ``limit`` of a history read: default and largest value (SPEC §10).
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

#: The keys of one history item, in the order of SPEC §10 (the API's exact JSON).
ITEM_KEYS: tuple[str, ...] = (
    "id", "provider", "status", "start_at", "end_at", "timezone", "source", "last_source", "ghl_appointment_id",
    "calendly_invitee_uri", "ghl_calendar_id", "calendly_event_type_uri", "rescheduled_from_id",
    "rescheduled_to_id", "canceled_at", "cancel_reason", "changes",
)
#: The keys of one change of an item (SPEC §10).
CHANGE_KEYS: tuple[str, ...] = ("from_status", "to_status", "from_start_at", "to_start_at", "source", "observed_at")


@dataclass(frozen=True)
class HistoryFilters:
    """Filters of a history read (SPEC §10): ``include_canceled`` (default True) keeps CANCELED rows;
    ``active_only`` keeps only CONFIRMED rows starting at or after ``now`` or without a start; ``limit`` rows
    at most (1 … :data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`).

    Raises:
        ValueError: ``limit`` outside 1 … :data:`MAX_LIMIT`.
    """

    include_canceled: bool = True
    active_only: bool = False
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")


def is_active(status: Status | str | None, start_at: datetime | None, now: datetime) -> bool:
    """SPEC §10 ``active_only``: CONFIRMED and starting at or after ``now`` (UTC), or without a start time."""
    return status == Status.CONFIRMED and (start_at is None or start_at >= now)


def passes_filters(status: Status | str | None, start_at: datetime | None, now: datetime,
                   filters: HistoryFilters) -> bool:
    """Whether a row with ``status`` and ``start_at`` is kept by ``filters`` at ``now`` (SPEC §10)."""
    if not filters.include_canceled and status == Status.CANCELED:
        return False
    return not filters.active_only or is_active(status, start_at, now)


def _rollup_status(raw: str | None, has_provider_id: bool) -> Status | None:
    """The §2 status of a legacy rollup string; ``None`` when it is not in the vocabulary (never guessed)."""
    if raw is None or not raw.strip():
        return Status.CONFIRMED if has_provider_id else None
    return STATUS_SYNONYMS.get(normalise_status_key(raw))


def _rollup_source(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return Source(raw.strip().upper()).value
    except ValueError:
        return None


def rollup_item(rollup: Mapping[str, Any]) -> dict[str, Any] | None:
    """The history item a lead without appointment rows answers with (SPEC §10 ``from_rollup``), from its
    rollup columns (``leads``: the eleven of SPEC §3), or ``None`` when the rollup records no appointment.

    ``id`` and every field the lead does not keep (time zone, attribution, links, cancel reason) are null,
    ``changes`` is empty; ``start_at`` is ``appointment_start_at``, else ``booked_slot`` when it parses;
    ``status`` follows SPEC §2 (null for a string outside the vocabulary); ``source`` = ``last_source`` = the
    rollup source upper-cased. Times are ISO-8601 UTC strings (``2026-03-05T15:00:00.000Z``).
    """
    ids = [rollup.get(k) for k in ("ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri")]
    has_id = any(ids)
    raw_status = rollup.get("appointment_status")
    evidence = has_id or any(rollup.get(k) for k in ("appointment_booked_at", "appointment_start_at",
                                                       "booked_slot")) or bool(raw_status and raw_status.strip())
    if not evidence:
        return None
    start_at = rollup.get("appointment_start_at") or parse_timestamp_or_none(rollup.get("booked_slot"))
    provider = rollup.get("appointment_provider")
    if provider is None:
        provider = (Provider.GHL.value if rollup.get("ghl_appointment_id")
                    else Provider.CALENDLY.value if ids[1] or ids[2] else None)
    status = _rollup_status(raw_status, has_id)
    source = _rollup_source(rollup.get("appointment_source"))
    return {
        "id": None, "provider": str(provider) if provider is not None else None,
        "status": status.value if status is not None else None,
        "start_at": format_booked_slot(start_at), "end_at": format_booked_slot(rollup.get("appointment_end_at")),
        "timezone": None, "source": source, "last_source": source,
        "ghl_appointment_id": rollup.get("ghl_appointment_id"),
        "calendly_invitee_uri": rollup.get("calendly_invitee_uri"),
        "ghl_calendar_id": None, "calendly_event_type_uri": None, "rescheduled_from_id": None,
        "rescheduled_to_id": None, "canceled_at": format_booked_slot(rollup.get("appointment_canceled_at")),
        "cancel_reason": None, "changes": [],
    }


# ---------------------------------------------------------------------------------------- for people


def display_zone(lead_timezone: str | None, workspace_timezone: str | None) -> tuple[ZoneInfo, str]:
    """The zone a lead's times are shown in, and why: the lead's, else the workspace's, else UTC (the order of
    SPEC §4.4); a name that is not an IANA zone is skipped."""
    for name, why in ((lead_timezone, "the lead's time zone"), (workspace_timezone, "the workspace's time zone")):
        if name:
            try:
                return ZoneInfo(name), why
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC"), "no time zone set for the lead or the workspace"


def format_local(when: datetime, zone: ZoneInfo, *, with_date: bool = False) -> str:
    """``Tue 14:00`` (weekday and 24-hour time) in ``zone``; with ``with_date``: ``Tue 3 Mar 14:00``."""
    local = when.astimezone(zone)
    if with_date:
        return f"{local:%a} {local.day} {local:%b %H:%M}"
    return f"{local:%a %H:%M}"


def format_move(before: datetime, after: datetime, zone: ZoneInfo) -> str:
    """A start-time move as people read it, in ``zone``: ``Tue 14:00 → Wed 16:00`` when both times lie within
    six days of each other (weekdays are then unambiguous), else with dates: ``Tue 3 Mar 14:00 → Wed 18 Mar
    16:00``."""
    close = abs(after - before) < timedelta(days=6)
    return f"{format_local(before, zone, with_date=not close)} → {format_local(after, zone, with_date=not close)}"
