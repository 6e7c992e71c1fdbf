package region_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/postgres"
)

// Machines in the table the API and pgbench read.
const benchMachines = 100_000

// benchMachineID is the id of the i-th machine of the benchmark: made of
// i, so that pgbench can name a machine by a random number.
func benchMachineID(i int) string { return string(appendBenchMachineID(nil, i)) }

// pgbench's SQL for the same machine: the uuid built from :n.
const pgbenchMachineID = `('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid`

func benchHostname(i int) string { return string(appendBenchHostname(nil, i)) }

// BenchmarkAPIVsPgbench compares the API with PostgreSQL alone: with
// 100000 machines in the region's database, pgbench runs GetMachine's
// statement and a list page's (10 clients, prepared statements) and the
// same number of HTTP clients (each on one kept-alive connection, see
// leanClient) ask GET /api/v1/machines/{id} and GET
// /api/v1/machines?after= for the same time, turn about, for several
// rounds. It prints requests per second and p99 of each, the CPU time
// per request of the region and of either side's client (pgbench's and
// the API's share the machine with the servers), and the API's share of
// pgbench's rate last. Run with
//
//	go test -run '^$' -bench BenchmarkAPIVsPgbench -benchtime 1x ./region
//
// RACKPLANE_BENCH_SECONDS sets each run's length (default 5) and
// RACKPLANE_BENCH_ROUNDS the rounds (default 3);
// RACKPLANE_BENCH_HTTP_CLIENT=net/http makes the API's clients net/http's.
// The machine's load changes the figures; the ratios, taken in the same
// moments, much less.
func BenchmarkAPIVsPgbench(b *testing.B) {
	pgbench := findPgbench(b)
	dur := time.Duration(envInt("RACKPLANE_BENCH_SECONDS", 5)) * time.Second
	rounds := envInt("RACKPLANE_BENCH_ROUNDS", 3)
	const clients = 10
	// The region's pool has as many connections as pgbench: the same
	// share of the server's processes.
	dbURL := pgtest.NewDatabase(b)
	h := startRegionOn(b, dbURL, dbURL+"&pool_max_conns="+strconv.Itoa(clients), func(*region.Config) {}, testLogger())
	stopRenice := matchPriority(b, h.pool)
	defer stopRenice()
	start := time.Now()
	seedMachines(b, h.pool, benchMachines)
	fmt.Printf("%d machines made through the event log in %s\n", benchMachines, time.Since(start).Round(time.Millisecond))

	dir := b.TempDir()
	script := func(name, sql string) string {
		path := filepath.Join(dir, name+".sql")
		if err := os.WriteFile(path, []byte(sql+";\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		return path
	}
	// The statements themselves, with pgbench's random number for the
	// parameter the API takes from the request.
	getScript := script("get", fmt.Sprintf("\\set n random(1, %d)\n", benchMachines)+
		strings.Replace(postgres.GetMachineSQL, "$1", pgbenchMachineID, 1))
	listScript := script("list", fmt.Sprintf("\\set n random(1, %d)\n", benchMachines-100)+
		strings.NewReplacer("$1", `'node-' || lpad(:n::text, 6, '0')`, "$2", "100").Replace(postgres.ListMachinesSQL))

	// The region's CPU per request: this process's time (the region, and
	// little else while its clients run elsewhere) over the requests.
	var cpuPerRequest time.Duration
	api := func(kind string, dur time.Duration) result {
		before := processCPU()
		r := runLoadClient(b, loadSpec{API: h.api, Token: h.token, Kind: kind, Clients: clients, Duration: dur})
		cpuPerRequest = time.Duration(float64(processCPU()-before) / (r.rate * dur.Seconds()))
		return r
	}
	// Both warm up: caches, prepared statements, connections.
	api("get", time.Second)
	api("list", time.Second)
	runPgbench(b, pgbench, h.dbURL, getScript, clients, time.Second, dir)

	type pair struct{ pg, api result }
	results := map[string][]pair{}
	cases := []struct {
		name   string
		script string
		kind   string
	}{
		{"GET /api/v1/machines/{id}", getScript, "get"},
		{"GET /api/v1/machines?after= (100)", listScript, "list"},
	}
	for r := 1; r <= rounds; r++ {
		for _, c := range cases {
			var p pair
			// Turn about which goes first, so that neither always has
			// the other's wake.
			if r%2 == 1 {
				p.pg = runPgbench(b, pgbench, h.dbURL, c.script, clients, dur, dir)
				p.api = api(c.kind, dur)
			} else {
				p.api = api(c.kind, dur)
				p.pg = runPgbench(b, pgbench, h.dbURL, c.script, clients, dur, dir)
			}
			results[c.name] = append(results[c.name], p)
			fmt.Printf("round %d %-36s pgbench %8.0f/s p99 %6.2fms (client CPU %3dµs)   api %8.0f/s p99 %6.2fms (region CPU %4dµs, client %3dµs /request)   %.2fx  (load %s)\n",
				r, c.name, p.pg.rate, ms(p.pg.p99), p.pg.clientCPU.Microseconds(), p.api.rate, ms(p.api.p99), cpuPerRequest.Microseconds(), p.api.clientCPU.Microseconds(),
				p.api.rate/p.pg.rate, loadAverage())
		}
	}
	fmt.Printf("\n%d clients each, %d rounds of %s, %d machines; median of the rounds:\n", clients, rounds, dur, benchMachines)
	for _, c := range cases {
		ps := results[c.name]
		ratios := make([]float64, len(ps))
		pgRates, apiRates := make([]float64, len(ps)), make([]float64, len(ps))
		for i, p := range ps {
			ratios[i], pgRates[i], apiRates[i] = p.api.rate/p.pg.rate, p.pg.rate, p.api.rate
		}
		fmt.Printf("%-36s pgbench %8.0f/s   api %8.0f/s   api/pgbench %.2fx (rounds: %s)\n",
			c.name, median(pgRates), median(apiRates), median(ratios), formatRatios(ratios))
	}
}

type result struct {
	rate float64
	p99  time.Duration
	// clientCPU is the API load client's CPU time per request.
	clientCPU time.Duration
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func formatRatios(v []float64) string {
	out := make([]string, len(v))
	for i, r := range v {
		out[i] = fmt.Sprintf("%.2fx", r)
	}
	return strings.Join(out, " ")
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// matchPriority gives the PostgreSQL server processes of the benchmark's
// own database (the region's connections and pgbench's, as they come) the
// scheduling priority of this process, until the returned func is called.
// Run under nice, the API's Go side would otherwise have a fraction of
// the CPU that pgbench's side, almost all in the server, has on a busy
// machine; in service, the region and PostgreSQL run alike. Other
// databases' processes are left alone. Without the right to renice
// (not root) it says so and changes nothing.
func matchPriority(b *testing.B, pool *pgxpool.Pool) (stop func()) {
	// getpriority(2) returns 20 - nice.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		b.Fatal(err)
	}
	nice := 20 - prio
	fmt.Printf("this process runs at nice %d; its database's server processes are given the same\n", nice)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen := map[int]bool{}
		for {
			rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
			if err == nil {
				pids, _ := pgx.CollectRows(rows, pgx.RowTo[int32])
				for _, pid := range pids {
					if seen[int(pid)] {
						continue
					}
					seen[int(pid)] = true
					if err := syscall.Setpriority(syscall.PRIO_PROCESS, int(pid), nice); err != nil {
						fmt.Printf("server process %d keeps its priority: %v\n", pid, err)
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// findPgbench looks in PATH, then in Debian's PostgreSQL directories.
func findPgbench(b *testing.B) string {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(found) == 0 {
		b.Fatal("no pgbench: install PostgreSQL's client programs (Debian package postgresql-contrib or postgresql)")
	}
	slices.Sort(found)
	return found[len(found)-1]
}

// seedMachines makes n machines as the API makes them, through the event
// log and its projection in batches, so that the tables are what a
// rebuild from the log would make.
func seedMachines(b *testing.B, pool *pgxpool.Pool, n int) {
	ctx := context.Background()
	db := postgres.New(pool, testLogger())
	const batch = 2000
	now := time.Now()
	for first := 1; first <= n; first += batch {
		evs := make([]events.Event, 0, batch)
		for i := first; i < first+batch && i <= n; i++ {
			id := benchMachineID(i)
			e, err := events.New(events.RegionSource, events.TypeMachineCreated, events.MachineStreamName(id), now,
				events.MachineState{MachineID: id, Hostname: benchHostname(i), Arch: "amd64", Origin: "api", Status: "ready",
					MACs: []string{fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)}})
			if err != nil {
				b.Fatal(err)
			}
			e.Actor = "bench"
			evs = append(evs, e)
		}
		if err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := db.AppendAny(ctx, tx, evs)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	for _, table := range []string{"machines", "machine_macs", "machine_hardware", "api_tokens", "events", "streams"} {
		if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+table); err != nil {
			b.Fatal(err)
		}
	}
}

// runPgbench runs script with clients connections for dur and returns
// its rate and the p99 of its transactions' latencies (from its log).
func runPgbench(b *testing.B, pgbench, dbURL, script string, clients int, dur time.Duration, dir string) result {
	logDir, err := os.MkdirTemp(dir, "pgbench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(logDir)
	cmd := exec.Command(pgbench, "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(dur.Seconds())), "-f", script, "-l", "--log-prefix", filepath.Join(logDir, "log"), dbURL)
	// A session of its own, as the API's load client has (see
	// runLoadClient).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench: %v\n%s", err, out)
	}
	var rate float64
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "tps = "); ok {
			rate, _ = strconv.ParseFloat(strings.Fields(rest)[0], 64)
		}
	}
	if rate == 0 {
		b.Fatalf("pgbench printed no tps:\n%s", out)
	}
	// Each log line: client, transaction, latency in µs, script, epoch, µs.
	var lat []time.Duration
	logs, _ := filepath.Glob(filepath.Join(logDir, "log*"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 {
				us, _ := strconv.ParseInt(f[2], 10, 64)
				lat = append(lat, time.Duration(us)*time.Microsecond)
			}
		}
	}
	// pgbench's own CPU time (its clients' work) per transaction.
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return result{rate: rate, p99: p99(lat), clientCPU: time.Duration(float64(cpu) / (rate * dur.Seconds()))}
}

func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

// loadSpec is what the API's load client is to do.
type loadSpec struct {
	API, Token string
	// Kind is get (random machines) or list (pages after random
	// hostnames).
	Kind     string
	Clients  int
	Duration time.Duration
}

const loadEnv = "RACKPLANE_API_LOAD_CLIENT"

// runLoadClient runs the API's load client in a process of its own, in a
// session of its own, as pgbench is: the client's work is not charged to
// the region's process (where Linux shares the CPU between sessions
// first, the region and its client would otherwise split one share,
// while pgbench's client and PostgreSQL each have theirs).
func runLoadClient(b *testing.B, spec loadSpec) result {
	js, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), loadEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("load client: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "load: "); ok {
			var r struct {
				Rate float64
				P99  time.Duration
				CPU  time.Duration
			}
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				b.Fatal(err)
			}
			return result{rate: r.Rate, p99: r.P99, clientCPU: r.CPU}
		}
	}
	b.Fatalf("load client said no result:\n%s", out)
	return result{}
}

// apiLoadClient is BenchmarkAPIVsPgbench's load client: the test binary
// runs it instead of the tests when TestMain finds loadEnv set. It
// returns the process's exit status.
func apiLoadClient(env string) int {
	var spec loadSpec
	if err := json.Unmarshal([]byte(env), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// The path of a request, appended to b.
	path := func(b []byte, rng *rand.Rand) []byte {
		return appendBenchMachineID(append(b, "/api/v1/machines/"...), 1+rng.IntN(benchMachines))
	}
	if spec.Kind == "list" {
		path = func(b []byte, rng *rand.Rand) []byte {
			return appendBenchHostname(append(b, "/api/v1/machines?after="...), 1+rng.IntN(benchMachines-100))
		}
	}
	client := leanClient
	if os.Getenv(benchClientEnv) == "net/http" {
		client = netHTTPClient
	}
	start := processCPU()
	r, err := runAPI(spec, path, client)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, _ := json.Marshal(struct {
		Rate float64
		P99  time.Duration
		// CPU is the client's own time per request.
		CPU time.Duration
	}{r.rate, r.p99, time.Duration(float64(processCPU()-start) / (r.rate * spec.Duration.Seconds()))})
	fmt.Printf("load: %s\n", out)
	return 0
}

// benchClientEnv set to net/http makes the load client use net/http's
// client rather than its own (see leanClient), to compare what each costs.
const benchClientEnv = "RACKPLANE_BENCH_HTTP_CLIENT"

func appendBenchMachineID(b []byte, i int) []byte {
	b = append(b, "00000000-0000-4000-8000-"...)
	return appendPadded(b, strconv.FormatInt(int64(i), 16), 12)
}

func appendBenchHostname(b []byte, i int) []byte {
	return appendPadded(append(b, "node-"...), strconv.Itoa(i), 6)
}

func appendPadded(b []byte, digits string, width int) []byte {
	for n := len(digits); n < width; n++ {
		b = append(b, '0')
	}
	return append(b, digits...)
}

// getter asks for one path and reads the whole response, returning an
// error unless it is a 200.
type getter func(path []byte) error

// runAPI has spec.Clients goroutines, each with a getter of its own from
// newGetter (a kept-alive connection), ask path(rng) for spec.Duration,
// and returns the rate of answered requests and their p99.
func runAPI(spec loadSpec, path func([]byte, *rand.Rand) []byte, newGetter func(spec loadSpec) (getter, func())) (result, error) {
	var mu sync.Mutex
	var all []time.Duration
	var failed error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(spec.Duration)
	for c := 0; c < spec.Clients; c++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			get, done := newGetter(spec)
			defer done()
			rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
			lat := make([]time.Duration, 0, 1<<16)
			var p []byte
			for t0 := time.Now(); t0.Before(deadline); t0 = time.Now() {
				p = path(p[:0], rng)
				if err := get(p); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}(uint64(c))
	}
	wg.Wait()
	if failed != nil {
		return result{}, failed
	}
	return result{rate: float64(len(all)) / time.Since(start).Seconds(), p99: p99(all)}, nil
}

// netHTTPClient gets with net/http's client, one kept-alive connection
// per client goroutine.
func netHTTPClient(spec loadSpec) (getter, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return func(path []byte) error {
		req, _ := http.NewRequest(http.MethodGet, spec.API+string(path), nil)
		req.Header.Set("Authorization", "Bearer "+spec.Token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", req.URL, resp.Status)
		}
		return err
	}, tr.CloseIdleConnections
}

// leanClient gets over one kept-alive HTTP/1.1 connection of its own, as
// pgbench's clients use libpq: each request is written whole (request
// line, Host, Authorization) and the whole response is read, its status
// line, every header and its body to the last byte (by Content-Length, or
// chunk by chunk), without net/http's Request, Header map, Response and
// transport goroutines for each. A response it cannot read as HTTP/1.1
// fails the run.
func leanClient(spec loadSpec) (getter, func()) {
	u, err := url.Parse(spec.API)
	if err != nil {
		return func([]byte) error { return err }, func() {}
	}
	var conn net.Conn
	var rd *bufio.Reader
	var req []byte
	var body [16 << 10]byte
	hangUp := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	return func(path []byte) error {
		if conn == nil {
			c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
			if err != nil {
				return err
			}
			conn, rd = c, bufio.NewReaderSize(c, 16<<10)
		}
		req = append(req[:0], "GET "...)
		req = append(req, path...)
		req = append(req, " HTTP/1.1\r\nHost: "...)
		req = append(req, u.Host...)
		req = append(req, "\r\nUser-Agent: rackplane-bench\r\nAuthorization: Bearer "...)
		req = append(req, spec.Token...)
		req = append(req, "\r\n\r\n"...)
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(req); err != nil {
			hangUp()
			return err
		}
		status, _, keep, err := readResponse(rd, body[:])
		if err != nil || !keep {
			hangUp()
		}
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("GET %s: status %d", path, status)
		}
		return err
	}, hangUp
}

// readResponse reads an HTTP/1.1 response whole from r, its body through
// buf, and returns its status, the body's length and whether the
// connection stays open.
func readResponse(r *bufio.Reader, buf []byte) (status int, size int64, keep bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, 0, false, err
	}
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " {
		return 0, 0, false, fmt.Errorf("status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, 0, false, fmt.Errorf("status line %q", line)
	}
	length, chunked, keep := int64(-1), false, true
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, 0, false, fmt.Errorf("header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return 0, 0, false, fmt.Errorf("header %q", line)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return 0, 0, false, err
			}
			hex, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
			n, err := strconv.ParseInt(string(hex), 16, 64)
			if err != nil || n < 0 {
				return 0, 0, false, fmt.Errorf("chunk size %q", line)
			}
			if n == 0 {
				// The trailer, up to its empty line.
				for {
					line, err := r.ReadSlice('\n')
					if err != nil {
						return 0, 0, false, err
					}
					if len(bytes.TrimRight(line, "\r\n")) == 0 {
						return status, size, keep, nil
					}
				}
			}
			// The chunk and its CRLF.
			if err := readN(r, buf, n+2); err != nil {
				return 0, 0, false, err
			}
			size += n
		}
	case length >= 0:
		return status, length, keep, readN(r, buf, length)
	default:
		return 0, 0, false, fmt.Errorf("response with neither Content-Length nor chunks")
	}
}

// readN reads n bytes from r through buf.
func readN(r *bufio.Reader, buf []byte, n int64) error {
	for n > 0 {
		k, err := r.Read(buf[:min(int64(len(buf)), n)])
		n -= int64(k)
		if err != nil && n > 0 {
			return err
		}
	}
	return nil
}
