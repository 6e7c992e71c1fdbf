package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name   string
		policy Policy
		random float64
		want   []time.Duration
	}{
		{"doubles up to the cap", Policy{Initial: 10 * ms, Max: 50 * ms}, 0,
			[]time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms}},
		{"defaults", Policy{}, 0,
			[]time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms}},
		{"initial equal to the cap is a steady wait", Policy{Initial: time.Second, Max: time.Second}, 0,
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"a cap below the initial wait is raised to it", Policy{Initial: time.Second, Max: ms}, 0,
			[]time.Duration{time.Second, time.Second}},
		{"jitter takes off at most its fraction", Policy{Initial: 100 * ms, Max: 400 * ms}, 1,
			[]time.Duration{80 * ms, 160 * ms, 320 * ms, 320 * ms}},
		{"half the jitter", Policy{Initial: 100 * ms, Max: 100 * ms}, 0.5,
			[]time.Duration{90 * ms, 90 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.policy)
			b.random = func() float64 { return tt.random }
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Fatalf("wait %d: %s, want %s", i, got, want)
				}
			}
		})
	}
}

func TestReset(t *testing.T) {
	b := New(Policy{Initial: time.Millisecond, Max: time.Second})
	b.random = func() float64 { return 0 }
	b.Next()
	b.Next()
	b.Reset()
	if got := b.Next(); got != time.Millisecond {
		t.Fatalf("after Reset: %s, want the initial 1ms", got)
	}
}

func TestSleep(t *testing.T) {
	tests := []struct {
		name    string
		cancel  bool
		d       time.Duration
		want    bool
		atLeast time.Duration
		atMost  time.Duration
	}{
		{"the whole wait", false, 20 * time.Millisecond, true, 20 * time.Millisecond, 10 * time.Second},
		{"cut short by the context", true, time.Hour, false, 0, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			start := time.Now()
			got := Sleep(ctx, tt.d)
			took := time.Since(start)
			if got != tt.want || took < tt.atLeast || took > tt.atMost {
				t.Fatalf("Sleep(%s) = %v after %s, want %v after %s to %s", tt.d, got, took, tt.want, tt.atLeast, tt.atMost)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	errDown := errors.New("server away")
	tests := []struct {
		name      string
		failures  int // calls that fail before one succeeds
		cancelAt  int // the call that cancels the context (0: none)
		wantErr   error
		wantCalls int
		wantWaits int
	}{
		{"succeeds at once", 0, 0, nil, 1, 0},
		{"succeeds after failures", 3, 0, nil, 4, 3},
		{"context ends during a call", 100, 2, context.Canceled, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			var waits []time.Duration
			err := Retry(ctx, Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond}, func(context.Context) error {
				calls++
				if calls == tt.cancelAt {
					cancel()
				}
				if calls <= tt.failures {
					return errDown
				}
				return nil
			}, func(err error, wait time.Duration) {
				if !errors.Is(err, errDown) {
					t.Errorf("failed was told %v", err)
				}
				waits = append(waits, wait)
			})
			if !errors.Is(err, tt.wantErr) || calls != tt.wantCalls || len(waits) != tt.wantWaits {
				t.Fatalf("Retry: %v after %d calls and waits %v; want %v after %d calls and %d waits",
					err, calls, waits, tt.wantErr, tt.wantCalls, tt.wantWaits)
			}
			for _, w := range waits {
				if w > 2*time.Millisecond {
					t.Fatalf("wait %s is over the cap", w)
				}
			}
		})
	}
}
