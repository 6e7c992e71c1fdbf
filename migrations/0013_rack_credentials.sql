-- Racks' NATS identities and the join tokens that admit new racks. The
-- region's NATS auth callout (region/natsauth) reads them on every
-- connection a rack makes: a rack is known by its id and proves it with
-- its nkey; a rack not known yet is admitted once with a join token and
-- bound to the nkey it connected with.

-- Join tokens are secrets: only a keyed hash (HMAC-SHA256 under the
-- region secret "join-token-hmac") is kept, and the log records
-- join_token_created and join_token_revoked, never the secret. A token
-- admits any number of racks until it expires or is revoked.
CREATE TABLE join_tokens (
    id          uuid PRIMARY KEY,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_by  text NOT NULL
);

-- One row per rack that joined: the nkey (public key, U...) it is bound
-- to. A revoked rack stays refused: revoked_at is never cleared.
CREATE TABLE rack_credentials (
    rack_id       uuid PRIMARY KEY,
    nkey          text NOT NULL,
    joined_at     timestamptz NOT NULL,
    join_token_id uuid REFERENCES join_tokens (id),
    revoked_at    timestamptz,
    revoked_by    text
);
CREATE INDEX rack_credentials_join_token ON rack_credentials (join_token_id);
