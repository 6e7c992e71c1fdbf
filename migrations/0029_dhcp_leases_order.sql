-- The list of every rack's current leases is paged by address, MAC and
-- rack: this index gives it in that order, so a page reads its rows and
-- stops, instead of sorting every current lease of every rack for each
-- page. Partial on acked leases, the only ones listed.
CREATE INDEX dhcp_leases_current_order ON dhcp_leases (ip, mac, rack_id) WHERE last_action = 'acked';
