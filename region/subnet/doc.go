// Package subnet keeps the subnets of managed DHCP: each is served by one
// rack, with its dynamic ranges, options and reservations. Every change
// is a subnet_set or subnet_deleted event carrying the whole subnet, on
// the subnet's own stream, checked before it is appended: the subnet's
// own rules (events.Subnet.Validate), the rack it names exists, and no
// other subnet of that rack overlaps it. Racks follow those events (see
// rack/subnets) and serve their own subnets from a cache while the region
// is away.
package subnet
