"""Calendar capacity (docs/rules.md §9), computed in ONE statement for any number of workspaces.

:data:`CAPACITY_SQL` reads, in one pass over all the configured calendars of the given workspaces, the
CONFIRMED ``appointments`` starting in the window (index ``(workspace_id, status, start_at)``) and the free
slots of ``calendar_availability`` in the window, and returns the capacity rows (one per configured calendar
and one ``*`` total per workspace) and the per-day rows (every UTC day of the window × every key). No query
per calendar or per workspace. :data:`STORE_CAPACITY_SQL` is the same statement with data-modifying CTEs that
also write ``calendar_capacity`` and ``calendar_capacity_days`` (upserted — a day row is written, and its
``computed_at`` moves, only when its numbers change; rows of keys or days no longer in the window's result
deleted), in the same round trip.

The rule, as the SQL applies it:

* calendar keys: the workspace's ``meeting_booking_provider``'s default and direct-book calendar / event
  type, trimmed, blank = not configured, the direct one only when different from the default
  (:func:`appt_pipeline.domain.calendars.configured_calendars`, mirrored by the ``ws`` / ``refs`` CTEs);
* window [window_start, window_end) — start inclusive, end exclusive — for bookings and slots alike;
* per calendar: booked = CONFIRMED rows of that provider whose ``ghl_calendar_id`` /
  ``calendly_event_type_uri`` equals the key; available = its slot rows (unique per slot start);
* total ``*``: booked = every CONFIRMED row of the workspace in the window (attributed or not, any
  provider), ``unattributed_booked_slots`` = those attributed to no configured calendar; available = the
  union of the calendars' slot starts (a slot offered by both counts once: per workspace the two calendars'
  slot index ranges are full-joined on the slot start);
* ``stale`` / ``last_error`` per calendar from ``calendar_availability_status`` (the refresh outcome): stale
  when never fetched successfully or ``stale_at`` ≤ window_start; without a status row the slot rows' own
  ``fetched_at`` / ``stale_at`` / ``last_error`` are used, and a calendar with neither reports
  :data:`appt_pipeline.domain.capacity.NEVER_FETCHED`. The total row is stale when any calendar is.

Both statements use psycopg placeholders (``%(name)s``) so the async service can run them on its own pool
(:func:`capacity_params`, :func:`report_from_rows`); :func:`read_capacity` and :func:`store_capacity` run
them on a SQLAlchemy connection or engine. Both return the same :class:`CapacityReport`, so the command line,
the asset metadata and the HTTP API always agree.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.calendars import TOTAL_KEY
from appt_pipeline.domain.capacity import (
    NEVER_FETCHED,
    CalendarCapacity,
    CapacityReport,
    DayCapacity,
    TotalCapacity,
    WorkspaceCapacity,
    capacity_window,
)

#: Characters Python's ``str.strip()`` removes that matter in a configured key (ASCII whitespace).
_WS_CHARS = r"E' \t\n\r\f\v'"

_COMPUTE_CTES = f"""
ws AS (
    SELECT w.id AS workspace_id, row_number() OVER (ORDER BY w.id) AS wn, w.meeting_booking_provider AS provider,
           nullif(btrim(CASE WHEN w.meeting_booking_provider = 'CALENDLY' THEN w.calendly_event_type_uri
                             ELSE w.ghl_default_calendar_id END, {_WS_CHARS}), '') AS default_key,
           nullif(btrim(CASE WHEN w.meeting_booking_provider = 'CALENDLY' THEN w.calendly_direct_book_event_type_uri
                             ELSE w.ghl_direct_book_calendar_id END, {_WS_CHARS}), '') AS direct_key
    FROM workspaces w
    WHERE w.id = ANY(%(workspace_ids)s::text[])
),
refs AS (
    SELECT workspace_id, wn, provider, default_key AS calendar_key,
           'DEFAULT'::availability_source AS availability_source, 1 AS ord
    FROM ws WHERE default_key IS NOT NULL
    UNION ALL
    SELECT workspace_id, wn, provider, direct_key, 'DIRECT_BOOK'::availability_source, 2
    FROM ws WHERE direct_key IS NOT NULL AND direct_key IS DISTINCT FROM default_key
),
booked AS (
    SELECT a.workspace_id, (a.start_at AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE r.ord = 1) AS n1, count(*) FILTER (WHERE r.ord = 2) AS n2,
           count(*) AS n_total, count(*) FILTER (WHERE r.ord IS NULL) AS n_unattributed
    FROM appointments a
    LEFT JOIN refs r ON r.workspace_id = a.workspace_id AND r.provider = a.provider
        AND r.calendar_key = CASE a.provider WHEN 'GHL' THEN a.ghl_calendar_id ELSE a.calendly_event_type_uri END
    WHERE a.workspace_id = ANY(%(workspace_ids)s::text[]) AND a.status = 'CONFIRMED'
      AND a.start_at >= %(window_start)s AND a.start_at < %(window_end)s
    GROUP BY 1, 2
),
free AS (
    SELECT w.wn, f.day, f.n1, f.n2, f.n_total
    FROM ws w
    CROSS JOIN LATERAL (
        SELECT (coalesce(d.slot_start, x.slot_start) AT TIME ZONE 'UTC')::date AS day,
               count(d.slot_start) AS n1, count(x.slot_start) AS n2, count(*) AS n_total
        FROM (SELECT s.slot_start FROM calendar_availability s
              WHERE w.default_key IS NOT NULL AND s.workspace_id = w.workspace_id AND s.provider = w.provider
                AND s.calendar_key = w.default_key AND s.availability_source = 'DEFAULT'
                AND s.slot_start >= %(window_start)s AND s.slot_start < %(window_end)s) d
        FULL JOIN (SELECT s.slot_start FROM calendar_availability s
              WHERE w.direct_key IS NOT NULL AND w.direct_key IS DISTINCT FROM w.default_key
                AND s.workspace_id = w.workspace_id AND s.provider = w.provider
                AND s.calendar_key = w.direct_key AND s.availability_source = 'DIRECT_BOOK'
                AND s.slot_start >= %(window_start)s AND s.slot_start < %(window_end)s) x
          ON x.slot_start = d.slot_start
        GROUP BY 1
    ) f
),
days AS (
    SELECT d::date AS day
    FROM generate_series(date_trunc('day', %(window_start)s AT TIME ZONE 'UTC'),
                         (%(window_end)s - interval '1 microsecond') AT TIME ZONE 'UTC', interval '1 day') d
),
keys AS (
    SELECT workspace_id, wn, calendar_key, ord FROM refs
    UNION ALL
    SELECT workspace_id, wn, '{TOTAL_KEY}', 99 FROM ws
),
grid AS (
    SELECT k.workspace_id, k.calendar_key, k.ord, d.day,
           coalesce(CASE k.ord WHEN 1 THEN b.n1 WHEN 2 THEN b.n2 ELSE b.n_total END, 0)::integer AS booked_slots,
           coalesce(CASE k.ord WHEN 1 THEN f.n1 WHEN 2 THEN f.n2 ELSE f.n_total END, 0)::integer AS available_slots
    FROM keys k CROSS JOIN days d
    LEFT JOIN booked b ON b.workspace_id = k.workspace_id AND b.day = d.day
    LEFT JOIN free f ON f.wn = k.wn AND f.day = d.day
),
unattributed AS (
    SELECT workspace_id, sum(n_unattributed) AS n FROM booked GROUP BY 1
),
cal AS (
    SELECT r.workspace_id, r.calendar_key, r.ord, r.provider, r.availability_source,
           CASE WHEN st.workspace_id IS NOT NULL THEN st.fetched_at ELSE sm.fetched_at END AS fetched_at,
           CASE WHEN st.workspace_id IS NOT NULL THEN st.stale_at ELSE sm.stale_at END AS stale_at,
           CASE WHEN st.workspace_id IS NOT NULL THEN st.last_error ELSE sm.last_error END AS last_error
    FROM refs r
    LEFT JOIN calendar_availability_status st ON st.workspace_id = r.workspace_id AND st.provider = r.provider
        AND st.calendar_key = r.calendar_key AND st.availability_source = r.availability_source
    LEFT JOIN LATERAL (  -- no status row (written before the status table existed): the slot rows' own times
        SELECT max(s.fetched_at) AS fetched_at, min(s.stale_at) AS stale_at, max(s.last_error) AS last_error
        FROM calendar_availability s
        WHERE st.workspace_id IS NULL AND s.workspace_id = r.workspace_id AND s.provider = r.provider
          AND s.calendar_key = r.calendar_key AND s.availability_source = r.availability_source
          AND s.slot_start >= %(window_start)s AND s.slot_start < %(window_end)s
    ) sm ON true
),
cal_state AS (
    SELECT workspace_id, calendar_key, provider, availability_source,
           (fetched_at IS NULL OR stale_at IS NULL OR stale_at <= %(window_start)s) AS stale,
           coalesce(last_error, CASE WHEN fetched_at IS NULL THEN '{NEVER_FETCHED}' END) AS last_error
    FROM cal
),
cap AS (
    SELECT g.workspace_id, g.calendar_key, g.ord,
           sum(g.booked_slots)::integer AS booked_slots, sum(g.available_slots)::integer AS available_slots
    FROM grid g GROUP BY g.workspace_id, g.calendar_key, g.ord
),
ws_stale AS (
    SELECT workspace_id, bool_or(stale) AS stale FROM cal_state GROUP BY 1
),
result AS (
    SELECT c.workspace_id, c.calendar_key, c.ord, s.provider, s.availability_source,
           c.booked_slots, c.available_slots,
           CASE WHEN c.ord = 99 THEN coalesce(u.n, 0) ELSE 0 END::integer AS unattributed_booked_slots,
           CASE WHEN c.ord = 99 THEN coalesce(wst.stale, false) ELSE s.stale END AS stale,
           s.last_error
    FROM cap c
    LEFT JOIN cal_state s ON c.ord <> 99 AND s.workspace_id = c.workspace_id AND s.calendar_key = c.calendar_key
    LEFT JOIN unattributed u ON c.ord = 99 AND u.workspace_id = c.workspace_id
    LEFT JOIN ws_stale wst ON c.ord = 99 AND wst.workspace_id = c.workspace_id
)"""

_RESULT_SELECT = """
SELECT 0 AS kind, workspace_id, ord, calendar_key, NULL::date AS day, provider::text, availability_source::text,
       booked_slots, available_slots, unattributed_booked_slots, stale, last_error
FROM result
UNION ALL
SELECT 1, workspace_id, ord, calendar_key, day, NULL, NULL, booked_slots, available_slots, NULL, NULL, NULL
FROM grid
ORDER BY 2, 1, 5, 3
"""

_PCT = ("CASE WHEN {b} + {a} > 0 THEN least(1.0, greatest(0.0, {b}::double precision / ({b} + {a}))) END")

_WRITE_CTES = f""",
del_capacity AS (
    DELETE FROM calendar_capacity c
    WHERE c.workspace_id IN (SELECT workspace_id FROM ws) AND c.window_days = %(window_days)s
      AND NOT EXISTS (SELECT 1 FROM result r WHERE r.workspace_id = c.workspace_id
                                               AND r.calendar_key = c.calendar_key)
),
put_capacity AS (
    INSERT INTO calendar_capacity AS c (workspace_id, calendar_key, window_days, window_start, window_end,
        booked_slots, available_slots, total_slots, booked_pct, unattributed_booked_slots, computed_at,
        provider, availability_source, stale, last_error)
    SELECT r.workspace_id, r.calendar_key, %(window_days)s, %(window_start)s, %(window_end)s,
           r.booked_slots, r.available_slots, r.booked_slots + r.available_slots,
           {_PCT.format(b="r.booked_slots", a="r.available_slots")}, r.unattributed_booked_slots, now(),
           r.provider, r.availability_source, r.stale, r.last_error
    FROM result r
    ON CONFLICT (workspace_id, calendar_key, window_days) DO UPDATE SET
        window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
        booked_slots = EXCLUDED.booked_slots, available_slots = EXCLUDED.available_slots,
        total_slots = EXCLUDED.total_slots, booked_pct = EXCLUDED.booked_pct,
        unattributed_booked_slots = EXCLUDED.unattributed_booked_slots, computed_at = EXCLUDED.computed_at,
        provider = EXCLUDED.provider, availability_source = EXCLUDED.availability_source,
        stale = EXCLUDED.stale, last_error = EXCLUDED.last_error
),
del_days AS (
    DELETE FROM calendar_capacity_days d
    WHERE d.workspace_id IN (SELECT workspace_id FROM ws) AND d.window_days = %(window_days)s
      AND NOT EXISTS (SELECT 1 FROM grid g WHERE g.workspace_id = d.workspace_id
                                             AND g.calendar_key = d.calendar_key AND g.day = d.day)
),
day_changes AS (
    SELECT g.workspace_id, g.calendar_key, g.day, g.booked_slots, g.available_slots
    FROM grid g
    LEFT JOIN calendar_capacity_days d ON d.workspace_id = g.workspace_id AND d.calendar_key = g.calendar_key
        AND d.window_days = %(window_days)s AND d.day = g.day
    WHERE d.workspace_id IS NULL
       OR (d.booked_slots, d.available_slots) IS DISTINCT FROM (g.booked_slots, g.available_slots)
),
put_days AS (
    INSERT INTO calendar_capacity_days AS d (workspace_id, calendar_key, window_days, day, booked_slots,
                                             available_slots, computed_at)
    SELECT c.workspace_id, c.calendar_key, %(window_days)s, c.day, c.booked_slots, c.available_slots, now()
    FROM day_changes c
    ON CONFLICT (workspace_id, calendar_key, window_days, day) DO UPDATE SET
        booked_slots = EXCLUDED.booked_slots, available_slots = EXCLUDED.available_slots,
        computed_at = EXCLUDED.computed_at
)"""

#: Capacity of ``workspace_ids`` for [window_start, window_end), read only. Binds ``workspace_ids`` (text[]),
#: ``window_start``, ``window_end``, ``window_days``. Rows ``(kind, workspace_id, ord, calendar_key, day,
#: provider, availability_source, booked_slots, available_slots, unattributed_booked_slots, stale,
#: last_error)``: kind 0 = a capacity row (``ord`` 1 DEFAULT, 2 DIRECT_BOOK, 99 the ``*`` total), kind 1 = a
#: per-day row. A workspace that does not exist has no row; every one that does has its ``*`` row.
CAPACITY_SQL = f"WITH {_COMPUTE_CTES}{_RESULT_SELECT}"

#: :data:`CAPACITY_SQL` that also writes ``calendar_capacity`` and ``calendar_capacity_days`` for
#: ``window_days`` (same binds, same rows returned; the writes see the same computation).
STORE_CAPACITY_SQL = f"WITH {_COMPUTE_CTES}{_WRITE_CTES}{_RESULT_SELECT}"

#: Serialises concurrent writers of the same workspaces' capacity (transaction-scoped, in id order) and
#: returns the ids that exist.
_LOCK_SQL = ("SELECT id, pg_advisory_xact_lock(hashtextextended('calendar_capacity:' || id, 0)) "
             "FROM (SELECT id FROM workspaces WHERE id = ANY(%(workspace_ids)s::text[]) ORDER BY id) ids")


class UnknownWorkspaceError(LookupError):
    """Some asked-for workspaces do not exist; ``workspace_ids`` names them."""

    def __init__(self, workspace_ids: Sequence[str]) -> None:
        self.workspace_ids = tuple(workspace_ids)
        names = ", ".join(repr(w) for w in self.workspace_ids)
        super().__init__(f"workspace {names} does not exist" if len(self.workspace_ids) == 1
                         else f"workspaces {names} do not exist")


def capacity_params(workspace_ids: Iterable[str], *, days: int | None, now: datetime) -> dict[str, Any]:
    """The binds of :data:`CAPACITY_SQL` / :data:`STORE_CAPACITY_SQL`: the window [now, now + days) with
    ``days`` clamped to 1…90 (``None`` → 30); ``now`` timezone-aware (``ValueError`` otherwise)."""
    start, end, n = capacity_window(now, days)
    return {"workspace_ids": sorted(set(workspace_ids)), "window_start": start, "window_end": end,
            "window_days": n}


def report_from_rows(params: dict[str, Any], rows: Iterable[Sequence[Any]]) -> CapacityReport:
    """The :class:`CapacityReport` of the rows :data:`CAPACITY_SQL` returned for ``params``
    (:func:`capacity_params`); raises :class:`UnknownWorkspaceError` when an asked-for workspace has no row."""
    calendars: dict[str, list[CalendarCapacity]] = defaultdict(list)
    totals: dict[str, TotalCapacity] = {}
    days: dict[str, list[DayCapacity]] = defaultdict(list)
    for kind, ws, ord_, key, day, provider, source, booked, available, unattributed, stale, last_error in rows:
        if kind == 1:
            days[ws].append(DayCapacity(day, key, int(booked), int(available)))
        elif ord_ == 99:
            totals[ws] = TotalCapacity(int(booked), int(available), int(unattributed))
        else:
            calendars[ws].append(CalendarCapacity(key, provider, source, int(booked), int(available), bool(stale),
                                                  last_error))
    missing = [w for w in params["workspace_ids"] if w not in totals]
    if missing:
        raise UnknownWorkspaceError(missing)
    return CapacityReport(
        window_days=params["window_days"], window_start=params["window_start"], window_end=params["window_end"],
        workspaces=tuple(WorkspaceCapacity(w, tuple(calendars[w]), totals[w], tuple(days[w]))
                         for w in params["workspace_ids"]),
    )


def _run(conn_or_engine: sa.Connection | sa.Engine, sql: str, params: dict[str, Any], *,
         lock: bool) -> CapacityReport:
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.begin() as conn:
            return _run(conn, sql, params, lock=lock)
    # the statement's cost estimate turns JIT compilation on, which costs more (~0.1 s) than it saves here
    conn_or_engine.exec_driver_sql("SET LOCAL jit = off")
    if lock:  # refuse unknown workspaces before anything is written
        found = {r[0] for r in conn_or_engine.exec_driver_sql(_LOCK_SQL, {"workspace_ids": params["workspace_ids"]})}
        missing = [w for w in params["workspace_ids"] if w not in found]
        if missing:
            raise UnknownWorkspaceError(missing)
    rows = conn_or_engine.exec_driver_sql(sql, params).all()
    return report_from_rows(params, rows)


def _checked_ids(workspace_ids: Iterable[str]) -> list[str]:
    ids = list(workspace_ids)
    bad = [w for w in ids if not isinstance(w, str) or "\x00" in w]
    if bad:  # PostgreSQL text cannot hold NUL: no such workspace
        raise UnknownWorkspaceError([repr(w) for w in bad])
    return ids


def read_capacity(conn_or_engine: sa.Connection | sa.Engine, workspace_ids: Iterable[str], *,
                  days: int | None = None, now: datetime) -> CapacityReport:
    """Capacity of ``workspace_ids`` for [now, now + days) (``days`` clamped to 1…90, ``None`` → 30; ``now``
    aware UTC) from the stored slots and appointments, in one statement; writes nothing.

    Workspaces are reported in id order. Raises :class:`UnknownWorkspaceError` when one does not exist
    (nothing is read for the others then), ``ValueError`` for a naive ``now``. On a connection the caller's
    transaction is used (with ``SET LOCAL jit = off`` for the rest of it: JIT compilation costs this statement
    more than it saves); on an engine a short one of its own. Callers running :data:`CAPACITY_SQL` on their own
    pool should do the same.
    """
    ids = _checked_ids(workspace_ids)
    params = capacity_params(ids, days=days, now=now)
    return _run(conn_or_engine, CAPACITY_SQL, params, lock=False)


def store_capacity(conn_or_engine: sa.Connection | sa.Engine, workspace_ids: Iterable[str], *,
                   days: int | None = None, now: datetime) -> CapacityReport:
    """:func:`read_capacity` that also writes the result, in the same statement: ``calendar_capacity`` (one row
    per configured calendar key and ``*``, for ``window_days``) and ``calendar_capacity_days`` (per key and UTC
    day), rows of keys or days that are no longer part of the window deleted. Idempotent; concurrent writers
    of the same workspace are serialised (advisory transaction lock). All or nothing: on an engine one
    transaction, on a connection the caller's (which the caller commits). Raises as :func:`read_capacity`."""
    ids = _checked_ids(workspace_ids)
    params = capacity_params(ids, days=days, now=now)
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.begin() as conn:
            return store_capacity(conn, ids, days=days, now=now)
    return _run(conn_or_engine, STORE_CAPACITY_SQL, params, lock=True)


#: Columns of :func:`stored_capacity` rows, in order.
STORED_COLUMNS: tuple[str, ...] = (
    "workspace_id", "calendar_key", "provider", "availability_source", "booked_slots", "available_slots",
    "total_slots", "booked_pct", "unattributed_booked_slots", "stale", "last_error", "window_days", "window_start",
    "window_end", "computed_at")


def stored_capacity(conn_or_engine: sa.Connection | sa.Engine, *, window_days: int = 30) -> list[dict[str, Any]]:
    """The stored ``calendar_capacity`` rows of every workspace for ``window_days`` (what the last
    :func:`store_capacity` of each wrote), keys :data:`STORED_COLUMNS` (times aware UTC), ordered by
    ``booked_pct`` descending (nulls last), then workspace and calendar key (``*`` after the calendars)."""
    sql = (f"SELECT {', '.join(STORED_COLUMNS)} FROM calendar_capacity WHERE window_days = %(d)s "
           "ORDER BY booked_pct DESC NULLS LAST, workspace_id, calendar_key = '*', calendar_key")
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.connect() as conn:
            return stored_capacity(conn, window_days=window_days)
    return [dict(r._mapping) for r in conn_or_engine.exec_driver_sql(sql, {"d": window_days})]
