"""Import of a legacy CRM export (``workspaces.csv`` + ``leads.csv``, format: docs/operations.md §2).

Both files are validated completely before anything is written, and loaded in one transaction
(COPY into a temp table, then one ``INSERT … ON CONFLICT (id) DO UPDATE`` per file): a malformed row is
reported with the line number where its record starts and the reason, and nothing of either file is
written. Workspace rows pass the same checks as ``workspace set``
(:func:`~appt_pipeline.store.workspaces.validate_workspace_values`). Re-import updates and
never duplicates. Ids are trimmed; an empty cell is NULL. Lead rollup columns of a lead that already
has appointment rows are derived data (SPEC §3) and are not overwritten by a re-import.
"""

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import sqlalchemy as sa

from appt_pipeline.domain.provider_hosts import check_provider_url
from appt_pipeline.domain.timeparse import parse_timestamp
from appt_pipeline.settings import provider_host_allowlist
from appt_pipeline.store.workspaces import validate_workspace_values

MAX_REPORTED_ERRORS = 50


@dataclass(frozen=True)
class RowError:
    """One rejected CSV row: file name, 1-based line number (header = line 1), reason."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class LegacyImportError(ValueError):
    """The file was rejected; ``errors`` lists the first rows at fault, ``total`` counts them all."""

    def __init__(self, file: str, errors: list[RowError], total: int) -> None:
        super().__init__(f"{file}: {total} malformed row(s); first: {errors[0]}" if errors else file)
        self.file = file
        self.errors = errors
        self.total = total


@dataclass
class ImportReport:
    """Rows loaded per file (inserted + updated)."""

    workspaces: int = 0
    leads: int = 0
    files: list[str] = field(default_factory=list)


def _text(v: str) -> str | None:
    v = v.strip()
    return v or None


def _timestamp(v: str) -> object:
    return parse_timestamp(v)


def _provider(v: str) -> str | None:
    v = v.strip().upper()
    if not v:
        return None
    if v not in ("GHL", "CALENDLY"):
        raise ValueError(f"unknown provider {v!r} (expected GHL or CALENDLY)")
    return v


def _positive_int(v: str) -> int | None:
    v = v.strip()
    if not v:
        return None
    n = int(v)
    if n <= 0:
        raise ValueError(f"must be a positive integer, got {v!r}")
    return n


def _bool(v: str) -> bool | None:
    v = v.strip().lower()
    if not v:
        return None
    if v in ("true", "t", "1", "yes"):
        return True
    if v in ("false", "f", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


Parser = Callable[[str], object]
#: A row check: ``(sql, reason)``, or a function of the file's header giving one (or ``None``: not applicable).
Check = tuple[str, str] | Callable[[list[str]], tuple[str, str] | None]


def _provider_url(v: str) -> str | None:
    """A provider base URL, refused unless a token may go there (README "Provider hosts")."""
    url = _text(v)
    if url is not None:
        check_provider_url(url, provider_host_allowlist(), what="provider base URL")
    return url

WORKSPACE_COLUMNS: dict[str, Parser] = {
    "id": _text, "name": _text, "meeting_booking_provider": _provider, "ghl_location_id": _text,
    "ghl_default_calendar_id": _text, "ghl_direct_book_calendar_id": _text, "calendly_organization_uri": _text,
    "calendly_user_uri": _text, "calendly_event_type_uri": _text, "calendly_direct_book_event_type_uri": _text,
    "meeting_duration_minutes": _positive_int, "timezone": _text, "auto_book_meetings": _bool,
    "ghl_api_base_url": _provider_url, "calendly_api_base_url": _provider_url,
}

LEAD_COLUMNS: dict[str, Parser] = {
    "id": _text, "workspace_id": _text, "status": _text, "email": _text, "ghl_contact_id": _text,
    "timezone": _text, "last_inbound_at": _timestamp, "auto_book_meetings_enabled": _bool,
    "ghl_appointment_id": _text, "calendly_invitee_uri": _text, "calendly_scheduled_event_uri": _text,
    "appointment_booked_at": _timestamp, "appointment_start_at": _timestamp, "appointment_end_at": _timestamp,
    "appointment_status": _text, "appointment_canceled_at": _timestamp, "appointment_provider": _provider,
    # booked_slot is legacy free text; the migration parses it (unparseable → NULL start, SPEC §5)
    "booked_slot": _text,
    "appointment_last_checked_at": _timestamp,
}

ROLLUP_LEGACY_COLUMNS = (
    "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri", "appointment_booked_at",
    "appointment_start_at", "appointment_end_at", "appointment_status", "appointment_canceled_at",
    "appointment_provider", "appointment_source", "booked_slot", "appointment_last_checked_at",
)
LEAD_COLUMNS["appointment_source"] = _text

#: Columns a NULL in the file must not override (they have NOT NULL defaults).
DEFAULTED = {"status": "'new'", "meeting_booking_provider": "'GHL'", "meeting_duration_minutes": "30",
             "auto_book_meetings": "false", "auto_book_meetings_enabled": "true",
             "ghl_api_base_url": "'https://services.leadconnectorhq.com'",
             "calendly_api_base_url": "'https://api.calendly.com'"}


def _bad_text(cells: list[str]) -> str | None:
    """Why a row's raw text cannot be stored in PostgreSQL text columns, or None."""
    text = "".join(cells)
    if "\x00" in text:
        return "contains a NUL byte"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from errors="surrogateescape"
        return "not valid UTF-8"
    return None


class _Lines:
    """The file's lines for ``csv.reader``, noting when the reader ran into the end of the file: a record
    during whose read that happens ended inside a quoted field (the lenient reader returns it as is)."""

    def __init__(self, fh: Iterator[str]) -> None:
        self._it = fh
        self.eof = False

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        try:
            return next(self._it)
        except StopIteration:
            self.eof = True
            raise


RowCheck = Callable[[list[str], list[object]], None]


def _check_workspace_row(header: list[str], values: list[object]) -> None:
    """``workspace set``'s rules for one parsed workspaces.csv row; raises ``ValueError``."""
    row = dict(zip(header, values, strict=True))
    workspace_id = row.pop("id")
    validate_workspace_values(str(workspace_id), {k: v for k, v in row.items() if v is not None})


def _read(path: Path, columns: dict[str, Parser], required: tuple[str, ...],
          row_check: RowCheck | None = None) -> tuple[list[str], Iterator[
        tuple[int, list[object] | None, str | None]]]:
    """Header and a row iterator yielding (line where the record starts, values or None, error or None)."""
    # surrogateescape: invalid UTF-8 becomes lone surrogates, reported per row below instead of aborting
    # the whole read with a UnicodeDecodeError at an imprecise position
    fh = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    lines = _Lines(fh)
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        fh.close()
        raise LegacyImportError(path.name, [RowError(path.name, 1, "empty file (no header row)")], 1) from None
    except csv.Error as exc:
        fh.close()
        raise LegacyImportError(path.name, [RowError(path.name, 1, f"malformed CSV: {exc}")], 1) from None
    unknown = [h for h in header if h not in columns]
    missing = [c for c in required if c not in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {unknown}")
    if missing:
        problems.append(f"missing required column(s) {missing}")
    if dupes:
        problems.append(f"repeated column(s) {dupes}")
    if problems:
        fh.close()
        raise LegacyImportError(path.name, [RowError(path.name, 1, "; ".join(problems))], 1)
    parsers = [columns[h] for h in header]

    def rows() -> Iterator[tuple[int, list[object] | None, str | None]]:
        with fh:
            while True:
                # reader.line_num is the line where a record ends; a quoted field may span lines
                line = reader.line_num + 1
                try:
                    raw = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # e.g. a field over csv.field_size_limit(); the rest is unreadable
                    yield line, None, f"malformed CSV: {exc}"
                    return
                if lines.eof:
                    yield line, None, f"unterminated quoted field starting at line {line}"
                    return
                if not raw or (len(raw) == 1 and not raw[0].strip()):
                    continue
                if len(raw) != len(header):
                    yield line, None, f"expected {len(header)} fields, found {len(raw)}"
                    continue
                problem = _bad_text(raw)
                if problem:
                    yield line, None, problem
                    continue
                values: list[object] = []
                error = None
                for name, parse, cell in zip(header, parsers, raw, strict=True):
                    try:
                        values.append(parse(cell))
                    except ValueError as exc:
                        error = f"column {name}: {exc}"
                        break
                if error is None and values[0] is None:
                    error = "empty id"
                if error is None and "workspace_id" in header and values[header.index("workspace_id")] is None:
                    error = "empty workspace_id"
                if error is None and row_check is not None:
                    try:
                        row_check(header, values)
                    except ValueError as exc:
                        error = str(exc)
                yield line, (values if error is None else None), error

    return header, rows()


def _load(
    conn: sa.Connection, path: Path, table: str, columns: dict[str, Parser], required: tuple[str, ...],
    conflict_sets: Callable[[list[str]], str], checks: list[Check], row_check: RowCheck | None = None,
) -> int:
    header, rows = _read(path, columns, required, row_check)
    fixed_checks = [c(header) if callable(c) else c for c in checks]
    stage = f"appt_import_{table}"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {stage} (line integer NOT NULL, "
        + ", ".join(f"{h} {_pg_type(conn, table, h)}" for h in header)
        + ") ON COMMIT DROP"
    )
    errors: list[RowError] = []
    total_errors = 0
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    with raw.cursor().copy(f"COPY {stage} (line, {', '.join(header)}) FROM STDIN") as copy:
        for line, values, error in rows:
            if error is not None:
                total_errors += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(RowError(path.name, line, error))
                continue
            assert values is not None
            copy.write_row([line, *values])
    for sql, reason in (c for c in fixed_checks if c is not None):
        if "{location}" in sql:  # only when the file sets ghl_location_id
            if "ghl_location_id" not in header:
                continue
            sql = sql.replace("{location}", "ghl_location_id")
        for line, detail in conn.exec_driver_sql(sql.format(stage=stage)):
            total_errors += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(RowError(path.name, line, reason.format(detail=detail)))
    if total_errors:
        errors.sort(key=lambda e: e.line)
        raise LegacyImportError(path.name, errors, total_errors)
    if table == "workspaces" and "ghl_location_id" in header:
        # free the location ids that move within the file first, so that a row-by-row upsert cannot trip
        # over the UNIQUE constraint midway (the checks above ruled out real clashes)
        conn.exec_driver_sql(
            f"UPDATE workspaces w SET ghl_location_id = NULL FROM {stage} s "
            "WHERE s.id = w.id AND w.ghl_location_id IS DISTINCT FROM s.ghl_location_id"
        )
    cols = ", ".join(header)
    select = ", ".join(f"coalesce({h}, {DEFAULTED[h]})" if h in DEFAULTED else h for h in header)
    result = conn.exec_driver_sql(
        f"INSERT INTO {table} ({cols}) SELECT {select} FROM {stage} ORDER BY id "
        f"ON CONFLICT (id) DO UPDATE SET {conflict_sets(header)}, updated_at = now()"
    )
    return result.rowcount


_TYPE_CACHE: dict[tuple[str, str], str] = {}


def _pg_type(conn: sa.Connection, table: str, column: str) -> str:
    if (table, column) not in _TYPE_CACHE:
        _TYPE_CACHE[(table, column)] = conn.exec_driver_sql(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attname = %s",
            (table, column),
        ).scalar_one()
    return _TYPE_CACHE[(table, column)]


def _workspace_sets(header: list[str]) -> str:
    return ", ".join(
        f"{h} = coalesce(EXCLUDED.{h}, workspaces.{h})" if h in DEFAULTED else f"{h} = EXCLUDED.{h}"
        for h in header if h != "id"
    )


def _lead_sets(header: list[str]) -> str:
    has_rows = "EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = leads.id)"
    sets = []
    for h in header:
        if h == "id":
            continue
        value = f"coalesce(EXCLUDED.{h}, leads.{h})" if h in DEFAULTED else f"EXCLUDED.{h}"
        if h in ROLLUP_LEGACY_COLUMNS:
            value = f"CASE WHEN {has_rows} THEN leads.{h} ELSE {value} END"
        sets.append(f"{h} = {value}")
    return ", ".join(sets)


_DUPLICATE_IDS = (
    "SELECT min(line), string_agg(line::text, ', ' ORDER BY line) FROM {stage} GROUP BY id HAVING count(*) > 1",
    "id repeated on lines {detail}",
)
# ghl_location_id is UNIQUE: report clashes by line instead of failing the INSERT with a constraint violation
_DUPLICATE_LOCATIONS = (
    "SELECT min(line), {location} || ' on lines ' || string_agg(line::text, ', ' ORDER BY line) FROM {stage} "
    "WHERE {location} IS NOT NULL GROUP BY {location} HAVING count(*) > 1",
    "ghl_location_id repeated: {detail}",
)
_LOCATION_TAKEN = (
    "SELECT s.line, w.id FROM {stage} s JOIN workspaces w ON w.ghl_location_id = s.{location} AND w.id <> s.id "
    "WHERE NOT EXISTS (SELECT 1 FROM {stage} o WHERE o.id = w.id) ORDER BY s.line",
    "ghl_location_id already belongs to workspace {detail!r}",
)
_UNKNOWN_WORKSPACE = (
    "SELECT s.line, s.workspace_id FROM {stage} s LEFT JOIN workspaces w ON w.id = s.workspace_id "
    "WHERE w.id IS NULL ORDER BY s.line",
    "workspace {detail!r} does not exist",
)
_MOVES_WITH_HISTORY = (
    "SELECT s.line, l.workspace_id FROM {stage} s JOIN leads l ON l.id = s.id "
    "WHERE l.workspace_id <> s.workspace_id AND EXISTS (SELECT 1 FROM appointments a WHERE a.lead_id = l.id)",
    "lead already has appointment history in workspace {detail!r} and cannot move",
)


def _base_url_changes(header: list[str]) -> tuple[str, str] | None:
    """Re-import rule (README "Provider hosts"): a row must not change the stored provider base URL of a
    workspace that holds secrets, unless the import is run with ``replace_base_urls``."""
    changed = [
        f"(s.{c} IS NOT NULL AND s.{c} IS DISTINCT FROM w.{c})"
        for c in ("ghl_api_base_url", "calendly_api_base_url") if c in header
    ]
    if not changed:
        return None
    return (
        "SELECT s.line, s.id FROM {stage} s JOIN workspaces w ON w.id = s.id "
        f"WHERE ({' OR '.join(changed)}) "
        "AND EXISTS (SELECT 1 FROM workspace_secrets x WHERE x.workspace_id = w.id) ORDER BY s.line",
        "would change the provider base URL of workspace {detail!r}, which holds secrets "
        "(pass --replace-base-urls to allow it)",
    )


def import_legacy(engine: sa.Engine, directory: str | Path, *, replace_base_urls: bool = False) -> ImportReport:
    """Load ``workspaces.csv`` (if present) then ``leads.csv`` (if present) from ``directory``.

    A provider base URL must pass the provider-host rule (README "Provider hosts"); a row that changes the
    base URL of a workspace holding secrets is refused unless ``replace_base_urls``.

    Both files are one transaction. Raises :class:`LegacyImportError` (nothing of either file written,
    ``file`` names the rejected one) or ``FileNotFoundError`` when neither file exists.
    """
    folder = Path(directory)
    report = ImportReport()
    ws_path, leads_path = folder / "workspaces.csv", folder / "leads.csv"
    if not ws_path.is_file() and not leads_path.is_file():
        raise FileNotFoundError(f"no workspaces.csv or leads.csv in {folder}")
    with engine.begin() as conn:  # one transaction: a rejected leads.csv also undoes workspaces.csv
        if ws_path.is_file():
            report.workspaces = _load(conn, ws_path, "workspaces", WORKSPACE_COLUMNS, ("id",), _workspace_sets,
                                      [_DUPLICATE_IDS, _DUPLICATE_LOCATIONS, _LOCATION_TAKEN,
                                       *([] if replace_base_urls else [_base_url_changes])],
                                      _check_workspace_row)
            report.files.append(ws_path.name)
        if leads_path.is_file():
            report.leads = _load(conn, leads_path, "leads", LEAD_COLUMNS, ("id", "workspace_id"), _lead_sets,
                                 [_DUPLICATE_IDS, _UNKNOWN_WORKSPACE, _MOVES_WITH_HISTORY])
            report.files.append(leads_path.name)
    return report
