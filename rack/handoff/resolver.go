package handoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
)

// Routes of a hand-off decision.
const (
	RouteConfig      = "config"      // rendered for the requesting machine
	RouteVersioned   = "versioned"   // a file of an explicit image or boot loader version
	RouteRoot        = "root"        // a file of the fallback root directory
	RouteNotFound    = "not_found"   // nothing by that name
	RouteDenied      = "denied"      // a hostile or malformed name
	RouteUnavailable = "unavailable" // a store failed
)

// Publisher takes events; the rack's eventbus.Publisher never blocks.
type Publisher interface{ Publish(events.Event) }

// Versions opens files of explicit image or boot loader versions (the
// image store). It returns an error wrapping fs.ErrNotExist when name is
// not such a file, and the resolver moves on to the fallback root.
type Versions interface {
	OpenVersioned(ctx context.Context, name string) (f *os.File, versionID string, err error)
}

// SharedVersions is Versions that can also hand out a file held open for
// many transfers at once, to a Request with Shared.
type SharedVersions interface {
	OpenVersionedShared(ctx context.Context, name string) (SharedFile, error)
}

// SharedFile is a file of a version held open for many transfers at once.
type SharedFile struct {
	File      *os.File
	VersionID string
	Size      int64
	ModTime   time.Time
	// Lease ends the transfer's use of File, which the front-end never
	// closes.
	Lease interface{ Release() }
}

// Decisions gives the region's boot decision for a canonical MAC; known is
// false when nobody knows the machine (or could be asked in time).
type Decisions interface {
	Lookup(ctx context.Context, mac string) (d events.BootDecision, known bool)
}

// Config configures a Resolver.
type Config struct {
	RackID string
	// Root is the fallback directory served when no other route matches
	// (boot loaders such as pxelinux.0, ldlinux.c32, grubx64.efi). Empty
	// means no fallback.
	Root string
	Now  func() time.Time
	// Telemetry bounds the events of boot requests (zero fields:
	// DefaultTelemetryLimits).
	Telemetry TelemetryLimits
	// UnknownWait is how long iPXE on a machine the region does not know
	// keeps asking again for its config, every bootconfig.UnknownStep,
	// before it boots locally (zero: at once).
	UnknownWait time.Duration
}

// Resolver is the hand-off. Safe for concurrent use.
type Resolver struct {
	cfg       Config
	root      *os.Root
	decisions Decisions
	versions  Versions
	shared    SharedVersions // versions, when it can share; else nil
	render    *bootconfig.Renderer
	pub       Publisher
	log       *slog.Logger
	gate      *gate
	waiting   *waiting

	latency    *prometheus.HistogramVec
	outcomes   *prometheus.CounterVec
	summarized *prometheus.CounterVec
	summaries  prometheus.Counter
	sources    prometheus.GaugeFunc
	// latency, outcomes and summarized by label values (latencyOf,
	// outcomeOf, summarizedOf).
	latencyBy, outcomesBy, summarizedBy sync.Map
}

// NewResolver returns a resolver. versions may be nil (no image store).
func NewResolver(cfg Config, decisions Decisions, versions Versions, render *bootconfig.Renderer, pub Publisher, log *slog.Logger, reg prometheus.Registerer) (*Resolver, error) {
	if cfg.RackID == "" {
		return nil, rackplane.Errorf(rackplane.EINVALID, "handoff: RackID is required")
	}
	if decisions == nil || render == nil || pub == nil || log == nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "handoff: decisions, renderer, publisher and logger are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Telemetry = cfg.Telemetry.withDefaults()
	if err := cfg.Telemetry.Validate(); err != nil {
		return nil, rackplane.WrapError(rackplane.EINVALID, err, "handoff: %v", err)
	}
	r := &Resolver{
		cfg: cfg, decisions: decisions, versions: versions, render: render, pub: pub, log: log,
		gate: newGate(cfg.Telemetry, cfg.Now()), waiting: newWaiting(cfg.UnknownWait),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rackplane_boot_handoff_seconds",
			Help:    "Time to decide what a boot request gets, by route.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .25, .5, 1},
		}, []string{"route"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_boot_transfers_total",
			Help: "Boot transfers finished, by protocol and result (ok or error).",
		}, []string{"protocol", "result"}),
		summarized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_boot_events_summarized_total",
			Help: "Boot requests not reported one by one (their source, or all sources together, past the rate) but counted in a boot_requests_summarized event, by protocol and limit (source or total).",
		}, []string{"protocol", "limit"}),
		summaries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_boot_events_summaries_total",
			Help: "boot_requests_summarized events sent.",
		}),
	}
	r.shared, _ = versions.(SharedVersions)
	r.sources = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_boot_events_sources",
		Help: "Source addresses the per-source rate of boot events keeps track of (at most -boot-events-sources).",
	}, func() float64 { return float64(r.gate.tracked()) })
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, rackplane.WrapError(rackplane.EINVALID, err, "handoff: fallback root %q cannot be opened", cfg.Root)
		}
		r.root = root
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.latency, r.outcomes, r.summarized, r.summaries, r.sources} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("handoff: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Close releases the fallback root.
func (r *Resolver) Close() error {
	if r.root != nil {
		return r.root.Close()
	}
	return nil
}

// Request is one boot request as a front-end received it.
type Request struct {
	Protocol string // events.BootProtocol*
	Local    string // address the request arrived on, if known
	Remote   string // the client's address
	Name     string // as requested, not yet normalised
	// Timeout bounds the wait for the region's boot decision of a config
	// (zero: ctx alone). It is applied there only, so that a request for
	// a file, which waits for nothing, costs no timer.
	Timeout time.Duration
	// Shared: the front-end reads Result.File only at explicit offsets
	// (ReadAt, sendfile with an offset), and neither seeks nor closes it,
	// so the file may be a descriptor the store keeps open for many
	// transfers at once (SharedVersions), which saves its open, fstat and
	// close on every request.
	Shared bool
}

// Result is what a request gets: a file to stream (File) or rendered
// bytes (Content). The front-end calls Resolver.Finish when done.
type Result struct {
	ID        string // hand-off id, named in the events
	Request   Request
	Route     string
	Name      string // normalised
	Path      string // file served (store path or root-relative), or config name
	VersionID string
	MAC       string
	MachineID string
	Purpose   string
	Size      int64
	ModTime   time.Time
	File      *os.File
	Content   []byte
	// Summarized says the request's events are not sent one by one but
	// counted in the next boot_requests_summarized event (TelemetryLimits):
	// a front-end that reports more of it (offload's deleted files) does
	// the same.
	Summarized bool
	// lease is a shared File's: released, not closed, by Finish.
	lease interface{ Release() }
}

// Reader returns the content as a ReadSeeker, so front-ends can size it.
func (res *Result) Reader() io.ReadSeeker {
	if res.File != nil {
		return res.File
	}
	return bytes.NewReader(res.Content)
}

// Resolve decides what req gets and reports the decision as an event. The
// error is a *rackplane.Error: ENOTFOUND for nothing by that name,
// EFORBIDDEN for a refused name, EUNAVAILABLE for a failing store; its
// message is safe to send to the client.
func (r *Resolver) Resolve(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	res := &Result{ID: newID(), Request: req}
	err := r.resolve(ctx, req, res)
	if err != nil {
		res.Route = RouteOf(err)
	}
	elapsed := time.Since(start)
	r.latencyOf(res.Route).Observe(elapsed.Seconds())
	// The event is built only when it goes out: most requests of a busy
	// rack are counted in a summary instead.
	if r.admit(req.Protocol, req.Remote, res.Route) {
		ev := events.BootHandoff{
			Protocol: req.Protocol, Local: Printable(req.Local, 300), Remote: Printable(req.Remote, 300),
			FileName: Printable(req.Name, 1024), Route: res.Route,
			Path: Printable(res.Path, 4096), VersionID: res.VersionID,
			MAC: res.MAC, MachineID: res.MachineID, Purpose: res.Purpose,
			Size: res.Size, LatencyUS: elapsed.Microseconds(), HandoffID: res.ID,
		}
		if err != nil {
			ev.Reason = Printable(reasonOf(err), 512)
			r.log.Info("boot hand-off refused", "protocol", req.Protocol, "remote", ev.Remote, "file_name", ev.FileName, "route", res.Route, "reason", ev.Reason)
		}
		r.Emit(events.TypeBootHandoff, res.MachineID, ev)
	} else {
		res.Summarized = true
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (r *Resolver) resolve(ctx context.Context, req Request, res *Result) error {
	name, err := Normalize(req.Name)
	if err != nil {
		return rackplane.WrapError(rackplane.EFORBIDDEN, err, "access violation")
	}
	res.Name = name
	if cn, ok := parseConfigName(name); ok {
		return r.config(ctx, cn, res)
	}
	if r.shared != nil && req.Shared {
		sf, err := r.shared.OpenVersionedShared(ctx, name)
		switch {
		case err == nil:
			res.Route, res.Path, res.VersionID = RouteVersioned, name, sf.VersionID
			res.File, res.Size, res.ModTime, res.lease = sf.File, sf.Size, sf.ModTime, sf.Lease
			return nil
		case !errors.Is(err, fs.ErrNotExist):
			return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "image store unavailable")
		}
	} else if r.versions != nil {
		f, version, err := r.versions.OpenVersioned(ctx, name)
		switch {
		case err == nil:
			res.Route, res.Path, res.VersionID = RouteVersioned, name, version
			return r.useFile(f, res)
		case !errors.Is(err, fs.ErrNotExist):
			return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "image store unavailable")
		}
	}
	if r.root == nil {
		return rackplane.Errorf(rackplane.ENOTFOUND, "file not found")
	}
	return r.openRoot(name, res)
}

func (r *Resolver) config(ctx context.Context, cn configName, res *Result) error {
	var d events.BootDecision
	known := false
	if cn.MAC != "" {
		if res.Request.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, res.Request.Timeout)
			defer cancel()
		}
		d, known = r.decisions.Lookup(ctx, cn.MAC)
	}
	var content []byte
	var err error
	if known {
		content, err = r.render.Render(cn.Kind, d)
	} else {
		// Only iPXE can ask again; other loaders' requests take no place
		// in the table.
		wait := cn.Kind == bootconfig.KindIPXE && r.waiting.ask(cn.MAC, r.cfg.Now())
		d, content, err = r.render.RenderUnknown(cn.Kind, cn.MAC, wait)
	}
	if err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "config unavailable")
	}
	res.Route, res.Path, res.Content, res.Size = RouteConfig, res.Name, content, int64(len(content))
	res.MAC, res.MachineID, res.VersionID = cn.MAC, d.MachineID, d.ImageVer
	if cn.Kind != bootconfig.KindIPXEChain && cn.Kind != bootconfig.KindGRUBChain {
		res.Purpose = d.Purpose
	}
	res.ModTime = r.cfg.Now()
	return nil
}

func (r *Resolver) openRoot(name string, res *Result) error {
	// Stat first: opening a FIFO someone left in the root would block.
	fi, err := r.root.Stat(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return rackplane.WrapError(rackplane.ENOTFOUND, err, "file not found")
		}
		return rackplane.WrapError(rackplane.EFORBIDDEN, err, "access violation")
	}
	if !fi.Mode().IsRegular() {
		return rackplane.Errorf(rackplane.ENOTFOUND, "file not found")
	}
	f, err := r.root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return rackplane.WrapError(rackplane.ENOTFOUND, err, "file not found")
		}
		return rackplane.WrapError(rackplane.EFORBIDDEN, err, "access violation")
	}
	res.Route, res.Path = RouteRoot, name
	return r.useFile(f, res)
}

func (r *Resolver) useFile(f *os.File, res *Result) error {
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		f.Close()
		return rackplane.WrapError(rackplane.ENOTFOUND, err, "file not found")
	}
	res.File, res.Size, res.ModTime = f, fi.Size(), fi.ModTime()
	return nil
}

// Outcome is how a transfer ended.
type Outcome struct {
	Bytes     int64
	Duration  time.Duration
	BlockSize int // TFTP only
	Err       error
}

// Finish releases res and reports the transfer's outcome as an event, or
// counts it in the next summary when res is Summarized.
func (r *Resolver) Finish(res *Result, o Outcome) {
	r.Release(res)
	result := "ok"
	if o.Err != nil {
		result = "error"
	}
	r.outcomeOf(res.Request.Protocol, result).Inc()
	if res.Summarized {
		r.gate.transferEnded(o.Err != nil)
		return
	}
	ev := events.BootTransfer{
		Protocol: res.Request.Protocol, Local: Printable(res.Request.Local, 300), Remote: Printable(res.Request.Remote, 300),
		FileName: Printable(res.Request.Name, 1024), Route: res.Route, Path: Printable(res.Path, 4096),
		VersionID: res.VersionID, MachineID: res.MachineID, Bytes: o.Bytes, Size: res.Size,
		DurationMS: float64(o.Duration.Microseconds()) / 1000, HandoffID: res.ID,
	}
	if o.BlockSize >= 8 {
		ev.BlockSize = o.BlockSize
	}
	if o.Err != nil {
		ev.Error = Printable(o.Err.Error(), 1024)
	}
	r.Emit(events.TypeBootTransfer, res.MachineID, ev)
}

// Release closes res's file without reporting a transfer, for a
// front-end that serves the file itself and reports on its own.
func (r *Resolver) Release(res *Result) {
	switch {
	case res.lease != nil:
		res.lease.Release()
	case res.File != nil:
		res.File.Close()
	}
}

// Reject reports a request a front-end refused before any hand-off, or
// counts it in the next summary.
func (r *Resolver) Reject(rej events.BootRequestRejected) {
	if !r.admit(rej.Protocol, rej.Remote, rej.Reason) {
		return
	}
	rej.Detail = Printable(rej.Detail, 1024)
	rej.Local, rej.Remote = Printable(rej.Local, 300), Printable(rej.Remote, 300)
	r.Emit(events.TypeBootRequestRejected, "", rej)
}

// admit says whether a request from remote is reported one by one, and
// counts it for the next summary when it is not. outcome is its route or
// rejection reason.
func (r *Resolver) admit(protocol, remote, outcome string) bool {
	src := SourceOf(remote)
	limit := r.gate.admit(r.cfg.Now(), src)
	if limit == "" {
		return true
	}
	r.gate.held(src, protocol, outcome, limit)
	r.summarizedOf(protocol, limit).Inc()
	return false
}

// The metrics of every request, by label values looked up once: the
// protocols, routes, results and limits are few and known.

type counterKey struct{ a, b string }

func (r *Resolver) latencyOf(route string) prometheus.Observer {
	if o, ok := r.latencyBy.Load(route); ok {
		return o.(prometheus.Observer)
	}
	o := r.latency.WithLabelValues(route)
	r.latencyBy.Store(route, o)
	return o
}

func (r *Resolver) outcomeOf(protocol, result string) prometheus.Counter {
	return cachedCounter(&r.outcomesBy, r.outcomes, protocol, result)
}

func (r *Resolver) summarizedOf(protocol, limit string) prometheus.Counter {
	return cachedCounter(&r.summarizedBy, r.summarized, protocol, limit)
}

// cachedCounter is vec's counter of labels a and b, kept in cache. A
// protocol is one of the front-ends' constants, so the cache stays small.
func cachedCounter(cache *sync.Map, vec *prometheus.CounterVec, a, b string) prometheus.Counter {
	k := counterKey{a, b}
	if c, ok := cache.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := vec.WithLabelValues(a, b)
	cache.Store(k, c)
	return c
}

// Run sends a boot_requests_summarized event every summary interval in
// which requests were held back, until ctx ends, and one last for the
// interval it ends in.
func (r *Resolver) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Telemetry.SummaryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Summarize()
			return nil
		case <-t.C:
			r.Summarize()
		}
	}
}

// Summarize sends the summary of the requests held back since the last
// one, if there were any.
func (r *Resolver) Summarize() {
	sum := r.gate.flush(r.cfg.Now())
	if sum == nil {
		return
	}
	r.summaries.Inc()
	r.log.Warn("boot requests past the rate of boot events: counted in one event, not reported one by one",
		"requests", sum.Requests, "sources", sum.Sources, "transfers", sum.Transfers, "by_limit", sum.ByLimit, "by_outcome", sum.ByOutcome)
	r.Emit(events.TypeBootRequestsSummarized, "", sum)
}

// Emit publishes an event of this rack about machineID (or the rack).
func (r *Resolver) Emit(typ, machineID string, data any) {
	ev, err := events.New(events.RackSource(r.cfg.RackID), typ, r.Subject(machineID), r.cfg.Now(), data)
	if err != nil {
		r.log.Error("build event", "type", typ, "err", err)
		return
	}
	r.pub.Publish(ev)
}

var machineIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Subject is the event subject for a machine, or the rack's when the
// machine is unknown or its id does not fit a subject.
func (r *Resolver) Subject(machineID string) string {
	if machineIDPattern.MatchString(machineID) {
		return events.MachineStreamName(machineID)
	}
	return events.RackStreamName(r.cfg.RackID)
}

// RackID is the rack this resolver decides for.
func (r *Resolver) RackID() string { return r.cfg.RackID }

// RouteOf maps a Resolve error to its route.
func RouteOf(err error) string {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND:
		return RouteNotFound
	case rackplane.EFORBIDDEN:
		return RouteDenied
	default:
		return RouteUnavailable
	}
}

func reasonOf(err error) string {
	var e *rackplane.Error
	if errors.As(err, &e) && e.Err != nil {
		return e.Err.Error()
	}
	return err.Error()
}

// Printable makes a name from the network safe for an event and a log
// line: control bytes and invalid UTF-8 are escaped (Postgres refuses NUL
// in JSON), and it is cut to at most max bytes.
func Printable(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && n == 1, r < 0x20, r == 0x7f:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		default:
			piece = s[i : i+n]
		}
		if b.Len()+len(piece) > max {
			break
		}
		b.WriteString(piece)
		i += n
	}
	return b.String()
}

func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}
