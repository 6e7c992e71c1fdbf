-- Projection of volume events: the region's request (volume_requested,
-- which names the rack and keeps the parameters) and every outcome a rack
-- reports (volume_action_completed). A row names the rack that has the
-- volume, so every later action goes there.
CREATE TABLE volumes (
    id               uuid PRIMARY KEY,
    name             text NOT NULL DEFAULT '',
    machine_id       text NOT NULL,
    provider         text NOT NULL,
    rack_id          uuid NOT NULL,
    size_mib         bigint NOT NULL DEFAULT 0,
    state            text NOT NULL,
    device           text NOT NULL DEFAULT '',
    uris             text[] NOT NULL DEFAULT '{}',
    parameters       jsonb NOT NULL DEFAULT '{}',
    last_action      text NOT NULL DEFAULT '',
    last_ok          boolean NOT NULL DEFAULT true,
    last_error_code  text NOT NULL DEFAULT '',
    last_error       text NOT NULL DEFAULT '',
    last_output_tail text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX volumes_machine ON volumes (machine_id, created_at, id);
CREATE INDEX volumes_rack ON volumes (rack_id);
