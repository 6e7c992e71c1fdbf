package handoff

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/rackplane/rackplane/events"
)

// TelemetryLimits bound the boot events a rack makes of requests nobody
// authenticated (TFTP, HTTP boot, offload front-ends): a request is
// reported one by one (its boot_handoff or boot_request_rejected, then
// its boot_transfer) while its source, and all sources together, are
// within their rates; the rest are counted and go out as one
// boot_requests_summarized event per SummaryInterval. Each rate is a
// token bucket: Burst requests at once, refilled at Rate a second.
type TelemetryLimits struct {
	// PerSourceRate and PerSourceBurst are the bucket of each source
	// address (an IPv4 address, an IPv6 /64). A machine's boot makes a
	// few dozen requests; a reboot loop or a flood from one address is
	// summarised.
	PerSourceRate  float64
	PerSourceBurst int
	// TotalRate and TotalBurst are the bucket of all sources together:
	// requests from many addresses (forged ones, say) cannot make more
	// events than this.
	TotalRate  float64
	TotalBurst int
	// MaxSources bounds the table of per-source buckets. Sources whose
	// bucket has filled up again are forgotten when it is full; while it
	// is full of busy ones, new sources share one bucket.
	MaxSources int
	// SummaryInterval is how often the requests not reported one by one
	// go out as one event (none when there were none).
	SummaryInterval time.Duration
}

// DefaultTelemetryLimits are rackd's defaults: 100 requests at once and 1
// a second from one source, 1,000 at once and 20 a second in all (about
// fifty machines booting at once, then one a second), 4,096 sources
// tracked, a summary a minute.
func DefaultTelemetryLimits() TelemetryLimits {
	return TelemetryLimits{
		PerSourceRate: 1, PerSourceBurst: 100,
		TotalRate: 20, TotalBurst: 1000,
		MaxSources:      4096,
		SummaryInterval: time.Minute,
	}
}

// withDefaults fills the zero fields with DefaultTelemetryLimits'.
func (l TelemetryLimits) withDefaults() TelemetryLimits {
	d := DefaultTelemetryLimits()
	orDefault(&l.PerSourceRate, d.PerSourceRate)
	orDefault(&l.PerSourceBurst, d.PerSourceBurst)
	orDefault(&l.TotalRate, d.TotalRate)
	orDefault(&l.TotalBurst, d.TotalBurst)
	orDefault(&l.MaxSources, d.MaxSources)
	orDefault(&l.SummaryInterval, d.SummaryInterval)
	return l
}

func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// RegisterFlags binds l's fields to rackd's -boot-events-* flags.
func (l *TelemetryLimits) RegisterFlags(fs *flag.FlagSet) {
	fs.Float64Var(&l.TotalRate, "boot-events-rate", l.TotalRate, "boot requests a second (TFTP, HTTP boot, offload) reported one by one as events, all sources together; the rest are counted in one boot_requests_summarized event per -boot-events-summary-interval")
	fs.IntVar(&l.TotalBurst, "boot-events-burst", l.TotalBurst, "boot requests reported one by one at once, all sources together, before -boot-events-rate applies")
	fs.Float64Var(&l.PerSourceRate, "boot-events-per-source-rate", l.PerSourceRate, "boot requests a second reported one by one from one source address (an IPv6 /64 counts as one)")
	fs.IntVar(&l.PerSourceBurst, "boot-events-per-source-burst", l.PerSourceBurst, "boot requests reported one by one at once from one source address")
	fs.IntVar(&l.MaxSources, "boot-events-sources", l.MaxSources, "source addresses the per-source rate keeps track of; while that many are busy, new ones share one rate")
	fs.DurationVar(&l.SummaryInterval, "boot-events-summary-interval", l.SummaryInterval, "how often boot requests not reported one by one go out as one boot_requests_summarized event")
}

// Validate reports every bad limit, by its rackd flag.
func (l TelemetryLimits) Validate() error {
	var errs []error
	rate := func(flag string, v float64) {
		if !(v > 0 && v <= 1e6) {
			errs = append(errs, fmt.Errorf("%s %g: want more than 0, at most 1000000", flag, v))
		}
	}
	count := func(flag string, v, most int) {
		if v < 1 || v > most {
			errs = append(errs, fmt.Errorf("%s %d: want 1 to %d", flag, v, most))
		}
	}
	rate("-boot-events-rate", l.TotalRate)
	count("-boot-events-burst", l.TotalBurst, 10_000_000)
	rate("-boot-events-per-source-rate", l.PerSourceRate)
	count("-boot-events-per-source-burst", l.PerSourceBurst, 10_000_000)
	count("-boot-events-sources", l.MaxSources, 1<<20)
	if l.SummaryInterval < 10*time.Millisecond || l.SummaryInterval > time.Hour {
		errs = append(errs, fmt.Errorf("-boot-events-summary-interval %s: want 10ms to 1h", l.SummaryInterval))
	}
	return errors.Join(errs...)
}

// Limits that hold a request back (label of
// rackplane_boot_events_summarized_total, keys of by_limit).
const (
	LimitSource = "source"
	LimitTotal  = "total"
)

// maxTopSources is how many sources a summary names.
const maxTopSources = 10

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     time.Time // of the last refill; zero: full
}

// refill brings the tokens up to now.
func (b *bucket) refill(now time.Time, rate float64, burst int) {
	if b.at.IsZero() {
		b.tokens, b.at = float64(burst), now
		return
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*rate)
		b.at = now
	}
}

// take takes a token, if there is one.
func (b *bucket) take(now time.Time, rate float64, burst int) bool {
	b.refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// gate decides which boot requests are reported one by one, and counts
// the others until the next summary. Its memory is bounded: MaxSources
// buckets, and as many sources counted in a summary.
type gate struct {
	lim TelemetryLimits

	mu       sync.Mutex
	total    bucket
	sources  map[netip.Addr]*bucket
	overflow bucket // of new sources while the table is full of busy ones
	swept    time.Time
	sum      summary
}

// summary is what a gate counted since its last summary.
type summary struct {
	since                               time.Time
	requests, transfers, transferErrors int64
	byProtocol, byOutcome, byLimit      map[string]int64
	sources                             map[netip.Addr]int64
	sourcesCapped                       bool
}

func newGate(lim TelemetryLimits, now time.Time) *gate {
	g := &gate{lim: lim, sources: map[netip.Addr]*bucket{}}
	g.sum.reset(now)
	return g
}

func (s *summary) reset(now time.Time) {
	*s = summary{since: now, byProtocol: map[string]int64{}, byOutcome: map[string]int64{}, byLimit: map[string]int64{},
		sources: map[netip.Addr]int64{}}
}

// SourceOf is the source a request's remote address counts against: the
// IPv4 address, the /64 of an IPv6 address (a host gets a whole /64), or
// the zero Addr when there is none that parses.
func SourceOf(remote string) netip.Addr {
	a, err := netip.ParseAddrPort(remote)
	addr := a.Addr()
	if err != nil {
		if addr, err = netip.ParseAddr(remote); err != nil {
			return netip.Addr{}
		}
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		addr = p.Addr()
	}
	return addr
}

// sourceName names a source in a summary.
func sourceName(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "unknown"
	case a.Is6():
		return netip.PrefixFrom(a, 64).String()
	}
	return a.String()
}

// admit decides whether a request from src is reported one by one: it
// returns "" when it is, else the limit that holds it back.
func (g *gate) admit(now time.Time, src netip.Addr) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.sources[src]
	if b == nil {
		if len(g.sources) >= g.lim.MaxSources && now.Sub(g.swept) >= time.Second/10 {
			g.sweep(now)
		}
		if len(g.sources) < g.lim.MaxSources {
			b = &bucket{}
			g.sources[src] = b
		} else {
			b = &g.overflow
		}
	}
	if !b.take(now, g.lim.PerSourceRate, g.lim.PerSourceBurst) {
		return LimitSource
	}
	if !g.total.take(now, g.lim.TotalRate, g.lim.TotalBurst) {
		b.tokens++ // not the source's doing: give its token back
		return LimitTotal
	}
	return ""
}

// sweep forgets the sources whose bucket is full again: a new bucket
// would be the same.
func (g *gate) sweep(now time.Time) {
	g.swept = now
	for a, b := range g.sources {
		b.refill(now, g.lim.PerSourceRate, g.lim.PerSourceBurst)
		if b.tokens >= float64(g.lim.PerSourceBurst) {
			delete(g.sources, a)
		}
	}
}

// held counts a request held back by limit; outcome is its route or
// rejection reason.
func (g *gate) held(src netip.Addr, protocol, outcome, limit string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := &g.sum
	s.requests++
	s.byProtocol[protocol]++
	s.byOutcome[outcome]++
	s.byLimit[limit]++
	if _, ok := s.sources[src]; ok || len(s.sources) < g.lim.MaxSources {
		s.sources[src]++
	} else {
		s.sourcesCapped = true
	}
}

// transferEnded counts the end of a transfer whose request was held back.
func (g *gate) transferEnded(failed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sum.transfers++
	if failed {
		g.sum.transferErrors++
	}
}

// tracked is how many sources the gate has a bucket of.
func (g *gate) tracked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sources)
}

// flush returns the summary of what was held back since the last one,
// nil when nothing was, and starts anew.
func (g *gate) flush(now time.Time) *events.BootRequestsSummarized {
	g.mu.Lock()
	s := g.sum
	g.sum.reset(now)
	g.mu.Unlock()
	if s.requests == 0 && s.transfers == 0 {
		return nil
	}
	ev := &events.BootRequestsSummarized{
		Since: s.since.UTC(), Until: now.UTC(),
		Requests: s.requests, Transfers: s.transfers, TransferErrors: s.transferErrors,
		Sources: int64(len(s.sources)), SourcesCapped: s.sourcesCapped,
		ByProtocol: nonZero(s.byProtocol), ByOutcome: nonZero(s.byOutcome), ByLimit: nonZero(s.byLimit),
	}
	top := make([]events.SourceCount, 0, len(s.sources))
	for a, n := range s.sources {
		top = append(top, events.SourceCount{Source: sourceName(a), Requests: n})
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Requests != top[j].Requests {
			return top[i].Requests > top[j].Requests
		}
		return top[i].Source < top[j].Source
	})
	if len(top) > maxTopSources {
		top = top[:maxTopSources]
	}
	if len(top) > 0 {
		ev.TopSources = top
	}
	return ev
}

func nonZero(m map[string]int64) map[string]int64 {
	if len(m) == 0 {
		return nil
	}
	return m
}
