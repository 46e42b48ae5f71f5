"""The schema of SPEC §1 exists as specified, and `db upgrade` is idempotent."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from appt_pipeline.store.schema import upgrade

SPEC_COLUMNS = {
    "workspaces": [
        "id", "name", "meeting_booking_provider", "ghl_location_id", "ghl_default_calendar_id",
        "ghl_direct_book_calendar_id", "calendly_organization_uri", "calendly_user_uri", "calendly_event_type_uri",
        "calendly_direct_book_event_type_uri", "meeting_duration_minutes", "timezone", "auto_book_meetings",
        "ghl_api_base_url", "calendly_api_base_url",
    ],
    "leads": [
        "id", "workspace_id", "status", "email", "ghl_contact_id", "timezone", "last_inbound_at",
        "auto_book_meetings_enabled", "ghl_appointment_id", "calendly_invitee_uri", "calendly_scheduled_event_uri",
        "appointment_booked_at", "appointment_start_at", "appointment_end_at", "appointment_status",
        "appointment_canceled_at", "appointment_provider", "appointment_source", "booked_slot",
        "appointment_last_checked_at", "appointment_next_check_at", "appointment_check_failures",
    ],
    "appointments": [
        "id", "workspace_id", "lead_id", "provider", "ghl_appointment_id", "calendly_invitee_uri",
        "calendly_scheduled_event_uri", "ghl_calendar_id", "calendly_event_type_uri", "start_at", "end_at",
        "timezone", "status", "status_changed_at", "canceled_at", "cancel_reason", "rescheduled_from_id", "source",
        "last_source", "last_observed_at", "provider_updated_at", "legacy_lead_key", "created_at", "updated_at",
    ],
    "appointment_status_changes": [
        "appointment_id", "from_status", "to_status", "from_start_at", "to_start_at", "source", "observed_at",
        "provider_event_at", "webhook_event_id",
    ],
    "follow_up_tasks": [
        "id", "lead_id", "appointment_id", "type", "due_date", "status", "is_urgent", "suggested_message",
        "created_at", "updated_at",
    ],
    "webhook_events": [
        "id", "workspace_id", "provider", "event_type", "dedupe_key", "received_at", "provider_created_at",
        "payload", "status", "processed_at", "error",
    ],
    "calendar_availability": [
        "workspace_id", "provider", "calendar_key", "availability_source", "slot_start", "slot_minutes",
        "fetched_at", "stale_at", "last_error",
    ],
    "api_tokens": [
        "id", "workspace_id", "name", "scopes", "token_sha256", "created_at", "last_used_at", "revoked_at",
    ],
    "booking_requests": [
        "workspace_id", "idempotency_key", "request_hash", "lead_id", "state", "reason", "appointment_id",
        "created_at", "updated_at",
    ],
    "calendar_capacity": [
        "workspace_id", "calendar_key", "booked_slots", "available_slots", "total_slots", "booked_pct",
        "unattributed_booked_slots", "computed_at",
    ],
}

SPEC_ENUMS = {
    "meeting_booking_provider": ["GHL", "CALENDLY"],
    "appointment_status": ["CONFIRMED", "CANCELED", "RESCHEDULED", "SHOWED", "NO_SHOW"],
    "appointment_source": ["WEBHOOK", "RECONCILE_CRON", "BACKFILL", "AUTO_BOOK", "MANUAL", "MIGRATION"],
    "availability_source": ["DEFAULT", "DIRECT_BOOK"],
}

#: SPEC §1 "Indexes at least" on appointments, as leading column lists.
SPEC_APPOINTMENT_INDEXES = [
    ["workspace_id", "lead_id"], ["lead_id", "status", "start_at"], ["workspace_id", "status", "start_at"],
    ["start_at"], ["status"], ["ghl_calendar_id"], ["calendly_event_type_uri"], ["rescheduled_from_id"],
    ["created_at"],
]
SPEC_UNIQUE = {
    "appointments": [["ghl_appointment_id"], ["calendly_invitee_uri"], ["legacy_lead_key"]],
    "webhook_events": [["dedupe_key"]],
    "workspaces": [["ghl_location_id"]],
    "api_tokens": [["token_sha256"]],
}


def test_every_spec_column_exists(db: sa.Engine) -> None:
    inspector = sa.inspect(db)
    for table, columns in SPEC_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        missing = [c for c in columns if c not in present]
        assert not missing, f"{table} lacks {missing}"


def test_enums_have_exactly_the_spec_values(db: sa.Engine) -> None:
    with db.connect() as conn:
        for name, values in SPEC_ENUMS.items():
            got = conn.execute(sa.text(f"SELECT unnest(enum_range(NULL::{name}))::text")).scalars().all()
            assert got == values


def test_every_spec_index_exists(db: sa.Engine) -> None:
    inspector = sa.inspect(db)
    indexed = [ix["column_names"] for ix in inspector.get_indexes("appointments")]
    for columns in SPEC_APPOINTMENT_INDEXES:
        assert columns in indexed, f"no index on appointments{tuple(columns)}"
    created = [ix for ix in inspector.get_indexes("appointments") if ix["column_names"] == ["created_at"]]
    assert created[0].get("column_sorting") == {"created_at": ("desc",)}
    for table, uniques in SPEC_UNIQUE.items():
        got = [u["column_names"] for u in inspector.get_unique_constraints(table)]
        for columns in uniques:
            assert columns in got, f"{table}{tuple(columns)} is not unique"
    pending = [ix for ix in inspector.get_indexes("follow_up_tasks") if ix["unique"]]
    assert [ix["column_names"] for ix in pending] == [["lead_id", "type"]]
    assert "status = 'pending'" in pending[0]["dialect_options"]["postgresql_where"]


def test_foreign_keys_cascade_as_specified(db: sa.Engine) -> None:
    fks = {
        (fk["constrained_columns"][0], fk["referred_table"]): fk
        for fk in sa.inspect(db).get_foreign_keys("appointments")
    }
    assert fks[("lead_id", "leads")]["options"]["ondelete"] == "CASCADE"
    assert fks[("rescheduled_from_id", "appointments")]["options"]["ondelete"] == "SET NULL"
    tokens = {fk["referred_table"]: fk for fk in sa.inspect(db).get_foreign_keys("api_tokens")}
    assert tokens["workspaces"]["options"]["ondelete"] == "CASCADE"
    booking = {fk["referred_table"]: fk for fk in sa.inspect(db).get_foreign_keys("booking_requests")}
    assert booking["workspaces"]["options"]["ondelete"] == "CASCADE"
    assert booking["leads"]["options"]["ondelete"] == "CASCADE"
    assert booking["appointments"]["options"]["ondelete"] == "SET NULL"
    pk = sa.inspect(db).get_pk_constraint("booking_requests")
    assert pk["constrained_columns"] == ["workspace_id", "idempotency_key"]


def test_check_constraint_rejects_mixed_provider_ids(db: sa.Engine) -> None:
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO workspaces (id) VALUES ('w')"))
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id) VALUES ('l', 'w')"))
    bad = (
        "INSERT INTO appointments (workspace_id, lead_id, provider, ghl_appointment_id, calendly_invitee_uri, status,"
        " status_changed_at, source, last_source, last_observed_at)"
        " VALUES ('w', 'l', 'GHL', 'g', 'https://api.calendly.com/x', 'CONFIRMED', now(), 'MANUAL', 'MANUAL', now())"
    )
    with pytest.raises(sa.exc.IntegrityError, match="appointments_provider_keys"), db.begin() as conn:
        conn.execute(sa.text(bad))


def test_upgrade_is_idempotent(database_url: str) -> None:
    again = upgrade(database_url)
    assert again.applied == []
    assert again.current == ["0001_schema", "0002_legacy_parse", "0003_attribution_checked",
                             "0004_legacy_parse_parallel_restricted", "0005_webhooks", "0006_time_ordered_ids",
                             "0007_capacity", "0008_api_tokens", "0009_status_change_times",
                             "0010_booking_requests", "0011_capacity_index",
                             "0012_rollup_reference", "0013_provider_rate_permits"]


def test_appointment_ids_are_time_ordered_uuid_v7(db: sa.Engine) -> None:
    """New appointment ids are RFC 9562 version 7: version 7, variant 10, and increasing with the clock."""
    with db.connect() as conn:
        first = conn.execute(sa.text("SELECT appt_uuid_v7()")).scalar_one()
        conn.execute(sa.text("SELECT pg_sleep(0.002)"))
        ids = conn.execute(sa.text("SELECT appt_uuid_v7() FROM generate_series(1, 1000)")).scalars().all()
        millis = conn.execute(sa.text("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)")).scalar_one()
        default = conn.execute(sa.text(
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'appointments' AND column_name = 'id'"
        )).scalar_one()
    assert default == "appt_uuid_v7()"
    assert len(set(ids)) == 1000
    for u in [first, *ids]:
        assert u.version == 7 and u.variant == "specified in RFC 4122"
        assert 0 <= int(millis) - (u.int >> 80) < 60_000  # 48-bit Unix milliseconds, taken just now
    assert all(first < u for u in ids)  # a later millisecond sorts after
    assert [u.int >> 80 for u in ids] == sorted(u.int >> 80 for u in ids)


def test_legacy_timestamp_parser_is_lenient_and_never_runs_in_parallel_workers(db: sa.Engine) -> None:
    with db.connect() as conn:
        parsed = conn.execute(sa.text(
            "SELECT appt_parse_legacy_timestamp('2026-07-04T13:00:00-04:00'),"
            " appt_parse_legacy_timestamp('tomorrow 3pm'),"
            " appt_parse_legacy_timestamp('2026-13-45T10:00:00Z'), proparallel FROM pg_proc"
            " WHERE proname = 'appt_parse_legacy_timestamp'"
        )).one()
    assert parsed[0] == datetime(2026, 7, 4, 17, 0, tzinfo=UTC)
    assert parsed[1] is None and parsed[2] is None
    assert parsed[3] == "r"
