-- SPEC §1, §4.3: a status change also records a start-time move (`from_start_at` → `to_start_at`;
-- `from_status` = `to_status` when only the time moved), so the history can say "Tue 14:00 → Wed 16:00".
-- Nullable: rows written before this file, and changes that did not move the time, have none.
ALTER TABLE appointment_status_changes
    ADD COLUMN IF NOT EXISTS from_start_at timestamptz,
    ADD COLUMN IF NOT EXISTS to_start_at   timestamptz;
