-- When the attribution backfill last asked the provider about a row and got no answer (SPEC §9).
-- Rows never asked go first, then the longest-unasked: a row that always fails cannot starve newer ones.
ALTER TABLE appointments ADD COLUMN attribution_checked_at timestamptz;
CREATE INDEX appointments_missing_attribution_idx ON appointments (workspace_id, attribution_checked_at NULLS FIRST, created_at)
    WHERE ghl_calendar_id IS NULL OR calendly_event_type_uri IS NULL;
