-- SPEC §1, §3 "Rollups over time": the reference time of each lead's rollup. Every rollup computation
-- stamps it; the drift check compares a lead's rollup with its primary at this time, and the hourly
-- refresh recomputes the leads that have a CONFIRMED row whose start_at lies in (appointment_rollup_at, now].
-- NULL for leads whose rollup was computed before this file (or never): the drift check then compares at
-- now, and the refresh treats them as due when they have a CONFIRMED row that started.
-- (Numbered 0011: branches that add 0010_booking_requests come first; renumber on merge if needed.)
ALTER TABLE leads ADD COLUMN IF NOT EXISTS appointment_rollup_at timestamptz;
-- Run-scoped drift checks (SPEC §10) look at the leads a run touched: the write path stamps them with the
-- run's reference time, so they are the workspace's leads with appointment_rollup_at >= the run's start.
CREATE INDEX IF NOT EXISTS leads_workspace_rollup_at_idx ON leads (workspace_id, appointment_rollup_at);
-- ... and at the staging rows a run processed (the staging_pii check); pending rows are not in it.
CREATE INDEX IF NOT EXISTS webhook_events_processed_idx ON webhook_events (workspace_id, processed_at)
    WHERE processed_at IS NOT NULL;
