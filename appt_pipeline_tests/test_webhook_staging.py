"""The staging whitelist (SPEC §7, §11): what a delivery becomes in ``webhook_events`` — pure, no I/O."""

import json

import pytest

from appt_pipeline.domain.webhook_staging import (
    REASON_UNHANDLED,
    STATUS_IGNORED,
    WebhookPayloadError,
    email_hash,
    stage_calendly,
    stage_ghl,
)
from appt_pipeline_tests.helpers import PROVIDER_FIXTURES
from appt_pipeline_tests.helpers.webhooks import calendly_body, ghl_body

FIXTURES = PROVIDER_FIXTURES
UUID_URI = ("https://api.calendly.com/scheduled_events/f37d3e91-2688-473f-a6c9-9fc1b912fdc5/invitees/"
            "76d09c5b-e8f1-41f3-9607-19af08cf86ba")


def test_ids_and_uris_are_kept_verbatim_even_when_their_digits_look_like_a_phone_number() -> None:
    body = calendly_body("invitee.created", "x")
    body["payload"]["uri"] = UUID_URI
    staged = stage_calendly(body, workspace_id="ws1")
    assert staged.payload["payload"]["uri"] == UUID_URI


@pytest.mark.parametrize("field", ["uri", "old_invitee", "timezone"])
def test_an_id_field_holding_an_email_is_refused(field: str) -> None:
    body = calendly_body("invitee.created", "x")
    body["payload"][field] = "someone@example.com"
    with pytest.raises(WebhookPayloadError) as err:
        stage_calendly(body, workspace_id="ws1")
    assert err.value.reason == "invalid_field" and err.value.fields == (f"payload.{field}",)


def test_calendly_payload_keeps_only_whitelisted_fields_and_hashes_the_email() -> None:
    staged = stage_calendly(calendly_body("invitee.canceled", "i1", status="canceled"), workspace_id="ws1")
    text = json.dumps(staged.payload)
    for pii in ("Jane", "Roe", "jane.roe@example.com", "host@example.com", "Hank", "555", "Anything else"):
        assert pii not in text
    inv = staged.payload["payload"]
    assert inv["email_hash"] == email_hash("ws1", "jane.roe@example.com")
    assert inv["cancellation"] == {"canceler_type": "invitee", "reason": "Conflict, mail [redacted-email]",
                                   "created_at": "2026-03-01T10:00:00Z"}
    assert set(inv) == {"uri", "status", "event", "rescheduled", "timezone", "created_at", "updated_at",
                        "cancellation", "email_hash", "scheduled_event"}
    assert set(inv["scheduled_event"]) == {"uri", "status", "event_type", "start_time", "end_time"}


def test_email_hash_is_salted_by_workspace_and_normalised() -> None:
    assert email_hash("ws1", " A@B.com ") == email_hash("ws1", "a@b.com") != email_hash("ws2", "a@b.com")


def test_dedupe_keys_tell_redeliveries_from_new_events() -> None:
    a = stage_calendly(calendly_body("invitee.created", "i1"), workspace_id="ws1")
    assert a.dedupe_key == stage_calendly(calendly_body("invitee.created", "i1"), workspace_id="ws1").dedupe_key
    assert a.dedupe_key != stage_calendly(calendly_body("invitee.created", "i1"), workspace_id="ws2").dedupe_key
    assert a.dedupe_key != stage_calendly(calendly_body("invitee.canceled", "i1", status="canceled"),
                                          workspace_id="ws1").dedupe_key
    g = ghl_body("AppointmentCreate", "g1")
    assert stage_ghl(g, workspace_id="ws1").dedupe_key == stage_ghl(dict(g), workspace_id="ws1").dedupe_key


def test_ghl_payload_drops_title_notes_address_and_needs_delivery_fields() -> None:
    staged = stage_ghl(ghl_body("AppointmentCreate", "g1"), workspace_id="ws1")
    assert set(staged.payload["appointment"]) == {"id", "calendarId", "contactId", "appointmentStatus", "startTime",
                                                  "endTime", "dateAdded", "dateUpdated"}
    for missing in ("type", "webhookId", "timestamp"):
        body = ghl_body("AppointmentCreate", "g1")
        del body[missing]
        with pytest.raises(WebhookPayloadError, match=missing):
            stage_ghl(body, workspace_id="ws1")
    body = ghl_body("AppointmentCreate", "g1")
    del body["appointment"]["id"]
    with pytest.raises(WebhookPayloadError, match=r"appointment\.id"):
        stage_ghl(body, workspace_id="ws1")


def test_unhandled_events_are_staged_ignored_with_reason() -> None:
    staged = stage_calendly({"event": "routing_form_submission.created", "created_at": "2026-03-01T10:00:00Z",
                             "payload": {"questions_and_answers": [{"answer": "secret"}]}}, workspace_id="ws1")
    assert (staged.status, staged.error) == (STATUS_IGNORED, REASON_UNHANDLED)
    assert "secret" not in json.dumps(staged.payload)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("calendly.invitee_c*.json")))
def test_every_shipped_calendly_webhook_fixture_stages(name: str) -> None:
    staged = stage_calendly(json.loads((FIXTURES / name).read_text()), workspace_id="ws1")
    assert staged.payload["payload"]["uri"].startswith("https://api.calendly.com/scheduled_events/")
    assert "example.com" not in json.dumps(staged.payload)
