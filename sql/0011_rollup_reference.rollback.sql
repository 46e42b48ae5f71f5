ALTER TABLE leads DROP COLUMN IF EXISTS appointment_rollup_at;
