"""Calendar capacity maths and the shape of a capacity report (docs/rules.md §9).

Pure: no I/O. Capacity of a window [now, now + N days) (start inclusive, end exclusive, N clamped to
1…90): per configured calendar key, ``booked`` = CONFIRMED appointments attributed to it starting in the
window, ``available`` = distinct free slot starts in the window; ``booked_pct = booked / (booked +
available)`` clamped to [0, 1], ``None`` when the sum is 0. The workspace total (key ``*``) counts every
CONFIRMED row of the workspace in the window (the unattributed ones reported separately) against the union
of the calendars' free slots (a slot offered by two calendars counts once).

:class:`CapacityReport` is the one shape every reader prints: ``appt-pipeline capacity --json``, the
``calendar_capacity`` asset's metadata and the HTTP API (:meth:`CapacityReport.as_dict`).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from appt_pipeline.domain.calendars import TOTAL_KEY
from appt_pipeline.domain.timeparse import format_booked_slot, parse_timestamp

#: Window length (days) when none is asked for, and its bounds (SPEC §9).
DEFAULT_WINDOW_DAYS = 30
MIN_WINDOW_DAYS = 1
MAX_WINDOW_DAYS = 90

#: ``last_error`` reported for a configured calendar whose availability was never fetched (no status row and
#: no stored slot): capacity then counts 0 free slots, and says so instead of passing it off as fresh.
NEVER_FETCHED = "availability never fetched"


def clamp_window_days(days: int | None) -> int:
    """``days`` clamped to 1…90 (``None`` → 30). Raises ``TypeError`` for a non-integer (``bool`` included)."""
    if days is None:
        return DEFAULT_WINDOW_DAYS
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError(f"window days must be an integer, got {days!r}")
    return max(MIN_WINDOW_DAYS, min(MAX_WINDOW_DAYS, days))


def window_days_in_range(days: int) -> bool:
    """True when ``days`` lies in 1…90 (what the command line and the API accept without clamping)."""
    return MIN_WINDOW_DAYS <= days <= MAX_WINDOW_DAYS


def capacity_window(now: datetime, days: int | None) -> tuple[datetime, datetime, int]:
    """``(window_start, window_end, window_days)``: [now, now + days × 24 h) in UTC with ``days`` clamped
    (:func:`clamp_window_days`). ``now`` must be timezone-aware (``ValueError`` otherwise)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    n = clamp_window_days(days)
    start = now.astimezone(UTC)
    return start, start + timedelta(days=n), n


def window_dates(start: datetime, end: datetime) -> list[date]:
    """The UTC days the window [start, end) touches, in order (N + 1 days when ``start`` is not midnight)."""
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)] if end > start else []


def booked_pct(booked: int, available: int) -> float | None:
    """``booked / (booked + available)`` clamped to [0, 1]; ``None`` when the sum is ≤ 0 (SPEC §9)."""
    denominator = booked + available
    if denominator <= 0:
        return None
    return min(1.0, max(0.0, booked / denominator))


def slot_starts_in_window(values: Iterable[object], start: datetime, end: datetime) -> list[datetime]:
    """The free slot starts of a provider's answer that count for the window [start, end): each value an
    ISO-8601 string or an aware ``datetime``; unparseable, naive or out-of-range values are dropped,
    duplicates (the same instant, whatever its offset) counted once; sorted, UTC (SPEC §9)."""
    found: set[datetime] = set()
    for value in values:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                continue
            parsed: datetime | None = value.astimezone(UTC)
        elif isinstance(value, str):
            try:
                parsed = parse_timestamp(value)
            except ValueError:
                continue
        else:
            continue
        if parsed is not None and start <= parsed < end:
            found.add(parsed)
    return sorted(found)


def iso_utc(value: datetime) -> str:
    """``value`` as ISO-8601 UTC with milliseconds and ``Z`` (``2026-03-05T15:00:00.000Z``)."""
    text = format_booked_slot(value)
    assert text is not None
    return text


class _SlotCounts:
    """``total_slots`` and ``booked_pct`` derived from ``booked_slots`` and ``available_slots`` (rules §9)."""

    booked_slots: int
    available_slots: int

    @property
    def total_slots(self) -> int:
        return self.booked_slots + self.available_slots

    @property
    def booked_pct(self) -> float | None:
        return booked_pct(self.booked_slots, self.available_slots)


@dataclass(frozen=True)
class CalendarCapacity(_SlotCounts):
    """Capacity of one configured calendar / event type over the window.

    ``calendar_key``: GHL calendar id or Calendly event type URI; ``provider`` / ``availability_source``:
    the enum values (``GHL`` | ``CALENDLY``, ``DEFAULT`` | ``DIRECT_BOOK``); ``booked_slots``: CONFIRMED rows
    attributed to it starting in the window; ``available_slots``: distinct free slot starts in the window;
    ``stale``: the availability used is past its ``stale_at`` or was never fetched successfully;
    ``last_error``: the last refresh's masked error, or :data:`NEVER_FETCHED`.
    """

    calendar_key: str
    provider: str
    availability_source: str
    booked_slots: int
    available_slots: int
    stale: bool
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"calendar_key": self.calendar_key, "provider": self.provider,
                "availability_source": self.availability_source, "booked_slots": self.booked_slots,
                "available_slots": self.available_slots, "total_slots": self.total_slots,
                "booked_pct": self.booked_pct, "stale": self.stale, "last_error": self.last_error}


@dataclass(frozen=True)
class TotalCapacity(_SlotCounts):
    """The workspace total (key ``*``): every CONFIRMED row of the workspace in the window against the union
    of the calendars' free slots; ``unattributed_booked_slots`` = rows attributed to no configured calendar."""

    booked_slots: int
    available_slots: int
    unattributed_booked_slots: int

    def as_dict(self) -> dict[str, Any]:
        return {"booked_slots": self.booked_slots, "available_slots": self.available_slots,
                "total_slots": self.total_slots, "booked_pct": self.booked_pct,
                "unattributed_booked_slots": self.unattributed_booked_slots}


@dataclass(frozen=True)
class DayCapacity:
    """Booked and available slots of one calendar key (or ``*``) on one UTC day of the window."""

    day: date
    calendar_key: str
    booked_slots: int
    available_slots: int

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "calendar_key": self.calendar_key,
                "booked_slots": self.booked_slots, "available_slots": self.available_slots}


@dataclass(frozen=True)
class WorkspaceCapacity:
    """One workspace's capacity: its configured calendars (DEFAULT first; empty when none is configured), the
    total, and the per-day rows (every UTC day of the window × every calendar key then ``*``)."""

    workspace_id: str
    calendars: tuple[CalendarCapacity, ...]
    total: TotalCapacity
    days: tuple[DayCapacity, ...] = field(default=())

    @property
    def has_calendars(self) -> bool:
        return bool(self.calendars)

    @property
    def stale(self) -> bool:
        """True when the availability of any calendar is stale (never fresh when there is none to read)."""
        return any(c.stale for c in self.calendars)

    @property
    def failed(self) -> tuple[CalendarCapacity, ...]:
        """The calendars whose availability is stale or whose last refresh failed."""
        return tuple(c for c in self.calendars if c.stale or c.last_error)

    def days_of(self, calendar_key: str = TOTAL_KEY) -> tuple[DayCapacity, ...]:
        return tuple(d for d in self.days if d.calendar_key == calendar_key)

    def as_dict(self) -> dict[str, Any]:
        return {"workspace_id": self.workspace_id, "calendars": [c.as_dict() for c in self.calendars],
                "total": self.total.as_dict(), "days": [d.as_dict() for d in self.days]}


@dataclass(frozen=True)
class CapacityReport:
    """Capacity of some workspaces for one window (UTC, [window_start, window_end)).

    :meth:`as_dict` is the JSON of ``appt-pipeline capacity --json`` and of the HTTP API::

        {"window_days", "window_start", "window_end",          # ISO-8601 UTC
         "workspaces": [{"workspace_id",
                         "calendars": [{"calendar_key", "provider", "availability_source", "booked_slots",
                                        "available_slots", "total_slots", "booked_pct", "stale", "last_error"}],
                         "total": {"booked_slots", "available_slots", "total_slots", "booked_pct",
                                   "unattributed_booked_slots"},
                         "days": [{"date", "calendar_key", "booked_slots", "available_slots"}]}]}

    ``booked_pct`` is a number in [0, 1] or null.
    """

    window_days: int
    window_start: datetime
    window_end: datetime
    workspaces: tuple[WorkspaceCapacity, ...]

    def workspace(self, workspace_id: str) -> WorkspaceCapacity:
        """The capacity of ``workspace_id``; ``KeyError`` when it is not in the report."""
        for ws in self.workspaces:
            if ws.workspace_id == workspace_id:
                return ws
        raise KeyError(workspace_id)

    def as_dict(self) -> dict[str, Any]:
        return {"window_days": self.window_days, "window_start": iso_utc(self.window_start),
                "window_end": iso_utc(self.window_end), "workspaces": [w.as_dict() for w in self.workspaces]}
