package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
)

// Run runs the lab until ctx ends, then stops the VMs and dev and deletes
// the namespace; it returns once all that is done.
//
// dev runs as a process of its own inside the namespace (the same
// binary, `rackplane dev` with the rack on the lab bridge) rather than
// in this process with only its sockets opened there: the rack opens
// sockets long after its start (the DHCP server listens again when its
// subnets change, on interfaces it looks up by name), from goroutines on
// any thread, and every one of them must be in the namespace; a process
// in it has that for free. The region's API and NATS are forwarded from
// the host's addresses into the namespace, PostgreSQL on loopback the
// other way. What dev fetches from the Internet (simplestreams imports)
// it cannot reach from the namespace: the lab's images are built here.
func Run(ctx context.Context, c Config) (err error) {
	if err := c.Validate(); err != nil {
		return err
	}
	out := c.Stdout
	log := slog.New(slog.NewTextHandler(c.Stderr, nil))
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	if stale, err := CleanStale(dataDir, log); err != nil {
		return err
	} else if stale != "" {
		fmt.Fprintf(out, "lab: deleted namespace %s, which a lab killed earlier left\n", stale)
	}
	// The host's addresses first: a second dev on them is named before
	// anything is made.
	apiLn, err := net.Listen("tcp", c.APIAddr)
	if err != nil {
		return fmt.Errorf("-http-addr %s: %w (another rackplane dev? give -http-addr)", c.APIAddr, err)
	}
	natsLn, err := net.Listen("tcp", c.NATSAddr)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("-nats-addr %s: %w (another rackplane dev? give -nats-addr)", c.NATSAddr, err)
	}
	began := time.Now()
	netw, err := makeNetwork(c, dataDir)
	if err != nil {
		apiLn.Close()
		natsLn.Close()
		return err
	}
	fmt.Fprintf(out, "lab: network namespace %s: bridge %s %s/%d, taps %s\n", netw.ns, netw.bridge, c.rackIP(), c.Subnet.Bits(), strings.Join(netw.taps, " "))
	raCtx, stopRA := context.WithCancel(context.Background())
	raDone, raErr := netw.answerRouterSolicitations(raCtx, log)
	var vms []*vm
	var dev *exec.Cmd
	var devDone chan struct{}
	var forwards []*forward
	defer func() {
		// Everything goes, in order, whatever happened: VMs, dev, the
		// forwards, the namespace. The data directory stays.
		// The VMs are stopped all at once: QEMU's quit is quick, but a
		// VM that does not answer is waited for before it is killed.
		var stopping sync.WaitGroup
		for _, v := range vms {
			stopping.Add(1)
			go func() {
				defer stopping.Done()
				v.stop(5 * time.Second)
			}()
		}
		stopping.Wait()
		if dev != nil {
			_ = syscall.Kill(-dev.Process.Pid, syscall.SIGINT)
			select {
			case <-devDone:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-dev.Process.Pid, syscall.SIGKILL)
				<-devDone
			}
		}
		for _, f := range forwards {
			f.close()
		}
		stopRA()
		if raDone != nil {
			<-raDone
		}
		apiLn.Close()
		natsLn.Close()
		if rerr := netw.remove(dataDir); rerr != nil {
			err = errors.Join(err, rerr)
		} else {
			fmt.Fprintf(out, "lab: stopped %d VMs and dev, deleted namespace %s with its bridge and taps; kept %s\n", len(vms), netw.ns, dataDir)
		}
	}()

	if raErr != nil {
		return raErr
	}

	devAddr := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		return net.JoinHostPort(host, port)
	}
	for _, l := range []struct {
		ln   net.Listener
		addr string
	}{{apiLn, devAddr(c.APIAddr)}, {natsLn, devAddr(c.NATSAddr)}} {
		addr := l.addr
		forwards = append(forwards, startForward(l.ln, func() (net.Conn, error) { return dialIn(netw.ns, addr) }))
	}
	if f, err := forwardDatabase(netw.ns, c.DatabaseURL); err != nil {
		return err
	} else if f != nil {
		forwards = append(forwards, f)
	}

	subnets := filepath.Join(labDir(dataDir), "subnets.json")
	if err := writeSubnets(subnets, c); err != nil {
		return err
	}
	args := append([]string{"netns", "exec", netw.ns, c.Executable, "dev"}, c.DevArgs...)
	args = append(args, "-data-dir", dataDir, "-boot-interface", netw.bridge, "-dhcp-mode", "managed", "-dhcp-subnets", subnets)
	dev = exec.Command("ip", args...)
	dev.Stdout, dev.Stderr = c.Stdout, c.Stderr
	// A process group of its own: the terminal's Ctrl-C reaches the lab
	// alone, which stops the VMs before dev. Killed with the lab.
	dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := dev.Start(); err != nil {
		dev = nil
		return fmt.Errorf("start dev in %s: %w", netw.ns, err)
	}
	devDone = make(chan struct{})
	var devErr error
	go func() {
		devErr = dev.Wait()
		close(devDone)
	}()
	fmt.Fprintf(out, "lab: started rackplane dev in %s (process %d)\n", netw.ns, dev.Process.Pid)

	a, rackID, err := waitForDev(ctx, c, dataDir, devDone, &devErr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "lab: dev's rack %s is online (%s after the start)\n", rackID, time.Since(began).Round(100*time.Millisecond))

	eph, err := ensureImage(ctx, "ephemeral environment", ephemeralDir(dataDir), out, buildEphemeral(c.AgentSource, log))
	if err != nil {
		return err
	}
	disk, err := ensureImage(ctx, "disk image", diskImageDir(dataDir), out, buildDisk(log))
	if err != nil {
		return err
	}
	for _, im := range []image{eph, disk} {
		if err := importImage(ctx, a, rackID, im, out); err != nil {
			return err
		}
	}

	for i, tap := range netw.taps {
		v, err := c.newVM(dataDir, i, tap)
		if err != nil {
			return err
		}
		if err := c.start(v, netw.ns, c.Stderr); err != nil {
			return err
		}
		vms = append(vms, v)
	}
	banner(out, c, netw, vms, disk, time.Since(began))

	return watch(ctx, a, vms, devDone, &devErr, out)
}

// waitForDev waits for dev's token and its rack online, and returns a
// client of its API and the rack's id.
func waitForDev(ctx context.Context, c Config, dataDir string, devDone chan struct{}, devErr *error) (*client, string, error) {
	a := &client{base: "http://" + c.APIAddr, http: &http.Client{}}
	if host, port, _ := net.SplitHostPort(c.APIAddr); host == "" || net.ParseIP(host).IsUnspecified() {
		a.base = "http://" + net.JoinHostPort("127.0.0.1", port)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if a.token == "" {
			if b, err := os.ReadFile(filepath.Join(dataDir, "token")); err == nil {
				a.token = strings.TrimSpace(string(b))
			}
		}
		if a.token != "" {
			var racks struct {
				Racks []struct {
					ID, Name string
					Online   bool
				}
			}
			if err := a.do(ctx, "GET", "/api/v1/racks", nil, &racks, 200); err == nil {
				for _, r := range racks.Racks {
					if r.Online && r.Name == "dev-rack" || r.Online && rackNameIn(c.DevArgs, r.Name) {
						return a, r.ID, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-devDone:
			return nil, "", fmt.Errorf("rackplane dev ended: %v", *devErr)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, "", errors.New("dev's rack is not online after 2 minutes")
		}
	}
}

// rackNameIn says whether args give dev -rack-name name.
func rackNameIn(args []string, name string) bool {
	for i, a := range args {
		a = "-" + strings.TrimLeft(a, "-")
		if a == "-rack-name="+name || a == "-rack-name" && i+1 < len(args) && args[i+1] == name {
			return true
		}
	}
	return false
}

// forwardDatabase listens in ns where dev will dial PostgreSQL when that
// is TCP on loopback, and passes the connections to the host's server.
// A unix socket (a path) is reached from any namespace.
func forwardDatabase(ns, url string) (*forward, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return nil, nil
	}
	ips, err := net.LookupIP(cfg.Host)
	if err != nil || len(ips) == 0 || !ips[0].IsLoopback() {
		return nil, fmt.Errorf("database %s:%d: the lab reaches PostgreSQL on loopback or a unix socket only", cfg.Host, cfg.Port)
	}
	addr := net.JoinHostPort(ips[0].String(), fmt.Sprint(cfg.Port))
	ln, err := listenIn(ns, addr)
	if err != nil {
		return nil, fmt.Errorf("forward PostgreSQL into %s: %w", ns, err)
	}
	return startForward(ln, func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }), nil
}

// writeSubnets writes the rack's lab subnet: a range in the upper half,
// the rack as router and DNS server.
func writeSubnets(path string, c Config) error {
	p := c.Subnet.Masked()
	first := p.Addr()
	// The upper half of a /24 (.128 to .254); of a wider prefix, the
	// upper half of its first /24.
	start, end := first, first
	for range 128 {
		start = start.Next()
	}
	for range 254 {
		end = end.Next()
	}
	sn := []events.Subnet{{CIDR: p, Router: c.rackIP(), DNSServers: nil,
		Ranges: []events.SubnetRange{{Start: start, End: end}}}}
	sn[0].DNSServers = append(sn[0].DNSServers, c.rackIP())
	return writeJSON(path, sn)
}

// banner says what runs and what to try.
func banner(out io.Writer, c Config, n *network, vms []*vm, disk image, took time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nThe lab is up (%s): %d VMs PXE-boot from dev's rack on %s (namespace %s). Ctrl-C stops it all.\n\n",
		took.Round(time.Second), len(vms), c.Subnet, n.ns)
	fmt.Fprintf(&b, "  %-5s %-17s %-8s %-5s %s\n", "VM", "MAC", "firmware", "tap", "serial log / QMP socket")
	for _, v := range vms {
		fmt.Fprintf(&b, "  %-5s %-17s %-8s %-5s %s\n  %40s %s\n", v.name, v.mac, v.firmware, v.tap, v.serial, "", v.qmp)
	}
	// The client reads .rackplane/token and talks to 127.0.0.1:5240 by
	// itself; elsewhere it is told by its environment.
	env := ""
	if abs, _ := filepath.Abs(c.DataDir); abs != mustAbs(".rackplane") || c.APIAddr != "127.0.0.1:5240" {
		env = fmt.Sprintf("  export RACKPLANE_API=http://%s RACKPLANE_TOKEN=$(cat %s)\n", c.APIAddr, filepath.Join(abs, "token"))
	}
	fmt.Fprintf(&b, `
Each VM enlists as a new machine and commissions (a few minutes under TCG); the lab gives
it power driver qemu with its QMP socket. Then try:

%[1]s  rackplane machines                      # the VMs: new, commissioning, then ready
  rackplane deploy MACHINE -os %[2]s -release %[3]s   # the disk image; the rack powers the VM on over QMP
  rackplane machine power status MACHINE
  rackplane release MACHINE
  tail -f %[4]s

`, env, disk.os, disk.release, vms[0].serial)
	fmt.Fprint(out, b.String())
}

func mustAbs(p string) string {
	abs, _ := filepath.Abs(p)
	return abs
}

// watch gives each VM's machine, once enlisted, the qemu power driver
// with its QMP socket, says when a VM's QEMU ends, and returns when ctx
// ends (nil) or dev does (an error).
func watch(ctx context.Context, a *client, vms []*vm, devDone chan struct{}, devErr *error, out io.Writer) error {
	reported := map[*vm]bool{}
	for {
		for _, v := range vms {
			if v.exited() && !reported[v] {
				reported[v] = true
				fmt.Fprintf(out, "lab: %s's QEMU ended: %v (see %s)\n", v.name, v.err, v.serial)
			}
			if v.machineID != "" || ctx.Err() != nil {
				continue
			}
			var list struct {
				Machines []struct{ ID, Hostname, Status string }
			}
			if err := a.do(ctx, "GET", "/api/v1/machines?mac="+v.mac, nil, &list, 200); err != nil || len(list.Machines) != 1 {
				continue
			}
			m := list.Machines[0]
			if err := a.do(ctx, "PUT", "/api/v1/machines/"+m.ID+"/power", map[string]any{"driver": "qemu", "address": v.qmp}, nil, 200); err != nil {
				fmt.Fprintf(out, "lab: %s is machine %s, whose power parameters were not set: %v\n", v.name, m.Hostname, err)
				continue
			}
			v.machineID = m.ID
			fmt.Fprintf(out, "lab: %s (%s, %s) is machine %s (%s, %s): power driver qemu, %s\n", v.name, v.mac, v.firmware, m.Hostname, m.ID, m.Status, v.qmp)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-devDone:
			return fmt.Errorf("rackplane dev ended: %v", *devErr)
		case <-time.After(2 * time.Second):
		}
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
