package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// leaseScript is udhcpc's script: it appends what udhcpc was given.
const leaseScript = `#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip hostname=$hostname router=$router lease=$lease" >> %s
exit 0
`

// TestRegionSubnetReservedMAC: an operator creates a machine and a subnet
// with its reservation through regiond's API; rackd, in managed DHCP mode
// with no subnet of its own, receives the subnet and busybox udhcpc with
// the machine's MAC gets the reserved address and the machine's name. A
// rackd restarted with no NATS to reach serves it from its cache.
func TestRegionSubnetReservedMAC(t *testing.T) {
	endToEnd(t)
	busybox := netnstest.Need(t, "busybox", "busybox-static")
	const mac = "52:54:00:00:00:77"
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	clientNS := seg.Host("client", mac, "")

	ns := natsserver.StartTest(t)
	netnstest.Forward(t, rackNS, "127.0.0.1:4222", ns.Server.Addr().String())
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}

	dataDir := t.TempDir()
	rackd := func(natsURL string) *proc {
		return startCmd(t, "rackd", exec.Command("ip", "netns", "exec", rackNS, filepath.Join(binDir, "rackd"),
			"-name", "dhcp-rack", "-data-dir", dataDir, "-insecure-nats", "-nats-url", natsURL, "-http-addr", ":5248", "-tftp-addr", ":69",
			"-import-system-bootloaders=false", "-dhcp-mode", "managed", "-dhcp-interface", "eth0", "-log-level", "debug"))
	}
	rack := rackd("nats://127.0.0.1:4222")
	var rackID string
	eventually(t, 20*time.Second, "rackd online", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		if err != nil || len(rs) != 1 || !rs[0].Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		rackID = rs[0].ID
		return nil
	})

	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "node77", "macs": []string{mac}}, nil); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var sn struct{ ID string }
	if code := a.call("POST", "/api/v1/subnets", nil, map[string]any{
		"rack_id": rackID, "cidr": "10.20.0.0/24", "router": "10.20.0.1", "lease_seconds": 600,
		"ranges":       []map[string]string{{"start": "10.20.0.100", "end": "10.20.0.199"}},
		"reservations": []map[string]string{{"mac": mac, "ip": "10.20.0.77"}},
	}, &sn); code != 201 {
		t.Fatalf("create subnet: %d", code)
	}

	dir := t.TempDir()
	out := filepath.Join(dir, "leases")
	script := filepath.Join(dir, "udhcpc.script")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(leaseScript, out)), 0o755); err != nil {
		t.Fatal(err)
	}
	lease := func() string {
		_ = os.Remove(out)
		o, err := netnstest.Run(clientNS, busybox, "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "3", "-T", "1", "-s", script)
		got, _ := os.ReadFile(out)
		if err != nil {
			return fmt.Sprintf("udhcpc: %v\n%s", err, o)
		}
		return strings.TrimSpace(string(got))
	}
	const want = "ip=10.20.0.77 hostname=node77 router=10.20.0.1 lease=600"
	eventually(t, 30*time.Second, "the reserved address from rackd", func() error {
		if got := lease(); got != want {
			return fmt.Errorf("got %q\nwant %q\n%s", got, want, tail(rack.Output(), 20))
		}
		return nil
	})
	var r struct {
		DHCP struct {
			Mode       string
			Interfaces []string
			Subnets    []string
		}
	}
	eventually(t, 10*time.Second, "GET /racks/{id} shows the DHCP server", func() error {
		if code := a.call("GET", "/api/v1/racks/"+rackID, nil, nil, &r); code != 200 || r.DHCP.Mode != "managed" ||
			!slices.Equal(r.DHCP.Interfaces, []string{"eth0"}) || !slices.Equal(r.DHCP.Subnets, []string{"10.20.0.0/24"}) {
			return fmt.Errorf("%d %+v", code, r.DHCP)
		}
		return nil
	})

	// Restarted where NATS cannot be reached: the cached subnet is served.
	if err := rack.Stop(); err != nil {
		t.Fatalf("rackd did not stop cleanly: %v", err)
	}
	rack = rackd("nats://127.0.0.1:1")
	eventually(t, 30*time.Second, "the reserved address from rackd without NATS", func() error {
		if got := lease(); got != want {
			return fmt.Errorf("got %q\nwant %q\n%s", got, want, tail(rack.Output(), 20))
		}
		return nil
	})
}
