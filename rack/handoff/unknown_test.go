package handoff

import (
	"fmt"
	"testing"
	"time"
)

// TestWaitingAsksAgainForAWhile: an unknown MAC is told to ask again for
// the wait, then to boot locally; a boot long after asks again; no wait
// never asks; and the table stays bounded under requests naming ever new
// MACs.
func TestWaitingAsksAgainForAWhile(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newWaiting(30 * time.Second)
	steps := []struct {
		after time.Duration
		want  bool
	}{
		{0, true}, {5 * time.Second, true}, {29 * time.Second, true},
		{30 * time.Second, false}, {80 * time.Second, false},
		// More than two waits and a minute after it first asked: a new
		// boot of a machine still unknown.
		{30*time.Minute + time.Second, true}, {30*time.Minute + 31*time.Second, false},
	}
	for _, s := range steps {
		if got := w.ask("52:54:00:00:00:01", t0.Add(s.after)); got != s.want {
			t.Errorf("ask at +%s = %v, want %v", s.after, got, s.want)
		}
	}
	if newWaiting(0).ask("52:54:00:00:00:01", t0) {
		t.Error("with no wait, an unknown MAC was told to ask again")
	}
	// A flood of made-up MACs fills the table: those past it are not
	// told to wait, and the MAC already waiting keeps its wait.
	w = newWaiting(30 * time.Second)
	if !w.ask("52:54:00:00:00:02", t0) {
		t.Fatal("a new MAC was not told to ask again")
	}
	told := 0
	for i := range 3 * maxWaiting {
		mac := fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
		if w.ask(mac, t0.Add(time.Second)) {
			told++
		}
		if n := w.tracked(); n > maxWaiting {
			t.Fatalf("%d MACs tracked, more than %d", n, maxWaiting)
		}
	}
	if told != maxWaiting-1 {
		t.Errorf("%d of the flood told to wait, want %d (the table's room)", told, maxWaiting-1)
	}
	if !w.ask("52:54:00:00:00:02", t0.Add(10*time.Second)) {
		t.Error("the MAC waiting before the flood lost its wait")
	}
	// Once the flood's entries are long past, new MACs wait again.
	if !w.ask("52:54:00:00:00:03", t0.Add(time.Hour)) {
		t.Error("a new MAC an hour after the flood was not told to wait")
	}
}
