package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/agent"
	"github.com/rackplane/rackplane/internal/inventory"
)

const usage = `usage: rackplane-agent <command> [flags]

commands:
  run         commission: report this machine's inventory to its rack, then exit;
              with rackplane.purpose=erase, erase its disks (rackplane.erase=quick|full);
              with rackplane.purpose=deploy, write the rack's disk image and reboot into it
  inventory   print this machine's hardware inventory as JSON
  version     print the agent's version
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rackplane-agent:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stderr)
	case "inventory":
		return inventoryCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, rackplane.Version)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func inventoryCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "/", "directory holding the /proc and /sys to read")
	bootMAC := fs.String("boot-mac", "", "MAC of the NIC the machine booted from (default: rackplane.mac= or BOOTIF= of the kernel command line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("inventory: unexpected arguments %q", fs.Args())
	}
	mac := *bootMAC
	if mac != "" {
		if _, err := events.CanonicalMAC(mac); err != nil {
			return fmt.Errorf("-boot-mac: %w", err)
		}
	} else if cmdline, err := os.ReadFile(filepath.Join(*root, "proc/cmdline")); err == nil {
		mac = inventory.BootMAC(string(cmdline))
	}
	col, err := inventory.CollectMachine(context.Background(), *root, mac)
	if err != nil {
		return err
	}
	inv := col.Inventory
	if col.BMCErr != nil {
		fmt.Fprintf(stderr, "rackplane-agent: warning: %v\n", col.BMCErr)
	}
	if mac != "" && !hasBoot(inv) {
		fmt.Fprintf(stderr, "rackplane-agent: warning: no NIC has the boot MAC %s\n", mac)
	}
	b, err := events.EncodeInventory(inv)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

func runCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := agent.Config{}
	fs.StringVar(&cfg.URL, "url", "", "URL to report to, <rack>/agent/<machine>/<credential> (default: rackplane.agent= of the kernel command line)")
	fs.StringVar(&cfg.Root, "root", "/", "directory holding the /proc and /sys to read")
	fs.StringVar(&cfg.BootMAC, "boot-mac", "", "MAC of the NIC the machine booted from (default: rackplane.mac= or BOOTIF= of the kernel command line)")
	fs.IntVar(&cfg.Attempts, "attempts", 8, "tries of each request before the agent gives up")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "bound of each try of a request")
	fs.DurationVar(&cfg.Backoff, "backoff", time.Second, "wait after a request's first failed try, doubled after each up to 30s")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}
	if cfg.BootMAC != "" {
		if _, err := events.CanonicalMAC(cfg.BootMAC); err != nil {
			return fmt.Errorf("-boot-mac: %w", err)
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	// Bounded as a whole too: whatever happens, the agent ends and the
	// machine powers off. Writing a disk image takes as long as the
	// image and the network make it.
	bound := 30 * time.Minute
	if cmdline, err := os.ReadFile(filepath.Join(cfg.Root, "proc/cmdline")); err == nil &&
		strings.Contains(" "+string(cmdline)+" ", " "+agent.PurposeParam+"="+events.BootPurposeDeploy+" ") {
		bound = 6 * time.Hour
		cfg.Reboot = func() error { return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	return agent.Run(ctx, cfg)
}

func hasBoot(inv events.Inventory) bool {
	for _, n := range inv.NICs {
		if n.Boot {
			return true
		}
	}
	return false
}
