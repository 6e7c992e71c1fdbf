package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// appendFreshOIDs are the types of appendFreshSQL's parameters.
var appendFreshOIDs = []uint32{pgtype.UUIDArrayOID, pgtype.TextArrayOID, pgtype.TextArrayOID, pgtype.TextArrayOID,
	pgtype.TimestamptzArrayOID, pgtype.TextArrayOID, pgtype.TextArrayOID, pgtype.TextArrayOID, pgtype.TextArrayOID}

// TestAppendArraysArePgxs: the arrays appendFresh writes itself are, byte
// for byte, what pgx makes of the Go slices it sent before, for events
// with every kind of value an append can hold.
func TestAppendArraysArePgxs(t *testing.T) {
	loc := time.FixedZone("x", -7*3600-30*60)
	times := []time.Time{
		time.Date(2026, 11, 30, 19, 0, 0, 123456789, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC), // before the Unix epoch, nanoseconds
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, loc),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		{},
	}
	var evs []events.Event
	for i, tm := range times {
		evs = append(evs, events.Event{
			ID: []string{"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
				"00000000-0000-0000-0000-000000000000"}[i%3],
			Subject: "rack/é\x00\"\\{}", Type: "rackplane.rack.events_dropped.v1", Source: []string{"", "rackplane/rack/x"}[i%2],
			Time: tm, CorrelationID: []string{"", "c"}[i%2], CausationID: []string{"d", ""}[i%2], Actor: "a,b",
			Data: []json.RawMessage{json.RawMessage(`{"a":"\"x\""}`), nil, {}}[i%3],
		})
	}
	m := pgtype.NewMap()
	for n := 0; n <= len(evs); n++ {
		w := new(arrayWriter)
		got := appendFreshArrays(w, evs[:n])
		want := appendFreshSlices(evs[:n])
		if len(got) != len(want) {
			t.Fatalf("%d events: %d arrays, want %d", n, len(got), len(want))
		}
		// pgx sends the ids as text (it has no binary form of a string
		// for a uuid): their binary form is that of the UUIDs they are.
		ids := []pgtype.UUID{}
		for _, e := range evs[:n] {
			ids = append(ids, pgtype.UUID{Bytes: uuid.MustParse(e.ID), Valid: true})
		}
		want[0] = ids
		for i := range want {
			wb, err := m.Encode(appendFreshOIDs[i], pgtype.BinaryFormatCode, want[i], nil)
			if err != nil {
				t.Fatalf("%d events: pgx encodes parameter %d: %v", n, i+1, err)
			}
			gb := got[i].(binArray)
			if gb.elem != elemOID(t, m, appendFreshOIDs[i]) {
				t.Errorf("%d events: parameter %d has element type %d", n, i+1, gb.elem)
			}
			if !bytes.Equal(gb.b, wb) {
				t.Errorf("%d events: parameter %d:\n got %x\nwant %x", n, i+1, gb.b, wb)
			}
		}
	}
	// An id not in the canonical form is left to PostgreSQL, which reads
	// some of them and refuses others: the slices are sent.
	for _, id := range []string{"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",
		"0193a1b2c3d47e5f8a9b0c1d2e3f4a5b", "{0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}", "0193a1b2xc3d4x7e5fx8a9bx0c1d2e3f4a5b",
		"0193-a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", ""} {
		bad := evs[0]
		bad.ID = id
		if got := appendFreshArrays(new(arrayWriter), []events.Event{evs[0], bad}); got != nil {
			t.Errorf("id %q written as %v", id, got)
		}
	}
}

func elemOID(t *testing.T, m *pgtype.Map, arrayOID uint32) uint32 {
	typ, ok := m.TypeForOID(arrayOID)
	if !ok {
		t.Fatalf("no type %d", arrayOID)
	}
	return typ.Codec.(*pgtype.ArrayCodec).ElementType.OID
}

func BenchmarkAppendArrays(b *testing.B) {
	evs := make([]events.Event, 500)
	for i := range evs {
		evs[i] = events.Event{ID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Subject: "rack/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
			Type: "rackplane.rack.events_dropped.v1", Source: "rackplane/rack/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
			Time: time.Now(), Data: json.RawMessage(`{"count":1,"since":"2026-11-30T18:00:00.123456Z"}`)}
	}
	m := pgtype.NewMap()
	b.Run("pgx", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = buf[:0]
			for i, a := range appendFreshSlices(evs) {
				// As pgx does: binary, else text (the ids).
				out, err := m.Encode(appendFreshOIDs[i], pgtype.BinaryFormatCode, a, buf)
				if err != nil {
					out, err = m.Encode(appendFreshOIDs[i], pgtype.TextFormatCode, a, buf)
				}
				if err != nil {
					b.Fatal(err)
				}
				buf = out
			}
		}
	})
	b.Run("writer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w := arrayWriters.Get().(*arrayWriter)
			if appendFreshArrays(w, evs) == nil {
				b.Fatal("not written")
			}
			w.release()
		}
	})
}

// TestUseBinArrays: a connection that describes its statements sends
// binArrays in binary, for every type appendFreshSQL's take; the others
// send the slices.
func TestUseBinArrays(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	for mode, want := range map[pgx.QueryExecMode]bool{pgx.QueryExecModeCacheStatement: true, pgx.QueryExecModeCacheDescribe: true,
		pgx.QueryExecModeDescribeExec: true, pgx.QueryExecModeExec: false, pgx.QueryExecModeSimpleProtocol: false} {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if got := useBinArrays(c); got != want {
			t.Errorf("%v: useBinArrays %v", mode, got)
		}
		if !want {
			continue
		}
		m := c.TypeMap()
		for _, oid := range appendFreshOIDs {
			a := binArray{elem: elemOID(t, m, oid), b: []byte{1, 2}}
			got, err := m.Encode(oid, m.FormatCodeForOID(oid), a, nil)
			if m.FormatCodeForOID(oid) != pgtype.BinaryFormatCode || err != nil || !bytes.Equal(got, a.b) {
				t.Errorf("%v: array of %d sent in format %d as %x, %v", mode, a.elem, m.FormatCodeForOID(oid), got, err)
			}
		}
		if !useBinArrays(c) || len(m.TryWrapEncodePlanFuncs) != len(pgtype.NewMap().TryWrapEncodePlanFuncs)+1 {
			t.Errorf("%v: binArrays made known to pgx again", mode)
		}
	}
}
