package journal_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/internal/journal"
	"github.com/rackplane/rackplane/internal/metrictest"
)

func open(t testing.TB, dir string, maxBytes, segBytes int64) *journal.Journal {
	t.Helper()
	j, err := journal.Open(journal.Config{Dir: dir, MaxBytes: maxBytes, SegmentBytes: segBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func records(from, n int) [][]byte {
	var out [][]byte
	for i := from; i < from+n; i++ {
		out = append(out, []byte(fmt.Sprintf("record %06d", i)))
	}
	return out
}

// readAll reads every pending record, acknowledging ack of them.
func readAll(t *testing.T, j *journal.Journal) []string {
	t.Helper()
	rs, err := j.Read(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, string(r.Data))
	}
	return out
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	return m
}

// TestJournalKeepsWhatIsNotAcknowledged: records come back in order across
// segments and reopenings until acknowledged; acknowledged segments go.
func TestJournalKeepsWhatIsNotAcknowledged(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, 64<<20, 2<<20) // small segments: several in play
	for i := 0; i < 10; i++ {
		// Records of ~100 KiB fill a 2 MiB segment in about 20.
		var group [][]byte
		for k := 0; k < 10; k++ {
			group = append(group, append([]byte(fmt.Sprintf("%03d|", i*10+k)), make([]byte, 100<<10)...))
		}
		if n, err := j.Append(group); err != nil || n != 10 {
			t.Fatalf("append: %d, %v", n, err)
		}
	}
	if len(segments(t, dir)) < 4 {
		t.Fatalf("%d segments for 10 MiB in 2 MiB segments", len(segments(t, dir)))
	}
	rs, err := j.Read(30)
	if err != nil || len(rs) != 30 {
		t.Fatalf("read 30: %d, %v", len(rs), err)
	}
	if err := j.Ack(rs[29]); err != nil {
		t.Fatal(err)
	}
	j.Close()

	j = open(t, dir, 64<<20, 2<<20)
	if j.Pending() != 70 {
		t.Fatalf("after reopening, %d pending, want 70", j.Pending())
	}
	rs, err = j.Read(1000)
	if err != nil || len(rs) != 70 {
		t.Fatalf("read: %d, %v", len(rs), err)
	}
	for i, r := range rs {
		if want := fmt.Sprintf("%03d|", 30+i); string(r.Data[:4]) != want {
			t.Fatalf("record %d is %q, want %q", i, r.Data[:4], want)
		}
	}
	if err := j.Ack(rs[69]); err != nil {
		t.Fatal(err)
	}
	if j.Pending() != 0 || j.Bytes() != 0 || len(segments(t, dir)) != 0 {
		t.Fatalf("all acknowledged: %d pending, %d bytes, segments %v", j.Pending(), j.Bytes(), segments(t, dir))
	}
	if _, err := j.Append(records(0, 3)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, j); len(got) != 3 || got[0] != "record 000000" {
		t.Fatalf("after emptying, got %q", got)
	}
}

// writeThenGarbage writes n records to a journal in dir, closes it, and
// appends garbage to its last segment, as a crash in mid-write leaves it.
func writeThenGarbage(t testing.TB, dir string, n int, garbage []byte) {
	t.Helper()
	j := open(t, dir, 1<<30, 0)
	if _, err := j.Append(records(0, n)); err != nil {
		t.Fatal(err)
	}
	j.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(garbage); err != nil {
		t.Fatal(err)
	}
}

// TestJournalCutsATornTail writes garbage at the end of the last segment,
// as a crash in mid-write leaves it: Open counts it, cuts it off, keeps
// the records before it, and appends after them.
func TestJournalCutsATornTail(t *testing.T) {
	tests := []struct {
		name    string
		garbage []byte
	}{
		{"half a header", []byte{0x20, 0, 0}},
		{"a header promising more than there is", []byte{0x40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"a whole record with a bad CRC", []byte{9, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 'x'}},
		{"an absurd length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeThenGarbage(t, dir, 100, tt.garbage)
			j := open(t, dir, 1<<30, 0)
			got := readAll(t, j)
			if len(got) != 100 || got[99] != "record 000099" {
				t.Fatalf("after the torn tail: %d records, last %q; want all 100", len(got), got[len(got)-1])
			}
			if _, err := j.Append(records(100, 1)); err != nil {
				t.Fatal(err)
			}
			j.Close()
			j = open(t, dir, 1<<30, 0)
			if got := readAll(t, j); len(got) != 101 || got[100] != "record 000100" {
				t.Fatalf("appending after the cut: %d records, last %q", len(got), got[len(got)-1])
			}
		})
	}
}

// TestJournalCapStoresWhatFits: beyond MaxBytes an Append stores only the
// records that fit and says how many; acknowledging frees the space.
func TestJournalCapStoresWhatFits(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, 4<<20, 1<<20)
	rec := make([]byte, 1000)
	stored := 0
	for i := 0; i < 10; i++ {
		group := make([][]byte, 1000)
		for k := range group {
			group[k] = rec
		}
		n, err := j.Append(group)
		if err != nil {
			t.Fatal(err)
		}
		stored += n
	}
	if stored == 0 || stored >= 10000 || j.Bytes() > 4<<20 {
		t.Fatalf("stored %d of 10000 records of 1000 bytes in %d bytes under a 4 MiB cap", stored, j.Bytes())
	}
	if j.Pending() != stored {
		t.Fatalf("%d pending, %d stored", j.Pending(), stored)
	}
	if n, _ := j.Append([][]byte{rec}); n != 0 {
		t.Fatal("a full journal took another record")
	}
	rs, err := j.Read(stored)
	if err != nil || len(rs) != stored {
		t.Fatalf("read %d, %v", len(rs), err)
	}
	if err := j.Ack(rs[len(rs)/2]); err != nil {
		t.Fatal(err)
	}
	if n, _ := j.Append([][]byte{rec}); n != 1 {
		t.Fatal("acknowledging half the records freed no space")
	}
}

// FuzzScan feeds arbitrary bytes as the tail of a segment: Open never
// panics, never returns a record that was not written, and keeps every
// record written before the garbage.
func FuzzScan(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{9, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 'x'})
	f.Add([]byte("RPJRNL01"))
	f.Fuzz(func(t *testing.T, garbage []byte) {
		dir := t.TempDir()
		writeThenGarbage(t, dir, 3, garbage)
		j, err := journal.Open(journal.Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		rs, err := j.Read(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		// Garbage may by chance be a valid record (the fuzzer can build
		// one); what comes first must be the three written.
		if len(rs) < 3 {
			t.Fatalf("%d records kept of 3", len(rs))
		}
		for i, r := range rs[:3] {
			if string(r.Data) != fmt.Sprintf("record %06d", i) {
				t.Fatalf("record %d is %q", i, r.Data)
			}
		}
	})
}

// TestJournalMetrics: the gauges say how much waits and since when, and
// the counter how many torn records were cut off.
func TestJournalMetrics(t *testing.T) {
	dir := t.TempDir()
	writeThenGarbage(t, dir, 3, []byte{1, 2, 3})
	reg := prometheus.NewRegistry()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	j, err := journal.Open(journal.Config{Dir: dir, Registerer: reg, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Append(records(3, 2)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(90 * time.Second)
	rs, err := j.Read(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Ack(rs[2]); err != nil { // the three of the torn journal
		t.Fatal(err)
	}
	tests := []struct {
		metric string
		want   float64
	}{
		{"rackplane_journal_corrupt_records_total", 1},
		{"rackplane_journal_records_pending", 2},
		{"rackplane_journal_oldest_pending_age_seconds", 90},
		{"rackplane_journal_bytes", float64(j.Bytes())},
	}
	for _, tt := range tests {
		if got := metrictest.Value(t, reg, tt.metric, nil); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.metric, got, tt.want)
		}
	}
	if j.Bytes() == 0 {
		t.Error("journal with records pending takes no bytes")
	}
}

// TestJournalIsOneProcessAtATime: a second Open of a journal in use fails and
// says so, leaving the first one's records alone.
func TestJournalIsOneProcessAtATime(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, 0, 0)
	if _, err := j.Append(records(0, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := journal.Open(journal.Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open of a journal in use: %v", err)
	}
	j.Close()
	if got := readAll(t, open(t, dir, 0, 0)); len(got) != 1 {
		t.Fatalf("after the refused Open, %d records, want 1", len(got))
	}
}

// TestConfigValidate: Validate judges the settings as Open uses them,
// defaults included, names each bad one once, and leaves c as it is.
func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  journal.Config
		want []string // each in the message exactly once; none: valid
	}{
		{"defaults", journal.Config{Dir: dir}, nil},
		{"segment of the default cap", journal.Config{Dir: dir, SegmentBytes: journal.DefaultMaxBytes / 4}, nil},
		{"no directory", journal.Config{}, []string{"journal directory is empty"}},
		{"segment over a quarter of the default cap", journal.Config{Dir: dir, SegmentBytes: journal.DefaultMaxBytes/4 + 1}, []string{"at most a quarter of the cap"}},
		{"segment over a quarter of the cap", journal.Config{Dir: dir, MaxBytes: 64 << 20, SegmentBytes: 32 << 20}, []string{"at most a quarter of the cap"}},
		{"segment below a record", journal.Config{Dir: dir, SegmentBytes: 1 << 10}, []string{"room for a record"}},
		{"negative segment", journal.Config{Dir: dir, SegmentBytes: -1}, []string{"room for a record"}},
		{"cap below four segments", journal.Config{Dir: dir, MaxBytes: 1 << 20}, []string{"size cap"}},
		{"negative cap", journal.Config{Dir: dir, MaxBytes: -1}, []string{"size cap"}},
		{"all at once", journal.Config{MaxBytes: 1 << 20, SegmentBytes: 1 << 20}, []string{"directory", "size cap", "quarter of the cap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.cfg
			err := tt.cfg.Validate()
			if tt.cfg.MaxBytes != before.MaxBytes || tt.cfg.SegmentBytes != before.SegmentBytes {
				t.Errorf("Validate changed the config: %+v, was %+v", tt.cfg, before)
			}
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", tt.cfg)
			}
			for _, w := range tt.want {
				if n := strings.Count(err.Error(), w); n != 1 {
					t.Errorf("%q %d times in %q, want once", w, n, err)
				}
			}
			if _, err := journal.Open(tt.cfg); err == nil {
				t.Errorf("Open accepted what Validate refused")
			}
		})
	}
}

// TestJournalMetricsTwiceOnARegistry: a second journal on the same
// registry is an error from Open, not a panic, and leaves the first
// journal's metrics registered.
func TestJournalMetricsTwiceOnARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	j, err := journal.Open(journal.Config{Dir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Append(records(0, 2)); err != nil {
		t.Fatal(err)
	}
	j2, err := journal.Open(journal.Config{Dir: t.TempDir(), Registerer: reg})
	if err == nil {
		j2.Close()
		t.Fatal("second journal registered on the same registry")
	}
	if got := metrictest.Value(t, reg, "rackplane_journal_records_pending", nil); got != 2 {
		t.Errorf("rackplane_journal_records_pending = %v after the refused Open, want 2", got)
	}
}
