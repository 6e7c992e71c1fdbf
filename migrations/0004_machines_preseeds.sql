ALTER TABLE racks ADD COLUMN boot_url text NOT NULL DEFAULT '';
-- File names of each image version, to find its kernel and initrd.
ALTER TABLE rack_images ADD COLUMN files text[] NOT NULL DEFAULT '{}';

-- Projection of machine events.
CREATE TABLE machines (
    id               uuid PRIMARY KEY,
    hostname         text NOT NULL UNIQUE,
    macs             text[] NOT NULL,
    arch             text NOT NULL,
    boot_rack_id     uuid,
    status           text NOT NULL,
    origin           text NOT NULL,
    os               text NOT NULL DEFAULT '',
    release          text NOT NULL DEFAULT '',
    subarch          text NOT NULL DEFAULT '',
    image_version_id text NOT NULL DEFAULT '',
    deploy_rack_id   uuid,
    preseed_name     text NOT NULL DEFAULT '',
    preseed_version  bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          bigint NOT NULL
);
CREATE TABLE machine_macs (
    mac        text PRIMARY KEY,
    machine_id uuid NOT NULL REFERENCES machines (id) ON DELETE CASCADE
);
CREATE INDEX machines_status ON machines (status, hostname);

-- The region's boot decision for each MAC, as sent to racks.
CREATE TABLE boot_decisions (
    mac        text PRIMARY KEY,
    machine_id uuid,
    decision   jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Projection of preseed_version_created: immutable versions, and which one
-- is current.
CREATE TABLE preseeds (
    name            text PRIMARY KEY,
    scope_kind      text NOT NULL,
    scope_machine   uuid,
    scope_os        text NOT NULL DEFAULT '',
    scope_release   text NOT NULL DEFAULT '',
    scope_arch      text NOT NULL DEFAULT '',
    current_version bigint NOT NULL,
    latest_version  bigint NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE TABLE preseed_versions (
    name       text NOT NULL,
    version    bigint NOT NULL,
    content    text NOT NULL,
    origin     text NOT NULL,
    author     text NOT NULL,
    comment    text NOT NULL DEFAULT '',
    based_on   bigint,
    created_at timestamptz NOT NULL,
    event_id   uuid NOT NULL,
    PRIMARY KEY (name, version)
);
