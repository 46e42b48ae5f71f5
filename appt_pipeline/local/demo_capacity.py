"""The demo's last phase (issue 11 item 5, issue 12 item 7): attribution, availability, one booking per workspace
through the HTTP API, and capacity — each as Dagster runs against the provider simulators.

Per connected sample workspace, in order:

1. ``attribution_backfill_job`` fills the calendar / event type of rows that lack it (rules §9);
2. ``availability_job`` stores the simulators' free slots of the configured calendars (rules §9);
3. one booking through ``POST /api/v1/workspaces/{ws}/leads/{lead}/bookings`` of the running intake service
   (source AUTO_BOOK, a ``read,book`` token of the workspace, ``Idempotency-Key: demo-<ws>``): the first lead
   that can be booked again (auto-book on, a provider contact or e-mail, an earlier meeting canceled or over —
   so the simulator knows the contact — and no upcoming CONFIRMED one) on the first stored free slot at least a
   day ahead that the whole meeting fits (rules §8). Auto-booking is switched on for the workspace for this step
   only. A rerun sends the same key and gets the first answer back (a replay; nothing is booked twice);
4. ``availability_job`` again — the booked slot is no longer free at the simulator — then ``capacity_job``
   (rules §9), whose stored rows the demo prints per workspace.
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import sqlalchemy as sa

from appt_pipeline.cli.launch import RunOutcome, run_partition_job
from appt_pipeline.domain.calendars import booking_calendar
from appt_pipeline.domain.vocab import AvailabilitySource
from appt_pipeline.local.stack import LocalStack
from appt_pipeline.store.availability import stored_free_slots
from appt_pipeline.store.capacity import stored_capacity
from appt_pipeline.store.tokens import create_token, revoke_named

#: Name of the tokens the demo makes for its bookings (the previous demo's are revoked first).
DEMO_TOKEN_NAME = "appt-pipeline demo"
#: The port ``appt-pipeline dev`` serves the pages on by default (the printed timeline links point there).
DEV_SERVICE_URL = "http://127.0.0.1:8000"

_BOOKABLE_LEAD = sa.text("""
SELECT l.id FROM leads l
WHERE l.workspace_id = :ws AND l.auto_book_meetings_enabled
  AND (l.email IS NOT NULL OR (:provider = 'GHL' AND l.ghl_contact_id IS NOT NULL))
  AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = l.id AND a.status = 'CONFIRMED'
                  AND a.start_at >= :now)
  AND EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = l.id AND a.status IN ('CANCELED', 'SHOWED', 'NO_SHOW'))
ORDER BY l.id LIMIT 1
""")


@dataclass
class DemoBooking:
    """The demo's booking of one workspace: HTTP status and the answer's state / reason / appointment."""

    workspace_id: str
    lead_id: str | None
    slot_start: str | None
    http_status: int | None
    state: str
    reason: str | None = None
    message: str | None = None
    appointment_id: str | None = None
    calendar: str | None = None

    @property
    def timeline_url(self) -> str | None:
        """The lead's timeline under ``appt-pipeline dev`` (default port)."""
        if self.lead_id is None:
            return None
        return f"{DEV_SERVICE_URL}/workspaces/{self.workspace_id}/leads/{self.lead_id}/timeline"


@dataclass
class CapacityPhase:
    """What the phase did: the runs per job and workspace, the bookings, the stored capacity rows."""

    runs: dict[str, dict[str, RunOutcome]] = field(default_factory=dict)
    bookings: list[DemoBooking] = field(default_factory=list)
    capacity: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every run succeeded and every booking was booked (now or as a replay)."""
        return (all(o.success for per_ws in self.runs.values() for o in per_ws.values())
                and all(b.state == "booked" for b in self.bookings))


def _run(phase: CapacityPhase, instance: dg.DagsterInstance, job: str, ws: str, label: str | None = None) -> None:
    phase.runs.setdefault(label or job, {})[ws] = run_partition_job(instance, job, ws)


def _fitting_slot(slots: list[datetime], slot_minutes: int | None, duration_minutes: int | None) -> datetime | None:
    """The first free slot start whose whole meeting (``duration_minutes``) lies on free slots: a provider refuses
    a booking that overlaps another one, even when its start is free (a 45-minute meeting on a 30-minute grid)."""
    free = set(slots)
    step = timedelta(minutes=slot_minutes or 15)
    need = max(1, -(-(duration_minutes or 0) // int(step.total_seconds() // 60)))
    return next((s for s in slots if all(s + k * step in free for k in range(need))), None)


def _book(engine: sa.Engine, sims: LocalStack, ws: str, token: str, now: datetime) -> DemoBooking:
    key = f"demo-{ws}"
    with engine.connect() as conn:
        workspace = conn.execute(sa.text("SELECT * FROM workspaces WHERE id = :ws"), {"ws": ws}).mappings().one()
        lead = conn.execute(sa.text("SELECT lead_id FROM booking_requests WHERE workspace_id = :ws "
                                    "AND idempotency_key = :k"), {"ws": ws, "k": key}).scalar()
        if lead is None:
            lead = conn.execute(_BOOKABLE_LEAD, {"ws": ws, "provider": workspace["meeting_booking_provider"],
                                                 "now": now}).scalar()
        calendar = booking_calendar(workspace, AvailabilitySource.DEFAULT)
        stored = stored_free_slots(conn, ws, calendar, now=now, start=now + timedelta(days=1)) \
            if calendar is not None else None
    start = _fitting_slot(stored.slots, stored.slot_minutes, workspace["meeting_duration_minutes"]) \
        if stored is not None else None
    if lead is None or start is None:
        return DemoBooking(ws, lead, None, None, "skipped",
                           "no bookable lead" if lead is None else "no stored free slot")
    slot = start.astimezone(UTC).isoformat().replace("+00:00", "Z")
    with engine.begin() as conn:  # auto-booking on for this one request (restored below)
        was = conn.execute(sa.text("UPDATE workspaces w SET auto_book_meetings = true FROM workspaces o "
                                   "WHERE w.id = o.id AND w.id = :ws RETURNING o.auto_book_meetings"),
                           {"ws": ws}).scalar()
    try:
        answer = httpx.post(f"{sims.service_url}/api/v1/workspaces/{ws}/leads/{lead}/bookings", timeout=60,
                            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                            json={"slot_start": slot, "source": "AUTO_BOOK"})
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE workspaces SET auto_book_meetings = :was WHERE id = :ws"),
                         {"ws": ws, "was": bool(was)})
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    appointment = body.get("appointment") or {}
    return DemoBooking(ws, lead, slot, answer.status_code, body.get("state") or f"HTTP {answer.status_code}",
                       body.get("reason") or body.get("error"), body.get("message"), appointment.get("id"),
                       appointment.get("ghl_calendar_id") or appointment.get("calendly_event_type_uri"))


def run_capacity_phase(engine: sa.Engine, instance: dg.DagsterInstance, sims: LocalStack) -> CapacityPhase:
    """Run the phase (see the module doc) for every connected workspace of ``sims``; never raises for one
    workspace's failure (it is in the returned runs and bookings)."""
    started = time.monotonic()
    phase = CapacityPhase()
    ids = sorted(sims.providers)
    for ws in ids:
        _run(phase, instance, "attribution_backfill_job", ws)
        _run(phase, instance, "availability_job", ws)
    revoke_named(engine, ids, DEMO_TOKEN_NAME)
    now = datetime.now(UTC)
    for ws in ids:
        token = create_token(engine, ws, "read,book", name=DEMO_TOKEN_NAME)
        phase.bookings.append(_book(engine, sims, ws, token.token, now))
    revoke_named(engine, ids, DEMO_TOKEN_NAME)  # the demo's tokens end with it
    for ws in ids:
        _run(phase, instance, "availability_job", ws, "availability_job (after the booking)")
        _run(phase, instance, "capacity_job", ws)
    phase.capacity = [r for r in stored_capacity(engine) if r["workspace_id"] in set(ids)]
    phase.wall_s = time.monotonic() - started
    return phase
