package tftp_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"

	itftp "github.com/rackplane/rackplane/internal/tftp"
	"github.com/rackplane/rackplane/internal/tftp/tftptest"
	"github.com/rackplane/rackplane/rack/tftp"
)

// need fails the test when a program it runs is missing.
func need(t testing.TB, program, debianPackage string) {
	t.Helper()
	if _, err := exec.LookPath(program); err != nil {
		t.Fatalf("%s missing: install Debian package %s (listed in .ci/packages)", program, debianPackage)
	}
}

// lossyClient fetches a file through a relay into out.
type lossyClient struct {
	name     string
	program  string // "" for a Go client
	pkg      string
	window   bool // asks for a windowsize
	spare    bool // the relay never drops the ACK of the OACK
	timeout  time.Duration
	sizes    []int
	fetch    func(host, port, name, out string) error
	requests func(t *testing.T, opts map[string]string)
}

func run(cmd *exec.Cmd) error {
	if b, err := cmd.CombinedOutput(); err != nil {
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		return fmt.Errorf("%v\n%s", err, b)
	}
	return nil
}

// goFetch fetches with the client of internal/tftp, which can ask for a
// windowsize.
func goFetch(window int, timeout time.Duration) func(host, port, name, out string) error {
	return func(host, port, name, out string) error {
		c, err := itftp.NewClient(net.JoinHostPort(host, port))
		if err != nil {
			return err
		}
		c.SetBlockSize(1428)
		c.SetWindowSize(window)
		c.SetTimeout(timeout)
		c.SetBackoff(func(int) time.Duration { return 0 })
		c.RequestTSize(true)
		return receiveTo(c.Receive, name, out)
	}
}

// pinFetch fetches with upstream pin/tftp's client: lock-step.
func pinFetch(host, port, name, out string) error {
	c, err := pintftp.NewClient(net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	c.SetBlockSize(1468)
	c.SetTimeout(time.Second)
	c.SetBackoff(func(int) time.Duration { return 0 })
	return receiveTo(c.Receive, name, out)
}

func receiveTo(receive func(string, string) (io.WriterTo, error), name, out string) error {
	wt, err := receive(name, "octet")
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := wt.WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}

var lossyClients = []lossyClient{
	{
		// curl asks for timeout (1 s with a connect timeout this short)
		// and tsize, and not for a windowsize: rackd sends it blocks
		// ahead.
		name: "curl-512", program: "curl", pkg: "curl", timeout: time.Second, sizes: []int{0, 4096, 30000},
		fetch: func(h, p, n, o string) error {
			return run(exec.Command("curl", "-sS", "--connect-timeout", "3", "--max-time", "120", "--tftp-blksize", "512", "-o", o, "tftp://"+net.JoinHostPort(h, p)+"/"+n))
		},
		requests: func(t *testing.T, opts map[string]string) {
			t.Logf("curl asked for %v", opts)
			if opts["timeout"] != "1" {
				t.Errorf("curl asked for timeout %q, want 1", opts["timeout"])
			}
		},
	},
	{
		name: "curl-1468", program: "curl", pkg: "curl", timeout: time.Second, sizes: []int{4096, 100000},
		fetch: func(h, p, n, o string) error {
			return run(exec.Command("curl", "-sS", "--connect-timeout", "3", "--max-time", "120", "--tftp-blksize", "1468", "-o", o, "tftp://"+net.JoinHostPort(h, p)+"/"+n))
		},
	},
	{
		// atftp 0.8 aborts when an OACK comes again, which any server
		// sends when the ACK of the first is lost (atftpd and tftpd-hpa
		// do too): the relay spares that one ACK.
		name: "atftp-windowsize-8", program: "atftp", pkg: "atftp", window: true, spare: true, timeout: time.Second, sizes: []int{4096, 100000, 1<<20 + 123},
		fetch: func(h, p, n, o string) error {
			return run(exec.Command("atftp", "--option", "windowsize 8", "--option", "blksize 1428", "--option", "tsize 0",
				"--tftp-timeout", "1", "-g", "-r", n, "-l", o, h, p))
		},
	},
	{
		name: "atftp-lock-step", program: "atftp", pkg: "atftp", timeout: time.Second, sizes: []int{4096, 30000},
		fetch: func(h, p, n, o string) error {
			return run(exec.Command("atftp", "--tftp-timeout", "1", "-g", "-r", n, "-l", o, h, p))
		},
	},
	{
		name: "go-windowsize-8", window: true, timeout: 300 * time.Millisecond, sizes: []int{0, 4096, 1<<20 + 123},
		fetch: goFetch(8, 300*time.Millisecond),
	},
	{
		name: "pin-tftp-lock-step", timeout: time.Second, sizes: []int{4096, 100000},
		fetch: pinFetch,
	},
}

// TestRealClientsThroughLoss fetches files of several sizes from rackd
// (window 8) through a relay that loses packets in both directions, 5% at
// random or every 50th, with real TFTP clients that ask for a windowsize
// and that do not, and compares every byte. A lost packet may cost a
// timeout, never the transfer. (What loss costs in time is measured by
// BenchmarkTFTPLoss, beside atftpd and tftpd-hpa, not asserted here: a
// loaded machine would make such a limit fail for no fault of the server.)
func TestRealClientsThroughLoss(t *testing.T) {
	const serverTimeout = 300 * time.Millisecond
	tr := tree(t)
	files := map[int][]byte{}
	for _, c := range lossyClients {
		for _, size := range c.sizes {
			if files[size] == nil {
				files[size] = tr.WriteFile(t, fmt.Sprintf("f%d.bin", size), size)
			}
		}
	}
	addr := start(t, tr.Resolver, tftp.Config{Timeout: serverTimeout})
	for _, loss := range tftptest.Standard() {
		for _, c := range lossyClients {
			t.Run(loss.Name+"/"+c.name, func(t *testing.T) {
				if c.program != "" {
					need(t, c.program, c.pkg)
				}
				t.Parallel()
				l := loss.Loss
				l.SpareOACKAck = c.spare
				relay, err := tftptest.NewRelay(addr, l)
				if err != nil {
					t.Fatal(err)
				}
				defer relay.Close()
				host, port := "127.0.0.1", strconv.Itoa(relay.Addr().Port)
				for _, size := range c.sizes {
					out := filepath.Join(t.TempDir(), "out")
					lostBefore := dropped(relay)
					start := time.Now()
					if err := c.fetch(host, port, fmt.Sprintf("f%d.bin", size), out); err != nil {
						t.Errorf("%d bytes: %v", size, err)
						continue
					}
					took := time.Since(start)
					lost := dropped(relay) - lostBefore
					got, err := os.ReadFile(out)
					if err != nil {
						t.Fatal(err)
					}
					if sha256.Sum256(got) != sha256.Sum256(files[size]) {
						t.Errorf("%d bytes: got %d bytes with another sha256", size, len(got))
					}
					t.Logf("%8d bytes in %6s, %3d packets lost", size, took.Round(time.Millisecond), lost)
				}
				reqs := relay.Requests()
				if len(reqs) == 0 {
					t.Fatal("no request went through the relay")
				}
				if _, asked := reqs[0].Options["windowsize"]; asked != c.window {
					t.Errorf("client asked for options %v; want windowsize asked: %v", reqs[0].Options, c.window)
				}
				if c.requests != nil {
					c.requests(t, reqs[0].Options)
				}
				for _, d := range []tftptest.Direction{tftptest.ToServer, tftptest.ToClient} {
					if _, n := relay.Counts(d); n == 0 {
						t.Errorf("direction %d: nothing dropped", d)
					}
				}
			})
		}
	}
}

// dropped is how many packets relay dropped either way.
func dropped(relay *tftptest.Relay) int64 {
	_, toServer := relay.Counts(tftptest.ToServer)
	_, toClient := relay.Counts(tftptest.ToClient)
	return toServer + toClient
}

// conversation is a hand-made TFTP client, for what real clients cannot
// be made to do on cue.
type conversation struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr // the listening port, then the transfer's port
	tid    bool
}

func converse(t *testing.T, addr string) *conversation {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return &conversation{t: t, conn: conn, server: ua}
}

func (c *conversation) send(p []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(p, c.server); err != nil {
		c.t.Fatal(err)
	}
}

// rrq sends a read request with options (name, value, ...).
func (c *conversation) rrq(name string, opts ...string) {
	p := rq(1, name, "octet")
	for _, o := range opts {
		p = append(append(p, o...), 0)
	}
	c.send(p)
}

func (c *conversation) ack(block uint16) {
	c.send(binary.BigEndian.AppendUint16([]byte{0, 4}, block))
}

// recv returns the next packet within wait: opcode and the rest.
func (c *conversation) recv(wait time.Duration) (op uint16, rest []byte) {
	c.t.Helper()
	buf := make([]byte, 70000)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		c.t.Fatalf("no packet within %s: %v", wait, err)
	}
	if !c.tid {
		c.server, c.tid = from, true
	}
	if n < 4 {
		c.t.Fatalf("short packet %q", buf[:n])
	}
	return binary.BigEndian.Uint16(buf), buf[2:n]
}

// data returns the numbers of the next n DATA packets.
func (c *conversation) data(n int, wait time.Duration) []uint16 {
	c.t.Helper()
	var blocks []uint16
	for range n {
		op, rest := c.recv(wait)
		if op != 3 {
			c.t.Fatalf("opcode %d (%q), want DATA", op, rest)
		}
		blocks = append(blocks, binary.BigEndian.Uint16(rest))
	}
	return blocks
}

// abort ends the transfer with an ERROR, so that the server stops.
func (c *conversation) abort() {
	c.send(append([]byte{0, 5, 0, 0}, "test done\x00"...))
}

func (c *conversation) oack(wait time.Duration) map[string]string {
	c.t.Helper()
	op, rest := c.recv(wait)
	opts, err := tftptest.ParseOACK(append([]byte{0, byte(op)}, rest...))
	if err != nil {
		c.t.Fatalf("opcode %d (%q), want an OACK: %v", op, rest, err)
	}
	return opts
}

func seq(from, to uint16) []uint16 {
	var s []uint16
	for b := from; b <= to; b++ {
		s = append(s, b)
	}
	return s
}

func sameBlocks(a, b []uint16) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestEarlierAckRewinds acknowledges an earlier block than the last one
// sent, and checks the server goes back to the block after it at once,
// well before its timeout: with a windowsize negotiated, any such ACK; for
// a client that acknowledges every block, a repeated one (an ACK for an
// earlier block is its normal course then, and only slides the window).
func TestEarlierAckRewinds(t *testing.T) {
	const timeout = 5 * time.Second // longer than any wait below
	tr := tree(t)
	tr.WriteFile(t, "r.bin", 512*40+5)
	// No retransmission ahead of the timeout (MinTimeout): what comes
	// within quick comes from the ACKs.
	addr := start(t, tr.Resolver, tftp.Config{Timeout: timeout, MinTimeout: timeout, Window: 8})
	const quick = time.Second

	t.Run("windowsize", func(t *testing.T) {
		c := converse(t, addr)
		defer c.abort()
		c.rrq("r.bin", "windowsize", "4")
		if o := c.oack(quick); o["windowsize"] != "4" {
			t.Fatalf("OACK %v, want windowsize 4", o)
		}
		c.ack(0)
		if got := c.data(4, quick); !sameBlocks(got, seq(1, 4)) {
			t.Fatalf("first window %v", got)
		}
		c.ack(2) // 3 went missing
		if got := c.data(4, quick); !sameBlocks(got, seq(3, 6)) {
			t.Fatalf("after ACK 2: %v, want the window from 3", got)
		}
		c.ack(6)
		if got := c.data(4, quick); !sameBlocks(got, seq(7, 10)) {
			t.Fatalf("after ACK 6: %v, want the next window", got)
		}
		c.ack(6) // 7, the first of the window, went missing
		if got := c.data(4, quick); !sameBlocks(got, seq(7, 10)) {
			t.Fatalf("after ACK 6 again: %v, want the window from 7 again", got)
		}
	})

	t.Run("every-block-acked", func(t *testing.T) {
		c := converse(t, addr)
		defer c.abort()
		c.rrq("r.bin", "blksize", "512")
		if o := c.oack(quick); o["blksize"] != "512" || o["windowsize"] != "" {
			t.Fatalf("OACK %v, want blksize 512 and no windowsize", o)
		}
		c.ack(0)
		if got := c.data(8, quick); !sameBlocks(got, seq(1, 8)) {
			t.Fatalf("sent ahead %v, want 1-8", got)
		}
		c.ack(3)
		if got := c.data(3, quick); !sameBlocks(got, seq(9, 11)) {
			t.Fatalf("after ACK 3: %v, want the window slid to 9-11", got)
		}
		c.ack(3) // again: 4 went missing
		if got := c.data(8, quick); !sameBlocks(got, seq(4, 11)) {
			t.Fatalf("after ACK 3 again: %v, want 4-11 again", got)
		}
		c.ack(3) // once more: an answer to a duplicate, not news
		c.ack(11)
		if got := c.data(8, quick); !sameBlocks(got, seq(12, 19)) {
			t.Fatalf("after ACK 11: %v, want 12-19 and no window again", got)
		}
	})
}

// firstWindow starts rackd (window 8) with timeout and minTimeout, asks
// it for a file of 40 blocks of 512 bytes without a windowsize, as a
// lock-step client, and reads the 8 blocks it sends ahead.
func firstWindow(t *testing.T, timeout, minTimeout time.Duration) *conversation {
	t.Helper()
	tr := tree(t)
	tr.WriteFile(t, "w.bin", 512*40+5)
	addr := start(t, tr.Resolver, tftp.Config{Timeout: timeout, MinTimeout: minTimeout, Window: 8})
	c := converse(t, addr)
	t.Cleanup(c.abort)
	c.rrq("w.bin", "blksize", "512")
	c.oack(time.Second)
	c.ack(0)
	if got := c.data(8, time.Second); !sameBlocks(got, seq(1, 8)) {
		t.Fatalf("sent ahead %v, want 1-8", got)
	}
	return c
}

// TestTimeoutSendsAgainWhatWasInFlight plays a lock-step client whose
// last acknowledgements were lost: on its timeout the server must send
// again every block it had sent, for such a client (curl) answers only
// its last block or the next one; and, the client not having
// acknowledged its first window, go on in lock-step.
func TestTimeoutSendsAgainWhatWasInFlight(t *testing.T) {
	const timeout = 300 * time.Millisecond
	c := firstWindow(t, timeout, timeout)
	c.ack(2) // the ACKs of 3-8 lost on the way
	if got := c.data(2, time.Second); !sameBlocks(got, seq(9, 10)) {
		t.Fatalf("after ACK 2: %v, want 9-10", got)
	}
	start := time.Now()
	if got := c.data(8, 3*timeout); !sameBlocks(got, seq(3, 10)) {
		t.Fatalf("after the timeout: %v, want 3-10 again", got)
	}
	if took := time.Since(start); took < timeout*2/3 {
		t.Errorf("sent again after %s, before the timeout of %s", took, timeout)
	}
	c.ack(10)
	if got := c.data(1, time.Second); !sameBlocks(got, seq(11, 11)) {
		t.Fatalf("after ACK 10: %v, want 11", got)
	}
	// Lock-step now: nothing more until 11 is acknowledged.
	c.conn.SetReadDeadline(time.Now().Add(timeout / 2))
	if n, _, err := c.conn.ReadFromUDP(make([]byte, 600)); err == nil {
		t.Fatalf("got %d more bytes before acknowledging 11, want lock-step", n)
	}
	c.ack(11)
	if got := c.data(1, time.Second); !sameBlocks(got, seq(12, 12)) {
		t.Fatalf("after ACK 11: %v, want 12", got)
	}
}

// TestTimeoutKeepsTheWindowOfAClientThatTookOne plays a lock-step
// client that acknowledged its first window: a timeout later is a loss,
// not a sign it cannot take a window, and the server keeps sending 8
// blocks ahead.
func TestTimeoutKeepsTheWindowOfAClientThatTookOne(t *testing.T) {
	const timeout = 300 * time.Millisecond
	c := firstWindow(t, timeout, timeout)
	c.ack(8)
	if got := c.data(8, time.Second); !sameBlocks(got, seq(9, 16)) {
		t.Fatalf("after ACK 8: %v, want 9-16", got)
	}
	// 9 lost, say, and the client quiet: the timeout sends 9-16 again.
	if got := c.data(8, 3*timeout); !sameBlocks(got, seq(9, 16)) {
		t.Fatalf("after the timeout: %v, want 9-16 again", got)
	}
	c.ack(16)
	if got := c.data(8, time.Second); !sameBlocks(got, seq(17, 24)) {
		t.Fatalf("after ACK 16: %v, want 17-24, the window kept", got)
	}
}

// TestLossCostsTheRoundTripNotTheTimeout plays a client that asked for
// a windowsize and a long timeout, and whose acknowledgement of a window
// is lost: once the server has measured the round trip (milliseconds on
// loopback), it sends the window again after MinTimeout, not after the
// timeout the client asked for.
func TestLossCostsTheRoundTripNotTheTimeout(t *testing.T) {
	tr := tree(t)
	tr.WriteFile(t, "m.bin", 512*40+5)
	addr := start(t, tr.Resolver, tftp.Config{Timeout: 2 * time.Second, MinTimeout: 100 * time.Millisecond, Window: 8})
	c := converse(t, addr)
	defer c.abort()
	c.rrq("m.bin", "blksize", "512", "windowsize", "4", "timeout", "30")
	if o := c.oack(time.Second); o["timeout"] != "30" || o["windowsize"] != "4" {
		t.Fatalf("OACK %v, want timeout 30 and windowsize 4", o)
	}
	c.ack(0)
	c.expect("the first window", 1, 4, time.Second)
	c.ack(4)
	c.expect("after ACK 4", 5, 8, time.Second)
	c.expect("the ACK of 8 lost: the window again, far sooner than 30s", 5, 8, 10*time.Second)
	c.ack(8)
	c.expect("after ACK 8", 9, 12, time.Second)
}

// expect fails the test unless the next DATA packets, within wait, are
// blocks from to to.
func (c *conversation) expect(after string, from, to uint16, wait time.Duration) {
	c.t.Helper()
	if got := c.data(int(to-from)+1, wait); !sameBlocks(got, seq(from, to)) {
		c.t.Fatalf("%s: got %v, want %v", after, got, seq(from, to))
	}
}

// TestEarlyRetransmissionKeepsTheWindow plays a lock-step client whose
// acknowledgements of its first window are lost: the server sends again
// ahead of its timeout, from the round trip it measured, and such a
// retransmission is no sign that the client cannot take a window (a
// timeout is; see TestTimeoutSendsAgainWhatWasInFlight): the window stays.
func TestEarlyRetransmissionKeepsTheWindow(t *testing.T) {
	c := firstWindow(t, 10*time.Second, 100*time.Millisecond)
	c.ack(2) // the ACKs of 3-8 lost on the way
	c.expect("after ACK 2", 9, 10, time.Second)
	c.expect("sent again, far sooner than 10s", 3, 10, 5*time.Second)
	c.ack(10)
	c.expect("after ACK 10, the window kept", 11, 18, time.Second)
}

// TestSilentClientDrawsBoundedRetransmissions plays a client that asked
// for a window and then falls silent: the server sends the window again
// ahead of its timeout while the wait doubles up to it, then Retries
// times more, and gives up. Retransmissions ahead of the timeout are at
// most log2(Timeout/MinTimeout) (here 2: after 100ms and 200ms), so a
// client that stops answering draws at most that many windows more than
// Retries, whatever it asked for.
func TestSilentClientDrawsBoundedRetransmissions(t *testing.T) {
	const (
		timeout = 400 * time.Millisecond
		retries = 2
		window  = 4
		early   = 2 // log2(timeout / MinTimeout)
	)
	tr := tree(t)
	tr.WriteFile(t, "s.bin", 512*40+5)
	addr := start(t, tr.Resolver, tftp.Config{Timeout: timeout, MinTimeout: 100 * time.Millisecond, Retries: retries, Window: 8})
	c := converse(t, addr)
	c.rrq("s.bin", "blksize", "512", "windowsize", strconv.Itoa(window))
	c.oack(time.Second)
	c.ack(0)
	c.expect("the first window", 1, window, time.Second)
	c.ack(window)
	c.expect("after the first ACK", window+1, 2*window, time.Second)
	// Silent from here: count what comes until the server gives up.
	resent := 0
	for {
		op, rest := c.recv(30 * time.Second)
		if op == 5 {
			break
		}
		if op != 3 || binary.BigEndian.Uint16(rest) < window+1 || binary.BigEndian.Uint16(rest) > 2*window {
			t.Fatalf("opcode %d %q, want DATA of the second window or an ERROR", op, rest)
		}
		resent++
	}
	t.Logf("sent again %d blocks before giving up", resent)
	// Fewer ahead of the timeout when the round trip measured was long
	// (a loaded machine): the bound is what matters.
	if lo, hi := window*retries, window*(early+retries); resent < lo || resent > hi {
		t.Errorf("the silent client was sent %d blocks again, want %d to %d: up to %d windows ahead of the timeout, then %d retries", resent, lo, hi, early, retries)
	}
}

// TestOptionAcknowledgement checks what the OACK carries: windowsize (at
// most the server's window) and timeout when asked, and that the timeout
// asked for is the one the server waits.
func TestOptionAcknowledgement(t *testing.T) {
	tr := tree(t)
	want := tr.WriteFile(t, "o.bin", 5000)
	wide := start(t, tr.Resolver, tftp.Config{Timeout: 5 * time.Second, Window: 8})
	lockStep := start(t, tr.Resolver, tftp.Config{Timeout: 5 * time.Second, Window: 1})
	tests := []struct {
		name string
		addr string
		opts []string
		want map[string]string
	}{
		{"windowsize-and-timeout", wide, []string{"blksize", "1024", "tsize", "0", "timeout", "3", "windowsize", "4"},
			map[string]string{"blksize": "1024", "tsize": strconv.Itoa(len(want)), "timeout": "3", "windowsize": "4"}},
		{"windowsize-above-window", wide, []string{"windowsize", "64"}, map[string]string{"windowsize": "8"}},
		{"names-any-case", wide, []string{"WindowSize", "2", "TIMEOUT", "1"}, map[string]string{"windowsize": "2", "timeout": "1"}},
		{"invalid-values-dropped", wide, []string{"windowsize", "0", "timeout", "256", "blksize", "1024"}, map[string]string{"blksize": "1024"}},
		{"window-1-declines-windowsize", lockStep, []string{"windowsize", "8", "timeout", "2"}, map[string]string{"timeout": "2"}},
		{"unknown-dropped", wide, []string{"multicast", "", "timeout", "4"}, map[string]string{"timeout": "4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := converse(t, tt.addr)
			defer c.abort()
			c.rrq("o.bin", tt.opts...)
			if got := c.oack(time.Second); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("OACK %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("timeout-taken", func(t *testing.T) {
		// Not acknowledging the OACK: it comes again after the timeout
		// asked for, not the server's 5s.
		c := converse(t, wide)
		defer c.abort()
		c.rrq("o.bin", "timeout", "1")
		c.oack(time.Second)
		start := time.Now()
		c.oack(3 * time.Second)
		if took := time.Since(start); took < 800*time.Millisecond || took > 2500*time.Millisecond {
			t.Errorf("OACK again after %s, want about 1s", took)
		}
	})
	t.Run("transfer-with-windowsize", func(t *testing.T) {
		c := converse(t, wide)
		c.rrq("o.bin", "windowsize", "4", "blksize", "1024")
		c.oack(time.Second)
		c.ack(0)
		var got []byte
		for block := uint16(1); ; block++ {
			op, rest := c.recv(time.Second)
			if op != 3 || binary.BigEndian.Uint16(rest) != block {
				t.Fatalf("opcode %d block %d, want DATA %d", op, binary.BigEndian.Uint16(rest), block)
			}
			got = append(got, rest[2:]...)
			if len(rest)-2 < 1024 {
				c.ack(block)
				break
			}
			if block%4 == 0 {
				c.ack(block)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("got %d bytes, want the %d of o.bin", len(got), len(want))
		}
	})
}

// TestGoClientWindowAgainstPeers checks the windowed Go client of
// internal/tftp against another server that takes the windowsize option,
// atftpd, so that the client is not only right against its own server.
func TestGoClientWindowAgainstPeers(t *testing.T) {
	atftpd, err := exec.Command("testdata/fetch-atftpd.sh", filepath.Join(os.TempDir(), "rackplane-atftpd")).Output()
	if err != nil {
		t.Fatalf("atftpd (Debian package atftpd) unavailable: %v", err)
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	want := make([]byte, 300000)
	for i := range want {
		want[i] = byte(i * 13)
	}
	if err := os.WriteFile(filepath.Join(root, "w.bin"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(int(benchPort.Add(1)))
	cmd := exec.Command(strings.TrimSpace(string(atftpd)), "--daemon", "--no-fork", "--logfile", "/dev/null",
		"--user", "root", "--group", "root", "--port", port, "--bind-address", "127.0.0.1", root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	relay, err := tftptest.NewRelay(net.JoinHostPort("127.0.0.1", port), tftptest.Loss{Every: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	out := filepath.Join(t.TempDir(), "out")
	var ferr error
	for range 50 { // until atftpd listens
		if ferr = goFetch(8, 300*time.Millisecond)("127.0.0.1", strconv.Itoa(relay.Addr().Port), "w.bin", out); ferr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes that differ", len(got))
	}
}
