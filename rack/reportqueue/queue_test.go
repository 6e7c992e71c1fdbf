package reportqueue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/rack/preseedcache"
	"github.com/rackplane/rackplane/rack/reportqueue"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// region stands for the region's end of the calls: it answers each with
// the error its script holds for that attempt, and records what it took.
type region struct {
	mu    sync.Mutex
	fail  map[string][]error // by report id, one per attempt
	taken []string
	tries int
}

func (r *region) deliver(_ context.Context, method string, req json.RawMessage) error {
	var body struct{ ID string }
	if err := json.Unmarshal(req, &body); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if errs := r.fail[body.ID]; len(errs) > 0 {
		r.fail[body.ID] = errs[1:]
		if errs[0] != nil {
			return errs[0]
		}
	}
	r.taken = append(r.taken, method+":"+body.ID)
	return nil
}

func (r *region) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.taken...)
}

func openQueue(t *testing.T, dir string, r *region, reg prometheus.Registerer) *reportqueue.Queue {
	t.Helper()
	q, err := reportqueue.Open(reportqueue.Config{DataDir: dir, Backoff: backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}},
		r.deliver, quiet, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func appendN(t *testing.T, q *reportqueue.Queue, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := q.Append("install_status", id, map[string]string{"id": id}); err != nil {
			t.Fatal(err)
		}
	}
}

// drain runs q until nothing is pending.
func drain(t *testing.T, q *reportqueue.Queue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for q.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := q.Pending(); n > 0 {
		t.Fatalf("%d calls still pending", n)
	}
}

func TestDeliveredInOrderAcrossRestartsAndRetries(t *testing.T) {
	dir := t.TempDir()
	away := rackplane.Errorf(rackplane.EUNAVAILABLE, "nobody answers")
	r := &region{fail: map[string][]error{"1": {away, away, away}, "2": {away}}}
	appendN(t, openQueue(t, dir, r, nil), "1", "2")
	// A restarted rack has them still.
	q := openQueue(t, dir, r, nil)
	appendN(t, q, "3")
	if n := q.Pending(); n != 3 {
		t.Fatalf("pending after restart: %d", n)
	}
	drain(t, q)
	if got, want := fmt.Sprint(r.got()), "[install_status:1 install_status:2 install_status:3]"; got != want {
		t.Fatalf("delivered %s, want %s", got, want)
	}
	if q2 := openQueue(t, dir, r, nil); q2.Pending() != 0 {
		t.Fatalf("delivered calls still on disk: %d", q2.Pending())
	}
}

func TestRefusedCallsAreDroppedAndCounted(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		dropped float64
	}{
		{"invalid", rackplane.Errorf(rackplane.EINVALID, "bad"), 1},
		{"forbidden", rackplane.Errorf(rackplane.EFORBIDDEN, "wrong token"), 1},
		{"not found", rackplane.Errorf(rackplane.ENOTFOUND, "no deployment"), 1},
		{"conflict", rackplane.Errorf(rackplane.ECONFLICT, "too late"), 1},
		{"timeout is retried", rackplane.Errorf(rackplane.ETIMEOUT, "slow"), 0},
		{"internal is retried", errors.New("boom"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			r := &region{fail: map[string][]error{"bad": {tt.err}}}
			q := openQueue(t, t.TempDir(), r, reg)
			appendN(t, q, "bad", "good")
			drain(t, q)
			want := "[install_status:good]"
			if tt.dropped == 0 {
				want = "[install_status:bad install_status:good]"
			}
			if got := fmt.Sprint(r.got()); got != want {
				t.Fatalf("delivered %s, want %s", got, want)
			}
			if d := testutil.ToFloat64(mustCounter(t, reg, "rackplane_queued_region_calls_dropped_total")); d != tt.dropped {
				t.Fatalf("dropped counter %g, want %g", d, tt.dropped)
			}
			if d := testutil.ToFloat64(mustCounter(t, reg, "rackplane_queued_region_calls_delivered_total")); d != 2-tt.dropped {
				t.Fatalf("delivered counter %g", d)
			}
		})
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(sum)
	return c
}

// TestTornTail stands for a crash in the middle of an append: the file ends
// in part of a record, or in a record whose bytes were not all written.
// The intact records before it are kept, in order, and the tail is cut
// off, so appends after it are read back too.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	r := &region{}
	q := openQueue(t, dir, r, nil)
	appendN(t, q, "1", "2", "3")
	q.Close()
	path := filepath.Join(dir, reportqueue.File)
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	calls, n, err := reportqueue.ReadRecords(bytes.NewReader(whole))
	if err != nil || len(calls) != 3 || n != int64(len(whole)) {
		t.Fatalf("intact file: %d calls, %d of %d bytes, %v", len(calls), n, len(whole), err)
	}
	// Where the third record starts: the second's end.
	_, twoLen, _ := reportqueue.ReadRecords(bytes.NewReader(whole[:len(whole)-1]))
	tests := []struct {
		name string
		data []byte
	}{
		{"header cut short", whole[:twoLen+3]},
		{"payload cut short", whole[:len(whole)-1]},
		{"payload garbled", append(append([]byte(nil), whole[:len(whole)-2]...), whole[len(whole)-2]^0xff, whole[len(whole)-1])},
		{"zeros after a crash", append(append([]byte(nil), whole[:twoLen]...), make([]byte, 64)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, reportqueue.File), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := reportqueue.ReadRecords(bytes.NewReader(tt.data))
			if !errors.Is(err, reportqueue.ErrTorn) {
				t.Fatalf("torn tail not detected: %v", err)
			}
			reg := prometheus.NewRegistry()
			r := &region{}
			q := openQueue(t, dir, r, reg)
			if got := testutil.ToFloat64(mustCounter(t, reg, "rackplane_queued_region_calls_torn_total")); got != 1 {
				t.Fatalf("torn counter %g", got)
			}
			appendN(t, q, "4")
			q.Close()
			fi, _ := os.Stat(filepath.Join(dir, reportqueue.File))
			if fi.Size() <= twoLen {
				t.Fatalf("file of %d bytes after the append", fi.Size())
			}
			q = openQueue(t, dir, r, nil)
			drain(t, q)
			if got, want := fmt.Sprint(r.got()), "[install_status:1 install_status:2 install_status:4]"; got != want {
				t.Fatalf("delivered %s, want %s", got, want)
			}
		})
	}
}

func FuzzReadRecords(f *testing.F) {
	dir := f.TempDir()
	q, err := reportqueue.Open(reportqueue.Config{DataDir: dir}, nil, quiet, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, id := range []string{"1", "2"} {
		if err := q.Append("install_status", id, map[string]string{"id": id, "token": "t"}); err != nil {
			f.Fatal(err)
		}
	}
	q.Close()
	whole, err := os.ReadFile(filepath.Join(dir, reportqueue.File))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(whole)
	f.Add(whole[:len(whole)-3])
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 'x'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		calls, n, err := reportqueue.ReadRecords(bytes.NewReader(data))
		if n < 0 || n > int64(len(data)) {
			t.Fatalf("good prefix %d of %d bytes", n, len(data))
		}
		if err == nil && n != int64(len(data)) {
			t.Fatalf("no error but only %d of %d bytes read", n, len(data))
		}
		if err != nil && !errors.Is(err, reportqueue.ErrTorn) {
			t.Fatalf("error that is not ErrTorn from a byte slice: %v", err)
		}
		// The good prefix reads back to the same calls, cleanly.
		again, m, err2 := reportqueue.ReadRecords(bytes.NewReader(data[:n]))
		if err2 != nil || m != n || len(again) != len(calls) {
			t.Fatalf("the good prefix reads back as %d calls, %d bytes, %v; want %d calls, %d bytes", len(again), m, err2, len(calls), n)
		}
		for _, c := range calls {
			if c.Method == "" {
				t.Fatalf("a call with no method: %+v", c)
			}
		}
	})
}

// TestCompaction: calls made are marked in the head file, not cut out of
// the queue file one by one; once they fill more than half of it the file
// is rewritten with only the pending ones, and a restart at any point
// makes each call once, in order.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	away := rackplane.Errorf(rackplane.EUNAVAILABLE, "nobody answers")
	r := &region{fail: map[string][]error{"7": make([]error, 1000)}}
	for i := range r.fail["7"] {
		r.fail["7"][i] = away
	}
	cfg := reportqueue.Config{DataDir: dir, CompactAfter: 1, Backoff: backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}}
	q, err := reportqueue.Open(cfg, r.deliver, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, "1", "2", "3", "4", "5", "6", "7", "8", "9", "10")
	records := func() []string {
		t.Helper()
		f, err := os.Open(filepath.Join(dir, reportqueue.File))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		calls, _, err := reportqueue.ReadRecords(f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range calls {
			ids = append(ids, c.Key)
		}
		return ids
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	for i := 0; i < 3000 && q.Pending() > 4; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := q.Pending(); n != 4 {
		t.Fatalf("%d pending, want 4", n)
	}
	// Compacted once the calls made fill more than half of the file:
	// after the 6th, or after the 5th when the first five records are a
	// few bytes longer than the last five (their times' digits vary).
	// After the 5th, the 6th is then the one made call the new file holds,
	// too few to compact it again.
	if got := fmt.Sprint(records()); got != "[7 8 9 10]" && got != "[6 7 8 9 10]" {
		t.Fatalf("the queue file holds %s after 6 of 10 calls were made, want [7 8 9 10] (or [6 7 8 9 10])", got)
	}
	// Appends after the compaction go to the new file.
	appendN(t, q, "11")
	q.Close()

	r.fail = nil
	q2 := openQueue(t, dir, r, nil)
	drain(t, q2)
	if got, want := fmt.Sprint(r.got()), "[install_status:1 install_status:2 install_status:3 install_status:4 install_status:5 install_status:6 install_status:7 install_status:8 install_status:9 install_status:10 install_status:11]"; got != want {
		t.Fatalf("delivered %s, want %s", got, want)
	}
	if q3 := openQueue(t, dir, r, nil); q3.Pending() != 0 {
		t.Fatalf("%d calls made again after a restart", q3.Pending())
	}
}

func TestMaxPerKey(t *testing.T) {
	q, err := reportqueue.Open(reportqueue.Config{DataDir: t.TempDir(), MaxPerKey: 2}, (&region{}).deliver, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, tt := range []struct {
		key  string
		want string
	}{
		{"a", ""}, {"a", ""}, {"a", rackplane.EUNAVAILABLE}, {"b", ""},
	} {
		if err := q.Append("install_status", tt.key, map[string]string{"id": tt.key}); rackplane.ErrorCode(err) != tt.want {
			t.Fatalf("append for %s: %v, want code %q", tt.key, err, tt.want)
		}
	}
	drain(t, q)
	if err := q.Append("install_status", "a", map[string]string{"id": "a"}); err != nil {
		t.Fatalf("append for a once its calls were made: %v", err)
	}
}

// TestSealedAtRest: a queued report's token is not in the file in clear;
// a call that does not open with the rack's key is dropped and counted.
func TestSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	store, err := preseedcache.Open(preseedcache.Config{DataDir: dir}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &region{}
	open := func(s reportqueue.Sealer, reg prometheus.Registerer) *reportqueue.Queue {
		q, err := reportqueue.Open(reportqueue.Config{DataDir: dir, Sealer: s}, r.deliver, quiet, reg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
	q := open(store, nil)
	if err := q.Append("install_status", "m", map[string]string{"id": "1", "token": "secret-token-1"}); err != nil {
		t.Fatal(err)
	}
	q.Close()
	raw, err := os.ReadFile(filepath.Join(dir, reportqueue.File))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("secret-token")) {
		t.Fatalf("the queue file holds the token in clear: %q", raw)
	}
	drain(t, open(store, nil))
	if got := fmt.Sprint(r.got()); got != "[install_status:1]" {
		t.Fatalf("delivered %s", got)
	}

	q = open(store, nil)
	if err := q.Append("install_status", "m", map[string]string{"id": "2"}); err != nil {
		t.Fatal(err)
	}
	q.Close()
	other, err := preseedcache.Open(preseedcache.Config{DataDir: t.TempDir()}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if q := open(other, reg); q.Pending() != 0 {
		t.Fatalf("a call sealed under another key is pending")
	}
	if d := testutil.ToFloat64(mustCounter(t, reg, "rackplane_queued_region_calls_dropped_total")); d != 1 {
		t.Fatalf("dropped counter %g, want 1", d)
	}
}

// TestOpenAgain: an Open that fails can be tried again with the same
// registry, and a bad config is told once, every bad setting named.
func TestOpenAgain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if _, err := reportqueue.Open(reportqueue.Config{DataDir: dir}, nil, quiet, reg); err == nil {
		t.Fatal("opened with a file as the data directory")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	q, err := reportqueue.Open(reportqueue.Config{DataDir: dir}, nil, quiet, reg)
	if err != nil {
		t.Fatalf("open again with the same registry: %v", err)
	}
	q.Close()

	err = reportqueue.Config{MaxPending: -1}.Validate()
	for _, want := range []string{"DataDir is required", "MaxPending -1"} {
		if n := strings.Count(fmt.Sprint(err), want); n != 1 {
			t.Errorf("%q told %d times in %q", want, n, err)
		}
	}
}
