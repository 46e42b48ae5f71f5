"""Small helpers for tests: seed workspaces and leads, read rows back."""

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from cryptography.fernet import Fernet

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.providers.http import RetryPolicy

#: The fixtures the repository ships for its tests (see fixtures/README.md): published provider payloads
#: and a legacy CRM export.
FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"
PROVIDER_FIXTURES = FIXTURES_DIR / "providers"
LEGACY_FIXTURES = FIXTURES_DIR / "legacy"

REF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: Fernet key for tests that store provider tokens (a fresh one per test session).
SECRET_KEY = Fernet.generate_key().decode()

#: Provider retries for tests: 2 attempts, no real back-off wait.
QUICK_RETRY = RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02, backoff_jitter_s=0.0)


def at(text: str) -> datetime:
    """UTC datetime from ``YYYY-MM-DDTHH:MM`` shorthand."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def seed(engine: sa.Engine, workspace_id: str = "ws1", leads: int | list[str] = 3, **ws: Any) -> list[str]:
    """Insert a workspace and leads ``<ws>_lead<i>``; returns the lead ids."""
    ids = leads if isinstance(leads, list) else [f"{workspace_id}_lead{i}" for i in range(leads)]
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO workspaces (id, name, timezone) VALUES (:id, :name, :tz) ON CONFLICT DO NOTHING"),
            {"id": workspace_id, "name": f"Workspace {workspace_id}", "tz": ws.get("timezone")},
        )
        if not ids:
            return ids
        conn.execute(
            sa.text("INSERT INTO leads (id, workspace_id, status, timezone) VALUES (:id, :ws, :status, :tz)"),
            [{"id": i, "ws": workspace_id, "status": ws.get("status", "qualified"), "tz": ws.get("lead_tz")}
             for i in ids],
        )
    return ids


def ghl(lead: str, appt: str, status: Status = Status.CONFIRMED, source: Source = Source.RECONCILE_CRON,
        ws: str = "ws1", **kw: Any) -> Observation:
    return Observation(workspace_id=ws, lead_id=lead, provider=Provider.GHL, status=status, source=source,
                       ghl_appointment_id=appt, **kw)


def calendly(lead: str, invitee: str, status: Status = Status.CONFIRMED, source: Source = Source.WEBHOOK,
             ws: str = "ws1", event: str | None = None, **kw: Any) -> Observation:
    inv = f"https://api.calendly.com/scheduled_events/{event or 'ev-' + invitee}/invitees/{invitee}"
    ev = f"https://api.calendly.com/scheduled_events/{event or 'ev-' + invitee}"
    return Observation(workspace_id=ws, lead_id=lead, provider=Provider.CALENDLY, status=status, source=source,
                       calendly_invitee_uri=inv, calendly_scheduled_event_uri=ev,
                       provider_links_reschedules=True, **kw)


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def lead(engine: sa.Engine, lead_id: str) -> sa.Row[Any]:
    return rows(engine, "SELECT * FROM leads WHERE id = :id", id=lead_id)[0]


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every app table's domain content (excluding write clocks), for idempotence comparisons."""
    queries = {
        "appointments": "SELECT id, workspace_id, lead_id, provider, ghl_appointment_id, calendly_invitee_uri, "
        "calendly_scheduled_event_uri, ghl_calendar_id, calendly_event_type_uri, start_at, end_at, timezone, status, "
        "status_changed_at, canceled_at, cancel_reason, rescheduled_from_id, source, provider_updated_at, "
        "legacy_lead_key, created_at FROM appointments ORDER BY id",
        "leads": "SELECT id, status, ghl_appointment_id, calendly_invitee_uri, calendly_scheduled_event_uri, "
        "appointment_booked_at, appointment_start_at, appointment_end_at, appointment_status, "
        "appointment_canceled_at, appointment_provider, appointment_source, booked_slot FROM leads ORDER BY id",
        "status_changes": "SELECT appointment_id, from_status, to_status, source FROM appointment_status_changes "
        "ORDER BY id",
        "tasks": "SELECT lead_id, appointment_id, type, status, suggested_message FROM follow_up_tasks "
        "ORDER BY lead_id, type, status",
    }
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(sa.text(q))] for name, q in queries.items()}


@dataclass(frozen=True)
class ApptRow:
    """An ``appointments`` row with enum columns as enums (what ``select_primary`` / ``build_rollup`` read)."""

    id: uuid.UUID
    lead_id: str
    provider: Provider
    status: Status
    source: Source
    start_at: datetime | None
    end_at: datetime | None
    canceled_at: datetime | None
    created_at: datetime
    ghl_appointment_id: str | None
    calendly_invitee_uri: str | None
    calendly_scheduled_event_uri: str | None

    @classmethod
    def of(cls, r: Any) -> "ApptRow":
        """From a row of ``SELECT * FROM appointments``."""
        return cls(
            id=r.id, lead_id=r.lead_id, provider=Provider(r.provider), status=Status(r.status), source=Source(r.source),
            start_at=r.start_at, end_at=r.end_at, canceled_at=r.canceled_at, created_at=r.created_at,
            ghl_appointment_id=r.ghl_appointment_id, calendly_invitee_uri=r.calendly_invitee_uri,
            calendly_scheduled_event_uri=r.calendly_scheduled_event_uri,
        )


def add_run_in_flight(instance: dg.DagsterInstance, job_name: str, workspace_id: str,
                      status: dg.DagsterRunStatus | None = None) -> str:
    """Record a run of ``job_name`` for partition ``workspace_id`` as going (default STARTED) in ``instance``,
    with the tags a launched run of it carries (the job's, the partition, its lane ``appt/lane``), with public API
    only; returns its id."""
    from appt_pipeline.definitions import defs

    job = defs.resolve_job_def(job_name)
    partition_tags = job.partitioned_config.get_tags_for_partition_key(workspace_id, job_name) \
        if job.partitioned_config else {}
    run = dg.DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()), status=status or dg.DagsterRunStatus.STARTED,
                        tags={**job.tags, **partition_tags, "dagster/partition": workspace_id})
    return instance.add_run(run).run_id


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def working_day(n: int, hour: int, minute: int = 0, *, tz: tzinfo = UTC, now: datetime | None = None) -> datetime:
    """``hour:minute`` in ``tz`` on the ``n``-th working day (Mon–Fri, counted in ``tz``) after today (before it
    when ``n`` < 0), as UTC. The simulators' default working hours are Mon–Fri 09:00–17:00, so such a time is
    bookable whatever day the suite runs, and distinct ``n`` never share a day."""
    day = (now or datetime.now(UTC)).astimezone(tz).date()
    step = timedelta(days=1 if n >= 0 else -1)
    for _ in range(abs(n)):
        day += step
        while day.weekday() >= 5:
            day += step
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(UTC)


def working_day_slot(n: int, *, hour: int = 15, now: datetime | None = None) -> str:
    """ISO-8601 of :func:`working_day` ``(n, hour)`` in UTC (15:00 UTC is inside the simulators' hours)."""
    return working_day(n, hour, now=now).isoformat()
