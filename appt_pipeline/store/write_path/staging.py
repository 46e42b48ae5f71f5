"""The staging table ``appt_obs``: the typed contract every stager fills, COPY from Python, key lookups (SPEC §4).

A writer stages its observations in the per-connection temp table ``appt_obs`` — from Python
(:func:`copy_observations`, via COPY) or from SQL (the migration's ``INSERT … SELECT``, built with
:func:`stage_insert_sql`) — and then calls :func:`appt_pipeline.store.write_path.apply_staged`. Each
column has one meaning (:data:`STAGE_TABLE`); ``apply_staged`` fills the columns marked ``filled``.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
import sqlalchemy as sa
from psycopg import sql

from appt_pipeline.domain.observation import InvalidObservationError, Observation
from appt_pipeline.domain.vocab import ErrorKind, Status

#: Name of the staging temp table (rows vanish at commit).
STAGE = "appt_obs"


@dataclass(frozen=True, slots=True)
class StageColumn:
    """One column of ``appt_obs``: its PostgreSQL type (with constraints) and who writes it.

    ``filled``: written by ``apply_staged`` (per-observation results), never by a stager.
    """

    name: str
    sql_type: str
    doc: str
    filled: bool = False


#: The staging table, column by column. Stagers write the columns that are not ``filled``.
STAGE_TABLE: tuple[StageColumn, ...] = (
    StageColumn("ord", "integer NOT NULL", "position of the observation in the batch"),
    StageColumn("round", "integer NOT NULL DEFAULT 0", "n-th occurrence of its key in the batch (applied in order)"),
    StageColumn("workspace_id", "text NOT NULL", "observed workspace"),
    StageColumn("lead_id", "text NOT NULL", "observed lead"),
    StageColumn("provider", "meeting_booking_provider NOT NULL", "SPEC §1"),
    StageColumn("status", "appointment_status NOT NULL", "observed status (SPEC §2 mapped)"),
    StageColumn("source", "appointment_source NOT NULL", "writer (SPEC §1)"),
    StageColumn("ghl_appointment_id", "text", "GHL key"),
    StageColumn("calendly_invitee_uri", "text", "Calendly key"),
    StageColumn("calendly_scheduled_event_uri", "text", "Calendly event"),
    StageColumn("ghl_calendar_id", "text", "attribution"),
    StageColumn("calendly_event_type_uri", "text", "attribution"),
    StageColumn("start_at", "timestamptz", "UTC"),
    StageColumn("end_at", "timestamptz", "UTC"),
    StageColumn("timezone", "text", "IANA zone of the booking"),
    StageColumn("booked_at", "timestamptz", "creation time of a new row (else now)"),
    StageColumn("provider_updated_at", "timestamptz", "the provider's clock, for stale observations (SPEC §4.1)"),
    StageColumn("canceled_at", "timestamptz", "set for CANCELED/RESCHEDULED observations"),
    StageColumn("cancel_reason", "text", "provider's reason"),
    StageColumn("status_changed_at", "timestamptz", "when the observed status began"),
    StageColumn("rescheduled_from_invitee_uri", "text", "Calendly old_invitee hint (SPEC §4.3)"),
    StageColumn("rescheduled_to_invitee_uri", "text", "Calendly new_invitee hint (SPEC §4.3)"),
    StageColumn("provider_links_reschedules", "boolean NOT NULL DEFAULT false", "no heuristic link (SPEC §4.3)"),
    StageColumn("legacy_lead_key", "text", "the migrated lead's id (SPEC §5)"),
    StageColumn("webhook_event_id", "bigint", "the delivery the observation came from"),
    StageColumn("error_kind", "text", "an ErrorKind: the observation is not applied"),
    StageColumn("warning", "text", "a WarningKind: applied, but counted (migration)"),
    StageColumn("already_present", "boolean NOT NULL DEFAULT false",
                "migration: the lead was migrated before (its key is its own); not applied"),
    StageColumn("claimed_by_lead_id", "text", "migration: the lead owning the provider id this lead claims"),
    # filled by apply_staged
    StageColumn("appointment_id", "uuid", "the row written", filled=True),
    StageColumn("prev_found", "boolean NOT NULL DEFAULT false", "the key existed before the write", filled=True),
    StageColumn("prev_lead_id", "text", "lead owning the key before the write", filled=True),
    StageColumn("prev_status", "appointment_status", "status before the write", filled=True),
    StageColumn("prev_start_at", "timestamptz", "start before the write", filled=True),
    StageColumn("start_changed", "boolean NOT NULL DEFAULT false", "an existing row's start moved", filled=True),
    StageColumn("new_start_at", "timestamptz", "start after the write (keys that existed)", filled=True),
    StageColumn("is_new", "boolean", "the row was created", filled=True),
    StageColumn("new_status", "appointment_status", "status after the write", filled=True),
    StageColumn("primary_changed", "boolean", "the lead's primary changed (SPEC §3)", filled=True),
)

_BY_NAME = {c.name: c for c in STAGE_TABLE}

#: Columns :func:`copy_observations` writes, in COPY order (the observation fields plus ``ord``/``round``).
STAGE_COLUMNS: tuple[str, ...] = (
    "ord", "round", "workspace_id", "lead_id", "provider", "status", "source",
    "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri",
    "ghl_calendar_id", "calendly_event_type_uri", "start_at", "end_at", "timezone", "booked_at",
    "provider_updated_at", "canceled_at", "cancel_reason", "status_changed_at",
    "rescheduled_from_invitee_uri", "rescheduled_to_invitee_uri", "provider_links_reschedules",
    "legacy_lead_key", "webhook_event_id", "error_kind",
)


def _column_list(names: Sequence[str]) -> str:
    """``"a", "b"``: stager columns, checked against the contract and quoted as identifiers."""
    for name in names:
        column = _BY_NAME.get(name)
        if column is None or column.filled:
            raise ValueError(f"{name!r} is not a column stagers write in {STAGE}")
    return sql.SQL(", ").join(sql.Identifier(n) for n in names).as_string(None)


def stage_insert_sql(values: Mapping[str, str]) -> str:
    """``INSERT INTO appt_obs (columns) SELECT expressions`` for a stager in SQL; the caller appends ``FROM …``.

    ``values`` maps stager columns (:data:`STAGE_TABLE`) to SQL expressions. Raises ``ValueError`` for a
    column outside the contract or one that ``apply_staged`` fills.
    """
    columns = _column_list(list(values))
    exprs = ",\n        ".join(values.values())
    return f"INSERT INTO {sql.Identifier(STAGE).as_string(None)} ({columns})\n    SELECT {exprs}"


_COPY_SQL = f"COPY {sql.Identifier(STAGE).as_string(None)} ({_column_list(STAGE_COLUMNS)}) FROM STDIN"

#: Batches at least this large get fresh planner statistics on the staging table before they apply.
ANALYZE_STAGE_ROWS = 1_000

CREATE_STAGE_SQL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (\n    "
    + ",\n    ".join(f"{sql.Identifier(c.name).as_string(None)} {c.sql_type}" for c in STAGE_TABLE)
    + "\n) ON COMMIT DELETE ROWS;\n"
    + """CREATE TEMP TABLE IF NOT EXISTS appt_obs_leads (
    lead_id             text PRIMARY KEY,
    side_effects        boolean NOT NULL,
    old_primary_id      uuid,
    old_primary_status  appointment_status,
    new_primary_id      uuid,
    new_primary_status  appointment_status
) ON COMMIT DELETE ROWS;
-- the leads this transaction has locked (and their workspace): apply_staged's lock set
CREATE TEMP TABLE IF NOT EXISTS appt_obs_locked (
    lead_id       text NOT NULL,  -- distinct (every insert excludes the ids present); no index to maintain
    workspace_id  text NOT NULL
) ON COMMIT DELETE ROWS;
"""
)

# rows of an earlier call in this transaction would be applied again (staging empties only at commit)
_CLEAR_STAGE = "DELETE FROM appt_obs; DELETE FROM appt_obs_leads"

# Rounds and staged rows of the batch.
STAGE_SIZE = "SELECT coalesce(max(round), -1) + 1, count(*) FROM appt_obs"

# The staging table is never auto-analyzed: without statistics the planner takes a 50k-row batch for a handful
# of rows and picks nested loops that are quadratic in the batch (measured: 371 s instead of 2.5 s for one
# upsert of a 50k-row batch). A small sample is enough (30 ms instead of 170 ms for 50k rows).
ANALYZE_STAGE = (
    "SET LOCAL default_statistics_target = 10; ANALYZE appt_obs; SET LOCAL default_statistics_target TO DEFAULT"
)

# Staged rows and errors of the batch (apply_staged's summary).
STAGE_COUNTS = "SELECT count(*), count(*) FILTER (WHERE error_kind IS NOT NULL) FROM appt_obs"

# Per-observation flags after apply_staged (apply_observations' results).
STAGE_FLAGS = """
SELECT ord, appointment_id, coalesce(is_new, false), prev_status, new_status, error_kind,
       coalesce(primary_changed, false), start_changed
FROM appt_obs
"""


def ensure_stage(conn: sa.Connection) -> None:
    """Create the session's staging temp tables if needed (rows vanish at commit)."""
    conn.exec_driver_sql(CREATE_STAGE_SQL)


def _stage_row(index: int, round_no: int, obs: Observation, now: datetime) -> tuple[object, ...]:
    ended = obs.status in (Status.CANCELED, Status.RESCHEDULED)
    changed_at = obs.status_changed_at or (obs.canceled_at if ended else None) or obs.provider_updated_at or now
    return (
        index, round_no, obs.workspace_id, obs.lead_id, obs.provider.value, obs.status.value, obs.source.value,
        obs.ghl_appointment_id, obs.calendly_invitee_uri, obs.calendly_scheduled_event_uri,
        obs.ghl_calendar_id, obs.calendly_event_type_uri, obs.start_at, obs.end_at, obs.timezone, obs.booked_at,
        obs.provider_updated_at, (obs.canceled_at or now) if ended else None, obs.cancel_reason, changed_at,
        obs.rescheduled_from_invitee_uri, obs.rescheduled_to_invitee_uri, obs.provider_links_reschedules,
        obs.legacy_lead_key, obs.webhook_event_id, None,
    )


def copy_observations(
    conn: sa.Connection, observations: Sequence[Observation], now: datetime
) -> dict[int, ErrorKind]:
    """Empty the staging tables and COPY ``observations`` into ``appt_obs`` (one round per repeat of a key).

    Returns the invalid observations (not staged) by batch index, with their error kind. ``now`` (UTC)
    fills ``canceled_at`` / ``status_changed_at`` the observation does not give.
    """
    ensure_stage(conn)
    conn.exec_driver_sql(_CLEAR_STAGE)
    seen = Counter[str]()
    invalid: dict[int, ErrorKind] = {}
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    with raw.cursor().copy(_COPY_SQL) as copy:
        for index, obs in enumerate(observations):
            try:
                obs = obs.validate()
                key = obs.key
            except InvalidObservationError as exc:
                invalid[index] = exc.kind
                continue
            copy.write_row(_stage_row(index, seen[key], obs, now))
            seen[key] += 1
    return invalid


# ------------------------------------------------------------------------------------------------ key lookups

def rows_by_key(filter_sql: str) -> str:
    """SELECT ``kind, k, id`` of the existing rows holding a key staged in ``appt_obs`` (rows matching ``filter_sql``).

    ``kind`` is the key kind of :data:`KEY_KIND` ('G' GHL id, 'C' invitee URI, 'L' legacy lead key). ``col =
    ANY (ARRAY(…))`` makes each kind one sorted scan of its unique index, whatever the table's size (a join is
    planned as a hash join over a scan of all of ``appointments``, or as an OR of three probes per row).
    """
    return f"""
    SELECT 'G' AS kind, a.ghl_appointment_id AS k, a.id FROM appointments a
    WHERE a.ghl_appointment_id = ANY (ARRAY(
        SELECT o.ghl_appointment_id FROM appt_obs o WHERE {filter_sql} AND o.provider = 'GHL'))
    UNION ALL
    SELECT 'C', a.calendly_invitee_uri, a.id FROM appointments a
    WHERE a.calendly_invitee_uri = ANY (ARRAY(
        SELECT o.calendly_invitee_uri FROM appt_obs o
        WHERE {filter_sql} AND o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NOT NULL))
    UNION ALL
    SELECT 'L', a.legacy_lead_key, a.id FROM appointments a
    WHERE a.legacy_lead_key = ANY (ARRAY(
        SELECT o.legacy_lead_key FROM appt_obs o
        WHERE {filter_sql} AND o.provider = 'CALENDLY' AND o.calendly_invitee_uri IS NULL))"""


#: (kind, key) of a staged observation ``o``, the counterpart of :func:`rows_by_key` (equality joins hash).
KEY_KIND = "(CASE WHEN o.provider = 'GHL' THEN 'G' WHEN o.calendly_invitee_uri IS NOT NULL THEN 'C' ELSE 'L' END)"
KEY_VALUE = "coalesce(o.ghl_appointment_id, o.calendly_invitee_uri, o.legacy_lead_key)"
