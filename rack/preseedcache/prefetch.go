package preseedcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// DecisionKey identifies the deployment an install decision is for: the
// machine, its deployment, where its installer fetches the preseed and the
// image it installs. A decision re-emitted with another hostname, boot
// file or kernel parameters is the same deployment and keeps its cached
// preseed.
func DecisionKey(d events.BootDecision) string {
	sum := sha256.Sum256([]byte(d.MachineID + "\x00" + d.PreseedURL + "\x00" + d.ImageVer + "\x00" + d.DeploymentID))
	return hex.EncodeToString(sum[:12])
}

// macDecision is what a MAC's last decision said.
type macDecision struct {
	machineID string
	key       string // DecisionKey of an install decision, else ""
}

// Prefetcher follows boot decisions and keeps the Store in step: it
// fetches the preseed of every machine given an install decision and drops
// the entry of every machine whose decision is something else or cleared.
//
// Decision and Cleared are the boot decision cache's hooks, on the path
// that serves boot configs, and must not block: they only change what the
// prefetcher knows, under mu, and Run does the store's disk work. Until
// Run has dropped an entry, Current no longer names its key, so it is not
// served.
type Prefetcher struct {
	store *Store
	fetch FetchFunc
	log   *slog.Logger

	mu       sync.Mutex // never held over disk I/O or a fetch
	byMAC    map[string]macDecision
	installs map[string]string // machine id → key of its install decision
	want     map[string]string // machine id → decision key of a fetch to do
	drop     map[string]bool   // machine ids whose entry Run deletes
	wake     chan struct{}
	fetches  *prometheus.CounterVec
}

// NewPrefetcher returns a prefetcher filling store with fetch.
func NewPrefetcher(store *Store, fetch FetchFunc, log *slog.Logger, reg prometheus.Registerer) (*Prefetcher, error) {
	p := &Prefetcher{store: store, fetch: fetch, log: log,
		byMAC: map[string]macDecision{}, installs: map[string]string{}, want: map[string]string{}, drop: map[string]bool{},
		wake: make(chan struct{}, 1),
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
	defer p.wakeRun()
	prev, had := p.byMAC[d.MAC]
	if d.MachineID == "" {
		delete(p.byMAC, d.MAC)
	} else {
		p.byMAC[d.MAC] = macDecision{machineID: d.MachineID}
	}
	if had && prev.machineID != d.MachineID {
		// The MAC moved to another machine; the old one's decision
		// follows on its own MACs.
		p.forgetLocked(prev.machineID)
	}
	if d.MachineID == "" {
		return
	}
	if d.Purpose != events.BootPurposeInstall || d.PreseedURL == "" {
		p.forgetLocked(d.MachineID)
		return
	}
	key := DecisionKey(d)
	p.byMAC[d.MAC] = macDecision{machineID: d.MachineID, key: key}
	if p.installs[d.MachineID] == key && (!had || prev.key != key) {
		return // another MAC of the same deployment
	}
	if old := p.installs[d.MachineID]; old != "" && old != key {
		// A new deployment: the old preseed's token is worthless now,
		// and serving it would be worse than serving nothing.
		p.drop[d.MachineID] = true
	}
	p.installs[d.MachineID] = key
	// Fetched again when the same decision comes again, cached or not:
	// the region may render it differently now (another rack's boot URL,
	// a new licence key).
	p.want[d.MachineID] = key
}

// Cleared takes a boot decision the region cleared for mac.
func (p *Prefetcher) Cleared(mac, machineID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if machineID == "" {
		machineID = p.byMAC[mac].machineID
	}
	delete(p.byMAC, mac)
	if machineID != "" {
		p.forgetLocked(machineID)
		p.wakeRun()
	}
}

func (p *Prefetcher) forgetLocked(machineID string) {
	delete(p.want, machineID)
	delete(p.installs, machineID)
	p.drop[machineID] = true
}

func (p *Prefetcher) wakeRun() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Current returns the key of machineID's install decision as the rack
// knows it now, "" when it has none: a cached entry under another key is
// not to be served.
func (p *Prefetcher) Current(machineID string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.installs[machineID]
}

// Refresh stores what the region just answered an installer's fetch with,
// under the machine's install decision as the rack knows it; nothing when
// it knows none.
func (p *Prefetcher) Refresh(pre Preseed) error {
	p.mu.Lock()
	key := p.installs[pre.MachineID]
	if key != "" && p.want[pre.MachineID] == key {
		delete(p.want, pre.MachineID)
	}
	p.mu.Unlock()
	if key == "" {
		return nil
	}
	pre.Decision = key
	err := p.store.Put(pre)
	p.recheck(pre.MachineID, key)
	return err
}

// recheck has Run drop machineID's entry, just written under key, when
// its decision changed meanwhile.
func (p *Prefetcher) recheck(machineID, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.installs[machineID] != key {
		p.drop[machineID] = true
		p.wakeRun()
	}
}

// Forget drops machineID's entry: the region said it serves no preseed
// for it.
func (p *Prefetcher) Forget(machineID string) {
	p.mu.Lock()
	delete(p.want, machineID)
	p.mu.Unlock()
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

// dropPending deletes the entries marked for dropping.
func (p *Prefetcher) dropPending() {
	p.mu.Lock()
	ids := make([]string, 0, len(p.drop))
	for id := range p.drop {
		ids = append(ids, id)
	}
	clear(p.drop)
	p.mu.Unlock()
	for _, id := range ids {
		p.store.Drop(id)
	}
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

// Run fetches the wanted preseeds and drops the entries of machines no
// longer deploying until ctx ends, retrying fetches the region could not
// answer with backoff.
func (p *Prefetcher) Run(ctx context.Context) error {
	retry := backoff.New(backoff.Policy{Initial: 500 * time.Millisecond, Max: 30 * time.Second})
	for {
		p.dropPending()
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
			switch {
			case err == nil:
				pre.MachineID, pre.Decision = id, key
				if err = p.store.Put(pre); err != nil {
					p.log.Error("preseed not cached", "machine_id", id, "err", err)
				} else {
					p.log.Info("preseed cached", "machine_id", id, "preseed", pre.Name, "version", pre.Version)
				}
				p.fetches.WithLabelValues("cached").Inc()
				p.done(id, key)
				p.recheck(id, key)
			case refused(err):
				p.log.Warn("preseed not cached: the region will not serve it", "machine_id", id, "err", err)
				p.fetches.WithLabelValues("refused").Inc()
				p.done(id, key)
			default:
				p.log.Debug("preseed not cached yet: region away", "machine_id", id, "err", err)
				p.fetches.WithLabelValues("retry").Inc()
				failed = true
			}
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

// done takes machineID's fetch under key off the list, unless the decision
// changed meanwhile and wants another.
func (p *Prefetcher) done(machineID, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.want[machineID] == key {
		delete(p.want, machineID)
	}
}
