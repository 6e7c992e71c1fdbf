-- Projection of subnet_set and subnet_deleted: the subnets of managed
-- DHCP, each served by one rack. The subnet itself is kept as the event
-- carries it (doc); cidr and rack_id are columns for the overlap check
-- and the per-rack listing.
CREATE TABLE subnets (
    id         uuid PRIMARY KEY,
    rack_id    uuid NOT NULL,
    cidr       cidr NOT NULL,
    doc        jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint NOT NULL
);
CREATE INDEX subnets_rack ON subnets (rack_id, cidr);

-- What a rack's DHCP server does, from its rack_registered (null: the
-- rack did not say).
ALTER TABLE racks ADD COLUMN dhcp jsonb;

-- A machine's own boot file (firmware quirks); '' lets the rack choose.
ALTER TABLE machines ADD COLUMN boot_file text NOT NULL DEFAULT '';
