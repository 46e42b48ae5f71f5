"""The webhook intake service (SPEC §7, §11) over real HTTP on loopback against the real test database.

Every hostile or broken delivery is answered with the documented status and stores nothing; valid
deliveries are stored durably (pending or ignored), deduplicated, and without PII.
"""

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appt_pipeline.domain.signatures import (
    calendly_signature,
    ghl_ed25519_signature,
    ghl_rsa_signature,
    public_key_text,
)
from appt_pipeline.domain.webhook_staging import email_hash, stage_calendly, stage_ghl
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceConfigError, ServiceSettings, create_app
from appt_pipeline.store.webhook_events import insert_events
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.conftest import APP_TABLES
from appt_pipeline_tests.helpers import SECRET_KEY, free_port, rows, seed

CAL_KEY_A = "cal-signing-key-A-" + uuid.uuid4().hex
CAL_KEY_B = "cal-signing-key-B-" + uuid.uuid4().hex
GHL_KEY = Ed25519PrivateKey.generate()
GHL_OTHER_KEY = Ed25519PrivateKey.generate()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

EMAIL = "jane.doe@example.com"
NAME = "Jane Doe"
PHONE = "+1 415 555 0199"

#: workspace id → (columns, secrets)
WORKSPACES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "cal-a": ({"meeting_booking_provider": "CALENDLY"}, {"calendly_webhook_signing_key": CAL_KEY_A}),
    "cal-b": ({"meeting_booking_provider": "CALENDLY"}, {"calendly_webhook_signing_key": CAL_KEY_B}),
    "ghl-a": ({"ghl_location_id": "loc-a"}, {"ghl_webhook_public_key": public_key_text(GHL_KEY.public_key())}),
    "ghl-legacy": ({"ghl_location_id": "loc-l"},
                   {"ghl_webhook_public_key": public_key_text(GHL_KEY.public_key()),
                    "ghl_webhook_legacy_public_key": public_key_text(RSA_KEY.public_key())}),
    "bare": ({}, {}),
}


# ------------------------------------------------------------------------------------------- bodies


def calendly_body(event: str = "invitee.created", invitee: str | None = None, **extra: Any) -> dict[str, Any]:
    """A current-form Calendly delivery full of PII (name, e-mail, phone, answers) that must not be stored."""
    invitee = invitee or uuid.uuid4().hex[:16]
    ev = f"https://api.calendly.com/scheduled_events/EV{invitee}"
    body: dict[str, Any] = {
        "created_at": "2026-03-01T12:00:00.000000Z",
        "created_by": "https://api.calendly.com/users/AAAAAAAAAAAAAAAA",
        "event": event,
        "payload": {
            "cancel_url": "https://calendly.com/cancellations/X",
            "created_at": "2026-03-01T11:59:58.000000Z",
            "email": EMAIL,
            "name": NAME,
            "first_name": "Jane",
            "event": ev,
            "new_invitee": None,
            "old_invitee": None,
            "questions_and_answers": [{"question": "Phone?", "answer": PHONE}],
            "text_reminder_number": PHONE,
            "rescheduled": False,
            "status": "active",
            "timezone": "America/New_York",
            "updated_at": "2026-03-01T11:59:59.000000Z",
            "uri": f"{ev}/invitees/{invitee}",
            "scheduled_event": {
                "uri": ev, "name": "Intro call with Jane Doe", "status": "active",
                "start_time": "2026-03-05T15:00:00.000000Z", "end_time": "2026-03-05T15:30:00.000000Z",
                "event_type": "https://api.calendly.com/event_types/ET1",
                "event_memberships": [{"user": "https://api.calendly.com/users/U1", "user_email": "host@example.com",
                                       "user_name": "Host Name"}],
                "meeting_notes_plain": f"call {NAME} at {PHONE}",
                "created_at": "2026-03-01T11:59:58.000000Z", "updated_at": "2026-03-01T11:59:58.000000Z",
            },
        },
    }
    body.update(extra)
    return body


def ghl_body(kind: str = "AppointmentCreate", location: str = "loc-a", webhook_id: str | None = None,
             sent: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """A signed-delivery-shaped GHL body with PII in title/notes/address."""
    body: dict[str, Any] = {
        "type": kind,
        "locationId": location,
        "webhookId": webhook_id or uuid.uuid4().hex,
        "timestamp": (sent or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "appointment": {
            "id": "appt-" + uuid.uuid4().hex[:12], "address": f"{NAME}, {PHONE}", "title": f"Call with {NAME}",
            "calendarId": "cal-1", "contactId": "contact-1", "groupId": "g1", "appointmentStatus": "confirmed",
            "assignedUserId": "u1", "users": ["u1"], "notes": f"email {EMAIL}", "source": "booking_widget",
            "startTime": "2026-03-05T16:00:00+05:30", "endTime": "2026-03-05T16:30:00+05:30",
            "dateAdded": "2026-03-01T10:00:00Z", "dateUpdated": "2026-03-01T10:00:00Z",
        },
    }
    body.update(extra)
    return body


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def cal_headers(body: bytes, key: str = CAL_KEY_A, t: int | None = None, **extra: str) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    return {"Content-Type": "application/json", "Calendly-Webhook-Signature": calendly_signature(key, body, t), **extra}


def ghl_headers(body: bytes, key: Ed25519PrivateKey = GHL_KEY, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-GHL-Signature": ghl_ed25519_signature(key, body), **extra}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workspaces(engine: sa.Engine) -> sa.Engine:
    """The workspaces of :data:`WORKSPACES` with their encrypted keys (once per module; app tables emptied)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
    for ws, (columns, secrets) in WORKSPACES.items():
        seed(engine, ws, leads=0)
        if columns:
            set_workspace(engine, ws, columns)
        for name, value in secrets.items():
            set_secret(engine, ws, name, value, SECRET_KEY)
    return engine


@pytest.fixture(scope="module")
def server(database_url: str, workspaces: sa.Engine) -> Iterator[SimulatorServer]:
    """The intake app on a loopback port (one per module, so its key cache sees the same keys every test)."""
    settings = ServiceSettings(database_url=database_url, secret_key=SECRET_KEY, pool_timeout_s=2.0)
    with SimulatorServer(create_app(settings)) as srv:
        yield srv


@pytest.fixture()
def db(workspaces: sa.Engine) -> sa.Engine:
    """The module's database with ``webhook_events`` emptied before the test."""
    with workspaces.begin() as conn:
        conn.exec_driver_sql("DELETE FROM webhook_events")
    return workspaces


@pytest.fixture()
def client(server: SimulatorServer, db: sa.Engine) -> Iterator[httpx.Client]:
    """An HTTP client of the service (staging table empty)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def stored(engine: sa.Engine) -> list[sa.Row[Any]]:
    return rows(engine, "SELECT workspace_id, provider::text AS provider, event_type, dedupe_key, status, error, "
                        "payload::text AS payload FROM webhook_events ORDER BY id")


# ------------------------------------------------------------------------------------ hostile matrix


@dataclass
class Case:
    """One hostile/broken delivery: where it goes, what is sent, what must come back."""

    name: str
    path: str
    body: bytes
    headers: dict[str, str]
    status: int
    error: str
    fields: list[str] | None = field(default=None)


def _cases() -> list[Case]:
    now = int(time.time())
    c_body = raw(calendly_body())
    other = raw(calendly_body())
    g_body = raw(ghl_body())
    g_other = raw(ghl_body())
    cal, ghl_a = "/webhooks/calendly/cal-a", "/webhooks/ghl/ghl-a"
    wrong_sig = calendly_signature(CAL_KEY_B, c_body, now)
    return [
        Case("calendly bad signature (other key)", cal, c_body,
             {"Content-Type": "application/json", "Calendly-Webhook-Signature": wrong_sig}, 401, "bad_signature"),
        Case("calendly missing signature", cal, c_body, {"Content-Type": "application/json"}, 401,
             "missing_signature"),
        Case("calendly signature of another body reused", cal, c_body,
             {"Content-Type": "application/json",
              "Calendly-Webhook-Signature": calendly_signature(CAL_KEY_A, other, now)}, 401, "bad_signature"),
        Case("calendly malformed signature header", cal, c_body,
             {"Content-Type": "application/json", "Calendly-Webhook-Signature": "sha256=deadbeef"}, 401,
             "malformed_signature"),
        Case("calendly signature header without t", cal, c_body,
             {"Content-Type": "application/json", "Calendly-Webhook-Signature": "v1=" + "0" * 64}, 401,
             "malformed_signature"),
        Case("calendly t older than 180 s", cal, c_body, cal_headers(c_body, t=now - 181 - 5), 401,
             "stale_timestamp"),
        Case("calendly t in the future", cal, c_body, cal_headers(c_body, t=now + 600), 401, "stale_timestamp"),
        Case("calendly body signed for workspace A posted to B", "/webhooks/calendly/cal-b", c_body,
             cal_headers(c_body, key=CAL_KEY_A), 401, "bad_signature"),
        Case("calendly unknown workspace", "/webhooks/calendly/nope", c_body, cal_headers(c_body), 404,
             "unknown_workspace"),
        Case("ghl unknown workspace", "/webhooks/ghl/nope", g_body, ghl_headers(g_body), 404, "unknown_workspace"),
        Case("calendly malformed JSON", cal, b"{not json", cal_headers(b"{not json"), 400, "invalid_json"),
        Case("calendly truncated JSON", cal, c_body[:-10], cal_headers(c_body[:-10]), 400, "invalid_json"),
        Case("ghl truncated JSON", ghl_a, g_body[:-1], ghl_headers(g_body[:-1]), 400, "invalid_json"),
        Case("calendly text/plain", cal, c_body, cal_headers(c_body, **{"Content-Type": "text/plain"}), 415,
             "unsupported_media_type"),
        Case("ghl form-encoded", ghl_a, g_body,
             ghl_headers(g_body, **{"Content-Type": "application/x-www-form-urlencoded"}), 415,
             "unsupported_media_type"),
        Case("calendly no content type", cal, c_body,
             {"Calendly-Webhook-Signature": calendly_signature(CAL_KEY_A, c_body, now)}, 415,
             "unsupported_media_type"),
        Case("calendly oversize body (Content-Length)", cal, b"{" + b" " * 262_144 + b"}",
             cal_headers(b"{}"), 413, "body_too_large"),
        Case("calendly body without payload", cal, raw({"event": "invitee.created"}),
             cal_headers(raw({"event": "invitee.created"})), 400, "missing_fields", ["payload"]),
        Case("calendly handled event without invitee uri",
             cal, raw(calendly_body(payload={"status": "active"})),
             cal_headers(raw(calendly_body(payload={"status": "active"}))), 400, "missing_fields", ["payload.uri"]),
        Case("calendly JSON array", cal, b"[1, 2]", cal_headers(b"[1, 2]"), 400, "not_an_object"),
        Case("ghl JSON string", ghl_a, b'"hello"', ghl_headers(b'"hello"'), 400, "not_an_object"),
        Case("ghl bad signature (other key)", ghl_a, g_body, ghl_headers(g_body, key=GHL_OTHER_KEY), 401,
             "bad_signature"),
        Case("ghl signature of another body reused", ghl_a, g_body,
             {"Content-Type": "application/json", "X-GHL-Signature": ghl_ed25519_signature(GHL_KEY, g_other)}, 401,
             "bad_signature"),
        Case("ghl missing signature", ghl_a, g_body, {"Content-Type": "application/json"}, 401, "missing_signature"),
        Case("ghl malformed signature (not base64)", ghl_a, g_body,
             {"Content-Type": "application/json", "X-GHL-Signature": "!!not base64!!"}, 401, "malformed_signature"),
        Case("ghl timestamp older than 24 h, webhookId never seen", ghl_a,
             raw(b := ghl_body(sent=datetime.now(UTC) - timedelta(hours=24, minutes=1))), ghl_headers(raw(b)), 401,
             "stale_timestamp"),
        Case("ghl timestamp over 5 min in the future", ghl_a,
             raw(b := ghl_body(sent=datetime.now(UTC) + timedelta(minutes=10))), ghl_headers(raw(b)), 401,
             "stale_timestamp"),
        Case("ghl other locationId", ghl_a, raw(b := ghl_body(location="loc-other")), ghl_headers(raw(b)), 403,
             "location_mismatch"),
        Case("ghl legacy RSA signature without a legacy key", ghl_a, g_body,
             {"Content-Type": "application/json", "x-wh-signature": ghl_rsa_signature(RSA_KEY, g_body)}, 401,
             "legacy_signature_disabled"),
        Case("ghl legacy RSA signature of another body", "/webhooks/ghl/ghl-legacy",
             raw(b := ghl_body(location="loc-l")),
             {"Content-Type": "application/json", "x-wh-signature": ghl_rsa_signature(RSA_KEY, g_other)}, 401,
             "bad_signature"),
        Case("ghl without webhookId", ghl_a, raw(b := ghl_body(webhookId=None)), ghl_headers(raw(b)), 400,
             "missing_fields", ["webhookId"]),
        Case("ghl unparseable startTime", ghl_a,
             raw(b := ghl_body(appointment={"id": "x", "startTime": "next tuesday"})), ghl_headers(raw(b)), 400,
             "invalid_field", ["appointment.startTime"]),
        Case("calendly workspace without signing key", "/webhooks/calendly/bare", c_body, cal_headers(c_body), 401,
             "no_key"),
        Case("ghl workspace without public key", "/webhooks/ghl/bare", g_body, ghl_headers(g_body), 401, "no_key"),
        Case("calendly NUL character in a stored field", cal,
             raw(b := calendly_body(payload={**calendly_body()["payload"], "timezone": "Europe/\u0000Paris"})),
             cal_headers(raw(b)), 400, "invalid_field"),
    ]


#: Case names only: the cases themselves are built when each test runs, since their signatures and
#: timestamps must be fresh (Calendly's 180-s tolerance, GHL's 5-min window), not from collection time.
CASE_NAMES = [c.name for c in _cases()]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_and_broken_deliveries_are_refused_and_store_nothing(client: httpx.Client, db: sa.Engine,
                                                                     name: str) -> None:
    case = next(c for c in _cases() if c.name == name)
    resp = client.post(case.path, content=case.body, headers=case.headers)
    assert resp.status_code == case.status, resp.text
    answer = resp.json()
    assert answer["error"] == case.error
    if case.fields is not None:
        assert answer["fields"] == case.fields
    assert stored(db) == []


def test_the_matrix_is_large_enough() -> None:
    assert len(CASE_NAMES) >= 20


def test_oversize_chunked_body_is_refused_without_reading_it_all(client: httpx.Client, db: sa.Engine) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"event": "invitee.created", "pad": "'
        for _ in range(40):  # 40 × 16 KiB = 640 KiB, no Content-Length
            sent += 1
            yield b"x" * 16_384
        yield b'"}'

    resp = client.post("/webhooks/calendly/cal-a", content=chunks(),
                       headers={"Content-Type": "application/json",
                                "Calendly-Webhook-Signature": calendly_signature(CAL_KEY_A, b"{}", int(time.time()))})
    assert resp.status_code == 413
    assert resp.json() == {"error": "body_too_large"}
    assert stored(db) == []
    # the connection stays usable
    assert client.get("/health").status_code == 200


# ------------------------------------------------------------------------------------------ accepted


def test_valid_calendly_delivery_is_stored_pending_without_pii(client: httpx.Client, db: sa.Engine) -> None:
    body = raw(calendly_body(invitee="INV1"))
    resp = client.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "duplicate": False, "status": "pending"}
    [row] = stored(db)
    assert (row.workspace_id, row.provider, row.event_type, row.status) == ("cal-a", "CALENDLY", "invitee.created",
                                                                           "pending")
    for secret in (EMAIL, NAME, "Jane", "415 555", "Host Name", "host@example.com", "meeting_notes", "questions"):
        assert secret not in row.payload
    payload = json.loads(row.payload)
    assert payload["payload"]["uri"].endswith("/invitees/INV1")
    assert payload["payload"]["email_hash"] == email_hash("cal-a", EMAIL)
    assert payload["payload"]["scheduled_event"]["event_type"] == "https://api.calendly.com/event_types/ET1"


def test_valid_ghl_delivery_is_stored_pending_without_pii(client: httpx.Client, db: sa.Engine) -> None:
    body = raw(ghl_body(webhook_id="wh-1"))
    resp = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "duplicate": False, "status": "pending"}
    [row] = stored(db)
    assert (row.workspace_id, row.provider, row.event_type, row.status) == ("ghl-a", "GHL", "AppointmentCreate",
                                                                           "pending")
    for secret in (EMAIL, NAME, "415 555", "Call with", "booking_widget"):
        assert secret not in row.payload
    payload = json.loads(row.payload)
    assert payload["webhookId"] == "wh-1"
    assert payload["appointment"]["calendarId"] == "cal-1"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.calendly+json",
                                          "APPLICATION/JSON"])
def test_json_media_types_with_parameters_or_suffix_are_accepted(client: httpx.Client, db: sa.Engine,
                                                                 content_type: str) -> None:
    body = raw(calendly_body())
    resp = client.post("/webhooks/calendly/cal-a", content=body,
                       headers=cal_headers(body, **{"Content-Type": content_type}))
    assert resp.status_code == 200, resp.text
    assert len(stored(db)) == 1


def test_ghl_delivery_with_epoch_timestamp_is_accepted(client: httpx.Client, db: sa.Engine) -> None:
    epoch_ms = ghl_body()
    epoch_ms["timestamp"] = int(time.time() * 1000)
    body = raw(epoch_ms)
    resp = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert resp.status_code == 200, resp.text
    assert len(stored(db)) == 1


@pytest.mark.parametrize("location", [None, "", "   "])
def test_ghl_delivery_without_location_is_refused_for_a_workspace_with_one(
    client: httpx.Client, db: sa.Engine, location: str | None
) -> None:
    """A signed body that names no location cannot prove it is meant for this workspace's location."""
    body_obj = ghl_body()
    if location is None:
        del body_obj["locationId"]
    else:
        body_obj["locationId"] = location
    body = raw(body_obj)
    resp = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert (resp.status_code, resp.json()["error"]) == (403, "location_mismatch")
    assert stored(db) == []


def test_no_redirect_is_built_from_the_host_header(client: httpx.Client, db: sa.Engine) -> None:
    for path in ("/health/", "/webhooks/calendly/cal-a/", "/openapi.json/"):
        for method in ("GET", "POST"):
            resp = client.request(method, path, headers={"Host": "evil.example"}, content=b"{}")
            assert resp.status_code < 300 or resp.status_code >= 400, (path, method, resp.status_code)
            assert "location" not in resp.headers, (path, method)
            assert "evil.example" not in resp.text


def test_head_health(client: httpx.Client) -> None:
    resp = client.head("/health")
    assert resp.status_code == 200 and resp.content == b""


@pytest.mark.parametrize("provider", ["calendly", "ghl"])
def test_unknown_event_types_are_stored_as_ignored(client: httpx.Client, db: sa.Engine, provider: str) -> None:
    if provider == "calendly":
        body = raw(calendly_body(event="routing_form_submission.created"))
        resp = client.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body))
    else:
        body = raw(ghl_body(kind="ContactCreate"))
        resp = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "duplicate": False, "status": "ignored"}
    [row] = stored(db)
    assert (row.status, row.error) == ("ignored", "unhandled_event")
    assert EMAIL not in row.payload and NAME not in row.payload


def test_duplicate_delivery_is_acknowledged_and_stored_once(client: httpx.Client, db: sa.Engine) -> None:
    c_body = raw(calendly_body(invitee="DUP"))
    g_body = raw(ghl_body(webhook_id="wh-dup"))
    answers = []
    for _ in range(2):
        # Calendly signs every attempt afresh; GHL redelivers the same bytes and signature
        answers.append(client.post("/webhooks/calendly/cal-a", content=c_body, headers=cal_headers(c_body)).json())
        answers.append(client.post("/webhooks/ghl/ghl-a", content=g_body, headers=ghl_headers(g_body)).json())
    assert [a["duplicate"] for a in answers] == [False, False, True, True]
    assert all(a["ok"] for a in answers)
    assert len(stored(db)) == 2


@pytest.mark.parametrize("age", [timedelta(minutes=5, seconds=30), timedelta(minutes=11),
                                 timedelta(hours=23, minutes=59)])
def test_ghl_retry_of_a_never_seen_webhook_id_is_accepted_up_to_24_h_after_its_timestamp(
        client: httpx.Client, db: sa.Engine, age: timedelta) -> None:
    """SPEC §7 revised: GHL retries a 429 about ten minutes later and may keep the original ``timestamp``."""
    body = raw(ghl_body(sent=datetime.now(UTC) - age))
    resp = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "duplicate": False, "status": "pending"}
    # the same delivery again (GHL resends the same bytes): a duplicate, stored once
    again = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert again.json() == {"ok": True, "duplicate": True, "status": "pending"}
    assert [r.status for r in stored(db)] == ["pending"]


def test_a_seen_ghl_webhook_id_is_a_duplicate_whatever_its_age(client: httpx.Client, db: sa.Engine) -> None:
    webhook_id = "wh-seen-" + uuid.uuid4().hex
    first = ghl_body(webhook_id=webhook_id, sent=datetime.now(UTC) - timedelta(hours=2))
    with db.begin() as conn:  # stored when it first arrived (e.g. 29 days ago; kept at least 30 days)
        insert_events(conn, [("ghl-a", stage_ghl(first, workspace_id="ghl-a"))])
        conn.execute(sa.text("UPDATE webhook_events SET received_at = now() - interval '29 days'"))
    for age in (timedelta(hours=25), timedelta(days=29)):
        body = raw({**first, "timestamp": (datetime.now(UTC) - age).isoformat()})
        resp = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"ok": True, "duplicate": True, "status": "pending"}
    # a never-seen webhookId of the same age is stale and stores nothing
    other = raw(ghl_body(sent=datetime.now(UTC) - timedelta(hours=25)))
    resp = client.post("/webhooks/ghl/ghl-a", content=other, headers=ghl_headers(other))
    assert (resp.status_code, resp.json()) == (401, {"error": "stale_timestamp"})
    assert len(stored(db)) == 1
    # a signature that does not verify is refused before the lookup, whatever the webhookId
    resp = client.post("/webhooks/ghl/ghl-a", content=other, headers=ghl_headers(other, key=GHL_OTHER_KEY))
    assert (resp.status_code, resp.json()) == (401, {"error": "bad_signature"})


def test_a_late_ghl_delivery_never_overwrites_newer_data(client: httpx.Client, db: sa.Engine) -> None:
    """A retry accepted hours late goes through §4.1: it is older than ``provider_updated_at``, so it changes
    nothing (here: a late AppointmentCreate after the cancellation of the same appointment)."""
    from appt_pipeline.pipelines.webhook_ingest import ingest_workspace

    lead_id, appt_id, contact = "ghl-a-late-lead", "appt-late-" + uuid.uuid4().hex[:8], "contact-late"
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id, status, ghl_contact_id) "
                             "VALUES (:id, 'ghl-a', 'qualified', :c)"), {"id": lead_id, "c": contact})
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now + timedelta(days=3)).isoformat()

    def body(kind: str, status: str, updated: datetime, sent: datetime) -> bytes:
        b = ghl_body(kind, sent=sent)
        b["appointment"].update(id=appt_id, contactId=contact, appointmentStatus=status, startTime=start,
                                endTime=(now + timedelta(days=3, minutes=30)).isoformat(),
                                dateAdded=(now - timedelta(hours=20)).isoformat(), dateUpdated=updated.isoformat())
        return raw(b)

    try:
        newer = body("AppointmentUpdate", "cancelled", now - timedelta(hours=1), now)
        assert client.post("/webhooks/ghl/ghl-a", content=newer, headers=ghl_headers(newer)).status_code == 200
        assert ingest_workspace(db, "ghl-a").processed == 1
        late = body("AppointmentCreate", "confirmed", now - timedelta(hours=20), now - timedelta(hours=20))
        resp = client.post("/webhooks/ghl/ghl-a", content=late, headers=ghl_headers(late))
        assert resp.json() == {"ok": True, "duplicate": False, "status": "pending"}
        assert ingest_workspace(db, "ghl-a").processed == 1
        [appt] = rows(db, "SELECT status, provider_updated_at FROM appointments WHERE ghl_appointment_id = :a",
                      a=appt_id)
        assert (appt.status, appt.provider_updated_at) == ("CANCELED", now - timedelta(hours=1))
        [lead_row] = rows(db, "SELECT appointment_status FROM leads WHERE id = :id", id=lead_id)
        assert lead_row.appointment_status == "canceled"
    finally:
        with db.begin() as conn:
            conn.execute(sa.text("DELETE FROM follow_up_tasks WHERE lead_id = :id"), {"id": lead_id})
            conn.execute(sa.text("DELETE FROM leads WHERE id = :id"), {"id": lead_id})


def test_same_event_for_two_workspaces_is_not_a_duplicate(client: httpx.Client, db: sa.Engine) -> None:
    body = raw(calendly_body(invitee="SHARED"))
    assert client.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body)).json()["duplicate"] is False
    assert client.post("/webhooks/calendly/cal-b", content=body,
                       headers=cal_headers(body, key=CAL_KEY_B)).json()["duplicate"] is False
    assert len(stored(db)) == 2


def test_legacy_rsa_signature_is_accepted_when_the_legacy_key_is_configured(client: httpx.Client,
                                                                            db: sa.Engine) -> None:
    body = raw(ghl_body(location="loc-l"))
    resp = client.post("/webhooks/ghl/ghl-legacy", content=body,
                       headers={"Content-Type": "application/json", "x-wh-signature": ghl_rsa_signature(RSA_KEY, body)})
    assert resp.status_code == 200, resp.text
    # the current Ed25519 header keeps working for that workspace too
    body2 = raw(ghl_body(location="loc-l"))
    assert client.post("/webhooks/ghl/ghl-legacy", content=body2, headers=ghl_headers(body2)).status_code == 200
    assert [r.workspace_id for r in stored(db)] == ["ghl-legacy", "ghl-legacy"]


def test_concurrent_deliveries_are_group_committed_and_all_stored(server: SimulatorServer, client: httpx.Client,
                                                                  db: sa.Engine) -> None:
    service = server.app.state.service
    groups_before = service.writer.groups
    bodies = [raw(calendly_body()) for _ in range(150)]
    bodies += bodies[:30]  # 30 redeliveries racing their originals

    def send(body: bytes) -> int:
        return client.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body)).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, bodies))
    assert statuses == [200] * len(bodies)
    assert len(stored(db)) == 150
    assert service.writer.groups - groups_before < 150  # rows shared transactions (group commit)


def test_health_and_openapi(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": "ok", "webhook_keys": "ok",
                                            "broken_webhook_keys": {}}
    doc = client.get("/openapi.json").json()
    for path, codes in (("/webhooks/calendly/{workspace_id}", {"200", "400", "401", "404", "413", "415", "503"}),
                        ("/webhooks/ghl/{workspace_id}", {"200", "400", "401", "403", "404", "413", "415", "429"})):
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
        assert codes <= set(op["responses"])
    assert client.get("/no/such/route").json() == {"error": "not_found"}


def test_health_is_503_when_the_database_is_unreachable() -> None:
    settings = ServiceSettings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                               secret_key=SECRET_KEY, pool_timeout_s=0.5, connect_timeout_s=1)
    with SimulatorServer(create_app(settings)) as srv, httpx.Client(base_url=srv.base_url, timeout=10) as c:
        resp = c.get("/health")
        assert resp.status_code == 503
        assert resp.json() == {"status": "unavailable", "database": "unavailable", "webhook_keys": "unknown",
                               "broken_webhook_keys": {}}
        body = raw(calendly_body())
        resp = c.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body))
        assert (resp.status_code, resp.headers["Retry-After"], resp.json()) == (503, "5",
                                                                                {"error": "database_unavailable"})
        body = raw(ghl_body())
        resp = c.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
        assert (resp.status_code, resp.headers["Retry-After"]) == (429, "5")


def test_settings_refuse_a_missing_database_url_or_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPT_DATABASE_URL", raising=False)
    with pytest.raises(ServiceConfigError, match="APPT_DATABASE_URL is not set"):
        create_app(ServiceSettings(secret_key=SECRET_KEY))
    with pytest.raises(ServiceConfigError, match="APPT_SECRET_KEY"):
        create_app(ServiceSettings(database_url="postgresql://postgres@127.0.0.1/x", secret_key=None))
    with pytest.raises(ServiceConfigError, match="must be a PostgreSQL URL"):
        create_app(ServiceSettings(database_url="sqlite:///x.db", secret_key=SECRET_KEY))
    with pytest.raises(ServiceConfigError, match="cannot be parsed") as refused:
        create_app(ServiceSettings(database_url="not a url:hunter2", secret_key=SECRET_KEY))
    assert "hunter2" not in str(refused.value)
    settings = ServiceSettings(database_url="postgresql+psycopg://u:hunter2@db.example:5432/appt",
                               secret_key=SECRET_KEY)
    assert settings.conninfo() == "postgresql://u:hunter2@db.example:5432/appt"
    assert "hunter2" not in settings.describe() and "hunter2" not in repr(settings)
    assert SECRET_KEY not in repr(settings)


def test_the_store_insert_keeps_every_field_and_masks_free_text(db: sa.Engine) -> None:
    """``store.webhook_events.insert_events`` (the statement the service's group commit runs) stores each staged
    field as staged: unicode, offsets normalised to UTC, ignored rows processed at once, no PII."""
    canceled = calendly_body(event="invitee.canceled")
    canceled["payload"].update(status="canceled", timezone="Europe/Zürich",
                               cancellation={"canceler_type": "invitee", "reason": "Désolé ☃ — call me at "
                                             f"{PHONE} or {EMAIL}", "created_at": "2026-03-02T09:00:00+01:00"})
    staged = [
        ("cal-a", stage_calendly(calendly_body(), workspace_id="cal-a")),
        ("cal-a", stage_calendly(canceled, workspace_id="cal-a")),
        ("cal-a", stage_calendly({"event": "routing_form_submission.created", "payload": {}}, workspace_id="cal-a")),
        ("ghl-a", stage_ghl(ghl_body(), workspace_id="ghl-a")),
        ("ghl-a", stage_ghl(ghl_body(kind="ContactCreate"), workspace_id="ghl-a")),
    ]
    assert staged[2][1].provider_created_at is None and staged[4][1].status == "ignored"
    with db.begin() as conn:
        assert len(insert_events(conn, staged)) == len(staged)
        assert insert_events(conn, staged) == set()  # all duplicates now
    query = ("SELECT workspace_id, provider::text, event_type, dedupe_key, provider_created_at, payload, status, "
             "error, processed_at IS NULL FROM webhook_events ORDER BY dedupe_key")
    stored = {r[3]: tuple(r) for r in rows(db, query)}
    for ws, event in staged:
        row = stored[event.dedupe_key]
        assert row[:5] == (ws, event.provider.value, event.event_type, event.dedupe_key, event.provider_created_at)
        assert row[5] == event.payload and row[6:] == (event.status, event.error, event.status == "pending")
    reason = stored[staged[1][1].dedupe_key][5]["payload"]["cancellation"]["reason"]
    assert reason.startswith("Désolé ☃") and EMAIL not in reason and PHONE not in reason


def test_unusable_stored_keys_are_an_honest_retryable_error_of_that_provider_only(client: httpx.Client,
                                                                                 db: sa.Engine) -> None:
    """A key encrypted with another APPT_SECRET_KEY, or a stored public key that does not parse, is an operator
    error: ``webhook_key_invalid`` with 503 (Calendly) / 429 (GHL) so the provider retries until it is fixed —
    and a broken key of one provider never blocks the other provider's deliveries (issue 10 item 4)."""
    from cryptography.fernet import Fernet

    seed(db, "cal-rotated", leads=0)
    set_secret(db, "cal-rotated", "calendly_webhook_signing_key", CAL_KEY_A, Fernet.generate_key().decode())
    seed(db, "ghl-garbled", leads=0)
    set_secret(db, "ghl-garbled", "ghl_webhook_public_key", "not a key", SECRET_KEY)
    # a workspace with both providers: its GHL key is broken, its Calendly key is fine
    seed(db, "both", leads=0)
    set_secret(db, "both", "ghl_webhook_public_key", "not a key", SECRET_KEY)
    set_secret(db, "both", "calendly_webhook_signing_key", CAL_KEY_A, SECRET_KEY)
    body = raw(calendly_body())
    resp = client.post("/webhooks/calendly/cal-rotated", content=body, headers=cal_headers(body))
    assert (resp.status_code, resp.json(), resp.headers["Retry-After"]) == (503, {"error": "webhook_key_invalid"},
                                                                            "5")
    body = raw(ghl_body())
    for ws in ("ghl-garbled", "both"):
        resp = client.post(f"/webhooks/ghl/{ws}", content=body, headers=ghl_headers(body))
        assert (resp.status_code, resp.json()) == (429, {"error": "webhook_key_invalid"})
    assert stored(db) == []
    body = raw(calendly_body())
    resp = client.post("/webhooks/calendly/both", content=body, headers=cal_headers(body))
    assert resp.status_code == 200, resp.text
    assert len(stored(db)) == 1
    # /health tells the operator, with counts per provider and no workspace ids (it is unauthenticated)
    settings = ServiceSettings(database_url=str(db.url.render_as_string(hide_password=False)), secret_key=SECRET_KEY,
                               cache_ttl_s=0.0)
    with SimulatorServer(create_app(settings)) as srv, httpx.Client(base_url=srv.base_url, timeout=10) as c:
        resp = c.get("/health")
        assert (resp.status_code, resp.json()) == (200, {"status": "degraded", "database": "ok",
                                                         "webhook_keys": "degraded",
                                                         "broken_webhook_keys": {"GHL": 2, "CALENDLY": 1}})
        for ws in ("cal-rotated", "ghl-garbled", "both"):
            with db.begin() as conn:
                conn.execute(sa.text("DELETE FROM workspace_secrets WHERE workspace_id = :ws"), {"ws": ws})
        assert c.get("/health").json()["status"] == "ok"  # fixed keys are seen after cache_ttl_s


def test_workspace_deleted_after_it_was_cached_is_unknown_and_nothing_is_stored(client: httpx.Client,
                                                                              db: sa.Engine) -> None:
    seed(db, "doomed", leads=0)
    set_secret(db, "doomed", "calendly_webhook_signing_key", CAL_KEY_A, SECRET_KEY)
    first = raw(calendly_body())
    assert client.post("/webhooks/calendly/doomed", content=first, headers=cal_headers(first)).status_code == 200
    with db.begin() as conn:  # the key cache still knows the workspace: the insert hits the foreign key
        conn.execute(sa.text("DELETE FROM workspaces WHERE id = 'doomed'"))
    body = raw(calendly_body())
    resp = client.post("/webhooks/calendly/doomed", content=body, headers=cal_headers(body))
    assert (resp.status_code, resp.json()) == (404, {"error": "unknown_workspace"})
    assert stored(db) == []



@pytest.mark.parametrize("workers", [1, 2])
def test_cli_serve_runs_the_service_and_stops_cleanly(database_url: str, db: sa.Engine, tmp_path: Any,
                                                      workers: int) -> None:
    """``appt-pipeline serve`` (lifespan, uvloop, httptools; an app factory per worker with --workers 2)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    port = free_port()
    env = {**os.environ, "APPT_DATABASE_URL": database_url, "APPT_SECRET_KEY": SECRET_KEY,
           "APPT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    exe = Path(sys.executable).with_name("appt-pipeline")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--workers", str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "service did not become healthy"
            time.sleep(0.2)
        body = raw(ghl_body())
        resp = httpx.post(f"http://127.0.0.1:{port}/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
        assert resp.status_code == 200, resp.text
        assert "server" not in resp.headers
        if workers == 1:
            _hostile_connections_are_cut(port, proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode in (0, -signal.SIGTERM), out  # uvicorn re-raises the signal after a graceful shutdown
    assert "Application shutdown complete" in out or workers > 1
    assert len(stored(db)) == 1
    assert SECRET_KEY not in out and "hunter" not in out


def _hostile_connections_are_cut(port: int, pid: int) -> None:
    """A 100 MB header is refused (431) without growing the process; a client that sends half a request
    line and stalls is answered 408 and dropped once the header timeout (10 s) passes."""
    import socket

    import psutil

    service = psutil.Process(pid)
    rss_before = service.memory_info().rss
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/ghl/ghl-a HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk, sent, answer = b"a" * 65536, 0, b""
        try:
            while sent < 100 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the service closed the connection
            pass
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:80]
    assert sent < 100 * 1024 * 1024, "the service read a 100 MB header"
    assert service.memory_info().rss - rss_before < 32 * 1024 * 1024
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /webhooks/ghl/ghl-a HT")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert 9 <= time.monotonic() - started < 15
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


def test_cli_serve_refuses_to_start_without_a_secret_key(database_url: str, tmp_path: Any) -> None:
    import os

    from click.testing import CliRunner

    from appt_pipeline.cli import main

    env = {"APPT_DATABASE_URL": database_url, "APPT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dh")}
    old = os.environ.pop("APPT_SECRET_KEY", None)
    try:
        result = CliRunner().invoke(main, ["serve", "--port", "0"], env=env)
    finally:
        if old is not None:
            os.environ["APPT_SECRET_KEY"] = old
    assert result.exit_code == 2, result.output
    assert "APPT_SECRET_KEY" in result.output


def test_one_app_can_be_served_again_after_its_server_stopped(database_url: str, workspaces: sa.Engine) -> None:
    app = create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY))
    for _ in range(2):  # a new event loop and a new pool each time
        with SimulatorServer(app) as srv, httpx.Client(base_url=srv.base_url, timeout=10) as c:
            bodies = [raw(ghl_body()) for _ in range(5)]
            with ThreadPoolExecutor(5) as pool:  # concurrent first requests share one start
                statuses = list(pool.map(
                    lambda b: c.post("/webhooks/ghl/ghl-a", content=b, headers=ghl_headers(b)).status_code, bodies))
            assert statuses == [200] * 5
            assert c.get("/health").status_code == 200


# ------------------------------------------------------------------- hostile content (issue 10 item 2)

OUT_OF_RANGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1899-12-31T23:59:59Z",
                      "2200-01-01T00:00:00Z"]
_CAL_TIME_FIELDS = [("created_at",), ("payload", "updated_at"), ("payload", "created_at"),
                    ("payload", "scheduled_event", "start_time"), ("payload", "scheduled_event", "end_time")]
_GHL_TIME_FIELDS = [("timestamp",), ("appointment", "startTime"), ("appointment", "endTime"),
                    ("appointment", "dateAdded"), ("appointment", "dateUpdated")]


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def _count(engine: sa.Engine) -> int:
    return int(rows(engine, "SELECT count(*) AS n FROM webhook_events")[0].n)


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
def test_out_of_range_times_are_a_400_and_store_nothing(client: httpx.Client, db: sa.Engine, when: str) -> None:
    """A signed delivery with a time Python cannot convert to UTC (or no real appointment has) is a clear 400,
    never a 500 that the provider would retry for a day; nothing is stored."""
    for path in _CAL_TIME_FIELDS:
        body = raw(_set(calendly_body(), path, when))
        r = client.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body))
        assert r.status_code == 400, (path, r.text)
    for path in _GHL_TIME_FIELDS:
        body = raw(_set(ghl_body(), path, when))
        r = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
        assert r.status_code in (400, 401), (path, r.text)  # an out-of-range `timestamp` is also stale: 401
    assert stored(db) == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.sampled_from([*OUT_OF_RANGE_TIMES, "2026-03-05T15:00:00Z", "", "active", "canceled", "confirmed"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
_CAL_FIELDS = [("event",), ("created_at",), *[("payload", k) for k in (
    "uri", "status", "rescheduled", "old_invitee", "new_invitee", "cancellation", "no_show", "timezone", "email",
    "event", "created_at", "updated_at", "scheduled_event", "invitee")],
    *[("payload", "scheduled_event", k) for k in ("uri", "start_time", "end_time", "event_type", "status")]]
_GHL_FIELDS = [("type",), ("locationId",), ("webhookId",), ("timestamp",), ("appointment",),
               *[("appointment", k) for k in ("id", "calendarId", "contactId", "appointmentStatus", "startTime",
                                              "endTime", "dateAdded", "dateUpdated", "deleted")]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(provider=st.sampled_from(["calendly", "ghl"]), data=st.data())
def test_fuzzed_signed_deliveries_never_500_and_rejected_bodies_store_nothing(
    client: httpx.Client, db: sa.Engine, provider: str, data: st.DataObject
) -> None:
    """Hypothesis puts arbitrary JSON values into every field the staging whitelist reads, signs the body,
    and posts it: the answer is never a 5xx, and a refused body adds no row."""
    fields = data.draw(st.lists(st.sampled_from(_CAL_FIELDS if provider == "calendly" else _GHL_FIELDS),
                                min_size=1, max_size=3, unique=True))
    body_obj = calendly_body() if provider == "calendly" else ghl_body()
    for path in fields:
        with contextlib.suppress(TypeError, KeyError):  # a parent replaced by a non-object: the field is gone
            _set(body_obj, path, data.draw(_JSON))
    body = raw(body_obj)
    before = _count(db)
    if provider == "calendly":
        r = client.post("/webhooks/calendly/cal-a", content=body, headers=cal_headers(body))
    else:
        r = client.post("/webhooks/ghl/ghl-a", content=body, headers=ghl_headers(body))
    assert r.status_code < 500, r.text
    if r.status_code >= 300:
        assert _count(db) == before
