package subnets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/atomicfile"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// File is the name of the persisted cache under the data directory.
const File = "region-subnets.json"

// Config configures a Cache.
type Config struct {
	// RackID is this rack's id: only subnets naming it are kept.
	RackID string
	// DataDir holds File. Required: the subnets must survive a restart.
	DataDir string
	// JetStream is where the region's events are read, and NATS where
	// the region is asked for the rack's subnets at start; nil for a
	// rack with no region (the cached subnets are served).
	JetStream jetstream.JetStream
	NATS      *nats.Conn
	// RPCTimeout bounds the start's question to the region (default 2s);
	// without an answer the cache serves what it has.
	RPCTimeout time.Duration
	// OnChange gets the rack's subnets after every change, by subnet id
	// order. It is called with no lock held, one call at a time.
	OnChange func([]events.Subnet)
	Logger   *slog.Logger
	// Registerer takes the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Validate reports every missing setting in one error; it changes nothing.
func (c Config) Validate() error {
	var missing []string
	if _, err := uuid.Parse(c.RackID); err != nil {
		missing = append(missing, "RackID (the rack's UUID)")
	}
	if c.DataDir == "" {
		missing = append(missing, "DataDir (the subnets must survive a restart)")
	}
	if len(missing) > 0 {
		return rackplane.Errorf(rackplane.EINVALID, "subnets: %s required", strings.Join(missing, ", "))
	}
	return nil
}

type persisted struct {
	// StreamSeq is the last region stream sequence applied.
	StreamSeq uint64                      `json:"stream_seq"`
	Subnets   map[string]events.SubnetSet `json:"subnets"`
}

// Cache is the region's subnets of this rack.
type Cache struct {
	cfg       Config
	log       *slog.Logger
	validator *events.Validator
	schemas   *schema.Set

	mu      sync.Mutex
	subnets map[string]events.SubnetSet // by subnet id
	seq     uint64

	notifyMu sync.Mutex // one OnChange at a time, in order

	events *prometheus.CounterVec // outcome
}

// Outcomes of a region event, the label of the events metric.
const (
	OutcomeApplied = "applied" // a subnet of this rack changed
	OutcomeOther   = "other"   // another rack's subnet, or not a subnet event
	OutcomeInvalid = "invalid" // refused: breaks the schema or the subnet rules
)

// New loads the persisted cache. A damaged file is logged and the cache
// starts empty: the region's stream fills it again.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = 2 * time.Second
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	set, err := schema.Default()
	if err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, log: cfg.Logger, validator: v, schemas: set, subnets: map[string]events.SubnetSet{},
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_subnet_events_total",
			Help: "Region subnet events the rack read, by outcome: applied (a subnet of this rack changed), other (another rack's), invalid (refused).",
		}, []string{"outcome"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(c.events); err != nil {
			return nil, fmt.Errorf("subnets: register metrics: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("subnets: data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, File)
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("subnets: read %s: %w", path, err)
	default:
		var p persisted
		if err := json.Unmarshal(raw, &p); err != nil {
			c.log.Error("region subnets cache unreadable, starting empty", "path", path, "err", err)
			break
		}
		for id, s := range p.Subnets {
			if err := check(s); err != nil || s.SubnetID != id || s.RackID != cfg.RackID {
				c.log.Warn("dropping invalid cached subnet", "subnet_id", id, "err", err)
				continue
			}
			c.subnets[id] = s
		}
		c.seq = p.StreamSeq
	}
	return c, nil
}

// check refuses a subnet_set whose ids or subnet are not valid.
func check(s events.SubnetSet) error {
	if _, err := uuid.Parse(s.SubnetID); err != nil {
		return fmt.Errorf("subnet_id %q: %w", s.SubnetID, err)
	}
	if _, err := uuid.Parse(s.RackID); err != nil {
		return fmt.Errorf("rack_id %q: %w", s.RackID, err)
	}
	return s.Subnet.Validate()
}

// Subnets returns the rack's subnets, by subnet id.
func (c *Cache) Subnets() []events.Subnet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listLocked()
}

func (c *Cache) listLocked() []events.Subnet {
	ids := make([]string, 0, len(c.subnets))
	for id := range c.subnets {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]events.Subnet, 0, len(ids))
	for _, id := range ids {
		out = append(out, c.subnets[id].Subnet)
	}
	return out
}

// Receive applies one message of the region stream at sequence seq: it
// validates the envelope against the schema files, then applies the
// event. An invalid message is counted, logged and skipped (its sequence
// is still taken, so it is not read again).
func (c *Cache) Receive(raw []byte, seq uint64) error {
	e, err := c.validator.Decode(raw)
	if err == nil {
		err = c.Apply(e, seq)
	}
	if err != nil {
		c.events.WithLabelValues(OutcomeInvalid).Inc()
		c.log.Warn("region subnet event refused", "stream_seq", seq, "err", err)
		c.advance(seq)
	}
	return err
}

// Apply applies one region event (seq 0: not from the stream). Events of
// other types, and subnets of other racks this rack never served, change
// nothing. The cache file is written before it returns, and OnChange
// called, when the rack's subnets changed.
func (c *Cache) Apply(e events.Event, seq uint64) error {
	var id string
	var set *events.SubnetSet
	switch e.Type {
	case events.TypeSubnetSet:
		var d events.SubnetSet
		if err := e.DecodeData(&d); err != nil {
			return fmt.Errorf("subnet_set %s: %w", e.ID, err)
		}
		if err := check(d); err != nil {
			return fmt.Errorf("subnet_set %s: %w", e.ID, err)
		}
		id = d.SubnetID
		if d.RackID == c.cfg.RackID {
			set = &d
		}
	case events.TypeSubnetDeleted:
		var d events.SubnetDeleted
		if err := e.DecodeData(&d); err != nil {
			return fmt.Errorf("subnet_deleted %s: %w", e.ID, err)
		}
		id = d.SubnetID
	default:
		c.events.WithLabelValues(OutcomeOther).Inc()
		c.advance(seq)
		return nil
	}
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	c.mu.Lock()
	_, had := c.subnets[id]
	switch {
	case set != nil:
		c.subnets[id] = *set
	case had:
		delete(c.subnets, id) // deleted, or moved to another rack
	}
	if seq > c.seq {
		c.seq = seq
	}
	changed := set != nil || had
	list := c.listLocked()
	p := c.snapshotLocked()
	c.mu.Unlock()
	if !changed {
		c.events.WithLabelValues(OutcomeOther).Inc()
		return nil // the sequence is persisted with the next change
	}
	c.events.WithLabelValues(OutcomeApplied).Inc()
	if err := c.persist(p); err != nil {
		// Served all the same; the stream replays it after a restart.
		c.log.Error("region subnets not written", "err", err)
	}
	c.log.Info("region subnet changed", "subnet_id", id, "type", e.Type, "subnets", len(list))
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(list)
	}
	return nil
}

func (c *Cache) advance(seq uint64) {
	c.mu.Lock()
	if seq > c.seq {
		c.seq = seq
	}
	c.mu.Unlock()
}

func (c *Cache) snapshotLocked() persisted {
	m := make(map[string]events.SubnetSet, len(c.subnets))
	for k, v := range c.subnets {
		m[k] = v
	}
	return persisted{StreamSeq: c.seq, Subnets: m}
}

// persist writes p atomically and durably (atomicfile: fsync of the
// file before the rename, of the directory after): a crash or a power
// cut leaves the old file or the new one, never half of one.
func (c *Cache) persist(p persisted) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(c.cfg.DataDir, File), raw, 0o640)
}

// Schemas of the subnets rpc documents (files under schema/).
const (
	RequestSchema = "rpc.region.subnets.request"
	ReplySchema   = "rpc.region.subnets.reply"
)

// Sync asks the region for this rack's subnets as they are now and makes
// them the cache's. With JetStream, it first reads the region stream's
// last sequence and, with the answer, takes it as the last one applied:
// the answer already holds every event up to there, so following the
// stream afterwards starts after them and never serves an older state
// again (a reservation changed since, a subnet deleted since). Events
// published while the region answers are read again; they leave the
// subnets as the answer has them.
func (c *Cache) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
	defer cancel()
	var streamSeq uint64
	if c.cfg.JetStream != nil {
		st, err := c.cfg.JetStream.Stream(ctx, events.RegionStream)
		if err != nil {
			return fmt.Errorf("region stream: %w", err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return fmt.Errorf("region stream's last sequence: %w", err)
		}
		streamSeq = info.State.LastSeq
	}
	var raw json.RawMessage
	if err := rpc.Call(ctx, c.cfg.NATS, events.RegionRPCSubject(c.cfg.RackID, events.MethodSubnets), events.SubnetsRequest{RackID: c.cfg.RackID}, &raw); err != nil {
		return err
	}
	if err := c.schemas.ValidateJSON(ReplySchema, raw); err != nil {
		c.events.WithLabelValues(OutcomeInvalid).Inc()
		return fmt.Errorf("region's subnets reply breaks its schema: %w", err)
	}
	var reply events.SubnetsReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		c.events.WithLabelValues(OutcomeInvalid).Inc()
		return fmt.Errorf("decode subnets reply: %w", err)
	}
	got := map[string]events.SubnetSet{}
	for _, s := range reply.Subnets {
		if err := check(s); err != nil || s.RackID != c.cfg.RackID {
			c.events.WithLabelValues(OutcomeInvalid).Inc()
			return fmt.Errorf("region's subnets reply: subnet %s of rack %s refused: %v", s.SubnetID, s.RackID, err)
		}
		got[s.SubnetID] = s
	}
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	c.mu.Lock()
	changed := !maps.EqualFunc(c.subnets, got, func(a, b events.SubnetSet) bool {
		x, _ := json.Marshal(a)
		y, _ := json.Marshal(b)
		return string(x) == string(y)
	})
	c.subnets = got
	moved := c.cfg.JetStream != nil && c.seq != streamSeq
	if c.cfg.JetStream != nil {
		// Exactly the stream's: one that was purged or made again
		// starts lower than what the cache had read.
		c.seq = streamSeq
	}
	list := c.listLocked()
	p := c.snapshotLocked()
	c.mu.Unlock()
	if !changed {
		if moved {
			if err := c.persist(p); err != nil {
				c.log.Error("region subnets not written", "err", err)
			}
		}
		return nil
	}
	if err := c.persist(p); err != nil {
		c.log.Error("region subnets not written", "err", err)
	}
	c.log.Info("region subnets synchronised", "subnets", len(list))
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(list)
	}
	return nil
}

// Run follows the region's subnet events until ctx ends, from the last
// sequence applied. Without JetStream it waits for ctx. Before it
// follows, it hands OnChange the cached subnets, so the DHCP server
// serves them whether or not the region answers, then asks the region
// for the subnets as they are now (Sync).
func (c *Cache) Run(ctx context.Context) error {
	js := c.cfg.JetStream
	if c.cfg.OnChange != nil {
		c.notifyMu.Lock()
		c.cfg.OnChange(c.Subnets())
		c.notifyMu.Unlock()
	}
	if c.cfg.NATS != nil {
		if err := c.Sync(ctx); err != nil {
			c.log.Warn("region not asked for this rack's subnets; serving the cached ones", "err", err)
		}
	}
	if js == nil {
		<-ctx.Done()
		return nil
	}
	after := func() uint64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.seq
	}
	eventbus.Follow(ctx, eventbus.FollowConfig{NATS: c.cfg.NATS, JetStream: js, RackID: c.cfg.RackID,
		Purpose: events.FollowSubnets, After: after, Handle: func(raw []byte, seq uint64) { _ = c.Receive(raw, seq) }, Log: c.log})
	// The sequence of events of other racks is kept for the next start.
	c.mu.Lock()
	p := c.snapshotLocked()
	c.mu.Unlock()
	if err := c.persist(p); err != nil {
		c.log.Error("region subnets not written", "err", err)
	}
	return nil
}
