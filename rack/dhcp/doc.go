// Package dhcp is the rack's DHCP server, built on
// github.com/insomniacslk/dhcp (dhcpv4 parses and builds every packet,
// server4 opens the interface-bound sockets). It runs in one of two
// modes:
//
//   - proxy: beside the site's DHCP server, it answers PXE and HTTP boot
//     clients only (option 60 starting PXEClient or HTTPClient), never
//     handing out addresses: a DHCPOFFER on port 67 without an address,
//     with option 60, next-server (the rack), the boot file and option
//     43 telling PXE firmware to boot it; a DHCPACK with the same on
//     port 4011 to the client's unicast DHCPREQUEST (PXE 2.1, RFC 4578),
//     as Tinkerbell's smee and dnsmasq's proxy mode do.
//   - managed: the rack is the DHCP server of the subnets it is given
//     (RFC 2131): dynamic ranges, router, DNS servers, domain, lease
//     time and reservations, and boot information for netboot clients
//     in the same replies.
//
// The boot file follows the client (ChooseBoot, a pure function): its
// architecture (option 93), user class (option 77, "iPXE") and vendor
// class (option 60), and a per-machine override. Each firmware family
// boots its configured loader; an iPXE client (a NIC's iPXE ROM, or the
// snponly.efi the rack handed out) gets the rack's iPXE script over HTTP
// when its family's loader is iPXE and that loader otherwise (pxelinux.0
// from QEMU's iPXE BIOS ROM), so iPXE never loads iPXE again.
//
// Leases live in an append-only log under the rack's data directory
// (dhcp-leases.log): a line per change, each with its CRC-32C, fsync'd
// before the reply goes out, compacted at start and whenever it has grown
// to twice the records it holds. A restarted rack keeps every lease.
// Offers honour existing leases and reservations; a DECLINE holds the
// address back for DeclineHold; a RELEASE frees it; expired leases are
// reused last, after never-used and released addresses.
//
// Memory is bounded by the configuration, never by traffic: one record
// per address of the pools, at most MaxOffers offers outstanding, a
// fixed-size table for the proxy takeover, a bounded event report.
// Malformed packets are counted and dropped.
//
// What the server did goes out as one dhcp_leases_changed event per
// EventInterval at most (and none when nothing happened): changes
// coalesced per action, client and address, and counters of what was
// ignored. DHCP is unauthenticated: it never makes one event per packet.
//
// Two racks in proxy mode on one segment name each other in ProxyPeers.
// Each PXE client then has one owner, the peer with the highest
// rendezvous hash of (rack name, MAC), which alone answers at once; the
// others answer too once the client has been asking for ProxyTakeover
// (its secs field, or what the rack saw), so a client whose owner is down
// still boots, from the survivor.
//
// Managed mode serves two sets of subnets: the rack's own (Config.Subnets,
// from the -dhcp-subnets file) and the region's (SetRegionSubnets, which
// the rack calls with what rack/subnets cached of the region's
// subnet_set events). The rack's own take precedence: a region subnet
// that overlaps one of them is not served, and said so in a log line and
// a counter. The file is for a rack that must serve before it ever
// reached a region, or that overrides the region locally; without it,
// managed mode starts with no subnet and serves the region's as they
// arrive, without a restart: listeners open and close with the
// interfaces of the subnets, and leases stay.
//
// An example configuration of managed mode, as JSON (the subnets have the
// form of the region's events; -dhcp-subnets reads that array from a
// file):
//
//	{
//	  "mode": "managed",
//	  "interface": "eth1",
//	  "uefi_loader": "shim",
//	  "subnets": [{
//	    "cidr": "10.20.0.0/24",
//	    "ranges": [{"start": "10.20.0.100", "end": "10.20.0.199"}],
//	    "router": "10.20.0.1",
//	    "dns_servers": ["10.20.0.1"],
//	    "domain": "rack1.example.net",
//	    "lease_seconds": 3600,
//	    "reservations": [
//	      {"mac": "52:54:00:12:34:56", "ip": "10.20.0.10", "hostname": "node10"}
//	    ]
//	  }]
//	}
//
// and of proxy mode beside the site's DHCP server, on rackd's flags:
//
//	rackd -dhcp-mode proxy -dhcp-interface eth1 -dhcp-bios-loader pxelinux \
//	      -dhcp-proxy-peers rack-a,rack-b
package dhcp
