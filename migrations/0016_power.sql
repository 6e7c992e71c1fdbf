-- Power parameters of machines: the projection of the region's
-- power_parameters_set and power_parameters_cleared (stream machine/<id>).
-- The BMC password is not here and not in any event: it is sealed in
-- sealed_secrets as power/<machine id> (so key rotation reseals it), and
-- this table says only whether one is set and its keyed fingerprint.
-- rack_id NULL: the machine's boot rack drives it.
CREATE TABLE machine_power (
    machine_id           uuid PRIMARY KEY,
    driver               text NOT NULL,
    address              text NOT NULL,
    port                 integer NOT NULL,
    username             text NOT NULL,
    extra                jsonb NOT NULL,
    rack_id              uuid,
    password_set         boolean NOT NULL,
    password_fingerprint text NOT NULL,
    updated_at           timestamptz NOT NULL
);

-- The power state as the racks' power_action_completed events last left
-- it. Not a change of the machine: version and updated_at stay.
ALTER TABLE machines
    ADD COLUMN power_state text NOT NULL DEFAULT 'unknown',
    ADD COLUMN power_checked_at timestamptz,
    ADD COLUMN power_outcome text NOT NULL DEFAULT '',
    ADD COLUMN power_error text NOT NULL DEFAULT '';
