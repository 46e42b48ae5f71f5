"""Hand-built capacity cases (docs/rules.md §9): workspaces with configured calendars, appointment rows and the
free slots / refresh status the availability pipeline stores."""

import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.rules import utc_now
from appt_pipeline.store.workspaces import set_workspace

_seq = itertools.count()


def workspace(engine: sa.Engine, ws: str, *, provider: str = "GHL", default: str | None = None,
              direct: str | None = None) -> None:
    cols = (("ghl_default_calendar_id", "ghl_direct_book_calendar_id") if provider == "GHL"
            else ("calendly_event_type_uri", "calendly_direct_book_event_type_uri"))
    values: dict[str, Any] = {"meeting_booking_provider": provider}
    if default is not None:
        values[cols[0]] = default
    if direct is not None:
        values[cols[1]] = direct
    set_workspace(engine, ws, values)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id) VALUES (:id, :ws) ON CONFLICT DO NOTHING"),
                     {"id": f"{ws}_lead", "ws": ws})


def book(engine: sa.Engine, ws: str, start: datetime | None, *, status: str = "CONFIRMED", provider: str = "GHL",
         calendar: str | None = None) -> None:
    """One ``appointments`` row of the workspace's lead (attribution ``calendar`` or none)."""
    n = next(_seq)
    ghl = provider == "GHL"
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO appointments (id, workspace_id, lead_id, provider, ghl_appointment_id, calendly_invitee_uri, "
            "ghl_calendar_id, calendly_event_type_uri, start_at, status, status_changed_at, source, last_source, "
            "last_observed_at) VALUES (:id, :ws, :lead, :provider, :gid, :inv, :gcal, :evt, :start, :status, :t, "
            "'RECONCILE_CRON', 'RECONCILE_CRON', :t)"),
            {"id": uuid.uuid4(), "ws": ws, "lead": f"{ws}_lead", "provider": provider,
             "gid": f"g{n}" if ghl else None,
             "inv": None if ghl else f"https://api.calendly.com/scheduled_events/e{n}/invitees/i{n}",
             "gcal": calendar if ghl else None, "evt": None if ghl else calendar, "start": start, "status": status,
             "t": utc_now() - timedelta(days=1)})


def offer(engine: sa.Engine, ws: str, key: str, starts: list[datetime], *, provider: str = "GHL",
          source: str = "DEFAULT", fetched_at: datetime, stale_at: datetime, last_error: str | None = None,
          status: bool = True) -> None:
    """Free slots of one calendar as the availability refresh stores them, with its status row (unless not
    ``status``)."""
    with engine.begin() as conn:
        if starts:
            conn.execute(sa.text(
                "INSERT INTO calendar_availability (workspace_id, provider, calendar_key, availability_source, "
                "slot_start, slot_minutes, fetched_at, stale_at, last_error) "
                "VALUES (:ws, :p, :k, :s, :start, 30, :f, :st, :e)"),
                [{"ws": ws, "p": provider, "k": key, "s": source, "start": s, "f": fetched_at, "st": stale_at,
                  "e": last_error} for s in starts])
        if status:
            conn.execute(sa.text(
                "INSERT INTO calendar_availability_status (workspace_id, provider, calendar_key, availability_source, "
                "slot_minutes, slot_count, fetched_at, stale_at, last_attempt_at, last_error) "
                "VALUES (:ws, :p, :k, :s, 30, :n, :f, :st, :f, :e)"),
                {"ws": ws, "p": provider, "k": key, "s": source, "n": len(starts), "f": fetched_at, "st": stale_at,
                 "e": last_error})


