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

	"github.com/google/uuid"

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
}

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
	status := fs.String("status", "", "only machines with this status ("+strings.Join(events.MachineStatuses, ", ")+")")
	osName := fs.String("os", "", "only machines deployed with this OS")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	q := url.Values{}
	if *status != "" {
		q.Set("status", *status)
	}
	if *osName != "" {
		q.Set("os", *osName)
	}
	ms, err := c.listMachines(ctx, q)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tSTATUS\tMACS\tDEPLOYMENT")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.ID, m.Hostname, m.Status, strings.Join(m.MACs, ","), m.deployment())
	}
	return tw.Flush()
}

// runMachine creates or changes one machine.
func runMachine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rackplane machine create -hostname NAME -mac MAC[,MAC...] [-arch ARCH] [-boot-file FILE]\n" +
		"       rackplane machine update ID [-hostname NAME] [-mac MAC[,MAC...]] [-arch ARCH] [-boot-file FILE]\n" +
		"       rackplane machine power set|show|on|off|cycle|status [flags] MACHINE"
	if len(args) > 0 && args[0] == "power" {
		return runPower(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "create" && args[0] != "update" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("machine "+args[0], flag.ContinueOnError)
	c := clientFlags(fs)
	fs.String("hostname", "", "the machine's host name")
	fs.String("mac", "", "its MAC addresses, comma separated")
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
		if err := c.send(ctx, "PATCH", "/api/v1/machines/"+url.PathEscape(fs.Arg(0)), body, &m); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, m.ID)
	return nil
}

// runDeploy carries a lifecycle action (deploy, release, mark-...) out on
// each machine named, by id or host name, and reports on each: one
// machine's refusal does not stop the others.
func runDeploy(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	c := clientFlags(fs)
	var osName, release, preseed, kparams, reason *string
	if action == "mark-failed" || action == "mark-broken" {
		reason = fs.String("reason", "", "why, for the machine's record")
	}
	if action == "deploy" {
		osName = fs.String("os", "", "the OS to install (required)")
		release = fs.String("release", "", "its release (required)")
		preseed = fs.String("preseed", "", "the preseed to use (default: the most specific one that matches)")
		kparams = fs.String("kernel-params", "", "extra kernel parameters, space separated")
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
		body = map[string]any{"os": *osName, "release": *release, "preseed": *preseed, "kernel_params": strings.Fields(*kparams)}
	}
	if reason != nil && *reason != "" {
		body = map[string]any{"reason": *reason}
	}
	var byName map[string]machine
	failed := 0
	for _, name := range fs.Args() {
		id := name
		if _, err := uuid.Parse(name); err != nil {
			if byName == nil {
				ms, err := c.listMachines(ctx, url.Values{})
				if err != nil {
					return err
				}
				byName = map[string]machine{}
				for _, m := range ms {
					byName[m.Hostname] = m
				}
			}
			m, ok := byName[name]
			if !ok {
				fmt.Fprintf(stdout, "%s\tno such machine\n", name)
				failed++
				continue
			}
			id = m.ID
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
