package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// rackEventAt is an event of rack's with its time set to at.
func rackEventAt(t *testing.T, rack, typ string, at time.Time, data any) events.Event {
	t.Helper()
	e, err := events.New(events.RackSource(rack), typ, events.RackStreamName(rack), at, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestBootStatsBuckets: boot traffic is counted by the time it happened,
// in buckets of step from since, empty ones included; a machine that
// fetched its config twice in a minute is one boot, a chain loader's
// config none; summaries add their counts; what falls outside the window
// or is no boot traffic is not counted.
func TestBootStatsBuckets(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	rack := uuid.NewString()
	since := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return since.Add(d) }
	config := func(mac string) events.BootHandoff {
		return events.BootHandoff{Protocol: "tftp", FileName: "pxelinux.cfg/01-" + mac, Route: "config", MAC: mac, Purpose: "commission"}
	}
	transfer := func(bytes int64, errText string) events.BootTransfer {
		return events.BootTransfer{Protocol: "http", FileName: "linux", Route: "versioned", Bytes: bytes, Size: bytes, Error: errText}
	}
	mac1, mac2 := "52:54:00:00:00:01", "52:54:00:00:00:02"
	append1(t, db,
		registered(t, rack, "stats-rack"),
		// Minute 0: two machines boot, one asks for its config twice; a
		// chain config (no purpose) and a kernel are requests, no boots.
		rackEventAt(t, rack, events.TypeBootHandoff, at(5*time.Second), config(mac1)),
		rackEventAt(t, rack, events.TypeBootHandoff, at(20*time.Second), config(mac1)),
		rackEventAt(t, rack, events.TypeBootHandoff, at(30*time.Second), config(mac2)),
		rackEventAt(t, rack, events.TypeBootHandoff, at(31*time.Second),
			events.BootHandoff{Protocol: "tftp", FileName: "grub/grub.cfg", Route: "config"}),
		rackEventAt(t, rack, events.TypeBootHandoff, at(32*time.Second),
			events.BootHandoff{Protocol: "http", FileName: "linux", Route: "versioned"}),
		rackEventAt(t, rack, events.TypeBootTransfer, at(40*time.Second), transfer(1000, "")),
		rackEventAt(t, rack, events.TypeBootTransfer, at(59*time.Second), transfer(500, "timeout")),
		// Minute 1: nothing. Minute 2: a refused request and a summary.
		rackEventAt(t, rack, events.TypeBootRequestRejected, at(2*time.Minute),
			events.BootRequestRejected{Protocol: "tftp", Reason: "write_request"}),
		rackEventAt(t, rack, events.TypeBootRequestsSummarized, at(2*time.Minute+30*time.Second),
			events.BootRequestsSummarized{Since: at(time.Minute), Until: at(2 * time.Minute), Requests: 40, Transfers: 7, TransferErrors: 2,
				Sources: 3, ByOutcome: map[string]int64{"config": 5, "not_found": 35}}),
		// Outside the window: before since, and at until.
		rackEventAt(t, rack, events.TypeBootTransfer, at(-time.Second), transfer(1<<20, "")),
		rackEventAt(t, rack, events.TypeBootTransfer, at(3*time.Minute), transfer(1<<20, "")),
		// No boot traffic.
		rackEventAt(t, rack, events.TypeHandoffFileDeleted, at(10*time.Second), map[string]any{}),
	)

	for _, c := range []struct {
		name string
		step time.Duration
		want []postgres.BootBucket
	}{
		{"minutes", time.Minute, []postgres.BootBucket{
			{Start: at(0), Boots: 2, Requests: 5, Transfers: 2, TransferErrors: 1, Bytes: 1500},
			{Start: at(time.Minute)},
			{Start: at(2 * time.Minute), Boots: 5, Requests: 41, Transfers: 7, TransferErrors: 2},
		}},
		{"half minutes", 30 * time.Second, []postgres.BootBucket{
			{Start: at(0), Boots: 1, Requests: 2},
			{Start: at(30 * time.Second), Boots: 1, Requests: 3, Transfers: 2, TransferErrors: 1, Bytes: 1500},
			{Start: at(time.Minute)},
			{Start: at(90 * time.Second)},
			{Start: at(2 * time.Minute), Requests: 1},
			{Start: at(150 * time.Second), Boots: 5, Requests: 40, Transfers: 7, TransferErrors: 2},
		}},
		{"one bucket", 3 * time.Minute, []postgres.BootBucket{
			{Start: at(0), Boots: 7, Requests: 46, Transfers: 9, TransferErrors: 3, Bytes: 1500},
		}},
		{"a partial last bucket", 2 * time.Minute, []postgres.BootBucket{
			{Start: at(0), Boots: 2, Requests: 5, Transfers: 2, TransferErrors: 1, Bytes: 1500},
			{Start: at(2 * time.Minute), Boots: 5, Requests: 41, Transfers: 7, TransferErrors: 2},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := db.BootStats(ctx, since, at(3*time.Minute), c.step)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("%d buckets, want %d: %+v", len(got), len(c.want), got)
			}
			for i := range got {
				if !got[i].Start.Equal(c.want[i].Start) {
					t.Errorf("bucket %d starts %s, want %s", i, got[i].Start, c.want[i].Start)
				}
				g, w := got[i], c.want[i]
				g.Start, w.Start = time.Time{}, time.Time{}
				if g != w {
					t.Errorf("bucket %d (%s): %+v, want %+v", i, c.want[i].Start.Format("15:04:05"), g, w)
				}
			}
		})
	}

	for _, c := range []struct {
		name        string
		since, till time.Time
		step        time.Duration
	}{
		{"a step below 10s", since, at(time.Hour), 5 * time.Second},
		{"more than a day", since, at(25 * time.Hour), time.Hour},
		{"an empty window", since, since, time.Minute},
		{"too many buckets", since, at(24 * time.Hour), 10 * time.Second},
	} {
		if _, err := db.BootStats(ctx, c.since, c.till, c.step); rackplane.ErrorCode(err) != rackplane.EINVALID {
			t.Errorf("%s: %v, want EINVALID", c.name, err)
		}
	}
}

// TestBootStatsUsesTheTimeIndex: the query reads the window through
// events_telemetry_time, not the whole log. The table is tiny here, so
// the planner is told to avoid a sequential scan if it can: it can only
// when the query's predicates match the partial index.
func TestBootStatsUsesTheTimeIndex(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	var plan strings.Builder
	err := pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		since := time.Now().Add(-time.Hour)
		rows, err := tx.Query(ctx, `EXPLAIN `+postgres.BootStatsQuery, since, since.Add(time.Hour), 60.0, postgres.BootStatsTypes,
			events.TypeBootHandoff, events.TypeBootTransfer, events.TypeBootRequestRejected, events.TypeBootRequestsSummarized)
		if err != nil {
			return err
		}
		var line string
		_, err = pgx.ForEachRow(rows, []any{&line}, func() error { plan.WriteString(line + "\n"); return nil })
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan.String(), "events_telemetry_time") {
		t.Errorf("the plan does not use events_telemetry_time:\n%s", plan.String())
	}
}
