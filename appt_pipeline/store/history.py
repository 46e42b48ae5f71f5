"""A lead's appointment history and booking status, each read in ONE statement (SPEC §10).

:data:`HISTORY_SQL` returns the lead's time zones, whether it has any appointment row, its rollup columns and
the filtered rows as one JSON array built by PostgreSQL — ordered by ``coalesce(start_at, created_at)``
descending (then ``created_at``, ``id`` descending), each item with its predecessor
(``rescheduled_from_id``), its successor (the earliest row whose ``rescheduled_from_id`` is this row), its
status and time changes (``appointment_status_changes`` oldest first) — in one round trip: no query per row.
A lead that exists but has no rows answers with its rollup, marked ``from_rollup``
(:func:`appt_pipeline.domain.history.rollup_item`). :data:`BOOKING_STATUS_SQL` returns the primary (SPEC §3 at
``now``) as an item, the rollup and the counts by status.

Both statements use psycopg placeholders, so the async service runs them on its pool as they are
(:func:`history_params`, :func:`history_from_row`) and the command line through :func:`read_history` on a
SQLAlchemy connection. Times in the JSON are ISO-8601 UTC with milliseconds (``2026-03-05T15:00:00.000Z``).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from appt_pipeline.domain.history import HistoryFilters, passes_filters, rollup_item
from appt_pipeline.domain.primary import LeadRollup
from appt_pipeline.domain.timeparse import format_booked_slot, parse_timestamp_or_none
from appt_pipeline.domain.vocab import Status
from appt_pipeline.store.rollups import PRIMARY_ORDER

#: The eleven rollup columns of ``leads`` (SPEC §3), in ``LeadRollup`` field order.
_ROLLUP_COLUMNS: tuple[str, ...] = tuple(LeadRollup.__dataclass_fields__)
_TIME_ROLLUP_COLUMNS = frozenset({"appointment_booked_at", "appointment_start_at", "appointment_end_at",
                                  "appointment_canceled_at"})


def _iso(expr: str) -> str:
    """SQL text of ``expr`` (timestamptz) as ISO-8601 UTC with milliseconds and ``Z``, null stays null (the
    format of ``domain.timeparse.format_booked_slot``, whatever the session's TimeZone)."""
    return f"""to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def item_json_sql(alias: str) -> str:
    """SQL ``json`` expression of one history item (SPEC §10 keys, in order) of the ``appointments`` row
    ``alias``: its successor and its changes are correlated subqueries on the indexes of
    ``rescheduled_from_id`` and ``appointment_status_changes.appointment_id``."""
    r = alias
    change = (
        "json_build_object('from_status', c.from_status, 'to_status', c.to_status, "
        f"'from_start_at', {_iso('c.from_start_at')}, 'to_start_at', {_iso('c.to_start_at')}, "
        f"'source', c.source, 'observed_at', {_iso('c.observed_at')})"
    )
    return f"""json_build_object(
        'id', {r}.id, 'provider', {r}.provider, 'status', {r}.status,
        'start_at', {_iso(f'{r}.start_at')}, 'end_at', {_iso(f'{r}.end_at')}, 'timezone', {r}.timezone,
        'source', {r}.source, 'last_source', {r}.last_source,
        'ghl_appointment_id', {r}.ghl_appointment_id, 'calendly_invitee_uri', {r}.calendly_invitee_uri,
        'ghl_calendar_id', {r}.ghl_calendar_id, 'calendly_event_type_uri', {r}.calendly_event_type_uri,
        'rescheduled_from_id', {r}.rescheduled_from_id,
        'rescheduled_to_id', (SELECT s.id FROM appointments s WHERE s.rescheduled_from_id = {r}.id
                              ORDER BY s.created_at, s.id LIMIT 1),
        'canceled_at', {_iso(f'{r}.canceled_at')}, 'cancel_reason', {r}.cancel_reason,
        'changes', coalesce((SELECT json_agg({change} ORDER BY c.observed_at, c.id)
                             FROM appointment_status_changes c WHERE c.appointment_id = {r}.id), '[]'::json))"""


_HISTORY_ORDER = "coalesce({a}.start_at, {a}.created_at) DESC, {a}.created_at DESC, {a}.id DESC"
_ROLLUP_SELECT = ", ".join(f"l.{c}" for c in _ROLLUP_COLUMNS)

#: One lead's history (SPEC §10). Binds ``workspace_id``, ``lead_id``, ``include_canceled``, ``active_only``,
#: ``now``, ``limit``. No row: the lead does not exist in that workspace. Columns: ``lead_timezone``,
#: ``workspace_timezone``, ``has_rows`` (any row at all, whatever the filters), ``items`` (JSON array text), then
#: the rollup columns.
HISTORY_SQL = f"""
WITH r AS (
    SELECT a.* FROM appointments a
    WHERE a.lead_id = %(lead_id)s AND a.workspace_id = %(workspace_id)s
      AND (%(include_canceled)s OR a.status <> 'CANCELED')
      AND (NOT %(active_only)s OR (a.status = 'CONFIRMED' AND (a.start_at IS NULL OR a.start_at >= %(now)s)))
    ORDER BY {_HISTORY_ORDER.format(a="a")}
    LIMIT %(limit)s
)
SELECT l.timezone AS lead_timezone, w.timezone AS workspace_timezone,
       EXISTS (SELECT 1 FROM appointments x WHERE x.lead_id = l.id) AS has_rows,
       (SELECT coalesce(json_agg({item_json_sql("r")} ORDER BY {_HISTORY_ORDER.format(a="r")}), '[]'::json)
        FROM r)::text AS items,
       {_ROLLUP_SELECT}
FROM leads l JOIN workspaces w ON w.id = l.workspace_id
WHERE l.id = %(lead_id)s AND l.workspace_id = %(workspace_id)s
"""

#: The booking status of one lead: the primary at ``now`` (SPEC §3) as an item, counts by status, the rollup.
#: Binds ``workspace_id``, ``lead_id``, ``ref``. No row: unknown lead. Columns: ``primary_item`` (JSON text or
#: null), ``counts`` (JSON object text), then the rollup columns.
BOOKING_STATUS_SQL = f"""
WITH p AS (
    SELECT a.* FROM appointments a
    WHERE a.lead_id = %(lead_id)s AND a.workspace_id = %(workspace_id)s
    ORDER BY {PRIMARY_ORDER.replace(":ref", "%(ref)s")}
    LIMIT 1
)
SELECT (SELECT {item_json_sql("p")} FROM p)::text AS primary_item,
       (SELECT coalesce(json_object_agg(x.status, x.n), '{{}}'::json) FROM (
            SELECT a.status, count(*) AS n FROM appointments a
            WHERE a.lead_id = %(lead_id)s AND a.workspace_id = %(workspace_id)s GROUP BY a.status) x)::text AS counts,
       {_ROLLUP_SELECT}
FROM leads l
WHERE l.id = %(lead_id)s AND l.workspace_id = %(workspace_id)s
"""


@dataclass(frozen=True)
class LeadHistory:
    """A lead's history (SPEC §10). :meth:`json` is the API's body; ``items`` the same rows as dicts.

    ``lead_timezone`` / ``workspace_timezone``: the IANA names stored (may be null or invalid; pages resolve
    them with ``domain.rules.resolve_timezone``).
    """

    workspace_id: str
    lead_id: str
    from_rollup: bool
    items_json: bytes
    lead_timezone: str | None
    workspace_timezone: str | None

    @property
    def items(self) -> list[dict[str, Any]]:
        """The appointment items (SPEC §10 shape), newest first."""
        items: list[dict[str, Any]] = orjson.loads(self.items_json)
        return items

    def json(self) -> bytes:
        """``{"workspace_id", "lead_id", "from_rollup", "appointments": [...]}`` as UTF-8 JSON."""
        return b"".join((b'{"workspace_id":', orjson.dumps(self.workspace_id), b',"lead_id":',
                         orjson.dumps(self.lead_id), b',"from_rollup":', b"true" if self.from_rollup else b"false",
                         b',"appointments":', self.items_json, b"}"))

    def as_dict(self) -> dict[str, Any]:
        """:meth:`json` as a dict."""
        value: dict[str, Any] = orjson.loads(self.json())
        return value


def history_params(workspace_id: str, lead_id: str, filters: HistoryFilters, now: datetime) -> dict[str, Any]:
    """The parameters of :data:`HISTORY_SQL` (``now``: UTC, the reference of ``active_only``)."""
    return {"workspace_id": workspace_id, "lead_id": lead_id, "include_canceled": filters.include_canceled,
            "active_only": filters.active_only, "now": now, "limit": filters.limit}


def _rollup(values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    return dict(zip(_ROLLUP_COLUMNS, values, strict=True))


def history_from_row(workspace_id: str, lead_id: str, filters: HistoryFilters, now: datetime,
                     row: tuple[Any, ...] | None) -> LeadHistory | None:
    """The :class:`LeadHistory` from the row :data:`HISTORY_SQL` returned; ``None`` when there was none (the lead
    does not exist in that workspace). A lead without rows answers with its rollup item (if the rollup records
    an appointment and the filters keep it), ``from_rollup`` true."""
    if row is None:
        return None
    lead_tz, ws_tz, has_rows, items, *rollup_values = row
    if has_rows:
        return LeadHistory(workspace_id, lead_id, False, items.encode(), lead_tz, ws_tz)
    item = rollup_item(_rollup(rollup_values))
    keep = item is not None and passes_filters(item["status"], parse_timestamp_or_none(item["start_at"]), now,
                                               filters)
    return LeadHistory(workspace_id, lead_id, True, orjson.dumps([item] if keep else []), lead_tz, ws_tz)


def read_history(conn: sa.Connection, workspace_id: str, lead_id: str, filters: HistoryFilters,
                 now: datetime) -> LeadHistory | None:
    """:data:`HISTORY_SQL` on ``conn``: the lead's history, or ``None`` for a lead unknown in that workspace."""
    if "\x00" in lead_id or "\x00" in workspace_id:  # PostgreSQL text cannot hold NUL: no such lead
        return None
    row = conn.exec_driver_sql(HISTORY_SQL, history_params(workspace_id, lead_id, filters, now)).first()
    return history_from_row(workspace_id, lead_id, filters, now, tuple(row) if row is not None else None)


def booking_status_params(workspace_id: str, lead_id: str, now: datetime) -> dict[str, Any]:
    """The parameters of :data:`BOOKING_STATUS_SQL` (``now``: UTC reference of the primary rule)."""
    return {"workspace_id": workspace_id, "lead_id": lead_id, "ref": now}


def booking_status_from_row(workspace_id: str, lead_id: str, row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    """The booking status (SPEC §10; the original's booking-status read) from the row of
    :data:`BOOKING_STATUS_SQL`, ``None`` for an unknown lead::

        {"workspace_id", "lead_id",
         "primary": <history item> | null,          # SPEC §3 at now
         "rollup": {<the eleven SPEC §3 columns>},   # as stored on the lead (times ISO-8601 UTC)
         "counts": {"CONFIRMED": n, "CANCELED": n, "RESCHEDULED": n, "SHOWED": n, "NO_SHOW": n},
         "appointment_count": n, "has_history": n > 0,
         "has_appointment": <booked_at or a provider id on the lead>,
         "appointment_id": <GHL id, else event URI, else invitee URI> | null}
    """
    if row is None:
        return None
    primary_text, counts_text, *rollup_values = row
    rollup = _rollup(rollup_values)
    stored = orjson.loads(counts_text)
    counts = {s.value: int(stored.get(s.value, 0)) for s in Status}
    total = sum(counts.values())
    appointment_id = (rollup["ghl_appointment_id"] or rollup["calendly_scheduled_event_uri"]
                      or rollup["calendly_invitee_uri"])
    return {
        "workspace_id": workspace_id, "lead_id": lead_id,
        "primary": orjson.loads(primary_text) if primary_text is not None else None,
        "rollup": {k: (format_booked_slot(v) if k in _TIME_ROLLUP_COLUMNS else
                       (str(v) if v is not None else None)) for k, v in rollup.items()},
        "counts": counts, "appointment_count": total, "has_history": total > 0,
        "has_appointment": bool(rollup["appointment_booked_at"] or appointment_id),
        "appointment_id": appointment_id,
    }


def read_booking_status(conn: sa.Connection, workspace_id: str, lead_id: str, now: datetime) -> dict[str, Any] | None:
    """:data:`BOOKING_STATUS_SQL` on ``conn`` (see :func:`booking_status_from_row`); ``None`` for an unknown lead."""
    if "\x00" in lead_id or "\x00" in workspace_id:
        return None
    row = conn.exec_driver_sql(BOOKING_STATUS_SQL, booking_status_params(workspace_id, lead_id, now)).first()
    return booking_status_from_row(workspace_id, lead_id, tuple(row) if row is not None else None)


#: One appointment as a history item (SPEC §10 shape), by id. Binds ``appointment_id``.
ITEM_SQL = f"SELECT ({item_json_sql('a')})::text FROM appointments a WHERE a.id = %(appointment_id)s"


def read_appointment_item(conn: sa.Connection, appointment_id: Any) -> dict[str, Any] | None:
    """The history item of appointment ``appointment_id`` (a UUID), or ``None`` when there is no such row."""
    text = conn.exec_driver_sql(ITEM_SQL, {"appointment_id": appointment_id}).scalar()
    return orjson.loads(text) if text is not None else None
