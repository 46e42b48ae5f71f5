-- SPEC §7: GHL's legacy RSA signature (x-wh-signature) is accepted only for workspaces that store
-- the legacy public key; and the sensor's per-workspace view of pending staging rows.
ALTER TABLE workspace_secrets DROP CONSTRAINT workspace_secrets_name_check;
ALTER TABLE workspace_secrets ADD CONSTRAINT workspace_secrets_name_check
    CHECK (name IN ('ghl_private_token', 'calendly_access_token', 'calendly_webhook_signing_key',
                    'ghl_webhook_public_key', 'ghl_webhook_legacy_public_key'));
-- ingestion reads a workspace's pending rows in provider-time order
CREATE INDEX webhook_events_pending_order_idx ON webhook_events (workspace_id, provider_created_at, id)
    WHERE status = 'pending';
