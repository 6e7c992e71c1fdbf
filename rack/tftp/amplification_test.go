package tftp_test

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/tftp"
)

// amplified is what one request, never acknowledged, drew from a server.
type amplified struct {
	request  int // bytes of the request (UDP payload)
	replies  int // datagrams that came back
	received int // their bytes (UDP payloads)
}

// ratio is bytes out over bytes in, counting UDP payloads.
func (a amplified) ratio() float64 { return float64(a.received) / float64(a.request) }

// wireRatio counts the IPv4 and UDP headers too (28 bytes a datagram),
// as the link carries them.
func (a amplified) wireRatio() float64 {
	return float64(a.received+28*a.replies) / float64(a.request+28)
}

// spoofedRead sends request to addr from a socket that never answers, as
// a request with a forged source address draws replies to a victim that
// never asked, and counts what comes back until done says the server has
// given up on the socket's address (bounded by limit).
func spoofedRead(server, addr string, request []byte, done func(local string) bool, limit time.Duration) (amplified, error) {
	a := amplified{request: len(request)}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return a, err
	}
	defer conn.Close()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return a, err
	}
	if _, err := conn.WriteToUDP(request, ua); err != nil {
		return a, err
	}
	buf := make([]byte, 70000)
	start := time.Now()
	for time.Since(start) < limit {
		conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, _, err := conn.ReadFromUDP(buf)
		if err == nil {
			a.replies++
			a.received += n
			continue
		}
		if a.replies > 0 && done(conn.LocalAddr().String()) {
			// Whatever the server sent before it ended is queued here.
			for {
				conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				n, _, err := conn.ReadFromUDP(buf)
				if err != nil {
					return a, nil
				}
				a.replies++
				a.received += n
			}
		}
	}
	return a, fmt.Errorf("%s still had not given up on %q after %s (%d datagrams, %d bytes so far)", server, request, limit, a.replies, a.received)
}

// tftpdHPA runs tftpd-hpa on a free loopback port over root, its
// retransmission timeout set to timeout, and returns its address and a
// function saying whether it has no transfer left (tftpd-hpa serves each
// in a child process, which exits when the transfer ends).
func tftpdHPA(t *testing.T, root string, timeout time.Duration) (string, func(string) bool) {
	t.Helper()
	need(t, "in.tftpd", "tftpd-hpa")
	port := int(benchPort.Add(1))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command("in.tftpd", "-L", "-u", "root", "-a", addr, "-s", "-T", strconv.Itoa(int(timeout.Microseconds())), root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Ready once it has the port: a request before that would be lost.
	for i := 0; ; i++ {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			break
		}
		c.Close()
		if i == 100 {
			t.Fatalf("tftpd-hpa did not take %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, func(string) bool { return len(descendants(cmd.Process.Pid)) == 0 }
}

// TestAmplificationNoWorseThanTFTPDHPA sends read requests with a forged
// source (a socket that never acknowledges) to rackd's TFTP server and to
// tftpd-hpa side by side, and counts the bytes each sends back until it
// gives up, its retransmissions included: rackd must not amplify more
// than tftpd-hpa does, whatever the request asks for. Both run with a
// short retransmission timeout so that the test takes seconds; the
// number of retransmissions, which is what is compared, does not depend
// on it.
func TestAmplificationNoWorseThanTFTPDHPA(t *testing.T) {
	const timeout = 100 * time.Millisecond
	tr := tree(t)
	tr.WriteFile(t, "big.bin", 4<<20)
	rackd := start(t, tr.Resolver, tftp.Config{Timeout: timeout})
	hpa, hpaIdle := tftpdHPA(t, tr.Root, timeout)
	// rackd is done with a client once it has reported the end of its
	// transfer, or the refusal of its request.
	rackdDone := func(client string) bool {
		for _, e := range tr.Recorder.Events("") {
			var d struct{ Remote, Reason string }
			e.DecodeData(&d)
			if d.Remote == client && (e.Type != events.TypeBootHandoff || d.Reason != "") {
				return true
			}
		}
		return false
	}

	long := strings.Repeat("n", 400)
	for _, c := range []struct {
		name    string
		request []byte
	}{
		{"file, no options", rq(1, "big.bin", "octet")},
		{"file, blksize 1468", withOpts(rq(1, "big.bin", "octet"), "blksize", "1468")},
		{"file, every option at its largest", withOpts(rq(1, "big.bin", "octet"),
			"blksize", "65464", "tsize", "0", "windowsize", "64")},
		{"file, netascii", rq(1, "big.bin", "netascii")},
		{"no such file", rq(1, "missing.bin", "octet")},
		{"no such file, long name", rq(1, long, "octet")},
		{"unknown mode", rq(1, "big.bin", "bogus")},
		{"write request", rq(2, "upload.bin", "octet")},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// Side by side: each takes its retransmission schedule.
			var r, h amplified
			var rerr, herr error
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, rerr = spoofedRead("rackd", rackd, c.request, rackdDone, time.Minute)
			}()
			h, herr = spoofedRead("tftpd-hpa", hpa, c.request, hpaIdle, time.Minute)
			wg.Wait()
			if err := errors.Join(rerr, herr); err != nil {
				t.Fatal(err)
			}
			t.Logf("request %d bytes: rackd %d datagrams, %d bytes, ×%.1f (×%.1f on the wire); tftpd-hpa %d datagrams, %d bytes, ×%.1f (×%.1f on the wire)",
				r.request, r.replies, r.received, r.ratio(), r.wireRatio(), h.replies, h.received, h.ratio(), h.wireRatio())
			if r.ratio() > h.ratio() || r.wireRatio() > h.wireRatio() {
				t.Errorf("rackd amplifies ×%.1f (×%.1f on the wire), more than tftpd-hpa's ×%.1f (×%.1f)",
					r.ratio(), r.wireRatio(), h.ratio(), h.wireRatio())
			}
		})
	}
}

func withOpts(p []byte, opts ...string) []byte {
	for _, o := range opts {
		p = append(append(p, o...), 0)
	}
	return p
}

// TestWindowOpensOnceTheClientAnswers plays a client that asks for no
// options: it gets the first block alone, sent again on timeouts until it
// answers, and the window of blocks ahead once it has acknowledged it.
func TestWindowOpensOnceTheClientAnswers(t *testing.T) {
	// The quiet check must end well before the server's timeout: a test
	// process descheduled for the difference (under -race on a loaded
	// machine, 100 ms were seen) would read the retransmission as too
	// early.
	const timeout = time.Second
	tr := tree(t)
	tr.WriteFile(t, "w.bin", 512*40+5)
	addr := start(t, tr.Resolver, tftp.Config{Timeout: timeout, Window: 8})
	c := converse(t, addr)
	t.Cleanup(c.abort)
	c.rrq("w.bin")
	// Each step: what the client does, then the blocks it must get next,
	// and how long it waits for them.
	for _, step := range []struct {
		do       func()
		from, to uint16
		wait     time.Duration
	}{
		{nil, 1, 1, time.Second},
		{c.quietFor(timeout / 4), 1, 1, 3 * timeout}, // block 1 again, alone, after the timeout
		{func() { c.ack(1) }, 2, 9, time.Second},     // then a window
	} {
		if step.do != nil {
			step.do()
		}
		if got := c.data(int(step.to-step.from)+1, step.wait); !sameBlocks(got, seq(step.from, step.to)) {
			t.Fatalf("got %v, want %v", got, seq(step.from, step.to))
		}
	}
}

// quietFor returns a step that fails the test if the server sends
// anything within d.
func (c *conversation) quietFor(d time.Duration) func() {
	return func() {
		c.t.Helper()
		c.conn.SetReadDeadline(time.Now().Add(d))
		if n, _, err := c.conn.ReadFromUDP(make([]byte, 70000)); err == nil {
			c.t.Fatalf("got %d bytes within %s, want nothing", n, d)
		}
	}
}
