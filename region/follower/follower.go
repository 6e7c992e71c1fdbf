package follower

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
)

// Name is the follower's cursor name.
const Name = "region-follower"

// Follower follows the log.
type Follower struct {
	db       *postgres.DB
	machines Discoverer
	log      *slog.Logger
	now      func() time.Time
	cfg      Config
}

// Discoverer makes a machine of a MAC nobody knows; the machine lifecycle
// (machine.Service) decides how.
type Discoverer interface {
	Discover(ctx context.Context, mac, rackID string, meta machine.Meta) (bool, error)
}

// Wake wakes a reader waiting at the end of the log.
type Wake interface {
	// Next is closed at the next append after the call.
	Next() <-chan struct{}
}

// Config configures a Follower.
type Config struct {
	// Wake, when set, wakes the follower as soon as events are appended.
	Wake Wake
	// Poll is how often the follower looks at the end of the log without
	// being woken: a fallback for a missed notification, or the only way
	// without Wake.
	Poll time.Duration
}

// New returns a follower.
func New(db *postgres.DB, machines Discoverer, log *slog.Logger, cfg Config) *Follower {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	return &Follower{db: db, machines: machines, log: log, now: time.Now, cfg: cfg}
}

// Run follows the log until ctx ends.
func (f *Follower) Run(ctx context.Context) error {
	var cur postgres.Cursor
	for {
		var err error
		if cur, err = f.db.LoadCursor(ctx, Name); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		f.log.Warn("follower cursor", "err", err)
		sleep(ctx, nil, time.Second)
	}
	filter := postgres.ReadFilter{Types: []string{events.TypeBootHandoff, events.TypeCapabilitiesReported}}
	for ctx.Err() == nil {
		// Asked for before the read, so an append that lands after the
		// read still wakes the wait below.
		var woken <-chan struct{}
		if f.cfg.Wake != nil {
			woken = f.cfg.Wake.Next()
		}
		batch, next, err := f.db.ReadEvents(ctx, cur, 200, filter)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Warn("follower read", "err", err)
				sleep(ctx, nil, time.Second)
			}
			continue
		}
		for _, e := range batch {
			if err := f.handle(ctx, e); err != nil && ctx.Err() == nil {
				f.log.Warn("follower could not react to an event", "event_id", e.ID, "type", e.Type, "err", err)
			}
		}
		if next != cur {
			if err := f.db.SaveCursor(ctx, Name, next); err != nil {
				f.log.Warn("follower cursor", "err", err)
			}
			cur = next
		}
		if len(batch) == 0 {
			sleep(ctx, woken, f.cfg.Poll)
		}
	}
	return nil
}

func (f *Follower) handle(ctx context.Context, e postgres.Stored) error {
	switch e.Type {
	case events.TypeBootHandoff:
		return f.discover(ctx, e)
	case events.TypeCapabilitiesReported:
		return f.shippedPreseeds(ctx, e)
	}
	return nil
}

// discover has the lifecycle make a machine (status new) for a MAC that
// asked a rack for its boot config and that no machine has.
func (f *Follower) discover(ctx context.Context, e postgres.Stored) error {
	var h events.BootHandoff
	if err := e.DecodeData(&h); err != nil {
		return err
	}
	if h.MAC == "" || h.MachineID != "" {
		return nil
	}
	_, err := f.machines.Discover(ctx, h.MAC, events.RackIDFromSource(e.Source), machine.Meta{Actor: "system:discovery", Cause: &e.Event})
	return err
}

// shippedPreseeds stores each default preseed of a rack's snapshot as a
// version whose origin is the rack, when that content is not stored yet.
// It becomes the current version only when the current one came from a
// rack too: an operator's edit is never silently overwritten.
func (f *Follower) shippedPreseeds(ctx context.Context, e postgres.Stored) error {
	var c events.Capabilities
	if err := e.DecodeData(&c); err != nil {
		return err
	}
	rackID := events.RackIDFromSource(e.Source)
	origin := "rack:" + rackID
	for _, p := range c.Preseeds {
		if err := preseed.Check(p.Name, p.Content); err != nil {
			f.log.Warn("rack ships a preseed that does not render; not stored", "rack_id", rackID, "preseed", p.Name, "err", err)
			continue
		}
		if err := f.storeShipped(ctx, e, origin, p); err != nil {
			return err
		}
	}
	return nil
}

func (f *Follower) storeShipped(ctx context.Context, cause postgres.Stored, origin string, p events.ShippedPreseed) error {
	d := events.PreseedVersionCreated{Name: p.Name, Version: 1, Content: p.Content, Scope: p.Scope, Origin: origin,
		Author: origin, Comment: "default shipped by the rack", Current: true}
	expected := postgres.ExpectNoStream
	cur, err := f.db.GetPreseed(ctx, p.Name)
	switch {
	case err == nil:
		versions, err := f.db.ListPreseedVersions(ctx, p.Name)
		if err != nil {
			return err
		}
		for _, v := range versions {
			if v.Origin != origin {
				continue
			}
			full, err := f.db.GetPreseedVersion(ctx, p.Name, v.Version)
			if err != nil {
				return err
			}
			if full.Content == p.Content {
				return nil // this content from this rack is stored already
			}
		}
		current, err := f.db.GetPreseedVersion(ctx, p.Name, cur.CurrentVersion)
		if err != nil {
			return err
		}
		d.Version, d.BasedOn, d.Scope = cur.LatestVersion+1, cur.LatestVersion, cur.Scope
		d.Current = strings.HasPrefix(current.Origin, "rack:")
		expected = cur.LatestVersion
	case rackplane.ErrorCode(err) != rackplane.ENOTFOUND:
		return err
	}
	ev, err := events.New(events.RegionSource, events.TypePreseedVersionCreated, events.PreseedStreamName(p.Name), f.now(), d)
	if err != nil {
		return err
	}
	ev = ev.CausedBy(cause.Event)
	ev.Actor = origin
	err = f.db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := f.db.Emit(ctx, tx, ev.Subject, expected, ev)
		return err
	})
	var ce *postgres.ConflictError
	if errors.As(err, &ce) {
		return nil // someone stored a version meanwhile; the next snapshot tries again
	}
	if err == nil {
		f.log.Info("stored a rack's default preseed", "preseed", p.Name, "version", d.Version, "origin", origin, "current", d.Current)
	}
	return err
}

// sleep waits for d, ctx's end, or woken (nil: never).
func sleep(ctx context.Context, woken <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-woken:
	case <-t.C:
	}
}
