package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/routeradv"
)

// NSPrefix begins the name of every lab namespace: rackplane-lab-<pid>.
const NSPrefix = "rackplane-lab-"

// state is what a running lab records in its data directory, so that the
// next start with that directory finds the namespace a killed one left.
type state struct {
	Namespace string `json:"namespace"`
	PID       int    `json:"pid"`
}

func stateFile(dataDir string) string { return filepath.Join(labDir(dataDir), "state.json") }

// ip runs ip(8).
func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CleanStale deletes the namespace a lab with dataDir left when it was
// killed, with its taps, bridge and every process still in it (VMs, dev),
// and returns its name ("" when there was none). A lab still running
// with dataDir is an error: two labs cannot share a data directory.
func CleanStale(dataDir string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(stateFile(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || !strings.HasPrefix(st.Namespace, NSPrefix) || strings.ContainsAny(st.Namespace, "/ ") {
		log.Warn("lab: ignoring an unreadable state file", "path", stateFile(dataDir), "error", err)
		return "", os.Remove(stateFile(dataDir))
	}
	_, nsErr := os.Stat("/run/netns/" + st.Namespace)
	if nsErr == nil && st.PID > 0 && st.PID != os.Getpid() && syscall.Kill(st.PID, 0) != syscall.ESRCH && isLab(st.PID) {
		return "", fmt.Errorf("a lab runs with data directory %s already (process %d, namespace %s): stop it first", dataDir, st.PID, st.Namespace)
	}
	if err := deleteNamespace(st.Namespace); err != nil {
		return "", err
	}
	return st.Namespace, os.Remove(stateFile(dataDir))
}

// isLab says whether process pid is a rackplane (and not another program
// that got the pid of a lab killed long ago).
func isLab(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && strings.HasPrefix(filepath.Base(exe), "rackplane")
}

// deleteNamespace kills every process in namespace name and deletes it,
// which deletes the bridge and taps in it. A namespace that is not there
// is no error.
func deleteNamespace(name string) error {
	if _, err := os.Stat("/run/netns/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// The processes first: a namespace lives on while one is in it, and
	// its taps with it.
	for range 50 {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ip("netns", "del", name)
}

// network is the lab's namespace: a bridge with the rack's address and
// one tap per VM.
type network struct {
	ns     string
	bridge string
	taps   []string
}

// makeNetwork makes the namespace and records it in dataDir.
func makeNetwork(c Config, dataDir string) (*network, error) {
	n := &network{ns: NSPrefix + strconv.Itoa(os.Getpid()), bridge: "br0"}
	if err := os.MkdirAll(labDir(dataDir), 0o755); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(state{Namespace: n.ns, PID: os.Getpid()})
	// Recorded before it exists: a lab killed between the two leaves a
	// state file naming nothing, which CleanStale takes in its stride.
	if err := os.WriteFile(stateFile(dataDir), b, 0o644); err != nil {
		return nil, err
	}
	if err := ip("netns", "add", n.ns); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"-n", n.ns, "link", "set", "lo", "up"},
		{"-n", n.ns, "link", "add", n.bridge, "type", "bridge"},
		{"-n", n.ns, "addr", "add", fmt.Sprintf("%s/%d", c.rackIP(), c.Subnet.Bits()), "dev", n.bridge},
		// The source of the router advertisements (answerRouterSolicitations),
		// usable at once: no duplicate address detection.
		{"-n", n.ns, "addr", "add", "fe80::1/64", "dev", n.bridge, "nodad"},
		{"-n", n.ns, "link", "set", n.bridge, "up"},
	}
	for i := range c.VMs {
		tap := fmt.Sprintf("tap%d", i+1)
		n.taps = append(n.taps, tap)
		steps = append(steps, []string{"-n", n.ns, "tuntap", "add", tap, "mode", "tap"},
			[]string{"-n", n.ns, "link", "set", tap, "master", n.bridge, "up"})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			_ = n.remove(dataDir)
			return nil, err
		}
	}
	return n, nil
}

// answerRouterSolicitations answers the VMs' IPv6 router solicitations on
// the bridge (package routeradv), so that iPXE does not wait about 16
// seconds for a router before each boot, until ctx ends. The returned
// channel is closed when it has stopped.
func (n *network) answerRouterSolicitations(ctx context.Context, log *slog.Logger) (<-chan struct{}, error) {
	ran, err := routeradv.Start(ctx, n.ns, n.bridge, netip.MustParseAddr("fe80::1"))
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := <-ran; err != nil {
			log.Warn("lab: router advertisements stopped; iPXE waits for a router before each boot", "err", err)
		}
	}()
	return done, nil
}

// remove deletes the namespace (and what is left in it) and the record.
func (n *network) remove(dataDir string) error {
	err := deleteNamespace(n.ns)
	if rerr := os.Remove(stateFile(dataDir)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// forward passes every connection ln accepts on to addr, dialled by dial.
type forward struct {
	ln   net.Listener
	dial func() (net.Conn, error)
	wg   sync.WaitGroup
}

// startForward serves ln until close.
func startForward(ln net.Listener, dial func() (net.Conn, error)) *forward {
	f := &forward{ln: ln, dial: dial}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			// Dialled beside the loop: a dial that waits (up to its
			// timeout, while dev inside starts) holds up no other
			// client.
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				out, err := f.dial()
				if err != nil {
					in.Close()
					return
				}
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					dst.Close()
					src.Close()
				}
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					pipe(out, in)
				}()
				pipe(in, out)
			}()
		}
	}()
	return f
}

// close stops accepting; connections in flight end with their peers.
func (f *forward) close() { f.ln.Close() }

// dialIn dials addr from inside namespace ns.
func dialIn(ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// listenIn listens on TCP addr inside namespace ns.
func listenIn(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}
