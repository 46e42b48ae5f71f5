DROP INDEX IF EXISTS webhook_events_processed_idx;
DROP INDEX IF EXISTS leads_workspace_rollup_at_idx;
ALTER TABLE leads DROP COLUMN IF EXISTS appointment_rollup_at;
