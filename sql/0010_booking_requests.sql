-- SPEC §1, §8: booking idempotency. One row per (workspace, Idempotency-Key): the first request's fingerprint
-- and its answer, so a retry with the same key gets the same answer and never a second provider call.
-- No personal data: the invitee's name and e-mail are never stored; `request_hash` is the SHA-256 of the
-- normalised request (domain.booking.request_fingerprint), `message` the provider's refusal with e-mails and
-- phone numbers masked. Rows are kept 30 days (`created_at`): every booking of a workspace first deletes that
-- workspace's older rows (store.booking_requests.purge_expired), so an expired key starts afresh.
CREATE TABLE booking_requests (
    workspace_id                  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    idempotency_key               text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    request_hash                  bytea NOT NULL CHECK (octet_length(request_hash) = 32),
    lead_id                       text NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    state                         text NOT NULL DEFAULT 'pending'
                                  CHECK (state IN ('pending', 'booked', 'refused', 'unknown')),
    reason                        text,       -- refusal reason code (SPEC §8), or why it is pending / unknown
    message                       text,       -- provider_refused: the provider's message, masked (SPEC §11)
    source                        appointment_source NOT NULL CHECK (source IN ('AUTO_BOOK', 'MANUAL')),
    availability_source           availability_source NOT NULL,
    slot_start                    timestamptz NOT NULL,
    provider                      meeting_booking_provider,
    ghl_calendar_id               text,       -- the calendar / event type used (attribution, SPEC §9)
    calendly_event_type_uri       text,
    ghl_appointment_id            text,       -- what the provider answered
    calendly_invitee_uri          text,
    calendly_scheduled_event_uri  text,
    appointment_id                uuid REFERENCES appointments (id) ON DELETE SET NULL,
    provider_attempts             integer NOT NULL DEFAULT 0 CHECK (provider_attempts >= 0),
    provider_sent_at              timestamptz, -- set just before the provider POST; null = nothing in flight
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, idempotency_key),
    CHECK (state <> 'booked' OR appointment_id IS NOT NULL OR ghl_appointment_id IS NOT NULL
           OR calendly_invitee_uri IS NOT NULL),
    CHECK (state <> 'refused' OR reason IS NOT NULL)
);
CREATE INDEX booking_requests_created_idx ON booking_requests (created_at);
CREATE INDEX booking_requests_lead_idx ON booking_requests (lead_id);
