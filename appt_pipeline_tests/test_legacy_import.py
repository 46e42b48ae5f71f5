"""Legacy CRM import (``workspaces.csv`` + ``leads.csv``, SPEC §12 ``import-legacy``) on a real PostgreSQL.

Covers: the shipped exports load; re-import updates and never duplicates; ids are trimmed; every kind of
malformed file is rejected with its line number and reason and NOTHING of that file is written (also
when the bad row is the last of many); a re-import leaves the rollup columns of a lead that already
has appointment rows alone (SPEC §3: they are derived data by then).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sample.generator import LEADS_HEADER, WORKSPACES_HEADER
from appt_pipeline.store.legacy_import import LegacyImportError, import_legacy
from appt_pipeline.store.rollups import ROLLUP_COLUMNS, drift_report
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import LEGACY_FIXTURES, calendly, ghl, lead, rows
from appt_pipeline_tests.helpers.legacy import GOOD_LEADS, lead_row, write_csv, write_legacy, ws_row

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# ------------------------------------------------------------------------------------------- helpers
# (imported by test_migration.py and test_cli.py)










def table(engine: sa.Engine, name: str) -> list[tuple[Any, ...]]:
    """Every column of every row of ``name`` but ``updated_at``, ordered by id."""
    with engine.connect() as conn:
        names = conn.execute(sa.text(f"SELECT * FROM {name} LIMIT 0")).keys()
        cols = [c for c in names if c != "updated_at"]
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {name} ORDER BY id"))]


def count(engine: sa.Engine, sql: str, **params: Any) -> int:
    return int(rows(engine, sql, **params)[0][0])


# ------------------------------------------------------------------------------------ shipped exports


@pytest.mark.parametrize("folder", [SAMPLE_DIR, LEGACY_FIXTURES], ids=["shipped-sample", "legacy-fixture"])
def test_shipped_export_imports(db: sa.Engine, folder: Path) -> None:
    assert (folder / "leads.csv").is_file(), f"{folder} missing"
    report = import_legacy(db, folder)
    assert (report.workspaces, report.leads) == (3, 3000)
    assert report.files == ["workspaces.csv", "leads.csv"]
    assert count(db, "SELECT count(*) FROM workspaces") == 3
    assert count(db, "SELECT count(*) FROM leads") == 3000
    assert count(db, "SELECT count(DISTINCT workspace_id) FROM leads") == 3
    # one row read back cell by cell against the CSV: times parsed as UTC, empty = NULL, strings verbatim
    with (folder / "leads.csv").open(newline="", encoding="utf-8") as fh:
        sample = next(r for r in csv.DictReader(fh) if r["appointment_start_at"] and r["appointment_status"])
    got = lead(db, sample["id"])
    assert got.workspace_id == sample["workspace_id"]
    assert got.appointment_status == sample["appointment_status"]
    assert got.appointment_start_at == datetime.fromisoformat(sample["appointment_start_at"].replace("Z", "+00:00"))
    assert got.appointment_start_at.utcoffset().total_seconds() == 0
    assert got.booked_slot == sample["booked_slot"]
    for column in ("ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri", "email"):
        assert getattr(got, column) == (sample[column] or None)
    # nothing but leads and workspaces is written by an import
    assert count(db, "SELECT count(*) FROM appointments") == 0
    assert count(db, "SELECT count(*) FROM migration_progress") == 0


def test_reimport_updates_and_never_duplicates(db: sa.Engine, tmp_path: Path) -> None:
    import_legacy(db, SAMPLE_DIR)
    before_leads, before_ws = table(db, "leads"), table(db, "workspaces")
    again = import_legacy(db, SAMPLE_DIR)
    assert (again.workspaces, again.leads) == (3, 3000)
    assert table(db, "leads") == before_leads
    assert table(db, "workspaces") == before_ws

    # change one cell per file (and empty one cell: empty = NULL) and import the edited copy
    folder = tmp_path / "edited"
    shutil.copytree(SAMPLE_DIR, folder)
    with (folder / "leads.csv").open(newline="", encoding="utf-8") as fh:
        lead_rows = list(csv.DictReader(fh))
    edited, emptied = lead_rows[10], next(r for r in lead_rows[11:] if r["timezone"])
    edited["email"] = "changed@example.com"
    emptied["timezone"] = ""
    write_csv(folder / "leads.csv", LEADS_HEADER, lead_rows)
    with (folder / "workspaces.csv").open(newline="", encoding="utf-8") as fh:
        ws_rows = list(csv.DictReader(fh))
    ws_rows[0]["name"] = "Renamed"
    write_csv(folder / "workspaces.csv", WORKSPACES_HEADER, ws_rows)
    import_legacy(db, folder)

    assert count(db, "SELECT count(*) FROM leads") == 3000
    assert count(db, "SELECT count(*) FROM workspaces") == 3
    assert lead(db, edited["id"]).email == "changed@example.com"
    assert lead(db, emptied["id"]).timezone is None
    assert rows(db, "SELECT name FROM workspaces WHERE id = :id", id=ws_rows[0]["id"])[0][0] == "Renamed"
    changed = {edited["id"], emptied["id"]}
    after = table(db, "leads")
    assert [r for r in after if r[0] not in changed] == [r for r in before_leads if r[0] not in changed]


def test_padded_ids_are_trimmed(db: sa.Engine, tmp_path: Path) -> None:
    folder = write_legacy(
        tmp_path,
        workspaces=[ws_row("  ws_a "), ws_row(" ws_b", provider="CALENDLY")],
        leads=[lead_row("  lead_1 ", " ws_a  ", ghl_appointment_id=" appt_1 ", appointment_status=" confirmed "),
               lead_row("lead_2  ", "ws_b ")],
    )
    import_legacy(db, folder)
    assert [r[0] for r in rows(db, "SELECT id FROM workspaces ORDER BY id")] == ["ws_a", "ws_b"]
    got = rows(db, "SELECT id, workspace_id, ghl_appointment_id, appointment_status FROM leads ORDER BY id")
    assert [tuple(r) for r in got] == [("lead_1", "ws_a", "appt_1", "confirmed"), ("lead_2", "ws_b", None, None)]
    # the padded spelling of an existing id updates that lead (no second row)
    write_legacy(tmp_path, leads=[lead_row(" lead_1", "ws_a", email="new@example.com")])
    import_legacy(db, tmp_path)
    assert count(db, "SELECT count(*) FROM leads") == 2
    assert lead(db, "lead_1").email == "new@example.com"


def test_empty_cells_keep_column_defaults(db: sa.Engine, tmp_path: Path) -> None:
    folder = write_legacy(tmp_path, workspaces=[{"id": "ws_a"}], leads=[{"id": "lead_1", "workspace_id": "ws_a"}])
    import_legacy(db, folder)
    ws = rows(db, "SELECT meeting_booking_provider, meeting_duration_minutes FROM workspaces")[0]
    assert tuple(ws) == ("GHL", 30)
    got = lead(db, "lead_1")
    assert (got.status, got.auto_book_meetings_enabled, got.email) == ("new", True, None)


# ----------------------------------------------------------------------------------- malformed input



@pytest.fixture()
def base(db: sa.Engine, tmp_path: Path) -> sa.Engine:
    """Two workspaces and 100 leads already imported; the bad file below would update and add leads."""
    write_legacy(tmp_path / "base", workspaces=[ws_row("ws_a"), ws_row("ws_b", provider="CALENDLY")],
                 leads=[lead_row(f"lead_{i:04d}") for i in range(100)])
    import_legacy(db, tmp_path / "base")
    return db


def _good_rows() -> list[dict[str, Any]]:
    """Rows that alone would import fine: updates of the 100 existing leads plus 200 new ones."""
    return [lead_row(f"lead_{i:04d}", "ws_b" if i % 2 else "ws_a", email=f"updated{i}@example.com",
                     ghl_appointment_id=f"g{i}", appointment_start_at="2026-07-04T17:00:00.000Z",
                     appointment_status="confirmed", appointment_provider="GHL")
            for i in range(GOOD_LEADS)]


def _assert_rejected(engine: sa.Engine, folder: Path, line: int, *reason: str, file: str = "leads.csv") -> None:
    before = {name: table(engine, name) for name in ("workspaces", "leads")}
    with pytest.raises(LegacyImportError) as info:
        import_legacy(engine, folder)
    err = info.value
    assert err.file == file
    assert err.total >= 1
    first = err.errors[0]
    assert (first.file, first.line) == (file, line), str(err)
    for fragment in reason:
        assert fragment in first.reason, first.reason
    assert f"{file}:{line}: " in str(first)
    assert {name: table(engine, name) for name in ("workspaces", "leads")} == before
    assert count(engine, "SELECT count(*) FROM appointments") == 0


def _bad_leads_file(folder: Path, bad: Mapping[str, Any] | list[Any], *, at_line: int | None = None) -> Path:
    records: list[Mapping[str, Any] | list[Any]] = list(_good_rows())
    if at_line is None:
        records.append(bad)
    else:
        records.insert(at_line - 2, bad)  # header is line 1
    write_csv(folder / "leads.csv", LEADS_HEADER, records)
    return folder


LAST_LINE = GOOD_LEADS + 2


def test_reject_too_few_fields(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", ["lead_9999", "ws_a", "qualified"])
    _assert_rejected(base, folder, LAST_LINE, f"expected {len(LEADS_HEADER)} fields, found 3")


def test_reject_too_many_fields(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", ["lead_9999", "ws_a", *[""] * (len(LEADS_HEADER) - 1)], at_line=50)
    _assert_rejected(base, folder, 50, f"expected {len(LEADS_HEADER)} fields, found {len(LEADS_HEADER) + 1}")


def test_reject_unparseable_appointment_start_at(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", appointment_start_at="tomorrow 3pm"))
    _assert_rejected(base, folder, LAST_LINE, "appointment_start_at", "tomorrow 3pm")


def test_reject_impossible_date(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", appointment_canceled_at="2026-02-30T10:00:00Z"))
    _assert_rejected(base, folder, LAST_LINE, "appointment_canceled_at", "2026-02-30")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_reject_out_of_range_time(base: sa.Engine, tmp_path: Path, when: str) -> None:
    """A time that overflows in UTC is a file:line reason, never a traceback (issue 10 item 2)."""
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", appointment_booked_at=when))
    _assert_rejected(base, folder, LAST_LINE, "appointment_booked_at", "out of range", when)


def test_reject_unknown_provider(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", appointment_provider="ZOOM"))
    _assert_rejected(base, folder, LAST_LINE, "appointment_provider", "ZOOM")


def test_reject_empty_id(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("   "))
    _assert_rejected(base, folder, LAST_LINE, "empty id")


def test_reject_empty_workspace_id(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", ""))
    _assert_rejected(base, folder, LAST_LINE, "empty workspace_id")


def test_reject_unknown_column(base: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "leads.csv", [*LEADS_HEADER, "favourite_colour"],
              [[*(lead_row(f"lead_{i:04d}").get(h, "") for h in LEADS_HEADER), "blue"] for i in range(GOOD_LEADS)])
    _assert_rejected(base, folder, 1, "unknown column", "favourite_colour")


def test_reject_missing_required_column(base: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "leads.csv", ["id", "email"], [[f"lead_{i:04d}", "x@example.com"] for i in range(10)])
    _assert_rejected(base, folder, 1, "missing required column", "workspace_id")


def test_reject_duplicate_id(base: sa.Engine, tmp_path: Path) -> None:
    # the repeat is spelled with padding: ids are compared after trimming
    folder = _bad_leads_file(tmp_path / "in", lead_row(" lead_0007 ", email="other@example.com"))
    _assert_rejected(base, folder, 9, "repeated", "9", str(LAST_LINE))


def test_reject_unknown_workspace(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", "ws_nope"))
    _assert_rejected(base, folder, LAST_LINE, "ws_nope", "does not exist")


def test_reject_nul_byte(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", email="a\x00b@example.com"))
    _assert_rejected(base, folder, LAST_LINE, "NUL")


def test_reject_invalid_utf8(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", email="PLACEHOLDER"))
    path = folder / "leads.csv"
    path.write_bytes(path.read_bytes().replace(b"PLACEHOLDER", b"caf\xe9@example.com"))
    _assert_rejected(base, folder, LAST_LINE, "UTF-8")


def test_reject_field_over_the_csv_size_limit(base: sa.Engine, tmp_path: Path) -> None:
    folder = _bad_leads_file(tmp_path / "in", lead_row("lead_9999", email="x" * (csv.field_size_limit() + 1)))
    _assert_rejected(base, folder, LAST_LINE, "malformed CSV", "field larger than field limit")


def test_reject_lead_with_history_moving_workspace(base: sa.Engine, tmp_path: Path) -> None:
    write_observations(base, [ghl("lead_0003", "appt_3", ws="ws_a")], now=NOW)
    records = _good_rows()
    records[3]["workspace_id"] = "ws_b"  # lead_0003 has appointment rows in ws_a
    write_csv(tmp_path / "in" / "leads.csv", LEADS_HEADER, records)
    before_appts = table(base, "appointments")
    _assert_rejected_with_rows(base, tmp_path / "in", 5, "ws_a", "cannot move")
    assert table(base, "appointments") == before_appts


def _assert_rejected_with_rows(engine: sa.Engine, folder: Path, line: int, *reason: str) -> None:
    before = table(engine, "leads")
    with pytest.raises(LegacyImportError) as info:
        import_legacy(engine, folder)
    first = info.value.errors[0]
    assert first.line == line and all(f in first.reason for f in reason), str(info.value)
    assert table(engine, "leads") == before


def test_every_bad_row_is_reported_in_line_order(base: sa.Engine, tmp_path: Path) -> None:
    records: list[Mapping[str, Any] | list[Any]] = list(_good_rows())
    records[10] = lead_row("lead_0010", appointment_provider="ZOOM")  # line 12
    records[20] = ["lead_0020"]  # line 22
    records.append(lead_row("lead_9999", "ws_nope"))  # last line
    write_csv(tmp_path / "in" / "leads.csv", LEADS_HEADER, records)
    with pytest.raises(LegacyImportError) as info:
        import_legacy(base, tmp_path / "in")
    assert info.value.total == 3
    assert [e.line for e in info.value.errors] == [12, 22, LAST_LINE]


def test_reject_bad_workspaces_file_writes_neither_file(base: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "workspaces.csv", WORKSPACES_HEADER,
              [ws_row("ws_a", name="Renamed"), ws_row("ws_c"), ws_row("ws_d", meeting_duration_minutes="0")])
    write_csv(folder / "leads.csv", LEADS_HEADER, _good_rows())
    _assert_rejected(base, folder, 4, "meeting_duration_minutes", file="workspaces.csv")


def test_reject_unknown_workspace_provider(base: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "workspaces.csv", WORKSPACES_HEADER, [ws_row("ws_a", name="Renamed"), ws_row("ws_c", "HUBSPOT")])
    _assert_rejected(base, folder, 3, "meeting_booking_provider", "HUBSPOT", file="workspaces.csv")


def test_reject_repeated_ghl_location_id(base: sa.Engine, tmp_path: Path) -> None:
    # ghl_location_id is UNIQUE (SPEC §1): reported by line, not as a constraint violation from the INSERT
    folder = tmp_path / "in"
    write_csv(folder / "workspaces.csv", WORKSPACES_HEADER,
              [ws_row("ws_a", name="Renamed"), ws_row("ws_c", ghl_location_id="loc1"), ws_row("ws_d"),
               ws_row("ws_e", ghl_location_id=" loc1")])
    _assert_rejected(base, folder, 3, "ghl_location_id", "loc1", "3, 5", file="workspaces.csv")


def test_reject_ghl_location_id_of_another_workspace(base: sa.Engine, tmp_path: Path) -> None:
    write_legacy(tmp_path / "v1", workspaces=[ws_row("ws_a", ghl_location_id="loc_a")])
    import_legacy(base, tmp_path / "v1")
    folder = tmp_path / "in"
    write_csv(folder / "workspaces.csv", WORKSPACES_HEADER, [ws_row("ws_b", name="B2"), ws_row("ws_c"),
                                                            ws_row("ws_d", ghl_location_id="loc_a")])
    _assert_rejected(base, folder, 4, "ghl_location_id", "ws_a", file="workspaces.csv")


def test_ghl_location_ids_may_move_between_workspaces_of_one_file(db: sa.Engine, tmp_path: Path) -> None:
    write_legacy(tmp_path / "v1", workspaces=[ws_row("ws_a", ghl_location_id="loc_a"), ws_row("ws_b"),
                                              ws_row("ws_c", ghl_location_id="loc_c")])
    import_legacy(db, tmp_path / "v1")
    # ws_b takes ws_a's id, ws_a takes ws_c's, ws_c gets a new one: every row-by-row order meets a clash
    write_legacy(tmp_path / "v2", workspaces=[ws_row("ws_a", ghl_location_id="loc_c"),
                                              ws_row("ws_b", ghl_location_id="loc_a"),
                                              ws_row("ws_c", ghl_location_id="loc_new")])
    import_legacy(db, tmp_path / "v2")
    got = rows(db, "SELECT id, ghl_location_id FROM workspaces ORDER BY id")
    assert [tuple(r) for r in got] == [("ws_a", "loc_c"), ("ws_b", "loc_a"), ("ws_c", "loc_new")]


def test_reject_empty_file(base: sa.Engine, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "leads.csv").write_text("")
    _assert_rejected(base, tmp_path / "in", 1, "empty file")


def test_no_export_files_is_an_error(db: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_legacy(db, tmp_path)


# ------------------------------------------------------------------- re-import vs appointment history


def test_reimport_keeps_rollups_of_leads_with_history(db: sa.Engine, tmp_path: Path) -> None:
    legacy = {"ghl_appointment_id": "legacy_g", "appointment_status": "confirmed",
              "appointment_start_at": "2026-05-01T10:00:00Z", "booked_slot": "2026-05-01T10:00:00.000Z",
              "appointment_provider": "GHL", "appointment_source": "webhook"}
    write_legacy(tmp_path / "v1", workspaces=[ws_row("ws_a"), ws_row("ws_b", provider="CALENDLY")],
                 leads=[lead_row("with_rows", **legacy), lead_row("no_rows", **legacy)])
    import_legacy(db, tmp_path / "v1")
    # the lead gets a real history: a canceled GHL appointment and a Calendly booking
    write_observations(db, [
        ghl("with_rows", "g_hist", status=Status.CANCELED, ws="ws_a", start_at=datetime(2026, 4, 1, 9, tzinfo=UTC)),
        calendly("with_rows", "inv_hist", ws="ws_a", start_at=datetime(2026, 4, 20, 9, tzinfo=UTC)),
    ], now=NOW)
    cols = ", ".join(ROLLUP_COLUMNS)
    rollup_before = rows(db, f"SELECT {cols}, appointment_last_checked_at FROM leads WHERE id = 'with_rows'")[0]
    assert rollup_before.calendly_invitee_uri.endswith("/invitees/inv_hist")
    assert rollup_before.appointment_source == Source.WEBHOOK.rollup

    changed = {"ghl_appointment_id": "other_g", "appointment_status": "Cancelled",
               "appointment_start_at": "2026-06-01T10:00:00Z", "booked_slot": "2026-06-01T10:00:00.000Z",
               "appointment_canceled_at": "2026-05-20T10:00:00Z", "appointment_provider": "GHL",
               "appointment_source": "backfill", "appointment_last_checked_at": "2026-02-01T00:00:00Z",
               "calendly_invitee_uri": "", "calendly_scheduled_event_uri": ""}
    write_legacy(tmp_path / "v2", leads=[lead_row("with_rows", email="new1@example.com", status="contacted",
                                                  **changed),
                                         lead_row("no_rows", email="new2@example.com", **changed)])
    import_legacy(db, tmp_path / "v2")

    assert rows(db, f"SELECT {cols}, appointment_last_checked_at FROM leads WHERE id = 'with_rows'")[0] \
        == rollup_before
    got = lead(db, "with_rows")
    assert (got.email, got.status) == ("new1@example.com", "contacted")  # non-rollup columns still update
    with db.connect() as conn:
        assert drift_report(conn, "ws_a", NOW).drifted == 0
    # a lead without rows is still legacy data: its columns take the file's values
    other = lead(db, "no_rows")
    assert (other.ghl_appointment_id, other.appointment_status, other.appointment_source) \
        == ("other_g", "Cancelled", "backfill")
    assert other.appointment_provider == Provider.GHL.value
    assert other.appointment_canceled_at == datetime(2026, 5, 20, 10, tzinfo=UTC)


# ------------------------------------------------------------------ one transaction, line numbers (issue 10)


def test_rejected_leads_file_leaves_no_workspace_rows(db: sa.Engine, tmp_path: Path) -> None:
    write_legacy(tmp_path, workspaces=[ws_row("ws_a")], leads=[lead_row("l1", ws_id="ws_missing")])
    with pytest.raises(LegacyImportError) as info:
        import_legacy(db, tmp_path)
    assert info.value.file == "leads.csv"
    assert count(db, "SELECT count(*) FROM workspaces") == 0


@pytest.mark.parametrize("bad_id, reason", [("x" * 65, "at most 64"), ("ws\x01", "contains '\\x01'"),
                                            ("a/b", "contains '/'")])
def test_workspace_ids_the_intake_cannot_serve_are_refused(db: sa.Engine, tmp_path: Path, bad_id: str,
                                                           reason: str) -> None:
    write_legacy(tmp_path, workspaces=[ws_row("ws_a"), ws_row(bad_id)])
    with pytest.raises(LegacyImportError) as info:
        import_legacy(db, tmp_path)
    assert info.value.errors[0].line == 3 and reason in info.value.errors[0].reason
    assert count(db, "SELECT count(*) FROM workspaces") == 0


def test_multi_line_record_is_reported_at_its_first_line(db: sa.Engine, tmp_path: Path) -> None:
    write_legacy(tmp_path, workspaces=[ws_row("ws_a", name="two\nlines"), ws_row("ws_b", timezone="Nowhere/X")])
    with pytest.raises(LegacyImportError) as info:
        import_legacy(db, tmp_path)
    assert [e.line for e in info.value.errors] == [4]  # header 1, ws_a on lines 2-3, ws_b on line 4


def test_unterminated_quote_says_so(db: sa.Engine, tmp_path: Path) -> None:
    write_legacy(tmp_path, workspaces=[ws_row("ws_a"), ws_row("ws_b")])
    path = tmp_path / "workspaces.csv"
    path.write_text(path.read_text().replace("Workspace ws_b", '"Workspace ws_b'))
    with pytest.raises(LegacyImportError) as info:
        import_legacy(db, tmp_path)
    assert [str(e) for e in info.value.errors] == ["workspaces.csv:3: unterminated quoted field starting at line 3"]
