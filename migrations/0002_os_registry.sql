-- Projection of capabilities_reported: each rack's latest snapshot, and one
-- row per image version a rack can boot, for "what is supported" (union
-- over racks) and "what is available where" (per rack, online or not).
CREATE TABLE rack_capabilities (
    rack_id     uuid PRIMARY KEY,
    digest      text NOT NULL,
    reported_at timestamptz NOT NULL,
    event_id    uuid NOT NULL,
    snapshot    jsonb NOT NULL
);

CREATE TABLE rack_images (
    rack_id              uuid NOT NULL,
    os                   text NOT NULL,
    os_title             text NOT NULL,
    release              text NOT NULL,
    release_title        text NOT NULL,
    is_default           boolean NOT NULL,
    requires_licence_key boolean NOT NULL,
    can_commission       boolean NOT NULL,
    arch                 text NOT NULL,
    subarch              text NOT NULL,
    version_id           text NOT NULL,
    label                text NOT NULL,
    version              text NOT NULL,
    PRIMARY KEY (rack_id, version_id)
);
CREATE INDEX rack_images_os ON rack_images (os, release, arch, subarch);

-- Licence keys are secrets: the log holds only a masked form and a
-- fingerprint (licence_key_set events), the key lives here. This table is
-- not a projection and a rebuild leaves it alone.
CREATE TABLE licence_keys (
    os           text NOT NULL,
    release      text NOT NULL,
    key          text NOT NULL,
    masked       text NOT NULL,
    fingerprint  text NOT NULL,
    validated_by uuid NOT NULL,
    set_at       timestamptz NOT NULL,
    PRIMARY KEY (os, release)
);
