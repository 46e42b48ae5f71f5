DROP TABLE IF EXISTS calendar_capacity_days, calendar_availability_status;
ALTER TABLE calendar_capacity
    DROP COLUMN IF EXISTS provider,
    DROP COLUMN IF EXISTS availability_source,
    DROP COLUMN IF EXISTS stale,
    DROP COLUMN IF EXISTS last_error;
