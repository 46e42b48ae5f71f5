-- Issue 13 item 3b; docs/operations.md "Rate limits": one request budget per provider account shared by
-- every process that calls it (runs, the availability refresh, the service's booking route, workers).
-- An account has max_requests permits (rows, slot 0 … N-1). A request holds one from before it is sent
-- until period_s after its answer arrived (held_until, database clock); a permit whose held_until has
-- passed is free. While a request is in flight held_until is a lease (now + in-flight lease + window), so
-- a process that dies mid-request gives its permit back once the lease ends.
-- account_key is "<provider>:<sha-256 prefix of the account id>" (no token, no e-mail, no raw URI).
-- Rows are updated in place (HOT: no indexed column changes), hence the low fillfactor.
CREATE TABLE IF NOT EXISTS provider_rate_accounts (
    account_key  text PRIMARY KEY CHECK (account_key ~ '^(ghl|calendly):[0-9a-f]{32}$'),
    paused_until timestamptz NOT NULL DEFAULT '-infinity'  -- a 429 asked the whole account to wait until then
) WITH (fillfactor = 50);

CREATE TABLE IF NOT EXISTS provider_rate_permits (
    account_key text NOT NULL REFERENCES provider_rate_accounts (account_key) ON DELETE CASCADE,
    slot        integer NOT NULL CHECK (slot >= 0),
    held_until  timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (account_key, slot)
) WITH (fillfactor = 50);
