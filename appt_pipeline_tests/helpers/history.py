"""History rows written straight into the tables (SPEC §1), for the tests of the read side: controlled ids, times,
chains and changes, whatever the write path does at the time.

:func:`seed_timeline` writes the scenario the history, API, page and browser tests share, relative to ``now``
(so no test depends on today's date).
"""

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

LEAD_ZONE = "Europe/Berlin"


def insert_appointment(conn: sa.Connection, *, ws: str, lead: str, status: str, created: datetime,
                       provider: str = "GHL", key: str | None = None, start: datetime | None = None,
                       end: datetime | None = None, source: str = "WEBHOOK", last_source: str | None = None,
                       rescheduled_from: uuid.UUID | None = None, calendar: str | None = None,
                       event_type: str | None = None, canceled_at: datetime | None = None,
                       cancel_reason: str | None = None, timezone: str | None = None) -> uuid.UUID:
    """Insert one ``appointments`` row; returns its id. ``key``: the GHL id or the Calendly invitee URI."""
    key = key or f"k-{uuid.uuid4().hex[:10]}"
    ghl = key if provider == "GHL" else None
    invitee = key if provider == "CALENDLY" else None
    return conn.execute(sa.text(
        "INSERT INTO appointments (workspace_id, lead_id, provider, ghl_appointment_id, calendly_invitee_uri, "
        "ghl_calendar_id, calendly_event_type_uri, start_at, end_at, timezone, status, status_changed_at, "
        "canceled_at, cancel_reason, rescheduled_from_id, source, last_source, last_observed_at, created_at) "
        "VALUES (:ws, :lead, :provider, :ghl, :invitee, :calendar, :event_type, :start, :end, :tz, :status, "
        ":created, :canceled_at, :reason, :pred, :source, :last_source, :created, :created) RETURNING id"
    ), {"ws": ws, "lead": lead, "provider": provider, "ghl": ghl, "invitee": invitee, "calendar": calendar,
        "event_type": event_type, "start": start, "end": end, "tz": timezone, "status": status, "created": created,
        "canceled_at": canceled_at, "reason": cancel_reason, "pred": rescheduled_from, "source": source,
        "last_source": last_source or source}).scalar_one()


def insert_change(conn: sa.Connection, appointment_id: uuid.UUID, from_status: str | None, to_status: str,
                  observed: datetime, *, source: str = "WEBHOOK", from_start: datetime | None = None,
                  to_start: datetime | None = None) -> None:
    """Append one ``appointment_status_changes`` row."""
    conn.execute(sa.text(
        "INSERT INTO appointment_status_changes (appointment_id, from_status, to_status, from_start_at, to_start_at, "
        "source, observed_at) VALUES (:a, :f, :t, :fs, :ts, :src, :at)"
    ), {"a": appointment_id, "f": from_status, "t": to_status, "fs": from_start, "ts": to_start, "src": source,
        "at": observed})


def local_time(now: datetime, days: int, hour: int, minute: int = 0, zone: str = LEAD_ZONE) -> datetime:
    """``hour:minute`` in ``zone`` on the ``days``-th day after ``now``'s local date, as an aware datetime."""
    tz = ZoneInfo(zone)
    day: date = now.astimezone(tz).date() + timedelta(days=days)
    return datetime.combine(day, time(hour, minute), tzinfo=tz)


@dataclass(frozen=True)
class Timeline:
    """Ids of the rows :func:`seed_timeline` wrote, and their expected order (newest first)."""

    workspace_id: str
    lead_id: str
    ids: dict[str, uuid.UUID]
    times: dict[str, datetime]

    #: names in the history's order: coalesce(start_at, created_at) descending
    ORDER = ("cal_new", "cal_old", "ghl_moved", "canceled", "no_start", "showed")
    #: rows ``active_only`` keeps (CONFIRMED starting after now, or without a start)
    ACTIVE = ("cal_new", "ghl_moved", "no_start")

    def ordered_ids(self, names: tuple[str, ...] | None = None) -> list[str]:
        return [str(self.ids[n]) for n in (names or self.ORDER)]


def seed_timeline(engine: sa.Engine, ws: str, lead: str, now: datetime, **extra: Any) -> Timeline:
    """The shared scenario, for ``lead`` of ``ws`` (both must exist), relative to ``now``:

    * ``cal_new`` — Calendly CONFIRMED in 7 days 11:30 (lead zone), rescheduled from ``cal_old``, event type ET-1;
    * ``cal_old`` — Calendly RESCHEDULED, was in 5 days 10:00;
    * ``ghl_moved`` — GHL CONFIRMED in 3 days 16:00, moved from in 2 days 14:00 (a time change), calendar cal-A,
      source WEBHOOK, last RECONCILE_CRON;
    * ``canceled`` — GHL CANCELED 4 days ago 09:00, reason "lead asked to cancel";
    * ``no_start`` — GHL CONFIRMED without start, created 10 days ago;
    * ``showed`` — GHL SHOWED 20 days ago 15:00.
    """
    t = {
        "cal_new": local_time(now, 7, 11, 30), "cal_old": local_time(now, 5, 10),
        "ghl_moved": local_time(now, 3, 16), "ghl_moved_from": local_time(now, 2, 14),
        "canceled": local_time(now, -4, 9), "no_start_created": now - timedelta(days=10),
        "showed": local_time(now, -20, 15),
    }
    ids: dict[str, uuid.UUID] = {}
    with engine.begin() as conn:
        ids["cal_old"] = insert_appointment(
            conn, ws=ws, lead=lead, provider="CALENDLY", key=f"https://api.calendly.com/scheduled_events/E1-{lead}"
            f"/invitees/I1-{lead}", status="RESCHEDULED", start=t["cal_old"], end=t["cal_old"] + timedelta(minutes=30),
            created=now - timedelta(days=6), event_type="https://api.calendly.com/event_types/ET-1",
            canceled_at=now - timedelta(days=3), timezone="America/New_York")
        ids["cal_new"] = insert_appointment(
            conn, ws=ws, lead=lead, provider="CALENDLY", key=f"https://api.calendly.com/scheduled_events/E2-{lead}"
            f"/invitees/I2-{lead}", status="CONFIRMED", start=t["cal_new"], end=t["cal_new"] + timedelta(minutes=30),
            created=now - timedelta(days=3), event_type="https://api.calendly.com/event_types/ET-1",
            rescheduled_from=ids["cal_old"], timezone="America/New_York")
        ids["ghl_moved"] = insert_appointment(
            conn, ws=ws, lead=lead, key=f"ghl-moved-{lead}", status="CONFIRMED", start=t["ghl_moved"],
            end=t["ghl_moved"] + timedelta(minutes=30), created=now - timedelta(days=2), calendar="cal-A",
            last_source="RECONCILE_CRON")
        ids["canceled"] = insert_appointment(
            conn, ws=ws, lead=lead, key=f"ghl-canceled-{lead}", status="CANCELED", start=t["canceled"],
            created=now - timedelta(days=8), canceled_at=now - timedelta(days=5), cancel_reason="lead asked to cancel",
            calendar="cal-A")
        ids["no_start"] = insert_appointment(conn, ws=ws, lead=lead, key=f"ghl-nostart-{lead}", status="CONFIRMED",
                                             created=t["no_start_created"], source="RECONCILE_CRON")
        ids["showed"] = insert_appointment(conn, ws=ws, lead=lead, key=f"ghl-showed-{lead}", status="SHOWED",
                                           start=t["showed"], created=now - timedelta(days=25), source="MIGRATION")
        insert_change(conn, ids["cal_old"], None, "CONFIRMED", now - timedelta(days=6))
        insert_change(conn, ids["cal_old"], "CONFIRMED", "RESCHEDULED", now - timedelta(days=3))
        insert_change(conn, ids["cal_new"], None, "CONFIRMED", now - timedelta(days=3))
        insert_change(conn, ids["ghl_moved"], None, "CONFIRMED", now - timedelta(days=2), to_start=t["ghl_moved_from"])
        insert_change(conn, ids["ghl_moved"], "CONFIRMED", "CONFIRMED", now - timedelta(days=1),
                      source="RECONCILE_CRON", from_start=t["ghl_moved_from"], to_start=t["ghl_moved"])
        insert_change(conn, ids["canceled"], None, "CONFIRMED", now - timedelta(days=8))
        insert_change(conn, ids["canceled"], "CONFIRMED", "CANCELED", now - timedelta(days=5))
    return Timeline(ws, lead, ids, t)
