-- Projection of the racks' dhcp_leases_changed events: the leases each
-- rack's managed DHCP server gave, by client and address. An acked change
-- sets the lease (hostname, expiry, how often it was acked, when last);
-- released, refused and declined remove it. expires is the lease's end
-- as the rack said it: the API shows only leases not yet expired, and a
-- rack's report drops its leases that ended more than a day before it,
-- so the table holds what is current, or was recently.
CREATE TABLE dhcp_leases (
    rack_id     uuid NOT NULL,
    mac         text NOT NULL,
    ip          inet NOT NULL,
    subnet      cidr,
    hostname    text NOT NULL DEFAULT '',
    last_action text NOT NULL,
    expires     timestamptz,
    count       bigint NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (rack_id, mac, ip)
);
CREATE INDEX dhcp_leases_ip ON dhcp_leases (rack_id, ip);
CREATE INDEX dhcp_leases_mac ON dhcp_leases (mac);
