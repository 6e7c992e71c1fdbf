package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

const powerUsage = `usage: rackplane machine power set [flags] MACHINE   set how the region reaches the machine's BMC
       rackplane machine power show MACHINE          the parameters (never the password) and the last known power state
       rackplane machine power on|off|cycle MACHINE  run the action through the rack that drives the machine
       rackplane machine power status MACHINE        ask that rack for the power state now
MACHINE is an id or a host name`

// powerParams is what the CLI shows of GET /api/v1/machines/{id}/power.
type powerParams struct {
	Driver              string            `json:"driver"`
	Address             string            `json:"address"`
	Port                int               `json:"port"`
	Username            string            `json:"username"`
	Extra               map[string]string `json:"extra"`
	RackID              string            `json:"rack_id"`
	DrivingRackID       *string           `json:"driving_rack_id"`
	PasswordSet         bool              `json:"password_set"`
	PasswordFingerprint string            `json:"password_fingerprint"`
	PowerState          string            `json:"power_state"`
	PowerCheckedAt      *time.Time        `json:"power_checked_at"`
	PowerOutcome        string            `json:"power_outcome"`
	PowerError          string            `json:"power_error"`
	// State and Outcome are an action's answer.
	State   string `json:"state"`
	Outcome string `json:"outcome"`
}

// extras collects repeated -extra name=value flags.
type extras map[string]string

func (e extras) String() string {
	var out []string
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func (e extras) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want name=value", s)
	}
	e[k] = v
	return nil
}

// runPower is `rackplane machine power`.
func runPower(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(powerUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("machine power "+sub, flag.ContinueOnError)
	c := clientFlags(fs)
	timeout := fs.Duration("timeout", 75*time.Second, "how long the region waits for the rack (status, on, off, cycle)")
	var driver, address, username, passwordFile, rackID *string
	var port *int
	var noPassword *bool
	ex := extras{}
	switch sub {
	case "set":
		driver = fs.String("driver", "", "the power driver: ipmi, qemu, webhook or a rack's script driver (required)")
		address = fs.String("address", "", "the BMC's address, as the driver takes it (host, socket path, ...)")
		port = fs.Int("port", 0, "the BMC's port (0: the driver's default)")
		username = fs.String("username", "", "the BMC user")
		passwordFile = fs.String("password-file", "", "read the BMC password from this file (- for standard input); not given: the stored password stays")
		noPassword = fs.Bool("no-password", false, "remove the stored password")
		rackID = fs.String("rack", "", "the rack that drives the machine, by name or id (default: the machine's boot rack)")
		fs.Var(ex, "extra", "a driver setting, name=value (repeatable), such as cipher_suite=3")
	case "show", "on", "off", "cycle", "status":
	default:
		return errors.New(powerUsage)
	}
	if err := parse(fs, args[1:], stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(powerUsage)
	}
	// The client's own deadline must outlast the region's wait.
	c.http.Timeout = *timeout + 15*time.Second
	id, err := c.machineID(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	path := "/api/v1/machines/" + url.PathEscape(id) + "/power"
	q := url.Values{"timeout": {timeout.String()}}
	var p powerParams
	switch sub {
	case "set":
		body := map[string]any{"driver": *driver, "address": *address, "port": *port, "username": *username, "extra": map[string]string(ex)}
		if *rackID != "" {
			if body["rack_id"], err = c.rackID(ctx, *rackID); err != nil {
				return err
			}
		}
		switch {
		case *noPassword && *passwordFile != "":
			return errors.New("-no-password and -password-file do not go together")
		case *noPassword:
			body["password"] = ""
		case *passwordFile != "":
			pw, err := readPassword(*passwordFile, os.Stdin)
			if err != nil {
				return err
			}
			body["password"] = pw
		}
		if err := c.send(ctx, "PUT", path, body, &p); err != nil {
			return err
		}
		return showPower(stdout, p)
	case "show":
		if err := c.get(ctx, path, url.Values{"live": {"false"}}, &p); err != nil {
			return err
		}
		return showPower(stdout, p)
	case "status":
		if err := c.get(ctx, path, q, &p); err != nil {
			return err
		}
		fmt.Fprintln(stdout, p.PowerState)
		return nil
	}
	if err := c.send(ctx, "POST", path+"/"+sub+"?"+q.Encode(), nil, &p); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\t%s\t%s\n", fs.Arg(0), p.State, p.Outcome)
	return nil
}

// readPassword reads a password file ("-": in), without its trailing
// line break.
func readPassword(path string, in io.Reader) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(in, 4096))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("password: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func showPower(w io.Writer, p powerParams) error {
	rack := "-"
	if p.DrivingRackID != nil {
		rack = *p.DrivingRackID
		if p.RackID == "" {
			rack += " (the boot rack)"
		}
	}
	password := "not set"
	if p.PasswordSet {
		password = "set, fingerprint " + p.PasswordFingerprint
	}
	checked := "never"
	if p.PowerCheckedAt != nil {
		checked = p.PowerCheckedAt.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "driver:    %s\naddress:   %s\nport:      %d\nusername:  %s\npassword:  %s\nextra:     %s\nrack:      %s\npower:     %s (checked %s)\n",
		p.Driver, p.Address, p.Port, p.Username, password, extras(p.Extra), rack, p.PowerState, checked)
	if p.PowerError != "" {
		fmt.Fprintf(w, "last error: %s: %s\n", p.PowerOutcome, p.PowerError)
	}
	return nil
}

// machineID is the id of the machine named by id or host name.
func (c *client) machineID(ctx context.Context, name string) (string, error) {
	if _, err := uuid.Parse(name); err == nil {
		return name, nil
	}
	ms, err := c.listMachines(ctx, url.Values{"hostname": {name}})
	if err != nil {
		return "", err
	}
	var ids []string
	for _, m := range ms {
		if m.Hostname == name {
			ids = append(ids, m.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no machine with the host name %q (rackplane machines lists them; give a host name or an id)", name)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("%d machines have the host name %q; give the id of the one you mean: %s", len(ids), name, strings.Join(ids, ", "))
}
