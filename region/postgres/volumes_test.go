package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestVolumesProjection appends a volume's events in the orders they can
// arrive in: the rack publishes its outcome before it answers, and the
// region records its request after the answer, so either may be first.
func TestVolumesProjection(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	rackA, rackB, machine := uuid.NewString(), uuid.NewString(), uuid.NewString()

	requested := func(vid, rackID string) events.Event {
		e, err := events.New(events.RegionSource, events.TypeVolumeRequested, events.VolumeStreamName(vid), time.Now(),
			events.VolumeRequested{VolumeID: vid, MachineID: machine, RackID: rackID, Provider: "loop", SizeMiB: 8,
				Parameters: map[string]string{"dir": "/srv/volumes"}})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	outcome := func(vid, rackID string, d events.VolumeActionCompleted) events.Event {
		d.VolumeID, d.VolumeName, d.Machine, d.Provider = vid, "rp-"+vid+"-m", machine, "loop"
		d.StartedAt = time.Now().UTC()
		e, err := events.New(events.RackSource(rackID), events.TypeVolumeActionCompleted, events.VolumeStreamName(vid), time.Now(), d)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	created := events.VolumeActionCompleted{Action: "create", OK: true, State: "created", SizeMiB: 8}
	attached := events.VolumeActionCompleted{Action: "attach", OK: true, State: "attached", SizeMiB: 8,
		Device: "/dev/loop7", URIs: []string{"file:///srv/volumes/x.img"}}
	failed := events.VolumeActionCompleted{Action: "create", OK: false, State: "unknown", ErrorCode: "unavailable",
		Error: "storage provider loop: create failed: exit status 1", OutputTail: []string{"truncate: cannot open"}}
	snapshot := func(name string, ok bool) events.VolumeActionCompleted {
		d := events.VolumeActionCompleted{Action: "snapshot", OK: ok, State: "created", SizeMiB: 8, SnapshotName: name}
		if !ok {
			d.ErrorCode, d.Error = "unavailable", "storage provider loop: snapshot failed: exit status 1"
		}
		return d
	}
	opened := attached
	opened.Action, opened.Open, opened.OpenExclusive = "open", true, true
	closed := attached
	closed.Action = "close"

	tests := []struct {
		name string
		evs  func(vid string) []events.Event
		want string // state device params last_ok tail open snapshots
	}{
		{"request, then outcome", func(vid string) []events.Event {
			return []events.Event{requested(vid, rackA), outcome(vid, rackA, created)}
		}, "created - /srv/volumes true - - -"},
		{"outcome, then request", func(vid string) []events.Event {
			return []events.Event{outcome(vid, rackA, created), requested(vid, rackA)}
		}, "created - /srv/volumes true - - -"},
		{"a late request changes no state", func(vid string) []events.Event {
			return []events.Event{outcome(vid, rackA, created), outcome(vid, rackA, opened), requested(vid, rackA)}
		}, "attached /dev/loop7 /srv/volumes true - exclusive -"},
		{"another rack cannot take the volume over", func(vid string) []events.Event {
			return []events.Event{requested(vid, rackA), outcome(vid, rackA, created), outcome(vid, rackB, opened), outcome(vid, rackB, snapshot("b", true))}
		}, "created - /srv/volumes true - - -"},
		{"a failure alone is on record", func(vid string) []events.Event {
			return []events.Event{outcome(vid, rackA, failed)}
		}, "unknown - - false truncate: cannot open - -"},
		{"snapshots accumulate, failed ones do not", func(vid string) []events.Event {
			return []events.Event{requested(vid, rackA), outcome(vid, rackA, created), outcome(vid, rackA, snapshot("s1", true)),
				outcome(vid, rackA, snapshot("s2", false)), outcome(vid, rackA, snapshot("s3", true))}
		}, "created - /srv/volumes true - - s1,s3"},
		{"close ends open", func(vid string) []events.Event {
			return []events.Event{outcome(vid, rackA, created), outcome(vid, rackA, opened), outcome(vid, rackA, closed)}
		}, "attached /dev/loop7 - true - - -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vid := uuid.NewString()
			for _, e := range tt.evs(vid) {
				if err := v.Validate(e); err != nil {
					t.Fatalf("%s: %v", e.Type, err)
				}
				if e.Source == events.RegionSource {
					err = db.RequestVolume(ctx, e)
				} else {
					err = db.InTx(ctx, func(tx pgx.Tx) error {
						_, err := db.AppendAny(ctx, tx, []events.Event{e})
						return err
					})
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			got, err := db.GetVolume(ctx, vid)
			if err != nil {
				t.Fatal(err)
			}
			dash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			open := "-"
			switch {
			case got.Open && got.OpenExclusive:
				open = "exclusive"
			case got.Open:
				open = "shared"
			}
			var snaps []string
			for _, s := range got.Snapshots {
				snaps = append(snaps, s.Name)
				if s.TakenAt.IsZero() {
					t.Errorf("snapshot %s has no time", s.Name)
				}
			}
			line := strings.Join([]string{got.State, dash(got.Device), dash(got.Parameters["dir"]),
				map[bool]string{true: "true", false: "false"}[got.LastOK], dash(strings.Join(got.LastOutputTail, "|")),
				open, dash(strings.Join(snaps, ","))}, " ")
			if line != tt.want || got.RackID != rackA || got.MachineID != machine || got.Snapshots == nil {
				t.Fatalf("got %q (%+v), want %q on rack A", line, got, tt.want)
			}
		})
	}

	list, err := db.ListVolumes(ctx, machine, false)
	if err != nil || len(list) != len(tests) {
		t.Fatalf("list: %d volumes, %v", len(list), err)
	}

	// The log gives the same rows again, the optional actions' columns
	// included.
	before := dumpTable(t, db, "volumes")
	for _, w := range []string{`"open":true`, `"open_exclusive":true`, `"name": "s3"`, `"taken_at"`} {
		if !strings.Contains(before, w) {
			t.Fatalf("volumes table lacks %s: %s", w, before)
		}
	}
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	if after := dumpTable(t, db, "volumes"); after != before {
		t.Fatalf("volumes differ after rebuild:\nbefore %s\nafter  %s", before, after)
	}
}
