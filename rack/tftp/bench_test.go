package tftp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/tftp"
)

// benchServerEnv makes the test binary a bare rackd TFTP server
// ("addr;root;window"), so the benchmark measures it as a process of its
// own, like the peers.
const benchServerEnv = "RACKPLANE_TFTP_BENCH_SERVER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchServerEnv); spec != "" {
		os.Exit(serveBench(spec))
	}
	os.Exit(m.Run())
}

type countingPublisher struct{ n atomic.Int64 }

func (p *countingPublisher) Publish(events.Event) { p.n.Add(1) }

func serveBench(spec string) int {
	parts := strings.Split(spec, ";")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "want addr;root;window")
		return 2
	}
	window, _ := strconv.Atoi(parts[2])
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	render, _ := bootconfig.NewRenderer(bootconfig.RenderConfig{})
	res, err := handoff.NewResolver(handoff.Config{RackID: handofftest.RackID, Root: parts[1]}, handofftest.Decisions{}, nil, render, &countingPublisher{}, log, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := tftp.NewServer(tftp.Config{Addresses: []string{parts[0]}, Window: uint(window)}, res, log, nil)
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	if err := srv.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// peer is a TFTP server under test, started as its own process.
type peer struct {
	name  string
	start func(b *testing.B, port int, root string) *exec.Cmd
}

func peers(b *testing.B) []peer {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	rackd := func(window int) func(*testing.B, int, string) *exec.Cmd {
		return func(b *testing.B, port int, root string) *exec.Cmd {
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=127.0.0.1:%d;%s;%d", benchServerEnv, port, root, window))
			return cmd
		}
	}
	atftpd, err := exec.Command("testdata/fetch-atftpd.sh", filepath.Join(os.TempDir(), "rackplane-atftpd")).Output()
	if err != nil {
		b.Fatalf("atftpd (Debian package atftpd) unavailable: %v", err)
	}
	if _, err := exec.LookPath("in.tftpd"); err != nil {
		b.Fatalf("in.tftpd missing: install Debian package tftpd-hpa")
	}
	return []peer{
		{"rackd-window-1", rackd(1)},
		{fmt.Sprintf("rackd-window-%d", tftp.DefaultWindow), rackd(tftp.DefaultWindow)},
		{"atftpd", func(b *testing.B, port int, root string) *exec.Cmd {
			return exec.Command(strings.TrimSpace(string(atftpd)), "--daemon", "--no-fork", "--logfile", "/dev/null", "--maxthread", "2000",
				"--user", "root", "--group", "root", "--port", strconv.Itoa(port), "--bind-address", "127.0.0.1", root)
		}},
		{"tftpd-hpa", func(b *testing.B, port int, root string) *exec.Cmd {
			return exec.Command("in.tftpd", "-L", "-u", "root", "-a", fmt.Sprintf("127.0.0.1:%d", port), "-s", root)
		}},
	}
}

// procStats samples a server process tree: CPU (its own and its reaped
// children's) and the peak of the tree's summed resident set.
type procStats struct {
	pid     int
	mu      sync.Mutex
	peakRSS int64           // bytes
	kidCPU  map[int]float64 // last CPU seen of each child process
	stop    chan struct{}
	done    chan struct{}
}

func watch(pid int) *procStats {
	p := &procStats{pid: pid, stop: make(chan struct{}), done: make(chan struct{}), kidCPU: map[int]float64{}}
	go func() {
		defer close(p.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			rss := treeRSS(pid)
			p.mu.Lock()
			p.peakRSS = max(p.peakRSS, rss)
			for _, k := range descendants(pid) {
				p.kidCPU[k] = max(p.kidCPU[k], cpuSeconds(k, false))
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// finish stops sampling and returns the tree's peak RSS and the CPU its
// child processes used (a forking server such as tftpd-hpa serves each
// transfer in a child).
func (p *procStats) finish() (peak int64, kidCPU float64) {
	close(p.stop)
	<-p.done
	for _, c := range p.kidCPU {
		kidCPU += c
	}
	return max(p.peakRSS, hwm(p.pid)), kidCPU
}

func descendants(pid int) []int {
	var out []int
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
			out = append(out, descendants(c)...)
		}
	}
	return out
}

func treeRSS(pid int) int64 {
	total := statusKB(pid, "VmRSS:") * 1024
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if c, err := strconv.Atoi(f); err == nil {
			total += treeRSS(c)
		}
	}
	return total
}

func hwm(pid int) int64 { return statusKB(pid, "VmHWM:") * 1024 }

func statusKB(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuSeconds is utime+stime of pid, plus cutime+cstime (reaped
// children) when withChildren.
func cpuSeconds(pid int, withChildren bool) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ticks int64
	idx := []int{11, 12} // utime, stime: fields 14 and 15 of stat, after pid and comm
	if withChildren {
		idx = append(idx, 13, 14)
	}
	for _, i := range idx {
		v, _ := strconv.ParseInt(fields[i], 10, 64)
		ticks += v
	}
	return float64(ticks) / 100 // USER_HZ
}

// fetch gets name with the pin/tftp client (blksize 1468, tsize) and
// checks size and content.
func fetch(port int, name string, want []byte) error {
	return fetchFrom(fmt.Sprintf("127.0.0.1:%d", port), name, want)
}

// fetchFrom is fetch from a server at addr (host:port).
func fetchFrom(addr, name string, want []byte) error {
	c, err := pintftp.NewClient(addr)
	if err != nil {
		return err
	}
	c.SetBlockSize(1468)
	c.SetTimeout(2 * time.Second)
	c.SetRetries(5)
	c.RequestTSize(true)
	return receiveCompare(c.Receive, name, want)
}

// receiveCompare receives name and checks size and content.
func receiveCompare(receive func(string, string) (io.WriterTo, error), name string, want []byte) error {
	wt, err := receive(name, "octet")
	if err != nil {
		return err
	}
	cw := &compareWriter{want: want}
	if _, err := wt.WriteTo(cw); err != nil {
		return err
	}
	if cw.off != len(want) || cw.bad {
		return fmt.Errorf("%s: got %d bytes (mismatch %v), want %d", name, cw.off, cw.bad, len(want))
	}
	return nil
}

type compareWriter struct {
	want []byte
	off  int
	bad  bool
}

func (w *compareWriter) Write(p []byte) (int, error) {
	if w.off+len(p) > len(w.want) || string(p) != string(w.want[w.off:w.off+len(p)]) {
		w.bad = true
	}
	w.off += len(p)
	return len(p), nil
}

var _ io.Writer = (*compareWriter)(nil)

var benchPort atomic.Int32

func init() { benchPort.Store(int32(20000 + os.Getpid()%20000)) }

// BenchmarkTFTPPeers runs rackd's TFTP server beside atftpd and tftpd-hpa
// on loopback, with the same files and the same client: one 32 MiB
// transfer, 100 concurrent 8 MiB transfers, and (rackd only) 1000
// concurrent transfers for its memory. Run with -benchtime=1x.
func BenchmarkTFTPPeers(b *testing.B) {
	root, err := os.MkdirTemp("", "rackplane-tftpbench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Chmod(root, 0o755)
	files := map[string][]byte{"f32m.bin": handofftest.Pattern(32 << 20), "f8m.bin": handofftest.Pattern(8 << 20), "f2m.bin": handofftest.Pattern(2 << 20)}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(root, n), c, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	scenarios := []struct {
		name    string
		file    string
		clients int
		only    string
	}{
		{"1x32MiB", "f32m.bin", 1, ""},
		{"100x8MiB", "f8m.bin", 100, ""},
		{"1000x2MiB", "f2m.bin", 1000, "rackd"},
	}
	for _, p := range peers(b) {
		for _, sc := range scenarios {
			if sc.only != "" && !strings.HasPrefix(p.name, sc.only) {
				continue
			}
			b.Run(p.name+"/"+sc.name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					runScenario(b, p, root, sc.file, files[sc.file], sc.clients)
				}
			})
		}
	}
}

// startPeer starts p's server on a free loopback port over root, waits
// until it answers, and returns the port, its process and what stops it.
func startPeer(b *testing.B, p peer, root string) (port int, cmd *exec.Cmd, stop func()) {
	port = int(benchPort.Add(1))
	cmd = p.start(b, port, root)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", p.name, err)
	}
	stop = func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	go io.Copy(io.Discard, stdout)
	// Ready when a request for a missing file gets its answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := fetch(port, "missing-ready-probe", nil)
		if err != nil && strings.Contains(strings.ToLower(err.Error()), "not found") || err != nil && strings.Contains(err.Error(), "code") {
			return port, cmd, stop
		}
		if time.Now().After(deadline) {
			stop()
			b.Fatalf("%s not ready: %v\n%s", p.name, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runScenario(b *testing.B, p peer, root, file string, want []byte, clients int) {
	port, cmd, stop := startPeer(b, p, root)
	defer stop()
	stats := watch(cmd.Process.Pid)
	cpu0 := cpuSeconds(cmd.Process.Pid, false)
	var failures atomic.Int64
	var firstErr atomic.Value
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fetch(port, file, want); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	// Children of a forking server are reaped a moment after they exit.
	time.Sleep(200 * time.Millisecond)
	peak, kidCPU := stats.finish()
	cpu := cpuSeconds(cmd.Process.Pid, false) - cpu0 + kidCPU
	mbps := float64(len(want)) * float64(clients) / elapsed.Seconds() / 1e6
	b.ReportMetric(mbps, "MB/s")
	b.ReportMetric(float64(failures.Load()), "failures")
	b.ReportMetric(cpu, "server-cpu-s")
	b.ReportMetric(float64(peak)/(1<<20), "server-peak-rss-MiB")
	b.ReportMetric(0, "ns/op")
	b.Logf("%-14s %4d x %-9s %8.1f MB/s  failures %d  server cpu %.2fs  peak rss %.1f MiB  wall %s", p.name, clients, file, mbps, failures.Load(), cpu, float64(peak)/(1<<20), elapsed.Round(time.Millisecond))
	if e := firstErr.Load(); e != nil {
		b.Logf("first failure: %s", e)
	}
}
