package retention_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/region/follower"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/retention"
)

// TestPruningNeverOutrunsTheFollower appends boots of 300 unknown MACs,
// with transfers between them, while the follower discovers machines and
// a pruner that keeps one telemetry event per rack runs every 10ms: every
// MAC still becomes a machine (no hand-off went before the follower read
// it), and once the follower is done the log holds one telemetry event of
// the rack.
func TestPruningNeverOutrunsTheFollower(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	machines := machine.NewService(db, nil, log)
	wake := db.NewEventWatch()
	f, err := follower.New(db, machines, preseed.NewService(db, nil, log), log, follower.Config{Wake: wake, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := retention.New(db, retention.Config{Policy: postgres.RetentionPolicy{KeepPerSource: 1, Batch: 7},
		Interval: 10 * time.Millisecond, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{wake.Run, f.Run, p.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				t.Errorf("run: %v", err)
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }() // on a failure before the end

	const n = 300
	src, stream := events.RackSource(machinetest.RackID), events.RackStreamName(machinetest.RackID)
	var last events.Event
	for i := 0; i < n; i += 10 {
		var batch []events.Event
		for j := i; j < i+10; j++ {
			mac := fmt.Sprintf("52:54:00:00:%02x:%02x", j/256, j%256)
			h, _ := events.New(src, events.TypeBootHandoff, stream, time.Now(),
				events.BootHandoff{Protocol: "tftp", FileName: "pxelinux.cfg/01-" + mac, Route: "config", MAC: mac})
			tr, _ := events.New(src, events.TypeBootTransfer, stream, time.Now(),
				events.BootTransfer{Protocol: "tftp", FileName: "pxelinux.cfg/01-" + mac, Route: "config"})
			batch = append(batch, h, tr)
			last = h
		}
		if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, batch); return err }); err != nil {
			t.Fatal(err)
		}
	}
	var pos int64
	if err := db.Pool().QueryRow(ctx, `SELECT position FROM events WHERE id = $1`, last.ID).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := db.LoadCursor(ctx, follower.Name)
		if err != nil {
			t.Fatal(err)
		}
		if c.Position >= pos {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the follower is at %s, the last hand-off at position %d", c, pos)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ms, err := machines.List(ctx, machine.Filter{Limit: 1000})
	if err != nil || len(ms) != n {
		t.Fatalf("%d machines (%v), want one for each of the %d MACs", len(ms), err, n)
	}
	// Stop the pruner's own passes, so that the last pass and the
	// metric it adds to are the test's.
	cancel()
	wg.Wait()
	ctx = context.Background()
	if _, err := p.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM events WHERE type = ANY($1)`, postgres.TelemetryTypes).Scan(&left); err != nil {
		t.Fatal(err)
	}
	// The last transfer came after the follower's last hand-off: it may
	// stay until a follower reads past it.
	if left > 2 {
		t.Errorf("%d telemetry events left, want the newest (and a transfer past the follower's cursor)", left)
	}
	if got := metrictest.Value(t, reg, "rackplane_region_events_pruned_total", nil); got < 2*n-2 {
		t.Errorf("rackplane_region_events_pruned_total %g, want at least %d", got, 2*n-2)
	}
}
