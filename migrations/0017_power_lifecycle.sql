-- The power work of machines' lifecycle operations: a deploying machine
-- with power parameters is set to boot from the network and powered on
-- (once per deployment), a releasing one is switched off. A row is the
-- region's own bookkeeping, not a projection: it says which attempt is
-- due, which region holds it (token, until lease_until) and why the last
-- one failed. operation is the deployment id for a deploy, '' for a
-- release; issued says that a deploy attempt sent its power on (or
-- cycle), so that an attempt after one whose outcome was lost does not
-- cycle the installer it started. A new operation keeps lease_until and
-- token: an attempt of the one before may still be talking to the BMC,
-- and the new one waits until it ends. Rows of machines no longer
-- deploying or releasing are removed.
CREATE TABLE power_lifecycle (
    machine_id      uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('deploy', 'release')),
    operation       text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    token           uuid,
    issued          boolean NOT NULL DEFAULT false,
    done            boolean NOT NULL DEFAULT false,
    last_error      text NOT NULL DEFAULT ''
);

CREATE INDEX power_lifecycle_due ON power_lifecycle (next_attempt_at) WHERE NOT done;
CREATE INDEX machines_releasing ON machines (id) WHERE status = 'releasing';
