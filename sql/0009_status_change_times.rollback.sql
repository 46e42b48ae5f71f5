ALTER TABLE appointment_status_changes
    DROP COLUMN IF EXISTS from_start_at,
    DROP COLUMN IF EXISTS to_start_at;
