package simrack

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/capabilities"
)

// Config configures one virtual rack. Zero durations and rates take
// rackd's defaults.
type Config struct {
	NATSURL string
	// ID is the rack id (a lower-case UUID); Name its name.
	ID, Name string
	// HeartbeatInterval is said in rack_registered and kept (rackd: 5s).
	HeartbeatInterval time.Duration
	// DHCPInterval is how often the leases given go out as one
	// dhcp_leases_changed (rackd -dhcp event_interval: 10s);
	// MaxDHCPChanges bounds the changes of one (256).
	DHCPInterval   time.Duration
	MaxDHCPChanges int
	// EventRate and EventBurst are the rate of boot requests reported one
	// by one, all sources together (rackd -boot-events-rate 20,
	// -boot-events-burst 1000); the rest are counted in one
	// boot_requests_summarized per SummaryInterval (1m). The per-source
	// rate (1/s, burst 100) is not modelled: one boot makes four
	// requests, far below it.
	EventRate       float64
	EventBurst      int
	SummaryInterval time.Duration
	// Buffer bounds the events waiting in memory (rackd: 10000).
	Buffer int
	// NoFollow leaves out the readers of the region events meant for the
	// rack (boot decisions, subnets) that rackd always runs.
	NoFollow bool
	// Beat, when set, is called just before each heartbeat is sent with
	// its sequence number and the time.
	Beat   func(seq int64, sent time.Time)
	Logger *slog.Logger
}

func (c *Config) defaults() {
	or := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	or(&c.HeartbeatInterval, 5*time.Second)
	or(&c.DHCPInterval, 10*time.Second)
	or(&c.SummaryInterval, time.Minute)
	if c.MaxDHCPChanges <= 0 {
		c.MaxDHCPChanges = 256
	}
	if c.EventRate <= 0 {
		c.EventRate = 20
	}
	if c.EventBurst <= 0 {
		c.EventBurst = 1000
	}
	if c.Buffer <= 0 {
		c.Buffer = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Machine is a machine that boots from a virtual rack.
type Machine struct {
	// ID is the machine's id as the rack's boot decision names it; empty
	// for a machine the region does not know, whose boot has the region
	// discover it.
	ID  string
	MAC string
	IP  netip.Addr
}

// Stats are a virtual rack's counts since it started.
type Stats struct {
	Boots int64
	// Events were handed to the publisher (heartbeats are not events).
	Events int64
	// Summarized are boot requests counted in boot_requests_summarized
	// instead of reported one by one.
	Summarized int64
	// Buffered wait in the publisher; Dropped it gave up (full buffer).
	Buffered int
	Dropped  int64
	// RPCs are the requests of the region the rack answered.
	RPCs int64
}

// Rack is one virtual rack.
type Rack struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	pub     *eventbus.Publisher
	rpc     *rpc.Server
	caps    events.Capabilities
	started time.Time
	wg      sync.WaitGroup

	boots, evs, summarized, rpcs atomic.Int64
	bootSeq, subnetSeq           atomic.Uint64

	mu      sync.Mutex
	tokens  float64
	refill  time.Time
	sum     events.BootRequestsSummarized
	sources map[string]bool
	lease   events.DHCPLeasesChanged
}

// Start connects rack cfg.ID, announces it and starts its heartbeats,
// followers and rpc answers, which run until ctx ends (Wait).
func Start(ctx context.Context, cfg Config) (*Rack, error) {
	cfg.defaults()
	now := time.Now().UTC()
	r := &Rack{cfg: cfg, log: cfg.Logger.With("rack_id", cfg.ID), started: now, tokens: float64(cfg.EventBurst), refill: now,
		sources: map[string]bool{}}
	r.sum.Since = now
	r.lease = events.DHCPLeasesChanged{Mode: "managed", Since: now}
	r.caps = events.Capabilities{OSes: []events.OS{}, Bootloaders: []events.Bootloader{}, StorageProviders: []events.StorageProvider{}}
	r.caps.Digest = capabilities.Digest(r.caps)
	var err error
	r.nc, err = nats.Connect(cfg.NATSURL, nats.Name("simrack "+cfg.Name), nats.MaxReconnects(-1),
		nats.CustomInboxPrefix("_INBOX.rackplane.rack."+cfg.ID))
	if err != nil {
		return nil, fmt.Errorf("simrack %s: connect: %w", cfg.Name, err)
	}
	if r.js, err = jetstream.New(r.nc); err != nil {
		r.nc.Close()
		return nil, fmt.Errorf("simrack %s: jetstream: %w", cfg.Name, err)
	}
	r.pub = eventbus.NewPublisher(r.js, eventbus.PublisherConfig{Source: events.RackSource(cfg.ID),
		Subject: events.RackStreamName(cfg.ID), Buffer: cfg.Buffer, Logger: r.log})
	r.rpc = rpc.NewServer(r.nc, cfg.ID, r.log, 4, 10*time.Second)
	if err := r.rpc.Handle(events.RackRPCSubject(cfg.ID, ">"), "", r.answer); err != nil {
		r.nc.Close()
		return nil, fmt.Errorf("simrack %s: %w", cfg.Name, err)
	}
	r.emit(events.TypeRackRegistered, "", events.RackRegistered{Name: cfg.Name, Version: "simrack", Hostname: cfg.Name,
		HeartbeatIntervalMS: cfg.HeartbeatInterval.Milliseconds(), StartedAt: now,
		DHCP: &events.RackDHCP{Mode: "managed"}})
	r.emit(events.TypeCapabilitiesReported, "", r.caps)
	r.wg.Add(2)
	go func() { defer r.wg.Done(); _ = r.pub.Run(ctx) }()
	go func() { defer r.wg.Done(); r.loop(ctx) }()
	if !cfg.NoFollow {
		for _, f := range []struct {
			purpose string
			seq     *atomic.Uint64
		}{{events.FollowBoot, &r.bootSeq}, {events.FollowSubnets, &r.subnetSeq}} {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				eventbus.Follow(ctx, eventbus.FollowConfig{NATS: r.nc, JetStream: r.js, RackID: cfg.ID, Purpose: f.purpose,
					After: f.seq.Load, Handle: func(_ []byte, seq uint64) { f.seq.Store(seq) }, Log: r.log})
			}()
		}
	}
	return r, nil
}

// Wait waits, once Start's context ended, for the rack to stop, and
// closes its connection.
func (r *Rack) Wait() {
	r.wg.Wait()
	r.rpc.Close()
	r.nc.Close()
}

// ID is the rack's id.
func (r *Rack) ID() string { return r.cfg.ID }

// Stats returns the rack's counts.
func (r *Rack) Stats() Stats {
	return Stats{Boots: r.boots.Load(), Events: r.evs.Load(), Summarized: r.summarized.Load(),
		Buffered: r.pub.Buffered(), Dropped: r.pub.Dropped(), RPCs: r.rpcs.Load()}
}

func (r *Rack) answer(ctx context.Context, _ []byte) (any, error) {
	r.rpcs.Add(1)
	subject := rpc.Subject(ctx)
	method := subject[strings.LastIndex(subject, ".rpc.")+len(".rpc."):]
	switch method {
	case "info":
		return map[string]any{"id": r.cfg.ID, "name": r.cfg.Name, "version": "simrack", "started_at": r.started,
			"http": []string{}, "buffered_events": r.pub.Buffered(), "dropped_events": r.pub.Dropped()}, nil
	case "capabilities":
		return r.caps, nil
	}
	return nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "a virtual rack does not do %s", method)
}

// loop sends heartbeats and the interval reports until ctx ends.
func (r *Rack) loop(ctx context.Context) {
	var seq int64
	beat := func() {
		seq++
		ev, err := events.New(events.RackSource(r.cfg.ID), events.TypeHeartbeat, events.RackStreamName(r.cfg.ID), time.Now(),
			events.Heartbeat{Seq: seq, IntervalMS: r.cfg.HeartbeatInterval.Milliseconds(),
				BufferedEvents: int64(r.pub.Buffered()), DroppedEvents: r.pub.Dropped()})
		if err != nil {
			r.log.Error("build heartbeat", "err", err)
			return
		}
		raw, err := events.Encode(ev)
		if err != nil {
			r.log.Error("encode heartbeat", "err", err)
			return
		}
		if r.cfg.Beat != nil {
			r.cfg.Beat(seq, time.Now())
		}
		if err := r.nc.Publish(events.HeartbeatSubject(r.cfg.ID), raw); err != nil {
			r.log.Warn("heartbeat", "err", err)
		}
	}
	beat()
	// Racks started together would beat together for ever: each takes
	// a phase of its own, as racks started at different times have.
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(r.cfg.HeartbeatInterval)):
	}
	hb := time.NewTicker(r.cfg.HeartbeatInterval)
	defer hb.Stop()
	dhcp := time.NewTicker(r.cfg.DHCPInterval)
	defer dhcp.Stop()
	sum := time.NewTicker(r.cfg.SummaryInterval)
	defer sum.Stop()
	for {
		beat()
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
		case <-dhcp.C:
			r.flushLeases()
			continue
		case <-sum.C:
			r.flushSummary()
			continue
		}
	}
}

// A boot's requests: the firmware's iPXE binary and the machine's config
// over TFTP, then kernel and initrd over HTTP, each at its offset from the
// DHCP lease and lasting its transfer time.
var steps = []struct {
	at, takes  time.Duration
	protocol   string
	file, path string
	route      string
	size       int64
}{
	{300 * time.Millisecond, 200 * time.Millisecond, events.BootProtocolTFTP, "ipxe.efi", "ipxe.efi", "root", 1 << 20},
	{800 * time.Millisecond, 10 * time.Millisecond, events.BootProtocolTFTP, "ipxe/%s.ipxe", "ipxe/%s.ipxe", "config", 600},
	{1200 * time.Millisecond, time.Second, events.BootProtocolHTTP, "/images/ubuntu/noble/amd64/ga-24.04/20250101/linux",
		"ubuntu/noble/amd64/ga-24.04/20250101/linux", "versioned", 15 << 20},
	{2500 * time.Millisecond, 4 * time.Second, events.BootProtocolHTTP, "/images/ubuntu/noble/amd64/ga-24.04/20250101/initrd",
		"ubuntu/noble/amd64/ga-24.04/20250101/initrd", "versioned", 80 << 20},
}

const imageVersion = "ubuntu/noble/amd64/ga-24.04/20250101"

// Boot has machine m boot from the rack, starting now: its DHCP lease
// goes into the interval's dhcp_leases_changed, and its four requests
// follow over the next seconds (Boot returns at once).
func (r *Rack) Boot(m Machine) {
	r.boots.Add(1)
	now := time.Now().UTC()
	exp := now.Add(time.Hour)
	r.mu.Lock()
	if len(r.lease.Changes) < r.cfg.MaxDHCPChanges {
		r.lease.Changes = append(r.lease.Changes, events.DHCPLeaseChange{Action: events.DHCPAcked, MAC: m.MAC,
			IP: m.IP.String(), Subnet: "10.0.0.0/8", Expires: &exp, BootFile: "ipxe.efi", Count: 1, At: now})
	} else {
		r.lease.MoreChanges++
	}
	r.mu.Unlock()
	remote := m.IP.String() + ":1024"
	for _, s := range steps {
		time.AfterFunc(s.at, func() { r.request(m, remote, s.protocol, s.file, s.path, s.route, s.size, s.takes) })
	}
}

func (r *Rack) request(m Machine, remote, protocol, file, path, route string, size int64, takes time.Duration) {
	h := events.BootHandoff{Protocol: protocol, Remote: remote, FileName: file, Route: route, Path: path, Size: size,
		LatencyUS: 150, HandoffID: newID()}
	subjectMachine := ""
	switch route {
	case "config":
		h.FileName = fmt.Sprintf(file, m.MAC)
		h.Path = h.FileName
		h.MAC, h.MachineID = m.MAC, m.ID
		if m.ID != "" {
			h.Purpose = events.BootPurposeLocal
		}
		subjectMachine = m.ID
	case "versioned":
		h.VersionID = imageVersion
	}
	if !r.admit(remote, protocol, route) {
		time.AfterFunc(takes, func() {
			r.mu.Lock()
			r.sum.Transfers++
			r.mu.Unlock()
		})
		return
	}
	r.emit(events.TypeBootHandoff, subjectMachine, h)
	time.AfterFunc(takes, func() {
		r.emit(events.TypeBootTransfer, subjectMachine, events.BootTransfer{Protocol: protocol, Remote: remote,
			FileName: h.FileName, Route: route, Path: h.Path, VersionID: h.VersionID, MachineID: h.MachineID,
			Bytes: size, Size: size, DurationMS: float64(takes.Microseconds()) / 1000, BlockSize: blockSize(protocol),
			HandoffID: h.HandoffID})
	})
}

func blockSize(protocol string) int {
	if protocol == events.BootProtocolTFTP {
		return 1468
	}
	return 0
}

// admit takes a token of the rack's rate of boot events, or counts the
// request in the interval's summary.
func (r *Rack) admit(remote, protocol, route string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.tokens = min(float64(r.cfg.EventBurst), r.tokens+now.Sub(r.refill).Seconds()*r.cfg.EventRate)
	r.refill = now
	if r.tokens >= 1 {
		r.tokens--
		return true
	}
	r.summarized.Add(1)
	r.sum.Requests++
	host, _, _ := strings.Cut(remote, ":")
	if !r.sources[host] {
		r.sources[host] = true
		r.sum.Sources++
	}
	inc := func(m *map[string]int64, k string) {
		if *m == nil {
			*m = map[string]int64{}
		}
		(*m)[k]++
	}
	inc(&r.sum.ByProtocol, protocol)
	inc(&r.sum.ByOutcome, route)
	inc(&r.sum.ByLimit, "total")
	return false
}

func (r *Rack) flushSummary() {
	now := time.Now().UTC()
	r.mu.Lock()
	s := r.sum
	r.sum = events.BootRequestsSummarized{Since: now}
	clear(r.sources)
	r.mu.Unlock()
	if s.Requests == 0 && s.Transfers == 0 {
		return
	}
	s.Until = now
	r.emit(events.TypeBootRequestsSummarized, "", s)
}

func (r *Rack) flushLeases() {
	now := time.Now().UTC()
	r.mu.Lock()
	l := r.lease
	r.lease = events.DHCPLeasesChanged{Mode: l.Mode, Since: now}
	r.mu.Unlock()
	if len(l.Changes) == 0 && l.MoreChanges == 0 {
		return
	}
	l.Until = now
	r.emit(events.TypeDHCPLeasesChanged, "", l)
}

// emit publishes an event of the rack about machineID (or the rack), on
// the stream rackd puts it on.
func (r *Rack) emit(typ, machineID string, data any) {
	subject := events.RackStreamName(r.cfg.ID)
	if machineID != "" {
		subject = events.MachineStreamName(machineID)
	}
	ev, err := events.New(events.RackSource(r.cfg.ID), typ, subject, time.Now(), data)
	if err != nil {
		r.log.Error("build event", "type", typ, "err", err)
		return
	}
	r.evs.Add(1)
	r.pub.Publish(ev)
}

func newID() string {
	return fmt.Sprintf("%016x", rand.Uint64())
}
