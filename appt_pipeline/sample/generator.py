"""Deterministic generator of realistic legacy CRM exports (SPEC §1 lead rollups, §2 vocabularies, §5).

Writes ``workspaces.csv`` and ``leads.csv`` in exactly the format of docs/operations.md §2: the same
header row and column order, CRLF line ends (``csv`` default), an empty cell meaning NULL, and times
as ISO-8601 UTC with milliseconds and ``Z`` (``2026-07-04T17:00:00.000Z``), except the legacy
``booked_slot`` strings that carry a local offset (``2026-07-04T13:00:00-04:00``).

Determinism: every draw comes from ``random.Random(seed)`` (and, for ``messy=True``, a second
``random.Random`` seeded from the same seed); no global ``random``, no ``uuid4``, no wall clock. Equal
arguments give byte-identical files. The clean row stream does not depend on ``messy``: a messy
export equals the clean one except in the cells the injected defects touch.

Streaming: leads are written one row at a time; memory is O(1) in ``n_leads`` (apart from small
bounded pools used for group events and duplicate GHL ids).

Shape (measured on the fixture, 3000 leads / 3 workspaces, and reproduced at the defaults):

* Workspaces alternate providers (even index GHL, odd CALENDLY); GHL ones carry 20-char
  ``ghl_location_id`` / ``ghl_default_calendar_id``, Calendly ones organization and event-type URIs
  with UUID-shaped ids; ``meeting_duration_minutes`` 30 or 45; ``timezone`` sometimes empty.
* Lead ``n`` (ids ``lead_<seed>_<n:07d>``, ascending) belongs to workspace ``n % n_workspaces``.
* ~26 % of leads have no appointment at all (lead status ``new``/``qualified``/``contacted``).
  The rest take their workspace's provider, except :data:`PROVIDER_MISMATCH_RATE` (1 %) which take
  the other one (a workspace that switched provider). With 3 workspaces that gives ~50 % GHL leads
  (``ghl_appointment_id`` + ``ghl_contact_id``), ~21 % Calendly leads with an invitee URI and
  ~3 % Calendly leads with only the scheduled-event URI (12.7 % of Calendly bookings).
* :data:`GROUP_JOIN_RATE` (2 %) of Calendly bookings join a recent scheduled event of the same
  workspace (group event: same event URI and start, own invitee URI).
* ``appointment_status`` follows the fixture's per-provider mix of case and synonyms
  (:data:`GHL_STATUS_WEIGHTS`, :data:`CALENDLY_STATUS_WEIGHTS`, empty = pre-rollup data); attended
  statuses (showed/completed/no-show) always have a start in the past.
* Times: start on the hour in ``[now - 293 d, now + 43 d]``; booked 6 h .. 41 d before the start (never
  after ``now``), shown for 90 %; canceled on the hour between booking and start, shown for 80 %
  of canceled rows; ``booked_slot``/start/end: 75.7 % start + end (start + workspace duration) +
  ``booked_slot`` equal to the start, 10.1 % only an offset ``booked_slot`` in the lead's (else the
  workspace's, else Los Angeles) local time, 14.2 % none of them; ``appointment_last_checked_at``
  for 51 % (0..25 whole days before ``now``), ``last_inbound_at`` for 69 % of leads (0..195 days);
  ``appointment_provider`` shown 90 %, ``appointment_source`` 78 %; email empty for 10.4 %; lead
  timezone uniform over the fixture's five zones and empty.

``messy=True`` additionally injects, each independently at the rate given (fraction of eligible
leads), the defects SPEC §2/§5 say real exports contain:

* unknown ``appointment_status`` (``pending review``, ``tentative``): 0.2 % of appointment leads;
* unparseable ``booked_slot`` with no start/end (``tomorrow 3pm``, ...): 0.2 % of appointment leads;
* whitespace-padded lead id (``"  lead_7_0000042 "``): 0.2 % of leads;
* whitespace-padded ``workspace_id`` in leads.csv: 0.2 % of leads;
* two leads claiming the same ``ghl_appointment_id`` (the later one copies the id of the previous
  GHL lead of its workspace): 0.2 % of GHL leads.

CLI: ``python -m appt_pipeline.sample.generator OUT_DIR [--leads N] [--workspaces N] [--seed N]
[--messy]``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import itertools
import os
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

__all__ = [
    "LEADS_HEADER",
    "MESSY_RATES",
    "REFERENCE_NOW",
    "WORKSPACES_HEADER",
    "GeneratedLegacy",
    "generate_legacy",
    "main",
]

WORKSPACES_HEADER: tuple[str, ...] = (
    "id", "name", "meeting_booking_provider", "ghl_location_id", "ghl_default_calendar_id",
    "calendly_organization_uri", "calendly_event_type_uri", "meeting_duration_minutes", "timezone",
)  # fmt: skip
LEADS_HEADER: tuple[str, ...] = (
    "id", "workspace_id", "status", "email", "ghl_contact_id", "timezone", "last_inbound_at",
    "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri", "appointment_booked_at",
    "appointment_start_at", "appointment_end_at", "appointment_status", "appointment_canceled_at",
    "appointment_provider", "appointment_source", "booked_slot", "appointment_last_checked_at",
)  # fmt: skip

#: Default reference time: every generated time is placed relative to it.
REFERENCE_NOW = datetime(2026, 11, 15, 12, 0, 0, tzinfo=UTC)

CALENDLY_API = "https://api.calendly.com"
TIMEZONES: tuple[str, ...] = (
    "America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Dubai", "Australia/Sydney", "",
)  # fmt: skip
_ALNUM = string.ascii_letters + string.digits

# --- proportions (fractions of leads / of eligible rows), measured on the fixture -------------
NO_APPOINTMENT_RATE = 0.261
PROVIDER_MISMATCH_RATE = 0.01
CALENDLY_EVENT_ONLY_RATE = 0.127
GROUP_JOIN_RATE = 0.02
GROUP_POOL_SIZE = 256
SLOT_FULL_RATE = 0.757  # start + end + booked_slot == start ("...000Z")
SLOT_OFFSET_ONLY_RATE = 0.101  # only booked_slot, local offset form, no start/end
BOOKED_AT_RATE = 0.90
CANCELED_AT_RATE = 0.80
PROVIDER_SHOWN_RATE = 0.90
SOURCE_SHOWN_RATE = 0.78
LAST_CHECKED_RATE = 0.51
LAST_INBOUND_RATE = 0.69
EMAIL_RATE = 0.896

GHL_STATUS_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("", 13), ("confirmed", 37), ("booked", 6), ("canceled", 7), ("cancelled", 7), ("Cancelled", 5),
    ("showed", 7), ("completed", 5), ("no-show", 7), ("noshow", 6),
)  # fmt: skip
CALENDLY_STATUS_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("", 9), ("confirmed", 53), ("Canceled", 9), ("canceled", 9), ("no_show", 11), ("rescheduled", 9),
)  # fmt: skip
_CONFIRMED_LIKE = frozenset({"", "confirmed", "booked"})
_CANCELED_LIKE = frozenset({"canceled", "cancelled", "Canceled", "Cancelled"})
_ATTENDED_LIKE = frozenset({"showed", "completed", "no-show", "noshow", "no_show"})
SOURCES: tuple[str, ...] = ("webhook", "backfill", "reconcile_cron", "auto_book")

#: ``messy=True`` defect rates (fraction of eligible leads, see the module docstring).
MESSY_RATES: dict[str, float] = {
    "unknown_status": 0.002,
    "bad_booked_slot": 0.002,
    "padded_lead_id": 0.002,
    "padded_workspace_id": 0.002,
    "duplicate_ghl_appointment_id": 0.002,
}
UNKNOWN_STATUSES: tuple[str, ...] = ("pending review", "tentative")
BAD_BOOKED_SLOTS: tuple[str, ...] = ("tomorrow 3pm", "next Tuesday 10:30", "TBD")
_PADS: tuple[tuple[str, str], ...] = (("  ", " "), (" ", ""), ("", "  "), (" ", " "))

_DAY = 86_400
_HOUR = 3_600
_EPOCH = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class GeneratedLegacy:
    """Where a legacy export was written and how many data rows (header excluded) each file has."""

    workspaces_path: Path
    leads_path: Path
    n_workspaces: int
    n_leads: int


@dataclass(frozen=True)
class _Workspace:
    id: str
    provider: str  # "GHL" | "CALENDLY"
    duration_s: int  # meeting_duration_minutes * 60
    timezone: str  # "" when unset


# --- time formatting (times are int seconds since the Unix epoch, UTC) ---------------------------

_date_cache: dict[int, str] = {}


def _date_str(day: int) -> str:
    """``YYYY-MM-DD`` of epoch day ``day`` (cached: generated times span ~1 year)."""
    s = _date_cache.get(day)
    if s is None:
        s = _date_cache[day] = date.fromordinal(_EPOCH + day).isoformat()
    return s


def _iso_z(ts: int) -> str:
    """Epoch seconds → ``2026-07-04T17:00:00.000Z``."""
    day, sec = divmod(ts, _DAY)
    h, rem = divmod(sec, _HOUR)
    m, s = divmod(rem, 60)
    return f"{_date_str(day)}T{h:02d}:{m:02d}:{s:02d}.000Z"


def _iso_offset(ts: int, offset_s: int) -> str:
    """Epoch seconds shown as local time at UTC offset ``offset_s`` → ``2026-07-04T13:00:00-04:00``."""
    day, sec = divmod(ts + offset_s, _DAY)
    h, rem = divmod(sec, _HOUR)
    m, s = divmod(rem, 60)
    sign = "-" if offset_s < 0 else "+"
    oh, om = divmod(abs(offset_s) // 60, 60)
    return f"{_date_str(day)}T{h:02d}:{m:02d}:{s:02d}{sign}{oh:02d}:{om:02d}"


def _epoch(d: date, hour_utc: int = 0) -> int:
    return (d.toordinal() - _EPOCH) * _DAY + hour_utc * _HOUR


def _nth_sunday(year: int, month: int, n: int) -> date:
    """``n``-th Sunday of the month (``n = -1``: the last one)."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (n - 1))
    nxt = date(year + month // 12, month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() + 1) % 7)


_dst_cache: dict[tuple[str, int], tuple[int, int]] = {}


def _utc_offset(tz: str, ts: int) -> int:
    """UTC offset in seconds of zone ``tz`` at epoch second ``ts``.

    Stdlib-only and independent of the host's tz database: the current (2007+) DST rules of the five
    fixture zones are coded here; unknown zones fall back to America/Los_Angeles.
    """
    year = date.fromordinal(_EPOCH + ts // _DAY).year
    if tz == "Asia/Dubai":
        return 4 * _HOUR
    key = (tz, year)
    window = _dst_cache.get(key)
    if window is None:
        if tz == "Europe/London":  # last Sun Mar 01:00 UTC .. last Sun Oct 01:00 UTC
            window = (_epoch(_nth_sunday(year, 3, -1), 1), _epoch(_nth_sunday(year, 10, -1), 1))
        elif tz == "Australia/Sydney":  # DST ends 1st Sun Apr 03:00 local (16:00 UTC the day before)
            window = (_epoch(_nth_sunday(year, 4, 1), -8), _epoch(_nth_sunday(year, 10, 1), -8))
        else:  # US: 2nd Sun Mar 02:00 local standard .. 1st Sun Nov 02:00 local daylight
            std = 5 if tz == "America/New_York" else 8
            window = (_epoch(_nth_sunday(year, 3, 2), 2 + std), _epoch(_nth_sunday(year, 11, 1), 1 + std))
        _dst_cache[key] = window
    start, end = window
    if tz == "Europe/London":
        return _HOUR if start <= ts < end else 0
    if tz == "Australia/Sydney":  # southern hemisphere: standard time between April and October
        return 10 * _HOUR if start <= ts < end else 11 * _HOUR
    std_h = -5 if tz == "America/New_York" else -8
    return (std_h + 1) * _HOUR if start <= ts < end else std_h * _HOUR


# --- random helpers -----------------------------------------------------------------------------


def _ghl_id(rng: random.Random) -> str:
    """20-char alphanumeric id, like GHL's ids."""
    return "".join(rng.choices(_ALNUM, k=20))


def _uuid(rng: random.Random) -> str:
    """UUID-shaped (version 4, RFC 4122 variant) string from the seeded generator."""
    x = rng.getrandbits(128)
    x = (x & ~(0xF000 << 64)) | (4 << 76)
    x = (x & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{x:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Weighted:
    """Weighted choice by one ``rng.random()`` draw and a bisect over cumulative weights."""

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        self.values = [v for v, _ in weights]
        cum = list(itertools.accumulate(w for _, w in weights))
        self.cum = [c / cum[-1] for c in cum]

    def pick(self, rng: random.Random) -> str:
        return self.values[min(bisect.bisect_right(self.cum, rng.random()), len(self.values) - 1)]


_GHL_STATUS = _Weighted(GHL_STATUS_WEIGHTS)
_CALENDLY_STATUS = _Weighted(CALENDLY_STATUS_WEIGHTS)


def _to_epoch(now: datetime | None) -> int:
    if now is None:
        now = REFERENCE_NOW
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return int(now.timestamp()) // 60 * 60


# --- generation ---------------------------------------------------------------------------------


def _write_workspaces(path: Path, rng: random.Random, seed: int, n: int) -> list[_Workspace]:
    workspaces: list[_Workspace] = []
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(WORKSPACES_HEADER)
        for i in range(n):
            provider = "GHL" if i % 2 == 0 else "CALENDLY"
            duration = rng.choice((30, 45))
            tz = rng.choice(TIMEZONES)
            if provider == "GHL":
                ids = [_ghl_id(rng), _ghl_id(rng), "", ""]
            else:
                ids = ["", "", f"{CALENDLY_API}/organizations/{_uuid(rng)}",
                       f"{CALENDLY_API}/event_types/{_uuid(rng)}"]  # fmt: skip
            ws = _Workspace(f"ws_{seed}_{i}", provider, duration * 60, tz)
            w.writerow([ws.id, f"Workspace {i}", provider, *ids, duration, tz])
            workspaces.append(ws)
    return workspaces


def _write_leads(
    path: Path,
    rng: random.Random,
    mrng: random.Random | None,
    seed: int,
    n_leads: int,
    workspaces: Sequence[_Workspace],
    now: int,
) -> None:
    """Stream ``n_leads`` rows; ``mrng`` (messy only) decides the injected defects."""
    n_ws = len(workspaces)
    now_hour = now // _HOUR * _HOUR
    past_h, future_h = 293 * 24, 43 * 24
    group_pools: list[list[tuple[str, int]]] = [[] for _ in range(n_ws)]  # (event uri, start)
    last_ghl_ids: list[str] = ["" for _ in range(n_ws)]
    r = rng.random
    rates = MESSY_RATES
    with open(path, "w", newline="", encoding="utf-8", buffering=1 << 20) as fh:
        w = csv.writer(fh)
        w.writerow(LEADS_HEADER)
        for n in range(n_leads):
            wi = n % n_ws
            ws = workspaces[wi]
            lead_id = f"lead_{seed}_{n:07d}"
            email = f"person{seed}_{n}@example.com" if r() < EMAIL_RATE else ""
            tz = rng.choice(TIMEZONES)
            last_inbound = _iso_z(now - rng.randint(0, 195) * _DAY) if r() < LAST_INBOUND_RATE else ""
            row: list[str]
            if r() < NO_APPOINTMENT_RATE:
                status = rng.choice(("new", "qualified", "contacted"))
                row = [lead_id, ws.id, status, email, "", tz, last_inbound, *([""] * 12)]
            else:
                provider = ws.provider
                if r() < PROVIDER_MISMATCH_RATE:
                    provider = "CALENDLY" if provider == "GHL" else "GHL"
                group: tuple[str, int] | None = None
                if provider == "GHL":
                    appt_status = _GHL_STATUS.pick(rng)
                    contact_id, ghl_appt_id = _ghl_id(rng), _ghl_id(rng)
                    invitee_uri = event_uri = ""
                else:
                    appt_status = _CALENDLY_STATUS.pick(rng)
                    contact_id = ghl_appt_id = ""
                    pool = group_pools[wi]
                    if pool and r() < GROUP_JOIN_RATE:
                        group = pool[rng.randrange(len(pool))]
                        event_uri = group[0]
                    else:
                        event_uri = f"{CALENDLY_API}/scheduled_events/{_uuid(rng)}"
                    invitee_uri = f"{event_uri}/invitees/{_uuid(rng)}"
                    if group is None and r() < CALENDLY_EVENT_ONLY_RATE:
                        invitee_uri = ""
                # true start (on the hour); attended statuses lie in the past
                if group is not None:
                    start = group[1]
                    if start >= now and appt_status in _ATTENDED_LIKE:
                        appt_status = "confirmed"
                else:
                    hi = -1 if appt_status in _ATTENDED_LIKE else future_h
                    start = now_hour + rng.randint(-past_h, hi) * _HOUR
                    if provider == "CALENDLY":
                        pool = group_pools[wi]
                        if len(pool) < GROUP_POOL_SIZE:
                            pool.append((event_uri, start))
                        else:
                            pool[rng.randrange(GROUP_POOL_SIZE)] = (event_uri, start)
                booked = start - rng.randint(6 * 60, 41 * 24 * 60) * 60
                if booked > now:
                    booked = now - rng.randint(1, 72 * 60) * 60
                booked_at = _iso_z(booked) if r() < BOOKED_AT_RATE else ""
                canceled_at = ""
                if appt_status in _CANCELED_LIKE and r() < CANCELED_AT_RATE:
                    lo = -(-booked // _HOUR)  # first whole hour after booking
                    hi_c = max(lo, (min(start - _HOUR, now)) // _HOUR)
                    canceled_at = _iso_z(rng.randint(lo, hi_c) * _HOUR)
                x = r()
                if x < SLOT_FULL_RATE:
                    start_at = booked_slot = _iso_z(start)
                    end_at = _iso_z(start + ws.duration_s)
                elif x < SLOT_FULL_RATE + SLOT_OFFSET_ONLY_RATE:
                    start_at = end_at = ""
                    local_tz = tz or ws.timezone or "America/Los_Angeles"
                    booked_slot = _iso_offset(start, _utc_offset(local_tz, start))
                else:
                    start_at = end_at = booked_slot = ""
                appt_provider = provider if r() < PROVIDER_SHOWN_RATE else ""
                source = rng.choice(SOURCES) if r() < SOURCE_SHOWN_RATE else ""
                last_checked = _iso_z(now - rng.randint(0, 25) * _DAY) if r() < LAST_CHECKED_RATE else ""
                if appt_status in _CONFIRMED_LIKE:
                    status = "meeting-booked"
                else:
                    status = rng.choice(("meeting-booked", "qualified", "unqualified"))
                if mrng is not None:
                    m = mrng.random
                    if m() < rates["unknown_status"]:
                        appt_status = mrng.choice(UNKNOWN_STATUSES)
                    if m() < rates["bad_booked_slot"]:
                        start_at = end_at = ""
                        booked_slot = mrng.choice(BAD_BOOKED_SLOTS)
                    if ghl_appt_id:
                        prev = last_ghl_ids[wi]
                        if prev and m() < rates["duplicate_ghl_appointment_id"]:
                            ghl_appt_id = prev
                            prev = ""  # a pair, not a chain
                        else:
                            prev = ghl_appt_id
                        last_ghl_ids[wi] = prev
                row = [
                    lead_id, ws.id, status, email, contact_id, tz, last_inbound, ghl_appt_id, invitee_uri,
                    event_uri, booked_at, start_at, end_at, appt_status, canceled_at, appt_provider, source,
                    booked_slot, last_checked,
                ]  # fmt: skip
            if mrng is not None:
                if mrng.random() < rates["padded_lead_id"]:
                    left, right = mrng.choice(_PADS)
                    row[0] = f"{left}{row[0]}{right}"
                if mrng.random() < rates["padded_workspace_id"]:
                    left, right = mrng.choice(_PADS)
                    row[1] = f"{left}{row[1]}{right}"
            w.writerow(row)


def generate_legacy(
    out_dir: str | os.PathLike[str],
    *,
    n_leads: int = 3000,
    n_workspaces: int = 3,
    seed: int = 7,
    messy: bool = False,
    now: datetime | None = None,
) -> GeneratedLegacy:
    """Write ``workspaces.csv`` (``n_workspaces`` rows) and ``leads.csv`` (``n_leads`` rows) to ``out_dir``.

    ``out_dir`` is created if missing; existing files are overwritten. ``now`` is the reference time
    (default :data:`REFERENCE_NOW`, 2026-11-15T12:00:00Z; a naive value is taken as UTC, truncated to
    the minute) around which appointment times are placed. Output is a pure function of the arguments.
    Leads are streamed, so memory stays flat for any ``n_leads`` (1M leads: ~250 MB of CSV, ~13 s, ~15 MB RSS).
    """
    if n_leads < 0:
        raise ValueError("n_leads must be >= 0")
    if n_workspaces < 1:
        raise ValueError("n_workspaces must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    mrng = random.Random(f"appt_pipeline.sample.messy:{seed}") if messy else None
    ws_path, leads_path = out / "workspaces.csv", out / "leads.csv"
    workspaces = _write_workspaces(ws_path, rng, seed, n_workspaces)
    _write_leads(leads_path, rng, mrng, seed, n_leads, workspaces, _to_epoch(now))
    return GeneratedLegacy(ws_path, leads_path, n_workspaces, n_leads)


def main(argv: Sequence[str] | None = None) -> int:
    """Developer CLI: ``python -m appt_pipeline.sample.generator OUT_DIR [--leads N] ...``."""
    p = argparse.ArgumentParser(
        prog="python -m appt_pipeline.sample.generator",
        description="Write a deterministic legacy CRM export (workspaces.csv, leads.csv) to OUT_DIR.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--leads", type=int, default=3000, help="number of leads (default 3000)")
    p.add_argument("--workspaces", type=int, default=3, help="number of workspaces (default 3)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--messy", action="store_true", help="inject the defects listed in the module docstring")
    args = p.parse_args(argv)
    res = generate_legacy(
        args.out_dir, n_leads=args.leads, n_workspaces=args.workspaces, seed=args.seed, messy=args.messy
    )
    print(f"wrote {res.n_workspaces} workspaces to {res.workspaces_path}, {res.n_leads} leads to {res.leads_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
