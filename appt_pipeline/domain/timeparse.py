"""Timestamp parsing and formatting rules shared by every path (SPEC §3, §5).

Pure: no I/O. All datetimes returned are timezone-aware UTC.
"""

import re
from datetime import UTC, datetime

#: The range of times any path accepts, [MIN_TIMESTAMP, MAX_TIMESTAMP) in UTC. Appointment, booking and
#: provider times outside it are not real (a CRM that existed before 1900 or books after 2200 does not), and
#: values near Python's own limits (years 1 and 9999) overflow as soon as they are converted to UTC or a
#: duration is added — so they are refused with a clear error instead (SPEC §2: never guessed).
MIN_TIMESTAMP = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(2200, 1, 1, tzinfo=UTC)


class TimestampOutOfRangeError(ValueError):
    """A well-formed time outside [:data:`MIN_TIMESTAMP`, :data:`MAX_TIMESTAMP`) (or one that overflows in UTC)."""

    def __init__(self, raw: object) -> None:
        super().__init__(f"timestamp out of range ({MIN_TIMESTAMP.year}–{MAX_TIMESTAMP.year - 1}): {raw!r}")
        self.raw = raw


def check_range(value: datetime, raw: object = None) -> datetime:
    """``value`` in UTC when it lies in the accepted range; raises :class:`TimestampOutOfRangeError` otherwise
    (``raw``, the input it came from, names it in the message)."""
    try:
        utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        raise TimestampOutOfRangeError(value if raw is None else raw) from None
    if not MIN_TIMESTAMP <= utc < MAX_TIMESTAMP:
        raise TimestampOutOfRangeError(value if raw is None else raw)
    return utc

_ISO_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def parse_timestamp(raw: str | None) -> datetime | None:
    """Parse an ISO-8601 timestamp (``Z`` or ``±hh:mm`` offsets; naive means UTC) to UTC.

    Returns ``None`` for ``None``/blank. Raises ``ValueError`` naming the value when it is not an
    ISO-8601 timestamp (e.g. ``"tomorrow 3pm"``), and :class:`TimestampOutOfRangeError` (a ``ValueError``)
    when it lies outside [:data:`MIN_TIMESTAMP`, :data:`MAX_TIMESTAMP`), e.g. ``0001-01-01T00:00:00+14:00``.
    """
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    if not _ISO_LIKE.match(text):
        raise ValueError(f"not an ISO-8601 timestamp: {raw!r}")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {raw!r}") from None
    return check_range(value, raw)


def parse_timestamp_or_none(raw: str | None) -> datetime | None:
    """Like :func:`parse_timestamp` but an unparseable value gives ``None`` (SPEC §5 ``booked_slot``)."""
    try:
        return parse_timestamp(raw)
    except ValueError:
        return None


def format_booked_slot(start_at: datetime | None) -> str | None:
    """``booked_slot`` text: UTC ISO-8601 with milliseconds and ``Z``, e.g. ``2026-03-05T15:00:00.000Z``.

    Sub-millisecond digits are truncated (as JavaScript ``toISOString`` and Postgres ``to_char(…MS)``
    do). ``None`` gives ``None`` (SPEC §3).
    """
    if start_at is None:
        return None
    if start_at.tzinfo is None:
        raise ValueError("start_at must be timezone-aware")
    utc = start_at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
