"""The configured calendars of a workspace: the keys availability and capacity are kept under (SPEC §9).

Pure: no I/O. The provider is the workspace's ``meeting_booking_provider``; its calendar keys are the
GHL calendar ids (``ghl_default_calendar_id``, ``ghl_direct_book_calendar_id``) or the Calendly event
type URIs (``calendly_event_type_uri``, ``calendly_direct_book_event_type_uri``). DEFAULT comes first;
DIRECT_BOOK is listed only when set and different from the default (once when both are the same).
Blank values count as not configured. The workspace total is kept under :data:`TOTAL_KEY`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appt_pipeline.domain.vocab import AvailabilitySource, Provider

#: ``calendar_key`` of a workspace's total capacity row (SPEC §9).
TOTAL_KEY = "*"

_COLUMNS: dict[Provider, tuple[str, str]] = {
    Provider.GHL: ("ghl_default_calendar_id", "ghl_direct_book_calendar_id"),
    Provider.CALENDLY: ("calendly_event_type_uri", "calendly_direct_book_event_type_uri"),
}


@dataclass(frozen=True)
class CalendarRef:
    """One configured calendar / event type of a workspace.

    ``calendar_key`` is a GHL calendar id or a Calendly event type URI (as configured, trimmed).
    """

    provider: Provider
    calendar_key: str
    availability_source: AvailabilitySource


def configured_calendars(workspace: Mapping[str, Any]) -> list[CalendarRef]:
    """The calendar keys of ``workspace`` (a ``workspaces`` row as a mapping), DEFAULT first (SPEC §9).

    ``meeting_booking_provider`` missing or null counts as GHL (the column's default). A workspace with
    no configured calendar gets ``[]``.
    """
    provider = Provider(workspace.get("meeting_booking_provider") or Provider.GHL)
    default_col, direct_col = _COLUMNS[provider]
    default = (workspace.get(default_col) or "").strip()
    direct = (workspace.get(direct_col) or "").strip()
    refs: list[CalendarRef] = []
    if default:
        refs.append(CalendarRef(provider, default, AvailabilitySource.DEFAULT))
    if direct and direct != default:
        refs.append(CalendarRef(provider, direct, AvailabilitySource.DIRECT_BOOK))
    return refs


def booking_calendar(workspace: Mapping[str, Any], availability_source: AvailabilitySource) -> CalendarRef | None:
    """The configured calendar a booking with ``availability_source`` uses (docs/rules.md §8), as listed by
    :func:`configured_calendars` — so its stored availability is found under that key and source.

    DIRECT_BOOK uses the direct-book calendar / event type when set, else the default one (then the ref's
    ``availability_source`` is DEFAULT: one calendar, stored once); DEFAULT uses the default one. ``None``
    when the workspace has no such calendar configured.
    """
    refs = configured_calendars(workspace)
    by_source = {r.availability_source: r for r in refs}
    if AvailabilitySource(availability_source) is AvailabilitySource.DIRECT_BOOK and \
            AvailabilitySource.DIRECT_BOOK in by_source:
        return by_source[AvailabilitySource.DIRECT_BOOK]
    return by_source.get(AvailabilitySource.DEFAULT)
