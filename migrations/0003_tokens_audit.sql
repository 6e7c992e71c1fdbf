-- API tokens. Only a hash of the secret is kept; the token is shown once,
-- when it is created. Like licence keys, tokens are secrets and live
-- outside the log (which records token_created and token_revoked).
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    actor        text NOT NULL,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Who did what to what, when, from which request, with what outcome.
-- Append-only: the database itself refuses UPDATE, DELETE and TRUNCATE.
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    request_id text NOT NULL,
    outcome    text NOT NULL CHECK (outcome IN ('success', 'failure')),
    status     integer NOT NULL,
    before     jsonb,
    after      jsonb,
    detail     text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
