"""Tests of the legacy-export generator and the shipped demo sample (no database)."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sample.generator import (
    BAD_BOOKED_SLOTS,
    UNKNOWN_STATUSES,
    GeneratedLegacy,
    generate_legacy,
    main,
)
from appt_pipeline_tests.helpers import LEGACY_FIXTURES

FIXTURE_DIR = LEGACY_FIXTURES

# Literal copies of the fixture's header rows (checked against the fixture files when present).
WORKSPACES_HEADER = [
    "id", "name", "meeting_booking_provider", "ghl_location_id", "ghl_default_calendar_id",
    "calendly_organization_uri", "calendly_event_type_uri", "meeting_duration_minutes", "timezone",
]  # fmt: skip
LEADS_HEADER = [
    "id", "workspace_id", "status", "email", "ghl_contact_id", "timezone", "last_inbound_at",
    "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri", "appointment_booked_at",
    "appointment_start_at", "appointment_end_at", "appointment_status", "appointment_canceled_at",
    "appointment_provider", "appointment_source", "booked_slot", "appointment_last_checked_at",
]  # fmt: skip

# Shares of leads measured on fixtures/legacy/leads.csv (3000 leads, 3 workspaces).
FIXTURE_SHARES = {"none": 783 / 3000, "ghl": 1486 / 3000, "cal_invitee": 638 / 3000, "cal_event_only": 93 / 3000}
FIXTURE_STATUSES = {
    "confirmed", "booked", "canceled", "cancelled", "Cancelled", "Canceled", "rescheduled", "showed",
    "completed", "no_show", "noshow", "no-show", "",
}  # fmt: skip
TIME_COLUMNS = (
    "last_inbound_at", "appointment_booked_at", "appointment_start_at", "appointment_end_at",
    "appointment_canceled_at", "booked_slot", "appointment_last_checked_at",
)  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def _kind(row: dict[str, str]) -> str:
    if row["ghl_appointment_id"]:
        return "ghl"
    if row["calendly_invitee_uri"]:
        return "cal_invitee"
    if row["calendly_scheduled_event_uri"]:
        return "cal_event_only"
    return "none"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


def _defects(rows: list[dict[str, str]]) -> dict[str, int]:
    """Count each messy defect class in ``rows``."""
    ghl_ids = Counter(r["ghl_appointment_id"] for r in rows if r["ghl_appointment_id"])
    return {
        "unknown_status": sum(r["appointment_status"] in UNKNOWN_STATUSES for r in rows),
        "bad_booked_slot": sum(r["booked_slot"] in BAD_BOOKED_SLOTS and not r["appointment_start_at"] for r in rows),
        "padded_lead_id": sum(r["id"] != r["id"].strip() for r in rows),
        "padded_workspace_id": sum(r["workspace_id"] != r["workspace_id"].strip() for r in rows),
        "duplicate_ghl_appointment_id": sum(c == 2 for c in ghl_ids.values()),
    }


@pytest.fixture(scope="module")
def default_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    res = generate_legacy(tmp_path_factory.mktemp("default"))
    return _rows(res.leads_path)


@pytest.fixture(scope="module")
def messy_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    """(clean, messy) leads of two 5000-lead exports with equal seed."""
    clean = generate_legacy(tmp_path_factory.mktemp("clean"), n_leads=5000)
    messy = generate_legacy(tmp_path_factory.mktemp("messy"), n_leads=5000, messy=True)
    return _rows(clean.leads_path), _rows(messy.leads_path)


def test_shipped_sample_is_the_default_output(tmp_path: Path) -> None:
    res = generate_legacy(tmp_path)
    assert res == GeneratedLegacy(tmp_path / "workspaces.csv", tmp_path / "leads.csv", 3, 3000)
    for name in ("workspaces.csv", "leads.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = generate_legacy(tmp_path / "a", n_leads=500, n_workspaces=4, seed=11, messy=True)
    b = generate_legacy(tmp_path / "b", n_leads=500, n_workspaces=4, seed=11, messy=True)
    c = generate_legacy(tmp_path / "c", n_leads=500, n_workspaces=4, seed=12, messy=True)
    assert a.leads_path.read_bytes() == b.leads_path.read_bytes()
    assert a.workspaces_path.read_bytes() == b.workspaces_path.read_bytes()
    assert a.leads_path.read_bytes() != c.leads_path.read_bytes()
    assert a.workspaces_path.read_bytes() != c.workspaces_path.read_bytes()
    assert _rows(c.leads_path)[0]["id"].strip() == "lead_12_0000000"


def test_headers_match_fixture(tmp_path: Path) -> None:
    res = generate_legacy(tmp_path, n_leads=10)
    assert _header(res.workspaces_path) == WORKSPACES_HEADER
    assert _header(res.leads_path) == LEADS_HEADER
    assert res.leads_path.read_bytes().startswith(b",".join(h.encode() for h in LEADS_HEADER) + b"\r\n")
    assert FIXTURE_DIR.is_dir(), f"fixture folder {FIXTURE_DIR} missing"
    assert _header(FIXTURE_DIR / "workspaces.csv") == WORKSPACES_HEADER
    assert _header(FIXTURE_DIR / "leads.csv") == LEADS_HEADER


def test_fixture_shares_are_current() -> None:
    """The hard-coded fixture figures above still describe the fixture."""
    assert FIXTURE_DIR.is_dir(), f"fixture folder {FIXTURE_DIR} missing"
    rows = _rows(FIXTURE_DIR / "leads.csv")
    kinds = Counter(_kind(r) for r in rows)
    assert {k: kinds[k] / len(rows) for k in FIXTURE_SHARES} == pytest.approx(FIXTURE_SHARES)
    assert {r["appointment_status"] for r in rows} == FIXTURE_STATUSES


def test_shape_matches_fixture(default_rows: list[dict[str, str]]) -> None:
    rows = default_rows
    kinds = Counter(_kind(r) for r in rows)
    for kind, share in FIXTURE_SHARES.items():
        assert abs(kinds[kind] / len(rows) - share) < 0.03, (kind, kinds[kind] / len(rows), share)
    # ids ascending, workspace n % 3, emails
    assert [r["id"] for r in rows] == [f"lead_7_{n:07d}" for n in range(3000)]
    assert all(r["workspace_id"] == f"ws_7_{n % 3}" for n, r in enumerate(rows))
    assert all(r["email"] in ("", f"person7_{n}@example.com") for n, r in enumerate(rows))
    # every synonym status of the fixture appears, and nothing else
    assert {r["appointment_status"] for r in rows} == FIXTURE_STATUSES
    # group events: one scheduled event shared by several leads, each with its own invitee
    by_event: dict[str, list[str]] = {}
    for r in rows:
        if r["calendly_invitee_uri"]:
            assert r["calendly_invitee_uri"].startswith(r["calendly_scheduled_event_uri"] + "/invitees/")
            by_event.setdefault(r["calendly_scheduled_event_uri"], []).append(r["calendly_invitee_uri"])
    groups = [inv for inv in by_event.values() if len(inv) > 1]
    assert groups
    assert all(len(set(inv)) == len(inv) for inv in groups)
    # canceled rows usually, not always, with a cancel time; only canceled rows have one
    canceled = [r for r in rows if r["appointment_status"].lower() in ("canceled", "cancelled")]
    with_time = sum(bool(r["appointment_canceled_at"]) for r in canceled)
    assert 0.6 * len(canceled) < with_time < len(canceled)
    assert all(not r["appointment_canceled_at"] for r in rows if r not in canceled)
    # booked_slot forms: equal to start, offset-only without start, or missing
    offset_only = [r for r in rows if r["booked_slot"] and not r["appointment_start_at"]]
    assert offset_only and all(not r["booked_slot"].endswith("Z") for r in offset_only)
    assert all(r["booked_slot"] == r["appointment_start_at"] for r in rows if r["appointment_start_at"])
    assert 0.25 < sum(not r["appointment_booked_at"] for r in rows) / len(rows) < 0.42
    for r in rows:
        if r["appointment_start_at"]:
            minutes = (_parse(r["appointment_end_at"]) - _parse(r["appointment_start_at"])).seconds // 60
            assert minutes in (30, 45)


def test_workspaces_alternate_providers(tmp_path: Path) -> None:
    res = generate_legacy(tmp_path, n_leads=0, n_workspaces=6)
    ws = _rows(res.workspaces_path)
    assert [w["id"] for w in ws] == [f"ws_7_{i}" for i in range(6)]
    assert [w["meeting_booking_provider"] for w in ws] == ["GHL", "CALENDLY"] * 3
    for w in ws:
        if w["meeting_booking_provider"] == "GHL":
            assert len(w["ghl_location_id"]) == len(w["ghl_default_calendar_id"]) == 20
            assert not w["calendly_organization_uri"] and not w["calendly_event_type_uri"]
        else:
            assert w["calendly_organization_uri"].startswith("https://api.calendly.com/organizations/")
            assert w["calendly_event_type_uri"].startswith("https://api.calendly.com/event_types/")
            assert not w["ghl_location_id"]
    assert _rows(res.leads_path) == []


def test_messy_defects_injected_only_when_asked(messy_rows: tuple[list[dict], list[dict]]) -> None:
    clean, messy = messy_rows
    assert all(v == 0 for v in _defects(clean).values()), _defects(clean)
    found = _defects(messy)
    assert all(v >= 1 for v in found.values()), found
    # the clean stream is unchanged apart from the injected cells
    assert len(clean) == len(messy)
    assert all(c["id"] == m["id"].strip() for c, m in zip(clean, messy, strict=True))
    changed = sum(c != m for c, m in zip(clean, messy, strict=True))
    assert 0 < changed <= sum(found.values())


@pytest.mark.parametrize("which", ["clean", "messy"])
def test_time_fields_parse(which: str, messy_rows: tuple[list[dict], list[dict]]) -> None:
    rows = messy_rows[0] if which == "clean" else messy_rows[1]
    for r in rows:
        for col in TIME_COLUMNS:
            value = r[col]
            if not value or (col == "booked_slot" and value in BAD_BOOKED_SLOTS and which == "messy"):
                continue
            parsed = _parse(value)
            assert parsed.tzinfo is not None, (r["id"], col, value)
            if col != "booked_slot" or value.endswith("Z"):
                assert value.endswith(".000Z"), (r["id"], col, value)


def test_offset_booked_slot_uses_local_zone(default_rows: list[dict[str, str]]) -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    ws_tz = {w["id"]: w["timezone"] for w in _rows(SAMPLE_DIR / "workspaces.csv")}
    checked = 0
    for r in default_rows:
        slot = r["booked_slot"]
        if slot and not slot.endswith("Z"):
            tz = r["timezone"] or ws_tz[r["workspace_id"]] or "America/Los_Angeles"
            try:
                zone = zoneinfo.ZoneInfo(tz)
            except zoneinfo.ZoneInfoNotFoundError:
                pytest.skip("no tz database")
            parsed = datetime.fromisoformat(slot)
            assert parsed.utcoffset() == parsed.astimezone(zone).utcoffset(), (r["id"], slot, tz)
            checked += 1
    assert checked > 100


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--leads", "20", "--workspaces", "2", "--seed", "3", "--messy"]) == 0
    assert "20 leads" in capsys.readouterr().out
    rows = _rows(tmp_path / "leads.csv")
    assert len(rows) == 20 and rows[-1]["id"].strip() == "lead_3_0000019"
    assert len(_rows(tmp_path / "workspaces.csv")) == 2
