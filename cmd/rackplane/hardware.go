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

// hardware is what the CLI shows of GET /api/v1/machines/{id}/hardware.
type hardware struct {
	MachineID   string    `json:"machine_id"`
	RackID      string    `json:"rack_id"`
	OperationID string    `json:"operation_id"`
	CollectedAt time.Time `json:"collected_at"`
	ReportedAt  time.Time `json:"reported_at"`
	Summary     struct {
		Arch        string `json:"arch"`
		CPUModel    string `json:"cpu_model"`
		Sockets     int    `json:"sockets"`
		Cores       int    `json:"cores"`
		Threads     int    `json:"threads"`
		MemoryBytes int64  `json:"memory_bytes"`
		Firmware    string `json:"firmware"`
		SecureBoot  *bool  `json:"secure_boot"`
	} `json:"summary"`
	Inventory struct {
		Disks []struct {
			Name       string `json:"name"`
			SizeBytes  int64  `json:"size_bytes"`
			Model      string `json:"model"`
			Serial     string `json:"serial"`
			Rotational bool   `json:"rotational"`
		} `json:"disks"`
		NICs []struct {
			Name      string `json:"name"`
			MAC       string `json:"mac"`
			Driver    string `json:"driver"`
			Link      string `json:"link"`
			SpeedMbps int    `json:"speed_mbps"`
			Boot      bool   `json:"boot"`
		} `json:"nics"`
		DMI struct {
			Vendor  string `json:"vendor"`
			Product string `json:"product"`
			Serial  string `json:"serial"`
		} `json:"dmi"`
	} `json:"inventory"`
}

// runHardware is `rackplane machine hardware MACHINE`.
func runHardware(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rackplane machine hardware [-json] MACHINE   (an id or a host name)"
	fs := flag.NewFlagSet("machine hardware", flag.ContinueOnError)
	c := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print the whole inventory as JSON")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(usage)
	}
	id, err := c.machineID(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.get(ctx, "/api/v1/machines/"+url.PathEscape(id)+"/hardware", nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	var h hardware
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("region API: %w", err)
	}
	return showHardware(stdout, h)
}

// showHardware prints a summary, then the disks and NICs.
func showHardware(w io.Writer, h hardware) error {
	s := h.Summary
	fw := s.Firmware
	if s.SecureBoot != nil && *s.SecureBoot {
		fw += " (Secure Boot)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"arch", s.Arch},
		{"cpu", fmt.Sprintf("%s: %d socket(s), %d cores, %d threads", s.CPUModel, s.Sockets, s.Cores, s.Threads)},
		{"memory", humanBytes(s.MemoryBytes)},
		{"firmware", fw},
		{"system", strings.TrimSpace(strings.Join([]string{h.Inventory.DMI.Vendor, h.Inventory.DMI.Product, h.Inventory.DMI.Serial}, " "))},
		{"reported", fmt.Sprintf("%s by rack %s (collected %s)", h.ReportedAt.Local().Format(time.DateTime), h.RackID,
			h.CollectedAt.Local().Format(time.DateTime))},
	} {
		if row[1] == "" {
			row[1] = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", strings.ToUpper(row[0]), row[1])
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "DISK\tSIZE\tMODEL\tSERIAL\tKIND")
	for _, d := range h.Inventory.Disks {
		kind := "ssd"
		if d.Rotational {
			kind = "hdd"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, humanBytes(d.SizeBytes), dash(d.Model), dash(d.Serial), kind)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NIC\tMAC\tDRIVER\tLINK\tSPEED\tBOOT")
	for _, n := range h.Inventory.NICs {
		speed, boot := "-", ""
		if n.SpeedMbps > 0 {
			speed = fmt.Sprintf("%d Mb/s", n.SpeedMbps)
		}
		if n.Boot {
			boot = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.MAC, dash(n.Driver), n.Link, speed, boot)
	}
	return tw.Flush()
}

// humanBytes prints n in binary units, as the inventory's sizes are
// mostly powers of two (memory) or close enough (disks).
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// runTags is `rackplane machine tags MACHINE [TAG...]`: the machine's
// tags, or with tags given, those replace them (-clear: none).
func runTags(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rackplane machine tags MACHINE [TAG...]   show the tags, or replace them with those given\n" +
		"       rackplane machine tags -clear MACHINE         remove every tag"
	fs := flag.NewFlagSet("machine tags", flag.ContinueOnError)
	c := clientFlags(fs)
	clearAll := fs.Bool("clear", false, "remove every tag")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() == 0 || *clearAll && fs.NArg() > 1 {
		return errors.New(usage)
	}
	id, err := c.machineID(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	var m struct {
		Tags []string `json:"tags"`
	}
	path := "/api/v1/machines/" + url.PathEscape(id)
	if fs.NArg() == 1 && !*clearAll {
		if err := c.get(ctx, path, nil, &m); err != nil {
			return err
		}
	} else {
		tags := fs.Args()[1:]
		if err := c.send(ctx, "PUT", path+"/tags", map[string]any{"tags": tags}, &m); err != nil {
			return err
		}
	}
	for _, t := range m.Tags {
		fmt.Fprintln(stdout, t)
	}
	return nil
}
