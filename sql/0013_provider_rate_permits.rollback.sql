DROP TABLE IF EXISTS provider_rate_permits;
DROP TABLE IF EXISTS provider_rate_accounts;
