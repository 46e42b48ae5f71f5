-- SPEC §1, §3 "Rollups over time": the reference time of each lead's rollup. Every rollup computation
-- stamps it; the drift check compares a lead's rollup with its primary at this time, and the hourly
-- refresh recomputes the leads that have a CONFIRMED row whose start_at lies in (appointment_rollup_at, now].
-- NULL for leads whose rollup was computed before this file (or never): the drift check then compares at
-- now, and the refresh treats them as due when they have a CONFIRMED row that started.
-- (Numbered 0011: branches that add 0010_booking_requests come first; renumber on merge if needed.)
ALTER TABLE leads ADD COLUMN IF NOT EXISTS appointment_rollup_at timestamptz;
