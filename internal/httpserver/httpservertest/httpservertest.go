// Package httpservertest does to an HTTP server, over real TCP, what an
// attacker on its network would: open thousands of connections and leave
// them idle, or trickle request bodies a byte at a time.
//
// Idle connections are opened by other processes (the test binary run
// again: this package's init takes over such a run), so the test
// process's descriptors go to the server under test alone, as they would
// in production, and a flood larger than one process's descriptor limit
// is still possible.
package httpservertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envFlood carries a flood child's orders.
const envFlood = "RACKPLANE_HTTPSERVERTEST_FLOOD"

func init() {
	if spec := os.Getenv(envFlood); spec != "" {
		os.Exit(floodChild(spec))
	}
}

type floodSpec struct {
	Addr    string `json:"addr"`
	N       int    `json:"n"`
	Request string `json:"request"`
}

// FloodResult is what the flooding processes did.
type FloodResult struct {
	// Opened is the connections the server accepted (the TCP handshake
	// completed); Failed those that did not connect within 10 s.
	Opened, Failed int
	// Answered is how many of the opened connections got a response to
	// their one request (keep-alive floods only).
	Answered int
}

// Flood holds idle connections to a server until Stop.
type Flood struct {
	t        testing.TB
	children []*Child
	once     sync.Once
	Result   FloodResult
}

// Idle opens n connections to addr from other processes and holds them
// until Stop (at the latest when the test ends). With request empty they
// send nothing; otherwise each sends request once (a whole HTTP/1.1
// request), reads the answer and keeps the connection alive, idle. It
// returns once every connection was tried.
func Idle(t testing.TB, addr string, n int, request string) *Flood {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// A child's Go runtime raises its soft limit to the hard one; leave it
	// room for its own files.
	per := int(min(uint64(n), max(lim.Max, 512)-256))
	f := &Flood{t: t}
	t.Cleanup(f.Stop)
	for left := n; left > 0; left -= per {
		spec, _ := json.Marshal(floodSpec{Addr: addr, N: min(per, left), Request: request})
		f.children = append(f.children, StartChild(t, envFlood+"="+string(spec)))
	}
	for i, c := range f.children {
		// A child dials with a 10 s timeout, 64 at a time; it ends or
		// reports long before this.
		line, err := c.ReadLine(5 * time.Minute)
		var r FloodResult
		if err == nil {
			err = json.Unmarshal(line, &r)
		}
		if err != nil {
			t.Fatalf("httpservertest: flooding process %d: %v (%q)", i, err, line)
		}
		f.Result.Opened += r.Opened
		f.Result.Failed += r.Failed
		f.Result.Answered += r.Answered
	}
	return f
}

// Stop closes every connection of the flood and waits for its processes.
func (f *Flood) Stop() {
	f.once.Do(func() {
		for _, c := range f.children {
			c.Stop()
		}
	})
}

// Child is the test binary run again with one more environment variable,
// which makes it something other than the tests (a TestMain or an init
// looks for it). It reads its orders from stdin and reports on stdout;
// stdin closing tells it to end.
type Child struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	exited chan error
	once   sync.Once
}

// StartChild runs the test binary with env ("NAME=value") added, and stops
// it when the test ends.
func StartChild(t testing.TB, env string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("httpservertest: start a child process: %v", err)
	}
	c := &Child{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), exited: make(chan error, 1)}
	go func() { c.exited <- cmd.Wait() }()
	t.Cleanup(c.Stop)
	return c
}

// ReadLine returns the next line the child writes, without its newline.
func (c *Child) ReadLine(timeout time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	r := make(chan res, 1)
	go func() {
		b, err := c.out.ReadBytes('\n')
		r <- res{b, err}
	}()
	select {
	case x := <-r:
		return bytes.TrimSpace(x.b), x.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("no line within %s", timeout)
	}
}

// Exited reports whether the child has ended, and how.
func (c *Child) Exited() (bool, error) {
	select {
	case err := <-c.exited:
		c.exited <- err
		return true, err
	default:
		return false, nil
	}
}

// Stop closes the child's stdin and waits for it to end: for 30 s, then
// it is killed.
func (c *Child) Stop() {
	c.once.Do(func() {
		_ = c.in.Close()
		select {
		case err := <-c.exited:
			c.exited <- err
			if err != nil {
				c.t.Errorf("httpservertest: child process: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			c.t.Errorf("httpservertest: child process %d did not stop; killed", c.cmd.Process.Pid)
		}
	})
}

// floodChild opens the connections spec asks for, reports on stdout,
// holds them until stdin closes, and returns the exit code.
func floodChild(specJSON string) int {
	var spec floodSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "httpservertest: flood spec:", err)
		return 2
	}
	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, spec.N)
		res   FloodResult
		wg    sync.WaitGroup
	)
	jobs := make(chan struct{})
	for w := range 64 {
		d := dialer(spec.Addr, w)
		wg.Go(func() {
			for range jobs {
				c, answered, err := openIdle(d, spec.Addr, spec.Request)
				mu.Lock()
				if err != nil {
					res.Failed++
				} else {
					res.Opened++
					conns = append(conns, c)
					if answered {
						res.Answered++
					}
				}
				mu.Unlock()
			}
		})
	}
	for range spec.N {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	b, _ := json.Marshal(res)
	fmt.Printf("%s\n", b)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		// A reset, not a close: a flood's worth of TIME_WAIT would hold
		// the ephemeral ports the next test needs.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	return 0
}

// dialer is flooding worker w's. To a loopback address, each worker
// connects from a loopback address of its own (127.1.w.1): Linux picks a
// free ephemeral port for each source address apart, and with tens of
// thousands of connections from one address, connect(2) spends
// milliseconds looking for one.
func dialer(addr string, w int) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsLoopback() {
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 1, byte(w), 1)}
		}
	}
	return d
}

// openIdle connects to addr and, when request is given, sends it and
// reads the answer. A connection the server closed before answering is
// still opened (it held a descriptor of the server's for a while).
func openIdle(d *net.Dialer, addr, request string) (net.Conn, bool, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	if request == "" {
		return c, false, nil
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, request); err != nil {
		return c, false, nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return c, false, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c, true, nil
}

// Request is a whole GET request for path, kept alive.
func Request(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: flood\r\nUser-Agent: httpservertest\r\n\r\n"
}

// Trickle is bodies sent a byte at a time.
type Trickle struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	open    int
	answers map[int]int // status → count
	closed  int         // closed by the server without an answer
	failed  int         // could not connect
}

// Slow opens n connections to addr, each sending head (a request line and
// headers ending in a blank line, with a Content-Length, and perhaps the
// start of the body) and then one byte of body ('x') every interval, until the server answers or closes the
// connection, or Stop. It returns once all are open.
func Slow(t testing.TB, addr string, n int, head string, interval time.Duration) *Trickle {
	t.Helper()
	tr := &Trickle{stop: make(chan struct{}), answers: map[int]int{}}
	t.Cleanup(tr.Stop)
	var opened sync.WaitGroup
	for range n {
		opened.Add(1)
		tr.wg.Go(func() { tr.trickle(addr, head, interval, opened.Done) })
	}
	opened.Wait()
	return tr
}

func (tr *Trickle) trickle(addr, head string, interval time.Duration, opened func()) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		tr.mu.Lock()
		tr.failed++
		tr.mu.Unlock()
		opened()
		return
	}
	defer func() {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}()
	tr.mu.Lock()
	tr.open++
	tr.mu.Unlock()
	opened()
	if _, err := io.WriteString(c, head); err != nil {
		tr.done(0)
		return
	}
	answered := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case status := <-answered:
			tr.done(status)
			return
		case <-tr.stop:
			return
		case <-t.C:
			// Write errors mean the server closed; the reader says how.
			_, _ = c.Write([]byte{'x'})
		}
	}
}

func (tr *Trickle) done(status int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.open--
	if status == 0 {
		tr.closed++
	} else {
		tr.answers[status]++
	}
}

// Held is how many connections are still trickling, unanswered.
func (tr *Trickle) Held() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.open
}

// WaitReleased waits, up to timeout, until the server has answered or
// closed every connection, and returns how many it still holds.
func (tr *Trickle) WaitReleased(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for tr.Held() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return tr.Held()
}

// Summary says how the server ended the trickles: statuses and counts.
func (tr *Trickle) Summary() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var parts []string
	for status, n := range tr.answers {
		parts = append(parts, fmt.Sprintf("%d answered %d", n, status))
	}
	if tr.closed > 0 {
		parts = append(parts, fmt.Sprintf("%d closed unanswered", tr.closed))
	}
	if tr.failed > 0 {
		parts = append(parts, fmt.Sprintf("%d never connected", tr.failed))
	}
	if tr.open > 0 {
		parts = append(parts, fmt.Sprintf("%d still held", tr.open))
	}
	return strings.Join(parts, ", ")
}

// Stop ends every trickle and waits for them.
func (tr *Trickle) Stop() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// Get asks url on a connection of its own, as a new client would, and
// returns the status and body; a failure is status 0 and the error.
func Get(url string, header map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Raw sends one request as given, on a connection of its own: its target
// is not cleaned up the way an HTTP client would. With body not nil it
// sends a Content-Length. It returns the answer and its body; a server
// that closes without answering is an error. The connection ends with a
// reset, so that thousands of requests (a fuzz run) leave no TIME_WAIT
// behind to run out of ephemeral ports.
func Raw(addr, method, target string, header map[string]string, body []byte) (*http.Response, []byte, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := c.Write(b.Bytes()); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	return resp, rb, err
}

// Target makes s fit a request line, as a fuzz input may not: it
// percent-encodes controls, spaces, '#' and bytes past ASCII, and leaves
// the rest ('/', '?', '&', '=' and '%' too) as they are, so that the
// server sees both the structure and the escapes s spells.
func Target(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '#' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// HeaderValue makes s fit a header value: controls other than tab
// dropped.
func HeaderValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
