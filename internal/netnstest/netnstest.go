package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/routeradv"
)

// Need fails the test when a tool is missing, naming its Debian package,
// and returns the tool's path.
func Need(t testing.TB, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (listed in .ci/packages)", tool, pkg)
	}
	return p
}

// Segment is an Ethernet segment: a bridge in a namespace of its own, and
// hosts, each a namespace with an eth0 on the bridge.
type Segment struct {
	t      testing.TB
	prefix string
	bridge string // namespace holding the bridge
	hosts  int
	ra     bool // the bridge answers router solicitations (routeradv)
}

// New makes an empty segment, removed when the test ends.
func New(t testing.TB) *Segment {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces: run it as root")
	}
	Need(t, "ip", "iproute2")
	sweep(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	// The test process's pid is in the name, so that a later run can
	// remove what a killed one (SIGKILL runs no cleanup) left behind.
	s := &Segment{t: t, prefix: fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), hex.EncodeToString(b[:]))}
	s.bridge = s.prefix + "-br"
	s.addNS(s.bridge)
	s.IP("-n", s.bridge, "link", "add", "br0", "type", "bridge")
	s.IP("-n", s.bridge, "link", "set", "br0", "up")
	return s
}

// nsPrefix begins the name of every namespace a segment makes:
// rpnet<pid of the test process>-<random>[-<host>].
const nsPrefix = "rpnet"

// sweep removes the namespaces of segments whose test process is gone.
func sweep(t testing.TB) {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s (left by process %d, gone): %v %s", e.Name(), pid, err, out)
		}
	}
}

func (s *Segment) addNS(name string) {
	s.t.Helper()
	s.IP("netns", "add", name)
	s.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			s.t.Logf("ip netns del %s: %v %s", name, err, out)
		}
	})
}

// IP runs ip(8) with args and fails the test when it fails.
func (s *Segment) IP(args ...string) {
	s.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		s.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Host adds a namespace with lo up and eth0 (MAC mac) on the bridge, with
// addr (such as 10.20.0.2/24) on it unless addr is empty. It returns the
// namespace's name.
func (s *Segment) Host(name, mac, addr string) string {
	s.t.Helper()
	ns := s.NS(name)
	s.addNS(ns)
	port := fmt.Sprintf("p%d", s.hosts)
	s.hosts++
	s.IP("-n", s.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	s.IP("-n", s.bridge, "link", "set", port, "master", "br0", "up")
	s.IP("-n", ns, "link", "set", "lo", "up")
	s.IP("-n", ns, "link", "set", "eth0", "address", mac)
	if addr != "" {
		s.IP("-n", ns, "addr", "add", addr, "dev", "eth0")
	}
	s.IP("-n", ns, "link", "set", "eth0", "up")
	return ns
}

// NS is the name of the namespace Host made for name.
func (s *Segment) NS(name string) string { return s.prefix + "-" + name }

// Tap adds a tap device on the bridge, for a virtual machine (QEMU's
// -netdev tap,ifname=<dev>,script=no): the VM's NIC is then on the
// segment. The VM runs in namespace ns, where the device is.
//
// From the first tap on, the bridge answers IPv6 router solicitations as
// a site's router would (package routeradv): without an answer, iPXE
// waits about 16 seconds for one before every boot.
func (s *Segment) Tap() (ns, dev string) {
	s.t.Helper()
	dev = fmt.Sprintf("tap%d", s.hosts)
	s.hosts++
	s.IP("-n", s.bridge, "tuntap", "add", dev, "mode", "tap")
	s.IP("-n", s.bridge, "link", "set", dev, "master", "br0", "up")
	if !s.ra {
		s.ra = true
		s.answerRouterSolicitations()
	}
	return s.bridge, dev
}

// answerRouterSolicitations gives br0 a link-local address (without
// duplicate address detection, so that it can be used at once) and
// answers router solicitations on it until the test ends.
func (s *Segment) answerRouterSolicitations() {
	s.t.Helper()
	s.IP("-n", s.bridge, "addr", "add", "fe80::1/64", "dev", "br0", "nodad")
	ctx, cancel := context.WithCancel(context.Background())
	done, err := routeradv.Start(ctx, s.bridge, "br0", netip.MustParseAddr("fe80::1"))
	if err != nil {
		cancel()
		s.t.Fatalf("segment %s: %v", s.prefix, err)
	}
	s.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("segment %s: %v", s.prefix, err)
		}
	})
}

// Forward listens on TCP addr (such as 127.0.0.1:4222) in namespace ns
// and forwards every connection to target, dialled from this process's
// own namespace: a program in ns reaches a server of the test (NATS, say)
// on its loopback. It stops when the test ends.
func Forward(t testing.TB, ns, addr, target string) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("forward %s in %s: %v", addr, ns, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept() // in ns, like its listener
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
}

// Start runs a program in namespace ns, killed and reaped when the test
// ends (and killed should the test binary die); its output goes to the
// returned buffer.
func Start(t testing.TB, ns string, args ...string) (*exec.Cmd, *Buffer) {
	t.Helper()
	out := &Buffer{}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", args[0], err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, out
}

// Run runs a program in namespace ns to its end and returns its output.
func Run(ns string, args ...string) ([]byte, error) {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
}

// Buffer is an output buffer safe for a program and the test at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// WaitFor polls cond every 50ms for up to d and returns its last answer.
func WaitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// HTTPClient returns a client whose connections are dialled in namespace
// ns: the test reaches a server that listens only there (a daemon's API
// on the namespace's loopback, say).
func HTTPClient(ns string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netns.Do(ns, func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}
