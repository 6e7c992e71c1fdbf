// Package machinetest sets up what tests of the machine lifecycle and its
// callers need: a migrated database in which a rack is online and can
// boot one image.
package machinetest

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/postgres"
)

// The rack and the image Database sets up.
const (
	RackID         = "0190f0e0-0000-7000-8000-0000000000aa"
	RackName       = "r1"
	BootURL        = "http://10.0.0.1:5248"
	ImageVersionID = "ubuntu/amd64/generic/noble/stable/1"
	// EnvironmentVersionID is the ephemeral environment the rack has,
	// which commissioning boots.
	EnvironmentVersionID = "rackplane/amd64/ga/ephemeral/stable/1"
)

// Database returns a migrated database of its own for t in which rack
// RackID registered, is online and reports ubuntu/noble/amd64 (image
// ImageVersionID, files linux and initrd) and the ephemeral environment
// (EnvironmentVersionID, files vmlinuz and initrd.img), made the way the region makes
// them: from the rack's events.
func Database(t testing.TB) *postgres.DB {
	t.Helper()
	ctx := context.Background()
	db := postgres.New(pgtest.NewPool(t), slog.New(slog.DiscardHandler))
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src := events.RackSource(RackID)
	stream := events.RackStreamName(RackID)
	reg, _ := events.New(src, events.TypeRackRegistered, stream, now, events.RackRegistered{
		Name: RackName, Version: "test", BootURL: BootURL, StartedAt: now})
	online, _ := events.New(events.RegionSource, events.TypeRackOnline, stream, now, events.RackLiveness{RackID: RackID})
	file := func(name, c string) events.ImageFile {
		return events.ImageFile{Name: name, SHA256: strings.Repeat(c, 64), Size: 1}
	}
	caps, _ := events.New(src, events.TypeCapabilitiesReported, stream, now, events.Capabilities{
		OSes: []events.OS{{Name: "ubuntu", Releases: []events.Release{{Name: "noble", Arches: []events.Arch{{
			Arch: "amd64", Subarch: "generic", Versions: []events.ImageVersion{{ID: ImageVersionID, Label: "stable", Version: "1",
				Files: []events.ImageFile{file("linux", "a"), file("initrd", "b")}}}}}}}},
			{Name: "rackplane", Releases: []events.Release{{Name: "ephemeral", Arches: []events.Arch{{
				Arch: "amd64", Subarch: "ga", Versions: []events.ImageVersion{{ID: EnvironmentVersionID, Label: "stable", Version: "1",
					Files: []events.ImageFile{file("vmlinuz", "c"), file("initrd.img", "d")}}}}}}}}}})
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.AppendAny(ctx, tx, []events.Event{reg, online, caps})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}
