DROP INDEX IF EXISTS appointments_missing_attribution_idx;
ALTER TABLE appointments DROP COLUMN IF EXISTS attribution_checked_at;
