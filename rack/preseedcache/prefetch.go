package preseedcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
)

// FetchFunc asks the region for machineID's rendered preseed, as a cache
// fill rather than an installer's fetch.
type FetchFunc func(ctx context.Context, machineID string) (Preseed, error)

// DecisionKey identifies a machine's install decision across its MACs: a
// different key is a different deployment (or a changed one).
func DecisionKey(d events.BootDecision) string {
	d.MAC = ""
	b, _ := json.Marshal(d)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// Prefetcher follows boot decisions and keeps the Store in step: it
// fetches the preseed of every machine given an install decision and drops
// the entry of every machine whose decision is something else or cleared.
type Prefetcher struct {
	store *Store
	fetch FetchFunc
	log   *slog.Logger

	mu       sync.Mutex
	byMAC    map[string]string // MAC → machine id of its last decision
	installs map[string]string // machine id → key of its install decision
	want     map[string]string // machine id → decision key of a fetch to do
	wake     chan struct{}
	fetches  *prometheus.CounterVec
}

// NewPrefetcher returns a prefetcher filling store with fetch.
func NewPrefetcher(store *Store, fetch FetchFunc, log *slog.Logger, reg prometheus.Registerer) (*Prefetcher, error) {
	p := &Prefetcher{store: store, fetch: fetch, log: log,
		byMAC: map[string]string{}, installs: map[string]string{}, want: map[string]string{}, wake: make(chan struct{}, 1),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_preseed_prefetches_total",
			Help: "Preseed fetches for the rack's cache by outcome: cached, refused (the region will not serve it: dropped), retry (region away: tried again).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		if err := reg.Register(p.fetches); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Decision takes a boot decision set for d.MAC: the bootconfig cache's
// hook, also called with every decision it holds at start.
func (p *Prefetcher) Decision(d events.BootDecision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, had := p.byMAC[d.MAC]
	if d.MachineID == "" {
		delete(p.byMAC, d.MAC)
	} else {
		p.byMAC[d.MAC] = d.MachineID
	}
	if had && prev != d.MachineID {
		// The MAC moved to another machine; the old one's decision
		// follows on its own MACs.
		p.forgetLocked(prev)
	}
	if d.MachineID == "" {
		return
	}
	if d.Purpose != events.BootPurposeInstall || d.PreseedURL == "" {
		p.forgetLocked(d.MachineID)
		return
	}
	key := DecisionKey(d)
	if p.installs[d.MachineID] == key {
		return // another MAC of the same deployment, or the same again
	}
	p.installs[d.MachineID] = key
	if cur, err := p.store.Get(d.MachineID); err != nil || cur.Decision != key {
		// A new deployment: the old preseed's token is worthless now,
		// and serving it would be worse than serving nothing.
		p.store.Drop(d.MachineID)
	}
	// Fetched again even when cached: the region may render it
	// differently now (another rack's boot URL, a new licence key).
	p.want[d.MachineID] = key
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Cleared takes a boot decision the region cleared for mac.
func (p *Prefetcher) Cleared(mac, machineID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if machineID == "" {
		machineID = p.byMAC[mac]
	}
	delete(p.byMAC, mac)
	if machineID != "" {
		p.forgetLocked(machineID)
	}
}

func (p *Prefetcher) forgetLocked(machineID string) {
	delete(p.want, machineID)
	delete(p.installs, machineID)
	p.store.Drop(machineID)
}

// Refresh stores what the region just answered an installer's fetch with,
// under the machine's install decision as the rack knows it.
func (p *Prefetcher) Refresh(pre Preseed) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pre.Decision = p.installs[pre.MachineID]
	delete(p.want, pre.MachineID)
	return p.store.Put(pre)
}

// Forget drops machineID's entry: the region said it serves no preseed
// for it.
func (p *Prefetcher) Forget(machineID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.want, machineID)
	p.store.Drop(machineID)
}

// Pending returns the machine ids whose preseed is still to be fetched.
func (p *Prefetcher) Pending() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.want))
	for id := range p.want {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// refused reports whether the region's answer means it will never serve
// this preseed (the machine is not being deployed with one), rather than
// that it could not answer now.
func refused(err error) bool {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND, rackplane.EINVALID, rackplane.EFORBIDDEN, rackplane.EUNAUTHORIZED, rackplane.ECONFLICT, rackplane.EPRECONDITION:
		return true
	}
	return false
}

// Run fetches the wanted preseeds until ctx ends, retrying those the
// region could not answer with backoff.
func (p *Prefetcher) Run(ctx context.Context) error {
	retry := backoff.New(backoff.Policy{Initial: 500 * time.Millisecond, Max: 30 * time.Second})
	for {
		failed := false
		for _, id := range p.Pending() {
			if ctx.Err() != nil {
				return nil
			}
			p.mu.Lock()
			key, ok := p.want[id]
			p.mu.Unlock()
			if !ok {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			pre, err := p.fetch(fctx, id)
			cancel()
			p.mu.Lock()
			if p.want[id] != key {
				p.mu.Unlock()
				continue // the decision changed meanwhile: fetch again or not at all
			}
			switch {
			case err == nil:
				pre.MachineID, pre.Decision = id, key
				if err = p.store.Put(pre); err != nil {
					p.log.Error("preseed not cached", "machine_id", id, "err", err)
				} else {
					p.log.Info("preseed cached", "machine_id", id, "preseed", pre.Name, "version", pre.Version)
				}
				p.fetches.WithLabelValues("cached").Inc()
				delete(p.want, id)
			case refused(err):
				p.log.Warn("preseed not cached: the region will not serve it", "machine_id", id, "err", err)
				p.fetches.WithLabelValues("refused").Inc()
				delete(p.want, id)
			default:
				p.log.Debug("preseed not cached yet: region away", "machine_id", id, "err", err)
				p.fetches.WithLabelValues("retry").Inc()
				failed = true
			}
			p.mu.Unlock()
		}
		if !failed {
			retry.Reset()
			select {
			case <-ctx.Done():
				return nil
			case <-p.wake:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-time.After(retry.Next()):
		}
	}
}
