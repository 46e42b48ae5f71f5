"""The observation: one piece of provider evidence about one booking (SPEC §4).

Pure data, no I/O. Every writer builds observations and hands them to the one write path
(``appt_pipeline.store.write_path.apply_observations``).
"""

from dataclasses import dataclass, replace
from datetime import datetime

from appt_pipeline.domain.vocab import ErrorKind, Provider, Source, Status


class InvalidObservationError(ValueError):
    """An observation that breaks SPEC §1's key rules; ``kind`` is the counted error kind."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Observation:
    """What a writer saw of one provider booking, keyed by the provider's own id (SPEC §4).

    Times are timezone-aware UTC datetimes. ``None`` means "not known by this observation" and never
    clears a stored value.

    Keys: a GHL observation needs ``ghl_appointment_id``; a Calendly one needs
    ``calendly_invitee_uri``, except a migration row (``legacy_lead_key`` set), which may carry only
    ``calendly_scheduled_event_uri`` (SPEC §1, §5).

    Reschedule links (SPEC §4.3): ``rescheduled_from_invitee_uri`` is Calendly's ``old_invitee`` of a
    new invitee, ``rescheduled_to_invitee_uri`` the ``new_invitee`` of a rescheduled one.
    ``provider_links_reschedules`` says the provider reports links for this booking (Calendly
    invitees); only when it is false does the 6-hour heuristic link rows.
    """

    workspace_id: str
    lead_id: str
    provider: Provider
    status: Status
    source: Source
    ghl_appointment_id: str | None = None
    calendly_invitee_uri: str | None = None
    calendly_scheduled_event_uri: str | None = None
    ghl_calendar_id: str | None = None
    calendly_event_type_uri: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    timezone: str | None = None
    booked_at: datetime | None = None
    provider_updated_at: datetime | None = None
    canceled_at: datetime | None = None
    cancel_reason: str | None = None
    status_changed_at: datetime | None = None
    rescheduled_from_invitee_uri: str | None = None
    rescheduled_to_invitee_uri: str | None = None
    provider_links_reschedules: bool = False
    legacy_lead_key: str | None = None
    webhook_event_id: int | None = None

    @property
    def key(self) -> str:
        """The natural key the row is upserted by: provider id, else the legacy lead key."""
        if self.provider is Provider.GHL and self.ghl_appointment_id:
            return "ghl:" + self.ghl_appointment_id
        if self.provider is Provider.CALENDLY and self.calendly_invitee_uri:
            return "calendly:" + self.calendly_invitee_uri
        if self.legacy_lead_key:
            return "legacy:" + self.legacy_lead_key
        raise InvalidObservationError(ErrorKind.MISSING_PROVIDER_KEY, "observation has no provider key")

    def validate(self) -> "Observation":
        """Check SPEC §1's key rules; return ``self`` with empty optional strings (ids, attribution) made ``None``.

        Raises:
            InvalidObservationError: no provider key, or ids of the other provider.
        """
        empty = {name: None for name in _OPTIONAL_TEXT if getattr(self, name) == ""}
        if empty:
            # "" is "not known": it must neither count as an id nor reach a CHECK constraint
            return replace(self, **empty).validate()
        if self.provider is Provider.GHL:
            if not self.ghl_appointment_id:
                raise InvalidObservationError(
                    ErrorKind.MISSING_PROVIDER_KEY, "GHL observation without ghl_appointment_id"
                )
            if self.calendly_invitee_uri or self.calendly_scheduled_event_uri:
                raise InvalidObservationError(ErrorKind.MIXED_PROVIDER_IDS, "GHL observation carries Calendly URIs")
        else:
            if self.ghl_appointment_id:
                raise InvalidObservationError(ErrorKind.MIXED_PROVIDER_IDS, "Calendly observation carries a GHL id")
            if not self.calendly_invitee_uri and not (self.legacy_lead_key and self.calendly_scheduled_event_uri):
                raise InvalidObservationError(
                    ErrorKind.MISSING_PROVIDER_KEY, "Calendly observation without calendly_invitee_uri"
                )
        for when in (
            self.start_at, self.end_at, self.booked_at, self.provider_updated_at, self.canceled_at,
            self.status_changed_at,
        ):
            if when is not None and when.tzinfo is None:
                raise InvalidObservationError(ErrorKind.NAIVE_DATETIME, "observation times must be timezone-aware")
        return self


#: Optional text fields where an empty string means "not known" (SPEC §4: None never clears a value).
_OPTIONAL_TEXT: tuple[str, ...] = (
    "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri", "ghl_calendar_id",
    "calendly_event_type_uri", "timezone", "cancel_reason", "rescheduled_from_invitee_uri",
    "rescheduled_to_invitee_uri", "legacy_lead_key",
)
