-- Discovery is capped per rack and minute, and in machines discovered and
-- still new (region/machine DiscoveryLimits): each discovery counts them,
-- which these keep from reading every machine.
CREATE INDEX machines_discovered_by_rack ON machines (boot_rack_id, created_at) WHERE origin = 'discovered';
CREATE INDEX machines_discovered_new ON machines (status) WHERE origin = 'discovered';
