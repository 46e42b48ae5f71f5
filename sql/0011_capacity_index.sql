-- SPEC §9 / docs/rules.md §9: capacity reads the CONFIRMED appointments of a workspace starting in a window,
-- with the provider and the attribution columns. This partial covering index makes that an index-only scan
-- (bench.capacity: the appointment half of the capacity statement no longer visits the heap).
CREATE INDEX appointments_confirmed_capacity_idx ON appointments (workspace_id, start_at)
    INCLUDE (provider, ghl_calendar_id, calendly_event_type_uri)
    WHERE status = 'CONFIRMED';
