-- appt-pipeline schema, SPEC §1. Applied by `appt-pipeline db upgrade` (yoyo records applied versions).

CREATE TYPE meeting_booking_provider AS ENUM ('GHL', 'CALENDLY');
CREATE TYPE appointment_status AS ENUM ('CONFIRMED', 'CANCELED', 'RESCHEDULED', 'SHOWED', 'NO_SHOW');
CREATE TYPE appointment_source AS ENUM ('WEBHOOK', 'RECONCILE_CRON', 'BACKFILL', 'AUTO_BOOK', 'MANUAL', 'MIGRATION');
CREATE TYPE availability_source AS ENUM ('DEFAULT', 'DIRECT_BOOK');

CREATE TABLE workspaces (
    id                                   text PRIMARY KEY CHECK (id <> '' AND id = btrim(id)),
    name                                 text,
    meeting_booking_provider             meeting_booking_provider NOT NULL DEFAULT 'GHL',
    ghl_location_id                      text UNIQUE,
    ghl_default_calendar_id              text,
    ghl_direct_book_calendar_id          text,
    calendly_organization_uri            text,
    calendly_user_uri                    text,
    calendly_event_type_uri              text,
    calendly_direct_book_event_type_uri  text,
    meeting_duration_minutes             integer NOT NULL DEFAULT 30 CHECK (meeting_duration_minutes > 0),
    timezone                             text,
    auto_book_meetings                   boolean NOT NULL DEFAULT false,
    ghl_api_base_url                     text NOT NULL DEFAULT 'https://services.leadconnectorhq.com',
    calendly_api_base_url                text NOT NULL DEFAULT 'https://api.calendly.com',
    created_at                           timestamptz NOT NULL DEFAULT now(),
    updated_at                           timestamptz NOT NULL DEFAULT now()
);

-- Secrets of SPEC §1, encrypted at rest (Fernet, key from APPT_SECRET_KEY); never plain text.
CREATE TABLE workspace_secrets (
    workspace_id  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (name IN ('ghl_private_token', 'calendly_access_token',
                                                'calendly_webhook_signing_key', 'ghl_webhook_public_key')),
    ciphertext    bytea NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE leads (
    id                            text PRIMARY KEY CHECK (id <> '' AND id = btrim(id)),
    workspace_id                  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    status                        text NOT NULL DEFAULT 'new',
    email                         text,
    ghl_contact_id                text,
    timezone                      text,
    last_inbound_at               timestamptz,
    auto_book_meetings_enabled    boolean NOT NULL DEFAULT true,
    -- legacy rollup columns (SPEC §3), kept for old readers; none of them unique
    ghl_appointment_id            text,
    calendly_invitee_uri          text,
    calendly_scheduled_event_uri  text,
    appointment_booked_at         timestamptz,
    appointment_start_at          timestamptz,
    appointment_end_at            timestamptz,
    appointment_status            text,
    appointment_canceled_at       timestamptz,
    appointment_provider          meeting_booking_provider,
    appointment_source            text,
    booked_slot                   text,
    -- reconciliation watermark and back-off (SPEC §6)
    appointment_last_checked_at   timestamptz,
    appointment_next_check_at     timestamptz,
    appointment_check_failures    integer NOT NULL DEFAULT 0,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_workspace_id_idx ON leads (workspace_id, id);
CREATE INDEX leads_workspace_next_check_idx ON leads (workspace_id, appointment_next_check_at NULLS FIRST);
CREATE INDEX leads_workspace_ghl_contact_idx ON leads (workspace_id, ghl_contact_id) WHERE ghl_contact_id IS NOT NULL;

CREATE TABLE appointments (
    id                            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id                  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    lead_id                       text NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    provider                      meeting_booking_provider NOT NULL,
    ghl_appointment_id            text UNIQUE,
    calendly_invitee_uri          text UNIQUE,
    calendly_scheduled_event_uri  text,
    ghl_calendar_id               text CHECK (ghl_calendar_id <> ''),
    calendly_event_type_uri       text CHECK (calendly_event_type_uri <> ''),
    start_at                      timestamptz,
    end_at                        timestamptz,
    timezone                      text,
    status                        appointment_status NOT NULL,
    status_changed_at             timestamptz NOT NULL,
    canceled_at                   timestamptz,
    cancel_reason                 text,
    rescheduled_from_id           uuid REFERENCES appointments (id) ON DELETE SET NULL,
    source                        appointment_source NOT NULL,
    last_source                   appointment_source NOT NULL,
    last_observed_at              timestamptz NOT NULL,
    provider_updated_at           timestamptz,
    legacy_lead_key               text UNIQUE,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointments_provider_keys CHECK (
        (provider = 'GHL' AND ghl_appointment_id IS NOT NULL
            AND calendly_invitee_uri IS NULL AND calendly_scheduled_event_uri IS NULL)
        OR (provider = 'CALENDLY' AND ghl_appointment_id IS NULL
            AND (calendly_invitee_uri IS NOT NULL
                 OR (legacy_lead_key IS NOT NULL AND calendly_scheduled_event_uri IS NOT NULL)))
    ),
    CONSTRAINT appointments_not_own_predecessor CHECK (rescheduled_from_id <> id)
);
CREATE INDEX appointments_workspace_lead_idx ON appointments (workspace_id, lead_id);
CREATE INDEX appointments_lead_status_start_idx ON appointments (lead_id, status, start_at);
CREATE INDEX appointments_workspace_status_start_idx ON appointments (workspace_id, status, start_at);
CREATE INDEX appointments_start_at_idx ON appointments (start_at);
CREATE INDEX appointments_status_idx ON appointments (status);
CREATE INDEX appointments_ghl_calendar_id_idx ON appointments (ghl_calendar_id);
CREATE INDEX appointments_calendly_event_type_uri_idx ON appointments (calendly_event_type_uri);
CREATE INDEX appointments_rescheduled_from_id_idx ON appointments (rescheduled_from_id);
CREATE INDEX appointments_created_at_idx ON appointments (created_at DESC);
CREATE INDEX appointments_scheduled_event_idx ON appointments (calendly_scheduled_event_uri)
    WHERE calendly_scheduled_event_uri IS NOT NULL;

-- Append-only audit of status transitions (SPEC §1).
CREATE TABLE appointment_status_changes (
    id                 bigserial PRIMARY KEY,
    appointment_id     uuid NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    from_status        appointment_status,
    to_status          appointment_status NOT NULL,
    source             appointment_source NOT NULL,
    observed_at        timestamptz NOT NULL,
    provider_event_at  timestamptz,
    webhook_event_id   bigint
);
CREATE INDEX appointment_status_changes_appointment_idx ON appointment_status_changes (appointment_id);

CREATE TABLE follow_up_tasks (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    lead_id            text NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    appointment_id     uuid REFERENCES appointments (id) ON DELETE SET NULL,
    type               text NOT NULL CHECK (type IN ('meeting-canceled', 'meeting-rescheduled')),
    due_date           timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'completed', 'skipped', 'cancelled')),
    is_urgent          boolean NOT NULL DEFAULT false,
    suggested_message  text,
    completed_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX follow_up_tasks_one_pending_idx ON follow_up_tasks (lead_id, type) WHERE status = 'pending';
CREATE INDEX follow_up_tasks_due_date_idx ON follow_up_tasks (due_date);

-- Staging written by the webhook receiver, read by the sensor (SPEC §7).
CREATE TABLE webhook_events (
    id                   bigserial PRIMARY KEY,
    workspace_id         text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    provider             meeting_booking_provider NOT NULL,
    event_type           text NOT NULL,
    dedupe_key           text NOT NULL UNIQUE,
    received_at          timestamptz NOT NULL DEFAULT now(),
    provider_created_at  timestamptz,
    payload              jsonb NOT NULL,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
    processed_at         timestamptz,
    error                text
);
CREATE INDEX webhook_events_pending_idx ON webhook_events (workspace_id, id) WHERE status = 'pending';

CREATE TABLE calendar_availability (
    id                   bigserial PRIMARY KEY,
    workspace_id         text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    provider             meeting_booking_provider NOT NULL,
    calendar_key         text NOT NULL,
    availability_source  availability_source NOT NULL DEFAULT 'DEFAULT',
    slot_start           timestamptz NOT NULL,
    slot_minutes         integer NOT NULL CHECK (slot_minutes > 0),
    fetched_at           timestamptz NOT NULL,
    stale_at             timestamptz NOT NULL,
    last_error           text,
    UNIQUE (workspace_id, provider, calendar_key, availability_source, slot_start)
);

CREATE TABLE calendar_capacity (
    workspace_id               text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    calendar_key               text NOT NULL,
    window_days                integer NOT NULL CHECK (window_days BETWEEN 1 AND 90),
    window_start               timestamptz NOT NULL,
    window_end                 timestamptz NOT NULL,
    booked_slots               integer NOT NULL,
    available_slots            integer NOT NULL,
    total_slots                integer NOT NULL,
    booked_pct                 double precision CHECK (booked_pct BETWEEN 0 AND 1),
    unattributed_booked_slots  integer NOT NULL DEFAULT 0,
    computed_at                timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, calendar_key, window_days)
);

-- Migration resume points (SPEC §5): the last lead id whose batch committed, per workspace.
CREATE TABLE migration_progress (
    workspace_id  text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    last_lead_id  text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
