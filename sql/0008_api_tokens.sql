-- Workspace API tokens (SPEC §1, §10): only the SHA-256 of a token is stored, never the token itself.
-- `scopes` holds `read` and/or `book`; a revoked token keeps its row (revoked_at) so its id stays known.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          text CHECK (name <> ''),
    scopes        text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'book']),
    token_sha256  bytea NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_workspace_idx ON api_tokens (workspace_id, created_at);
