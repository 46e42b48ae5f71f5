"""Every published provider payload in ``appt_pipeline_tests/fixtures/providers`` parses; appointments and invitees
normalise to valid observations (issue 3 item 1; SPEC §2, §4, §7).

The test is parametrized over the directory, so a fixture added later is covered without a code change:
its kind is recognised from its shape (GHL wrappers, lists, free-slot maps, webhooks; Calendly
``{resource}``, ``{collection, pagination}``, webhook envelopes, errors and request bodies).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.vocab import Source, Status
from appt_pipeline.providers.normalize import (
    calendly_observation,
    ghl_observation,
    parse_calendly_available_times,
    parse_calendly_event,
    parse_calendly_event_type,
    parse_calendly_invitee,
    parse_calendly_page,
    parse_calendly_user,
    parse_calendly_webhook,
    parse_ghl_appointment,
    parse_ghl_appointment_list,
    parse_ghl_free_slots,
    parse_ghl_webhook,
)
from appt_pipeline_tests.helpers import PROVIDER_FIXTURES

FIXTURES = PROVIDER_FIXTURES
FILES = sorted(FIXTURES.glob("*.json"))
CTX = {"workspace_id": "ws-fixture", "lead_id": "lead-fixture", "source": Source.RECONCILE_CRON}

#: Statuses we know the shipped fixtures must produce (other files: any valid observation).
EXPECTED_STATUS = {
    "calendly.invitee_created.json": [Status.CONFIRMED],
    "calendly.invitee_created.docs_with_scheduled_event.json": [Status.CONFIRMED],
    "calendly.invitee_canceled.json": [Status.CANCELED],
    "calendly.invitee_canceled.docs_with_scheduled_event.json": [Status.CANCELED],
    "calendly.invitee_get.json": [Status.CONFIRMED],
    "calendly.invitee_get.canceled.json": [Status.CANCELED],
    "calendly.invitees_list.json": [Status.CONFIRMED],
    "ghl.webhook.appointment_create.json": [Status.CONFIRMED],
    "ghl.contact_appointments.assembled_from_spec_field_examples.json": [Status.CONFIRMED],
}


def _is_invitee_uri(uri: Any) -> bool:
    return isinstance(uri, str) and "/invitees/" in uri


def parse_ghl_fixture(name: str, body: Any) -> list[Observation]:
    """Parse one GHL payload by shape; returns the observations it yields (may be none)."""
    assert isinstance(body, Mapping), f"{name}: GHL payloads are JSON objects"
    if "succeeded" in body:  # DELETE /calendars/events/{id}
        assert body["succeeded"] is True
        return []
    if "statusCode" in body or ("message" in body and not any(k in body for k in ("id", "appointment", "event"))):
        assert body.get("message"), f"{name}: error body without message"
        return []
    if "type" in body and "appointment" in body:  # webhook
        hook = parse_ghl_webhook(body)
        assert hook is not None and hook.appointment is not None, f"{name}: webhook without a valid appointment"
        return [ghl_observation(hook.appointment, **CTX)]
    if any(isinstance(body.get(k), list) for k in ("events", "appointments")) or isinstance(body.get("data"), Mapping):
        listed = parse_ghl_appointment_list(body)
        assert listed.dropped == 0, f"{name}: {listed.dropped} list item(s) dropped"
        return [ghl_observation(a, **CTX) for a in listed.items]
    if any(isinstance(v, Mapping) and isinstance(v.get("slots"), list) for v in body.values()):
        slots = parse_ghl_free_slots(body)
        expected = sum(len(v["slots"]) for v in body.values() if isinstance(v, Mapping) and "slots" in v)
        assert len(slots) == expected and all(s.tzinfo is not None for s in slots)
        return []
    if "calendar" in body or "calendars" in body:  # calendar metadata: no appointment in it
        return []
    if ".request" in name:  # a body we send: it must be complete enough to parse once the provider adds an id
        appt = parse_ghl_appointment({**body, "id": "request-fixture"})
        assert appt is not None, f"{name}: request body without valid start/end"
        return []
    appt = parse_ghl_appointment(body)
    assert appt is not None, f"{name}: not a recognisable GHL appointment"
    return [ghl_observation(appt, **CTX)]


def parse_calendly_fixture(name: str, body: Any) -> list[Observation]:
    """Parse one Calendly payload by shape; returns the observations it yields (may be none)."""
    assert isinstance(body, Mapping), f"{name}: Calendly payloads are JSON objects"
    if isinstance(body.get("event"), str) and isinstance(body.get("payload"), Mapping):  # webhook envelope
        hook = parse_calendly_webhook(body)
        assert hook is not None
        if hook.event.startswith("invitee.") or hook.event.startswith("invitee_no_show."):
            if hook.invitee is None:
                assert hook.event.startswith("invitee_no_show."), f"{name}: {hook.event} without an invitee"
                return []
            return [calendly_observation(hook.invitee, hook.scheduled_event, **CTX)]
        return []
    if "title" in body and "message" in body and "resource" not in body and "collection" not in body:
        assert isinstance(body["message"], str) and body["message"]
        return []
    if "event_type" in body and "invitee" in body:  # POST /invitees request body
        assert isinstance(body["invitee"], Mapping) and body["invitee"].get("email") and body.get("start_time")
        return []
    if isinstance(body.get("resource"), Mapping):
        resource = body["resource"]
        uri = resource.get("uri")
        if _is_invitee_uri(uri):
            invitee = parse_calendly_invitee(body)
            assert invitee is not None, f"{name}: invalid invitee"
            event = parse_calendly_event(resource["scheduled_event"]) if isinstance(
                resource.get("scheduled_event"), Mapping) else None
            return [calendly_observation(invitee, event, **CTX)]
        if isinstance(uri, str) and "/scheduled_events/" in uri:
            assert parse_calendly_event(body) is not None
        elif isinstance(uri, str) and "/event_types/" in uri:
            assert parse_calendly_event_type(body) is not None
        elif isinstance(uri, str) and "/users/" in uri:
            assert parse_calendly_user(body) is not None
        return []  # scheduling links, webhook subscriptions, cancellations: nothing to normalise
    page = parse_calendly_page(body)
    assert page is not None, f"{name}: not a recognisable Calendly payload"
    items = [i for i in page.collection if isinstance(i, Mapping)]
    assert len(items) == len(page.collection)
    if items and all("start_time" in i and "uri" not in i for i in items):  # event_type_available_times
        assert len(parse_calendly_available_times(body)) == len({i["start_time"] for i in items})
        return []
    observations = []
    for item in items:
        uri = item.get("uri")
        if _is_invitee_uri(uri):
            invitee = parse_calendly_invitee(item)
            assert invitee is not None, f"{name}: invalid invitee {uri}"
            observations.append(calendly_observation(invitee, None, **CTX))
        elif isinstance(uri, str) and "/scheduled_events/" in uri:
            assert parse_calendly_event(item) is not None
        elif isinstance(uri, str) and "/event_types/" in uri:
            assert parse_calendly_event_type(item) is not None
    return observations


def test_fixture_directory_is_there() -> None:
    assert FILES, f"no provider fixtures under {FIXTURES}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture_parses(path: Path) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    if path.name.startswith("ghl."):
        observations = parse_ghl_fixture(path.name, body)
    elif path.name.startswith("calendly."):
        observations = parse_calendly_fixture(path.name, body)
    else:
        pytest.fail(f"unknown provider prefix: {path.name}")
    for obs in observations:
        assert obs.validate() is obs  # keys, provider ids and tz-aware times (SPEC §1)
        assert obs.workspace_id == CTX["workspace_id"] and obs.source is Source.RECONCILE_CRON
        for when in (obs.start_at, obs.end_at, obs.booked_at, obs.provider_updated_at, obs.canceled_at):
            assert when is None or when.utcoffset().total_seconds() == 0
        if obs.cancel_reason:
            assert "@" not in obs.cancel_reason
    if path.name in EXPECTED_STATUS:
        assert [o.status for o in observations] == EXPECTED_STATUS[path.name]
    yields = ("invitee" in path.name or "webhook.appointment" in path.name or "appointments" in path.name)
    if yields and ".request" not in path.name:
        assert observations, f"{path.name}: an appointment/invitee payload must yield an observation"
