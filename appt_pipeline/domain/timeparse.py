"""Timestamp parsing and formatting rules shared by every path (SPEC §3, §5).

Pure: no I/O. All datetimes returned are timezone-aware UTC.
"""

import re
from datetime import UTC, datetime

_ISO_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def parse_timestamp(raw: str | None) -> datetime | None:
    """Parse an ISO-8601 timestamp (``Z`` or ``±hh:mm`` offsets; naive means UTC) to UTC.

    Returns ``None`` for ``None``/blank. Raises ``ValueError`` naming the value when it is not an
    ISO-8601 timestamp (e.g. ``"tomorrow 3pm"``).
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
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


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
