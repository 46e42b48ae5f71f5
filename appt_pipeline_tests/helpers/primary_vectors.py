"""Test vectors of the primary-appointment rule (docs/rules.md §3), shared by the pure and the SQL tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline_tests.helpers import at


@dataclass(frozen=True)
class Row:
    """An ``appointments`` row as §3 reads it."""

    id: uuid.UUID
    status: Status
    created_at: datetime
    start_at: datetime | None = None
    canceled_at: datetime | None = None
    provider: Provider = Provider.GHL
    source: Source = Source.RECONCILE_CRON
    end_at: datetime | None = None
    ghl_appointment_id: str | None = "ghl-1"
    calendly_invitee_uri: str | None = None
    calendly_scheduled_event_uri: str | None = None


def row(name: str, status: Status, created: str = "2026-01-15T00:00", **kw: object) -> Row:
    """A row whose id is derived from ``name`` (so vectors are reproducible); times as ``at`` shorthand."""
    times = {k: at(v) if isinstance(v, str) else v for k, v in kw.items() if k in ("start_at", "canceled_at")}
    rest = {k: v for k, v in kw.items() if k not in times}
    return Row(id=uuid.uuid5(uuid.NAMESPACE_URL, name), status=status, created_at=at(created), **times, **rest)


C, X, R, S, N = Status.CONFIRMED, Status.CANCELED, Status.RESCHEDULED, Status.SHOWED, Status.NO_SHOW

# (name, rows, expected primary name) — docs/original-system.md §15.5 vectors first, then tie-break and
# rule-order vectors.
PRIMARY_VECTORS: list[tuple[str, list[Row], str]] = [
    ("next-upcoming-confirmed", [row("A", C, start_at="2026-03-05T00:00"), row("B", C, start_at="2026-03-02T00:00")],
     "B"),
    ("latest-past-confirmed", [row("A", C, start_at="2026-02-20T00:00"), row("B", C, start_at="2026-02-25T00:00")],
     "B"),
    ("confirmed-without-time-beats-canceled",
     [row("A", C, created="2026-02-01T00:00"), row("B", X, created="2026-02-20T00:00", canceled_at="2026-02-21T00:00")],
     "A"),
    ("canceled-by-canceled-at-else-created",
     [row("A", X, created="2026-02-01T00:00", canceled_at="2026-02-10T00:00"), row("B", X, created="2026-02-15T00:00")],
     "B"),
    ("canceled-beats-showed", [row("A", S, created="2026-02-28T00:00"), row("B", X, created="2026-01-01T00:00")], "B"),
    ("fallback-latest-created", [row("A", S, created="2026-02-01T00:00"), row("B", N, created="2026-02-02T00:00")],
     "B"),
    ("start-exactly-ref-is-past",
     [row("A", C, start_at="2026-03-01T12:00"), row("B", C, start_at="2026-02-01T00:00")], "A"),
    # extra: a future CONFIRMED always wins over a past one, whatever was created later
    ("future-beats-past", [row("A", C, created="2026-01-01T00:00", start_at="2026-03-09T00:00"),
                           row("B", C, created="2026-02-28T00:00", start_at="2026-02-28T00:00")], "A"),
    # extra: a past CONFIRMED with a time beats a CONFIRMED without one
    ("timed-beats-untimed", [row("A", C, created="2026-02-28T00:00"),
                             row("B", C, created="2026-01-01T00:00", start_at="2025-01-01T00:00")], "B"),
    # extra: rescheduled is fallback only
    ("rescheduled-fallback", [row("A", R, created="2026-02-28T00:00"), row("B", X, created="2026-01-01T00:00")], "B"),
    ("confirmed-untimed-latest-created",
     [row("A", C, created="2026-02-01T00:00"), row("B", C, created="2026-02-03T00:00")], "B"),
    # ties: created_at desc, then id desc
    ("tie-created-desc", [row("A", C, created="2026-02-01T00:00", start_at="2026-03-05T00:00"),
                          row("B", C, created="2026-02-02T00:00", start_at="2026-03-05T00:00")], "B"),
    ("tie-id-desc", [row("A", S, created="2026-02-01T00:00"), row("B", S, created="2026-02-01T00:00")],
     max("A", "B", key=lambda n: str(uuid.uuid5(uuid.NAMESPACE_URL, n)))),
    ("single", [row("A", N)], "A"),
]
