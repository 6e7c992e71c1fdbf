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
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/backoff"
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
		if err := q.Append("install_status", map[string]string{"id": id}); err != nil {
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
		if err := q.Append("install_status", map[string]string{"id": id, "token": "t"}); err != nil {
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
