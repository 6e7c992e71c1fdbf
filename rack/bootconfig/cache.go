package bootconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	RackID string
	// DataDir holds the persisted cache (boot-decisions.json). Required:
	// a rack restarted while the region is away still has to boot machines.
	DataDir string
	// RPCTimeout bounds the region rpc on a cache miss (default 500ms): a
	// booting machine's TFTP client gives up after a few seconds.
	RPCTimeout time.Duration
	// NegativeTTL is how long a MAC the region did not know (or could not
	// be asked about) is answered from the unknown config without asking
	// again (default 10s).
	NegativeTTL time.Duration
	Now         func() time.Time
	// OnDecision, when set, is told of every decision the cache takes in
	// (from an event or an rpc), after it took it; OnCleared of every
	// decision the region cleared. They must not block: the preseed cache
	// follows deployments through them.
	OnDecision func(events.BootDecision)
	OnCleared  func(events.BootDecisionCleared)
}

func (c *CacheConfig) validate() error {
	if c.RackID == "" {
		return rackplane.Errorf(rackplane.EINVALID, "bootconfig: RackID is required")
	}
	if c.DataDir == "" {
		return rackplane.Errorf(rackplane.EINVALID, "bootconfig: DataDir is required (the cache must survive a restart)")
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = 500 * time.Millisecond
	}
	if c.NegativeTTL <= 0 {
		c.NegativeTTL = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// CacheFile is the name of the persisted cache under DataDir.
const CacheFile = "boot-decisions.json"

type persisted struct {
	// StreamSeq is the last region stream sequence applied; following
	// resumes after it.
	StreamSeq uint64                         `json:"stream_seq"`
	Decisions map[string]events.BootDecision `json:"decisions"`
}

// Cache holds the region's boot decisions by MAC.
type Cache struct {
	cfg       CacheConfig
	nc        *nats.Conn
	js        jetstream.JetStream
	log       *slog.Logger
	validator *events.Validator
	schemas   *schema.Set

	mu            sync.RWMutex
	decisions     map[string]events.BootDecision
	negative      map[string]time.Time // MAC → until, at most maxNegative
	negativeSwept time.Time
	seq           uint64
	persistMu     sync.Mutex
	dirty         chan struct{} // a change waits to be written

	lookups *prometheus.CounterVec
	applied prometheus.Counter
	unknown prometheus.GaugeFunc
}

// NewCache loads the persisted cache from cfg.DataDir. nc and js may be
// nil, for a rack with no region at all (every machine is then unknown or
// served from the file).
func NewCache(cfg CacheConfig, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	set, err := schema.Default()
	if err != nil {
		return nil, err
	}
	c := &Cache{
		cfg: cfg, nc: nc, js: js, log: log, validator: v, schemas: set,
		decisions: map[string]events.BootDecision{},
		negative:  map[string]time.Time{},
		dirty:     make(chan struct{}, 1),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_boot_decision_lookups_total",
			Help: "Boot decision lookups by outcome: hit, rpc (fetched from the region), unknown (region knows no such MAC), unavailable (region not reachable).",
		}, []string{"outcome"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_boot_decision_events_applied_total",
			Help: "Region boot decision events applied to the rack's cache.",
		}),
	}
	c.unknown = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_boot_decision_unknown_macs",
		Help: "MACs remembered as unknown to the region, so that their next boot requests do not ask it again (at most 4096).",
	}, func() float64 {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return float64(len(c.negative))
	})
	if reg != nil {
		for _, m := range []prometheus.Collector{c.lookups, c.applied, c.unknown} {
			if err := reg.Register(m); err != nil {
				return nil, fmt.Errorf("bootconfig: register metrics: %w", err)
			}
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("bootconfig: data dir: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, CacheFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("bootconfig: read cache: %w", err)
	default:
		var p persisted
		if err := json.Unmarshal(raw, &p); err != nil {
			// A corrupt cache must not stop the rack; the region refills it.
			log.Error("boot decision cache unreadable, starting empty", "path", filepath.Join(cfg.DataDir, CacheFile), "err", err)
			break
		}
		for _, d := range p.Decisions {
			if err := ValidateDecision(&d); err != nil {
				log.Warn("dropping invalid cached boot decision", "err", err)
				continue
			}
			c.decisions[d.MAC] = d
		}
		c.seq = p.StreamSeq
	}
	return c, nil
}

// Lookup returns the decision for a canonical MAC, asking the region on a
// miss. known is false when neither the cache nor the region (in time)
// knows the MAC; the caller then boots it as an unknown machine.
func (c *Cache) Lookup(ctx context.Context, mac string) (d events.BootDecision, known bool) {
	c.mu.RLock()
	d, ok := c.decisions[mac]
	until, neg := c.negative[mac]
	c.mu.RUnlock()
	if ok {
		c.lookups.WithLabelValues("hit").Inc()
		return d, true
	}
	now := c.cfg.Now()
	if neg && now.Before(until) {
		c.lookups.WithLabelValues("unknown").Inc()
		return events.BootDecision{}, false
	}
	if c.nc == nil {
		c.lookups.WithLabelValues("unknown").Inc()
		return events.BootDecision{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
	defer cancel()
	reply, err := c.ask(ctx, mac)
	if err == nil && reply.Decision != nil {
		d = *reply.Decision
		if verr := ValidateDecision(&d); verr != nil || d.MAC != mac {
			err = fmt.Errorf("region answered an invalid decision for %s: %v", mac, verr)
		} else {
			c.mu.Lock()
			// An event applied while the rpc was in flight is newer.
			if cur, ok := c.decisions[mac]; ok {
				d = cur
			} else {
				c.decisions[mac] = d
			}
			delete(c.negative, mac)
			c.mu.Unlock()
			if c.cfg.OnDecision != nil {
				c.cfg.OnDecision(d)
			}
			c.changed()
			c.lookups.WithLabelValues("rpc").Inc()
			return d, true
		}
	}
	outcome := "unknown"
	if err != nil {
		outcome = "unavailable"
		c.log.Warn("boot decision rpc failed; treating machine as unknown", "mac", mac, "err", err)
	}
	c.lookups.WithLabelValues(outcome).Inc()
	c.mu.Lock()
	c.rememberUnknown(mac, now)
	c.mu.Unlock()
	return events.BootDecision{}, false
}

// maxNegative bounds the MACs remembered as unknown: boot requests name
// any MAC their sender likes, and the cache must not grow with them.
const maxNegative = 4096

// rememberUnknown remembers mac as unknown until NegativeTTL from now.
// When the table is full it forgets the expired entries (looking for them
// at most once a second), and if that is not enough, one entry more: that
// MAC is then asked about again.
func (c *Cache) rememberUnknown(mac string, now time.Time) {
	if len(c.negative) >= maxNegative {
		if now.Sub(c.negativeSwept) >= time.Second {
			c.negativeSwept = now
			for m, until := range c.negative {
				if !now.Before(until) {
					delete(c.negative, m)
				}
			}
		}
		for m := range c.negative {
			if len(c.negative) < maxNegative {
				break
			}
			delete(c.negative, m)
		}
	}
	c.negative[mac] = now.Add(c.cfg.NegativeTTL)
}

// ask calls the region's boot_decision rpc and checks the answer against
// its schema file, the contract with the region.
func (c *Cache) ask(ctx context.Context, mac string) (events.BootDecisionReply, error) {
	var raw json.RawMessage
	var reply events.BootDecisionReply
	if err := rpc.Call(ctx, c.nc, events.RegionRPCSubject(c.cfg.RackID, events.MethodBootDecision), events.BootDecisionRequest{RackID: c.cfg.RackID, MAC: mac}, &raw); err != nil {
		return reply, err
	}
	if err := c.schemas.ValidateJSON(BootDecisionReplySchema, raw); err != nil {
		return reply, fmt.Errorf("region's boot_decision reply breaks its schema: %w", err)
	}
	if err := json.Unmarshal(raw, &reply); err != nil {
		return reply, fmt.Errorf("decode boot_decision reply: %w", err)
	}
	return reply, nil
}

// Schemas of the boot_decision rpc documents (files under schema/).
const (
	BootDecisionRequestSchema = "rpc.region.boot_decision.request"
	BootDecisionReplySchema   = "rpc.region.boot_decision.reply"
)

// Len returns how many decisions the cache holds.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.decisions)
}

// Apply applies one region event; seq is its stream sequence (0 when not
// from the stream). Events of other types are ignored. Run writes the
// change to the cache file.
func (c *Cache) Apply(e events.Event, seq uint64) error {
	var err error
	var notify func()
	c.mu.Lock()
	switch e.Type {
	case events.TypeBootDecisionSet:
		var d events.BootDecision
		if err = e.DecodeData(&d); err == nil {
			if err = ValidateDecision(&d); err == nil {
				c.decisions[d.MAC] = d
				delete(c.negative, d.MAC)
				if c.cfg.OnDecision != nil {
					notify = func() { c.cfg.OnDecision(d) }
				}
			}
		}
	case events.TypeBootDecisionCleared:
		var cl events.BootDecisionCleared
		if err = e.DecodeData(&cl); err == nil {
			var mac string
			if mac, err = events.CanonicalMAC(cl.MAC); err == nil {
				delete(c.decisions, mac)
				delete(c.negative, mac)
				if c.cfg.OnCleared != nil {
					cl.MAC = mac
					notify = func() { c.cfg.OnCleared(cl) }
				}
			}
		}
	}
	if seq > c.seq {
		c.seq = seq
	}
	c.mu.Unlock()
	if notify != nil {
		notify()
	}
	c.applied.Inc()
	c.changed()
	return err
}

// changed schedules a write of the cache file. Writes are coalesced: a
// rack replaying thousands of events must not rewrite the file for each.
func (c *Cache) changed() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// PersistDelay is how long changes gather before the cache file is
// rewritten; a crash within it only replays those events again.
const PersistDelay = 200 * time.Millisecond

func (c *Cache) persistLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			select {
			case <-c.dirty:
				c.persist()
			default:
			}
			return
		case <-c.dirty:
		}
		select {
		case <-ctx.Done():
		case <-time.After(PersistDelay):
		}
		c.persist()
	}
}

// persist writes the cache atomically: a crash leaves the old file or the
// new one, never half of one.
func (c *Cache) persist() {
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	c.mu.RLock()
	raw, err := json.Marshal(persisted{StreamSeq: c.seq, Decisions: c.decisions})
	c.mu.RUnlock()
	if err != nil {
		c.log.Error("encode boot decision cache", "err", err)
		return
	}
	path := filepath.Join(c.cfg.DataDir, CacheFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o640); err != nil {
		c.log.Error("write boot decision cache", "path", tmp, "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		c.log.Error("replace boot decision cache", "path", path, "err", err)
	}
}

// Run follows the region's boot decision events until ctx ends, resuming
// after the last sequence applied, and starting over whenever the consumer
// fails (NATS away, stream not created yet). It also writes the cache file
// after changes, and once more before it returns.
func (c *Cache) Run(ctx context.Context) error {
	persisted := make(chan struct{})
	go func() { defer close(persisted); c.persistLoop(ctx) }()
	defer func() { <-persisted }()
	if c.js == nil {
		<-ctx.Done()
		return nil
	}
	after := func() uint64 {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return c.seq
	}
	eventbus.Follow(ctx, eventbus.FollowConfig{NATS: c.nc, JetStream: c.js, RackID: c.cfg.RackID,
		Purpose: events.FollowBoot, After: after, Handle: c.receive, Log: c.log})
	return nil
}

// receive applies one message of the region stream.
func (c *Cache) receive(raw []byte, seq uint64) {
	e, err := c.validator.Decode(raw)
	if err != nil {
		c.log.Warn("ignoring invalid region event", "stream_seq", seq, "err", err)
		c.Apply(events.Event{}, seq)
		return
	}
	if err := c.Apply(e, seq); err != nil {
		c.log.Warn("ignoring boot decision event", "event_id", e.ID, "err", err)
	}
}

// Cached returns the cached decision of a canonical MAC, never asking
// the region: for the DHCP server, which answers at once or not at all.
func (c *Cache) Cached(mac string) (events.BootDecision, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	d, ok := c.decisions[mac]
	return d, ok
}

// Deployment returns an install decision of machineID's deployment in
// progress on this rack: what the credential an installer presents must
// be of. The region sets every MAC of a machine in one append, so any of
// them will do. A scan of the cache, once per preseed fetch: cheaper than
// keeping a second index in step with every change.
func (c *Cache) Deployment(machineID string) (events.BootDecision, bool) {
	if machineID == "" {
		return events.BootDecision{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, d := range c.decisions {
		if d.MachineID == machineID && d.Purpose == events.BootPurposeInstall && d.DeploymentID != "" {
			return d, true
		}
	}
	return events.BootDecision{}, false
}

// Agent returns the decision of machineID's boot on this rack whose
// agent reports to it (RunsAgent), with the operation it belongs to:
// what the credential an agent presents must be of. As Deployment, a
// scan of the cache, once per request of an agent.
func (c *Cache) Agent(machineID string) (events.BootDecision, bool) {
	if machineID == "" {
		return events.BootDecision{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, d := range c.decisions {
		if d.MachineID == machineID && RunsAgent(d.Purpose) && d.DeploymentID != "" {
			return d, true
		}
	}
	return events.BootDecision{}, false
}

// MetadataDeployment returns a decision of machineID's deployment in
// progress on this rack whose installed system (or installer) may read
// the rack's metadata service: an install decision (ubuntu-autoinstall's
// NoCloud seed is there), the deploy decision of a disk image while its
// agent writes, and the local one that follows until the installed
// system phones home (both name the disk image and the deployment). What
// the metadata service's credential must be of.
func (c *Cache) MetadataDeployment(machineID string) (events.BootDecision, bool) {
	if machineID == "" {
		return events.BootDecision{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, d := range c.decisions {
		if d.MachineID != machineID || d.DeploymentID == "" {
			continue
		}
		if d.Purpose == events.BootPurposeInstall || d.DiskImage != "" &&
			(d.Purpose == events.BootPurposeDeploy || d.Purpose == events.BootPurposeLocal) {
			return d, true
		}
	}
	return events.BootDecision{}, false
}

// Written turns the deploy decisions of machineID's deployment
// deploymentID into local ones at once, as the region will: its agent
// wrote the disk image and reboots the machine within seconds, sooner
// than the region's decision comes back, and booted into the agent
// again it would write the disk again. The local decisions keep the
// deployment and the disk image (MetadataDeployment). It returns the MACs
// changed.
func (c *Cache) Written(machineID, deploymentID string) []string {
	var macs []string
	c.mu.Lock()
	for mac, d := range c.decisions {
		if d.MachineID == machineID && d.DeploymentID == deploymentID && d.Purpose == events.BootPurposeDeploy {
			d.Purpose = events.BootPurposeLocal
			d.Kernel, d.Initrd, d.ImageVer, d.Params, d.PreseedURL = "", "", "", nil, ""
			c.decisions[mac] = d
			macs = append(macs, mac)
		}
	}
	c.mu.Unlock()
	if len(macs) > 0 {
		c.changed()
	}
	return macs
}

// Decisions returns a copy of every cached decision, by MAC.
func (c *Cache) Decisions() map[string]events.BootDecision {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]events.BootDecision, len(c.decisions))
	for k, v := range c.decisions {
		out[k] = v
	}
	return out
}
