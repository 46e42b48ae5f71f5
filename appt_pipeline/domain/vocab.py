"""Vocabularies and the one status mapping (SPEC §1 enums, §2 mappings).

Pure: no I/O. Every writer (migration, reconciliation, webhooks, booking) maps provider or legacy
status strings through :func:`map_status`; unknown strings are errors, never guessed (SPEC §2).
"""

from enum import StrEnum


class Provider(StrEnum):
    """``meeting_booking_provider`` enum (SPEC §1)."""

    GHL = "GHL"
    CALENDLY = "CALENDLY"


class Status(StrEnum):
    """``appointment_status`` enum (SPEC §1)."""

    CONFIRMED = "CONFIRMED"
    CANCELED = "CANCELED"
    RESCHEDULED = "RESCHEDULED"
    SHOWED = "SHOWED"
    NO_SHOW = "NO_SHOW"

    @property
    def rollup(self) -> str:
        """Lowercase lead rollup string (SPEC §2), e.g. ``"no_show"``."""
        return self.value.lower()


class Source(StrEnum):
    """``appointment_source`` enum (SPEC §1)."""

    WEBHOOK = "WEBHOOK"
    RECONCILE_CRON = "RECONCILE_CRON"
    BACKFILL = "BACKFILL"
    AUTO_BOOK = "AUTO_BOOK"
    MANUAL = "MANUAL"
    MIGRATION = "MIGRATION"

    @property
    def rollup(self) -> str:
        """Lowercase lead rollup string (SPEC §2), e.g. ``"reconcile_cron"``."""
        return self.value.lower()

    @property
    def has_side_effects(self) -> bool:
        """False for MIGRATION and BACKFILL: they never change lead status or create tasks (SPEC §3, §4.4)."""
        return self not in SOURCES_WITHOUT_SIDE_EFFECTS


#: Sources that never change lead status or create tasks (SPEC §3, §4.4); bound into SQL as a parameter.
SOURCES_WITHOUT_SIDE_EFFECTS: tuple[Source, ...] = (Source.MIGRATION, Source.BACKFILL)

#: Sources whose move of an upcoming CONFIRMED row to a new time creates the ``meeting-rescheduled`` task (SPEC
#: §4.3): the provider telling us the lead moved it, not our own booking.
SOURCES_OF_MOVE_TASKS: tuple[Source, ...] = (Source.WEBHOOK, Source.RECONCILE_CRON)


class AvailabilitySource(StrEnum):
    """``availability_source`` enum (SPEC §1): which configured calendar / event type a slot or booking uses."""

    DEFAULT = "DEFAULT"
    DIRECT_BOOK = "DIRECT_BOOK"


class WebhookStatus(StrEnum):
    """``webhook_events.status`` of a stored delivery (SPEC §6): pending until ingested, then one of the rest."""

    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class ErrorKind(StrEnum):
    """Counted error kinds and reasons of the write path, the migration and webhook ingestion (SPEC §2, §4, §5, §6).

    Each is reported as its value (``errors_by_kind`` keys, ``webhook_events.error``).
    """

    # an observation breaks SPEC §1's key rules (domain.observation)
    MISSING_PROVIDER_KEY = "missing_provider_key"
    MIXED_PROVIDER_IDS = "mixed_provider_ids"
    NAIVE_DATETIME = "naive_datetime"
    # the write path (SPEC §4)
    UNKNOWN_LEAD = "unknown_lead"
    LEAD_IN_OTHER_WORKSPACE = "lead_in_other_workspace"
    PROVIDER_KEY_IN_OTHER_WORKSPACE = "provider_key_in_other_workspace"
    # status mapping (SPEC §2) and the migration (SPEC §5)
    UNKNOWN_STATUS = "unknown_status"
    DUPLICATE_PROVIDER_ID = "duplicate_provider_id"
    # webhook ingestion (SPEC §6)
    LEAD_NOT_FOUND = "lead_not_found"
    UNHANDLED_EVENT = "unhandled_event"
    INVALID_EVENT = "invalid_event"


#: Write-path error kinds of an observation whose lead is not ours: a webhook row is ``ignored``, not ``failed``.
LEAD_ERROR_KINDS: frozenset[ErrorKind] = frozenset({ErrorKind.UNKNOWN_LEAD, ErrorKind.LEAD_IN_OTHER_WORKSPACE})


class LeadStatus(StrEnum):
    """The ``leads.status`` values the rules read or write (SPEC §3, §6); other CRM statuses pass through."""

    MEETING_REQUESTED = "meeting-requested"
    MEETING_BOOKED = "meeting-booked"
    QUALIFIED = "qualified"
    UNQUALIFIED = "unqualified"
    BLACKLISTED = "blacklisted"


class TaskStatus(StrEnum):
    """``follow_up_tasks.status`` (SPEC §1, §4.4)."""

    PENDING = "pending"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class TokenScope(StrEnum):
    """Scopes of a workspace API token (SPEC §1 ``api_tokens.scopes``, §10): ``read`` the history, ``book`` slots."""

    READ = "read"
    BOOK = "book"


class WarningKind(StrEnum):
    """Counted warnings (the row is still written)."""

    UNPARSEABLE_BOOKED_SLOT = "unparseable_booked_slot"  # SPEC §5: start_at NULL


class SecretName(StrEnum):
    """Names of the encrypted per-workspace secrets (SPEC §1 ``workspace_secrets.name``)."""

    GHL_PRIVATE_TOKEN = "ghl_private_token"
    CALENDLY_ACCESS_TOKEN = "calendly_access_token"
    CALENDLY_WEBHOOK_SIGNING_KEY = "calendly_webhook_signing_key"
    GHL_WEBHOOK_PUBLIC_KEY = "ghl_webhook_public_key"
    GHL_WEBHOOK_LEGACY_PUBLIC_KEY = "ghl_webhook_legacy_public_key"


#: Statuses that end a Calendly invitee's life: Calendly never reactivates one (SPEC §4.1).
CALENDLY_TERMINAL: frozenset[Status] = frozenset({Status.CANCELED, Status.RESCHEDULED})

#: Legacy/provider status string (trimmed, lowercased) → status. The only mapping (SPEC §2).
STATUS_SYNONYMS: dict[str, Status] = {
    "confirmed": Status.CONFIRMED,
    "booked": Status.CONFIRMED,
    "new": Status.CONFIRMED,
    "active": Status.CONFIRMED,
    "canceled": Status.CANCELED,
    "cancelled": Status.CANCELED,
    "invalid": Status.CANCELED,
    "rescheduled": Status.RESCHEDULED,
    "showed": Status.SHOWED,
    "completed": Status.SHOWED,
    "no_show": Status.NO_SHOW,
    "noshow": Status.NO_SHOW,
    "no-show": Status.NO_SHOW,
}


class UnknownStatusError(ValueError):
    """A status string outside SPEC §2's vocabulary. ``kind`` is the counted error kind."""

    kind = ErrorKind.UNKNOWN_STATUS

    def __init__(self, value: str) -> None:
        super().__init__(f"unknown appointment status {value!r}")
        self.value = value


def normalise_status_key(raw: str) -> str:
    """The lookup key of a status string: trimmed and lowercased (SPEC §2)."""
    return raw.strip().lower()


def map_status(raw: str | None, *, has_provider_id: bool = True) -> Status:
    """Map a legacy or provider status string to :class:`Status` (SPEC §2).

    ``None`` or blank maps to CONFIRMED when the record carries a provider id (pre-rollup legacy
    data); anything else outside :data:`STATUS_SYNONYMS` raises :class:`UnknownStatusError`.

    Raises:
        UnknownStatusError: the string is not in the vocabulary, or blank without a provider id.
    """
    if raw is None or not raw.strip():
        if has_provider_id:
            return Status.CONFIRMED
        raise UnknownStatusError("" if raw is None else raw)
    try:
        return STATUS_SYNONYMS[normalise_status_key(raw)]
    except KeyError:
        raise UnknownStatusError(raw) from None
