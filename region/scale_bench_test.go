package region_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/internal/simrack"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/ingest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// BenchmarkScale runs virtual racks (internal/simrack: one NATS
// connection each, heartbeats, followers, rpc answers, boot telemetry and
// DHCP reports through an eventbus publisher) against a region and a NATS
// server that each run in a process of their own (this test binary again,
// scaleChild, from TestMain), so that /proc says what each costs, and prints one
// row per racks×machines case:
//
//	RACKPLANE_SCALE=10x10000,100x10000,1000x10000 (racks x machines, the default)
//	RACKPLANE_SCALE_DURATION=60s   measured window of each case
//	RACKPLANE_SCALE_BOOT_WINDOW=   the machines' boots are spread evenly over it (default: the window)
//	RACKPLANE_SCALE_UNKNOWN=0      fraction of machines the region does not know (their boots make it discover them)
//	RACKPLANE_SCALE_IDLE=10s       racks connected, no machine booting, measured before the window
//	RACKPLANE_SCALE_REGIONS=1      region instances on the one database
//
// The region runs without its NATS auth callout (cfg.NoNATSCallout), as
// BenchmarkIngest's does: the racks connect to an open server, and what is
// measured is their traffic, not admission. docs/scale.md says what each
// column is and what the figures mean.
func BenchmarkScale(b *testing.B) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("reads processes' CPU from /proc")
	}
	cases, err := parseScaleCases(envOr("RACKPLANE_SCALE", "10x10000,100x10000,1000x10000"))
	if err != nil {
		b.Fatal(err)
	}
	window := envDuration(b, "RACKPLANE_SCALE_DURATION", time.Minute)
	boots := envDuration(b, "RACKPLANE_SCALE_BOOT_WINDOW", window)
	unknown, err := strconv.ParseFloat(envOr("RACKPLANE_SCALE_UNKNOWN", "0"), 64)
	if err != nil || unknown < 0 || unknown > 1 {
		b.Fatalf("RACKPLANE_SCALE_UNKNOWN %q: want a fraction from 0 to 1", os.Getenv("RACKPLANE_SCALE_UNKNOWN"))
	}
	regions, err := strconv.Atoi(envOr("RACKPLANE_SCALE_REGIONS", "1"))
	if err != nil || regions < 1 {
		b.Fatalf("RACKPLANE_SCALE_REGIONS %q: want 1 or more", os.Getenv("RACKPLANE_SCALE_REGIONS"))
	}
	var rows []scaleRow
	for _, c := range cases {
		b.Run(fmt.Sprintf("racks%d_machines%d", c.racks, c.machines), func(b *testing.B) {
			row := runScale(b, c, regions, window, boots, unknown)
			b.ReportMetric(row.committedPerS, "events/s")
			b.ReportMetric(row.regionCPU, "region-cpu-%")
			b.ReportMetric(row.hbP99.Seconds()*1000, "hb-p99-ms")
			b.ReportMetric(row.evP99.Seconds()*1000, "event-p99-ms")
			rows = append(rows, row)
		})
	}
	printScale(os.Stdout, rows, regions, window, boots, unknown)
}

type scaleCase struct{ racks, machines int }

func parseScaleCases(s string) ([]scaleCase, error) {
	var out []scaleCase
	for _, f := range strings.Split(s, ",") {
		r, m, ok := strings.Cut(strings.TrimSpace(f), "x")
		racks, err1 := strconv.Atoi(r)
		machines, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || racks < 1 || machines < 0 {
			return nil, fmt.Errorf("RACKPLANE_SCALE %q: want RACKSxMACHINES,... such as 10x10000,100x10000", s)
		}
		out = append(out, scaleCase{racks, machines})
	}
	return out, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s %q: want a duration such as 60s", name, v)
	}
	return d
}

// scaleRow is one case's figures.
type scaleRow struct {
	scaleCase
	offeredPerS, committedPerS   float64 // rack events handed to publishers, and appended, per second
	regionCPU, natsCPU, racksCPU float64 // % of one core
	pgCPU                        float64 // the region database's backends, % of one core
	commitsPerS, tuplesPerS      float64 // pg_stat_database deltas
	hbP99, hbMax                 time.Duration
	hbSamples                    int
	evP99, evP99First, evP99Last time.Duration
	backlogMax, backlogEnd       uint64 // ingest consumer: pending + unacknowledged
	buffered                     int    // in the racks' publishers at the end
	dropped                      int64
	summarized                   int64
	offline                      int64         // rack_offline events in the window
	perTx                        float64       // rack events per ingest transaction
	discovered                   int64         // machines the region made of unknown MACs' boots
	join                         time.Duration // until every rack is listed online
	idleRegionCPU, idleNATSCPU   float64       // with the racks connected and no machine booting
	idlePGCPU                    float64
	pgWaits                      string // what the region's active backends were doing
	drain                        time.Duration
	undrained                    int64
	rpcs                         int64
	load1, load5                 float64
}

func runScale(b *testing.B, c scaleCase, regions int, window, bootWindow time.Duration, unknown float64) scaleRow {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := b.TempDir()
	row := scaleRow{scaleCase: c}

	natsProc, natsURL := startScaleChild(b, "nats", "nats", dir, map[string]string{"RACKPLANE_SCALE_DIR": filepath.Join(dir, "nats")})
	dbURL := pgtest.NewDatabase(b)
	// Region instances share the database, the key and the ingest
	// consumer, as TestTwoRegionsShareTheWork's; the API of the first is
	// the one polled.
	var regionProcs []*os.Process
	var api string
	key := regiontest.KeyFile(b)
	for i := range regions {
		p, addr := startScaleChild(b, "region", fmt.Sprintf("region%d", i), dir, map[string]string{
			"RACKPLANE_SCALE_NATS": natsURL, "RACKPLANE_SCALE_DB": dbURL, "RACKPLANE_SCALE_KEY": key})
		regionProcs = append(regionProcs, p)
		if i == 0 {
			api = addr
		}
	}
	// The bench's own backends are told apart by their name.
	pool, err := pgxpool.New(ctx, dbURL+"&application_name="+benchApp)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var dbName string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		b.Fatal(err)
	}
	_, token, err := postgres.New(pool, testLogger()).CreateToken(ctx, "scale", "bench", "scale-setup", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: bearer{token}, Timeout: 30 * time.Second}
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}

	// Racks, each recording when it sent its heartbeats.
	beats := newBeatLog()
	racks := make([]*simrack.Rack, c.racks)
	rctx, stopRacks := context.WithCancel(ctx)
	defer func() {
		stopRacks()
		for _, r := range racks {
			if r != nil {
				r.Wait()
			}
		}
	}()
	var startErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range racks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := uuid.NewString()
			r, err := simrack.Start(rctx, simrack.Config{NATSURL: natsURL, ID: id, Name: fmt.Sprintf("sim-%04d", i),
				Logger: testLogger(), Beat: func(_ int64, sent time.Time) { beats.sent(id, sent) }})
			mu.Lock()
			defer mu.Unlock()
			racks[i] = r
			if err != nil {
				startErr = err
			}
		}()
	}
	wg.Wait()
	if startErr != nil {
		b.Fatal(startErr)
	}
	// Warm-up: every rack registered and online, its rack_registered and
	// capabilities in the log, before anything is measured.
	joinStart := time.Now()
	deadline := joinStart.Add(5*time.Minute + time.Duration(c.racks)*100*time.Millisecond)
	for {
		list, err := listRacks(ctx, client, api)
		online := 0
		for _, r := range list {
			if r.Online {
				online++
			}
		}
		if err == nil && online == c.racks {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d racks of %d online after warm-up (%v)", online, c.racks, err)
		}
		time.Sleep(time.Second)
	}
	row.join = time.Since(joinStart)
	time.Sleep(2 * time.Second) // the followers' consumers settle

	// What N racks cost while no machine boots: heartbeats, liveness
	// checks, followers, the API polled as below.
	idle := envDuration(b, "RACKPLANE_SCALE_IDLE", 10*time.Second)
	idleBefore := sampleScale(ctx, b, pool, dbName, racks, regionProcs, natsProc)
	idlePG := newPGCPU()
	idlePG.sample(ctx, pool, dbName)
	for end := time.Now().Add(idle); time.Now().Before(end); time.Sleep(time.Second) {
		idlePG.sample(ctx, pool, dbName)
		_, _ = listRacks(ctx, client, api)
	}
	idleAfter := sampleScale(ctx, b, pool, dbName, racks, regionProcs, natsProc)
	idlePG.sample(ctx, pool, dbName)
	idleSecs := idle.Seconds()
	row.idleRegionCPU = float64(idleAfter.region-idleBefore.region) / clockTicks / idleSecs * 100
	row.idleNATSCPU = float64(idleAfter.nats-idleBefore.nats) / clockTicks / idleSecs * 100
	row.idlePGCPU = float64(idlePG.total()) / clockTicks / idleSecs * 100

	machines := make([]simrack.Machine, c.machines)
	for i := range machines {
		m := simrack.Machine{MAC: fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)),
			IP: netip.AddrFrom4([4]byte{10, byte((i + 1) >> 16), byte((i + 1) >> 8), byte(i + 1)})}
		// Unknown machines are spread evenly among the known.
		if int(float64(i+1)*unknown) == int(float64(i)*unknown) {
			m.ID = uuid.NewString()
		}
		machines[i] = m
	}

	// The measured window.
	before := sampleScale(ctx, b, pool, dbName, racks, regionProcs, natsProc)
	pgcpu := newPGCPU()
	pgcpu.sample(ctx, pool, dbName)
	start := time.Now()
	end := start.Add(window)
	wctx, stopWindow := context.WithDeadline(ctx, end)
	defer stopWindow()
	var bg sync.WaitGroup
	bg.Add(4)
	go func() { // boots, spread evenly
		defer bg.Done()
		for i, m := range machines {
			at := start.Add(time.Duration(float64(bootWindow) * float64(i) / float64(len(machines))))
			if d := time.Until(at); d > 0 {
				select {
				case <-wctx.Done():
					return
				case <-time.After(d):
				}
			}
			racks[i%len(racks)].Boot(m)
		}
	}()
	// every runs f each d until the window ends.
	every := func(d time.Duration, f func()) {
		defer bg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			f()
		}
	}
	// The backends' CPU and what they wait on.
	go every(250*time.Millisecond, func() { pgcpu.sample(ctx, pool, dbName) })
	// Heartbeat → API.
	go every(time.Second, func() {
		if list, err := listRacks(wctx, client, api); err == nil {
			for _, r := range list {
				if r.LastHeartbeat != nil {
					beats.seen(r.ID, *r.LastHeartbeat)
				}
			}
		}
	})
	// The ingest backlog.
	go every(2*time.Second, func() {
		if n, err := ingestBacklog(wctx, js); err == nil {
			row.backlogMax = max(row.backlogMax, n)
		}
	})
	<-wctx.Done()
	bg.Wait()
	after := sampleScale(ctx, b, pool, dbName, racks, regionProcs, natsProc)
	pgcpu.sample(ctx, pool, dbName)
	elapsed := time.Since(start)
	row.backlogEnd, _ = ingestBacklog(ctx, js)
	row.load1, row.load5 = loadAverages()

	secs := elapsed.Seconds()
	pct := func(ticks uint64) float64 { return float64(ticks) / clockTicks / secs * 100 }
	row.regionCPU = pct(after.region - before.region)
	row.natsCPU = pct(after.nats - before.nats)
	row.racksCPU = (after.self - before.self).Seconds() / secs * 100
	row.pgCPU = pct(pgcpu.total())
	row.pgWaits = pgcpu.topWaits()
	row.commitsPerS = float64(after.commits-before.commits) / secs
	row.tuplesPerS = float64(after.tuples-before.tuples) / secs
	row.offeredPerS = float64(after.events-before.events) / secs
	row.summarized = after.summarized - before.summarized
	row.dropped = after.dropped
	row.buffered = after.buffered
	row.rpcs = after.rpcs
	row.hbP99, row.hbMax, row.hbSamples = beats.p99()
	var committed int64
	err = pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE source LIKE 'rackplane/rack/%' AND recorded_at >= $1 AND recorded_at < $2`,
		start, end).Scan(&committed)
	if err != nil {
		b.Fatal(err)
	}
	row.committedPerS = float64(committed) / secs
	var txs int64
	_ = pool.QueryRow(ctx, `SELECT count(DISTINCT txid) FROM events WHERE source LIKE 'rackplane/rack/%' AND recorded_at >= $1 AND recorded_at < $2`,
		start, end).Scan(&txs)
	if txs > 0 {
		row.perTx = float64(committed) / float64(txs)
	}
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = $1 AND recorded_at >= $2`, events.TypeRackOffline, start).Scan(&row.offline)
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM machines`).Scan(&row.discovered)

	// Drain: the boots begun in the window end (their last transfer
	// comes 6.5s after their lease), and what the racks sent is in the
	// log, or counted as undrained after two minutes, before its latency
	// is taken. The racks keep beating meanwhile.
	drainStart := time.Now()
	for time.Since(drainStart) < 2*time.Minute {
		n, err := ingestBacklog(ctx, js)
		buffered := 0
		for _, r := range racks {
			buffered += r.Stats().Buffered
		}
		if err == nil && n == 0 && buffered == 0 && time.Since(drainStart) > 7*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	row.drain = time.Since(drainStart)
	stopRacks()
	var sent int64
	for _, r := range racks {
		sent += r.Stats().Events
	}
	var inLog int64
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE source LIKE 'rackplane/rack/%'`).Scan(&inLog)
	row.undrained = max(0, sent-inLog)
	mid := start.Add(window / 2)
	p99 := func(from, to time.Time) time.Duration {
		var s *float64
		_ = pool.QueryRow(ctx, `SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - time))
			FROM events WHERE source LIKE 'rackplane/rack/%' AND time >= $1 AND time < $2`, from, to).Scan(&s)
		if s == nil {
			return 0
		}
		return time.Duration(*s * float64(time.Second))
	}
	row.evP99, row.evP99First, row.evP99Last = p99(start, end), p99(start, mid), p99(mid, end)
	b.Logf("racks %d machines %d: %+v", c.racks, c.machines, row)
	return row
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go runs on.
const clockTicks = 100

type scaleSample struct {
	region, nats                uint64 // CPU ticks of the child processes
	self                        time.Duration
	commits, tuples             int64
	events, summarized, dropped int64
	rpcs                        int64
	buffered                    int
}

func sampleScale(ctx context.Context, b *testing.B, pool *pgxpool.Pool, db string, racks []*simrack.Rack, regions []*os.Process, nats *os.Process) scaleSample {
	var s scaleSample
	var err error
	for _, p := range regions {
		t, err := procTicks(p.Pid)
		if err != nil {
			b.Fatal(err)
		}
		s.region += t
	}
	if s.nats, err = procTicks(nats.Pid); err != nil {
		b.Fatal(err)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err := pool.QueryRow(ctx, `SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = $1`, db).
		Scan(&s.commits, &s.tuples); err != nil {
		b.Fatal(err)
	}
	for _, r := range racks {
		st := r.Stats()
		s.events += st.Events
		s.summarized += st.Summarized
		s.dropped += st.Dropped
		s.buffered += st.Buffered
		s.rpcs += st.RPCs
	}
	return s
}

// procTicks returns a process's user+system CPU time in clock ticks.
func procTicks(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u + s, nil
}

// benchApp is the application_name of the bench's own connections.
const benchApp = "rackplane-scale-bench"

// pgCPU follows the CPU of the backends serving the region's database:
// each backend's ticks since it was first seen (a backend started in the
// window counts from zero), and what the active ones were doing at each
// sample. Postgres's shared processes (WAL writer, checkpointer) serve
// every database on the server and are left out, as are the bench's own
// connections.
type pgCPU struct {
	first, last map[int]uint64
	waits       map[string]int // "CPU" or wait_event_type:wait_event of an active backend
	active      int
}

func newPGCPU() *pgCPU {
	return &pgCPU{first: map[int]uint64{}, last: map[int]uint64{}, waits: map[string]int{}}
}

func (p *pgCPU) sample(ctx context.Context, pool *pgxpool.Pool, db string) {
	rows, err := pool.Query(ctx, `SELECT pid, state = 'active', coalesce(wait_event_type || ':' || wait_event, 'CPU')
		FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2`, db, benchApp)
	if err != nil {
		return
	}
	var pids []int
	for rows.Next() {
		var pid int
		var active bool
		var wait string
		if rows.Scan(&pid, &active, &wait) == nil {
			pids = append(pids, pid)
			if active {
				p.waits[wait]++
				p.active++
			}
		}
	}
	rows.Close()
	seenBefore := len(p.first) > 0
	for _, pid := range pids {
		t, err := procTicks(pid)
		if err != nil {
			continue // not on this host, or gone
		}
		if _, ok := p.first[pid]; !ok {
			p.first[pid] = 0
			if !seenBefore {
				p.first[pid] = t
			}
		}
		p.last[pid] = t
	}
}

// topWaits names the commonest states of active backends, with their
// share of the samples.
func (p *pgCPU) topWaits() string {
	type w struct {
		name string
		n    int
	}
	var ws []w
	for k, n := range p.waits {
		ws = append(ws, w{k, n})
	}
	slices.SortFunc(ws, func(a, b w) int { return b.n - a.n })
	var out []string
	for i, x := range ws {
		if i == 3 {
			break
		}
		out = append(out, fmt.Sprintf("%s %.0f%%", x.name, 100*float64(x.n)/float64(p.active)))
	}
	return strings.Join(out, ", ")
}

func (p *pgCPU) total() uint64 {
	var n uint64
	for pid, last := range p.last {
		n += last - p.first[pid]
	}
	return n
}

// beatLog matches the heartbeats the racks sent with the times the region
// says it received them (GET /api/v1/racks last_heartbeat, from the
// region's liveness monitor): a heartbeat's latency is that receipt time
// minus the sending time of the latest heartbeat sent before it.
type beatLog struct {
	mu      sync.Mutex
	sends   map[string][]time.Time
	last    map[string]time.Time
	latency []time.Duration
}

func newBeatLog() *beatLog {
	return &beatLog{sends: map[string][]time.Time{}, last: map[string]time.Time{}}
}

func (l *beatLog) sent(rack string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := append(l.sends[rack], at)
	if len(s) > 16 {
		s = s[len(s)-16:]
	}
	l.sends[rack] = s
}

func (l *beatLog) seen(rack string, received time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !received.After(l.last[rack]) {
		return
	}
	first := l.last[rack].IsZero()
	l.last[rack] = received
	if first {
		return // received before the window, maybe
	}
	var match time.Time
	for _, s := range l.sends[rack] {
		if !s.After(received) {
			match = s
		}
	}
	if !match.IsZero() {
		l.latency = append(l.latency, received.Sub(match))
	}
}

func (l *beatLog) p99() (p99, maxLat time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.latency) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.latency)
	slices.Sort(s)
	return s[int(math.Ceil(0.99*float64(len(s))))-1], s[len(s)-1], len(s)
}

type apiRack struct {
	ID            string     `json:"id"`
	Online        bool       `json:"online"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
}

func listRacks(ctx context.Context, client *http.Client, api string) ([]apiRack, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/v1/racks", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/racks: %s", resp.Status)
	}
	var body struct{ Racks []apiRack }
	err = json.NewDecoder(resp.Body).Decode(&body)
	return body.Racks, err
}

// ingestBacklog is what the region's ingest consumer has still to take:
// messages not yet delivered and delivered but not acknowledged.
func ingestBacklog(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ictx, events.RackStream, ingest.ConsumerName)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ictx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

func loadAverages() (float64, float64) {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0, 0
	}
	l1, _ := strconv.ParseFloat(f[0], 64)
	l5, _ := strconv.ParseFloat(f[1], 64)
	return l1, l5
}

func printScale(w io.Writer, rows []scaleRow, regions int, window, boots time.Duration, unknown float64) {
	fmt.Fprintf(w, "\nBenchmarkScale: %d region instance(s) without the NATS auth callout; window %s, boots spread over %s, %.0f%% of machines unknown to the region; CPU in %% of one core (%d cores), region%% summed over instances\n",
		regions, window, boots, unknown*100, runtime.NumCPU())
	fmt.Fprintf(w, "%6s %8s %7s %14s %9s %9s %7s %7s %7s %7s %8s %8s %8s %8s %8s %9s %9s %9s %9s %8s %8s %9s %s\n",
		"racks", "machines", "join", "idle reg/pg/nats", "offered/s", "events/s", "region%", "pg%", "nats%", "racks%", "region", "pg",
		"ev/tx", "commit/s", "tuples/s", "hb-p99", "ev-p99", "ev-p99-1st", "ev-p99-2nd", "backlog", "summ", "load1/5", "keeping up")
	fmt.Fprintf(w, "%6s %8s %7s %14s %9s %9s %7s %7s %7s %7s %8s %8s\n", "", "", "", "(% of a core)", "", "", "", "", "", "", "µs/event", "µs/event")
	for _, r := range rows {
		perEvent := func(pct float64) float64 {
			if r.committedPerS == 0 {
				return 0
			}
			return pct / 100 / r.committedPerS * 1e6
		}
		idle := fmt.Sprintf("%.0f/%.0f/%.0f", r.idleRegionCPU, r.idlePGCPU, r.idleNATSCPU)
		fmt.Fprintf(w, "%6d %8d %7s %14s %9.0f %9.0f %7.0f %7.0f %7.0f %7.0f %8.0f %8.0f %8.1f %8.0f %8.0f %9s %9s %9s %9s %8d %8d %4.1f/%4.1f %s\n",
			r.racks, r.machines, r.join.Round(time.Second), idle, r.offeredPerS, r.committedPerS, r.regionCPU, r.pgCPU, r.natsCPU, r.racksCPU,
			perEvent(r.regionCPU), perEvent(r.pgCPU), r.perTx, r.commitsPerS, r.tuplesPerS, fmtLatency(r.hbP99), fmtLatency(r.evP99), fmtLatency(r.evP99First), fmtLatency(r.evP99Last),
			r.backlogMax, r.summarized, r.load1, r.load5, r.verdict())
	}
	fmt.Fprintf(w, "the region's active Postgres backends, sampled every 250ms:\n")
	for _, r := range rows {
		fmt.Fprintf(w, "%6d %8d  %s\n", r.racks, r.machines, r.pgWaits)
	}
}

func fmtLatency(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.0fs", d.Seconds())
	}
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}

// verdict says whether the region kept up with the racks in the window,
// and if not, by what sign.
func (r scaleRow) verdict() string {
	var why []string
	if r.offeredPerS > 0 && r.committedPerS < 0.9*r.offeredPerS {
		why = append(why, fmt.Sprintf("appends %.0f%% of what racks send", 100*r.committedPerS/r.offeredPerS))
	}
	if r.backlogEnd > 0 && float64(r.backlogEnd) > r.offeredPerS { // more than a second's worth left
		why = append(why, fmt.Sprintf("stream backlog %d at the end", r.backlogEnd))
	}
	if r.evP99First > 0 && r.evP99Last > 2*r.evP99First && r.evP99Last > time.Second {
		why = append(why, "event latency growing over the run")
	}
	if r.offline > 0 {
		why = append(why, fmt.Sprintf("%d racks declared offline", r.offline))
	}
	if r.dropped > 0 {
		why = append(why, fmt.Sprintf("%d events dropped by racks", r.dropped))
	}
	if r.undrained > 0 {
		why = append(why, fmt.Sprintf("%d events not in the log 2m after", r.undrained))
	}
	var notes string
	if r.discovered > 0 {
		notes = fmt.Sprintf(" (%d machines discovered)", r.discovered)
	}
	if len(why) == 0 {
		if r.drain > 10*time.Second {
			return fmt.Sprintf("yes (drained %s after the window)%s", r.drain.Round(time.Second), notes)
		}
		return "yes" + notes
	}
	return "NO: " + strings.Join(why, "; ") + notes
}

// startScaleChild runs this test binary again as role (scaleChild)
// and returns the process and what it printed when ready (the NATS URL,
// the API's base URL). The process ends when its stdin closes, at b's
// cleanup.
func startScaleChild(b *testing.B, role, name, dir string, env map[string]string) (*os.Process, string) {
	b.Helper()
	vars := []string{"RACKPLANE_SCALE_CHILD=" + role}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	c := startBenchChild(b, role, filepath.Join(dir, name+".log"), vars...)
	v := c.await("scale-child-ready ", 2*time.Minute)
	// Nothing else it prints is read: drained, so that it never blocks
	// writing.
	go func() {
		for range c.lines {
		}
	}()
	return c.proc, v
}

// scaleChild is BenchmarkScale's NATS server or region, in a process
// of its own; without RACKPLANE_SCALE_CHILD it does nothing.
func scaleChild(role string) int {
	fatal := func(v ...any) int {
		fmt.Fprintln(os.Stderr, v...)
		return 1
	}
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	switch role {
	case "nats":
		s, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: os.Getenv("RACKPLANE_SCALE_DIR"), Name: "scale"})
		if err != nil {
			return fatal(err)
		}
		fmt.Println("scale-child-ready " + s.ClientURL())
		<-stdinClosed
		s.Shutdown()
		s.WaitForShutdown()
	case "region":
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		pool, err := pgxpool.New(ctx, os.Getenv("RACKPLANE_SCALE_DB"))
		if err != nil {
			return fatal(err)
		}
		defer pool.Close()
		nc, err := nats.Connect(os.Getenv("RACKPLANE_SCALE_NATS"), nats.MaxReconnects(-1))
		if err != nil {
			return fatal(err)
		}
		defer nc.Close()
		cfg := region.DefaultConfig()
		cfg.Secrets.KeyFile = os.Getenv("RACKPLANE_SCALE_KEY")
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.NoNATSCallout = true // the virtual racks are on an open server, as BenchmarkIngest's
		r, err := region.New(cfg, pool, nc, nil, testLogger())
		if err != nil {
			return fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		api := "http://" + r.Addr()
		for {
			resp, err := http.Get(api + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case err := <-done:
				return fatal("region:", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		fmt.Println("scale-child-ready " + api)
		<-stdinClosed
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return fatal("region:", err)
		}
	default:
		return fatal(fmt.Sprintf("RACKPLANE_SCALE_CHILD %q: want nats or region", role))
	}
	return 0
}
