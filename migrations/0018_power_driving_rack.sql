-- Which rack drives a machine's BMC: the rack its power parameters name;
-- else the rack serving the most specific subnet that holds the BMC's
-- address, when the address is an IP (the rack on the BMC's network, as
-- MAAS picks the rack controller of the BMC's subnet); else the machine's
-- boot rack. address_inet is the address as an IP, null when it is not
-- one (a QMP socket's path, a host name).
ALTER TABLE machine_power ADD COLUMN address_inet inet;

CREATE FUNCTION power_driving_rack(p machine_power, boot_rack uuid) RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT coalesce(p.rack_id,
        (SELECT s.rack_id FROM subnets s WHERE p.address_inet IS NOT NULL AND p.address_inet <<= s.cidr
            ORDER BY masklen(s.cidr) DESC, s.rack_id LIMIT 1),
        boot_rack)
$$;
