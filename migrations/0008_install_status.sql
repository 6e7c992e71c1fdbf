-- A deployment ends when its installer reports back (or never does). The
-- report is authenticated with a token derived from the deployment's id and
-- a secret of the region, so neither the token nor the secret is in the log.
ALTER TABLE machines
    ADD COLUMN deployment_id     uuid,
    ADD COLUMN deploy_started_at timestamptz;

-- The deployment watch looks only at machines still deploying.
CREATE INDEX machines_deploying ON machines (deploy_started_at) WHERE status = 'deploying';

-- Secrets the region keeps for itself: made once, never in the event log.
CREATE TABLE region_secrets (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
