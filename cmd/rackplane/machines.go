package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/rackplane/rackplane/events"
)

// machine is what the CLI shows of a machine.
type machine struct {
	ID             string   `json:"id"`
	Hostname       string   `json:"hostname"`
	MACs           []string `json:"macs"`
	Arch           string   `json:"arch"`
	Status         string   `json:"status"`
	OS             string   `json:"os"`
	Release        string   `json:"release"`
	ImageVersionID string   `json:"image_version_id"`
	PreseedName    string   `json:"preseed_name"`
	PreseedVersion int64    `json:"preseed_version"`
	Tags           []string `json:"tags"`
	Hardware       *struct {
		Cores       int    `json:"cores"`
		MemoryBytes int64  `json:"memory_bytes"`
		Disks       int    `json:"disks"`
		DiskBytes   int64  `json:"disk_bytes"`
		Firmware    string `json:"firmware"`
	} `json:"hardware"`
}

// hardware sums the machine's hardware up in a few words, "-" when it was
// never commissioned.
func (m machine) hardware() string {
	h := m.Hardware
	if h == nil {
		return "-"
	}
	return fmt.Sprintf("%dc %s %dd/%s %s", h.Cores, humanBytes(h.MemoryBytes), h.Disks, humanBytes(h.DiskBytes), h.Firmware)
}

// multi collects a repeated flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func (m machine) deployment() string {
	if m.OS == "" {
		return "-"
	}
	s := m.OS + "/" + m.Release
	if m.PreseedName != "" {
		s += fmt.Sprintf(" (preseed %s@%d)", m.PreseedName, m.PreseedVersion)
	}
	return s
}

// listMachines pages through the machines matching q.
func (c *client) listMachines(ctx context.Context, q url.Values) ([]machine, error) {
	var all []machine
	q.Set("limit", "1000")
	for {
		var page struct {
			Machines []machine `json:"machines"`
			Next     string    `json:"next"`
		}
		if err := c.get(ctx, "/api/v1/machines", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Machines...)
		if page.Next == "" {
			return all, nil
		}
		q.Set("after", page.Next)
	}
}

func runMachines(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("machines", flag.ContinueOnError)
	c := clientFlags(fs)
	// Each flag is the API's filter of the same name (min-cores is
	// min_cores); the region checks the values and names any it cannot
	// use.
	filters := []struct{ flag, param, usage string }{
		{"status", "status", "only machines with this status (" + strings.Join(events.MachineStatuses, ", ") + ")"},
		{"os", "os", "only machines deployed with this OS"},
		{"arch", "arch", "only machines of this architecture (the hardware's when commissioned)"},
		{"min-cores", "min_cores", "only machines with at least this many CPU cores"},
		{"min-memory", "min_memory", "only machines with at least this much memory: bytes, or with a unit such as 64GiB"},
		{"min-disks", "min_disks", "only machines with at least this many disks"},
		{"min-disk-size", "min_disk_size", "only machines whose largest disk has at least this size, such as 1TB"},
	}
	vals := make([]*string, len(filters))
	for i, f := range filters {
		vals[i] = fs.String(f.flag, "", f.usage)
	}
	var tags multi
	fs.Var(&tags, "tag", "only machines with this tag (repeatable: all of them)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	q := url.Values{}
	for i, f := range filters {
		if *vals[i] != "" {
			q.Set(f.param, *vals[i])
		}
	}
	for _, t := range tags {
		q.Add("tag", t)
	}
	ms, err := c.listMachines(ctx, q)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tSTATUS\tMACS\tHARDWARE\tTAGS\tDEPLOYMENT")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Hostname, m.Status, strings.Join(m.MACs, ","), m.hardware(),
			dash(strings.Join(m.Tags, ",")), m.deployment())
	}
	return tw.Flush()
}

// runMachine creates or changes one machine.
func runMachine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rackplane machine create -hostname NAME -mac MAC[,MAC...] [-arch ARCH] [-boot-file FILE]\n" +
		"       rackplane machine update MACHINE [-hostname NAME] [-mac MAC[,MAC...]] [-arch ARCH] [-boot-file FILE]\n" +
		"       rackplane machine power set|show|on|off|cycle|status [flags] MACHINE\n" +
		"       rackplane machine hardware [-json] MACHINE\n" +
		"       rackplane machine tags MACHINE [TAG...]\n" +
		"       rackplane machine scripts [-output] MACHINE"
	if len(args) > 0 {
		switch args[0] {
		case "power":
			return runPower(ctx, args[1:], stdout, stderr)
		case "hardware":
			return runHardware(ctx, args[1:], stdout, stderr)
		case "tags":
			return runTags(ctx, args[1:], stdout, stderr)
		case "scripts":
			return runMachineScripts(ctx, args[1:], stdout, stderr)
		}
	}
	if len(args) == 0 || args[0] != "create" && args[0] != "update" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("machine "+args[0], flag.ContinueOnError)
	c := clientFlags(fs)
	fs.String("hostname", "", "the machine's host name")
	fs.String("mac", "", "its MAC addresses, comma separated, such as 52:54:00:12:34:56 (the NIC it boots from first)")
	fs.String("arch", "amd64", "its architecture")
	fs.String("boot-file", "", "its own boot file, for firmware that needs another than the rack would choose: a file name (PXE) or an http(s) URL (HTTP boot, iPXE); \"\" clears it")
	if err := parse(fs, args[1:], stderr); err != nil {
		return err
	}
	body := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "hostname", "arch":
			body[f.Name] = f.Value.String()
		case "mac":
			body["macs"] = strings.Split(f.Value.String(), ",")
		case "boot-file":
			body["boot_file"] = f.Value.String()
		}
	})
	var m machine
	if args[0] == "create" {
		if err := createFlagsGiven(body); err != nil {
			return err
		}
		if _, ok := body["arch"]; !ok {
			body["arch"] = "amd64"
		}
		if err := c.send(ctx, "POST", "/api/v1/machines", body, &m); err != nil {
			return err
		}
	} else {
		if fs.NArg() != 1 {
			return errors.New(usage)
		}
		id, err := c.machineID(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		if err := c.send(ctx, "PATCH", "/api/v1/machines/"+url.PathEscape(id), body, &m); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, m.ID)
	return nil
}

// runDeploy carries a lifecycle action (deploy, commission, release,
// mark-...) out on each machine named, by id or host name, and reports on
// each: one machine's refusal does not stop the others.
func runDeploy(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	c := clientFlags(fs)
	var osName, release, preseed, kparams, disk, reason *string
	if action == "mark-failed" || action == "mark-broken" {
		reason = fs.String("reason", "", "why, for the machine's record")
	}
	var powerOff *bool
	var erase *string
	if action == "release" {
		powerOff = fs.Bool("power-off", true, "switch the machine off before it is ready; -power-off=false leaves its power alone (not given: the region's -release-power-off)")
		erase = fs.String("erase", "", "erase the machine's disks before it is ready: none, quick (partition tables and signatures) or full (every byte zeroed); the machine boots the ephemeral environment to do it (not given: the region's -release-erase)")
	}
	if action == "deploy" {
		osName = fs.String("os", "", "the OS to install (required)")
		release = fs.String("release", "", "its release (required)")
		preseed = fs.String("preseed", "", "the preseed to use (default: the most specific one that matches)")
		kparams = fs.String("kernel-params", "", "extra kernel parameters, space separated")
		disk = fs.String("disk", "", "for a disk image: the disk to write it to, a name, serial, WWID or by-id path of the machine's inventory (default: its largest)")
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("usage: rackplane %s [flags] MACHINE...  (ids or host names)", action)
	}
	var body any
	if action == "deploy" {
		if *osName == "" || *release == "" {
			return errors.New("deploy needs -os and -release")
		}
		b := map[string]any{"os": *osName, "release": *release, "preseed": *preseed, "kernel_params": strings.Fields(*kparams)}
		if *disk != "" {
			b["disk"] = *disk
		}
		body = b
	}
	if reason != nil && *reason != "" {
		body = map[string]any{"reason": *reason}
	}
	// Only a -power-off or -erase given says anything: else the region
	// decides.
	fs.Visit(func(f *flag.Flag) {
		b, _ := body.(map[string]any)
		if b == nil {
			b = map[string]any{}
		}
		switch f.Name {
		case "power-off":
			b["power_off"] = *powerOff
		case "erase":
			b["erase"] = *erase
		default:
			return
		}
		body = b
	})
	failed := 0
	for _, name := range fs.Args() {
		id, err := c.machineID(ctx, name)
		if err != nil {
			fmt.Fprintf(stdout, "%s\t%v\n", name, err)
			failed++
			continue
		}
		var m machine
		if err := c.send(ctx, "POST", "/api/v1/machines/"+url.PathEscape(id)+"/"+action, body, &m); err != nil {
			fmt.Fprintf(stdout, "%s\t%v\n", name, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s\t%s\t%s\n", m.Hostname, m.Status, m.deployment())
	}
	if failed > 0 {
		return fmt.Errorf("%s: %d of %d machines failed", action, failed, fs.NArg())
	}
	return nil
}

// createFlagsGiven names what machine create needs and was not given, with
// the form each takes, before anything is sent.
func createFlagsGiven(body map[string]any) error {
	var missing []string
	if h, _ := body["hostname"].(string); h == "" {
		missing = append(missing, "-hostname NAME (the machine's host name, such as node1)")
	}
	if _, ok := body["macs"]; !ok {
		missing = append(missing, "-mac MAC[,MAC...] (its MAC addresses, such as 52:54:00:12:34:56; the one it boots from first)")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("machine create needs %s", strings.Join(missing, " and "))
}
