package handoff

import (
	"sync"
	"time"
)

// maxWaiting bounds the unknown MACs tracked: config requests name any
// MAC their sender likes, and the table must not grow with them. When it
// is full of MACs still in their wait, a new MAC is not tracked and boots
// locally at once (it commissions on its next boot): a flood of made-up
// MACs then costs real machines nothing they were already waiting for.
const maxWaiting = 4096

// waiting remembers when each unknown MAC first asked for its config, so
// that iPXE on it asks again for a while (the region makes a machine of
// it as it asks, and may decide its boot within moments) and then boots
// locally. A MAC that asks again long after its wait ended waits afresh:
// that is a new boot of a machine still unknown.
type waiting struct {
	wait time.Duration
	mu   sync.Mutex
	// since is when each MAC's current wait began.
	since map[string]time.Time
}

func newWaiting(wait time.Duration) *waiting {
	return &waiting{wait: wait, since: map[string]time.Time{}}
}

// ask reports whether mac, unknown at now, is to ask again rather than
// boot locally.
func (w *waiting) ask(mac string, now time.Time) bool {
	if w.wait <= 0 || mac == "" {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// A wait ended more than a wait ago is a boot of its own.
	forget := 2*w.wait + time.Minute
	began, ok := w.since[mac]
	if ok && now.Sub(began) <= forget {
		return now.Sub(began) < w.wait
	}
	if !ok && len(w.since) >= maxWaiting {
		for m, t := range w.since {
			if now.Sub(t) > forget {
				delete(w.since, m)
			}
		}
		if len(w.since) >= maxWaiting {
			return false
		}
	}
	w.since[mac] = now
	return true
}

// tracked is how many MACs the table holds.
func (w *waiting) tracked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.since)
}
