package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// subnetOut is what the CLI shows of a subnet.
type subnetOut struct {
	ID        string `json:"id"`
	RackID    string `json:"rack_id"`
	CIDR      string `json:"cidr"`
	Interface string `json:"interface"`
	Ranges    []struct {
		Start string `json:"start"`
		End   string `json:"end"`
	} `json:"ranges"`
	Router       string `json:"router"`
	Reservations []struct {
		MAC string `json:"mac"`
	} `json:"reservations"`
	Version int64 `json:"version"`
}

// runSubnets lists subnets.
func runSubnets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("subnets", flag.ContinueOnError)
	c := clientFlags(fs)
	rack := fs.String("rack", "", "only the subnets of this rack (name or id)")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	q := url.Values{}
	if *rack != "" {
		id, err := c.rackID(ctx, *rack)
		if err != nil {
			return err
		}
		q.Set("rack_id", id)
	}
	var raw json.RawMessage
	if err := c.get(ctx, "/api/v1/subnets", q, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	var list struct {
		Subnets []subnetOut `json:"subnets"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRACK\tCIDR\tINTERFACE\tRANGES\tROUTER\tRESERVATIONS")
	for _, s := range list.Subnets {
		var ranges []string
		for _, r := range s.Ranges {
			ranges = append(ranges, r.Start+"-"+r.End)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.ID, s.RackID, s.CIDR, dash(s.Interface), dash(strings.Join(ranges, ",")),
			dash(s.Router), len(s.Reservations))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const subnetUsage = `usage: rackplane subnet create -rack ID -cidr CIDR [flags]
       rackplane subnet update ID [flags]   (only the flags given change)
       rackplane subnet show ID
       rackplane subnet delete ID`

// runSubnet creates, shows, changes or deletes one subnet.
func runSubnet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(subnetUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("subnet "+verb, flag.ContinueOnError)
	c := clientFlags(fs)
	flagFields := subnetFlags(fs)
	// fields is the body of the flags given, -rack by name or id.
	fields := func(fs *flag.FlagSet) (map[string]any, error) {
		body, err := flagFields(fs)
		if rack, ok := body["rack_id"].(string); ok && err == nil {
			body["rack_id"], err = c.rackID(ctx, rack)
		}
		return body, err
	}
	if err := parse(fs, args[1:], stderr); err != nil {
		return err
	}
	var out json.RawMessage
	switch verb {
	case "create":
		if fs.NArg() != 0 {
			return errors.New(subnetUsage)
		}
		body, err := fields(fs)
		if err != nil {
			return err
		}
		if err := c.send(ctx, "POST", "/api/v1/subnets", body, &out); err != nil {
			return err
		}
	case "update", "show", "delete":
		if fs.NArg() != 1 {
			return errors.New(subnetUsage)
		}
		path := "/api/v1/subnets/" + url.PathEscape(fs.Arg(0))
		switch verb {
		case "show":
			if err := c.get(ctx, path, nil, &out); err != nil {
				return err
			}
		case "delete":
			return c.send(ctx, "DELETE", path, nil, nil)
		default:
			body, err := fields(fs)
			if err != nil {
				return err
			}
			if err := c.send(ctx, "PATCH", path, body, &out); err != nil {
				return err
			}
		}
	default:
		return errors.New(subnetUsage)
	}
	_, err := stdout.Write(out)
	return err
}

// subnetFlags defines the flags of a subnet's fields; the function it
// returns builds the request body of the flags that were given.
func subnetFlags(fs *flag.FlagSet) func(*flag.FlagSet) (map[string]any, error) {
	fs.String("rack", "", "the rack that serves the subnet, by name or id")
	fs.String("cidr", "", "the subnet, such as 10.20.0.0/24")
	fs.String("interface", "", "the rack's interface on the subnet (default: its -dhcp-interface)")
	fs.String("range", "", "dynamic ranges, comma separated: 10.20.0.100-10.20.0.199,...")
	fs.String("router", "", "the default gateway")
	fs.String("dns", "", "DNS servers, comma separated")
	fs.String("domain", "", "the domain name")
	fs.String("search", "", "domain search list, comma separated")
	fs.Duration("lease", 0, "lease time, such as 1h (0: the rack's default)")
	fs.String("reserve", "", "reservations, comma separated: MAC=IP or MAC=IP=HOSTNAME")
	list := func(v string) []string {
		out := []string{}
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return func(fs *flag.FlagSet) (map[string]any, error) {
		body := map[string]any{}
		var errs []error
		fs.Visit(func(f *flag.Flag) {
			v := f.Value.String()
			switch f.Name {
			case "rack":
				body["rack_id"] = v
			case "cidr", "interface", "router", "domain":
				body[f.Name] = v
			case "dns":
				body["dns_servers"] = list(v)
			case "search":
				body["search_domains"] = list(v)
			case "lease":
				d, _ := time.ParseDuration(v)
				body["lease_seconds"] = int64(d / time.Second)
			case "range":
				ranges := []map[string]string{}
				for _, r := range list(v) {
					start, end, ok := strings.Cut(r, "-")
					if !ok {
						errs = append(errs, fmt.Errorf("-range %q: want START-END", r))
					}
					ranges = append(ranges, map[string]string{"start": start, "end": end})
				}
				body["ranges"] = ranges
			case "reserve":
				res := []map[string]string{}
				for _, r := range list(v) {
					parts := strings.Split(r, "=")
					if len(parts) < 2 || len(parts) > 3 {
						errs = append(errs, fmt.Errorf("-reserve %q: want MAC=IP or MAC=IP=HOSTNAME", r))
						continue
					}
					e := map[string]string{"mac": parts[0], "ip": parts[1]}
					if len(parts) == 3 {
						e["hostname"] = parts[2]
					}
					res = append(res, e)
				}
				body["reservations"] = res
			}
		})
		return body, errors.Join(errs...)
	}
}
