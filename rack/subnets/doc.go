// Package subnets keeps, on the rack, the managed DHCP subnets the region
// gives it, so that its DHCP server serves them across region outages
// and restarts.
//
// The region sends every change of a subnet to every rack
// (subnet_set, subnet_deleted on the region stream); a rack keeps only
// the subnets whose rack_id is its own, and drops one that names another
// rack (the subnet moved). The rack's id in the event is the region's
// word: racks cannot publish region events (events.RackPermissions), so
// no rack can hand another one a subnet.
//
// The cache lives in memory and in region-subnets.json under the rack's
// data directory, written atomically, with the last region stream
// sequence applied; following resumes after it. At start the rack asks
// the region for its subnets as they are now (Cache.Sync) and resumes
// after the stream's last sequence instead, read before it asked: the
// history the answer already holds is never served again. Every change
// goes to OnChange at once (the DHCP server applies it without a
// restart).
//
// The rack's own subnets file (rackd -dhcp-subnets) stays the rack's
// override and bootstrap: the DHCP server serves its subnets first, and
// a region subnet overlapping one of them is not served (see
// rack/dhcp.Server.SetRegionSubnets).
package subnets
