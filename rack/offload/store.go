package offload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Emitter publishes a rack event about a machine (or the rack when
// machineID is ""); *handoff.Resolver is one.
type Emitter interface {
	Emit(typ, machineID string, data any)
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Dir holds the ephemeral files; it is the store's alone, and anything
	// in it at start is left over from an earlier run and swept.
	Dir string
	// TTL bounds an ephemeral file's life (default 2m: configs are small
	// and fetched at once).
	TTL time.Duration
	Now func() time.Time
}

type entry struct {
	path    string
	created time.Time
	quiet   bool // its hand-off was summarised: so is its deletion
	// report: its front-end reports the transfer with a boot_transfer
	// event over NATS (the handoff rpc), which Completions waits for.
	report bool
}

// Store keeps the ephemeral files of hand-offs, by hand-off id.
type Store struct {
	cfg  StoreConfig
	emit Emitter
	log  *slog.Logger

	mu      sync.Mutex
	entries map[string]entry
	reports int // entries whose report is awaited
	wake    chan struct{}
}

// NewStore creates the directory and sweeps what an earlier run left.
func NewStore(cfg StoreConfig, emit Emitter, log *slog.Logger) (*Store, error) {
	if cfg.Dir == "" {
		return nil, rackplane.Errorf(rackplane.EINVALID, "offload: the hand-off store needs a directory (StoreConfig.Dir)")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// World-searchable but not listable: the front-end may run as another
	// user, and it learns each file's unguessable name from the rack.
	if err := os.MkdirAll(cfg.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("offload: hand-off store: %w", err)
	}
	s := &Store{cfg: cfg, emit: emit, log: log, entries: map[string]entry{}, wake: make(chan struct{}, 1)}
	if err := s.sweep(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) sweep() error {
	des, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("offload: sweep hand-off store: %w", err)
	}
	now := s.cfg.Now()
	for _, de := range des {
		p := filepath.Join(s.cfg.Dir, de.Name())
		created := now
		if fi, err := de.Info(); err == nil {
			created = fi.ModTime()
		}
		if err := os.RemoveAll(p); err != nil {
			s.log.Error("sweep hand-off store", "path", p, "err", err)
			continue
		}
		s.report(de.Name(), p, events.HandoffDeletedSweep, created, now)
	}
	return nil
}

// Put writes content as the ephemeral file of hand-off id and returns its
// absolute path.
func (s *Store) Put(id string, content []byte) (string, error) {
	return s.put(id, content, false, false)
}

// put is Put; the deletion of a quiet file is not reported (its hand-off
// was counted in a summary, not reported one by one), and the transfer of
// a report file is to be reported over NATS.
func (s *Store) put(id string, content []byte, quiet, report bool) (string, error) {
	if id == "" || filepath.Base(id) != id || id == "." || id == ".." {
		return "", fmt.Errorf("offload: bad hand-off id %q", id)
	}
	p, err := filepath.Abs(filepath.Join(s.cfg.Dir, id))
	if err != nil {
		return "", err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("offload: write ephemeral file: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("offload: write ephemeral file: %w", err)
	}
	s.mu.Lock()
	if old, ok := s.entries[id]; ok && old.report {
		s.reports--
	}
	s.entries[id] = entry{path: p, created: s.cfg.Now(), quiet: quiet, report: report}
	if report {
		s.reports++
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return p, nil
}

// Has reports whether hand-off id has an ephemeral file.
func (s *Store) Has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.entries[id]
	return ok
}

// awaitsReport says whether hand-off id has an ephemeral file whose
// transfer is to be reported over NATS.
func (s *Store) awaitsReport(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[id].report
}

// awaitedReports is how many files wait for a report over NATS.
func (s *Store) awaitedReports() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reports
}

// forget removes id's entry; the caller holds s.mu.
func (s *Store) forget(id string) (entry, bool) {
	e, ok := s.entries[id]
	if ok {
		delete(s.entries, id)
		if e.report {
			s.reports--
		}
	}
	return e, ok
}

// Done deletes the ephemeral file of a finished transfer; false when id
// has none.
func (s *Store) Done(id string) bool {
	s.mu.Lock()
	e, ok := s.forget(id)
	s.mu.Unlock()
	if ok {
		s.remove(id, e, events.HandoffDeletedDone)
	}
	return ok
}

// Expire deletes files past their TTL and forgets files the front-end
// deleted itself, reporting each. It returns when the next file expires.
func (s *Store) Expire() (next time.Time) {
	now := s.cfg.Now()
	var gone, expired []string
	s.mu.Lock()
	for id, e := range s.entries {
		switch {
		case !exists(e.path):
			gone = append(gone, id)
		case !now.Before(e.created.Add(s.cfg.TTL)):
			expired = append(expired, id)
		default:
			if t := e.created.Add(s.cfg.TTL); next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	ents := make(map[string]entry, len(gone)+len(expired))
	for _, id := range append(gone, expired...) {
		ents[id], _ = s.forget(id)
	}
	s.mu.Unlock()
	for _, id := range gone {
		if !ents[id].quiet {
			s.report(id, ents[id].path, events.HandoffDeletedGone, ents[id].created, now)
		}
	}
	for _, id := range expired {
		s.remove(id, ents[id], events.HandoffDeletedTTL)
	}
	return next
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func (s *Store) remove(id string, e entry, reason string) {
	err := os.Remove(e.path)
	if errors.Is(err, os.ErrNotExist) {
		reason = events.HandoffDeletedGone
	} else if err != nil {
		s.log.Error("delete ephemeral file", "path", e.path, "err", err)
		return
	}
	if !e.quiet {
		s.report(id, e.path, reason, e.created, s.cfg.Now())
	}
}

func (s *Store) report(id, path, reason string, created, now time.Time) {
	s.emit.Emit(events.TypeHandoffFileDeleted, "", events.HandoffFileDeleted{
		HandoffID: id, Path: path, Reason: reason,
		CreatedAt: created.UTC(), AgeMS: max(0, now.Sub(created).Milliseconds()),
	})
}

// Run expires files until ctx ends. It wakes when the next file expires,
// and at least every interval so that files a front-end deleted are
// noticed.
func (s *Store) Run(ctx context.Context) error {
	const interval = time.Second
	for {
		next := s.Expire()
		wait := interval
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(s.cfg.Now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-time.After(wait):
		}
	}
}
