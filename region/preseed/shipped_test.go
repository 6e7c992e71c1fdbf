package preseed_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/preseed"
)

// TestShippedDefaultsStayTheirRacks: a rack's shipped default becomes the
// current version of its name only over another version of the same rack;
// a second rack shipping other content under that name stores a version
// that is not current (a rack broken into cannot choose what machines
// install with).
func TestShippedDefaultsStayTheirRacks(t *testing.T) {
	ctx := context.Background()
	db := machinetest.Database(t)
	svc := preseed.NewService(db, nil, slog.New(slog.DiscardHandler))
	const rackA, rackB = "0190f0e0-0000-7000-8000-00000000000a", "0190f0e0-0000-7000-8000-00000000000b"
	ship := func(rack, content string) {
		t.Helper()
		p := events.ShippedPreseed{Name: "default", Scope: events.PreseedScope{Kind: "global"}, Content: content}
		if err := svc.StoreShipped(ctx, rack, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	current := func() (int64, int64) {
		t.Helper()
		p, err := svc.Get(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		return p.CurrentVersion, p.LatestVersion
	}
	for _, step := range []struct {
		what          string
		do            func()
		current, last int64
	}{
		{"rack A ships", func() { ship(rackA, "#a1\n") }, 1, 1},
		{"rack B ships other content", func() { ship(rackB, "#b1\n") }, 1, 2},
		{"rack B again", func() { ship(rackB, "#b1\n") }, 1, 2},
		{"rack A updates its own", func() { ship(rackA, "#a2\n") }, 3, 3},
		{"rack B changes its own, still not current", func() { ship(rackB, "#b2\n") }, 3, 4},
	} {
		step.do()
		if cur, last := current(); cur != step.current || last != step.last {
			t.Fatalf("%s: current %d, latest %d; want %d, %d", step.what, cur, last, step.current, step.last)
		}
	}
}
