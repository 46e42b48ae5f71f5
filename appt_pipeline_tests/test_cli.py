"""The operator command line (SPEC §12), run as a real subprocess (console script ``appt-pipeline``) against the
test database: ``--json`` contract, exit codes 0 / 1 / 2, ``import-legacy`` errors, ``workspace set``,
``secrets set`` (ciphertext only, nothing leaked), ``rollups`` drift and repair, ``db upgrade`` idempotence.

The child gets ``APPT_DATABASE_URL`` = the test database and ``APPT_HOME`` = a temp folder; the session fixture
created ``<testdb>_dagster`` beside it, as ``db upgrade`` would (no other command creates a database).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sample.generator import LEADS_HEADER
from appt_pipeline.store.embedded import ensure_database
from appt_pipeline.store.legacy_import import import_legacy
from appt_pipeline.store.migration import migrate_workspace
from appt_pipeline.store.workspaces import SecretKeyError, get_secret, set_workspace
from appt_pipeline_tests.helpers import lead, rows
from appt_pipeline_tests.helpers.cli import CLI, cli_env, drop_database, one_json, run_cli
from appt_pipeline_tests.helpers.legacy import GOOD_LEADS, lead_row, write_csv, write_legacy, ws_row

COUNTER_KEYS = {"scanned", "created", "exists", "skipped", "errors", "errors_by_kind"}

# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture()
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return cli_env(tmp_path / "appt_home", database_url)


@pytest.fixture()
def sample(db: sa.Engine) -> sa.Engine:
    """The shipped export imported (3 workspaces, 3000 leads, no defects)."""
    import_legacy(db, SAMPLE_DIR)
    return db


# ---------------------------------------------------------------------------------------- migrate


def test_migrate_json_prints_one_object_and_exits_0(sample: sa.Engine, env: dict[str, str]) -> None:
    dry = run_cli(env, "migrate", "--workspace", "ws_7_0", "--json")
    assert dry.returncode == 0, dry.stderr
    report = one_json(dry)
    assert set(report) >= COUNTER_KEYS
    assert report["scanned"] == 1000 and report["created"] > 0 and report["errors"] == 0
    assert report["errors_by_kind"] == {}
    assert report["scanned"] == report["created"] + report["exists"] + report["skipped"] + report["errors"]
    assert "[migrate] ws_7_0: scanned=1000" in dry.stderr  # progress on stderr
    assert rows(sample, "SELECT count(*) FROM appointments")[0][0] == 0

    applied = run_cli(env, "migrate", "--workspace", "ws_7_0", "--apply", "--json", "--chunk-size", "400")
    assert applied.returncode == 0, applied.stderr
    done = one_json(applied)
    assert (done["created"], done["exists"], done["skipped"]) == (report["created"], 0, report["skipped"])
    assert applied.stderr.count("[migrate] ws_7_0: scanned=") == 3  # one progress line per chunk
    assert rows(sample, "SELECT count(*) FROM appointments")[0][0] == report["created"]

    again = one_json(run_cli(env, "migrate", "--workspace", "ws_7_0", "--apply", "--json"))
    assert (again["created"], again["exists"]) == (0, report["created"])


def test_migrate_human_output_goes_to_stderr(sample: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "migrate", "--workspace", "ws_7_1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "dry-run" in proc.stderr and "created=" in proc.stderr


def test_migrate_exits_1_when_errors(db: sa.Engine, tmp_path: Path, env: dict[str, str]) -> None:
    write_legacy(tmp_path / "in", workspaces=[ws_row("ws_a")],
                 leads=[lead_row("l1", ghl_appointment_id="g1", appointment_status="tentative"),
                        lead_row("l2", ghl_appointment_id="g2", appointment_status="confirmed")])
    import_legacy(db, tmp_path / "in")
    proc = run_cli(env, "migrate", "--workspace", "ws_a", "--apply", "--json")
    assert proc.returncode == 1, proc.stderr
    report = one_json(proc)
    assert (report["created"], report["errors"], report["errors_by_kind"]) == (1, 1, {"unknown_status": 1})
    assert any("tentative" in s["detail"] for s in report["error_samples"])
    human = run_cli(env, "migrate", "--workspace", "ws_a")
    assert human.returncode == 1
    assert "unknown_status" in human.stderr and "tentative" in human.stderr


def test_migrate_unknown_workspace_exits_2(sample: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "migrate", "--workspace", "ws_nope", "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "ws_nope" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.parametrize("args", [
    ["migrate"],  # --workspace is required
    ["migrate", "--workspace", "ws_7_0", "--chunk-size", "0"],
    ["migrate", "--workspace", "ws_7_0", "--bogus"],
], ids=["missing-workspace", "chunk-size-0", "unknown-option"])
def test_bad_usage_exits_2(db: sa.Engine, env: dict[str, str], args: list[str]) -> None:
    proc = run_cli(env, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------- import-legacy


def test_import_legacy_loads_the_sample(db: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "import-legacy", str(SAMPLE_DIR))
    assert proc.returncode == 0, proc.stderr
    assert "3 workspace row(s) and 3000 lead row(s)" in proc.stderr
    assert rows(db, "SELECT count(*) FROM leads")[0][0] == 3000


def test_import_legacy_malformed_file_exits_2_naming_line(db: sa.Engine, tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    write_legacy(tmp_path / "base", workspaces=[ws_row("ws_a")], leads=[lead_row("l1")])
    import_legacy(db, tmp_path / "base")
    records: list[Any] = [lead_row(f"lead_{i:04d}") for i in range(GOOD_LEADS)]
    records.append(lead_row("lead_bad", appointment_start_at="tomorrow 3pm"))
    write_csv(tmp_path / "bad" / "leads.csv", LEADS_HEADER, records)
    proc = run_cli(env, "import-legacy", str(tmp_path / "bad"))
    assert proc.returncode == 2, proc.stderr
    assert f"leads.csv:{GOOD_LEADS + 2}: column appointment_start_at" in proc.stderr
    assert "tomorrow 3pm" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [r[0] for r in rows(db, "SELECT id FROM leads")] == ["l1"]


def test_import_legacy_out_of_range_time_exits_2_naming_line(db: sa.Engine, tmp_path: Path,
                                                             env: dict[str, str]) -> None:
    write_legacy(tmp_path / "bad", workspaces=[ws_row("ws_a")],
                 leads=[lead_row("l1"), lead_row("l2", appointment_start_at="9999-12-31T23:59:59-14:00")])
    proc = run_cli(env, "import-legacy", str(tmp_path / "bad"))
    assert proc.returncode == 2, proc.stderr
    assert "leads.csv:3: column appointment_start_at" in proc.stderr and "out of range" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_legacy_undecodable_file_exits_2(db: sa.Engine, tmp_path: Path, env: dict[str, str]) -> None:
    write_legacy(tmp_path / "base", workspaces=[ws_row("ws_a")])
    import_legacy(db, tmp_path / "base")
    write_csv(tmp_path / "bad" / "leads.csv", LEADS_HEADER, [lead_row("l1"), lead_row("l2", email="XX")])
    path = tmp_path / "bad" / "leads.csv"
    path.write_bytes(path.read_bytes().replace(b"XX", b"\xff\x00"))
    proc = run_cli(env, "import-legacy", str(tmp_path / "bad"))
    assert proc.returncode == 2, proc.stderr
    assert "leads.csv:3: " in proc.stderr and "Traceback" not in proc.stderr
    assert rows(db, "SELECT count(*) FROM leads")[0][0] == 0


def test_import_legacy_missing_folder_or_files_exits_2(db: sa.Engine, tmp_path: Path, env: dict[str, str]) -> None:
    assert run_cli(env, "import-legacy", str(tmp_path / "nope")).returncode == 2
    (tmp_path / "empty").mkdir()
    proc = run_cli(env, "import-legacy", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "no workspaces.csv or leads.csv" in proc.stderr


# -------------------------------------------------------------------------------------- workspace


def _workspace(engine: sa.Engine, ws_id: str) -> Any:
    found = rows(engine, "SELECT * FROM workspaces WHERE id = :id", id=ws_id)
    return found[0] if found else None


def test_workspace_set_creates_then_updates(db: sa.Engine, env: dict[str, str]) -> None:
    created = run_cli(env, "workspace", "set", "ws", "--ghl-api-base-url", "http://127.0.0.1:9",
                      "--meeting-duration-minutes", "45")
    assert created.returncode == 0, created.stderr
    assert "created" in created.stderr
    ws = _workspace(db, "ws")
    assert (ws.ghl_api_base_url, ws.meeting_duration_minutes) == ("http://127.0.0.1:9", 45)
    assert ws.calendly_api_base_url == "https://api.calendly.com"  # untouched columns keep their defaults

    updated = run_cli(env, "workspace", "set", "ws", "--meeting-duration-minutes", "60", "--name", "Acme",
                      "--meeting-booking-provider", "calendly", "--auto-book-meetings", "true",
                      "--calendly-event-type-uri", "https://api.calendly.com/event_types/et1",
                      "--timezone", "Europe/London")
    assert updated.returncode == 0, updated.stderr
    assert "updated" in updated.stderr
    ws = _workspace(db, "ws")
    assert (ws.meeting_duration_minutes, ws.name, ws.meeting_booking_provider, ws.auto_book_meetings) \
        == (60, "Acme", "CALENDLY", True)
    assert ws.ghl_api_base_url == "http://127.0.0.1:9"  # not given: kept
    assert (ws.calendly_event_type_uri, ws.timezone) == ("https://api.calendly.com/event_types/et1", "Europe/London")
    assert rows(db, "SELECT count(*) FROM workspaces")[0][0] == 1


@pytest.mark.parametrize("option,value", [
    ("--meeting-duration-minutes", "0"),
    ("--meeting-duration-minutes", "abc"),
    ("--meeting-booking-provider", "ZOOM"),
    ("--auto-book-meetings", "maybe"),
    ("--timezone", "Mars/Olympus_Mons"),
    ("--ghl-api-base-url", "127.0.0.1:9"),
    ("--calendly-api-base-url", "ftp://calendly.example"),
])
def test_workspace_set_invalid_value_exits_2(db: sa.Engine, env: dict[str, str], option: str, value: str) -> None:
    set_workspace(db, "ws", {"meeting_duration_minutes": 45, "timezone": "Asia/Dubai"})
    before = _workspace(db, "ws")
    proc = run_cli(env, "workspace", "set", "ws", option, value)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _workspace(db, "ws") == before


def test_workspace_set_invalid_value_creates_nothing(db: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "workspace", "set", "ws_new", "--name", "New", "--timezone", "Nowhere/Special")
    assert proc.returncode == 2 and "Nowhere/Special" in proc.stderr
    assert _workspace(db, "ws_new") is None


def test_workspace_set_conflicting_location_id_exits_2(db: sa.Engine, env: dict[str, str]) -> None:
    assert run_cli(env, "workspace", "set", "ws1", "--ghl-location-id", "loc1").returncode == 0
    proc = run_cli(env, "workspace", "set", "ws2", "--ghl-location-id", "loc1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _workspace(db, "ws2") is None


def test_workspace_set_blank_id_exits_2(db: sa.Engine, env: dict[str, str]) -> None:
    assert run_cli(env, "workspace", "set", "  ").returncode == 2
    assert rows(db, "SELECT count(*) FROM workspaces")[0][0] == 0


# ---------------------------------------------------------------------------------------- secrets

TOKEN = "pit-" + "7f3a9c" * 6  # a recognisable plaintext


def test_secrets_set_stores_ciphertext_only(db: sa.Engine, env: dict[str, str]) -> None:
    set_workspace(db, "ws", {})
    key = Fernet.generate_key().decode()
    proc = run_cli({**env, "APPT_SECRET_KEY": key}, "-v", "secrets", "set", "ws", "ghl_private_token",
                   stdin=TOKEN + "\n")
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    stored = rows(db, "SELECT workspace_id, name, ciphertext FROM workspace_secrets")
    assert [(r[0], r[1]) for r in stored] == [("ws", "ghl_private_token")]
    ciphertext = bytes(stored[0][2])
    assert TOKEN.encode() not in ciphertext
    assert get_secret(db, "ws", "ghl_private_token", key) == TOKEN  # trimmed of the newline
    with pytest.raises(SecretKeyError):
        get_secret(db, "ws", "ghl_private_token", Fernet.generate_key().decode())
    # nowhere else in the database either
    dump = rows(db, "SELECT string_agg(w::text, '') FROM workspaces w")[0][0]
    assert TOKEN not in dump

    # setting it again replaces the value (still one row)
    again = run_cli({**env, "APPT_SECRET_KEY": key}, "secrets", "set", "ws", "ghl_private_token", stdin="other")
    assert again.returncode == 0
    assert get_secret(db, "ws", "ghl_private_token", key) == "other"
    assert rows(db, "SELECT count(*) FROM workspace_secrets")[0][0] == 1


@pytest.mark.parametrize("key", [None, "not-a-fernet-key"], ids=["no-key", "bad-key"])
def test_secrets_set_without_valid_key_exits_2_and_leaks_nothing(db: sa.Engine, env: dict[str, str],
                                                                 key: str | None) -> None:
    set_workspace(db, "ws", {})
    child = env if key is None else {**env, "APPT_SECRET_KEY": key}
    proc = run_cli(child, "-v", "secrets", "set", "ws", "ghl_private_token", stdin=TOKEN)
    assert proc.returncode == 2
    assert "APPT_SECRET_KEY" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    assert rows(db, "SELECT count(*) FROM workspace_secrets")[0][0] == 0


@pytest.mark.parametrize("args,stdin", [
    (["secrets", "set", "ws_nope", "ghl_private_token"], TOKEN),
    (["secrets", "set", "ws", "no_such_secret"], TOKEN),
    (["secrets", "set", "ws", "ghl_private_token"], "  \n"),
], ids=["unknown-workspace", "unknown-name", "empty-value"])
def test_secrets_set_bad_input_exits_2(db: sa.Engine, env: dict[str, str], args: list[str], stdin: str) -> None:
    set_workspace(db, "ws", {})
    proc = run_cli({**env, "APPT_SECRET_KEY": Fernet.generate_key().decode()}, *args, stdin=stdin)
    assert proc.returncode == 2
    assert TOKEN not in proc.stdout + proc.stderr
    assert rows(db, "SELECT count(*) FROM workspace_secrets")[0][0] == 0


def _public_key_text(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_secrets_set_refuses_webhook_keys_that_cannot_work(db: sa.Engine, env: dict[str, str]) -> None:
    """A GHL key that is no Ed25519 (or legacy RSA) public key, or a Calendly signing key of the wrong shape,
    is refused when stored, saying what is wrong (issue 10 item 4)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    set_workspace(db, "ws", {})
    child = {**env, "APPT_SECRET_KEY": Fernet.generate_key().decode()}
    rsa_pem = _public_key_text(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ed_pem = _public_key_text(ed25519.Ed25519PrivateKey.generate())
    refused = [("ghl_webhook_public_key", "not a key at all", "not a PEM or base64 DER public key"),
               ("ghl_webhook_public_key", rsa_pem, "expected an Ed25519 public key"),
               ("ghl_webhook_legacy_public_key", ed_pem, "expected an RSA public key"),
               ("calendly_webhook_signing_key", "short", "too short"),
               ("calendly_webhook_signing_key", "two words-0123456789", "one word")]
    for name, value, reason in refused:
        proc = run_cli(child, "secrets", "set", "ws", name, stdin=value)
        assert proc.returncode == 2 and reason in proc.stderr, (name, proc.stderr)
        assert value not in proc.stderr or value in ("short",)
    assert rows(db, "SELECT count(*) FROM workspace_secrets")[0][0] == 0
    for name, value in (("ghl_webhook_public_key", ed_pem), ("ghl_webhook_legacy_public_key", rsa_pem),
                        ("calendly_webhook_signing_key", "Q2FsZW5kbHlTaWduaW5nS2V5MDEyMzQ1Njc4OQ")):
        assert run_cli(child, "secrets", "set", "ws", name, stdin=value).returncode == 0
    assert rows(db, "SELECT count(*) FROM workspace_secrets")[0][0] == 3


def test_secrets_set_prompts_on_a_terminal(db: sa.Engine, env: dict[str, str]) -> None:
    """On a terminal the value is asked for (hidden), not read silently from stdin until EOF."""
    import pty

    set_workspace(db, "ws", {})
    child = {**env, "APPT_SECRET_KEY": Fernet.generate_key().decode()}
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(CLI), "secrets", "set", "ws", "ghl_private_token"], env=child,
                            stdin=follower, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    while b"ghl_private_token for ws" not in seen and time.monotonic() < deadline:
        seen += os.read(leader, 1024)
    os.write(leader, TOKEN.encode() + b"\n")
    assert proc.wait(timeout=30) == 0
    os.close(leader)
    assert TOKEN.encode() not in seen
    assert rows(db, "SELECT count(*) FROM workspace_secrets WHERE name = 'ghl_private_token'")[0][0] == 1


# ---------------------------------------------------------------------------------------- rollups


def test_rollups_report_drift_and_repair(sample: sa.Engine, env: dict[str, str]) -> None:
    migrate_workspace(sample, "ws_7_2", apply=True)
    clean = run_cli(env, "rollups", "--workspace", "ws_7_2", "--json")
    assert clean.returncode == 0, clean.stderr
    report = one_json(clean)
    assert (report["drifted"], report["remaining"]) == (0, 0)
    assert report["leads_with_rows"] == rows(sample, "SELECT count(*) FROM appointments")[0][0]

    victim = rows(sample, "SELECT lead_id FROM appointments WHERE status = 'CONFIRMED' ORDER BY lead_id LIMIT 1")[0][0]
    good = lead(sample, victim)
    with sample.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET appointment_status = 'canceled', booked_slot = NULL WHERE id = :id"),
                     {"id": victim})
    drifted = run_cli(env, "rollups", "--workspace", "ws_7_2", "--json")
    assert drifted.returncode == 1
    report = one_json(drifted)
    assert (report["drifted"], report["repaired"], report["remaining"]) == (1, 0, 1)
    assert report["sample_lead_ids"] == [victim]

    repaired = run_cli(env, "rollups", "--workspace", "ws_7_2", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    report = one_json(repaired)
    assert (report["drifted"], report["repaired"], report["remaining"]) == (1, 1, 0)
    fixed = lead(sample, victim)
    assert (fixed.appointment_status, fixed.booked_slot) == (good.appointment_status, good.booked_slot)
    assert one_json(run_cli(env, "rollups", "--workspace", "ws_7_2", "--json"))["drifted"] == 0


def test_rollups_unknown_workspace_exits_2(sample: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "rollups", "--workspace", "ws_nope", "--json")
    assert proc.returncode == 2 and proc.stdout == ""


# ------------------------------------------------------------------------------------- db upgrade


def test_db_upgrade_twice_applies_nothing_the_second_time(server_url: str, tmp_path: Path) -> None:
    name = f"appt_cli_upgrade_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    child = cli_env(tmp_path / "home", url)
    try:
        ensure_database(url, name)  # an empty database: nothing applied yet
        first = run_cli(child, "db", "upgrade")
        assert first.returncode == 0, first.stderr
        applied_line = next(line for line in first.stderr.splitlines() if line.startswith("applied:"))
        assert "0001_schema" in applied_line.split(";")[0]
        second = run_cli(child, "db", "upgrade")
        assert second.returncode == 0, second.stderr
        assert "applied: nothing (up to date)" in second.stderr
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM leads")).scalar_one() == 0
        finally:
            engine.dispose()
    finally:
        drop_database(server_url, name)
        drop_database(server_url, f"{name}_dagster")


# ---------------------------------------------------------------------------------------- webhooks


def test_webhooks_requeue_puts_failed_rows_back_and_says_how_many(db: sa.Engine, env: dict[str, str]) -> None:
    from appt_pipeline.pipelines.webhook_ingest import ingest_workspace
    from appt_pipeline_tests.helpers import seed
    from appt_pipeline_tests.helpers.webhooks import deliver, ghl_body, with_email

    [lead_id] = seed(db, "ws1", leads=1)
    with_email(db, lead_id, contact="contact-1")
    deliver(db, "ws1", ghl_body("AppointmentCreate", "g-bad", status="tentative-ish"),
            ghl_body("AppointmentUpdate", "g-bad2", status="tentative-ish"),
            ghl_body("AppointmentCreate", "g-ok", updated="2026-03-01T11:00:00Z"))
    assert ingest_workspace(db, "ws1").failed == 2

    proc = run_cli(env, "webhooks", "requeue", "--workspace", "ws1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc) == {"workspace_id": "ws1", "status": "failed", "requeued": 2}
    assert sorted(r[0] for r in rows(db, "SELECT status FROM webhook_events")) == ["pending", "pending", "processed"]

    human = run_cli(env, "webhooks", "requeue", "--workspace", "ws1", "--status", "failed")
    assert human.returncode == 0 and human.stdout == ""
    assert "0 failed rows put back to pending" in human.stderr


def test_webhooks_requeue_unknown_workspace_or_status_exits_2(db: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "webhooks", "requeue", "--workspace", "ws_nope", "--json")
    assert proc.returncode == 2 and proc.stdout == "" and "ws_nope" in proc.stderr
    assert run_cli(env, "webhooks", "requeue", "--workspace", "ws1", "--status", "processed").returncode == 2
    assert run_cli(env, "webhooks", "requeue").returncode == 2  # --workspace is required


def test_webhooks_purge_keeps_30_days_of_dedupe_keys_and_pending_rows(db: sa.Engine, env: dict[str, str]) -> None:
    from appt_pipeline_tests.helpers import seed
    from appt_pipeline_tests.helpers.webhooks import calendly_body, deliver

    seed(db, "ws1", leads=0)
    deliver(db, "ws1", calendly_body("invitee.created", "p-old"), calendly_body("invitee.created", "p-pending"),
            calendly_body("invitee.created", "p-new"))
    with db.begin() as conn:
        first = conn.execute(sa.text("SELECT min(id) FROM webhook_events")).scalar_one()
        conn.execute(sa.text("UPDATE webhook_events SET received_at = now() - interval '40 days' "
                             "WHERE id IN (:a, :b)"), {"a": first, "b": first + 1})  # the old one, the pending one
        conn.execute(sa.text("UPDATE webhook_events SET status = 'ignored', processed_at = now() "
                             "WHERE id IN (:a, :c)"), {"a": first, "c": first + 2})
    assert run_cli(env, "webhooks", "purge", "--keep-days", "29").returncode == 2  # below the 30-day retention
    proc = run_cli(env, "webhooks", "purge", "--json")
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc) == {"workspace_id": None, "keep_days": 30, "purged": 1}
    assert sorted(r[0] for r in rows(db, "SELECT status FROM webhook_events")) == ["ignored", "pending"]
    assert one_json(run_cli(env, "webhooks", "purge", "--workspace", "ws1", "--json"))["purged"] == 0


def test_import_legacy_workspace_rows_checked_like_workspace_set(db: sa.Engine, tmp_path: Path,
                                                                 env: dict[str, str]) -> None:
    write_legacy(tmp_path / "bad", workspaces=[ws_row("ws_a"), ws_row("ws_b", timezone="Mars/Olympus"),
                                               ws_row("ws c")])
    proc = run_cli(env, "import-legacy", str(tmp_path / "bad"))
    assert proc.returncode == 2, proc.stderr
    assert "workspaces.csv:3: " in proc.stderr and "IANA time zone" in proc.stderr
    assert "workspaces.csv:4: workspace id 'ws c' contains ' '" in proc.stderr
    assert rows(db, "SELECT count(*) FROM workspaces")[0][0] == 0


def test_serve_on_a_busy_port_exits_1_with_one_line(db: sa.Engine, env: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli({**env, "APPT_SECRET_KEY": Fernet.generate_key().decode()}, "serve", "--port", str(port))
    assert proc.returncode == 1, proc.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------- capacity


def _capacity_case(engine: sa.Engine) -> None:
    """Slots and bookings a few hours after now (the command's window starts at the wall clock)."""
    from datetime import timedelta

    from appt_pipeline.domain.rules import utc_now
    from appt_pipeline_tests.helpers.capacity import book, offer, workspace

    now = utc_now()
    soon = [now + timedelta(hours=h) for h in (2, 3, 4)]
    workspace(engine, "cap", default="cal_a", direct="cal_b")
    offer(engine, "cap", "cal_a", soon, fetched_at=now, stale_at=now + timedelta(hours=2))
    offer(engine, "cap", "cal_b", soon[1:], source="DIRECT_BOOK", fetched_at=now - timedelta(hours=4),
          stale_at=now - timedelta(hours=2), last_error="GHL 502 Bad Gateway")
    book(engine, "cap", now + timedelta(hours=5), calendar="cal_a")
    book(engine, "cap", now + timedelta(hours=5))
    workspace(engine, "cap_bare")
    book(engine, "cap_bare", now + timedelta(hours=5))


def test_capacity_json_is_one_object_of_the_documented_shape(db: sa.Engine, env: dict[str, str]) -> None:
    from datetime import datetime

    from appt_pipeline.store.capacity import read_capacity

    _capacity_case(db)
    proc = run_cli(env, "capacity", "--workspace", "cap", "--workspace", "cap_bare", "--days", "7", "--json")
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert list(out) == ["window_days", "window_start", "window_end", "workspaces"]
    assert out["window_days"] == 7 and out["window_start"].endswith("Z") and out["window_end"].endswith("Z")
    start, end = (datetime.fromisoformat(out[k]) for k in ("window_start", "window_end"))
    assert (end - start).days == 7
    assert [w["workspace_id"] for w in out["workspaces"]] == ["cap", "cap_bare"]
    cap, bare = out["workspaces"]
    assert list(cap) == ["workspace_id", "calendars", "total", "days"]
    assert [list(c) for c in cap["calendars"]] == [["calendar_key", "provider", "availability_source",
                                                    "booked_slots", "available_slots", "total_slots", "booked_pct",
                                                    "stale", "last_error"]] * 2
    assert [(c["calendar_key"], c["booked_slots"], c["available_slots"], c["booked_pct"], c["stale"],
             c["last_error"]) for c in cap["calendars"]] == [("cal_a", 1, 3, 0.25, False, None),
                                                             ("cal_b", 0, 2, 0.0, True, "GHL 502 Bad Gateway")]
    assert cap["total"] == {"booked_slots": 2, "available_slots": 3, "total_slots": 5, "booked_pct": 0.4,
                            "unattributed_booked_slots": 1}
    assert set(cap["days"][0]) == {"date", "calendar_key", "booked_slots", "available_slots"}
    assert bare["calendars"] == [] and bare["total"]["unattributed_booked_slots"] == 1
    assert bare["total"]["booked_pct"] == 1.0
    assert "cap_bare: no configured calendar" in proc.stderr
    # the same numbers as the store's read at that instant, and stored
    assert read_capacity(db, ["cap", "cap_bare"], days=7, now=start).as_dict() == out
    assert rows(db, "SELECT booked_slots, available_slots, booked_pct FROM calendar_capacity "
                    "WHERE workspace_id = 'cap' AND calendar_key = '*' AND window_days = 7")[0] == (2, 3, 0.4)


def test_capacity_human_table_and_all(db: sa.Engine, env: dict[str, str]) -> None:
    _capacity_case(db)
    proc = run_cli(env, "capacity", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "cap_bare: no configured calendar" in proc.stdout
    lines = proc.stdout.splitlines()
    assert any(line.split()[:7] == ["cal_a", "GHL", "DEFAULT", "1", "3", "4", "25.0%"] for line in lines)
    assert any(line.startswith("cal_b") and "GHL 502 Bad Gateway" in line and " yes " in line for line in lines)
    assert any(line.startswith("* (total)") and "40.0%" in line for line in lines)
    assert "(30 days), 2 workspace(s)" in proc.stderr


@pytest.mark.parametrize("args", [
    ["capacity", "--workspace", "nope"],
    ["capacity", "--workspace", "cap", "--workspace", "nope", "--json"],
    ["capacity", "--workspace", "cap", "--days", "0"],
    ["capacity", "--workspace", "cap", "--days", "91"],
    ["capacity"],
    ["capacity", "--all", "--workspace", "cap"],
], ids=["unknown", "one-unknown", "days-0", "days-91", "neither", "both"])
def test_capacity_bad_input_exits_2_and_writes_nothing(db: sa.Engine, env: dict[str, str], args: list[str]) -> None:
    _capacity_case(db)
    proc = run_cli(env, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    if "nope" in args:
        assert "'nope' does not exist" in proc.stderr
    assert rows(db, "SELECT count(*) FROM calendar_capacity")[0][0] == 0


def test_capacity_refresh_availability_from_the_simulator(db: sa.Engine, env: dict[str, str]) -> None:
    """--refresh-availability fetches the free slots through the provider clients first (a GHL simulator on
    loopback, real clock); a workspace whose token is refused keeps nothing fresh and says so per calendar."""
    from appt_pipeline.sandbox import GhlCalendar, GhlLocation, GhlSeed, GhlSimulator, SimulatorServer
    from appt_pipeline.store.workspaces import set_secret
    from appt_pipeline_tests.helpers import SECRET_KEY

    every_day = {d: [("00:00", "23:59")] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    seed = GhlSeed(locations=[GhlLocation(id=loc, token=f"tok-{loc}", timezone="UTC", calendars=[
        GhlCalendar(id=f"{loc}_a", working_hours=every_day), GhlCalendar(id=f"{loc}_b", name="Direct")])
        for loc in ("loc1", "loc2")])
    with SimulatorServer(GhlSimulator(seed)) as server:
        for ws, loc, token in (("ws_live", "loc1", "tok-loc1"), ("ws_revoked", "loc2", "tok-wrong")):
            set_workspace(db, ws, {"meeting_booking_provider": "GHL", "timezone": "UTC", "ghl_location_id": loc,
                                   "ghl_api_base_url": server.base_url, "ghl_default_calendar_id": f"{loc}_a",
                                   "ghl_direct_book_calendar_id": f"{loc}_b"})
            set_secret(db, ws, "ghl_private_token", token, SECRET_KEY)
        before = one_json(run_cli(env, "capacity", "--workspace", "ws_live", "--json"))
        assert [c["last_error"] for c in before["workspaces"][0]["calendars"]] == ["availability never fetched"] * 2
        proc = run_cli({**env, "APPT_SECRET_KEY": SECRET_KEY}, "capacity", "--workspace", "ws_live",
                       "--workspace", "ws_revoked", "--days", "7", "--refresh-availability", "--json")
    assert proc.returncode == 0, proc.stderr
    live, revoked = one_json(proc)["workspaces"]
    a = live["calendars"][0]
    assert (a["calendar_key"], a["stale"], a["last_error"]) == ("loc1_a", False, None) and a["available_slots"] > 0
    stored = rows(db, "SELECT count(*) FROM calendar_availability WHERE workspace_id = 'ws_live' "
                      "AND calendar_key = 'loc1_a'")[0][0]
    assert 0 < a["available_slots"] <= stored
    assert live["total"]["available_slots"] >= a["available_slots"]
    assert all(c["stale"] and c["last_error"] for c in revoked["calendars"])
    assert "ws_revoked: calendar refresh failed (previous slots kept)" in proc.stderr
    assert "tok-wrong" not in proc.stderr + proc.stdout
