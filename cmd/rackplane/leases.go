package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"text/tabwriter"
	"time"
)

// leaseOut is what the CLI shows of a DHCP lease.
type leaseOut struct {
	RackID          string     `json:"rack_id"`
	MAC             string     `json:"mac"`
	IP              string     `json:"ip"`
	Hostname        string     `json:"hostname"`
	LastAction      string     `json:"last_action"`
	Expires         *time.Time `json:"expires"`
	Count           int64      `json:"count"`
	At              time.Time  `json:"at"`
	MachineID       string     `json:"machine_id"`
	MachineHostname string     `json:"machine_hostname"`
}

// maxLeasePages bounds how many pages runLeases follows: the region
// answers at most its page limit per page, and a list that long is one
// to narrow with -rack, -subnet or -mac.
const maxLeasePages = 1000

// runLeases lists the current DHCP leases the racks reported, following
// the pages to the end.
func runLeases(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("leases", flag.ContinueOnError)
	c := clientFlags(fs)
	rack := fs.String("rack", "", "only this rack's leases (name or id)")
	subnet := fs.String("subnet", "", "only this subnet's leases (its id, or its CIDR)")
	mac := fs.String("mac", "", "only the lease of this MAC address")
	asJSON := fs.Bool("json", false, "print the leases as one JSON list")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("leases takes no arguments, only flags (-rack, -subnet, -mac): got %q", fs.Args())
	}
	q := url.Values{}
	if *rack != "" {
		id, err := c.rackID(ctx, *rack)
		if err != nil {
			return err
		}
		q.Set("rack_id", id)
	}
	// within narrows the list to a CIDR no subnet of the region has (a
	// rack's own -dhcp-subnets file, or a lab's): by address, here.
	var within *netip.Prefix
	if *subnet != "" {
		id, prefix, err := c.subnetID(ctx, *subnet, q.Get("rack_id"))
		if err != nil {
			return err
		}
		if id != "" {
			q.Set("subnet", id)
		} else {
			within = &prefix
		}
	}
	if *mac != "" {
		q.Set("mac", *mac)
	}
	var all []json.RawMessage
	for page := 0; ; page++ {
		if page == maxLeasePages {
			return fmt.Errorf("more than %d pages of leases: narrow the list with -rack, -subnet or -mac", maxLeasePages)
		}
		var resp struct {
			Leases []json.RawMessage `json:"leases"`
			Next   string            `json:"next"`
		}
		if err := c.get(ctx, "/api/v1/leases", q, &resp); err != nil {
			return err
		}
		for _, raw := range resp.Leases {
			if within != nil {
				var l struct {
					IP string `json:"ip"`
				}
				if err := json.Unmarshal(raw, &l); err != nil {
					return fmt.Errorf("the region's lease list: %w", err)
				}
				if ip, err := netip.ParseAddr(l.IP); err != nil || !within.Contains(ip) {
					continue
				}
			}
			all = append(all, raw)
		}
		if resp.Next == "" {
			break
		}
		q.Set("after", resp.Next)
	}
	if *asJSON {
		if all == nil {
			all = []json.RawMessage{}
		}
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tMAC\tMACHINE\tHOSTNAME\tRACK\tSTATE\tEXPIRES\tLAST")
	for _, raw := range all {
		var l leaseOut
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("the region's lease list: %w", err)
		}
		machine := l.MachineHostname
		if machine == "" {
			machine = l.MachineID
		}
		expires := "-"
		if l.Expires != nil {
			expires = l.Expires.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.IP, l.MAC, dash(machine), dash(l.Hostname), l.RackID,
			l.LastAction, expires, l.At.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

// subnetID resolves a subnet given by id, or by CIDR: the id of the
// region's subnet with that CIDR (of rackID's subnets when it is set; a
// CIDR two racks serve must be told apart with -rack), else "" and the
// CIDR itself, for a subnet a rack serves from a file of its own.
func (c *client) subnetID(ctx context.Context, subnet, rackID string) (string, netip.Prefix, error) {
	prefix, err := netip.ParsePrefix(subnet)
	if err != nil {
		// Not a CIDR: an id, which the region checks.
		return subnet, netip.Prefix{}, nil
	}
	prefix = prefix.Masked()
	q := url.Values{}
	if rackID != "" {
		q.Set("rack_id", rackID)
	}
	var list struct {
		Subnets []subnetOut `json:"subnets"`
	}
	if err := c.get(ctx, "/api/v1/subnets", q, &list); err != nil {
		return "", prefix, err
	}
	var found []string
	for _, s := range list.Subnets {
		if p, err := netip.ParsePrefix(s.CIDR); err == nil && p.Masked() == prefix {
			found = append(found, s.ID)
		}
	}
	switch len(found) {
	case 0:
		return "", prefix, nil
	case 1:
		return found[0], prefix, nil
	}
	return "", prefix, errors.New("subnet " + prefix.String() + " is served by more than one rack: name the rack with -rack, or give the subnet's id")
}
