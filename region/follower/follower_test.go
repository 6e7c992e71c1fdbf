package follower_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/region/follower"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/regiontest"
)

// The follower reacts to a rack's events as they are appended, woken by
// the append; its poll is only the fallback for a read that the log's
// horizon held back.
func TestFollowerReactsToRackEvents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	machines := machine.NewService(db, nil, log)
	preseeds := preseed.NewService(db, nil, log)
	wake := db.NewEventWatch()
	f, err := follower.New(db, machines, preseeds, log, follower.Config{Wake: wake, Poll: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- wake.Run(ctx) }()
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}()

	src := events.RackSource(machinetest.RackID)
	handoff, _ := events.New(src, events.TypeBootHandoff, events.RackStreamName(machinetest.RackID), time.Now(),
		events.BootHandoff{Protocol: "tftp", FileName: "pxelinux.cfg/01-52-54-00-00-06-01", Route: "config", MAC: "52:54:00:00:06:01"})
	caps, _ := events.New(src, events.TypeCapabilitiesReported, events.RackStreamName(machinetest.RackID), time.Now(),
		events.Capabilities{Preseeds: []events.ShippedPreseed{
			{Name: "rack-default", Scope: events.PreseedScope{Kind: "global"}, Content: "#cloud-config\nhostname: {{.Machine.Hostname}}\n"},
			{Name: "broken", Scope: events.PreseedScope{Kind: "global"}, Content: "{{.Nope}}"},
		}})
	// Twice: the second of each is a no-op, not a second machine or version.
	for range 2 {
		err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := db.AppendAny(ctx, tx, []events.Event{handoff, caps})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		handoff.ID, caps.ID = uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		ms, err := machines.List(ctx, machine.Filter{MAC: "52:54:00:00:06:01"})
		vs, _ := preseeds.Versions(ctx, "rack-default")
		if err == nil && len(ms) == 1 && len(vs) == 1 {
			if ms[0].Status != events.MachineNew || ms[0].BootRackID == nil || *ms[0].BootRackID != machinetest.RackID {
				t.Fatalf("discovered %+v", ms[0])
			}
			if vs[0].Origin != "rack:"+machinetest.RackID {
				t.Fatalf("shipped preseed version %+v", vs[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: machines %+v (%v), preseed versions %+v", ms, err, vs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := preseeds.Get(ctx, "broken"); err == nil {
		t.Fatal("a shipped preseed that does not render was stored")
	}
	// Both events' copies were followed: still one machine, one version.
	time.Sleep(200 * time.Millisecond)
	ms, _ := machines.List(ctx, machine.Filter{})
	vs, _ := preseeds.Versions(ctx, "rack-default")
	if len(ms) != 1 || len(vs) != 1 {
		t.Fatalf("after the repeats: %d machines, %d versions", len(ms), len(vs))
	}
}

// A second follower on one registry is an error from New, not a panic.
func TestFollowerMetricsTwiceOnARegistry(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	if _, err := follower.New(nil, nil, nil, log, follower.Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := follower.New(nil, nil, nil, log, follower.Config{Registerer: reg}); err == nil {
		t.Fatal("second follower registered its metrics on the same registry")
	}
}

// TestFollowerCapsDiscovery: twenty unknown MACs boot on one rack at
// once with a cap of five a minute: five machines are made, and the
// fifteen others are counted and summed up in discovery_refused events
// of the rack's stream.
func TestFollowerCapsDiscovery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	machines := machine.NewService(db, nil, log)
	reg := prometheus.NewRegistry()
	f, err := follower.New(db, machines, preseed.NewService(db, nil, log), log, follower.Config{Poll: 20 * time.Millisecond,
		Registerer: reg, Discovery: machine.DiscoveryLimits{PerRackPerMinute: 5}, SummaryInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	src := events.RackSource(machinetest.RackID)
	var boots []events.Event
	for i := range 20 {
		mac := fmt.Sprintf("52:54:00:00:07:%02x", i)
		e, _ := events.New(src, events.TypeBootHandoff, events.RackStreamName(machinetest.RackID), time.Now(),
			events.BootHandoff{Protocol: "tftp", FileName: "pxelinux.cfg/01-" + mac, Route: "config", MAC: mac})
		boots = append(boots, e)
	}
	if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, boots); return err }); err != nil {
		t.Fatal(err)
	}
	validator := regiontest.Validator(t)
	var refused int64
	byLimit := map[string]int64{}
	deadline := time.Now().Add(10 * time.Second)
	for refused < 15 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d refusals summed up, want 15", refused)
		}
		time.Sleep(20 * time.Millisecond)
		refused, byLimit = 0, map[string]int64{}
		evs, _, err := db.ReadLastEvents(ctx, 100, postgres.ReadFilter{Types: []string{events.TypeDiscoveryRefused}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if err := validator.Validate(e.Event); err != nil || e.Subject != events.RackStreamName(machinetest.RackID) {
				t.Fatalf("discovery_refused on %s: %v", e.Subject, err)
			}
			var d events.DiscoveryRefused
			if err := e.DecodeData(&d); err != nil || d.RackID != machinetest.RackID || d.PerRackPerMinute != 5 || len(d.MACs) == 0 {
				t.Fatalf("discovery_refused %+v (%v)", d, err)
			}
			refused += d.Refused
			for k, v := range d.ByLimit {
				byLimit[k] += v
			}
		}
	}
	ms, err := machines.List(ctx, machine.Filter{})
	if err != nil || len(ms) != 5 || refused != 15 || byLimit[machine.LimitRackRate] != 15 {
		t.Fatalf("%d machines (%v), %d refused %v; want 5 and 15 by rack_rate", len(ms), err, refused, byLimit)
	}
	for name, want := range map[string]float64{"rackplane_region_machines_discovered_total": 5, "rackplane_region_discoveries_refused_total": 15} {
		if got := metrictest.Value(t, reg, name, nil); got != want {
			t.Errorf("%s %g, want %g", name, got, want)
		}
	}
}
