"""Booking rules of SPEC §8 that need no I/O: states, reasons, the slot's form, the request fingerprint.

The pipeline (``appt_pipeline.pipelines.booking``) does the reads, the provider call and the writes; the rules it
applies that can be stated without them live here.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson

from appt_pipeline.domain.timeparse import check_range
from appt_pipeline.domain.vocab import AvailabilitySource, Source

#: How long a booking request (and so its idempotency key) is kept (SPEC §8: 30 days).
IDEMPOTENCY_TTL = timedelta(days=30)
#: Longest ``Idempotency-Key`` accepted (characters).
MAX_IDEMPOTENCY_KEY_CHARS = 255
#: Longest invitee name accepted (characters); Calendly needs a name, nothing else reads it.
MAX_INVITEE_NAME_CHARS = 200

#: Sources a booking may carry (SPEC §8).
BOOKING_SOURCES: frozenset[Source] = frozenset({Source.AUTO_BOOK, Source.MANUAL})


class BookingState(StrEnum):
    """``booking_requests.state`` (SPEC §1, §8)."""

    PENDING = "pending"  # claimed, not answered yet: nothing reached the provider, or it was down
    BOOKED = "booked"
    REFUSED = "refused"
    UNKNOWN = "unknown"  # the provider may have booked (a timeout after the POST): resolved by reconciliation


class Refusal(StrEnum):
    """Why a booking was refused (SPEC §8). Every refusal but ``provider_refused`` and ``not_booked`` is decided
    before anything is sent to the provider."""

    ALREADY_BOOKED = "already_booked"  # the lead has an upcoming CONFIRMED appointment
    AUTO_BOOK_DISABLED = "auto_book_disabled"  # source AUTO_BOOK, auto-booking off for the workspace or the lead
    SLOT_UNAVAILABLE = "slot_unavailable"  # not a stored free slot of the calendar (after one refresh)
    PROVIDER_REFUSED = "provider_refused"  # the provider said no (its message, masked, in ``message``)
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # the key was used for another request
    NOT_BOOKED = "not_booked"  # an ``unknown`` request the lead's reconciliation shows the provider never booked


class BookingInputError(ValueError):
    """A booking request that cannot be carried out as given; nothing is stored or sent.

    ``reason`` (safe to log and to answer with): ``invalid_idempotency_key``, ``invalid_slot`` (not ISO-8601 with
    a time and an offset), ``slot_in_past``, ``invalid_source``, ``invalid_invitee_name``, ``invalid_timezone``,
    ``unknown_workspace``, ``unknown_lead``, ``lead_without_contact`` (GHL: no contact id and no e-mail),
    ``lead_without_email`` (Calendly), ``calendar_not_configured``, ``provider_not_configured``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_SLOT = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})$")


def parse_slot(raw: object) -> datetime:
    """The slot start as a UTC datetime: ISO-8601 with a time and an explicit offset (``Z`` or ``±hh:mm``), e.g.
    ``2030-03-05T15:00:00Z``. A naive or date-only value is refused (a booking never guesses a time zone).

    Raises:
        BookingInputError: ``invalid_slot``.
    """
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise BookingInputError("invalid_slot", "slot_start needs a time zone offset")
        value = raw
    else:
        text = raw.strip() if isinstance(raw, str) else ""
        if not _SLOT.match(text):
            raise BookingInputError("invalid_slot", f"slot_start is not an ISO-8601 date-time with an offset: "
                                                    f"{str(raw)[:64]!r}")
        if text[-1] in "Zz":
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text.replace("t", "T"))
        except ValueError:
            raise BookingInputError("invalid_slot", f"slot_start is not a valid date-time: {text[:64]!r}") from None
    try:
        return check_range(value)
    except ValueError:
        raise BookingInputError("invalid_slot", "slot_start is out of range") from None


def check_idempotency_key(key: object) -> str:
    """The key as given (1 … 255 printable characters, no surrounding blanks). Raises
    :class:`BookingInputError` ``invalid_idempotency_key``."""
    if (not isinstance(key, str) or not key or key != key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_CHARS
            or not key.isprintable()):
        raise BookingInputError("invalid_idempotency_key",
                                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters")
    return key


def normalise_name(name: str | None) -> str | None:
    """The invitee's name with runs of whitespace collapsed; blank → ``None``. Raises :class:`BookingInputError`
    ``invalid_invitee_name`` when longer than :data:`MAX_INVITEE_NAME_CHARS` or not printable."""
    if name is None:
        return None
    text = " ".join(name.split())
    if len(text) > MAX_INVITEE_NAME_CHARS or not text.isprintable():
        raise BookingInputError("invalid_invitee_name", f"invitee_name must be at most {MAX_INVITEE_NAME_CHARS} "
                                                        "printable characters")
    return text or None


@dataclass(frozen=True)
class BookingRequest:
    """One normalised booking request (SPEC §8). ``slot_start`` UTC; ``invitee_name`` / ``invitee_timezone`` are
    only sent to Calendly (the name is never stored)."""

    workspace_id: str
    lead_id: str
    slot_start: datetime
    availability_source: AvailabilitySource
    source: Source
    invitee_name: str | None = None
    invitee_timezone: str | None = None


def request_fingerprint(request: BookingRequest) -> bytes:
    """SHA-256 (32 bytes) of the canonical JSON of the normalised request: what tells "the same request" from
    "another request with the same key" (``idempotency_key_reused``). The slot is compared as a UTC instant (so
    ``15:00Z`` and ``16:00+01:00`` are the same request); the name only enters the digest, never storage."""
    canonical = {
        "workspace_id": request.workspace_id,
        "lead_id": request.lead_id,
        "slot_start": request.slot_start.astimezone(UTC).isoformat(),
        "availability_source": request.availability_source.value,
        "source": request.source.value,
        "invitee_name": request.invitee_name,
        "invitee_timezone": request.invitee_timezone,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()
