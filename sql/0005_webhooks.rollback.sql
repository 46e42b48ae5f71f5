DROP INDEX IF EXISTS webhook_events_pending_order_idx;
DELETE FROM workspace_secrets WHERE name = 'ghl_webhook_legacy_public_key';
ALTER TABLE workspace_secrets DROP CONSTRAINT workspace_secrets_name_check;
ALTER TABLE workspace_secrets ADD CONSTRAINT workspace_secrets_name_check
    CHECK (name IN ('ghl_private_token', 'calendly_access_token', 'calendly_webhook_signing_key',
                    'ghl_webhook_public_key'));
