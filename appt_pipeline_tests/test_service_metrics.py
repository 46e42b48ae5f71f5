"""``GET /metrics`` of the intake service (docs/operations.md §3) over real HTTP against the real database, and the
staging backlog as observations of ``webhook_events`` (``webhook_backlog_sensor``)."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase
from appt_pipeline.defs.sensors import webhook_backlog_sensor
from appt_pipeline.domain.signatures import ghl_ed25519_signature, public_key_text
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers import SECRET_KEY, seed
from appt_pipeline_tests.helpers.webhooks import calendly_body, deliver, with_email

KEY = Ed25519PrivateKey.generate()
WS = "ghl-m"
PHONE = "+1 415 555 0199"


def ghl_delivery(**extra: Any) -> bytes:
    return json.dumps({"type": "AppointmentCreate", "locationId": "loc-m", "webhookId": uuid.uuid4().hex,
                       "timestamp": datetime.now(UTC).isoformat(),
                       "appointment": {"id": "a-" + uuid.uuid4().hex[:8], "contactId": "c1", "notes": PHONE,
                                       "appointmentStatus": "confirmed"}, **extra}).encode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture()
def server(db: sa.Engine, database_url: str) -> Iterator[SimulatorServer]:
    seed(db, WS, leads=0)
    set_workspace(db, WS, {"ghl_location_id": "loc-m"})
    set_secret(db, WS, "ghl_webhook_public_key", public_key_text(KEY.public_key()), SECRET_KEY)
    with SimulatorServer(create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY))) as srv:
        yield srv


def test_metrics_count_deliveries_signature_failures_latency_and_the_backlog(server: SimulatorServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        ok = ghl_delivery()
        headers = {"Content-Type": "application/json", "X-GHL-Signature": ghl_ed25519_signature(KEY, ok)}
        assert c.post(f"/webhooks/ghl/{WS}", content=ok, headers=headers).status_code == 200
        forged = ghl_delivery()
        assert c.post(f"/webhooks/ghl/{WS}", content=forged, headers=headers).status_code == 401  # other body
        assert c.post("/webhooks/ghl/nope", content=ok, headers=headers).status_code == 404
        assert c.get("/health").status_code == 200
        assert c.get("/no/such/path").status_code == 404
        resp = c.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    m = samples(resp.text)
    assert m[("appt_webhook_deliveries_total", (("provider", "GHL"), ("status", "200")))] == 1
    assert m[("appt_webhook_deliveries_total", (("provider", "GHL"), ("status", "401")))] == 1
    assert m[("appt_webhook_deliveries_total", (("provider", "GHL"), ("status", "404")))] == 1
    assert m[("appt_webhook_signature_failures_total", (("provider", "GHL"), ("reason", "bad_signature")))] == 1
    route = (("method", "POST"), ("route", "/webhooks/ghl/{workspace_id}"))
    assert m[("appt_http_request_duration_seconds_count", route)] == 3
    assert m[("appt_http_request_duration_seconds_count", (("method", "GET"), ("route", "/health")))] == 1
    assert m[("appt_http_request_duration_seconds_count", (("method", "GET"), ("route", "other")))] == 1
    assert m[("appt_webhook_staging_backlog", (("workspace", WS),))] == 1
    assert 0 <= m[("appt_webhook_staging_oldest_pending_age_seconds", (("workspace", WS),))] < 60
    assert m[("appt_webhook_staging_scrape_ok", ())] == 1
    assert not any(name == "appt_database_errors_total" for name, _ in m)  # no error yet: no sample
    assert PHONE not in resp.text and "loc-m" not in resp.text and "c1" not in resp.text


def test_metrics_count_database_errors_and_still_answer_without_the_database() -> None:
    settings = ServiceSettings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                               secret_key=SECRET_KEY, pool_timeout_s=0.5, connect_timeout_s=1)
    with SimulatorServer(create_app(settings)) as srv, httpx.Client(base_url=srv.base_url, timeout=10) as c:
        body = ghl_delivery()
        resp = c.post(f"/webhooks/ghl/{WS}", content=body,
                      headers={"Content-Type": "application/json", "X-GHL-Signature": ghl_ed25519_signature(KEY, body)})
        assert resp.status_code == 429
        assert c.get("/health").json()["database"] == "unavailable"
        metrics = c.get("/metrics")
    assert metrics.status_code == 200
    m = samples(metrics.text)
    assert m[("appt_webhook_deliveries_total", (("provider", "GHL"), ("status", "429")))] == 1
    assert sum(v for (name, _), v in m.items() if name == "appt_database_errors_total") >= 2
    assert m[("appt_webhook_staging_scrape_ok", ())] == 0


def test_backlog_sensor_observes_webhook_events_per_workspace(db: sa.Engine, database_url: str) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    seed(db, "ws2", leads=0)
    deliver(db, "ws1", calendly_body("invitee.created", "b1"), calendly_body("invitee.created", "b2"))
    resources = {"app_db": AppDatabase(url=database_url)}

    def tick(instance: dg.DagsterInstance, cursor: str | None) -> Any:
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
            return webhook_backlog_sensor(ctx)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["ws1", "ws2"])
        first = tick(instance, None)
        [obs] = first.asset_events
        assert (obs.asset_key, obs.partition) == (dg.AssetKey("webhook_events"), "ws1")
        assert obs.metadata["pending"].value == 2 and obs.metadata["oldest_pending_age_s"].value >= 0
        assert first.run_requests == [] and json.loads(first.cursor) == ["ws1"]
        with db.begin() as conn:
            conn.execute(sa.text("UPDATE webhook_events SET status = 'processed', processed_at = now()"))
        drained = tick(instance, first.cursor)
        [zero] = drained.asset_events
        assert zero.partition == "ws1" and zero.metadata["pending"].value == 0
        assert isinstance(tick(instance, drained.cursor), dg.SkipReason)
