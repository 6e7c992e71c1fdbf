package journal

import (
	"testing"
	"time"
)

// TestOldestAgeLooksPastAnAcknowledgedSegment: a segment wholly
// acknowledged while an Append fills the next one stays until a later
// Ack; the age is then that of the record waiting in the next segment,
// not 0.
func TestOldestAgeLooksPastAnAcknowledgedSegment(t *testing.T) {
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	now := start
	j, err := Open(Config{Dir: t.TempDir(), MaxBytes: MinMaxBytes, SegmentBytes: minSegmentBytes,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// A record of the largest size fills a segment of the smallest: the
	// next record starts another.
	if _, err := j.Append([][]byte{make([]byte, MaxRecord)}); err != nil {
		t.Fatal(err)
	}
	rs, err := j.Read(1)
	if err != nil || len(rs) != 1 {
		t.Fatalf("read: %d records, %v", len(rs), err)
	}
	now = start.Add(time.Minute)
	j.beforeCommit = func() {
		if err := j.Ack(rs[0]); err != nil {
			t.Error(err)
		}
	}
	if n, err := j.Append([][]byte{[]byte("waiting")}); err != nil || n != 1 {
		t.Fatalf("append: %d, %v", n, err)
	}
	j.beforeCommit = nil
	if got := len(j.segs); got != 2 {
		t.Fatalf("%d segments, want the acknowledged one kept and the new one", got)
	}
	now = start.Add(3 * time.Minute)
	if got := j.Pending(); got != 1 {
		t.Errorf("Pending = %d, want 1", got)
	}
	if got, want := j.OldestAge(), 2*time.Minute; got != want {
		t.Errorf("OldestAge = %v, want %v (the record waiting in the second segment)", got, want)
	}
	rs, err = j.Read(10)
	if err != nil || len(rs) != 1 || string(rs[0].Data) != "waiting" {
		t.Fatalf("read after: %d records, %v", len(rs), err)
	}
}
