-- SPEC §9: availability refresh outcome per configured calendar / event type (one row each, also when
-- the calendar has no free slot or its last fetch failed), the per-calendar attributes of a capacity
-- row, and capacity per UTC day of the window (the plot).
CREATE TABLE calendar_availability_status (
    workspace_id         text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    provider             meeting_booking_provider NOT NULL,
    calendar_key         text NOT NULL,
    availability_source  availability_source NOT NULL,
    slot_minutes         integer CHECK (slot_minutes > 0),
    slot_count           integer NOT NULL DEFAULT 0 CHECK (slot_count >= 0),
    fetched_at           timestamptz,          -- last successful fetch (null: never succeeded)
    stale_at             timestamptz,          -- fetched_at + 2 × the refresh interval
    last_attempt_at      timestamptz NOT NULL,
    last_error           text,                 -- null after a success; masked, never PII
    PRIMARY KEY (workspace_id, provider, calendar_key, availability_source)
);

ALTER TABLE calendar_capacity
    ADD COLUMN provider             meeting_booking_provider,   -- null on the '*' total row
    ADD COLUMN availability_source  availability_source,        -- null on the '*' total row
    ADD COLUMN stale                boolean NOT NULL DEFAULT false,
    ADD COLUMN last_error           text;

CREATE TABLE calendar_capacity_days (
    workspace_id     text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    calendar_key     text NOT NULL,          -- a configured calendar key or '*'
    window_days      integer NOT NULL CHECK (window_days BETWEEN 1 AND 90),
    day              date NOT NULL,          -- UTC day
    booked_slots     integer NOT NULL,
    available_slots  integer NOT NULL,
    computed_at      timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, calendar_key, window_days, day)
);
