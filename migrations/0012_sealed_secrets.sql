-- Secrets the region keeps (licence keys; BMC credentials next), sealed
-- with the operator's secrets key (package region/secrets: AES-256-GCM,
-- the key's id in each value). name says what the secret is for, kind
-- first ("licence_key/<os>/<release>"); a value is sealed with its name as
-- additional data, so it does not open under another. fingerprint is
-- keyed (HMAC-SHA256 under a key derived from the sealing key). Like
-- licence_keys, this is not a projection: a rebuild leaves it alone.
--
-- Earlier versions kept licence keys in clear in licence_keys.key. They
-- move here into unsealed, since the database never sees the key that
-- would seal them; the region seals them at its next start, before it
-- serves anything (postgres.DB.ResealSecrets), and empties unsealed.
-- Nothing else writes unsealed.
CREATE TABLE sealed_secrets (
    name        text PRIMARY KEY,
    sealed      bytea,
    key_id      text,
    unsealed    text,
    fingerprint text NOT NULL,
    updated_at  timestamptz NOT NULL,
    CHECK ((sealed IS NULL) = (key_id IS NULL)),
    CHECK ((sealed IS NULL) <> (unsealed IS NULL))
);
CREATE INDEX sealed_secrets_key_id ON sealed_secrets (key_id);

INSERT INTO sealed_secrets (name, unsealed, fingerprint, updated_at)
    SELECT 'licence_key/' || os || '/' || release, key, fingerprint, set_at FROM licence_keys;

ALTER TABLE licence_keys DROP COLUMN key, DROP COLUMN fingerprint;
