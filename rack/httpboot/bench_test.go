package httpboot_test

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/rack/images"
)

// benchRackEnv makes the test binary a rack ("nats-url;data-dir;image
// source directory"), so the
// benchmark measures rackd's boot HTTP as a process of its own, as it
// measures nginx. benchRackProfileEnv names a file for the rack's CPU
// profile, written when it stops.
const (
	benchRackEnv        = "RACKPLANE_HTTPBOOT_BENCH_RACK"
	benchRackProfileEnv = "RACKPLANE_HTTPBOOT_BENCH_CPUPROFILE"
	benchLoadsEnv       = "RACKPLANE_HTTPBOOT_BENCH_LOADS"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchRackEnv); spec != "" {
		os.Exit(serveBenchRack(spec))
	}
	os.Exit(m.Run())
}

// serveBenchRack runs a rack as rackd would with its defaults (TFTP and
// the bootloader import off), logging at info to a file in the data
// directory, with the image of the source directory imported, until
// SIGTERM.
func serveBenchRack(spec string) int {
	parts := strings.Split(spec, ";")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "want nats-url;data-dir;image-source-dir")
		return 2
	}
	natsURL, dataDir, src := parts[0], parts[1], parts[2]
	if p := os.Getenv(benchRackProfileEnv); p != "" {
		f, err := os.Create(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	logf, err := os.Create(filepath.Join(dataDir, "rackd.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logf.Close()
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.HTTPAddr = dataDir, "bench-rack", "127.0.0.1:0"
	cfg.TFTPAddrs, cfg.ImportSystemBootloaders = nil, false
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	r, err := rack.New(ctx, cfg, nc, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := r.Images().Import(ctx, images.Source{Dir: src}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready", r.HTTPAddr())
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// benchPeer is a boot HTTP server under test, running as a process of its
// own.
type benchPeer struct {
	name string
	addr string
	cmd  *exec.Cmd
}

// cpu is the CPU time the peer's processes (the nginx master and its
// workers) have used.
func (p *benchPeer) cpu() float64 {
	pids := append([]int{p.cmd.Process.Pid}, childrenOf(p.cmd.Process.Pid)...)
	var s float64
	for _, pid := range pids {
		s += cpuSeconds(pid)
	}
	return s
}

func (p *benchPeer) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// startBenchRack starts the test binary as a rack on ns over dataDir,
// with the image of src.
func startBenchRack(b *testing.B, ns *natsserver.Test, dataDir, src string) *benchPeer {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), benchRackEnv+"="+ns.URL+";"+dataDir+";"+src)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start rack: %v", err)
	}
	p := &benchPeer{name: "rackd", cmd: cmd}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		p.stop()
		b.Fatalf("rack did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, out)
	p.addr = addr
	return p
}

// startNginx starts nginx on a port of its own, serving each file of
// files (URL path → file) at its path, configured for what it does best
// here: sendfile, two workers, no access log.
func startNginx(b *testing.B, files map[string]string) *benchPeer {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		b.Fatal("nginx is not installed (Debian package nginx-light): the boot HTTP comparison needs it")
	}
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var locations string
	for path, file := range files {
		locations += fmt.Sprintf("\t\tlocation = %s { alias %s; }\n", path, file)
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user root root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_requests 1000000;
	keepalive_timeout 60s;
	default_type application/octet-stream;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
%[3]s	}
}
`, dir, addr, locations)
	cfgPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", cfgPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start nginx: %v", err)
	}
	p := &benchPeer{name: "nginx", addr: addr, cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			p.stop()
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			b.Fatalf("nginx did not start: %v\n%s%s", err, stderr.String(), errLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchLoad is one kind of request: a whole file, or ranges of span
// bytes at random offsets of it.
type benchLoad struct {
	name    string
	path    string
	size    int64
	span    int64 // 0: the whole file
	clients int
	// mb says the figure is MB/s rather than requests a second.
	mb bool
}

// BenchmarkBootHTTPVsNginx measures a rack's boot HTTP (the test binary
// run as a rack on an embedded NATS, configured as rackd is by default)
// and nginx serving the same files from the same directory, in
// interleaved rounds, with one keep-alive load generator: whole 64 MiB
// files, 4 MiB ranges and 64 KiB ranges. It prints the machine's load
// average and, last, the ratio rackd/nginx of each load (the median of
// the rounds). Run it alone:
//
//	go test -run '^$' -bench BenchmarkBootHTTPVsNginx -benchtime 1x ./rack/httpboot
//
// RACKPLANE_HTTPBOOT_BENCH_CPUPROFILE=<file> writes the rack's CPU
// profile; RACKPLANE_HTTPBOOT_BENCH_LOADS=<substring> runs only the loads
// whose name holds it (such as 64KiB).
func BenchmarkBootHTTPVsNginx(b *testing.B) {
	if _, err := exec.LookPath("nginx"); err != nil {
		b.Fatal("nginx is not installed (Debian package nginx-light): the boot HTTP comparison needs it")
	}
	const (
		rounds  = 3
		window  = 3 * time.Second
		size64M = 64 << 20
	)
	dataDir, err := os.MkdirTemp("", "rackplane-httpbootbench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dataDir)
	// An image of one 64 MiB initrd, which iPXE fetches from the rack at
	// its versioned path; nginx serves the very file the image store keeps.
	src := b.TempDir()
	content := make([]byte, size64M)
	crand.Read(content)
	if err := os.WriteFile(filepath.Join(src, "initrd"), content, 0o644); err != nil {
		b.Fatal(err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(content))
	manifest, err := json.Marshal(images.Manifest{Format: images.ManifestFormat, Versions: []images.SourceVersion{{
		Kind: images.KindImage, OS: "debian", Release: "bookworm", Arch: "amd64", Subarch: "generic", Label: "bench", Version: "1",
		Files: []images.SourceFile{{Name: "initrd", SHA256: sum, Size: size64M}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), manifest, 0o644); err != nil {
		b.Fatal(err)
	}
	const initrd = "/images/debian/amd64/generic/bookworm/bench/1/initrd"
	loads := []benchLoad{
		{name: "whole 64MiB", path: initrd, size: size64M, clients: 4, mb: true},
		{name: "4MiB ranges", path: initrd, size: size64M, span: 4 << 20, clients: 8, mb: true},
		{name: "64KiB ranges", path: initrd, size: size64M, span: 64 << 10, clients: 8},
	}
	if only := os.Getenv(benchLoadsEnv); only != "" {
		loads = slices.DeleteFunc(loads, func(l benchLoad) bool { return !strings.Contains(l.name, only) })
	}

	ns := natsserver.StartTest(b)
	nc := ns.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := eventbus.EnsureStreams(context.Background(), js, time.Hour); err != nil {
		b.Fatal(err)
	}
	rackd := startBenchRack(b, ns, dataDir, src)
	defer rackd.stop()
	ngx := startNginx(b, map[string]string{initrd: filepath.Join(dataDir, "images", "blobs", sum[:2], sum)})
	defer ngx.stop()
	logf("load average before: %s", loadAverage())

	// Warm both up (page cache, connections, the rack's first events).
	for _, p := range []*benchPeer{rackd, ngx} {
		for _, l := range loads {
			if _, err := runLoad(p.addr, l, 500*time.Millisecond); err != nil {
				b.Fatalf("%s, %s: %v", p.name, l.name, err)
			}
		}
	}
	figures := map[string][]float64{} // peer/load → per round
	b.ResetTimer()
	for round := range rounds {
		peers := []*benchPeer{rackd, ngx}
		if round%2 == 1 {
			peers[0], peers[1] = peers[1], peers[0]
		}
		for _, l := range loads {
			for _, p := range peers {
				cpu0 := p.cpu()
				r, err := runLoad(p.addr, l, window)
				if err != nil {
					b.Fatalf("%s, %s: %v", p.name, l.name, err)
				}
				cpu := p.cpu() - cpu0
				fig, unit := r.reqPerSec(), "req/s"
				if l.mb {
					fig, unit = r.mbPerSec(), "MB/s"
				}
				figures[p.name+"/"+l.name] = append(figures[p.name+"/"+l.name], fig)
				logf("round %d  %-5s  %-12s %2d clients  %9.1f %-5s  (%d requests, server cpu %.2fs = %.1f µs/request)",
					round+1, p.name, l.name, l.clients, fig, unit, r.requests, cpu, cpu/float64(r.requests)*1e6)
			}
		}
	}
	b.StopTimer()
	logf("load average after: %s", loadAverage())
	for _, l := range loads {
		rk, ng := median(figures["rackd/"+l.name]), median(figures["nginx/"+l.name])
		b.ReportMetric(rk/ng, "x-nginx-"+strings.ReplaceAll(l.name, " ", "-"))
	}
	b.ReportMetric(0, "ns/op")
	var ratios []string
	for _, l := range loads {
		rk, ng := median(figures["rackd/"+l.name]), median(figures["nginx/"+l.name])
		ratios = append(ratios, fmt.Sprintf("%s %.2fx", l.name, rk/ng))
	}
	logf("rackd/nginx (median of %d rounds): %s", rounds, strings.Join(ratios, ", "))
}

type loadResult struct {
	requests, bytes int64
	elapsed         time.Duration
}

func (r loadResult) reqPerSec() float64 { return float64(r.requests) / r.elapsed.Seconds() }
func (r loadResult) mbPerSec() float64  { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }

// runLoad sends l's requests from l.clients keep-alive connections for
// window and counts the answers; any failure stops it.
func runLoad(addr string, l benchLoad, window time.Duration) (loadResult, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		total    loadResult
		firstErr error
	)
	start := time.Now()
	deadline := start.Add(window)
	for i := range l.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, bytes, err := client(addr, l, deadline, uint64(i))
			mu.Lock()
			defer mu.Unlock()
			total.requests += n
			total.bytes += bytes
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	return total, firstErr
}

// client is one keep-alive connection of the load generator: a plain
// HTTP/1.1 client, so that the generator's own work stays small beside
// the servers'.
func client(addr string, l benchLoad, deadline time.Time, seed uint64) (requests, bytes int64, err error) {
	rng := rand.New(rand.NewPCG(seed, 0x7261636b))
	buf := make([]byte, 256<<10)
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for time.Now().Before(deadline) {
		if c == nil {
			if c, err = net.Dial("tcp", addr); err != nil {
				return requests, bytes, err
			}
			br = bufio.NewReaderSize(c, 64<<10)
		}
		req := "GET " + l.path + " HTTP/1.1\r\nHost: " + addr + "\r\n"
		want, wantStatus := l.size, "200"
		if l.span > 0 {
			off := rng.Int64N(l.size/4096-l.span/4096+1) * 4096
			req += fmt.Sprintf("Range: bytes=%d-%d\r\n", off, off+l.span-1)
			want, wantStatus = l.span, "206"
		}
		if _, err := io.WriteString(c, req+"\r\n"); err != nil {
			return requests, bytes, err
		}
		status, err := br.ReadString('\n')
		if err != nil {
			return requests, bytes, fmt.Errorf("status line: %w", err)
		}
		if f := strings.Fields(status); len(f) < 2 || f[1] != wantStatus {
			return requests, bytes, fmt.Errorf("answer %q, want %s", strings.TrimSpace(status), wantStatus)
		}
		length, closing := int64(-1), false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return requests, bytes, fmt.Errorf("headers: %w", err)
			}
			line = strings.TrimSpace(line)
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ":")
			switch strings.ToLower(k) {
			case "content-length":
				length, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			case "connection":
				closing = strings.EqualFold(strings.TrimSpace(v), "close")
			}
		}
		if length != want {
			return requests, bytes, fmt.Errorf("content-length %d, want %d", length, want)
		}
		for left := length; left > 0; {
			n, err := br.Read(buf[:min(int64(len(buf)), left)])
			left -= int64(n)
			if err != nil {
				if left > 0 {
					return requests, bytes, fmt.Errorf("body: %w", err)
				}
				if !errors.Is(err, io.EOF) {
					return requests, bytes, err
				}
			}
		}
		requests++
		bytes += length
		if closing {
			c.Close()
			c = nil
		}
	}
	return requests, bytes, nil
}

// logf prints as the benchmark goes: go test keeps only the first lines
// of a benchmark's log.
func logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// cpuSeconds is the user and system CPU time of a process.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ticks int64
	for _, i := range []int{11, 12} { // utime, stime
		v, _ := strconv.ParseInt(fields[i], 10, 64)
		ticks += v
	}
	return float64(ticks) / 100 // USER_HZ
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	des, _ := os.ReadDir("/proc")
	var out []int
	for _, de := range des {
		child, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		s := string(raw)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
