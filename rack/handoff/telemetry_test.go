package handoff_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
)

// clock is a time that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// limited is a resolver with limits lim on a clock of the test's, its
// events in rec and its metrics in reg.
type limited struct {
	res   *handoff.Resolver
	rec   *handofftest.Recorder
	reg   *prometheus.Registry
	clock *clock
}

func newLimited(t *testing.T, lim handoff.TelemetryLimits) *limited {
	t.Helper()
	l := &limited{rec: handofftest.NewRecorder(t), reg: prometheus.NewRegistry(),
		clock: &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}
	render, err := bootconfig.NewRenderer(bootconfig.RenderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	l.res, err = handoff.NewResolver(handoff.Config{RackID: handofftest.RackID, Root: t.TempDir(), Now: l.clock.Now, Telemetry: lim},
		handofftest.Decisions{}, nil, render, l.rec, slog.New(slog.DiscardHandler), l.reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.res.Close() })
	return l
}

// request asks for a file that is not there from remote, as TFTP would.
func (l *limited) request(remote string) {
	_, _ = l.res.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolTFTP, Remote: remote, Name: "nothing-here"})
}

// summary sends the summary and returns it, or fails when there is none.
func (l *limited) summary(t *testing.T) events.BootRequestsSummarized {
	t.Helper()
	before := len(l.rec.Events(events.TypeBootRequestsSummarized))
	l.res.Summarize()
	evs := l.rec.Events(events.TypeBootRequestsSummarized)
	if len(evs) != before+1 {
		t.Fatalf("%d summaries, want %d", len(evs), before+1)
	}
	var s events.BootRequestsSummarized
	if err := evs[len(evs)-1].DecodeData(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (l *limited) summarized(t *testing.T, limit string) float64 {
	return metrictest.Value(t, l.reg, "rackplane_boot_events_summarized_total", map[string]string{"protocol": "tftp", "limit": limit})
}

// TestBootEventsPerSource: a source past its burst is summarised, others
// are not held back by it, and its bucket refills with time.
func TestBootEventsPerSource(t *testing.T) {
	l := newLimited(t, handoff.TelemetryLimits{PerSourceRate: 1, PerSourceBurst: 5, TotalRate: 100, TotalBurst: 100})
	for range 8 {
		l.request("10.0.0.1:1000")
	}
	l.request("10.0.0.2:1000")
	l.request("10.0.0.2:1001")
	if n := len(l.rec.Events(events.TypeBootHandoff)); n != 7 {
		t.Fatalf("%d hand-off events, want 5 of 10.0.0.1 and 2 of 10.0.0.2", n)
	}
	l.clock.Add(2 * time.Second) // two more for 10.0.0.1
	for range 3 {
		l.request("10.0.0.1:1000")
	}
	if n := len(l.rec.Events(events.TypeBootHandoff)); n != 9 {
		t.Fatalf("%d hand-off events after 2s, want 9", n)
	}
	// A write request refused past the burst, and the transfer of a
	// summarised request, are summarised too.
	l.res.Reject(events.BootRequestRejected{Protocol: events.BootProtocolTFTP, Remote: "10.0.0.1:1000", Reason: "write_request"})
	if n := len(l.rec.Events(events.TypeBootRequestRejected)); n != 0 {
		t.Fatalf("%d rejections reported, want it summarised", n)
	}
	s := l.summary(t)
	want := events.BootRequestsSummarized{Requests: 5, Sources: 1,
		ByProtocol: map[string]int64{"tftp": 5}, ByOutcome: map[string]int64{"not_found": 4, "write_request": 1},
		ByLimit: map[string]int64{"source": 5}, TopSources: []events.SourceCount{{Source: "10.0.0.1", Requests: 5}}}
	s.Since, s.Until = time.Time{}, time.Time{}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Fatalf("summary\n%+v, want\n%+v", s, want)
	}
	if got := l.summarized(t, handoff.LimitSource); got != 5 {
		t.Errorf("rackplane_boot_events_summarized_total{limit=source} %g, want 5", got)
	}
	// Nothing held back since: no summary.
	l.res.Summarize()
	if n := len(l.rec.Events(events.TypeBootRequestsSummarized)); n != 1 {
		t.Errorf("%d summaries after a quiet interval, want still 1", n)
	}
}

// TestBootEventsTotal: a thousand sources of one request each (a flood
// from forged addresses) make no more events than the total burst, and
// one summary for the rest, naming their sources; transfers of
// summarised requests are counted in it, not reported.
func TestBootEventsTotal(t *testing.T) {
	l := newLimited(t, handoff.TelemetryLimits{PerSourceRate: 1, PerSourceBurst: 100, TotalRate: 1, TotalBurst: 10, MaxSources: 4096})
	for i := range 1000 {
		l.request(fmt.Sprintf("10.1.%d.%d:69", i/256, i%256))
	}
	if n := len(l.rec.Events("")); n != 10 {
		t.Fatalf("%d events of 1000 requests, want the total burst of 10", n)
	}
	res, err := l.res.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolTFTP, Remote: "10.2.0.1:69", Name: "pxelinux.cfg/default"})
	if err != nil || !res.Summarized {
		t.Fatalf("a config past the total: %+v %v, want it summarised", res, err)
	}
	l.res.Finish(res, handoff.Outcome{Err: errors.New("timeout")})
	s := l.summary(t)
	if s.Requests != 991 || s.Sources != 991 || s.SourcesCapped || s.ByLimit[handoff.LimitTotal] != 991 ||
		s.Transfers != 1 || s.TransferErrors != 1 || len(s.TopSources) != 10 || s.ByOutcome["config"] != 1 {
		t.Fatalf("summary %+v", s)
	}
	if n := len(l.rec.Events(events.TypeBootTransfer)); n != 0 {
		t.Errorf("%d transfers reported, want the summarised one counted only", n)
	}
	if got := l.summarized(t, handoff.LimitTotal); got != 991 {
		t.Errorf("rackplane_boot_events_summarized_total{limit=total} %g, want 991", got)
	}
}

// TestBootEventsSourcesBounded: the per-source table and the sources a
// summary counts stay within MaxSources however many sources there are;
// sources whose bucket has filled up again make room.
func TestBootEventsSourcesBounded(t *testing.T) {
	const most = 16
	l := newLimited(t, handoff.TelemetryLimits{PerSourceRate: 1, PerSourceBurst: 1, TotalRate: 1, TotalBurst: 1, MaxSources: most})
	sources := func() float64 { return metrictest.Value(t, l.reg, "rackplane_boot_events_sources", nil) }
	for i := range 10_000 {
		l.request(fmt.Sprintf("10.%d.%d.%d:69", i>>16&255, i>>8&255, i&255))
		if i%1000 == 999 {
			if n := sources(); n > most {
				t.Fatalf("%g sources tracked after %d requests, want at most %d", n, i+1, most)
			}
		}
	}
	s := l.summary(t)
	if s.Sources != most || !s.SourcesCapped || s.Requests != 9999 {
		t.Fatalf("summary counts %d sources (capped %v) of %d requests, want %d, capped, of 9999", s.Sources, s.SourcesCapped, s.Requests, most)
	}
	// A second later every bucket is full again: the table makes room
	// for new sources rather than make them share one bucket.
	l.clock.Add(time.Second)
	l.request("10.200.0.1:69")
	if n := len(l.rec.Events(events.TypeBootHandoff)); n != 2 {
		t.Fatalf("%d hand-off events, want a new source heard once the old buckets refilled", n)
	}
	if n := sources(); n > most {
		t.Fatalf("%g sources tracked, want at most %d", n, most)
	}
}

func TestSourceOf(t *testing.T) {
	for _, tt := range []struct{ remote, want string }{
		{"10.0.0.1:69", "10.0.0.1"},
		{"10.0.0.1", "10.0.0.1"},
		{"[::ffff:10.0.0.1]:69", "10.0.0.1"},
		{"[2001:db8:1:2:aaaa::1]:69", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::7]:4011", "2001:db8:1:2::"},
		{"[fe80::1%eth0]:69", "fe80::"},
		{"", "invalid IP"},
		{"not an address", "invalid IP"},
	} {
		if got := handoff.SourceOf(tt.remote); got.String() != tt.want {
			t.Errorf("SourceOf(%q) = %s, want %s", tt.remote, got, tt.want)
		}
	}
	if handoff.SourceOf("[2001:db8:1:2::1]:1") == handoff.SourceOf("[2001:db8:1:3::1]:1") {
		t.Error("two /64s are one source")
	}
}

func TestTelemetryLimitsValidate(t *testing.T) {
	good := handoff.DefaultTelemetryLimits()
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := handoff.TelemetryLimits{PerSourceRate: -1, TotalRate: 0, TotalBurst: 0, PerSourceBurst: -3, MaxSources: 1 << 30, SummaryInterval: time.Nanosecond}
	err := bad.Validate()
	for _, flag := range []string{"-boot-events-rate", "-boot-events-burst", "-boot-events-per-source-rate", "-boot-events-per-source-burst", "-boot-events-sources", "-boot-events-summary-interval"} {
		if err == nil || !strings.Contains(err.Error(), flag+" ") {
			t.Errorf("Validate does not name %s: %v", flag, err)
		}
	}
}
