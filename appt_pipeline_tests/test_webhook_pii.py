"""SPEC §11 end to end: every shipped provider fixture that carries a booking goes through the real intake service
(signed, over HTTP on loopback) and through ingestion; afterwards neither a ``pg_dump`` of the database nor the
captured logs contain any e-mail, name, phone number or answer text from the fixtures."""

import json
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.signatures import calendly_signature, ghl_ed25519_signature, public_key_text
from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.pipelines.webhook_ingest import ingest_workspace
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service.app import create_app
from appt_pipeline.service.settings import ServiceSettings
from appt_pipeline.store.embedded import libpq_conninfo
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import PROVIDER_FIXTURES, SECRET_KEY, rows, seed

FIXTURES = PROVIDER_FIXTURES
PII_KEYS = {"email", "user_email", "name", "first_name", "last_name", "user_name", "canceled_by",
            "text_reminder_number", "answer", "question", "notes", "title", "phone", "address"}
NOT_PII = {"15 Minute Meeting", "Company Name", "Number of employees", "Multi-Select Question", "Phone Number",
           "What would you like to discuss?"}  # event type / question *labels* of the host's forms, not answers
SIGNING_KEY = "fixture-signing-key"
GHL_KEY = Ed25519PrivateKey.generate()
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def pii_values(obj: Any, key: str = "") -> set[str]:
    """Every string under a PII key, and every e-mail-looking substring anywhere."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= pii_values(v, k)
    elif isinstance(obj, list):
        for v in obj:
            out |= pii_values(v, key)
    elif isinstance(obj, str):
        out |= set(EMAIL.findall(obj))
        if key in PII_KEYS and obj.strip() and obj not in NOT_PII and not obj.startswith("https://"):
            out.add(obj.strip())
    return out


def calendly_deliveries() -> list[dict[str, Any]]:
    """The webhook fixtures as shipped, plus every invitee resource of the API fixtures wrapped as a delivery."""
    out = [_load(p.name) for p in sorted(FIXTURES.glob("calendly.invitee_c*.json"))]
    event = _load("calendly.scheduled_event.json")["resource"]
    invitees = [_load("calendly.invitee_get.json")["resource"], _load("calendly.invitee_get.canceled.json")["resource"],
                *_load("calendly.invitees_list.json")["collection"]]
    for invitee in invitees:
        kind = "invitee.canceled" if invitee.get("status") == "canceled" else "invitee.created"
        out.append({"event": kind, "created_at": invitee.get("updated_at"), "payload": {**invitee,
                                                                                       "scheduled_event": event}})
    return out


def ghl_deliveries(location: str) -> list[dict[str, Any]]:
    out = [_load(p.name) for p in sorted(FIXTURES.glob("ghl.webhook.*.json"))]
    listed = _load("ghl.contact_appointments.assembled_from_spec_field_examples.json")
    for appt in listed.get("events") or listed.get("appointments") or []:
        out.append({"type": "AppointmentCreate", "locationId": location, "appointment": appt})
    now = datetime.now(UTC).isoformat()
    return [{**body, "locationId": location, "webhookId": str(uuid.uuid4()), "timestamp": now} for body in out]


@pytest.fixture()
def service(db: sa.Engine, database_url: str) -> Iterator[str]:
    settings = ServiceSettings(database_url=database_url, secret_key=SECRET_KEY)
    with SimulatorServer(create_app(settings)) as srv:
        yield srv.base_url


def test_fixtures_through_intake_and_ingestion_leave_no_pii_at_rest_or_in_logs(
    db: sa.Engine, database_url: str, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    location = _load("ghl.webhook.appointment_create.json")["locationId"]
    [cal_lead] = seed(db, "wsc", leads=1)
    [ghl_lead] = seed(db, "wsg", leads=1)
    set_workspace(db, "wsc", {"meeting_booking_provider": "CALENDLY"})
    set_workspace(db, "wsg", {"ghl_location_id": location})
    set_secret(db, "wsc", "calendly_webhook_signing_key", SIGNING_KEY, SECRET_KEY)
    set_secret(db, "wsg", "ghl_webhook_public_key", public_key_text(GHL_KEY.public_key()), SECRET_KEY)
    calendly = calendly_deliveries()
    ghl = ghl_deliveries(location)
    # the leads are known by provider keys only (no e-mail stored): the fixtures' invitees and contacts
    invitee_uris = {d["payload"]["uri"] for d in calendly}
    write_observations(db, [Observation(workspace_id="wsc", lead_id=cal_lead, provider=Provider.CALENDLY,
                                        status=Status.CONFIRMED, source=Source.RECONCILE_CRON,
                                        calendly_invitee_uri=uri) for uri in sorted(invitee_uris)])
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET ghl_contact_id = :c WHERE id = :id"),
                     {"c": ghl[0]["appointment"]["contactId"], "id": ghl_lead})

    answers = []
    with httpx.Client(base_url=service, timeout=10) as client:
        for body in calendly:
            raw = json.dumps(body).encode()
            answers.append(client.post("/webhooks/calendly/wsc", content=raw, headers={
                "Content-Type": "application/json",
                "Calendly-Webhook-Signature": calendly_signature(SIGNING_KEY, raw, int(time.time()))}).status_code)
        for body in ghl:
            raw = json.dumps(body).encode()
            answers.append(client.post("/webhooks/ghl/wsg", content=raw, headers={
                "Content-Type": "application/json",
                "X-GHL-Signature": ghl_ed25519_signature(GHL_KEY, raw)}).status_code)
    assert answers == [200] * len(answers)
    reports = [ingest_workspace(db, "wsc"), ingest_workspace(db, "wsg")]
    assert all(r.failed == 0 and r.processed > 0 for r in reports), reports
    assert rows(db, "SELECT count(*) FROM webhook_events WHERE status = 'pending'")[0][0] == 0

    pii = set().union(*(pii_values(b) for b in calendly + ghl))
    assert {"test@example.com", "John Doe"} <= pii and len(pii) > 10  # the check below has something to find
    dump = _dump(database_url)
    assert "webhook_events" in dump and "AAAAAAAAAAAAAAAA" in dump  # the rows are in the dump
    logs = caplog.text
    for value in sorted(pii):
        whole = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)  # "Address" ≠ "local_address"
        assert not whole.search(dump), f"PII at rest: {value!r}"
        assert not whole.search(logs), f"PII in logs: {value!r}"


def _dump(database_url: str) -> str:
    """``pg_dump --data-only`` of the test database (every app table, as text)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is not None:
        result = subprocess.run([pg_dump, "--data-only", "--no-owner", "-d", libpq_conninfo(database_url)],
                                capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return result.stdout
    # no client binaries (or a server newer than them): the same data through SQL
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        tables = [r[0] for r in conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
        text = "\n".join(str(tuple(r)) for t in tables for r in conn.execute(sa.text(f'SELECT * FROM "{t}"')))
    engine.dispose()
    return "webhook_events\n" + text
