package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: rackplane <command> [flags]

Run the system:
  dev                 embedded NATS, a region and a rack in one process, on the local PostgreSQL

Talk to a region (flags -api URL or host:port, -token; env RACKPLANE_API, RACKPLANE_TOKEN;
the token is also read from the file .rackplane/token, which rackplane dev writes). A rack
or a machine is named by its name (host name) or its id:
  racks               list racks, online ones first (-retired: the retired ones)
  racks retire RACK   retire an offline rack nothing depends on: it leaves the racks for
                      good and its NATS credential is revoked (-reason)
  rack RACK           show one rack
  rack revoke RACK    revoke a rack's NATS credential: it is refused and disconnected
  os                  what can be booted, on which racks (-live asks them now)
  images import RACK SOURCE   import boot images into a rack from a directory or URL
  images build-ephemeral      build the ephemeral environment (-arch, -out, -agent) from Debian packages,
                      as an image source directory to import
  images build-disk   build a small bootable disk image (-arch, -out) from Debian packages,
                      an image of installer family "agent", as an image source directory
  machines            list machines (-status, -os, -arch, -min-cores, -min-memory, -min-disks,
                      -min-disk-size, -tag)
  machine create      enrol a machine (-hostname, -mac, -boot-file)
  machine update MACHINE   change a machine (-hostname, -arch, -boot-file; "" clears the boot file)
  machine power set|show|on|off|cycle|status MACHINE
                      a machine's power parameters (-driver, -address, -username, -password-file, -extra,
                      -rack) and power actions through the rack that drives it
  machine hardware MACHINE   the machine's hardware as commissioning found it (-json: all of it)
  machine tags MACHINE [TAG...]   show a machine's tags, or replace them (-clear removes them)
  machine scripts MACHINE   what the commissioning scripts did on its latest commissioning (-output)
  scripts list|add|show|rm   commissioning scripts, run in name order on every machine commissioned:
                      add NAME FILE [-timeout 5m] [-description S]; the first that fails fails it
  subnets             list the subnets of managed DHCP (-rack RACK)
  subnet create|update|show|delete
                      a subnet of managed DHCP: its rack, CIDR, ranges, options, reservations
  leases              the DHCP leases the racks gave that are current, with the machine
                      of each MAC (-rack RACK, -subnet ID|CIDR, -mac MAC, -json)
  deploy MACHINE...   deploy machines, by id or host name (-os, -release, -preseed)
  commission MACHINE...
                      boot machines into the ephemeral environment, whose agent takes their
                      hardware inventory: ready when it succeeds, failed when it does not
  release MACHINE...  release machines: they boot from their disk again (-erase quick|full erases their disks first)
  mark-failed, mark-broken, mark-fixed MACHINE...
                      the same for the other lifecycle actions (-reason)
  events              print the event log (-f follows it)
  rejected            list messages the region refused, with why
  token               create, list or revoke API tokens
  join-token          create [-ttl 24h], list or revoke the tokens new racks join NATS with
  audit               print the audit log (-f follows it)
  version             print the version

Secure NATS:
  nats-init           make the keys, TLS certificate, server configuration and join token of a NATS
                      server secured for the region's auth callout (the compose stack runs it)
  nats-permissions RACK_ID   the static NATS user entry that confines a rack to its own subjects

Check a daemon:
  healthcheck URL     ask a /healthz once: exit 0 on a 2xx answer (-timeout 3s); the compose stack's
                      health checks

Run "rackplane <command> -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rackplane:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "racks":
		return runRacks(ctx, rest, stdout, stderr)
	case "rack":
		return runRack(ctx, rest, stdout, stderr)
	case "events":
		return runEvents(ctx, rest, stdout, stderr)
	case "rejected":
		return runRejected(ctx, rest, stdout, stderr)
	case "os":
		return runOS(ctx, rest, stdout, stderr)
	case "images":
		return runImages(ctx, rest, stdout, stderr)
	case "machines":
		return runMachines(ctx, rest, stdout, stderr)
	case "subnets":
		return runSubnets(ctx, rest, stdout, stderr)
	case "subnet":
		return runSubnet(ctx, rest, stdout, stderr)
	case "leases":
		return runLeases(ctx, rest, stdout, stderr)
	case "machine":
		return runMachine(ctx, rest, stdout, stderr)
	case "scripts":
		return runScripts(ctx, rest, stdout, stderr, os.Stdin)
	case "deploy", "commission", "release", "mark-failed", "mark-broken", "mark-fixed":
		return runDeploy(ctx, cmd, rest, stdout, stderr)
	case "token":
		return runToken(ctx, rest, stdout, stderr)
	case "join-token":
		return runJoinToken(ctx, rest, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "nats-init":
		return runNATSInit(ctx, rest, stdout, stderr)
	case "nats-permissions":
		return runNATSPermissions(ctx, rest, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, rest, stdout, stderr)
	case "version":
		return runVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
