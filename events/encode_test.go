package events

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzEncodeIsMarshal: Encode writes what json.Marshal writes, and fails
// where it fails, whatever the event holds.
func FuzzEncodeIsMarshal(f *testing.F) {
	f.Add("1.0", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "rackplane/rack/x", "rackplane.rack.heartbeat.v1", "rack/x",
		int64(1764500000123456789), 0, "application/json", []byte(`{"a":[1,2.5,"b c",{"d":null}]}`), "c", "", "a", false)
	f.Add("1.0", "<&>", "é", "\u2028", "\"\\", int64(-6213559680000000000), 7*3600+1800, "", []byte(` { "a" : "<" } `), "", "x\x00", "", true)
	f.Add("", "", "", "", "", int64(0), -24*3600, "", []byte(`"\u2028\n"`), "", "", "", false)
	f.Add("", "", "", "", "", int64(9223372036854775807), 0, "", []byte(`{"a":"\\\""}`), "", "", "", false)
	f.Add("", "", "", "", "", int64(0), 0, "", []byte(`{"a":"\xe2\x80\xa8"}`), "", "", "", false)
	f.Fuzz(func(t *testing.T, spec, id, source, typ, subject string, unixNano int64, offset int, dct string, data []byte,
		corr, caus, actor string, nilData bool) {
		tm := time.Unix(0, unixNano).In(time.FixedZone("z", offset%(100*3600)))
		if unixNano%7 == 0 {
			tm = tm.UTC()
		}
		if unixNano%11 == 0 {
			// Years beyond what nanoseconds since 1970 reach.
			tm = tm.AddDate(int(unixNano%20000), 0, 0)
		}
		e := Event{SpecVersion: spec, ID: id, Source: source, Type: typ, Subject: subject, Time: tm,
			DataContentType: dct, Data: data, CorrelationID: corr, CausationID: caus, Actor: actor}
		if nilData {
			e.Data = nil
		}
		got, err := Encode(e)
		want, werr := json.Marshal(e)
		if (err == nil) != (werr == nil) {
			t.Fatalf("Encode %+v: error %v, json.Marshal's %v", e, err, werr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("Encode %+v:\n got %s\nwant %s", e, got, want)
		}
	})
}

// TestEncodeWritesEventsItself: the events the code makes take the fast
// way, which gives json.Marshal's bytes.
func TestEncodeWritesEventsItself(t *testing.T) {
	e, err := New(RackSource("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"), TypeEventsDropped, RackStreamName("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"),
		time.Now(), EventsDropped{Count: 3, Since: time.Now().UTC(), Types: map[string]int64{TypeBootTransfer: 3}})
	if err != nil {
		t.Fatal(err)
	}
	e = e.CausedBy(e)
	e.Actor = "rack"
	got, ok := appendEvent(nil, &e)
	want, _ := json.Marshal(e)
	if !ok || !bytes.Equal(got, want) {
		t.Fatalf("appendEvent = %s, %v; json.Marshal %s", got, ok, want)
	}
}

func BenchmarkEncode(b *testing.B) {
	e, err := New(RackSource("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"), TypeEventsDropped, RackStreamName("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"),
		time.Now(), EventsDropped{Count: 1, Since: time.Now().UTC()})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Encode(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
