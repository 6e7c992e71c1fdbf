package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Default waits of a Policy whose fields are zero.
const (
	DefaultInitial = 100 * time.Millisecond
	DefaultMax     = 5 * time.Second
)

// Jitter is the fraction of each wait taken off at random: a wait of d
// lasts between (1-Jitter)·d and d, so no wait is longer than the policy
// says.
const Jitter = 0.2

// Policy says how long to wait between tries.
type Policy struct {
	// Initial is the first wait (DefaultInitial when zero).
	Initial time.Duration
	// Max caps the wait, which doubles after each failure (DefaultMax
	// when zero; Initial when smaller, which makes every wait the same).
	Max time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.Initial <= 0 {
		p.Initial = DefaultInitial
	}
	if p.Max <= 0 {
		p.Max = DefaultMax
	}
	p.Max = max(p.Max, p.Initial)
	return p
}

// Backoff is the state of one retry loop. It is not safe for concurrent
// use: each loop has its own.
type Backoff struct {
	policy Policy
	next   time.Duration
	// random returns a number in [0, 1); tests fix it.
	random func() float64
}

// New returns a backoff whose first wait is p.Initial.
func New(p Policy) *Backoff {
	p = p.withDefaults()
	return &Backoff{policy: p, next: p.Initial, random: rand.Float64}
}

// Next returns the wait before the next try and doubles the one after, up
// to the cap.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.policy.Max)
	return d - time.Duration(Jitter*b.random()*float64(d))
}

// Reset makes the next wait the initial one again, after a success.
func (b *Backoff) Reset() { b.next = b.policy.Initial }

// Wait sleeps for Next, and reports false when ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits d, and reports false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Retry calls f until it returns nil, waiting as p says between calls.
// failed, when not nil, is told each error and the wait that follows it,
// to log them. Retry returns nil once f succeeded, or ctx's error when ctx
// ended first.
func Retry(ctx context.Context, p Policy, f func(context.Context) error, failed func(err error, wait time.Duration)) error {
	b := New(p)
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := b.Next()
		if failed != nil {
			failed(err, wait)
		}
		if !Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}
