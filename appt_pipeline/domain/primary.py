"""Primary appointment selection and the lead rollup (SPEC §3).

Pure: no I/O. The SQL twin of :func:`primary_sort_key` lives in ``store/rollups.py``; a property
test proves both pick the same row.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar
from uuid import UUID

from appt_pipeline.domain.timeparse import format_booked_slot
from appt_pipeline.domain.vocab import Provider, Source, Status


class AppointmentLike(Protocol):
    """The columns of an ``appointments`` row that §3 reads."""

    @property
    def id(self) -> UUID: ...
    @property
    def provider(self) -> Provider: ...
    @property
    def status(self) -> Status: ...
    @property
    def source(self) -> Source: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...
    @property
    def canceled_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def ghl_appointment_id(self) -> str | None: ...
    @property
    def calendly_invitee_uri(self) -> str | None: ...
    @property
    def calendly_scheduled_event_uri(self) -> str | None: ...


def primary_rank(row: AppointmentLike, ref: datetime) -> int:
    """Which of the five §3 rules a row falls under (1 = strongest)."""
    if row.status is Status.CONFIRMED:
        if row.start_at is not None:
            return 1 if row.start_at > ref else 2
        return 3
    if row.status is Status.CANCELED:
        return 4
    return 5


def _micros(when: datetime) -> int:
    """Exact integer microseconds since the epoch (floats lose microseconds at today's magnitudes)."""
    return (when - _EPOCH) // _ONE_MICROSECOND


def primary_sort_key(row: AppointmentLike, ref: datetime) -> tuple[int, int, int, str]:
    """Sort key whose minimum is the primary row (SPEC §3; ties: ``created_at`` desc, ``id`` desc).

    Times are compared as exact microseconds; the id tie-break compares the UUID's canonical text
    descending, as Postgres orders ``uuid`` bytewise (equivalent to the text order).
    """
    rank = primary_rank(row, ref)
    if rank == 1:
        assert row.start_at is not None
        within = _micros(row.start_at)
    elif rank == 2:
        assert row.start_at is not None
        within = -_micros(row.start_at)
    elif rank == 4:
        within = -_micros(row.canceled_at or row.created_at)
    else:
        within = -_micros(row.created_at)
    # id desc: invert each hex digit so that ascending order of the key is descending order of the id
    inverted_id = str(row.id).translate(_INVERT_HEX)
    return rank, within, -_micros(row.created_at), inverted_id


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_Row = TypeVar("_Row", bound=AppointmentLike)

_INVERT_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def select_primary(rows: Iterable[_Row], ref: datetime) -> _Row | None:
    """The primary of one lead's rows at reference time ``ref`` (UTC), or ``None`` when empty (SPEC §3)."""
    return min(rows, key=lambda r: primary_sort_key(r, ref), default=None)


@dataclass(frozen=True, slots=True)
class LeadRollup:
    """The eleven legacy rollup columns of ``leads`` (SPEC §1, §3), in column order."""

    ghl_appointment_id: str | None = None
    calendly_invitee_uri: str | None = None
    calendly_scheduled_event_uri: str | None = None
    appointment_booked_at: datetime | None = None
    appointment_start_at: datetime | None = None
    appointment_end_at: datetime | None = None
    appointment_status: str | None = None
    appointment_canceled_at: datetime | None = None
    appointment_provider: str | None = None
    appointment_source: str | None = None
    booked_slot: str | None = None


#: The all-null rollup of a lead without rows (SPEC §3).
EMPTY_ROLLUP = LeadRollup()


def build_rollup(primary: AppointmentLike | None) -> LeadRollup:
    """Lead rollup columns from the primary row (SPEC §3); ``None`` gives :data:`EMPTY_ROLLUP`."""
    if primary is None:
        return EMPTY_ROLLUP
    return LeadRollup(
        ghl_appointment_id=primary.ghl_appointment_id,
        calendly_invitee_uri=primary.calendly_invitee_uri,
        calendly_scheduled_event_uri=primary.calendly_scheduled_event_uri,
        appointment_booked_at=primary.created_at,
        appointment_start_at=primary.start_at,
        appointment_end_at=primary.end_at,
        appointment_status=Status(primary.status).rollup,
        appointment_canceled_at=primary.canceled_at,
        appointment_provider=Provider(primary.provider).value,
        appointment_source=Source(primary.source).rollup,
        booked_slot=format_booked_slot(primary.start_at),
    )
